using ILGPU;

namespace Harpia.Backends.Cuda.Kernels;

/// <summary>
/// Paged attention over block tables. KV storage of one layer is laid out as the seam's <c>KvLayerStorage</c>:
/// <c>[block][K|V][slot in block][kv head][head dim]</c>, in f16 (the GPU's default) or f32. A token's sequence
/// and position, and each sequence's block table, are small device arrays the host uploads once per forward pass.
/// </summary>
public static class AttentionKernels
{
    /// <summary>The scalars of one attention launch (a struct keeps the kernel within ILGPU's parameter count).</summary>
    public struct AttentionParams
    {
        public int Rows, Heads, KvHeads, HeadDim, IsHalf, BlockSize, MaxSplits;
        public float Scale;
    }

    /// <summary>Positions one warp scores per split (flash-decoding); also the per-warp score buffer in shared memory.</summary>
    public const int SplitSize = 128;
    /// <summary>Largest head dimension the kernels keep a query of in shared memory.</summary>
    public const int MaxHeadDim = 256;
    /// <summary>Most warps per group the attention kernel is launched with.</summary>
    public const int MaxWarps = 8;

    private static long Start => (long)Grid.IdxX * Group.DimX + Group.IdxX;
    private static long Stride => (long)Grid.DimX * Group.DimX;

    private static float Load(ArrayView<ushort> half, ArrayView<float> full, int isHalf, long o) =>
        isHalf != 0 ? DeviceQuant.HalfToFloat(half[o]) : full[o];

    /// <summary>Element offset of position <paramref name="slot"/>'s K (<paramref name="kv"/> 0) or V (1) row in the storage.</summary>
    private static long RowOffset(long slot, int blockSize, int rowElems, int kv) =>
        ((slot / blockSize * 2 + kv) * blockSize + slot % blockSize) * rowElems;

    /// <summary>Writes rows of k and v ([rows, kvHeads·headDim]) at their slots (block · blockSize + slot in block).</summary>
    public static void StoreKv(ArrayView<float> k, ArrayView<float> v, ArrayView<int> slots, int rows, int rowElems, int blockSize,
        ArrayView<ushort> half, ArrayView<float> full, int isHalf)
    {
        long count = (long)rows * rowElems;
        for (long i = Start; i < count; i += Stride)
        {
            int t = (int)(i / rowElems), j = (int)(i % rowElems);
            long ko = RowOffset(slots[t], blockSize, rowElems, 0) + j, vo = RowOffset(slots[t], blockSize, rowElems, 1) + j;
            if (isHalf != 0) { half[ko] = DeviceQuant.FloatToHalf(k[i]); half[vo] = DeviceQuant.FloatToHalf(v[i]); }
            else { full[ko] = k[i]; full[vo] = v[i]; }
        }
    }

    /// <summary>
    /// Split-K causal attention (flash-decoding). Work item = (query row, head, split of <see cref="SplitSize"/>
    /// positions), one warp each, grid-stride. The warp scores its positions (a lane per position: q·k over the head,
    /// q from shared memory), takes the split's max and Σ exp, then lanes sweep the head dimensions (coalesced value
    /// reads) for Σ p·v. It writes (o[headDim], max, sum) to <paramref name="partial"/>; <see cref="CombineSplits"/>
    /// merges the splits with the usual rescaling. Long contexts spread over many warps this way; prefill rows use
    /// the same path (each row attends to its own causal prefix).
    /// </summary>
    public static void AttendSplits(ArrayView<float> q, ArrayView<ushort> half, ArrayView<float> full,
        ArrayView<int> rowSequence, ArrayView<int> rowPosition, ArrayView<int> tableStart, ArrayView<int> tables,
        ArrayView<float> partial, AttentionParams a)
    {
        int rows = a.Rows, heads = a.Heads, kvHeads = a.KvHeads, headDim = a.HeadDim, isHalf = a.IsHalf, blockSize = a.BlockSize, maxSplits = a.MaxSplits;
        float scale = a.Scale;
        var scores = SharedMemory.Allocate<float>(MaxWarps * SplitSize);
        var queries = SharedMemory.Allocate<float>(MaxWarps * MaxHeadDim);
        int warpsPerGroup = Group.DimX / Warp.WarpSize;
        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int rowElems = kvHeads * headDim, qPerKv = heads / kvHeads;
        long items = (long)rows * heads * maxSplits;
        for (long item = (long)Grid.IdxX * warpsPerGroup + warp; item < items; item += (long)Grid.DimX * warpsPerGroup)
        {
            int split = (int)(item % maxSplits);
            long rh = item / maxSplits;
            int h = (int)(rh % heads), row = (int)(rh / heads);
            int context = rowPosition[row] + 1;
            int first = split * SplitSize;
            if (first >= context) continue;   // warp-uniform: the whole warp skips this item
            int end = first + SplitSize < context ? first + SplitSize : context;
            int seq = rowSequence[row], table = tableStart[seq], g = h / qPerKv;
            int sOff = warp * SplitSize, qOff = warp * MaxHeadDim;
            for (int d = lane; d < headDim; d += Warp.WarpSize) queries[qOff + d] = q[((long)row * heads + h) * headDim + d];
            Warp.Barrier();

            float localMax = float.NegativeInfinity;
            for (int p = first + lane; p < end; p += Warp.WarpSize)
            {
                long slot = (long)tables[table + p / blockSize] * blockSize + p % blockSize;
                long ko = RowOffset(slot, blockSize, rowElems, 0) + g * headDim;
                float dot = 0;
                for (int d = 0; d < headDim; d++) dot += queries[qOff + d] * Load(half, full, isHalf, ko + d);
                float s = dot * scale;
                scores[sOff + p - first] = s;
                localMax = s > localMax ? s : localMax;
            }
            float max = LinearKernels.WarpMax(localMax);
            Warp.Barrier();
            float localSum = 0;
            for (int p = first + lane; p < end; p += Warp.WarpSize)
            {
                float e = MathF.Exp(scores[sOff + p - first] - max);
                scores[sOff + p - first] = e;
                localSum += e;
            }
            float sum = LinearKernels.WarpSum(localSum);
            Warp.Barrier();

            long po = item * (headDim + 2);
            for (int d = lane; d < headDim; d += Warp.WarpSize)
            {
                float acc = 0;
                for (int p = first; p < end; p++)
                {
                    long slot = (long)tables[table + p / blockSize] * blockSize + p % blockSize;
                    acc += scores[sOff + p - first] * Load(half, full, isHalf, RowOffset(slot, blockSize, rowElems, 1) + g * headDim + d);
                }
                partial[po + d] = acc;
            }
            if (lane == 0) { partial[po + headDim] = max; partial[po + headDim + 1] = sum; }
            Warp.Barrier();   // the shared buffers are reused by this warp's next item
        }
    }

    /// <summary>output[row, h·headDim + d] = Σₛ e^(mₛ − M)·oₛ[d] / Σₛ e^(mₛ − M)·lₛ over the row's splits.</summary>
    public static void CombineSplits(ArrayView<float> partial, int rows, int heads, int headDim, ArrayView<int> rowPosition,
        int maxSplits, ArrayView<float> output)
    {
        long count = (long)rows * heads * headDim;
        for (long i = Start; i < count; i += Stride)
        {
            int d = (int)(i % headDim);
            long rh = i / headDim;
            int row = (int)(rh / heads);
            int splits = (rowPosition[row] + SplitSize) / SplitSize;
            long baseItem = rh * maxSplits;
            float max = float.NegativeInfinity;
            for (int s = 0; s < splits; s++)
            {
                float m = partial[(baseItem + s) * (headDim + 2) + headDim];
                max = m > max ? m : max;
            }
            float num = 0, den = 0;
            for (int s = 0; s < splits; s++)
            {
                long po = (baseItem + s) * (headDim + 2);
                float f = MathF.Exp(partial[po + headDim] - max);
                num += f * partial[po + d];
                den += f * partial[po + headDim + 1];
            }
            output[i] = num / den;
        }
    }
}

using ILGPU;

namespace Harpia.Backends.Cuda.Kernels;

/// <summary>
/// Element-wise and per-row kernels of a decoder layer. All are grid-stride loops over their elements or rows, so a
/// launch of any size covers any tensor; per-row kernels use one group per row and reduce through warp shuffles
/// and a little shared memory. Formulas are the CPU kernels' (Tensors/), so results agree to f32 rounding.
/// </summary>
public static class ElementKernels
{
    private static long Start => (long)Grid.IdxX * Group.DimX + Group.IdxX;
    private static long Stride => (long)Grid.DimX * Group.DimX;

    /// <summary>a[i] += b[i] for i &lt; count (the residual add).</summary>
    public static void Add(ArrayView<float> a, ArrayView<float> b, long count)
    {
        for (long i = Start; i < count; i += Stride) a[i] += b[i];
    }

    /// <summary>y[t, j] += bias[j] over <paramref name="count"/> = n · cols elements.</summary>
    public static void AddBias(ArrayView<float> y, ArrayView<float> bias, int cols, long count)
    {
        for (long i = Start; i < count; i += Stride) y[i] += bias[i % cols];
    }

    // Abramowitz & Stegun 7.1.26, as Activations.GeluScalar: |error of erf| ≤ 1.5e-7.
    private const float ErfP = 0.3275911f, ErfA1 = 0.254829592f, ErfA2 = -0.284496736f, ErfA3 = 1.421413741f,
        ErfA4 = -1.453152027f, ErfA5 = 1.061405429f, InvSqrt2 = 0.70710678118654752440f;

    /// <summary>Exact (erf) GELU, ½x(1 + erf(x/√2)), the formula of <see cref="Tensors.Activations.GeluScalar"/>.</summary>
    public static float GeluOf(float v)
    {
        float z = (v < 0 ? -v : v) * InvSqrt2;
        float t = 1f / (1f + ErfP * z);
        float erf = 1f - t * (ErfA1 + t * (ErfA2 + t * (ErfA3 + t * (ErfA4 + t * ErfA5)))) * MathF.Exp(-(z * z));
        return 0.5f * v * (1f + (v < 0 ? -erf : erf));
    }

    public static float SiluOf(float v) => v / (1f + MathF.Exp(-v));

    public static void Gelu(ArrayView<float> x, long count)
    {
        for (long i = Start; i < count; i += Stride) x[i] = GeluOf(x[i]);
    }

    public static void Silu(ArrayView<float> x, long count)
    {
        for (long i = Start; i < count; i += Stride) x[i] = SiluOf(x[i]);
    }

    /// <summary>gate = silu(gate) · up (SwiGLU).</summary>
    public static void SiluMul(ArrayView<float> gate, ArrayView<float> up, long count)
    {
        for (long i = Start; i < count; i += Stride) gate[i] = SiluOf(gate[i]) * up[i];
    }

    /// <summary>Sum of <paramref name="v"/> over the whole group, returned to every thread (warp shuffles, then one slot per warp).</summary>
    private static float GroupSum(float v, ArrayView<float> slots)
    {
        v = LinearKernels.WarpSum(v);
        int warps = Group.DimX / Warp.WarpSize;
        Group.Barrier();   // the slots may still be read from the previous reduction
        if (Warp.LaneIdx == 0) slots[Warp.WarpIdx] = v;
        Group.Barrier();
        float total = 0;
        for (int i = 0; i < warps; i++) total += slots[i];
        return total;
    }

    /// <summary>
    /// LayerNorm per row, one group per row: mean, then the biased variance of (x − mean) (two passes, as torch and
    /// <see cref="Tensors.Norms.LayerNorm"/>), y = (x − mean)·rstd·weight + bias. <paramref name="hasBias"/> 0: no bias.
    /// y may be x (each thread rewrites only the elements it read last).
    /// </summary>
    public static void LayerNorm(ArrayView<float> x, ArrayView<float> y, int rows, int dim, ArrayView<float> weight, ArrayView<float> bias, int hasBias, float eps)
    {
        var slots = SharedMemory.Allocate<float>(32);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long o = (long)r * dim;
            float s = 0;
            for (int i = Group.IdxX; i < dim; i += Group.DimX) s += x[o + i];
            float mean = GroupSum(s, slots) / dim;
            float ss = 0;
            for (int i = Group.IdxX; i < dim; i += Group.DimX) { float d = x[o + i] - mean; ss += d * d; }
            float rstd = 1f / MathF.Sqrt(GroupSum(ss, slots) / dim + eps);
            for (int i = Group.IdxX; i < dim; i += Group.DimX)
                y[o + i] = (x[o + i] - mean) * rstd * weight[i] + (hasBias != 0 ? bias[i] : 0f);
        }
    }

    /// <summary>RMSNorm per row: y = x / √(mean(x²) + eps) · weight.</summary>
    public static void RmsNorm(ArrayView<float> x, ArrayView<float> y, int rows, int dim, ArrayView<float> weight, float eps)
    {
        var slots = SharedMemory.Allocate<float>(32);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long o = (long)r * dim;
            float ss = 0;
            for (int i = Group.IdxX; i < dim; i += Group.DimX) ss += x[o + i] * x[o + i];
            float rstd = 1f / MathF.Sqrt(GroupSum(ss, slots) / dim + eps);
            for (int i = Group.IdxX; i < dim; i += Group.DimX) y[o + i] = x[o + i] * rstd * weight[i];
        }
    }

    /// <summary>
    /// Rotary embedding in place over q [n, qHeads·headDim] and k [n, kHeads·headDim]: token t's pair i turns by the
    /// host-made table cos/sin[t, i] (angles in f64 on the host, as the CPU does; any attention factor folded in).
    /// <paramref name="interleaved"/> 0 pairs (i, i + pairs) (rotate-half, Falcon/HF), 1 pairs (2i, 2i + 1).
    /// </summary>
    public static void Rope(ArrayView<float> q, int qHeads, ArrayView<float> k, int kHeads, int headDim, int n,
        ArrayView<float> cos, ArrayView<float> sin, int pairs, int interleaved)
    {
        int heads = qHeads + kHeads;
        long count = (long)n * heads * pairs;
        for (long i = Start; i < count; i += Stride)
        {
            int p = (int)(i % pairs);
            long th = i / pairs;
            int h = (int)(th % heads), t = (int)(th / heads);
            int a = interleaved != 0 ? 2 * p : p, b = interleaved != 0 ? 2 * p + 1 : p + pairs;
            float c = cos[(long)t * pairs + p], s = sin[(long)t * pairs + p];
            if (h < qHeads)
            {
                long o = ((long)t * qHeads + h) * headDim;
                float x1 = q[o + a], x2 = q[o + b];
                q[o + a] = x1 * c - x2 * s;
                q[o + b] = x2 * c + x1 * s;
            }
            else
            {
                long o = ((long)t * kHeads + h - qHeads) * headDim;
                float x1 = k[o + a], x2 = k[o + b];
                k[o + a] = x1 * c - x2 * s;
                k[o + b] = x2 * c + x1 * s;
            }
        }
    }

    /// <summary>y[t, :] = row tokens[t] of a weight table, decoded from its blocks (8 values per thread step).</summary>
    public static void Embed(ArrayView<byte> w, ArrayView<uint> words, long rowBytes, int cols, int type, ArrayView<int> tokens, int n, ArrayView<float> y)
    {
        DeviceQuant.Geometry(type, out int blockSize, out int blockBytes);
        int chunks = cols / 8;
        long count = (long)n * chunks;
        for (long i = Start; i < count; i += Stride)
        {
            int t = (int)(i / chunks), e = (int)(i % chunks) * 8;
            var v = DeviceQuant.Decode8(type, w, words, tokens[t] * rowBytes + (long)(e / blockSize) * blockBytes, e % blockSize);
            long o = (long)t * cols + e;
            y[o] = v.V0; y[o + 1] = v.V1; y[o + 2] = v.V2; y[o + 3] = v.V3;
            y[o + 4] = v.V4; y[o + 5] = v.V5; y[o + 6] = v.V6; y[o + 7] = v.V7;
        }
    }

    /// <summary>dst[i, :] = src[rows[i], :].</summary>
    public static void GatherRows(ArrayView<float> src, ArrayView<int> rows, int n, int cols, ArrayView<float> dst)
    {
        long count = (long)n * cols;
        for (long i = Start; i < count; i += Stride) dst[i] = src[(long)rows[(int)(i / cols)] * cols + i % cols];
    }

    /// <summary>dst[t, g·width + j] = src[t, offset + g·groupStride + j]: splits q, k, v out of a fused projection.</summary>
    public static void CopyColumns(ArrayView<float> src, int srcCols, int n, int offset, int groups, int groupStride, int width, ArrayView<float> dst)
    {
        int dstCols = groups * width;
        long count = (long)n * dstCols;
        for (long i = Start; i < count; i += Stride)
        {
            int t = (int)(i / dstCols), c = (int)(i % dstCols);
            dst[i] = src[(long)t * srcCols + offset + c / width * groupStride + c % width];
        }
    }

    /// <summary>
    /// Greedy decoding on the device: for each of <paramref name="rows"/> logits rows, the index of the largest value
    /// (the lowest index among equals, as the CPU sampler), one group per row; only the ids leave the GPU.
    /// </summary>
    public static void Argmax(ArrayView<float> logits, int rows, int vocab, ArrayView<int> ids)
    {
        var bestValue = SharedMemory.Allocate<float>(32);
        var bestIndex = SharedMemory.Allocate<int>(32);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long o = (long)r * vocab;
            float best = float.NegativeInfinity;
            int index = int.MaxValue;
            for (int i = Group.IdxX; i < vocab; i += Group.DimX)
            {
                float v = logits[o + i];
                if (v > best) { best = v; index = i; }   // i rises per thread, so the first of equals stays
            }
            for (int d = Warp.WarpSize / 2; d > 0; d /= 2)
            {
                float ov = Warp.ShuffleXor(best, d);
                int oi = Warp.ShuffleXor(index, d);
                if (ov > best || (ov == best && oi < index)) { best = ov; index = oi; }
            }
            Group.Barrier();
            if (Warp.LaneIdx == 0) { bestValue[Warp.WarpIdx] = best; bestIndex[Warp.WarpIdx] = index; }
            Group.Barrier();
            if (Group.IdxX == 0)
            {
                for (int wi = 1; wi < Group.DimX / Warp.WarpSize; wi++)
                    if (bestValue[wi] > best || (bestValue[wi] == best && bestIndex[wi] < index)) { best = bestValue[wi]; index = bestIndex[wi]; }
                ids[r] = index == int.MaxValue ? 0 : index;
            }
        }
    }

    /// <summary>Round trip f32 → f16 bits → f32 of every value (tests the device conversions against System.Half).</summary>
    public static void HalfRoundTrip(ArrayView<float> x, ArrayView<ushort> bits, ArrayView<float> back, long count)
    {
        for (long i = Start; i < count; i += Stride)
        {
            bits[i] = DeviceQuant.FloatToHalf(x[i]);
            back[i] = DeviceQuant.HalfToFloat(bits[i]);
        }
    }
}

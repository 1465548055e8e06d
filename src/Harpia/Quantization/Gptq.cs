using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using Harpia.Tensors;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>The GPTQ settings of a checkpoint (<c>quantization_config</c> in config.json, or quantize_config.json).</summary>
public sealed record GptqConfig(int Bits, int GroupSize, bool DescAct, bool Sym, string ConfigPath)
{
    public static readonly int[] SupportedBits = [2, 3, 4, 8];
}

/// <summary>
/// GPTQ's stored layout (AutoGPTQ's <c>QuantLinear</c>, the "gptq" checkpoint format), for a linear with K inputs,
/// N outputs and b bits: <c>qweight</c> int32 [K·b/32, N] holds the input channels of each output as one little-endian
/// bit stream per column (32/b channels per word for b = 2, 4, 8; for b = 3, 32 channels in three words, two of them
/// straddling a word boundary — the same stream); <c>qzeros</c> int32 [G, N·b/32] packs the zero points the same way
/// along the outputs, stored as zero − 1; <c>scales</c> fp16 [G, N]; <c>g_idx</c> int32 [K] the group of each input
/// channel (act-order makes it a permutation of the groups). W[n, k] = scales[g, n] · (q[k, n] − zero[g, n]), g = g_idx[k].
/// </summary>
public static class GptqPacking
{
    /// <summary>The b-bit value at index <paramref name="i"/> of a bit stream laid over <paramref name="words"/>, stride apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Unpack(ReadOnlySpan<int> words, long stride, long offset, int i, int bits)
    {
        long bit = (long)i * bits;
        int w = (int)(bit >> 5), shift = (int)(bit & 31);
        uint v = (uint)words[(int)(w * stride + offset)] >> shift;
        if (shift + bits > 32) v |= (uint)words[(int)((w + 1) * stride + offset)] << (32 - shift);
        return (int)(v & ((1u << bits) - 1));
    }

    /// <summary>Writes the b-bit value <paramref name="q"/> at index <paramref name="i"/> of such a stream (words start zeroed).</summary>
    public static void Pack(Span<int> words, long stride, long offset, int i, int bits, int q)
    {
        long bit = (long)i * bits;
        int w = (int)(bit >> 5), shift = (int)(bit & 31);
        uint v = (uint)q & ((1u << bits) - 1);
        words[(int)(w * stride + offset)] |= (int)(v << shift);
        if (shift + bits > 32) words[(int)((w + 1) * stride + offset)] |= (int)(v >> (32 - shift));
    }
}

/// <summary>
/// A GPTQ linear repacked at load into GGUF blocks the existing kernels multiply: the input channels are put in group
/// order (act-order becomes a gather of the activations, never a dequantized model), each group padded to whole
/// 32-channel blocks, and every block written as Q4_0 (b ≤ 4: value d·(q − 8)) or Q8_0 (b = 8: d·(q − 128)) with
/// d = the group's fp16 scale, exactly. GPTQ's zero point differs from those fixed offsets, so
/// W·x = Σ_g s_g·Σ_{k∈g}(q − z_g)·x_k = [the Q4_0/Q8_0 product] + Σ_g s_g·(offset − z_g)·Σ_{k∈g} x_k: a per-(row, group)
/// correction times the group's activation sum (zero for symmetric 4- and 8-bit GPTQ, whose zero is the offset).
/// </summary>
[SkipLocalsInit]
public sealed unsafe class GptqMatrix : IPackedMatrix, IDisposable
{
    public GgmlType Type => GgmlType.GPTQ;
    public int Rows { get; }
    public int Cols { get; }
    public int Bits { get; }
    /// <summary>Input channels per group (<see cref="Cols"/> for group_size −1).</summary>
    public int GroupSize { get; }
    public bool ActOrder { get; }
    public int Groups { get; }
    public double BitsPerWeight { get; }
    /// <summary>The repacked blocks: Q4_0 or Q8_0, [Rows, PaddedCols].</summary>
    public WeightMatrix Inner { get; }
    public int PaddedCols { get; }

    private readonly NativeBuffer _buffer;
    internal NativeBuffer Buffer => _buffer;
    private readonly int[]? _gather;      // padded column → input column, −1 for padding; null when the identity
    private readonly int[] _groupStart;   // Groups + 1 padded-column offsets, multiples of 32
    private readonly float[][]? _correction; // [group][row]: s·(offset − zero); null when all zero

    public string Format => $"GPTQ {Bits}-bit, " + (GroupSize == Cols && Groups == 1 ? "one group per row" : $"group {GroupSize}") + (ActOrder ? ", act-order" : "");

    public long ByteLength => Inner.RowBytes * Rows + (_correction is null ? 0 : 4L * Groups * Rows) + 4L * (_gather?.Length ?? 0);

    /// <param name="qweight">int32 [K·b/32, N]</param><param name="qzeros">int32 [G, N·b/32]</param>
    /// <param name="scales">[G, N]</param><param name="gIdx">[K], each in [0, G) (checked by the caller)</param>
    public GptqMatrix(string name, int rows, int cols, int bits, int groupSize, int groups,
        ReadOnlySpan<int> qweight, ReadOnlySpan<int> qzeros, ReadOnlySpan<Half> scales, ReadOnlySpan<int> gIdx, double storedBitsPerWeight)
    {
        if (Array.IndexOf(GptqConfig.SupportedBits, bits) < 0) throw new HarpiaException($"tensor '{name}': GPTQ has no {bits}-bit width (2, 3, 4, 8)");
        Rows = rows; Cols = cols; Bits = bits; GroupSize = groupSize; Groups = groups; BitsPerWeight = storedBitsPerWeight;
        int N = rows, K = cols;

        // Group order: a stable counting sort of the input channels by g_idx, each group padded to whole blocks.
        var count = new int[groups];
        foreach (int g in gIdx) count[g]++;
        _groupStart = new int[groups + 1];
        for (int g = 0; g < groups; g++) _groupStart[g + 1] = _groupStart[g] + (count[g] + 31) / 32 * 32;
        PaddedCols = _groupStart[groups];
        var gather = new int[PaddedCols];
        Array.Fill(gather, -1);
        var next = _groupStart[..groups];
        for (int k = 0; k < K; k++) gather[next[gIdx[k]]++] = k;
        bool identity = PaddedCols == K;
        for (int j = 0; identity && j < K; j++) identity = gather[j] == j;
        _gather = identity ? null : gather;
        bool monotonic = true;
        for (int k = 1; k < K && monotonic; k++) monotonic = gIdx[k] >= gIdx[k - 1];
        ActOrder = !monotonic;

        var innerType = bits == 8 ? GgmlType.Q8_0 : GgmlType.Q4_0;
        int offset = bits == 8 ? 128 : 8, nb = PaddedCols / 32;
        long rowBytes = (long)nb * (bits == 8 ? BlockQ8_0.Bytes : BlockQ4_0.Bytes);
        _buffer = new NativeBuffer(Math.Max(1, rowBytes * N));
        var correction = new float[groups][];
        for (int g = 0; g < groups; g++) correction[g] = new float[N];
        bool anyCorrection = false;

        // Rows in chunks of 16 outputs: qweight is read a row of 16 adjacent words at a time, not a column at a time.
        const int Chunk = 16;
        var q = new byte[Chunk * K];
        int zeroWords = N * bits / 32;
        for (int n0 = 0; n0 < N; n0 += Chunk)
        {
            int m = Math.Min(Chunk, N - n0);
            for (int k = 0; k < K; k++)
                for (int r = 0; r < m; r++) q[r * K + k] = (byte)GptqPacking.Unpack(qweight, N, n0 + r, k, bits);
            for (int r = 0; r < m; r++)
            {
                int n = n0 + r;
                byte* row = _buffer.Pointer + n * rowBytes;
                for (int g = 0; g < groups; g++)
                {
                    Half scale = scales[g * N + n];
                    int zero = GptqPacking.Unpack(qzeros.Slice(g * zeroWords, zeroWords), 1, 0, n, bits) + 1;
                    // 2- and 3-bit codes fit Q4_0's 0…15 after a shift by (8 − zero), so they need no correction:
                    // q' − 8 = q − zero exactly. 4- and 8-bit codes fill their range; their zero goes into the correction.
                    int shift = bits <= 3 ? 8 - zero : 0;
                    float c = bits <= 3 ? 0 : (float)scale * (offset - zero);
                    correction[g][n] = c;
                    anyCorrection |= c != 0;
                    ushort d = BitConverter.HalfToUInt16Bits(scale);
                    for (int b = _groupStart[g] / 32; b < _groupStart[g + 1] / 32; b++)
                    {
                        if (bits == 8)
                        {
                            var blk = (BlockQ8_0*)row + b;
                            blk->D = d;
                            for (int e = 0; e < 32; e++)
                            {
                                int src = gather[b * 32 + e];
                                blk->Qs[e] = (sbyte)(src < 0 ? 0 : q[r * K + src] - 128);
                            }
                        }
                        else
                        {
                            var blk = (BlockQ4_0*)row + b;
                            blk->D = d;
                            for (int e = 0; e < 16; e++)
                            {
                                int lo = gather[b * 32 + e], hi = gather[b * 32 + e + 16];
                                int qlo = lo < 0 ? 8 : q[r * K + lo] + shift, qhi = hi < 0 ? 8 : q[r * K + hi] + shift;
                                blk->Qs[e] = (byte)(qlo | (qhi << 4));
                            }
                        }
                    }
                }
            }
        }
        _correction = anyCorrection ? correction : null;
        Inner = new WeightMatrix(name, innerType, N, PaddedCols, _buffer.Pointer, _buffer);
    }

    public void Multiply(ReadOnlySpan<float> x, int n, Span<float> y)
    {
        int K = Cols, Kp = PaddedCols, N = Rows;
        ReadOnlySpan<float> xp = x;
        if (_gather is not null)
        {
            var buf = Scratch.Gathered(n * Kp);
            for (int i = 0; i < n; i++)
            {
                var src = x.Slice(i * K, K);
                var dst = buf.AsSpan(i * Kp, Kp);
                for (int j = 0; j < Kp; j++) { int s = _gather[j]; dst[j] = s < 0 ? 0 : src[s]; }
            }
            xp = buf.AsSpan(0, n * Kp);
        }
        bool f32 = PackedActivations.Float;
        if (f32) MultiplyFloat(xp, n, y);
        else MatMul.Compute(Inner, xp, n, y);
        if (_correction is null) return;
        var sums = Scratch.Sums(Groups);
        for (int i = 0; i < n; i++)
        {
            GroupSums(xp.Slice(i * Kp, Kp), f32, sums);
            var yi = y.Slice(i * N, N);
            for (int g = 0; g < Groups; g++)
                if (sums[g] != 0) TensorPrimitives.MultiplyAdd(_correction[g], sums[g], yi, yi);
        }
    }

    /// <summary>
    /// Each group's activation sum, for the zero-point correction. With 8-bit activations it is the sum of the rounded
    /// values the integer dot saw, so the correction cancels exactly what the Q4_0/Q8_0 offset added.
    /// </summary>
    private void GroupSums(ReadOnlySpan<float> x, bool f32, float[] sums)
    {
        if (f32)
        {
            for (int g = 0; g < Groups; g++) sums[g] = TensorPrimitives.Sum(x[_groupStart[g].._groupStart[g + 1]]);
            return;
        }
        sbyte* q = stackalloc sbyte[32];
        float d;
        fixed (float* px = x)
            for (int g = 0; g < Groups; g++)
            {
                float sum = 0;
                for (int b = _groupStart[g] / 32; b < _groupStart[g + 1] / 32; b++)
                {
                    Q8Activations.Quantize(px + b * 32, 32, q, &d);
                    int s = 0;
                    for (int j = 0; j < 32; j++) s += q[j];
                    sum += d * s;
                }
                sums[g] = sum;
            }
    }

    /// <summary>f32 activations: each weight row decoded once to f32 and dotted with every activation row.</summary>
    private void MultiplyFloat(ReadOnlySpan<float> xp, int n, Span<float> y)
    {
        fixed (float* px = xp)
        fixed (float* py = y)
        {
            var job = new FloatJobPointers { X = px, Y = py, N = n, Rows = Rows, Cols = PaddedCols, RowBytes = Inner.RowBytes, Data = Inner.Data, Type = Inner.Type, Path = SimdPaths.Active };
            ComputePool.For(Rows, ComputePool.ChunkCount(Rows, 8), &FloatRows, &job);
        }
        GC.KeepAlive(this);
    }

    private struct FloatJobPointers
    {
        public float* X, Y;
        public byte* Data;
        public long RowBytes;
        public int N, Rows, Cols;
        public GgmlType Type;
        public SimdPath Path;
    }

    private static void FloatRows(void* state, int r0, int r1)
    {
        var job = (FloatJobPointers*)state;
        int cols = job->Cols;
        int nb = cols / 32;
        var path = job->Path;
        for (int r = r0; r < r1; r++)
        {
            byte* row = job->Data + r * job->RowBytes;
            for (int i = 0; i < job->N; i++)
            {
                float* x = job->X + (long)i * cols;
                job->Y[(long)i * job->Rows + r] = job->Type == GgmlType.Q8_0
                    ? FloatActivationDot.Q8_0((BlockQ8_0*)row, x, nb, path)
                    : FloatActivationDot.Q4_0((BlockQ4_0*)row, x, nb, path);
            }
        }
    }

    public void DequantizeRow(int row, Span<float> dst)
    {
        var decoded = new float[PaddedCols];
        QuantFormats.Dequantize(Inner.Type, Inner.Row(row), decoded);
        for (int g = 0; g < Groups; g++)
        {
            float c = _correction?[g][row] ?? 0;
            for (int j = _groupStart[g]; j < _groupStart[g + 1]; j++)
            {
                int k = _gather is null ? j : _gather[j];
                if (k >= 0) dst[k] = decoded[j] + c;
            }
        }
    }

    public void Dispose() => _buffer.Dispose();

    /// <summary>Per-thread buffers (the gathered activations on the caller; a decoded row on each worker).</summary>
    private static class Scratch
    {
        [ThreadStatic] private static float[]? _gathered, _sums;
        public static float[] Sums(int length) => _sums is { } a && a.Length >= length ? a : _sums = new float[length];
        public static float[] Gathered(int length) => _gathered is { } a && a.Length >= length ? a : _gathered = new float[length];
    }
}

/// <summary>
/// Round-to-nearest GPTQ encoding in the exact stored layout (what a GPTQ run produces, minus its error feedback):
/// for tests and <c>harpia synth</c>, which need GPTQ checkpoints of chosen bits, groups, order and symmetry.
/// </summary>
public static class GptqEncoder
{
    public sealed record Encoded(int[] QWeight, int[] QZeros, Half[] Scales, int[] GIdx, int Groups, float[] Dequantized);

    /// <param name="w">[N, K] row-major</param>
    /// <param name="order">act-order: the input channels in quantization order (group i holds order[i·gs … (i+1)·gs)), or null</param>
    public static Encoded Encode(ReadOnlySpan<float> w, int N, int K, int bits, int groupSize, bool sym, int[]? order = null)
    {
        int gs = groupSize < 0 ? K : groupSize;
        if (K % gs != 0 || K * bits % 32 != 0 || N * bits % 32 != 0) throw new ArgumentException("shape does not fit the packing");
        int G = K / gs, maxq = (1 << bits) - 1;
        var gIdx = new int[K];
        for (int i = 0; i < K; i++) gIdx[order?[i] ?? i] = i / gs;
        var qweight = new int[K * bits / 32 * N];
        var qzeros = new int[G * (N * bits / 32)];
        var scales = new Half[G * N];
        var deq = new float[N * K];
        var members = new List<int>[G];
        for (int g = 0; g < G; g++) members[g] = [];
        for (int k = 0; k < K; k++) members[gIdx[k]].Add(k);
        for (int n = 0; n < N; n++)
            for (int g = 0; g < G; g++)
            {
                float lo = 0, hi = 0;
                foreach (int k in members[g]) { lo = Math.Min(lo, w[n * K + k]); hi = Math.Max(hi, w[n * K + k]); }
                float scale; int zero;
                if (sym)
                {
                    float amax = Math.Max(-lo, hi);
                    scale = amax == 0 ? 1 : 2 * amax / maxq;
                    zero = (maxq + 1) / 2;
                }
                else
                {
                    scale = hi == lo ? 1 : (hi - lo) / maxq;
                    zero = Math.Clamp((int)MathF.Round(-lo / scale), 1, maxq); // ≥ 1: stored as zero − 1
                }
                var s = (Half)scale;
                scales[g * N + n] = s;
                GptqPacking.Pack(qzeros.AsSpan(g * (N * bits / 32), N * bits / 32), 1, 0, n, bits, zero - 1);
                foreach (int k in members[g])
                {
                    int q = Math.Clamp((int)MathF.Round(w[n * K + k] / (float)s) + zero, 0, maxq);
                    GptqPacking.Pack(qweight, N, n, k, bits, q);
                    deq[n * K + k] = (float)s * (q - zero);
                }
            }
        return new Encoded(qweight, qzeros, scales, gIdx, G, deq);
    }
}

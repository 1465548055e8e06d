using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Quantization;

/// <summary>bitsandbytes' 4-bit codes.</summary>
public enum Bnb4Type { NF4, FP4 }

/// <summary>What bitsandbytes rounds a dequantized weight to: the model's dtype in the quant state.</summary>
public enum Bnb4Dtype { BF16, F16, F32 }

/// <summary>
/// bitsandbytes' 4-bit formats (<c>Linear4bit</c>): the weight [N, K] flattened row-major, two 4-bit indices per byte
/// (the earlier element in the high nibble), blocks of <c>blocksize</c> consecutive values sharing one absmax;
/// value = code[index] · absmax, rounded to the model dtype. With double quantization the absmax are themselves
/// 8-bit indices into the signed dynamic map, in blocks of 256 with an f32 absmax each, plus one f32 offset.
/// </summary>
public static class Bnb4Codes
{
    /// <summary>NormalFloat4: quantiles of N(0, 1), normalized to [−1, 1] (bitsandbytes' table).</summary>
    public static readonly float[] NF4 =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f, -0.18477343022823334f,
        -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>FP4 (1 sign, 2 exponent, 1 mantissa bits, bias 3, scaled by 1/12), in bit-pattern order.</summary>
    public static readonly float[] FP4 =
    [
        0f, 0.0052083333f, 0.6666667f, 1f, 0.33333334f, 0.5f, 0.16666667f, 0.25f,
        -0f, -0.0052083333f, -0.6666667f, -1f, -0.33333334f, -0.5f, -0.16666667f, -0.25f,
    ];

    public static float[] Code(Bnb4Type type) => type == Bnb4Type.NF4 ? NF4 : FP4;

    /// <summary>NF4 index of a value normalized to [−1, 1]: the nearest code, by the midpoints bitsandbytes compares with.</summary>
    public static byte QuantizeNf4(float x)
    {
        if (x > 0.03979014977812767f)
        {
            if (x > 0.3893125355243683f)
                return x > 0.6427869200706482f ? (x > 0.8614784181118011f ? (byte)15 : (byte)14) : (x > 0.5016634166240692f ? (byte)13 : (byte)12);
            return x > 0.2035212516784668f ? (x > 0.2920137718319893f ? (byte)11 : (byte)10) : (x > 0.1202552504837513f ? (byte)9 : (byte)8);
        }
        if (x > -0.33967943489551544f)
            return x > -0.13791173323988914f ? (x > -0.045525018125772476f ? (byte)7 : (byte)6) : (x > -0.23460740596055984f ? (byte)5 : (byte)4);
        return x > -0.6106329262256622f ? (x > -0.4599952697753906f ? (byte)3 : (byte)2) : (x > -0.8480964004993439f ? (byte)1 : (byte)0);
    }

    /// <summary>FP4 index: sign bit, then the nearest magnitude by midpoints.</summary>
    public static byte QuantizeFp4(float x)
    {
        int sign = x < 0 ? 8 : 0;
        x = MathF.Abs(x);
        int code = x > 0.29166667f
            ? (x > 0.583333f ? (x > 0.8333333f ? 3 : 2) : (x > 0.4166667f ? 5 : 4))
            : (x > 0.0859375f ? (x > 0.20833333f ? 7 : 6) : (x > 0.00260417f ? 1 : 0));
        return (byte)(code + sign);
    }

    /// <summary>
    /// bitsandbytes' signed dynamic map (<c>create_dynamic_map(signed=True)</c>, 7 exponent bits): for each decade
    /// 10^(i−6), i = 0…6, the means of 2^i + 1 points spread evenly over [0.1, 1] (float32 linspace), ±; then 0 and 1;
    /// sorted. A file carries its own copy (which a reader must use); this one is for quantizing on load.
    /// </summary>
    public static float[] DynamicMap()
    {
        var data = new List<float>(256);
        for (int i = 0; i < 7; i++)
        {
            int points = (1 << i) + 1;
            var b = LinspaceF32(0.1f, 1f, points);
            float decade = (float)Math.Pow(10, -6 + i);
            for (int j = 0; j + 1 < points; j++)
            {
                float mean = (b[j] + b[j + 1]) / 2f;
                data.Add(decade * mean);
                data.Add(-decade * mean);
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return [.. data];
    }

    /// <summary>torch.linspace in float32: from the start for the first half, from the end for the second.</summary>
    private static float[] LinspaceF32(float start, float end, int steps)
    {
        var r = new float[steps];
        if (steps == 1) { r[0] = start; return r; }
        float step = (end - start) / (steps - 1);
        int half = steps / 2;
        for (int i = 0; i < steps; i++) r[i] = i < half ? start + step * i : end - step * (steps - i - 1);
        return r;
    }

    /// <summary>Index of the code nearest <paramref name="x"/> in a sorted map (ties to the upper).</summary>
    public static byte Nearest(float[] sortedMap, float x)
    {
        int lo = 0, hi = sortedMap.Length - 1;
        while (hi - lo > 1)
        {
            int mid = (lo + hi) / 2;
            if (sortedMap[mid] <= x) lo = mid; else hi = mid;
        }
        return (byte)(x - sortedMap[lo] < sortedMap[hi] - x ? lo : hi);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Round(float v, Bnb4Dtype dtype) => dtype switch
    {
        Bnb4Dtype.BF16 => RoundBf16(v),
        Bnb4Dtype.F16 => (float)(Half)v,
        _ => v,
    };

    /// <summary>f32 → bf16 → f32, round to nearest even (torch's cast).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RoundBf16(float v)
    {
        uint bits = BitConverter.SingleToUInt32Bits(v);
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
        return BitConverter.UInt32BitsToSingle(bits);
    }
}

/// <summary>
/// A bitsandbytes 4-bit linear in its stored form: the 4-bit indices stay as the file (or the quantizer) laid them out;
/// the absmax of every block is expanded to f32 at load (double quantization undone once, as bitsandbytes does per
/// forward). Compute is f32: each block's 16 possible values (code · absmax, rounded to the model dtype as
/// bitsandbytes' dequantize returns them) form a lookup table the indices select from.
/// </summary>
[SkipLocalsInit]
public sealed unsafe class Bnb4Matrix : IPackedMatrix
{
    public GgmlType Type => GgmlType.BNB_4BIT;
    public int Rows { get; }
    public int Cols { get; }
    public Bnb4Type QuantType { get; }
    public Bnb4Dtype Dtype { get; }
    public int BlockSize { get; }
    public int GroupSize => BlockSize;
    public bool DoubleQuant { get; }
    public double BitsPerWeight { get; }
    public string Format => $"bitsandbytes {QuantType}, block {BlockSize}" + (DoubleQuant ? ", double-quantized absmax" : "");
    public long ByteLength => (long)Rows * Cols / 2 + 4L * _absmax.Length;

    /// <summary>The 4-bit indices, [Rows·Cols / 2] bytes.</summary>
    public byte* Indices { get; }
    public float[] Code { get; }
    private readonly float[] _absmax;
    private readonly object? _owner;

    public ReadOnlySpan<float> AbsMax => _absmax;

    public Bnb4Matrix(int rows, int cols, Bnb4Type type, Bnb4Dtype dtype, int blockSize, byte* indices, float[] code, float[] absmax,
        bool doubleQuant, double bitsPerWeight, object? owner)
    {
        Rows = rows; Cols = cols; QuantType = type; Dtype = dtype; BlockSize = blockSize; Indices = indices; Code = code;
        _absmax = absmax; DoubleQuant = doubleQuant; BitsPerWeight = bitsPerWeight; _owner = owner;
    }

    public void DequantizeRow(int row, Span<float> dst)
    {
        long e0 = (long)row * Cols;
        for (int c = 0; c < Cols; c++)
        {
            long e = e0 + c;
            int idx = (Indices[e >> 1] >> ((e & 1) == 0 ? 4 : 0)) & 15;
            dst[c] = Bnb4Codes.Round(Code[idx] * _absmax[e / BlockSize], Dtype);
        }
        GC.KeepAlive(_owner);
    }

    public void Multiply(ReadOnlySpan<float> x, int n, Span<float> y)
    {
        fixed (float* px = x)
        fixed (float* py = y)
        fixed (float* pa = _absmax)
        fixed (float* pc = Code)
        {
            var job = new Job { X = px, Y = py, AbsMax = pa, Code = pc, Indices = Indices, N = n, Rows = Rows, Cols = Cols, BlockSize = BlockSize, Dtype = Dtype, Path = SimdPaths.Active };
            ComputePool.For(Rows, ComputePool.ChunkCount(Rows, 8), &RowsBody, &job);
        }
        GC.KeepAlive(_owner);
    }

    private struct Job
    {
        public float* X, Y, AbsMax, Code;
        public byte* Indices;
        public int N, Rows, Cols, BlockSize;
        public Bnb4Dtype Dtype;
        public SimdPath Path;
    }

    private static void RowsBody(void* state, int r0, int r1)
    {
        var job = (Job*)state;
        int cols = job->Cols, bs = job->BlockSize;
        // The vector kernels need whole blocks per row, 16-element aligned; bitsandbytes' 64 with rows of 64·k qualify.
        bool aligned = cols % bs == 0 && bs % 16 == 0 && job->Dtype != Bnb4Dtype.F16;
        var path = aligned ? job->Path : SimdPath.Scalar;
        for (int r = r0; r < r1; r++)
            for (int i = 0; i < job->N; i++)
            {
                float* x = job->X + (long)i * cols;
                job->Y[(long)i * job->Rows + r] = path switch
                {
                    SimdPath.Vector512 when Avx512F.IsSupported => DotRow512(job, r, x),
                    SimdPath.Vector512 or SimdPath.Vector256 when Avx2.IsSupported && Fma.IsSupported => DotRow256(job, r, x),
                    _ => DotRowScalar(job, r, x),
                };
            }
    }

    /// <summary>Reference: Σ_c round(code[index] · absmax[block]) · x[c] over the row's flattened elements.</summary>
    private static float DotRowScalar(Job* job, int r, float* x)
    {
        long e0 = (long)r * job->Cols;
        float sum = 0;
        for (int c = 0; c < job->Cols; c++)
        {
            long e = e0 + c;
            int idx = (job->Indices[e >> 1] >> ((e & 1) == 0 ? 4 : 0)) & 15;
            sum += Bnb4Codes.Round(job->Code[idx] * job->AbsMax[e / job->BlockSize], job->Dtype) * x[c];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RoundBf16(Vector512<float> v)
    {
        var bits = v.AsUInt32();
        bits = (bits + Vector512.Create(0x7FFFu) + ((bits >>> 16) & Vector512.Create(1u))) & Vector512.Create(0xFFFF_0000u);
        return bits.AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> RoundBf16(Vector256<float> v)
    {
        var bits = v.AsUInt32();
        bits = (bits + Vector256.Create(0x7FFFu) + ((bits >>> 16) & Vector256.Create(1u))) & Vector256.Create(0xFFFF_0000u);
        return bits.AsSingle();
    }

    /// <summary>AVX-512: the block's 16 values in one register; 16 indices (8 bytes, high nibble first) select with one permute.</summary>
    private static float DotRow512(Job* job, int r, float* x)
    {
        int cols = job->Cols, bs = job->BlockSize;
        byte* q = job->Indices + (long)r * cols / 2;
        float* absmax = job->AbsMax + (long)r * cols / bs;
        var code = Vector512.Load(job->Code);
        bool bf16 = job->Dtype == Bnb4Dtype.BF16;
        var low = Vector128.Create((byte)15);
        var acc = Vector512<float>.Zero;
        for (int b = 0; b < cols / bs; b++)
        {
            var lut = code * Vector512.Create(absmax[b]);
            if (bf16) lut = RoundBf16(lut);
            for (int j = 0; j < bs; j += 16, q += 8, x += 16)
            {
                var bytes = Vector128.CreateScalarUnsafe(*(ulong*)q).AsByte();
                var idx = Sse2.UnpackLow(Sse2.ShiftRightLogical(bytes.AsUInt16(), 4).AsByte() & low, bytes & low);
                var values = Avx512F.PermuteVar16x32(lut, Avx512F.ConvertToVector512Int32(idx));
                acc = Avx512F.FusedMultiplyAdd(values, Vector512.Load(x), acc);
            }
        }
        return Vector512.Sum(acc);
    }

    /// <summary>AVX2: the 16 values in two registers; each index picks from both and a blend on bit 3 chooses.</summary>
    private static float DotRow256(Job* job, int r, float* x)
    {
        int cols = job->Cols, bs = job->BlockSize;
        byte* q = job->Indices + (long)r * cols / 2;
        float* absmax = job->AbsMax + (long)r * cols / bs;
        var codeLo = Vector256.Load(job->Code);
        var codeHi = Vector256.Load(job->Code + 8);
        bool bf16 = job->Dtype == Bnb4Dtype.BF16;
        var low = Vector128.Create((byte)15);
        var seven = Vector256.Create(7);
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < cols / bs; b++)
        {
            var a = Vector256.Create(absmax[b]);
            var lutLo = codeLo * a;
            var lutHi = codeHi * a;
            if (bf16) { lutLo = RoundBf16(lutLo); lutHi = RoundBf16(lutHi); }
            for (int j = 0; j < bs; j += 16, q += 8, x += 16)
            {
                var bytes = Vector128.CreateScalarUnsafe(*(ulong*)q).AsByte();
                var idx = Sse2.UnpackLow(Sse2.ShiftRightLogical(bytes.AsUInt16(), 4).AsByte() & low, bytes & low);
                var i0 = Avx2.ConvertToVector256Int32(idx);
                var i1 = Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(idx, 8));
                var v0 = Avx.BlendVariable(Avx2.PermuteVar8x32(lutLo, i0), Avx2.PermuteVar8x32(lutHi, i0), Avx2.CompareGreaterThan(i0, seven).AsSingle());
                var v1 = Avx.BlendVariable(Avx2.PermuteVar8x32(lutLo, i1), Avx2.PermuteVar8x32(lutHi, i1), Avx2.CompareGreaterThan(i1, seven).AsSingle());
                acc = Fma.MultiplyAdd(v0, Vector256.Load(x), acc);
                acc = Fma.MultiplyAdd(v1, Vector256.Load(x + 8), acc);
            }
        }
        return Vector256.Sum(acc);
    }
}

/// <summary>The result of quantizing one weight to bitsandbytes 4-bit (what <c>bnb.functional.quantize_4bit</c> returns).</summary>
public sealed record Bnb4Quantized(byte[] Indices, float[] AbsMax, byte[]? NestedIndices, float[]? NestedAbsMax, float NestedOffset, float[]? NestedMap)
{
    /// <summary>The absmax as a reader recovers it (through the nested quantization when there is one).</summary>
    public float[] EffectiveAbsMax(int nestedBlockSize = 256)
    {
        if (NestedIndices is null) return AbsMax;
        var r = new float[NestedIndices.Length];
        for (int i = 0; i < r.Length; i++) r[i] = NestedMap![NestedIndices[i]] * NestedAbsMax![i / nestedBlockSize] + NestedOffset;
        return r;
    }
}

/// <summary>Quantizes f32 weights to bitsandbytes 4-bit exactly as <c>quantize_4bit</c> lays them out (TGI's --quantize bitsandbytes-nf4/-fp4).</summary>
public static class Bnb4Quantizer
{
    public const int BlockSize = 64, NestedBlockSize = 256;

    /// <param name="w">the weight flattened row-major (its values as the model dtype holds them)</param>
    public static Bnb4Quantized Quantize(ReadOnlySpan<float> w, Bnb4Type type, bool doubleQuant, int blockSize = BlockSize)
    {
        int blocks = (w.Length + blockSize - 1) / blockSize;
        var indices = new byte[(w.Length + 1) / 2];
        var absmax = new float[blocks];
        for (int b = 0; b < blocks; b++)
        {
            var block = w.Slice(b * blockSize, Math.Min(blockSize, w.Length - b * blockSize));
            float amax = TensorPrimitives.MaxMagnitude(block);
            amax = MathF.Abs(amax);
            absmax[b] = amax;
            float inv = amax == 0 ? 0 : 1f / amax;
            for (int j = 0; j < block.Length; j++)
            {
                float v = block[j] * inv;
                byte q = type == Bnb4Type.NF4 ? Bnb4Codes.QuantizeNf4(v) : Bnb4Codes.QuantizeFp4(v);
                long e = (long)b * blockSize + j;
                indices[e >> 1] |= (byte)((e & 1) == 0 ? q << 4 : q);
            }
        }
        if (!doubleQuant) return new Bnb4Quantized(indices, absmax, null, null, 0, null);

        // Double quantization: subtract the mean, then 8-bit blockwise over the signed dynamic map.
        double total = 0;
        foreach (float a in absmax) total += a;
        float offset = (float)(total / absmax.Length);
        var map = Bnb4Codes.DynamicMap();
        int nestedBlocks = (blocks + NestedBlockSize - 1) / NestedBlockSize;
        var nestedAbs = new float[nestedBlocks];
        var nested = new byte[blocks];
        var centered = new float[blocks];
        for (int i = 0; i < blocks; i++) centered[i] = absmax[i] - offset;
        for (int nb = 0; nb < nestedBlocks; nb++)
        {
            var block = centered.AsSpan(nb * NestedBlockSize, Math.Min(NestedBlockSize, blocks - nb * NestedBlockSize));
            float amax = MathF.Abs(TensorPrimitives.MaxMagnitude(block));
            nestedAbs[nb] = amax;
            float inv = amax == 0 ? 0 : 1f / amax;
            for (int j = 0; j < block.Length; j++) nested[nb * NestedBlockSize + j] = Bnb4Codes.Nearest(map, block[j] * inv);
        }
        return new Bnb4Quantized(indices, absmax, nested, nestedAbs, offset, map);
    }
}

/// <summary>
/// A bitsandbytes 4-bit checkpoint as transformers saves it: per linear <c>weight</c> (uint8 [N·K/2, 1]),
/// <c>weight.absmax</c>, <c>weight.quant_map</c>, with double quantization <c>weight.nested_absmax</c> and
/// <c>weight.nested_quant_map</c>, and <c>weight.quant_state.bitsandbytes__nf4</c> (or <c>__fp4</c>): UTF-8 JSON bytes.
/// </summary>
public sealed class BnbCheckpoint(string where) : CheckpointQuantization
{
    public override string Method => "bitsandbytes";
    public string Where { get; } = where;

    public static BnbCheckpoint Parse(JsonElement qc, string where)
    {
        bool fourBit = (qc.TryGetProperty("load_in_4bit", out var l4) && l4.ValueKind == JsonValueKind.True)
                    || (qc.TryGetProperty("_load_in_4bit", out var l4b) && l4b.ValueKind == JsonValueKind.True);
        if (!fourBit)
            throw new HarpiaException($"{where}: bitsandbytes 8-bit (LLM.int8) checkpoints are not supported; Harpia reads bitsandbytes 4-bit (load_in_4bit)");
        return new BnbCheckpoint(where);
    }

    public override unsafe QuantizedLinear? BindLinear(ITensorSource source, string stem, int outFeatures, int inFeatures)
    {
        string name = stem + ".weight";
        if (!source.Tensors.TryGetValue(name, out var weight) || weight.Type != GgmlType.U8) return null;
        var stateEntry = (source.Tensors.TryGetValue(name + ".quant_state.bitsandbytes__nf4", out var nf4) ? nf4
                : source.Tensors.TryGetValue(name + ".quant_state.bitsandbytes__fp4", out var fp4) ? fp4 : null)
            ?? throw new InvalidModelFileException(weight.FilePath, $"tensor '{name}' is uint8 but has no '{name}.quant_state.bitsandbytes__nf4' (or __fp4) beside it");
        var state = QuantState.Parse(stateEntry);
        if (state.Shape.Length != 2 || state.Shape[0] != outFeatures || state.Shape[1] != inFeatures)
            throw new InvalidModelFileException(stateEntry.FilePath, $"tensor '{stateEntry.Name}': shape [{string.Join(", ", state.Shape)}], expected [{outFeatures}, {inFeatures}] for this layer");
        long elements = (long)outFeatures * inFeatures;
        if (elements % 2 != 0) throw new InvalidModelFileException(weight.FilePath, $"tensor '{name}': an odd number of elements cannot be packed two per byte");
        ExpectShape(weight, GgmlType.U8, elements / 2, 1);
        long blocks = (elements + state.BlockSize - 1) / state.BlockSize;
        var map = Require(source, name + ".quant_map");
        ExpectShape(map, GgmlType.F32, 16);
        float[] code = Data<float>(map).ToArray();
        var absmaxEntry = Require(source, name + ".absmax");
        float[] absmax;
        long storedBytes = weight.ByteLength + map.ByteLength + absmaxEntry.ByteLength;
        bool nested = state.NestedBlockSize is not null;
        if (nested)
        {
            ExpectShape(absmaxEntry, GgmlType.U8, blocks);
            int nbs = state.NestedBlockSize!.Value;
            var nestedAbs = Require(source, name + ".nested_absmax");
            ExpectShape(nestedAbs, GgmlType.F32, (blocks + nbs - 1) / nbs);
            var nestedMap = Require(source, name + ".nested_quant_map");
            ExpectShape(nestedMap, GgmlType.F32, 256);
            storedBytes += nestedAbs.ByteLength + nestedMap.ByteLength;
            var q = Data<byte>(absmaxEntry);
            var na = Data<float>(nestedAbs);
            var nm = Data<float>(nestedMap);
            absmax = new float[blocks];
            float offset = state.NestedOffset;
            for (int i = 0; i < absmax.Length; i++) absmax[i] = nm[q[i]] * na[i / nbs] + offset;
        }
        else
        {
            ExpectShape(absmaxEntry, GgmlType.F32, blocks);
            absmax = Data<float>(absmaxEntry).ToArray();
        }
        var matrix = new Bnb4Matrix(outFeatures, inFeatures, state.QuantType, state.Dtype, state.BlockSize, weight.Data, code, absmax,
            nested, 8.0 * storedBytes / elements, weight.Owner);
        return new QuantizedLinear(new WeightMatrix(name, matrix, weight.Owner), OptionalBias(source, stem, outFeatures));
    }

    /// <summary>The JSON bitsandbytes stores beside each weight (as uint8 bytes).</summary>
    public sealed record QuantState(Bnb4Type QuantType, int BlockSize, Bnb4Dtype Dtype, long[] Shape, int? NestedBlockSize, float NestedOffset)
    {
        public static unsafe QuantState Parse(TensorEntry entry)
        {
            string name = entry.Name;
            if (entry.Type != GgmlType.U8 || entry.Shape.Length != 1)
                throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': expected uint8 JSON bytes, found {entry.Type} {entry.ShapeText}");
            JsonDocument doc;
            try { doc = JsonDocument.Parse(new ReadOnlyMemory<byte>(new ReadOnlySpan<byte>(entry.Data, checked((int)entry.ByteLength)).ToArray())); }
            catch (JsonException e) { throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant state is not valid JSON (truncated?) ({e.Message})"); }
            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant state is not a JSON object");
                string Str(string key) => root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()!
                    : throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant state has no string '{key}'");
                int Int(string key) => root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) && i > 0 ? i
                    : throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant state has no positive integer '{key}'");
                var type = Str("quant_type") switch
                {
                    "nf4" => Bnb4Type.NF4,
                    "fp4" => Bnb4Type.FP4,
                    var t => throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant_type '{t}' is not nf4 or fp4"),
                };
                var dtype = Str("dtype") switch
                {
                    "bfloat16" => Bnb4Dtype.BF16,
                    "float16" => Bnb4Dtype.F16,
                    "float32" => Bnb4Dtype.F32,
                    var d => throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': dtype '{d}' is not bfloat16, float16 or float32"),
                };
                if (!root.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array
                    || shapeEl.EnumerateArray().Any(d => d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long x) || x <= 0))
                    throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant state has no 'shape' of positive integers");
                long[] shape = shapeEl.EnumerateArray().Select(d => d.GetInt64()).ToArray();
                int? nestedBlock = null;
                float offset = 0;
                if (root.TryGetProperty("nested_blocksize", out _))
                {
                    nestedBlock = Int("nested_blocksize");
                    if (!root.TryGetProperty("nested_offset", out var off) || off.ValueKind != JsonValueKind.Number)
                        throw new InvalidModelFileException(entry.FilePath, $"tensor '{name}': quant state has nested_blocksize but no numeric 'nested_offset'");
                    offset = (float)off.GetDouble();
                }
                return new QuantState(type, Int("blocksize"), dtype, shape, nestedBlock, offset);
            }
        }
    }
}

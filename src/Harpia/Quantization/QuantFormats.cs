using System.Runtime.CompilerServices;
using Harpia.Tensors;

namespace Harpia.Quantization;

/// <summary>How a weight type's dot product consumes activations.</summary>
public enum ActivationFormat { Float, Q8_0, Q8_K }

/// <summary>
/// Type-dispatched row operations over the GGUF block formats: reference quantize/dequantize, and the per-row
/// integer dot products and unpacking the matmul kernels are built from.
/// </summary>
[SkipLocalsInit]
public static unsafe class QuantFormats
{
    public static readonly GgmlType[] Supported =
        [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    public static bool IsSupported(GgmlType t) => Array.IndexOf(Supported, t) >= 0;

    public static ActivationFormat ActivationFor(GgmlType t) => t switch
    {
        GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0 => ActivationFormat.Q8_0,
        GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K => ActivationFormat.Q8_K,
        _ => ActivationFormat.Float,
    };

    /// <summary>Reference f32 → blocks for one row (a whole number of blocks).</summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        switch (type)
        {
            case GgmlType.Q8_0: Q8_0.Quantize(src, dst); break;
            case GgmlType.Q4_0: Q4_0.Quantize(src, dst); break;
            case GgmlType.Q5_0: Q5_0.Quantize(src, dst); break;
            case GgmlType.Q2_K: Q2_K.Quantize(src, dst); break;
            case GgmlType.Q3_K: Q3_K.Quantize(src, dst); break;
            case GgmlType.Q4_K: Q4_K.Quantize(src, dst); break;
            case GgmlType.Q5_K: Q5_K.Quantize(src, dst); break;
            case GgmlType.Q6_K: Q6_K.Quantize(src, dst); break;
            case GgmlType.Q8_K: Q8_K.Quantize(src, dst); break;
            default: throw new HarpiaException($"quantizing to {type} is not supported");
        }
    }

    /// <summary>Reference blocks → f32 for one row.</summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (type)
        {
            case GgmlType.Q8_0: Q8_0.Dequantize(src, dst); break;
            case GgmlType.Q4_0: Q4_0.Dequantize(src, dst); break;
            case GgmlType.Q5_0: Q5_0.Dequantize(src, dst); break;
            case GgmlType.Q2_K: Q2_K.Dequantize(src, dst); break;
            case GgmlType.Q3_K: Q3_K.Dequantize(src, dst); break;
            case GgmlType.Q4_K: Q4_K.Dequantize(src, dst); break;
            case GgmlType.Q5_K: Q5_K.Dequantize(src, dst); break;
            case GgmlType.Q6_K: Q6_K.Dequantize(src, dst); break;
            case GgmlType.Q8_K: Q8_K.Dequantize(src, dst); break;
            default: throw new HarpiaException($"decoding {type} is not supported");
        }
    }

    /// <summary>Blocks of 32 processed per unpack step when a Q4_0/Q5_0 row is re-expressed as Q8_0 on the stack.</summary>
    private const int Q8Chunk = 64;

    /// <summary>Dot of one Q8_0/Q4_0/Q5_0 weight row (<paramref name="nb"/> blocks) with Q8 activations.</summary>
    public static float DotRowQ8(GgmlType type, byte* row, int nb, sbyte* xq, float* xd, SimdPath path)
    {
        if (type == GgmlType.Q8_0) return Q8_0.Dot((BlockQ8_0*)row, xq, xd, nb, path);
        if (path is SimdPath.Vector512 or SimdPath.Vector256 && Q4_0Fused.IsSupported)
            return type == GgmlType.Q4_0 ? Q4_0Fused.DotRowQ4_0((BlockQ4_0*)row, xq, xd, nb)
                 : type == GgmlType.Q5_0 ? Q4_0Fused.DotRowQ5_0((BlockQ5_0*)row, xq, xd, nb)
                 : throw new HarpiaException($"{type} is not a Q8_0-family type");
        BlockQ8_0* tmp = stackalloc BlockQ8_0[Q8Chunk];
        float sum = 0;
        for (int b0 = 0; b0 < nb; b0 += Q8Chunk)
        {
            int m = Math.Min(Q8Chunk, nb - b0);
            UnpackQ8(type, row, b0, m, tmp);
            sum += Q8_0.Dot(tmp, xq + 32 * b0, xd + b0, m, path);
        }
        return sum;
    }

    /// <summary>Re-expresses blocks [b0, b0 + m) of a Q8_0-family row as Q8_0 blocks.</summary>
    public static void UnpackQ8(GgmlType type, byte* row, int b0, int m, BlockQ8_0* dst)
    {
        switch (type)
        {
            case GgmlType.Q8_0: Buffer.MemoryCopy((BlockQ8_0*)row + b0, dst, (long)m * BlockQ8_0.Bytes, (long)m * BlockQ8_0.Bytes); break;
            case GgmlType.Q4_0: Q4_0.UnpackToQ8_0((BlockQ4_0*)row + b0, dst, m); break;
            case GgmlType.Q5_0: Q5_0.UnpackToQ8_0((BlockQ5_0*)row + b0, dst, m); break;
            default: throw new HarpiaException($"{type} is not a Q8_0-family type");
        }
    }

    /// <summary>Unpacks super-block <paramref name="sb"/> of a k-quant row into the shared form.</summary>
    public static void UnpackK(GgmlType type, byte* row, int sb, KUnpacked* u)
    {
        switch (type)
        {
            case GgmlType.Q4_K: Q4_K.Unpack((BlockQ4_K*)row + sb, u); break;
            case GgmlType.Q6_K: Q6_K.Unpack((BlockQ6_K*)row + sb, u); break;
            case GgmlType.Q5_K: Q5_K.Unpack((BlockQ5_K*)row + sb, u); break;
            case GgmlType.Q3_K: Q3_K.Unpack((BlockQ3_K*)row + sb, u); break;
            case GgmlType.Q2_K: Q2_K.Unpack((BlockQ2_K*)row + sb, u); break;
            default: throw new HarpiaException($"{type} is not a k-quant type");
        }
    }

    /// <summary>
    /// Super-blocks unpacked per step before their dots run. Unpacking writes 16/32-byte pieces that the kernels
    /// read back as 64-byte vectors; reading them immediately would defeat store-to-load forwarding and stall, so
    /// a batch is unpacked first and dotted after the stores have retired.
    /// </summary>
    private const int KBatch = 8;

    /// <summary>Dot of one k-quant weight row (<paramref name="nsb"/> super-blocks) with Q8_K activations.</summary>
    public static float DotRowK(GgmlType type, byte* row, int nsb, BlockQ8_K* x, SimdPath path)
    {
        if (type == GgmlType.Q4_K && path == SimdPath.Vector512 && Q4_KFused.IsSupported)
            return Q4_KFused.DotRow((BlockQ4_K*)row, x, nsb);
        if (type == GgmlType.Q5_K && path == SimdPath.Vector512 && Q5_KFused.IsSupported)
            return Q5_KFused.DotRow((BlockQ5_K*)row, x, nsb);
        if (type == GgmlType.Q2_K && path == SimdPath.Vector512 && Q2_KFused.IsSupported)
            return Q2_KFused.DotRow((BlockQ2_K*)row, x, nsb);
        if (type == GgmlType.Q3_K && path == SimdPath.Vector512 && Q3_KFused.IsSupported)
            return Q3_KFused.DotRow((BlockQ3_K*)row, x, nsb);
        if (type == GgmlType.Q6_K && path == SimdPath.Vector512 && Q6_KFused.IsSupported)
            return Q6_KFused.DotRow((BlockQ6_K*)row, x, nsb);
        KUnpacked* u = stackalloc KUnpacked[KBatch];
        float sum = 0;
        for (int s0 = 0; s0 < nsb; s0 += KBatch)
        {
            int m = Math.Min(KBatch, nsb - s0);
            for (int i = 0; i < m; i++) UnpackK(type, row, s0 + i, u + i);
            for (int i = 0; i < m; i++) sum += KQuantDot.Dot(u + i, x + s0 + i, path);
        }
        return sum;
    }

    /// <summary>
    /// The reference the SIMD dots are checked against: the row decoded by the scalar dequantizer, dotted in f64
    /// with the dequantized activations.
    /// </summary>
    public static double ReferenceDot(GgmlType type, ReadOnlySpan<byte> row, int cols, ReadOnlySpan<float> activations)
    {
        var w = new float[cols];
        Dequantize(type, row, w);
        double s = 0;
        for (int i = 0; i < cols; i++) s += (double)w[i] * activations[i];
        return s;
    }
}

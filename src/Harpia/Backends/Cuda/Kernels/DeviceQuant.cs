using ILGPU;
using Harpia.Tensors;

namespace Harpia.Backends.Cuda.Kernels;

/// <summary>Eight consecutive weights of one row, dequantized in registers (one lane's share of a block).</summary>
public struct Float8
{
    public float V0, V1, V2, V3, V4, V5, V6, V7;

    /// <summary>Σ Vⱼ·x[o + j]: the lane's partial dot with one activation row.</summary>
    public readonly float Dot(ArrayView<float> x, long o) =>
        V0 * x[o] + V1 * x[o + 1] + V2 * x[o + 2] + V3 * x[o + 3] + V4 * x[o + 4] + V5 * x[o + 5] + V6 * x[o + 6] + V7 * x[o + 7];

    public readonly float this[int j] => j switch { 0 => V0, 1 => V1, 2 => V2, 3 => V3, 4 => V4, 5 => V5, 6 => V6, _ => V7 };
}

/// <summary>
/// Device-side decoding of GGUF blocks exactly as stored (the layouts of Quantization/*.cs): a kernel lane reads the
/// eight weights starting at element <c>e</c> (a multiple of 8) of the block at byte <c>b</c>. Eight aligned
/// elements always share one scale group in every format, so each call decodes its scales once. Plain C#: ILGPU
/// compiles it to PTX and runs it on its CPU accelerator, where the tests compare it with the scalar dequantizers.
/// </summary>
public static class DeviceQuant
{
    // Type ids as kernel arguments (the GgmlType values).
    public const int F32 = (int)GgmlType.F32, F16 = (int)GgmlType.F16, BF16 = (int)GgmlType.BF16, Q4_0 = (int)GgmlType.Q4_0,
        Q5_0 = (int)GgmlType.Q5_0, Q8_0 = (int)GgmlType.Q8_0, Q2_K = (int)GgmlType.Q2_K, Q3_K = (int)GgmlType.Q3_K,
        Q4_K = (int)GgmlType.Q4_K, Q5_K = (int)GgmlType.Q5_K, Q6_K = (int)GgmlType.Q6_K;

    /// <summary>Whether the GPU kernels read this weight type.</summary>
    public static bool Supports(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q4_0
        or GgmlType.Q5_0 or GgmlType.Q8_0 or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    /// <summary>fp16 bits → f32, exactly (normal, subnormal, inf and NaN halves).</summary>
    public static float HalfToFloat(uint h)
    {
        uint magnitude = h & 0x7fff;
        float value = (h & 0x7c00) == 0
            ? (h & 0x3ff) * 5.9604645e-8f                                   // subnormal: m · 2^-24
            : (h & 0x7c00) == 0x7c00
                ? Interop.IntAsFloat(0x7f800000 | ((h & 0x3ff) << 13))      // inf, NaN
                : Interop.IntAsFloat((magnitude << 13) + 0x38000000);       // re-bias the exponent
        return Interop.IntAsFloat(Interop.FloatAsInt(value) | ((h & 0x8000) << 16));
    }

    /// <summary>f32 → fp16 bits, round to nearest even (as the CPU's (Half) cast and cvt.rn.f16.f32).</summary>
    public static ushort FloatToHalf(float f)
    {
        uint x = Interop.FloatAsInt(f);
        uint sign = (x >> 16) & 0x8000;
        uint abs = x & 0x7fffffff;
        if (abs >= 0x47800000) return (ushort)(sign | (abs > 0x7f800000 ? 0x7e00u : 0x7c00u)); // ≥ 65536, inf, NaN
        if (abs < 0x38800000)
        {
            // Below the smallest normal half: the result is round(|f| · 2^24) units of 2^-24, ties to even.
            float units = Interop.IntAsFloat(abs) * 16777216f;
            int whole = (int)units;
            float frac = units - whole;
            if (frac > 0.5f || (frac == 0.5f && (whole & 1) == 1)) whole++;
            return (ushort)(sign | (uint)whole);
        }
        // Normal: re-bias (−112 << 23) and round the 13 dropped bits to nearest even; a carry into the exponent
        // (up to inf at 65520) is the correct rounding.
        return (ushort)(sign | ((abs - 0x38000000 + 0xfff + ((abs >> 13) & 1)) >> 13));
    }

    public static float BFloat16ToFloat(uint bits) => Interop.IntAsFloat(bits << 16);

    private static float HalfAt(ArrayView<byte> w, long o) => HalfToFloat((uint)(w[o] | (w[o + 1] << 8)));

    /// <summary>The 8 weights at element <paramref name="e"/> of the block at <paramref name="b"/>, for any supported type.</summary>
    public static Float8 Decode8(int type, ArrayView<byte> w, ArrayView<uint> words, long b, int e)
    {
        if (type == Q4_K) return Q4K(w, b, e);
        if (type == Q6_K) return Q6K(w, b, e);
        if (type == Q8_0) return Q80(w, b, e);
        if (type == Q5_K) return Q5K(w, b, e);
        if (type == BF16) return Bf16(words, b);
        if (type == F16) return Fp16(words, b);
        if (type == F32) return Fp32(words, b);
        if (type == Q2_K) return Q2K(w, b, e);
        if (type == Q3_K) return Q3K(w, b, e);
        if (type == Q4_0) return Q40(w, b, e);
        return Q50(w, b, e);
    }

    /// <summary>Block geometry per type id (elements, bytes); float types are "blocks" of 8 so one call reads one block.</summary>
    public static void Geometry(int type, out int blockSize, out int blockBytes)
    {
        if (type == F32) { blockSize = 8; blockBytes = 32; }
        else if (type == F16 || type == BF16) { blockSize = 8; blockBytes = 16; }
        else if (type == Q8_0) { blockSize = 32; blockBytes = 34; }
        else if (type == Q4_0) { blockSize = 32; blockBytes = 18; }
        else if (type == Q5_0) { blockSize = 32; blockBytes = 22; }
        else if (type == Q2_K) { blockSize = 256; blockBytes = 84; }
        else if (type == Q3_K) { blockSize = 256; blockBytes = 110; }
        else if (type == Q4_K) { blockSize = 256; blockBytes = 144; }
        else if (type == Q5_K) { blockSize = 256; blockBytes = 176; }
        else { blockSize = 256; blockBytes = 210; }   // Q6_K
    }

    // ---- float weights: the 8 elements are 16 or 32 aligned bytes (rows are whole words; uploads keep 4-byte alignment)

    private static Float8 Fp32(ArrayView<uint> words, long b)
    {
        long o = b / 4;
        return new Float8
        {
            V0 = Interop.IntAsFloat(words[o]), V1 = Interop.IntAsFloat(words[o + 1]), V2 = Interop.IntAsFloat(words[o + 2]), V3 = Interop.IntAsFloat(words[o + 3]),
            V4 = Interop.IntAsFloat(words[o + 4]), V5 = Interop.IntAsFloat(words[o + 5]), V6 = Interop.IntAsFloat(words[o + 6]), V7 = Interop.IntAsFloat(words[o + 7]),
        };
    }

    private static Float8 Fp16(ArrayView<uint> words, long b)
    {
        long o = b / 4;
        uint a = words[o], c = words[o + 1], d = words[o + 2], f = words[o + 3];
        return new Float8
        {
            V0 = HalfToFloat(a & 0xffff), V1 = HalfToFloat(a >> 16), V2 = HalfToFloat(c & 0xffff), V3 = HalfToFloat(c >> 16),
            V4 = HalfToFloat(d & 0xffff), V5 = HalfToFloat(d >> 16), V6 = HalfToFloat(f & 0xffff), V7 = HalfToFloat(f >> 16),
        };
    }

    private static Float8 Bf16(ArrayView<uint> words, long b)
    {
        long o = b / 4;
        uint a = words[o], c = words[o + 1], d = words[o + 2], f = words[o + 3];
        return new Float8
        {
            V0 = Interop.IntAsFloat(a << 16), V1 = Interop.IntAsFloat(a & 0xffff0000), V2 = Interop.IntAsFloat(c << 16), V3 = Interop.IntAsFloat(c & 0xffff0000),
            V4 = Interop.IntAsFloat(d << 16), V5 = Interop.IntAsFloat(d & 0xffff0000), V6 = Interop.IntAsFloat(f << 16), V7 = Interop.IntAsFloat(f & 0xffff0000),
        };
    }

    // ---- 32-element blocks

    /// <summary>Q8_0: fp16 d, 32 × int8; value = d·q.</summary>
    private static Float8 Q80(ArrayView<byte> w, long b, int e)
    {
        float d = HalfAt(w, b);
        long q = b + 2 + e;
        return new Float8
        {
            V0 = d * (sbyte)w[q], V1 = d * (sbyte)w[q + 1], V2 = d * (sbyte)w[q + 2], V3 = d * (sbyte)w[q + 3],
            V4 = d * (sbyte)w[q + 4], V5 = d * (sbyte)w[q + 5], V6 = d * (sbyte)w[q + 6], V7 = d * (sbyte)w[q + 7],
        };
    }

    /// <summary>Q4_0: fp16 d, 16 bytes; element j &lt; 16 is the low nibble of byte j, j ≥ 16 the high nibble of j − 16; value = d·(q − 8).</summary>
    private static Float8 Q40(ArrayView<byte> w, long b, int e)
    {
        float d = HalfAt(w, b);
        int shift = e < 16 ? 0 : 4;
        long q = b + 2 + (e & 15);
        return new Float8
        {
            V0 = d * (((w[q] >> shift) & 15) - 8), V1 = d * (((w[q + 1] >> shift) & 15) - 8),
            V2 = d * (((w[q + 2] >> shift) & 15) - 8), V3 = d * (((w[q + 3] >> shift) & 15) - 8),
            V4 = d * (((w[q + 4] >> shift) & 15) - 8), V5 = d * (((w[q + 5] >> shift) & 15) - 8),
            V6 = d * (((w[q + 6] >> shift) & 15) - 8), V7 = d * (((w[q + 7] >> shift) & 15) - 8),
        };
    }

    /// <summary>Q5_0: fp16 d, 32-bit qh (bit i = fifth bit of element i), nibbles as Q4_0; value = d·(q − 16).</summary>
    private static Float8 Q50(ArrayView<byte> w, long b, int e)
    {
        float d = HalfAt(w, b);
        uint qh = (uint)(w[b + 2] | (w[b + 3] << 8) | (w[b + 4] << 16) | (w[b + 5] << 24)) >> e;
        int shift = e < 16 ? 0 : 4;
        long q = b + 6 + (e & 15);
        return new Float8
        {
            V0 = d * ((((w[q] >> shift) & 15) | (int)((qh << 4) & 16)) - 16),
            V1 = d * ((((w[q + 1] >> shift) & 15) | (int)((qh << 3) & 16)) - 16),
            V2 = d * ((((w[q + 2] >> shift) & 15) | (int)((qh << 2) & 16)) - 16),
            V3 = d * ((((w[q + 3] >> shift) & 15) | (int)((qh << 1) & 16)) - 16),
            V4 = d * ((((w[q + 4] >> shift) & 15) | (int)(qh & 16)) - 16),
            V5 = d * ((((w[q + 5] >> shift) & 15) | (int)((qh >> 1) & 16)) - 16),
            V6 = d * ((((w[q + 6] >> shift) & 15) | (int)((qh >> 2) & 16)) - 16),
            V7 = d * ((((w[q + 7] >> shift) & 15) | (int)((qh >> 3) & 16)) - 16),
        };
    }

    // ---- 256-element k-quant super-blocks

    /// <summary>Q4_K group g's 6-bit scale and min from the 12 packed bytes at <paramref name="s"/> (ggml get_scale_min_k4).</summary>
    private static void ScaleMinK4(ArrayView<byte> w, long s, int g, out int sc, out int m)
    {
        if (g < 4) { sc = w[s + g] & 63; m = w[s + g + 4] & 63; }
        else
        {
            sc = (w[s + g + 4] & 0xF) | ((w[s + g - 4] >> 6) << 4);
            m = (w[s + g + 4] >> 4) | ((w[s + g] >> 6) << 4);
        }
    }

    /// <summary>Q4_K: d, dmin, 12 scale bytes, 128 nibble bytes; chunk c of 64 uses bytes 32c.. (low nibbles: first 32).</summary>
    private static Float8 Q4K(ArrayView<byte> w, long b, int e)
    {
        float d = HalfAt(w, b), dmin = HalfAt(w, b + 2);
        ScaleMinK4(w, b + 4, e / 32, out int sc, out int m);
        float ds = d * sc, dm = dmin * m;
        int shift = (e & 32) != 0 ? 4 : 0;
        long q = b + 16 + 32 * (e / 64) + (e & 31);
        return new Float8
        {
            V0 = ds * ((w[q] >> shift) & 15) - dm, V1 = ds * ((w[q + 1] >> shift) & 15) - dm,
            V2 = ds * ((w[q + 2] >> shift) & 15) - dm, V3 = ds * ((w[q + 3] >> shift) & 15) - dm,
            V4 = ds * ((w[q + 4] >> shift) & 15) - dm, V5 = ds * ((w[q + 5] >> shift) & 15) - dm,
            V6 = ds * ((w[q + 6] >> shift) & 15) - dm, V7 = ds * ((w[q + 7] >> shift) & 15) - dm,
        };
    }

    /// <summary>Q5_K: Q4_K's layout with 32 qh bytes before the nibbles; bit e/32 of qh[e % 32] is the fifth bit.</summary>
    private static Float8 Q5K(ArrayView<byte> w, long b, int e)
    {
        float d = HalfAt(w, b), dmin = HalfAt(w, b + 2);
        ScaleMinK4(w, b + 4, e / 32, out int sc, out int m);
        float ds = d * sc, dm = dmin * m;
        int shift = (e & 32) != 0 ? 4 : 0, hbit = e / 32, l = e & 31;
        long q = b + 48 + 32 * (e / 64) + l, h = b + 16 + l;
        return new Float8
        {
            V0 = ds * (((w[q] >> shift) & 15) | (((w[h] >> hbit) & 1) << 4)) - dm,
            V1 = ds * (((w[q + 1] >> shift) & 15) | (((w[h + 1] >> hbit) & 1) << 4)) - dm,
            V2 = ds * (((w[q + 2] >> shift) & 15) | (((w[h + 2] >> hbit) & 1) << 4)) - dm,
            V3 = ds * (((w[q + 3] >> shift) & 15) | (((w[h + 3] >> hbit) & 1) << 4)) - dm,
            V4 = ds * (((w[q + 4] >> shift) & 15) | (((w[h + 4] >> hbit) & 1) << 4)) - dm,
            V5 = ds * (((w[q + 5] >> shift) & 15) | (((w[h + 5] >> hbit) & 1) << 4)) - dm,
            V6 = ds * (((w[q + 6] >> shift) & 15) | (((w[h + 6] >> hbit) & 1) << 4)) - dm,
            V7 = ds * (((w[q + 7] >> shift) & 15) | (((w[h + 7] >> hbit) & 1) << 4)) - dm,
        };
    }

    /// <summary>
    /// Q6_K: 128 ql, 64 qh, 16 int8 scales, d. Half h = e/128; quarter k = (e%128)/32 takes ql[64h + 32(k&1) + l]'s
    /// low (k &lt; 2) or high nibble and bits 2k of qh[32h + l]; scale sc[8h + 2k + l/16]; value = d·sc·(q − 32).
    /// </summary>
    private static Float8 Q6K(ArrayView<byte> w, long b, int e)
    {
        int half = e / 128, k = (e & 127) / 32, l = e & 31;
        float ds = HalfAt(w, b + 208) * (sbyte)w[b + 192 + 8 * half + 2 * k + l / 16];
        int shift = k < 2 ? 0 : 4, hshift = 2 * k;
        long ql = b + 64 * half + 32 * (k & 1) + l, qh = b + 128 + 32 * half + l;
        return new Float8
        {
            V0 = ds * ((((w[ql] >> shift) & 15) | (((w[qh] >> hshift) & 3) << 4)) - 32),
            V1 = ds * ((((w[ql + 1] >> shift) & 15) | (((w[qh + 1] >> hshift) & 3) << 4)) - 32),
            V2 = ds * ((((w[ql + 2] >> shift) & 15) | (((w[qh + 2] >> hshift) & 3) << 4)) - 32),
            V3 = ds * ((((w[ql + 3] >> shift) & 15) | (((w[qh + 3] >> hshift) & 3) << 4)) - 32),
            V4 = ds * ((((w[ql + 4] >> shift) & 15) | (((w[qh + 4] >> hshift) & 3) << 4)) - 32),
            V5 = ds * ((((w[ql + 5] >> shift) & 15) | (((w[qh + 5] >> hshift) & 3) << 4)) - 32),
            V6 = ds * ((((w[ql + 6] >> shift) & 15) | (((w[qh + 6] >> hshift) & 3) << 4)) - 32),
            V7 = ds * ((((w[ql + 7] >> shift) & 15) | (((w[qh + 7] >> hshift) & 3) << 4)) - 32),
        };
    }

    /// <summary>Q2_K: 16 scale bytes (low nibble scale, high nibble min), 64 qs bytes, d, dmin; 2-bit q at qs[32n + l] bits 2j.</summary>
    private static Float8 Q2K(ArrayView<byte> w, long b, int e)
    {
        int s = w[b + e / 16];
        float ds = HalfAt(w, b + 80) * (s & 15), dm = HalfAt(w, b + 82) * (s >> 4);
        int shift = 2 * ((e & 127) / 32);
        long q = b + 16 + 32 * (e / 128) + (e & 31);
        return new Float8
        {
            V0 = ds * ((w[q] >> shift) & 3) - dm, V1 = ds * ((w[q + 1] >> shift) & 3) - dm,
            V2 = ds * ((w[q + 2] >> shift) & 3) - dm, V3 = ds * ((w[q + 3] >> shift) & 3) - dm,
            V4 = ds * ((w[q + 4] >> shift) & 3) - dm, V5 = ds * ((w[q + 5] >> shift) & 3) - dm,
            V6 = ds * ((w[q + 6] >> shift) & 3) - dm, V7 = ds * ((w[q + 7] >> shift) & 3) - dm,
        };
    }

    /// <summary>Q3_K: 32 hmask bytes, 64 qs bytes, 12 bytes of 6-bit signed scales, d; value = d·sc·(q + 4·hi − 4).</summary>
    private static Float8 Q3K(ArrayView<byte> w, long b, int e)
    {
        int g = e / 16;
        long s = b + 96;
        int low = g < 8 ? w[s + g] & 0xF : w[s + g - 8] >> 4;
        int high = (w[s + 8 + g % 4] >> (2 * (g / 4))) & 3;
        float ds = HalfAt(w, b + 108) * ((low | (high << 4)) - 32);
        int shift = 2 * ((e & 127) / 32), hbit = e / 32, l = e & 31;
        long q = b + 32 + 32 * (e / 128) + l, h = b + l;
        return new Float8
        {
            V0 = ds * (((w[q] >> shift) & 3) + 4 * ((w[h] >> hbit) & 1) - 4),
            V1 = ds * (((w[q + 1] >> shift) & 3) + 4 * ((w[h + 1] >> hbit) & 1) - 4),
            V2 = ds * (((w[q + 2] >> shift) & 3) + 4 * ((w[h + 2] >> hbit) & 1) - 4),
            V3 = ds * (((w[q + 3] >> shift) & 3) + 4 * ((w[h + 3] >> hbit) & 1) - 4),
            V4 = ds * (((w[q + 4] >> shift) & 3) + 4 * ((w[h + 4] >> hbit) & 1) - 4),
            V5 = ds * (((w[q + 5] >> shift) & 3) + 4 * ((w[h + 5] >> hbit) & 1) - 4),
            V6 = ds * (((w[q + 6] >> shift) & 3) + 4 * ((w[h + 6] >> hbit) & 1) - 4),
            V7 = ds * (((w[q + 7] >> shift) & 3) + 4 * ((w[h + 7] >> hbit) & 1) - 4),
        };
    }
}

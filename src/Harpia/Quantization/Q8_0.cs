using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>GGUF Q8_0: 32 weights as int8 with one fp16 scale; value = d · q.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ8_0
{
    public const int Size = 32, Bytes = 34;
    public ushort D;            // fp16 scale
    public fixed sbyte Qs[32];
}

/// <summary>
/// Activations for the Q8_0 / Q4_0 / Q5_0 dots: each 32-value block of an f32 row quantized to int8 with an f32
/// scale, stored as two parallel arrays (all quants, then all scales) so the kernels load 64 contiguous quants.
/// Same rounding as ggml's vectorized quantize_row_q8_0; the scale stays f32 (ggml rounds it to f16), slightly more exact.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q8Activations
{
    /// <summary>Quantizes <paramref name="n"/> floats (a multiple of 32) to <paramref name="qs"/>[n] and <paramref name="d"/>[n/32].</summary>
    public static void Quantize(float* x, int n, sbyte* qs, float* d)
    {
        for (int b = 0; b < n / 32; b++)
        {
            float* xb = x + b * 32;
            float amax;
            if (Vector256.IsHardwareAccelerated)
            {
                var m = Vector256.Max(Vector256.Abs(Vector256.Load(xb)), Vector256.Abs(Vector256.Load(xb + 8)));
                m = Vector256.Max(m, Vector256.Max(Vector256.Abs(Vector256.Load(xb + 16)), Vector256.Abs(Vector256.Load(xb + 24))));
                var h = Vector128.Max(m.GetLower(), m.GetUpper());
                amax = MathF.Max(MathF.Max(h[0], h[1]), MathF.Max(h[2], h[3]));
            }
            else
            {
                amax = 0;
                for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(xb[j]));
            }
            float scale = amax / 127;
            float id = scale != 0 ? 1 / scale : 0;
            d[b] = scale;
            sbyte* q = qs + b * 32;
            if (Vector256.IsHardwareAccelerated)
            {
                // Round half to even like ggml's AVX quantize_row_q8_0 (its scalar reference rounds half away).
                var s = Vector256.Create(id);
                var i0 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(xb) * s));
                var i1 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(xb + 8) * s));
                var i2 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(xb + 16) * s));
                var i3 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(xb + 24) * s));
                var lo = Vector256.Narrow(i0, i1);
                var hi = Vector256.Narrow(i2, i3);
                Vector128.Narrow(lo.GetLower(), lo.GetUpper()).Store(q);
                Vector128.Narrow(hi.GetLower(), hi.GetUpper()).Store(q + 16);
            }
            else
                for (int j = 0; j < 32; j++) q[j] = (sbyte)MathF.Round(xb[j] * id, MidpointRounding.AwayFromZero);
        }
    }
}

/// <summary>Q8_0 reference quantizer/dequantizer and the int8 × int8 block dot shared by Q8_0, Q4_0 and Q5_0.</summary>
[SkipLocalsInit]
public static unsafe class Q8_0
{
    static Q8_0() => AssertSize<BlockQ8_0>(BlockQ8_0.Bytes);

    /// <summary>Reference quantizer (ggml quantize_row_q8_0_ref): d = amax/127, q = roundf(x/d).</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 32, BlockQ8_0.Bytes, dst.Length, "Q8_0 quantize");
        fixed (float* x = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ8_0*)p;
            for (int b = 0; b < nb; b++)
            {
                float* xb = x + b * 32;
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(xb[j]));
                float d = amax / 127;
                float id = d != 0 ? 1 / d : 0;
                y[b].D = F2H(d);
                for (int j = 0; j < 32; j++) y[b].Qs[j] = (sbyte)MathF.Round(xb[j] * id, MidpointRounding.AwayFromZero);
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 32, BlockQ8_0.Bytes, src.Length, "Q8_0 dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ8_0*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D);
                for (int j = 0; j < 32; j++) y[b * 32 + j] = d * x[b].Qs[j];
            }
        }
    }

    /// <summary>
    /// Σ over <paramref name="nb"/> blocks of d_w · d_x · Σ q_w q_x: weights in Q8_0 layout, activations from
    /// <see cref="Q8Activations"/>. Integer sums are exact on every path; only the f32 accumulation order differs
    /// (Vector512/256 keep per-lane partial sums), so paths agree within f32 rounding, not bit for bit.
    /// </summary>
    public static float Dot(BlockQ8_0* w, sbyte* xq, float* xd, int nb, SimdPath path)
    {
        switch (path)
        {
            // With AVX-VNNI the 256-bit vpdpbusd kernel is faster than the 512-bit one: at 512 bits there is no
            // vpsignb and the per-pair scale vector costs more than the wider multiply saves (measured on Zen 5).
            case SimdPath.Vector512: return PreferVnni256 ? Dot256(w, xq, xd, 0, nb, 0) : Dot512(w, xq, xd, nb);
            case SimdPath.Vector256: return Dot256(w, xq, xd, 0, nb, 0);
            case SimdPath.Vector128: return Dot128(w, xq, xd, nb);
            default: return DotScalar(w, xq, xd, nb);
        }
    }

    /// <summary>Benchmark switch (HARPIA_Q8_512=1): whether the Vector512 path hands Q8_0 to the 256-bit AVX-VNNI kernel.</summary>
    internal static readonly bool PreferVnni256 = Vnni.UseHardware && Environment.GetEnvironmentVariable("HARPIA_Q8_512") != "1";

    public static float DotScalar(BlockQ8_0* w, sbyte* xq, float* xd, int nb)
    {
        float sum = 0;
        for (int b = 0; b < nb; b++)
        {
            int isum = 0;
            sbyte* x = xq + b * 32;
            for (int j = 0; j < 32; j++) isum += w[b].Qs[j] * x[j];
            sum += H2F(w[b].D) * xd[b] * isum;
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BlockDot256(Vector256<sbyte> wv, Vector256<sbyte> xv)
    {
        // vpmaddubsw wants unsigned × signed: move w's sign onto x (|w| · sign(w)·x).
        var aw = Avx2.Abs(wv);
        var sx = Avx2.Sign(xv, wv);
        return Vnni.DotBytesSmall(Vector256<int>.Zero, aw, sx);   // |w| ≤ 128, |x| ≤ 127: pairs fit int16
    }

    private static float Dot256(BlockQ8_0* w, sbyte* xq, float* xd, int b0, int nb, float init)
    {
        var acc = Vector256<float>.Zero;
        for (int b = b0; b < nb; b++)
        {
            if ((b & 1) == 0) PrefetchAhead(w + b, 2);   // two 34-byte blocks span up to 2 lines
            var p = BlockDot256(Vector256.Load(w[b].Qs), Vector256.Load(xq + b * 32));
            var s = Vector256.Create(H2F(w[b].D) * xd[b]);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), s, acc);
        }
        return init + Vector256.Sum(acc);
    }

    internal static float Dot512(BlockQ8_0* w, sbyte* xq, float* xd, int nb)
    {
        var acc = Vector512<float>.Zero;
        int b = 0;
        for (; b + 2 <= nb; b += 2)
        {
            var wv = KQuantDot.Combine(Vector256.Load(w[b].Qs), Vector256.Load(w[b + 1].Qs));
            var xv = Vector512.Load(xq + b * 32);
            var aw = Avx512BW.Abs(wv);
            // No vpsignb at 512 bits: negate x where w < 0 (x is in [-127, 127], so negation cannot overflow).
            var sx = Vector512.ConditionalSelect(Vector512.LessThan(wv, Vector512<sbyte>.Zero), -xv, xv);
            var p = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(aw, sx), Vector512<short>.One);
            var s = Vector512.Create(Vector256.Create(H2F(w[b].D) * xd[b]), Vector256.Create(H2F(w[b + 1].D) * xd[b + 1]));
            acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(p), s, acc);
        }
        return Dot256(w, xq, xd, b, nb, Vector512.Sum(acc));
    }

    /// <summary>
    /// Prefill micro-kernel (AVX2/AVX-VNNI): one Q8_0-layout weight row against four activation rows (row a at
    /// xq + a·32·nb, xd + a·nb); |w| is computed once per block for all four. Agrees with <see cref="Dot"/> to f32 rounding.
    /// </summary>
    internal static void Dot4x256(BlockQ8_0* w, sbyte* xq, float* xd, int nb, float* result)
    {
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        long qStride = 32L * nb;
        for (int b = 0; b < nb; b++)
        {
            var wv = Vector256.Load(w[b].Qs);
            var aw = Avx2.Abs(wv);
            float dw = H2F(w[b].D);
            sbyte* x = xq + 32 * b;
            Row(ref a0, x, xd[b]);
            Row(ref a1, x + qStride, xd[nb + b]);
            Row(ref a2, x + 2 * qStride, xd[2 * nb + b]);
            Row(ref a3, x + 3 * qStride, xd[3 * nb + b]);

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            void Row(ref Vector256<float> acc, sbyte* xa, float dx)
            {
                var sx = Avx2.Sign(Vector256.Load(xa), wv);
                var p = Vnni.DotBytesSmall(Vector256<int>.Zero, aw, sx);
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(dw * dx), acc);
            }
        }
        result[0] = Vector256.Sum(a0);
        result[1] = Vector256.Sum(a1);
        result[2] = Vector256.Sum(a2);
        result[3] = Vector256.Sum(a3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<int> Dot16(Vector128<sbyte> wv, Vector128<sbyte> xv)
    {
        if (Ssse3.IsSupported)
            return Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(Ssse3.Abs(wv), Ssse3.Sign(xv, wv)), Vector128<short>.One);
        if (Dp.IsSupported) return Dp.DotProduct(Vector128<int>.Zero, wv, xv);          // NEON sdot
        if (AdvSimd.IsSupported)
        {
            var lo = AdvSimd.MultiplyWideningLower(wv.GetLower(), xv.GetLower());
            var hi = AdvSimd.MultiplyWideningUpper(wv, xv);
            return AdvSimd.AddPairwiseWidening(lo) + AdvSimd.AddPairwiseWidening(hi);
        }
        throw new PlatformNotSupportedException();
    }

    private static float Dot128(BlockQ8_0* w, sbyte* xq, float* xd, int nb)
    {
        var acc = Vector128<float>.Zero;
        for (int b = 0; b < nb; b++)
        {
            sbyte* x = xq + b * 32;
            var p = Dot16(Vector128.Load(w[b].Qs), Vector128.Load(x)) + Dot16(Vector128.Load(w[b].Qs + 16), Vector128.Load(x + 16));
            acc += Vector128.ConvertToSingle(p) * Vector128.Create(H2F(w[b].D) * xd[b]);
        }
        return Vector128.Sum(acc);
    }
}

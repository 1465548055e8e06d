using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// One k-quant super-block (256 weights) re-expressed in a form every k-quant shares, so one integer kernel per
/// vector width serves Q2_K…Q6_K: weight = D · scale(g) · Q[e] − DMin · coef(g) for the 16-element group g of e.
/// Q holds unsigned levels ≤ 63 (so vpmaddubsw / sdot cannot saturate); signed formats fold their offset
/// (Q6_K −32, Q3_K −4) into DMin·coef.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct KUnpacked
{
    public const int Bytes = 256 + 32 + 32 + 8;
    public fixed byte Q[256];
    /// <summary>Scale of each 16-element group (Q4_K/Q5_K's 32-element groups appear twice).</summary>
    public fixed short Scales[16];
    /// <summary>Multiplier of the activation sum of each 16-element group (from Q8_K bsums).</summary>
    public fixed short MinCoef[16];
    public float D, DMin;
}

/// <summary>Integer dot of an unpacked k-quant super-block with a Q8_K activation block, per vector width.</summary>
[SkipLocalsInit]
public static unsafe class KQuantDot
{
    /// <summary>
    /// [lo | hi] as one 512-bit vector via vinserti64x4. Vector512.Create(lo, hi) compiles to inserts into a
    /// stack temporary that serialize consecutive iterations; this form stays in registers (measured ~2x on Q4_K).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<T> Combine<T>(Vector256<T> lo, Vector256<T> hi) =>
        Avx512F.InsertVector256(lo.AsByte().ToVector512Unsafe(), hi.AsByte(), 1).As<byte, T>();

    /// <summary>Σ_e x_e · w_e for one super-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(KUnpacked* w, BlockQ8_K* x, SimdPath path)
    {
        int isum, msum;
        switch (path)
        {
            case SimdPath.Vector512: isum = Scaled512(w, x); msum = Coef256(w, x); break;
            case SimdPath.Vector256: isum = Scaled256(w, x); msum = Coef256(w, x); break;
            case SimdPath.Vector128: isum = Scaled128(w, x); msum = Coef128(w, x); break;
            default: isum = ScaledScalar(w, x); msum = CoefScalar(w, x); break;
        }
        // The integer sums are exact on every path, so all paths give the same float bit for bit.
        return x->D * (w->D * isum - w->DMin * msum);
    }

    /// <summary>
    /// Prefill micro-kernel: one unpacked weight row (<paramref name="nsb"/> super-blocks) against four activation
    /// rows at once (row a starts at x + a·<paramref name="xStride"/>), so each weight vector and scale permutation
    /// is loaded once per four dot products and the per-super-block scaling is a vector FMA, not a horizontal sum.
    /// Float accumulation order differs from <see cref="Dot"/> (per lane), so results agree to f32 rounding.
    /// </summary>
    public static void Dot4x512(KUnpacked* w, int nsb, BlockQ8_K* x, int xStride, float* result)
    {
        var f0 = Vector512<float>.Zero;
        var f1 = Vector512<float>.Zero;
        var f2 = Vector512<float>.Zero;
        var f3 = Vector512<float>.Zero;
        // The min/offset terms accumulate as vectors too: a horizontal sum per super-block and row cost as much
        // as the multiplies themselves.
        var m0 = Vector256<float>.Zero;
        var m1 = Vector256<float>.Zero;
        var m2 = Vector256<float>.Zero;
        var m3 = Vector256<float>.Zero;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            var scales = Vector256.Load(w->Scales).ToVector512Unsafe();
            var s0 = Avx512BW.PermuteVar32x16(scales, GroupIndex0);
            var s1 = Avx512BW.PermuteVar32x16(scales, GroupIndex1);
            var s2 = Avx512BW.PermuteVar32x16(scales, GroupIndex2);
            var s3 = Avx512BW.PermuteVar32x16(scales, GroupIndex3);
            var q0 = Vector512.Load(w->Q);
            var q1 = Vector512.Load(w->Q + 64);
            var q2 = Vector512.Load(w->Q + 128);
            var q3 = Vector512.Load(w->Q + 192);
            var coef = Vector256.Load(w->MinCoef);
            float d = w->D, dmin = w->DMin;
            Row(x, ref f0, ref m0);
            Row(x + xStride, ref f1, ref m1);
            Row(x + 2 * xStride, ref f2, ref m2);
            Row(x + 3 * xStride, ref f3, ref m3);

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            void Row(BlockQ8_K* xa, ref Vector512<float> f, ref Vector256<float> m)
            {
                var acc = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q0, Vector512.Load(xa->Qs)), s0)
                        + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q1, Vector512.Load(xa->Qs + 64)), s1)
                        + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q2, Vector512.Load(xa->Qs + 128)), s2)
                        + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q3, Vector512.Load(xa->Qs + 192)), s3);
                f = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(acc), Vector512.Create(xa->D * d), f);
                m = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(coef, Vector256.Load(xa->Bsums))), Vector256.Create(xa->D * dmin), m);
            }
        }
        result[0] = Vector512.Sum(f0) - Vector256.Sum(m0);
        result[1] = Vector512.Sum(f1) - Vector256.Sum(m1);
        result[2] = Vector512.Sum(f2) - Vector256.Sum(m2);
        result[3] = Vector512.Sum(f3) - Vector256.Sum(m3);
    }

    public static int ScaledScalar(KUnpacked* w, BlockQ8_K* x)
    {
        int s = 0;
        for (int e = 0; e < 256; e++) s += w->Q[e] * x->Qs[e] * w->Scales[e >> 4];
        return s;
    }

    public static int CoefScalar(KUnpacked* w, BlockQ8_K* x)
    {
        int s = 0;
        for (int g = 0; g < 16; g++) s += w->MinCoef[g] * x->Bsums[g];
        return s;
    }

    // vpermw indices: int16 lane i of a 64-element step k holds the pair (2i, 2i+1), i.e. group 4k + i/8.
    internal static readonly Vector512<short> GroupIndex0 = Vector512.Create(
        (short)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    internal static readonly Vector512<short> GroupIndex1 = GroupIndex0 + Vector512.Create((short)4);
    internal static readonly Vector512<short> GroupIndex2 = GroupIndex0 + Vector512.Create((short)8);
    internal static readonly Vector512<short> GroupIndex3 = GroupIndex0 + Vector512.Create((short)12);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Step512(KUnpacked* w, BlockQ8_K* x, int k, Vector512<short> scales, Vector512<short> index)
    {
        var p = Avx512BW.MultiplyAddAdjacent(Vector512.Load(w->Q + 64 * k), Vector512.Load(x->Qs + 64 * k));
        return Avx512BW.MultiplyAddAdjacent(p, Avx512BW.PermuteVar32x16(scales, index));
    }

    private static int Scaled512(KUnpacked* w, BlockQ8_K* x)
    {
        var scales = Vector256.Load(w->Scales).ToVector512Unsafe();
        var acc = Step512(w, x, 0, scales, GroupIndex0) + Step512(w, x, 1, scales, GroupIndex1)
                + Step512(w, x, 2, scales, GroupIndex2) + Step512(w, x, 3, scales, GroupIndex3);
        return Vector512.Sum(acc);
    }

    private static int Scaled256(KUnpacked* w, BlockQ8_K* x)
    {
        var acc = Vector256<int>.Zero;
        for (int k = 0; k < 8; k++)
        {
            var p = Avx2.MultiplyAddAdjacent(Vector256.Load(w->Q + 32 * k), Vector256.Load(x->Qs + 32 * k));
            var s = Vector256.Create(Vector128.Create(w->Scales[2 * k]), Vector128.Create(w->Scales[2 * k + 1]));
            acc = Vnni.DotPairs(acc, p, s);
        }
        return Vector256.Sum(acc);
    }

    private static int Scaled128(KUnpacked* w, BlockQ8_K* x)
    {
        if (Ssse3.IsSupported)
        {
            var acc = Vector128<int>.Zero;
            for (int k = 0; k < 16; k++)
            {
                var p = Ssse3.MultiplyAddAdjacent(Vector128.Load(w->Q + 16 * k), Vector128.Load(x->Qs + 16 * k));
                acc += Sse2.MultiplyAddAdjacent(p, Vector128.Create(w->Scales[k]));
            }
            return Vector128.Sum(acc);
        }
        // Arm NEON: one 16-element group per step (sdot, or widening multiplies without the dot extension);
        // Q ≤ 63 so reading it as int8 is exact.
        int sum = 0;
        for (int g = 0; g < 16; g++)
        {
            var q = Vector128.Load(w->Q + 16 * g).AsSByte();
            var xv = Vector128.Load(x->Qs + 16 * g);
            Vector128<int> d;
            if (Dp.IsSupported) d = Dp.DotProduct(Vector128<int>.Zero, q, xv);
            else
                d = AdvSimd.AddPairwiseWidening(AdvSimd.MultiplyWideningLower(q.GetLower(), xv.GetLower()))
                    + AdvSimd.AddPairwiseWidening(AdvSimd.MultiplyWideningUpper(q, xv));
            sum += Vector128.Sum(d) * w->Scales[g];
        }
        return sum;
    }

    private static int Coef256(KUnpacked* w, BlockQ8_K* x) =>
        Vector256.Sum(Avx2.MultiplyAddAdjacent(Vector256.Load(w->MinCoef), Vector256.Load(x->Bsums)));

    private static int Coef128(KUnpacked* w, BlockQ8_K* x)
    {
        if (Sse2.IsSupported)
            return Vector128.Sum(Sse2.MultiplyAddAdjacent(Vector128.Load(w->MinCoef), Vector128.Load(x->Bsums))
                + Sse2.MultiplyAddAdjacent(Vector128.Load(w->MinCoef + 8), Vector128.Load(x->Bsums + 8)));
        return CoefScalar(w, x);
    }

    /// <summary>Bytes 0..7 (or 8..15) of <paramref name="v"/>, each twice: b0 b0 b1 b1 … (punpcklbw / zip1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<byte> Duplicate8(Vector128<byte> v, bool high)
    {
        if (Sse2.IsSupported) return high ? Sse2.UnpackHigh(v, v) : Sse2.UnpackLow(v, v);
        if (AdvSimd.Arm64.IsSupported) return high ? AdvSimd.Arm64.ZipHigh(v, v) : AdvSimd.Arm64.ZipLow(v, v);
        Vector128<byte> r = default;
        for (int i = 0; i < 16; i++) r = r.WithElement(i, v.GetElement((high ? 8 : 0) + i / 2));
        return r;
    }

    /// <summary>Writes 8 per-32-group scales and 8 mins (bytes 0..7 and 8..15 of <paramref name="v"/>) as 16 per-16-group shorts each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetScales32(KUnpacked* u, Vector128<byte> v)
    {
        var (s0, s1) = Vector128.Widen(Duplicate8(v, false));
        s0.AsInt16().Store(u->Scales);
        s1.AsInt16().Store(u->Scales + 8);
        var (m0, m1) = Vector128.Widen(Duplicate8(v, true));
        m0.AsInt16().Store(u->MinCoef);
        m1.AsInt16().Store(u->MinCoef + 8);
    }

    /// <summary>Writes 16 signed per-16-group scales as both Scales and MinCoef.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetScales16(KUnpacked* u, Vector128<sbyte> v)
    {
        var (s0, s1) = Vector128.Widen(v);
        s0.Store(u->Scales); s1.Store(u->Scales + 8);
        s0.Store(u->MinCoef); s1.Store(u->MinCoef + 8);
    }

    /// <summary>Splits each byte of 32 packed bytes into low and high nibbles (lo → dst[0..32), hi → dst[32..64)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Nibbles32(byte* src, byte* dst)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            var v = Vector256.Load(src);
            var m = Vector256.Create((byte)0xF);
            (v & m).Store(dst);
            (Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m).Store(dst + 32);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            var m = Vector128.Create((byte)0xF);
            var a = Vector128.Load(src);
            var b = Vector128.Load(src + 16);
            (a & m).Store(dst);
            (b & m).Store(dst + 16);
            (Vector128.ShiftRightLogical(a.AsUInt16(), 4).AsByte() & m).Store(dst + 32);
            (Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & m).Store(dst + 48);
        }
        else
            for (int l = 0; l < 32; l++)
            {
                dst[l] = (byte)(src[l] & 0xF);
                dst[l + 32] = (byte)(src[l] >> 4);
            }
    }
}

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
    public const int Bytes = 256 + 256 + 32 + 8;
    public fixed byte Q[256];
    /// <summary>Scale of element pair (2i, 2i+1): the layout vpmaddwd wants after vpmaddubsw.</summary>
    public fixed short PairScale[128];
    /// <summary>Multiplier of the activation sum of each 16-element group (from Q8_K bsums).</summary>
    public fixed short MinCoef[16];
    public float D, DMin;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetGroupScale16(int g, int scale)
    {
        fixed (short* p = PairScale) Vector128.Create((short)scale).Store(p + 8 * g);
    }
}

/// <summary>Integer dot of an unpacked k-quant super-block with a Q8_K activation block, per vector width.</summary>
public static unsafe class KQuantDot
{
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

    public static int ScaledScalar(KUnpacked* w, BlockQ8_K* x)
    {
        int s = 0;
        for (int e = 0; e < 256; e++) s += w->Q[e] * x->Qs[e] * w->PairScale[e >> 1];
        return s;
    }

    public static int CoefScalar(KUnpacked* w, BlockQ8_K* x)
    {
        int s = 0;
        for (int g = 0; g < 16; g++) s += w->MinCoef[g] * x->Bsums[g];
        return s;
    }

    private static int Scaled512(KUnpacked* w, BlockQ8_K* x)
    {
        var acc = Vector512<int>.Zero;
        for (int k = 0; k < 4; k++)
        {
            var p = Avx512BW.MultiplyAddAdjacent(Vector512.Load(w->Q + 64 * k), Vector512.Load(x->Qs + 64 * k));
            acc += Avx512BW.MultiplyAddAdjacent(p, Vector512.Load(w->PairScale + 32 * k));
        }
        return Vector512.Sum(acc);
    }

    private static int Scaled256(KUnpacked* w, BlockQ8_K* x)
    {
        var acc = Vector256<int>.Zero;
        for (int k = 0; k < 8; k++)
        {
            var p = Avx2.MultiplyAddAdjacent(Vector256.Load(w->Q + 32 * k), Vector256.Load(x->Qs + 32 * k));
            var s = Vector256.Load(w->PairScale + 16 * k);
            acc = AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(acc, p, s) : acc + Avx2.MultiplyAddAdjacent(p, s);
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
                acc += Sse2.MultiplyAddAdjacent(p, Vector128.Load(w->PairScale + 8 * k));
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
            sum += Vector128.Sum(d) * w->PairScale[8 * g];
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

    /// <summary>Splits each byte of 32 packed bytes into low and high nibbles (lo → dst[0..32), hi → dst[32..64)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Nibbles32(byte* src, byte* dst)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            var v = Vector256.Load(src);
            var m = Vector256.Create((byte)0xF);
            (v & m).Store(dst);
            (Vector256.ShiftRightLogical(v, 4) & m).Store(dst + 32);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            var m = Vector128.Create((byte)0xF);
            var a = Vector128.Load(src);
            var b = Vector128.Load(src + 16);
            (a & m).Store(dst);
            (b & m).Store(dst + 16);
            (Vector128.ShiftRightLogical(a, 4) & m).Store(dst + 32);
            (Vector128.ShiftRightLogical(b, 4) & m).Store(dst + 48);
        }
        else
            for (int l = 0; l < 32; l++)
            {
                dst[l] = (byte)(src[l] & 0xF);
                dst[l + 32] = (byte)(src[l] >> 4);
            }
    }
}

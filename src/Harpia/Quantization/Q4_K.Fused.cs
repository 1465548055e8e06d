using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Fused AVX-512 Q4_K × Q8_K row dot for decode: splits nibbles in registers and applies the 6-bit scales with
/// vpermw, so nothing goes through memory between the weight bytes and the integer dot (the shared
/// <see cref="KUnpacked"/> path stores and reloads every super-block). Same integer sums as every other path.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q4_KFused
{
    // 64 Qs bytes = chunks 2h and 2h+1. Low nibbles hold 32-groups 4h (bytes 0..31) and 4h+2 (32..63); high
    // nibbles 4h+1 and 4h+3. These index the 8 per-group scales, one int16 per lane pair.
    internal static readonly Vector512<short> LoIndex0 = Halves(0, 2), HiIndex0 = Halves(1, 3);
    internal static readonly Vector512<short> LoIndex1 = Halves(4, 6), HiIndex1 = Halves(5, 7);

    private static Vector512<short> Halves(int a, int b) =>
        Vector512.Create(Vector256.Create((short)a), Vector256.Create((short)b));

    public static bool IsSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    public static float DotRow(BlockQ4_K* w, BlockQ8_K* x, int nsb)
    {
        var m4 = Vector512.Create((byte)0xF);
        // Sums stay in vectors across super-blocks: a horizontal sum (and two scalar fp16 conversions feeding a
        // serial chain) per super-block cost about as much as the integer dot itself.
        var fsum = Vector512<float>.Zero;
        var fmin = Vector256<float>.Zero;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            QuantCommon.PrefetchAhead(w, 3);   // 144 bytes span up to 3 lines
            var sm = Q4_K.ScalesAndMins(w->Scales);
            var scales = Vector128.WidenLower(sm).AsInt16().ToVector256Unsafe().ToVector512Unsafe();
            var acc = Vector512<int>.Zero;
            for (int h = 0; h < 2; h++)
            {
                var q = Vector512.Load(w->Qs + 64 * h);
                var lo = q & m4;
                var hi = Vector512.ShiftRightLogical(q, 4) & m4;
                sbyte* xq = x->Qs + 128 * h;
                var xlo = KQuantDot.Combine(Vector256.Load(xq), Vector256.Load(xq + 64));
                var xhi = KQuantDot.Combine(Vector256.Load(xq + 32), Vector256.Load(xq + 96));
                var plo = Avx512BW.MultiplyAddAdjacent(lo, xlo);
                var phi = Avx512BW.MultiplyAddAdjacent(hi, xhi);
                acc += Avx512BW.MultiplyAddAdjacent(plo, Avx512BW.PermuteVar32x16(scales, h == 0 ? LoIndex0 : LoIndex1));
                acc += Avx512BW.MultiplyAddAdjacent(phi, Avx512BW.PermuteVar32x16(scales, h == 0 ? HiIndex0 : HiIndex1));
            }
            // Mins: Σ_g m_g · (bsum[2g] + bsum[2g+1]), with each min duplicated onto its two 16-groups.
            var minsDup = Sse2.UnpackHigh(sm, sm);
            var mins = Avx2.ConvertToVector256Int16(minsDup);   // vpmovzxbw
            var msum = Avx2.MultiplyAddAdjacent(mins, Vector256.Load(x->Bsums));
            fsum = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(acc), Vector512.Create(x->D * QuantCommon.H2F(w->D)), fsum);
            fmin = Fma.MultiplyAdd(Avx.ConvertToVector256Single(msum), Vector256.Create(x->D * QuantCommon.H2F(w->DMin)), fmin);
        }
        return Vector512.Sum(fsum) - Vector256.Sum(fmin);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Fused AVX-512 Q6_K × Q8_K row dot for decode. One 64-byte load of Ql covers a whole 128-element half: its low
/// nibbles are elements 0..63 and its high nibbles 64..127, in order, so the activations load contiguously; the
/// two high bits come from Qh shifted per 32-lane half. Same integer sums as every other path.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q6_KFused
{
    private static readonly Vector512<ushort> ShiftLo = Vector512.Create(Vector256.Create((ushort)4), Vector256.Create((ushort)2));
    private static readonly Vector512<ushort> ShiftHi = Vector512.Create(Vector256.Create((ushort)0), Vector256.Create((ushort)2));

    public static bool IsSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    public static float DotRow(BlockQ6_K* w, BlockQ8_K* x, int nsb)
    {
        var m4 = Vector512.Create((byte)0xF);
        var m2 = Vector512.Create((byte)0x30);
        var fsum = Vector512<float>.Zero;   // per-lane sums across super-blocks (see Q4_KFused)
        var fmin = Vector256<float>.Zero;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            QuantCommon.PrefetchAhead(w, 4);   // 210 bytes span up to 4 lines
            var sc8 = Vector128.Load(w->Scales);
            var sc16 = Avx2.ConvertToVector256Int16(sc8);   // vpmovsxbw
            var scales = sc16.ToVector512Unsafe();
            var acc = Vector512<int>.Zero;
            for (int h = 0; h < 2; h++)
            {
                var ql = Vector512.Load(w->Ql + 64 * h);
                var qh256 = Vector256.Load(w->Qh + 32 * h);
                var qh = KQuantDot.Combine(qh256, qh256).AsUInt16();
                // Bits 0-1 of Qh[l] belong to element l, 2-3 to l+32, 4-5 to l+64, 6-7 to l+96; move each pair to
                // bits 4-5 with one per-half variable shift (vpsllvw / vpsrlvw), then mask.
                var hLo = Avx512BW.ShiftLeftLogicalVariable(qh, ShiftLo).AsByte() & m2;
                var hHi = Avx512BW.ShiftRightLogicalVariable(qh, ShiftHi).AsByte() & m2;
                var qLo = (ql & m4) | hLo;
                var qHi = (Vector512.ShiftRightLogical(ql.AsUInt16(), 4).AsByte() & m4) | hHi;
                sbyte* xq = x->Qs + 128 * h;
                var pLo = Avx512BW.MultiplyAddAdjacent(qLo, Vector512.Load(xq));
                var pHi = Avx512BW.MultiplyAddAdjacent(qHi, Vector512.Load(xq + 64));
                acc += Avx512BW.MultiplyAddAdjacent(pLo, Avx512BW.PermuteVar32x16(scales, h == 0 ? KQuantDot.GroupIndex0 : KQuantDot.GroupIndex2));
                acc += Avx512BW.MultiplyAddAdjacent(pHi, Avx512BW.PermuteVar32x16(scales, h == 0 ? KQuantDot.GroupIndex1 : KQuantDot.GroupIndex3));
            }
            // The −32 offset: 32 · Σ_g sc_g · bsum_g.
            var msum = Avx2.MultiplyAddAdjacent(sc16, Vector256.Load(x->Bsums));
            float dx = x->D * QuantCommon.H2F(w->D);
            fsum = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(acc), Vector512.Create(dx), fsum);
            fmin = Fma.MultiplyAdd(Avx.ConvertToVector256Single(msum), Vector256.Create(32 * dx), fmin);
        }
        return Vector512.Sum(fsum) - Vector256.Sum(fmin);
    }
}

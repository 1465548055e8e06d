using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Fused AVX-512 Q5_K × Q8_K row dot for decode: the Q4_K kernel's register layout (see <see cref="Q4_KFused"/>)
/// plus the fifth bit, tested straight out of Qh with a mask compare. Same integer sums as every other path.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q5_KFused
{
    public static bool IsSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    private static Vector512<ushort> Shifts(int a, int b) =>
        Vector512.Create(Vector256.Create((ushort)a), Vector256.Create((ushort)b));

    // Low nibbles of the 64 Qs bytes of half h are 32-groups 4h and 4h+2 (Qh bits 4h, 4h+2); high nibbles 4h+1, 4h+3.
    // The bit is brought to bit 0 of each byte with a per-half 16-bit variable shift (vpsrlvw), masked, then moved to bit 4.
    private static readonly Vector512<ushort> LoShift0 = Shifts(0, 2), HiShift0 = Shifts(1, 3), LoShift1 = Shifts(4, 6), HiShift1 = Shifts(5, 7);

    public static float DotRow(BlockQ5_K* w, BlockQ8_K* x, int nsb)
    {
        var m4 = Vector512.Create((byte)0xF);
        var one = Vector512.Create((byte)1);
        var fsum = Vector512<float>.Zero;   // per-lane sums across super-blocks (see Q4_KFused)
        var fmin = Vector256<float>.Zero;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            QuantCommon.PrefetchAhead(w, 4);   // 176 bytes span up to 4 lines
            var sm = Q4_K.ScalesAndMins(w->Scales);
            var scales = Vector128.WidenLower(sm).AsInt16().ToVector256Unsafe().ToVector512Unsafe();
            var qh = Vector256.Load(w->Qh);
            var qh2 = KQuantDot.Combine(qh, qh);
            var acc = Vector512<int>.Zero;
            for (int h = 0; h < 2; h++)
            {
                var q = Vector512.Load(w->Qs + 64 * h);
                var hLo = Avx512BW.ShiftRightLogicalVariable(qh2.AsUInt16(), h == 0 ? LoShift0 : LoShift1).AsByte() & one;
                var hHi = Avx512BW.ShiftRightLogicalVariable(qh2.AsUInt16(), h == 0 ? HiShift0 : HiShift1).AsByte() & one;
                var lo = (q & m4) | Vector512.ShiftLeft(hLo.AsUInt16(), 4).AsByte();
                var hi = (Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4) | Vector512.ShiftLeft(hHi.AsUInt16(), 4).AsByte();
                sbyte* xq = x->Qs + 128 * h;
                var xlo = KQuantDot.Combine(Vector256.Load(xq), Vector256.Load(xq + 64));
                var xhi = KQuantDot.Combine(Vector256.Load(xq + 32), Vector256.Load(xq + 96));
                var plo = Avx512BW.MultiplyAddAdjacent(lo, xlo);
                var phi = Avx512BW.MultiplyAddAdjacent(hi, xhi);
                acc += Avx512BW.MultiplyAddAdjacent(plo, Avx512BW.PermuteVar32x16(scales, h == 0 ? Q4_KFused.LoIndex0 : Q4_KFused.LoIndex1));
                acc += Avx512BW.MultiplyAddAdjacent(phi, Avx512BW.PermuteVar32x16(scales, h == 0 ? Q4_KFused.HiIndex0 : Q4_KFused.HiIndex1));
            }
            var minsDup = Sse2.UnpackHigh(sm, sm);
            var mins = Avx2.ConvertToVector256Int16(minsDup);   // vpmovzxbw
            var msum = Avx2.MultiplyAddAdjacent(mins, Vector256.Load(x->Bsums));
            fsum = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(acc), Vector512.Create(x->D * QuantCommon.H2F(w->D)), fsum);
            fmin = Fma.MultiplyAdd(Avx.ConvertToVector256Single(msum), Vector256.Create(x->D * QuantCommon.H2F(w->DMin)), fmin);
        }
        return Vector512.Sum(fsum) - Vector256.Sum(fmin);
    }
}

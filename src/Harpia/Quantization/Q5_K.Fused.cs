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

    private static Vector512<byte> Bits(int a, int b) =>
        Vector512.Create(Vector256.Create((byte)(1 << a)), Vector256.Create((byte)(1 << b)));

    // Low nibbles of the 64 Qs bytes of half h are 32-groups 4h and 4h+2 (Qh bits 4h, 4h+2); high nibbles 4h+1, 4h+3.
    private static readonly Vector512<byte> LoBits0 = Bits(0, 2), HiBits0 = Bits(1, 3), LoBits1 = Bits(4, 6), HiBits1 = Bits(5, 7);

    public static float DotRow(BlockQ5_K* w, BlockQ8_K* x, int nsb)
    {
        var m4 = Vector512.Create((byte)0xF);
        var bit4 = Vector512.Create((byte)0x10);
        float sum = 0;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            var sm = Q4_K.ScalesAndMins(w->Scales);
            var scales = Vector128.WidenLower(sm).AsInt16().ToVector256Unsafe().ToVector512Unsafe();
            var qh = Vector256.Load(w->Qh);
            var qh2 = Vector512.Create(qh, qh);
            var acc = Vector512<int>.Zero;
            for (int h = 0; h < 2; h++)
            {
                var q = Vector512.Load(w->Qs + 64 * h);
                var loBits = h == 0 ? LoBits0 : LoBits1;
                var hiBits = h == 0 ? HiBits0 : HiBits1;
                var lo = (q & m4) | (Vector512.Equals(qh2 & loBits, loBits) & bit4);
                var hi = (Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4) | (Vector512.Equals(qh2 & hiBits, hiBits) & bit4);
                sbyte* xq = x->Qs + 128 * h;
                var xlo = Vector512.Create(Vector256.Load(xq), Vector256.Load(xq + 64));
                var xhi = Vector512.Create(Vector256.Load(xq + 32), Vector256.Load(xq + 96));
                var plo = Avx512BW.MultiplyAddAdjacent(lo, xlo);
                var phi = Avx512BW.MultiplyAddAdjacent(hi, xhi);
                acc += Avx512BW.MultiplyAddAdjacent(plo, Avx512BW.PermuteVar32x16(scales, h == 0 ? Q4_KFused.LoIndex0 : Q4_KFused.LoIndex1));
                acc += Avx512BW.MultiplyAddAdjacent(phi, Avx512BW.PermuteVar32x16(scales, h == 0 ? Q4_KFused.HiIndex0 : Q4_KFused.HiIndex1));
            }
            var minsDup = Sse2.UnpackHigh(sm, sm);
            var mins = Vector256.Create(Vector128.WidenLower(minsDup).AsInt16(), Vector128.WidenUpper(minsDup).AsInt16());
            int msum = Vector256.Sum(Avx2.MultiplyAddAdjacent(mins, Vector256.Load(x->Bsums)));
            int isum = Vector512.Sum(acc);
            sum += x->D * (QuantCommon.H2F(w->D) * isum - QuantCommon.H2F(w->DMin) * msum);
        }
        return sum;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Fused AVX-512 Q2_K × Q8_K row dot for decode. The 32 Qs bytes of half n hold elements 128n + 32j + l at bits
/// 2j..2j+1 of byte l, so one 32-byte load duplicated into both 256-bit halves and shifted per half (vpsrlvw by
/// 0|2, then 4|6) yields 64 consecutive elements: activations load contiguously. Same integer sums as every path.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q2_KFused
{
    public static bool IsSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    internal static readonly Vector512<ushort> Shift01 = Halves(0, 2), Shift23 = Halves(4, 6);

    internal static Vector512<ushort> Halves(int a, int b) =>
        Vector512.Create(Vector256.Create((ushort)a), Vector256.Create((ushort)b));

    public static float DotRow(BlockQ2_K* w, BlockQ8_K* x, int nsb)
    {
        var three = Vector512.Create((byte)3);
        var m4 = Vector128.Create((byte)0xF);
        float sum = 0;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            var sm = Vector128.Load(w->Scales);
            var scales = Avx2.ConvertToVector256Int16(sm & m4).ToVector512Unsafe();
            var mins = Avx2.ConvertToVector256Int16(Vector128.ShiftRightLogical(sm.AsUInt16(), 4).AsByte() & m4);
            var acc = Vector512<int>.Zero;
            for (int n = 0; n < 2; n++)
            {
                var q32 = Vector256.Load(w->Qs + 32 * n);
                var qq = KQuantDot.Combine(q32, q32).AsUInt16();
                var v0 = Avx512BW.ShiftRightLogicalVariable(qq, Shift01).AsByte() & three;
                var v1 = Avx512BW.ShiftRightLogicalVariable(qq, Shift23).AsByte() & three;
                sbyte* xq = x->Qs + 128 * n;
                var p0 = Avx512BW.MultiplyAddAdjacent(v0, Vector512.Load(xq));
                var p1 = Avx512BW.MultiplyAddAdjacent(v1, Vector512.Load(xq + 64));
                acc += Avx512BW.MultiplyAddAdjacent(p0, Avx512BW.PermuteVar32x16(scales, n == 0 ? KQuantDot.GroupIndex0 : KQuantDot.GroupIndex2));
                acc += Avx512BW.MultiplyAddAdjacent(p1, Avx512BW.PermuteVar32x16(scales, n == 0 ? KQuantDot.GroupIndex1 : KQuantDot.GroupIndex3));
            }
            int msum = Vector256.Sum(Avx2.MultiplyAddAdjacent(mins, Vector256.Load(x->Bsums)));
            int isum = Vector512.Sum(acc);
            sum += x->D * (QuantCommon.H2F(w->D) * isum - QuantCommon.H2F(w->DMin) * msum);
        }
        return sum;
    }
}

/// <summary>
/// Fused AVX-512 Q3_K × Q8_K row dot: the Q2_K layout for the low two bits plus the third bit from HMask (bit
/// e / 32 of HMask[e % 32]), brought into place with the same per-half variable shifts.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q3_KFused
{
    public static bool IsSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    private static readonly Vector512<ushort> HShift0 = Q2_KFused.Halves(0, 1), HShift1 = Q2_KFused.Halves(2, 3);
    private static readonly Vector512<ushort> HShift2 = Q2_KFused.Halves(4, 5), HShift3 = Q2_KFused.Halves(6, 7);

    public static float DotRow(BlockQ3_K* w, BlockQ8_K* x, int nsb)
    {
        var three = Vector512.Create((byte)3);
        var one = Vector512.Create((byte)1);
        float sum = 0;
        for (int sb = 0; sb < nsb; sb++, w++, x++)
        {
            uint a0 = Unsafe.ReadUnaligned<uint>(w->Scales), a1 = Unsafe.ReadUnaligned<uint>(w->Scales + 4);
            uint t = Unsafe.ReadUnaligned<uint>(w->Scales + 8);
            uint g0 = (a0 & 0x0f0f0f0f) | ((t & 0x03030303) << 4);
            uint g1 = (a1 & 0x0f0f0f0f) | (((t >> 2) & 0x03030303) << 4);
            uint g2 = ((a0 >> 4) & 0x0f0f0f0f) | (((t >> 4) & 0x03030303) << 4);
            uint g3 = ((a1 >> 4) & 0x0f0f0f0f) | (((t >> 6) & 0x03030303) << 4);
            var sc16 = Avx2.ConvertToVector256Int16(Vector128.Create(g0, g1, g2, g3).AsSByte() - Vector128.Create((sbyte)32));
            var scales = sc16.ToVector512Unsafe();
            var hm32 = Vector256.Load(w->HMask);
            var hm = KQuantDot.Combine(hm32, hm32).AsUInt16();
            var acc = Vector512<int>.Zero;
            for (int n = 0; n < 2; n++)
            {
                var q32 = Vector256.Load(w->Qs + 32 * n);
                var qq = KQuantDot.Combine(q32, q32).AsUInt16();
                var h0 = Avx512BW.ShiftRightLogicalVariable(hm, n == 0 ? HShift0 : HShift2).AsByte() & one;
                var h1 = Avx512BW.ShiftRightLogicalVariable(hm, n == 0 ? HShift1 : HShift3).AsByte() & one;
                var v0 = (Avx512BW.ShiftRightLogicalVariable(qq, Q2_KFused.Shift01).AsByte() & three) | Vector512.ShiftLeft(h0.AsUInt16(), 2).AsByte();
                var v1 = (Avx512BW.ShiftRightLogicalVariable(qq, Q2_KFused.Shift23).AsByte() & three) | Vector512.ShiftLeft(h1.AsUInt16(), 2).AsByte();
                sbyte* xq = x->Qs + 128 * n;
                var p0 = Avx512BW.MultiplyAddAdjacent(v0, Vector512.Load(xq));
                var p1 = Avx512BW.MultiplyAddAdjacent(v1, Vector512.Load(xq + 64));
                acc += Avx512BW.MultiplyAddAdjacent(p0, Avx512BW.PermuteVar32x16(scales, n == 0 ? KQuantDot.GroupIndex0 : KQuantDot.GroupIndex2));
                acc += Avx512BW.MultiplyAddAdjacent(p1, Avx512BW.PermuteVar32x16(scales, n == 0 ? KQuantDot.GroupIndex1 : KQuantDot.GroupIndex3));
            }
            // The −4 offset: 4 · Σ_g sc_g · bsum_g.
            int msum = Vector256.Sum(Avx2.MultiplyAddAdjacent(sc16, Vector256.Load(x->Bsums)));
            int isum = Vector512.Sum(acc);
            float d = QuantCommon.H2F(w->D);
            sum += x->D * (d * isum - 4 * d * msum);   // same float expression as the shared path: bit-identical
        }
        return sum;
    }
}

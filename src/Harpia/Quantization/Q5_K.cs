using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// GGUF Q5_K: as Q4_K (same 12-byte 6-bit scales/mins, same nibble layout) plus a fifth bit per weight: bit
/// 2c (elements 64c + l) and 2c + 1 (elements 64c + 32 + l) of Qh[l].
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ5_K
{
    public const int Size = 256, Bytes = 176;
    public ushort D;
    public ushort DMin;
    public fixed byte Scales[12];
    public fixed byte Qh[32];
    public fixed byte Qs[128];
}

[SkipLocalsInit]
public static unsafe class Q5_K
{
    static Q5_K() => AssertSize<BlockQ5_K>(BlockQ5_K.Bytes);

    /// <summary>Reference quantizer (ggml quantize_row_q5_K_ref: make_qkx2_quants with nmax 31, rmin −0.5, 15 steps).</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 256, BlockQ5_K.Bytes, dst.Length, "Q5_K quantize");
        byte* levels = stackalloc byte[256];
        fixed (float* x = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ5_K*)p;
            for (int b = 0; b < nb; b++)
            {
                Q4_K.QuantizeSuper(x + 256 * b, 31, -0.5f, 15, out y[b].D, out y[b].DMin, y[b].Scales, levels);
                for (int l = 0; l < 32; l++) y[b].Qh[l] = 0;
                for (int c = 0; c < 4; c++)
                    for (int l = 0; l < 32; l++)
                    {
                        int l1 = levels[64 * c + l], l2 = levels[64 * c + 32 + l];
                        if (l1 > 15) { l1 -= 16; y[b].Qh[l] |= (byte)(1 << (2 * c)); }
                        if (l2 > 15) { l2 -= 16; y[b].Qh[l] |= (byte)(2 << (2 * c)); }
                        y[b].Qs[32 * c + l] = (byte)(l1 | (l2 << 4));
                    }
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 256, BlockQ5_K.Bytes, src.Length, "Q5_K dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ5_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D), dmin = H2F(x[b].DMin);
                float* yb = y + 256 * b;
                for (int c = 0; c < 4; c++)
                {
                    Q4_K.ScaleMin(2 * c, x[b].Scales, out int s1, out int m1);
                    Q4_K.ScaleMin(2 * c + 1, x[b].Scales, out int s2, out int m2);
                    for (int l = 0; l < 32; l++)
                    {
                        int h = x[b].Qh[l];
                        yb[64 * c + l] = d * s1 * ((x[b].Qs[32 * c + l] & 0xF) + (((h >> (2 * c)) & 1) << 4)) - dmin * m1;
                        yb[64 * c + 32 + l] = d * s2 * ((x[b].Qs[32 * c + l] >> 4) + (((h >> (2 * c + 1)) & 1) << 4)) - dmin * m2;
                    }
                }
            }
        }
    }

    public static void Unpack(BlockQ5_K* x, KUnpacked* u)
    {
        u->D = H2F(x->D);
        u->DMin = H2F(x->DMin);
        KQuantDot.SetScales32(u, Q4_K.ScalesAndMins(x->Scales));
        var m4 = Vector128.Create((byte)0xF);
        var bit4 = Vector128.Create((byte)0x10);
        var h0 = Vector128.Load(x->Qh);
        var h1 = Vector128.Load(x->Qh + 16);
        for (int c = 0; c < 4; c++)
        {
            var q0 = Vector128.Load(x->Qs + 32 * c);
            var q1 = Vector128.Load(x->Qs + 32 * c + 16);
            byte* d = u->Q + 64 * c;
            // Fifth bit of element 64c + l is bit 2c of Qh[l]; of 64c + 32 + l, bit 2c + 1. Tested with a mask
            // compare: x86 has no byte shift, and a variable-count byte shift is not vectorized by the JIT.
            var mLo = Vector128.Create((byte)(1 << (2 * c)));
            var mHi = Vector128.Create((byte)(2 << (2 * c)));
            ((q0 & m4) | (Vector128.Equals(h0 & mLo, mLo) & bit4)).Store(d);
            ((q1 & m4) | (Vector128.Equals(h1 & mLo, mLo) & bit4)).Store(d + 16);
            ((Vector128.ShiftRightLogical(q0.AsUInt16(), 4).AsByte() & m4) | (Vector128.Equals(h0 & mHi, mHi) & bit4)).Store(d + 32);
            ((Vector128.ShiftRightLogical(q1.AsUInt16(), 4).AsByte() & m4) | (Vector128.Equals(h1 & mHi, mHi) & bit4)).Store(d + 48);
        }
    }
}

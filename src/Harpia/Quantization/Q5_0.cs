using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>GGUF Q5_0: 32 weights as 5-bit q with one fp16 scale; value = d · (q − 16). Low nibbles as in Q4_0;
/// bit j of the little-endian uint32 <see cref="Qh"/> is the fifth bit of element j.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ5_0
{
    public const int Size = 32, Bytes = 22;
    public ushort D;
    public fixed byte Qh[4];
    public fixed byte Qs[16];
}

[SkipLocalsInit]
public static unsafe class Q5_0
{
    static Q5_0() => AssertSize<BlockQ5_0>(BlockQ5_0.Bytes);

    /// <summary>Reference quantizer (ggml quantize_row_q5_0_ref): d = max / −16.</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 32, BlockQ5_0.Bytes, dst.Length, "Q5_0 quantize");
        fixed (float* x = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ5_0*)p;
            for (int b = 0; b < nb; b++)
            {
                float* xb = x + b * 32;
                float amax = 0, max = 0;
                for (int j = 0; j < 32; j++)
                    if (amax < MathF.Abs(xb[j])) { amax = MathF.Abs(xb[j]); max = xb[j]; }
                float d = max / -16;
                float id = d != 0 ? 1 / d : 0;
                y[b].D = F2H(d);
                uint qh = 0;
                for (int j = 0; j < 16; j++)
                {
                    int q0 = Math.Min(31, (int)(sbyte)(int)(xb[j] * id + 16.5f));
                    int q1 = Math.Min(31, (int)(sbyte)(int)(xb[j + 16] * id + 16.5f));
                    y[b].Qs[j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                    qh |= (uint)((q0 & 0x10) >> 4) << j;
                    qh |= (uint)((q1 & 0x10) >> 4) << (j + 16);
                }
                *(uint*)y[b].Qh = qh;
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 32, BlockQ5_0.Bytes, src.Length, "Q5_0 dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ5_0*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D);
                uint qh = *(uint*)x[b].Qh;
                for (int j = 0; j < 16; j++)
                {
                    int h0 = (int)((qh >> j) << 4) & 0x10;
                    int h1 = (int)(qh >> (j + 12)) & 0x10;
                    y[b * 32 + j] = d * (((x[b].Qs[j] & 0xF) | h0) - 16);
                    y[b * 32 + j + 16] = d * (((x[b].Qs[j] >> 4) | h1) - 16);
                }
            }
        }
    }

    private static readonly Vector128<byte> SpreadLo = Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    private static readonly Vector128<byte> SpreadHi = Vector128.Create((byte)2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    private static readonly Vector128<byte> BitOfByte = Vector128.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);

    /// <summary>Re-expresses blocks as Q8_0 (same d, q − 16 as int8) for the shared int8 dot kernel.</summary>
    public static void UnpackToQ8_0(BlockQ5_0* x, BlockQ8_0* y, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            y[b].D = x[b].D;
            // Spread the 32 high bits over 32 bytes: byte j of the broadcast picks qh byte j/8, then tests bit j%8.
            var qh = Vector128.Create(*(uint*)x[b].Qh).AsByte();
            var lo = Vector128.Equals(Vector128.Shuffle(qh, SpreadLo) & BitOfByte, BitOfByte) & Vector128.Create((byte)0x10);
            var hi = Vector128.Equals(Vector128.Shuffle(qh, SpreadHi) & BitOfByte, BitOfByte) & Vector128.Create((byte)0x10);
            var q = Vector128.Load(x[b].Qs);
            var m4 = Vector128.Create((byte)0xF);
            var sixteen = Vector128.Create((byte)16);
            (((q & m4) | lo) - sixteen).AsSByte().Store(y[b].Qs);
            ((Vector128.ShiftRightLogical(q, 4) | hi) - sixteen).AsSByte().Store(y[b].Qs + 16);
        }
    }
}

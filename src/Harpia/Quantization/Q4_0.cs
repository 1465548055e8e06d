using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>GGUF Q4_0: 32 weights as 4-bit q with one fp16 scale; value = d · (q − 8). Byte j holds element j
/// in its low nibble and element j + 16 in its high nibble.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ4_0
{
    public const int Size = 32, Bytes = 18;
    public ushort D;
    public fixed byte Qs[16];
}

[SkipLocalsInit]
public static unsafe class Q4_0
{
    static Q4_0() => AssertSize<BlockQ4_0>(BlockQ4_0.Bytes);

    /// <summary>Reference quantizer (ggml quantize_row_q4_0_ref): d = max / −8 with max the signed extreme.</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 32, BlockQ4_0.Bytes, dst.Length, "Q4_0 quantize");
        fixed (float* x = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ4_0*)p;
            for (int b = 0; b < nb; b++)
            {
                float* xb = x + b * 32;
                float amax = 0, max = 0;
                for (int j = 0; j < 32; j++)
                    if (amax < MathF.Abs(xb[j])) { amax = MathF.Abs(xb[j]); max = xb[j]; }
                float d = max / -8;
                float id = d != 0 ? 1 / d : 0;
                y[b].D = F2H(d);
                for (int j = 0; j < 16; j++)
                {
                    int q0 = Math.Min(15, (int)(sbyte)(int)(xb[j] * id + 8.5f));
                    int q1 = Math.Min(15, (int)(sbyte)(int)(xb[j + 16] * id + 8.5f));
                    y[b].Qs[j] = (byte)(q0 | (q1 << 4));
                }
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 32, BlockQ4_0.Bytes, src.Length, "Q4_0 dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ4_0*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D);
                for (int j = 0; j < 16; j++)
                {
                    y[b * 32 + j] = d * ((x[b].Qs[j] & 0xF) - 8);
                    y[b * 32 + j + 16] = d * ((x[b].Qs[j] >> 4) - 8);
                }
            }
        }
    }

    /// <summary>Re-expresses blocks as Q8_0 (same d, q − 8 as int8) so the shared int8 dot kernel applies.</summary>
    public static void UnpackToQ8_0(BlockQ4_0* x, BlockQ8_0* y, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            y[b].D = x[b].D;
            if (Vector128.IsHardwareAccelerated)
            {
                var q = Vector128.Load(x[b].Qs);
                var m = Vector128.Create((byte)0xF);
                var eight = Vector128.Create((byte)8);
                ((q & m) - eight).AsSByte().Store(y[b].Qs);
                ((Vector128.ShiftRightLogical(q, 4) & m) - eight).AsSByte().Store(y[b].Qs + 16);
            }
            else
                for (int j = 0; j < 16; j++)
                {
                    y[b].Qs[j] = (sbyte)((x[b].Qs[j] & 0xF) - 8);
                    y[b].Qs[j + 16] = (sbyte)((x[b].Qs[j] >> 4) - 8);
                }
        }
    }
}

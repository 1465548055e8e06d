using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// GGUF Q3_K: 256 weights in 16 groups of 16 with 6-bit signed scales (stored +32, low nibbles in Scales[0..8),
/// top 2 bits in Scales[8..12)); value = d·sc(g)·(q − 4) with q = 2 low bits from Qs and a high bit from HMask.
/// Element e = 128n + 32j + l: low bits (Qs[32n + l] >> 2j) &amp; 3, high bit = bit (e / 32) of HMask[l].
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ3_K
{
    public const int Size = 256, Bytes = 110;
    public fixed byte HMask[32];
    public fixed byte Qs[64];
    public fixed byte Scales[12];
    public ushort D;
}

[SkipLocalsInit]
public static unsafe class Q3_K
{
    static Q3_K() => AssertSize<BlockQ3_K>(BlockQ3_K.Bytes);

    /// <summary>The signed 6-bit scale of group g.</summary>
    public static int Scale(byte* s, int g)
    {
        int low = g < 8 ? s[g] & 0xF : s[g - 8] >> 4;
        int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        return (low | (high << 4)) - 32;
    }

    /// <summary>Reference quantizer (ggml quantize_row_q3_K_ref: make_q3_quants(16, 4, rmse) per group).</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 256, BlockQ3_K.Bytes, dst.Length, "Q3_K quantize");
        sbyte* levels = stackalloc sbyte[256];
        float* scales = stackalloc float[16];
        fixed (float* xs = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ3_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float* x = xs + 256 * b;
                float maxScale = 0, amax = 0;
                for (int g = 0; g < 16; g++)
                {
                    scales[g] = MakeQ3Quants(16, 4, x + 16 * g, levels + 16 * g, true);
                    float a = MathF.Abs(scales[g]);
                    if (a > amax) { amax = a; maxScale = scales[g]; }
                }
                for (int j = 0; j < 12; j++) y[b].Scales[j] = 0;
                if (maxScale != 0)
                {
                    float iscale = -32f / maxScale;
                    for (int g = 0; g < 16; g++)
                    {
                        int l = Math.Clamp(NearestInt(iscale * scales[g]), -32, 31) + 32;
                        if (g < 8) y[b].Scales[g] = (byte)(l & 0xF);
                        else y[b].Scales[g - 8] |= (byte)((l & 0xF) << 4);
                        y[b].Scales[g % 4 + 8] |= (byte)((l >> 4) << (2 * (g / 4)));
                    }
                    y[b].D = F2H(1 / iscale);
                }
                else y[b].D = 0;
                float d0 = H2F(y[b].D);
                for (int g = 0; g < 16; g++)
                {
                    float d = d0 * Scale(y[b].Scales, g);
                    if (d == 0) continue;
                    for (int i = 0; i < 16; i++)
                        levels[16 * g + i] = (sbyte)(4 + Math.Clamp(NearestInt(x[16 * g + i] / d), -4, 3));
                }
                for (int j = 0; j < 32; j++) y[b].HMask[j] = 0;
                for (int e = 0; e < 256; e++)
                    if (levels[e] > 3)
                    {
                        y[b].HMask[e % 32] |= (byte)(1 << (e / 32));
                        levels[e] -= 4;
                    }
                for (int n = 0; n < 2; n++)
                    for (int l = 0; l < 32; l++)
                    {
                        sbyte* L = levels + 128 * n;
                        y[b].Qs[32 * n + l] = (byte)((L[l] & 3) | ((L[l + 32] & 3) << 2) | ((L[l + 64] & 3) << 4) | ((L[l + 96] & 3) << 6));
                    }
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 256, BlockQ3_K.Bytes, src.Length, "Q3_K dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ3_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D);
                for (int e = 0; e < 256; e++)
                {
                    int n = e / 128, j = (e % 128) / 32, l = e % 32;
                    int q = (x[b].Qs[32 * n + l] >> (2 * j)) & 3;
                    int hi = (x[b].HMask[l] >> (e / 32)) & 1;
                    y[256 * b + e] = d * Scale(x[b].Scales, e / 16) * (q + 4 * hi - 4);
                }
            }
        }
    }

    public static void Unpack(BlockQ3_K* x, KUnpacked* u)
    {
        float d = H2F(x->D);
        u->D = d;
        u->DMin = 4 * d;      // the −4 offset, applied through the activation group sums
        // Four groups per 32-bit word: low nibbles from bytes 0..7, top two bits from bytes 8..11.
        uint a0 = Unsafe.ReadUnaligned<uint>(x->Scales), a1 = Unsafe.ReadUnaligned<uint>(x->Scales + 4);
        uint t = Unsafe.ReadUnaligned<uint>(x->Scales + 8);
        uint g0 = (a0 & 0x0f0f0f0f) | ((t & 0x03030303) << 4);
        uint g1 = (a1 & 0x0f0f0f0f) | (((t >> 2) & 0x03030303) << 4);
        uint g2 = ((a0 >> 4) & 0x0f0f0f0f) | (((t >> 4) & 0x03030303) << 4);
        uint g3 = ((a1 >> 4) & 0x0f0f0f0f) | (((t >> 6) & 0x03030303) << 4);
        KQuantDot.SetScales16(u, Vector128.Create(g0, g1, g2, g3).AsSByte() - Vector128.Create((sbyte)32));
        var three = Vector128.Create((byte)3);
        var four = Vector128.Create((byte)4);
        var hm0 = Vector128.Load(x->HMask);
        var hm1 = Vector128.Load(x->HMask + 16);
        for (int n = 0; n < 2; n++)
        {
            var q0 = Vector128.Load(x->Qs + 32 * n);
            var q1 = Vector128.Load(x->Qs + 32 * n + 16);
            for (int j = 0; j < 4; j++)
            {
                byte* q = u->Q + 128 * n + 32 * j;
                var hb = Vector128.Create((byte)(1 << (4 * n + j)));
                // 16-bit shifts (x86 has no byte shift); the & 3 drops what crosses in from the neighbouring byte.
                ((Vector128.ShiftRightLogical(q0.AsUInt16(), 2 * j).AsByte() & three) | (Vector128.Equals(hm0 & hb, hb) & four)).Store(q);
                ((Vector128.ShiftRightLogical(q1.AsUInt16(), 2 * j).AsByte() & three) | (Vector128.Equals(hm1 & hb, hb) & four)).Store(q + 16);
            }
        }
    }
}

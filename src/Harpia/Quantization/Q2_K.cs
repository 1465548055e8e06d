using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// GGUF Q2_K: 256 weights in 16 groups of 16; Scales[g] holds a 4-bit scale (low) and 4-bit min (high);
/// value = d·sc(g)·q − dmin·m(g), q 2-bit at (Qs[32n + l] >> 2j) &amp; 3 for element 128n + 32j + l.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ2_K
{
    public const int Size = 256, Bytes = 84;
    public fixed byte Scales[16];
    public fixed byte Qs[64];
    public ushort D;
    public ushort DMin;
}

[SkipLocalsInit]
public static unsafe class Q2_K
{
    static Q2_K() => AssertSize<BlockQ2_K>(BlockQ2_K.Bytes);

    /// <summary>Reference quantizer (ggml quantize_row_q2_K_ref: make_qkx2_quants(16, 3, |x| weights, MAD)).</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 256, BlockQ2_K.Bytes, dst.Length, "Q2_K quantize");
        byte* levels = stackalloc byte[256];
        byte* laux = stackalloc byte[16];
        float* weights = stackalloc float[16];
        float* scales = stackalloc float[16];
        float* mins = stackalloc float[16];
        const float q4scale = 15f;
        fixed (float* xs = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ2_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float* x = xs + 256 * b;
                float maxScale = 0, maxMin = 0;
                for (int g = 0; g < 16; g++)
                {
                    for (int l = 0; l < 16; l++) weights[l] = MathF.Abs(x[16 * g + l]);
                    scales[g] = MakeQkx2Quants(16, 3, x + 16 * g, weights, levels + 16 * g, out mins[g], laux, -0.5f, 0.1f, 15, true);
                    if (scales[g] > maxScale) maxScale = scales[g];
                    if (mins[g] > maxMin) maxMin = mins[g];
                }
                if (maxScale > 0)
                {
                    float iscale = q4scale / maxScale;
                    for (int g = 0; g < 16; g++) y[b].Scales[g] = (byte)NearestInt(iscale * scales[g]);
                    y[b].D = F2H(maxScale / q4scale);
                }
                else
                {
                    for (int g = 0; g < 16; g++) y[b].Scales[g] = 0;
                    y[b].D = 0;
                }
                if (maxMin > 0)
                {
                    float iscale = q4scale / maxMin;
                    for (int g = 0; g < 16; g++) y[b].Scales[g] |= (byte)(NearestInt(iscale * mins[g]) << 4);
                    y[b].DMin = F2H(maxMin / q4scale);
                }
                else y[b].DMin = 0;
                float d0 = H2F(y[b].D), m0 = H2F(y[b].DMin);
                for (int g = 0; g < 16; g++)
                {
                    float d = d0 * (y[b].Scales[g] & 0xF);
                    if (d == 0) continue;
                    float dm = m0 * (y[b].Scales[g] >> 4);
                    for (int i = 0; i < 16; i++)
                        levels[16 * g + i] = (byte)Math.Clamp(NearestInt((x[16 * g + i] + dm) / d), 0, 3);
                }
                for (int n = 0; n < 2; n++)
                    for (int l = 0; l < 32; l++)
                    {
                        byte* L = levels + 128 * n;
                        y[b].Qs[32 * n + l] = (byte)(L[l] | (L[l + 32] << 2) | (L[l + 64] << 4) | (L[l + 96] << 6));
                    }
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 256, BlockQ2_K.Bytes, src.Length, "Q2_K dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ2_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D), dmin = H2F(x[b].DMin);
                for (int e = 0; e < 256; e++)
                {
                    int n = e / 128, j = (e % 128) / 32, l = e % 32;
                    int q = (x[b].Qs[32 * n + l] >> (2 * j)) & 3;
                    int s = x[b].Scales[e / 16];
                    y[256 * b + e] = d * (s & 0xF) * q - dmin * (s >> 4);
                }
            }
        }
    }

    public static void Unpack(BlockQ2_K* x, KUnpacked* u)
    {
        u->D = H2F(x->D);
        u->DMin = H2F(x->DMin);
        var sm = Vector128.Load(x->Scales);
        var (s0, s1) = Vector128.Widen(sm & Vector128.Create((byte)0xF));
        s0.AsInt16().Store(u->Scales); s1.AsInt16().Store(u->Scales + 8);
        var (m0, m1) = Vector128.Widen(Vector128.ShiftRightLogical(sm, 4));
        m0.AsInt16().Store(u->MinCoef); m1.AsInt16().Store(u->MinCoef + 8);
        var three = Vector128.Create((byte)3);
        for (int n = 0; n < 2; n++)
        {
            var q0 = Vector128.Load(x->Qs + 32 * n);
            var q1 = Vector128.Load(x->Qs + 32 * n + 16);
            for (int j = 0; j < 4; j++)
            {
                byte* q = u->Q + 128 * n + 32 * j;
                // 16-bit shifts (x86 has no byte shift); the & 3 drops what crosses in from the neighbouring byte.
                (Vector128.ShiftRightLogical(q0.AsUInt16(), 2 * j).AsByte() & three).Store(q);
                (Vector128.ShiftRightLogical(q1.AsUInt16(), 2 * j).AsByte() & three).Store(q + 16);
            }
        }
    }
}

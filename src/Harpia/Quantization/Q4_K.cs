using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// GGUF Q4_K: 256 weights in 8 groups of 32; value = d·sc(g)·q − dmin·m(g) with 6-bit sc/m packed in 12 bytes
/// and 4-bit q. Each 64-element chunk c uses Qs[32c..32c+32): low nibbles = elements 0..31, high = 32..63.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ4_K
{
    public const int Size = 256, Bytes = 144;
    public ushort D;
    public ushort DMin;
    public fixed byte Scales[12];
    public fixed byte Qs[128];
}

[SkipLocalsInit]
public static unsafe class Q4_K
{
    static Q4_K() => AssertSize<BlockQ4_K>(BlockQ4_K.Bytes);

    /// <summary>6-bit scale and min of group j from the 12-byte packing (ggml get_scale_min_k4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleMin(int j, byte* q, out int sc, out int m)
    {
        if (j < 4) { sc = q[j] & 63; m = q[j + 4] & 63; }
        else
        {
            sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    /// <summary>All 8 scales (bytes 0..7) and 8 mins (bytes 8..15) at once, four groups per 32-bit word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<byte> ScalesAndMins(byte* q)
    {
        uint u0 = Unsafe.ReadUnaligned<uint>(q), u1 = Unsafe.ReadUnaligned<uint>(q + 4), u2 = Unsafe.ReadUnaligned<uint>(q + 8);
        uint scLo = u0 & 0x3f3f3f3f;
        uint mnLo = u1 & 0x3f3f3f3f;
        uint scHi = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
        uint mnHi = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4);
        return Vector128.Create(scLo | ((ulong)scHi << 32), mnLo | ((ulong)mnHi << 32)).AsByte();
    }

    /// <summary>Packs 8 six-bit scales and mins into the 12-byte layout <see cref="ScaleMin"/> reads.</summary>
    public static void PackScales(byte* ls, byte* lm, byte* scales)
    {
        for (int j = 0; j < 12; j++) scales[j] = 0;
        for (int j = 0; j < 8; j++)
        {
            if (j < 4) { scales[j] = ls[j]; scales[j + 4] = lm[j]; }
            else
            {
                scales[j + 4] = (byte)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
                scales[j - 4] |= (byte)((ls[j] >> 4) << 6);
                scales[j] |= (byte)((lm[j] >> 4) << 6);
            }
        }
    }

    /// <summary>
    /// Reference quantizer (ggml quantize_row_q4_K_ref): per group make_qkx2_quants weighted by rms + |x|, then the
    /// scales/mins themselves quantized to 6 bits against the block maxima, and levels recomputed with them.
    /// <paramref name="nmax"/> 31 with 5 bits gives Q5_K (shared here because the search is identical).
    /// </summary>
    internal static void QuantizeSuper(float* x, int nmax, float rmin, int nstep, out ushort dOut, out ushort dminOut, byte* scales, byte* levels)
    {
        float* weights = stackalloc float[32];
        float* sc = stackalloc float[8];
        float* mins = stackalloc float[8];
        byte* laux = stackalloc byte[32];
        byte* ls = stackalloc byte[8];
        byte* lm = stackalloc byte[8];
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            float sumX2 = 0;
            for (int l = 0; l < 32; l++) sumX2 += x[32 * j + l] * x[32 * j + l];
            float avX = MathF.Sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++) weights[l] = avX + MathF.Abs(x[32 * j + l]);
            sc[j] = MakeQkx2Quants(32, nmax, x + 32 * j, weights, levels + 32 * j, out mins[j], laux, rmin, 0.1f, nstep, false);
            if (sc[j] > maxScale) maxScale = sc[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        float invScale = maxScale > 0 ? 63f / maxScale : 0;
        float invMin = maxMin > 0 ? 63f / maxMin : 0;
        for (int j = 0; j < 8; j++)
        {
            ls[j] = (byte)Math.Min(63, NearestInt(invScale * sc[j]));
            lm[j] = (byte)Math.Min(63, NearestInt(invMin * mins[j]));
        }
        PackScales(ls, lm, scales);
        dOut = F2H(maxScale / 63f);
        dminOut = F2H(maxMin / 63f);
        float d = H2F(dOut), dmin = H2F(dminOut);
        for (int j = 0; j < 8; j++)
        {
            ScaleMin(j, scales, out int s, out int m);
            float dj = d * s;
            if (dj == 0) continue;
            float dm = dmin * m;
            for (int l = 0; l < 32; l++)
                levels[32 * j + l] = (byte)Math.Clamp(NearestInt((x[32 * j + l] + dm) / dj), 0, nmax);
        }
    }

    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 256, BlockQ4_K.Bytes, dst.Length, "Q4_K quantize");
        byte* levels = stackalloc byte[256];
        fixed (float* x = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ4_K*)p;
            for (int b = 0; b < nb; b++)
            {
                QuantizeSuper(x + 256 * b, 15, -1f, 20, out y[b].D, out y[b].DMin, y[b].Scales, levels);
                for (int c = 0; c < 4; c++)
                    for (int l = 0; l < 32; l++)
                        y[b].Qs[32 * c + l] = (byte)(levels[64 * c + l] | (levels[64 * c + 32 + l] << 4));
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 256, BlockQ4_K.Bytes, src.Length, "Q4_K dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ4_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D), dmin = H2F(x[b].DMin);
                float* yb = y + 256 * b;
                for (int c = 0; c < 4; c++)
                {
                    ScaleMin(2 * c, x[b].Scales, out int s1, out int m1);
                    ScaleMin(2 * c + 1, x[b].Scales, out int s2, out int m2);
                    for (int l = 0; l < 32; l++)
                    {
                        yb[64 * c + l] = d * s1 * (x[b].Qs[32 * c + l] & 0xF) - dmin * m1;
                        yb[64 * c + 32 + l] = d * s2 * (x[b].Qs[32 * c + l] >> 4) - dmin * m2;
                    }
                }
            }
        }
    }

    /// <summary>Fills the shared k-quant form for the integer dot kernels.</summary>
    public static void Unpack(BlockQ4_K* x, KUnpacked* u)
    {
        u->D = H2F(x->D);
        u->DMin = H2F(x->DMin);
        KQuantDot.SetScales32(u, ScalesAndMins(x->Scales));
        for (int c = 0; c < 4; c++) KQuantDot.Nibbles32(x->Qs + 32 * c, u->Q + 64 * c);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// GGUF Q6_K: 256 weights in 16 groups of 16 with int8 scales; value = d·sc(g)·(q − 32), q 6-bit. For each half h
/// (128 elements) the low 4 bits are in Ql[64h..64h+64) (elements l and l+64 share byte l, l+32 and l+96 share
/// byte l+32) and the top 2 bits in Qh[32h + l] (bits 0-1, 2-3, 4-5, 6-7 for l, l+32, l+64, l+96).
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ6_K
{
    public const int Size = 256, Bytes = 210;
    public fixed byte Ql[128];
    public fixed byte Qh[64];
    public fixed sbyte Scales[16];
    public ushort D;
}

[SkipLocalsInit]
public static unsafe class Q6_K
{
    static Q6_K() => AssertSize<BlockQ6_K>(BlockQ6_K.Bytes);

    /// <summary>Reference quantizer (ggml quantize_row_q6_K_ref: make_qx_quants(16, 32, rmse 1) per group).</summary>
    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 256, BlockQ6_K.Bytes, dst.Length, "Q6_K quantize");
        sbyte* levels = stackalloc sbyte[256];
        float* scales = stackalloc float[16];
        fixed (float* xs = src)
        fixed (byte* p = dst)
        {
            var y = (BlockQ6_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float* x = xs + 256 * b;
                float maxScale = 0, maxAbsScale = 0;
                for (int g = 0; g < 16; g++)
                {
                    scales[g] = MakeQxQuants(16, 32, x + 16 * g, levels + 16 * g, 1);
                    float a = MathF.Abs(scales[g]);
                    if (a > maxAbsScale) { maxAbsScale = a; maxScale = scales[g]; }
                }
                if (maxAbsScale < GroupMaxEps)
                {
                    new Span<byte>(&y[b], BlockQ6_K.Bytes).Clear();
                    continue;
                }
                float iscale = -128f / maxScale;
                y[b].D = F2H(1 / iscale);
                for (int g = 0; g < 16; g++) y[b].Scales[g] = (sbyte)Math.Min(127, NearestInt(iscale * scales[g]));
                float d0 = H2F(y[b].D);
                for (int g = 0; g < 16; g++)
                {
                    float d = d0 * y[b].Scales[g];
                    if (d == 0) continue;
                    for (int i = 0; i < 16; i++)
                        levels[16 * g + i] = (sbyte)(32 + Math.Clamp(NearestInt(x[16 * g + i] / d), -32, 31));
                }
                for (int h = 0; h < 2; h++)
                {
                    byte* ql = y[b].Ql + 64 * h;
                    byte* qh = y[b].Qh + 32 * h;
                    sbyte* L = levels + 128 * h;
                    for (int l = 0; l < 32; l++)
                    {
                        ql[l] = (byte)((L[l] & 0xF) | ((L[l + 64] & 0xF) << 4));
                        ql[l + 32] = (byte)((L[l + 32] & 0xF) | ((L[l + 96] & 0xF) << 4));
                        qh[l] = (byte)((L[l] >> 4) | ((L[l + 32] >> 4) << 2) | ((L[l + 64] >> 4) << 4) | ((L[l + 96] >> 4) << 6));
                    }
                }
            }
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 256, BlockQ6_K.Bytes, src.Length, "Q6_K dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ6_K*)p;
            for (int b = 0; b < nb; b++)
            {
                float d = H2F(x[b].D);
                for (int h = 0; h < 2; h++)
                {
                    byte* ql = x[b].Ql + 64 * h;
                    byte* qh = x[b].Qh + 32 * h;
                    sbyte* sc = x[b].Scales + 8 * h;
                    float* yb = y + 256 * b + 128 * h;
                    for (int l = 0; l < 32; l++)
                    {
                        int g = l / 16;
                        yb[l] = d * sc[g] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                        yb[l + 32] = d * sc[g + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                        yb[l + 64] = d * sc[g + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                        yb[l + 96] = d * sc[g + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                    }
                }
            }
        }
    }

    public static void Unpack(BlockQ6_K* x, KUnpacked* u)
    {
        float d = H2F(x->D);
        u->D = d;
        u->DMin = 32 * d;     // the −32 offset, applied through the activation group sums
        KQuantDot.SetScales16(u, Vector128.Load(x->Scales));
        for (int h = 0; h < 2; h++)
        {
            byte* ql = x->Ql + 64 * h;
            byte* qh = x->Qh + 32 * h;
            byte* q = u->Q + 128 * h;
            if (Vector128.IsHardwareAccelerated)
            {
                var m4 = Vector128.Create((byte)0xF);
                var m2 = Vector128.Create((byte)0x30);
                for (int k = 0; k < 32; k += 16)
                {
                    var a = Vector128.Load(ql + k);
                    var b = Vector128.Load(ql + 32 + k);
                    var hb = Vector128.Load(qh + k);
                    // Shifts as 16-bit lanes (x86 has no byte shift); the masks drop bits crossing between bytes.
                    var hb16 = hb.AsUInt16();
                    ((a & m4) | (Vector128.ShiftLeft(hb16, 4).AsByte() & m2)).Store(q + k);
                    ((b & m4) | (Vector128.ShiftLeft(hb16, 2).AsByte() & m2)).Store(q + 32 + k);
                    ((Vector128.ShiftRightLogical(a.AsUInt16(), 4).AsByte() & m4) | (hb & m2)).Store(q + 64 + k);
                    ((Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & m4) | (Vector128.ShiftRightLogical(hb16, 2).AsByte() & m2)).Store(q + 96 + k);
                }
            }
            else
                for (int l = 0; l < 32; l++)
                {
                    q[l] = (byte)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
                    q[l + 32] = (byte)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                    q[l + 64] = (byte)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                    q[l + 96] = (byte)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                }
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// GGUF Q8_K: the activation format for k-quant dots. 256 values as int8 with an f32 scale, plus the sum of each
/// 16-value group (<see cref="Bsums"/>) so weight offsets/mins cost one multiply per group instead of per value.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ8_K
{
    public const int Size = 256, Bytes = 292;
    public float D;
    public fixed sbyte Qs[256];
    public fixed short Bsums[16];
}

[SkipLocalsInit]
public static unsafe class Q8_K
{
    static Q8_K() => AssertSize<BlockQ8_K>(BlockQ8_K.Bytes);

    /// <summary>ggml quantize_row_q8_K: scale from the signed extreme, levels in [−127, 127].</summary>
    public static void Quantize(float* x, BlockQ8_K* y, int nb) => Quantize(x, y, nb, SimdPaths.Active);

    /// <summary><see cref="Quantize(float*, BlockQ8_K*, int)"/> on a chosen path: the 256-bit loop on the Vector256 and
    /// Vector512 paths, the scalar one otherwise (MatMul passes the path its caller chose to its workers).</summary>
    public static void Quantize(float* x, BlockQ8_K* y, int nb, SimdPath path)
    {
        if (path is SimdPath.Vector512 or SimdPath.Vector256 && Vector256.IsHardwareAccelerated) { Quantize256(x, y, nb); return; }
        QuantizeScalar(x, y, nb);
    }

    internal static void QuantizeScalar(float* x, BlockQ8_K* y, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            float* xb = x + b * 256;
            float max = 0, amax = 0;
            for (int j = 0; j < 256; j++)
            {
                float ax = MathF.Abs(xb[j]);
                if (ax > amax) { amax = ax; max = xb[j]; }
            }
            if (amax == 0)
            {
                y[b].D = 0;
                new Span<byte>(y[b].Qs, 256 + 32).Clear();
                continue;
            }
            float iscale = -127f / max;
            for (int j = 0; j < 256; j++) y[b].Qs[j] = (sbyte)Math.Min(127, NearestInt(iscale * xb[j]));
            for (int g = 0; g < 16; g++)
            {
                int s = 0;
                for (int j = 0; j < 16; j++) s += y[b].Qs[g * 16 + j];
                y[b].Bsums[g] = (short)s;
            }
            y[b].D = 1 / iscale;
        }
    }

    /// <summary>
    /// Vectorized form of the same quantizer (decode quantizes one activation row per matmul, so this is on the
    /// per-token path). The only possible difference from the scalar loop: when +a and −a tie for the largest
    /// magnitude the sign of the scale may differ, which negates both d and q and decodes to the same values.
    /// </summary>
    internal static void Quantize256(float* x, BlockQ8_K* y, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            float* xb = x + b * 256;
            var vmax = Vector256.Load(xb);
            var vmin = vmax;
            for (int j = 8; j < 256; j += 8)
            {
                var v = Vector256.Load(xb + j);
                vmax = Vector256.Max(vmax, v);
                vmin = Vector256.Min(vmin, v);
            }
            float hi = Max8(vmax), lo = -Max8(-vmin);
            float max = -lo > hi ? lo : hi;
            if (max == 0)
            {
                y[b].D = 0;
                new Span<byte>(y[b].Qs, 256 + 32).Clear();
                continue;
            }
            float iscale = -127f / max;
            var s = Vector256.Create(iscale);
            var cap = Vector256.Create(127);
            for (int g = 0; g < 16; g++)
            {
                var a = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(xb + 16 * g) * s)), cap);
                var c = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(xb + 16 * g + 8) * s)), cap);
                Vector128.Narrow(Vector256.Narrow(a, c).GetLower(), Vector256.Narrow(a, c).GetUpper()).Store(y[b].Qs + 16 * g);
                y[b].Bsums[g] = (short)Vector256.Sum(a + c);
            }
            y[b].D = 1 / iscale;
        }
    }

    private static float Max8(Vector256<float> v)
    {
        var h = Vector128.Max(v.GetLower(), v.GetUpper());
        return MathF.Max(MathF.Max(h[0], h[1]), MathF.Max(h[2], h[3]));
    }

    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = Blocks(src.Length, 256, BlockQ8_K.Bytes, dst.Length, "Q8_K quantize");
        fixed (float* x = src)
        fixed (byte* p = dst)
            Quantize(x, (BlockQ8_K*)p, nb);
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Blocks(dst.Length, 256, BlockQ8_K.Bytes, src.Length, "Q8_K dequantize");
        fixed (byte* p = src)
        fixed (float* y = dst)
        {
            var x = (BlockQ8_K*)p;
            for (int b = 0; b < nb; b++)
                for (int j = 0; j < 256; j++) y[b * 256 + j] = x[b].D * x[b].Qs[j];
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Harpia.Quantization;

/// <summary>
/// Helpers shared by the quant families: ggml's rounding, fp16 scale conversion and the reference scale searches
/// (make_qx_quants / make_qkx2_quants / make_q3_quants) that llama.cpp's reference quantizers use, so files we
/// write quantize the same way llama-quantize does.
/// </summary>
internal static unsafe class QuantCommon
{
    public const int QK_K = 256;
    /// <summary>Below this a group is treated as all zero (ggml's GROUP_MAX_EPS).</summary>
    public const float GroupMaxEps = 1e-15f;

    /// <summary>ggml's nearest_int: round half to even via the 1.5·2²³ trick; MathF.Round's default is the same.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestInt(float v) => (int)MathF.Round(v);

    /// <summary>
    /// How far ahead decode kernels prefetch the weight stream. Without it, rows wider than ~8192 (FFN down) ran at
    /// half the bandwidth: the row stream and a 32–37 KB activation vector no longer share L1, and the hardware
    /// prefetcher alone kept too few lines in flight. Non-temporal hints keep the once-read weights from evicting
    /// the activations. Measured on Zen 5: 18 → 38 GB/s on 8192 × 32768 Q4_K with two threads.
    /// </summary>
    internal const int PrefetchBytes = 4608;

    /// <summary>Non-temporal prefetch of <paramref name="lines"/> cache lines at <paramref name="p"/> + <see cref="PrefetchBytes"/> (never faults).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void PrefetchAhead(void* p, int lines)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        byte* q = (byte*)p + PrefetchBytes;
        for (int i = 0; i < lines; i++) System.Runtime.Intrinsics.X86.Sse.PrefetchNonTemporal(q + 64 * i);
    }

    /// <summary>
    /// fp16 bits → f32 for finite values (block scales are never inf/NaN), in a few integer ops instead of the
    /// runtime's general Half conversion (this runs once per block). Normal halves: re-bias the exponent. Subnormal
    /// halves (common: Q6_K/Q5_K super-block scales of typical weights are below 6.1e-5) are converted as integer ×
    /// 2^-24, never through a denormal float — a denormal multiply costs a microcode assist (~100+ cycles) and made
    /// those kernels 3× slower.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float H2F(ushort h)
    {
        int magnitudeBits = h & 0x7fff;
        float normal = BitConverter.Int32BitsToSingle((magnitudeBits << 13) + 0x38000000);   // (127 − 15) << 23
        float subnormal = (h & 0x3ff) * 5.9604645e-8f;                                      // 2^-24
        float magnitude = (h & 0x7c00) == 0 ? subnormal : normal;
        return BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(magnitude) | ((h & 0x8000) << 16));
    }

    /// <summary>f32 → f16 bits, round to nearest even like F16C (GGML_FP32_TO_FP16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort F2H(float f) => BitConverter.HalfToUInt16Bits((Half)f);

    /// <summary>Round-trips a float through fp16, the value a decoder will see.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RoundF16(float f) => (float)(Half)f;

    /// <summary>
    /// Symmetric scale search (ggml make_qx_quants): quantizes <paramref name="n"/> values to [-nmax, nmax-1]
    /// and returns the scale; <paramref name="l"/> gets the levels offset by +nmax. rmseType 1 weights by x².
    /// </summary>
    public static float MakeQxQuants(int n, int nmax, float* x, sbyte* l, int rmseType)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            for (int i = 0; i < n; i++) l[i] = 0;
            return 0;
        }
        float iscale = -nmax / max;
        if (rmseType == 0)
        {
            for (int i = 0; i < n; i++)
                l[i] = (sbyte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
            return 1 / iscale;
        }
        bool returnEarly = false;
        if (rmseType < 0) { rmseType = -rmseType; returnEarly = true; }
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int q = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
            l[i] = (sbyte)(q + nmax);
            float w = Weight(rmseType, x[i]);
            sumlx += w * x[i] * q;
            suml2 += w * q * q;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0;
        if (returnEarly) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int q = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
                float w = Weight(rmseType, x[i]);
                sumlx += w * x[i] * q;
                suml2 += w * q * q;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                    l[i] = (sbyte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    private static float Weight(int rmseType, float x) => rmseType switch
    {
        1 => x * x,
        2 => 1,
        3 => MathF.Abs(x),
        _ => MathF.Sqrt(MathF.Abs(x)),
    };

    /// <summary>
    /// Asymmetric scale + min search (ggml make_qkx2_quants): levels in [0, nmax], value ≈ scale·L − min.
    /// Returns the scale and writes the (positive) min to <paramref name="theMin"/>.
    /// </summary>
    public static float MakeQkx2Quants(int n, int nmax, float* x, float* weights, byte* l, out float theMin,
        byte* laux, float rmin, float rdelta, int nstep, bool useMad)
    {
        float min = x[0], max = x[0];
        float sumW = weights[0], sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            for (int i = 0; i < n; i++) l[i] = 0;
            theMin = -min;
            return 0;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int q = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
            l[i] = (byte)q;
            float diff = scale * q + min - x[i];
            diff = useMad ? MathF.Abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }
        if (nstep < 1) { theMin = -min; return scale; }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int q = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
                laux[i] = (byte)q;
                float w = weights[i];
                sumL += w * q;
                sumL2 += w * q * q;
                sumXL += w * q * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / det;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * laux[i] + thisMin - x[i];
                    diff = useMad ? MathF.Abs(diff) : diff * diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError)
                {
                    for (int i = 0; i < n; i++) l[i] = laux[i];
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>Symmetric search with iterative refinement (ggml make_q3_quants); levels offset by +nmax.</summary>
    public static float MakeQ3Quants(int n, int nmax, float* x, sbyte* l, bool doRmse)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            for (int i = 0; i < n; i++) l[i] = 0;
            return 0;
        }
        float iscale = -nmax / max;
        if (doRmse)
        {
            float sumlx = 0, suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int q = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
                l[i] = (sbyte)q;
                float w = x[i] * x[i];
                sumlx += w * x[i] * q;
                suml2 += w * q * q;
            }
            for (int attempt = 0; attempt < 5; attempt++)
            {
                int changed = 0;
                for (int i = 0; i < n; i++)
                {
                    float w = x[i] * x[i];
                    float slx = sumlx - w * x[i] * l[i];
                    if (slx > 0)
                    {
                        float sl2 = suml2 - w * l[i] * l[i];
                        int newL = Math.Clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
                        if (newL != l[i])
                        {
                            slx += w * x[i] * newL;
                            sl2 += w * newL * newL;
                            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                            {
                                l[i] = (sbyte)newL;
                                sumlx = slx;
                                suml2 = sl2;
                                changed++;
                            }
                        }
                    }
                }
                if (changed == 0) break;
            }
            for (int i = 0; i < n; i++) l[i] += (sbyte)nmax;
            return sumlx / suml2;
        }
        for (int i = 0; i < n; i++)
            l[i] = (sbyte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
        return 1 / iscale;
    }

    /// <summary>Checks a source/destination pair for a row quantizer or dequantizer.</summary>
    public static int Blocks(int elements, int blockSize, int blockBytes, int bytesLength, string what)
    {
        if (elements % blockSize != 0)
            throw new HarpiaException($"{what}: {elements} elements is not a whole number of {blockSize}-element blocks");
        int nb = elements / blockSize;
        if (bytesLength < (long)nb * blockBytes)
            throw new HarpiaException($"{what}: {bytesLength} bytes hold fewer than {nb} blocks of {blockBytes} bytes");
        return nb;
    }

    public static void AssertSize<T>(int expected) where T : unmanaged
    {
        if (sizeof(T) != expected) throw new InvalidOperationException($"{typeof(T).Name} is {sizeof(T)} bytes, expected {expected}");
    }
}

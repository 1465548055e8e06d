using System.Runtime.Intrinsics;

namespace Harpia.Tensors;

/// <summary>Element-wise activations.</summary>
public static class Activations
{
    private const double InvSqrt2 = 0.70710678118654752440;

    // Abramowitz & Stegun 7.1.26: erf x = 1 − t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5))))·e^(−x²), t = 1/(1 + p·x), x ≥ 0,
    // absolute error ≤ 1.5e-7 — at the level of float rounding itself, so GELU stays "exact" in f32 (the logits of
    // the golden tests move by ~1e-7), while costing one exp and one divide instead of a 40-term series in double.
    private const float ErfP = 0.3275911f, ErfA1 = 0.254829592f, ErfA2 = -0.284496736f, ErfA3 = 1.421413741f,
        ErfA4 = -1.453152027f, ErfA5 = 1.061405429f;

    /// <summary>
    /// Exact GELU, x · Φ(x) = ½x(1 + erf(x/√2)), as torch's default <c>nn.GELU()</c> (not the tanh form), in place.
    /// Vector512/Vector256 paths with <see cref="GeluScalar"/> as the reference and the tail; the path is
    /// <see cref="Quantization.SimdPaths.Active"/> (HARPIA_SIMD), so each one runs under tests on one machine.
    /// </summary>
    public static void GeluExact(Span<float> x) => GeluExact(x, Quantization.SimdPaths.Active);

    /// <summary><see cref="GeluExact(Span{float})"/> on a chosen path (Vector128 and Scalar use the scalar loop).</summary>
    public static void GeluExact(Span<float> x, Quantization.SimdPath path)
    {
        int i = 0;
        ref float r = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        if (path == Quantization.SimdPath.Vector512 && Vector512.IsHardwareAccelerated)
            for (; i + 16 <= x.Length; i += 16)
            {
                var v = Vector512.LoadUnsafe(ref r, (nuint)i);
                var z = Vector512.Abs(v) * (float)InvSqrt2;
                var t = Vector512<float>.One / (Vector512<float>.One + ErfP * z);
                var poly = t * (Vector512.Create(ErfA1) + t * (Vector512.Create(ErfA2) + t * (Vector512.Create(ErfA3) + t * (Vector512.Create(ErfA4) + t * ErfA5))));
                var erf = Vector512<float>.One - poly * Vector512.Exp(-(z * z));
                erf = Vector512.ConditionalSelect(Vector512.LessThan(v, Vector512<float>.Zero), -erf, erf);
                (0.5f * v * (Vector512<float>.One + erf)).StoreUnsafe(ref r, (nuint)i);
            }
        if (path is Quantization.SimdPath.Vector512 or Quantization.SimdPath.Vector256 && Vector256.IsHardwareAccelerated)
            for (; i + 8 <= x.Length; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref r, (nuint)i);
                var z = Vector256.Abs(v) * (float)InvSqrt2;
                var t = Vector256<float>.One / (Vector256<float>.One + ErfP * z);
                var poly = t * (Vector256.Create(ErfA1) + t * (Vector256.Create(ErfA2) + t * (Vector256.Create(ErfA3) + t * (Vector256.Create(ErfA4) + t * ErfA5))));
                var erf = Vector256<float>.One - poly * Vector256.Exp(-(z * z));
                erf = Vector256.ConditionalSelect(Vector256.LessThan(v, Vector256<float>.Zero), -erf, erf);
                (0.5f * v * (Vector256<float>.One + erf)).StoreUnsafe(ref r, (nuint)i);
            }
        for (; i < x.Length; i++) x[i] = GeluScalar(x[i]);
    }

    /// <summary>The scalar reference of <see cref="GeluExact"/>: the same formula, one value.</summary>
    public static float GeluScalar(float v)
    {
        float z = MathF.Abs(v) * (float)InvSqrt2;
        float t = 1f / (1f + ErfP * z);
        float erf = 1f - t * (ErfA1 + t * (ErfA2 + t * (ErfA3 + t * (ErfA4 + t * ErfA5)))) * MathF.Exp(-(z * z));
        return 0.5f * v * (1f + (v < 0 ? -erf : erf));
    }

    /// <summary>
    /// erf in double precision (≈1e-15 absolute): Maclaurin series for |z| &lt; 2.5, where the alternating terms
    /// stay small enough that cancellation costs at most a few digits; for larger |z| the continued fraction of
    /// erfc (Abramowitz–Stegun 7.1.14), evaluated bottom-up, which converges quickly there.
    /// .NET has no Math.Erf. The model uses the float approximation in <see cref="GeluExact"/>; this one is the
    /// float64 reference the tests check that approximation (and the model) against.
    /// </summary>
    public static double Erf(double z)
    {
        if (double.IsNaN(z)) return double.NaN;
        double a = Math.Abs(z);
        double result;
        if (a < 2.5)
        {
            // erf z = 2/√π Σ (−1)ⁿ z^(2n+1) / (n! (2n+1))
            double z2 = a * a, term = a, sum = a;
            for (int n = 1; n < 100; n++)
            {
                term *= -z2 / n;
                double t = term / (2 * n + 1);
                sum += t;
                if (Math.Abs(t) < 1e-17 * Math.Abs(sum)) break;
            }
            result = sum * 1.1283791670955125739; // 2/√π
        }
        else if (a > 6.5)
        {
            result = 1.0; // erfc(6.5) < 4e-20
        }
        else
        {
            // erfc z = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + …)))))
            double k = a;
            for (int n = 80; n >= 1; n--) k = a + n * 0.5 / k;
            result = 1.0 - Math.Exp(-a * a) / (1.7724538509055160273 * k);
        }
        return z < 0 ? -result : result;
    }
}

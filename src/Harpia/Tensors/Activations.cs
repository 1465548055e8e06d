namespace Harpia.Tensors;

/// <summary>Element-wise activations.</summary>
public static class Activations
{
    private const double InvSqrt2 = 0.70710678118654752440;

    /// <summary>Exact GELU, x · Φ(x) = ½x(1 + erf(x/√2)), as torch's default <c>nn.GELU()</c> (not the tanh form).</summary>
    public static void GeluExact(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double v = x[i];
            x[i] = (float)(0.5 * v * (1.0 + Erf(v * InvSqrt2)));
        }
    }

    /// <summary>
    /// erf in double precision (≈1e-15 absolute): Maclaurin series for |z| &lt; 2.5, where the alternating terms
    /// stay small enough that cancellation costs at most a few digits; for larger |z| the continued fraction of
    /// erfc (Abramowitz–Stegun 7.1.14), evaluated bottom-up, which converges quickly there.
    /// .NET has no Math.Erf, and the golden references are float64, so an approximation with ~1e-7 error
    /// would eat into the 2e-3 logit tolerance for no gain.
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

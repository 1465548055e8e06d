using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Tests.Quantization;

internal static class QuantTestData
{
    public static readonly GgmlType[] Types = QuantFormats.Supported;

    public static IEnumerable<object[]> TypeCases => Types.Select(t => new object[] { t });

    /// <summary>Gaussian-ish weights with occasional outliers, like trained linear layers.</summary>
    public static float[] Weights(int n, int seed, float scale = 0.02f)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            double g = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            if (rng.Next(97) == 0) g *= 6;
            x[i] = (float)(g * scale);
        }
        return x;
    }

    public static byte[] Quantize(GgmlType t, float[] x)
    {
        var (bs, bb) = GgmlTypes.Geometry(t);
        var q = new byte[x.Length / bs * bb];
        QuantFormats.Quantize(t, x, q);
        return q;
    }

    public static float[] Dequantize(GgmlType t, byte[] q, int n)
    {
        var y = new float[n];
        QuantFormats.Dequantize(t, q, y);
        return y;
    }

    public static double Rms(ReadOnlySpan<float> a)
    {
        double s = 0;
        foreach (var v in a) s += (double)v * v;
        return Math.Sqrt(s / a.Length);
    }

    public static double RmsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        return Math.Sqrt(s / a.Length);
    }

    /// <summary>
    /// Relative RMS round-trip error bound per format on Gaussian data: roughly the uniform-quantization error
    /// step/√12 of each format's bit width with ~30 % headroom over the measured error (measured values are in the test output).
    /// </summary>
    public static double RelRmsBound(GgmlType t) => t switch
    {
        GgmlType.Q8_0 => 0.01,
        GgmlType.Q6_K => 0.035,
        GgmlType.Q5_0 => 0.08,
        GgmlType.Q5_K => 0.06,
        GgmlType.Q4_0 => 0.16,
        GgmlType.Q4_K => 0.12,
        GgmlType.Q3_K => 0.26,
        GgmlType.Q2_K => 0.45,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };
}

using System.Numerics.Tensors;

namespace Harpia.Tensors;

/// <summary>Normalisation kernels over rows of activations.</summary>
public static class Norms
{
    /// <summary>
    /// LayerNorm of each of <paramref name="rows"/> rows of <paramref name="dim"/> floats:
    /// y = (x − mean) / sqrt(var + eps) · weight + bias, with the biased variance as torch computes it.
    /// Mean and variance are accumulated by vectorised pairwise sums (f32), then combined in f64.
    /// </summary>
    public static void LayerNorm(ReadOnlySpan<float> x, Span<float> y, int rows, int dim,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            var yr = y.Slice(r * dim, dim);
            float mean = (float)((double)TensorPrimitives.Sum(xr) / dim);
            TensorPrimitives.Subtract(xr, mean, yr);
            double variance = (double)TensorPrimitives.SumOfSquares(yr) / dim;
            float rstd = (float)(1.0 / Math.Sqrt(variance + eps));
            TensorPrimitives.Multiply(yr, rstd, yr);
            TensorPrimitives.MultiplyAdd(yr, weight, bias, yr);
        }
    }

    /// <summary>Scalar f64 reference of <see cref="LayerNorm"/> for one row (tests).</summary>
    public static void LayerNormReference(ReadOnlySpan<float> x, Span<float> y, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, float eps)
    {
        double mean = 0;
        foreach (float v in x) mean += v;
        mean /= x.Length;
        double var = 0;
        foreach (float v in x) var += (v - mean) * (v - mean);
        var /= x.Length;
        double rstd = 1.0 / Math.Sqrt(var + eps);
        for (int i = 0; i < x.Length; i++) y[i] = (float)((x[i] - mean) * rstd * weight[i] + bias[i]);
    }
}

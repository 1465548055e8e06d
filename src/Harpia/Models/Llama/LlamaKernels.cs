using System.Numerics.Tensors;

namespace Harpia.Models.Llama;

/// <summary>
/// The Llama architecture's element-wise kernels, each with a scalar f64 reference beside it for the tests:
/// RMSNorm, SwiGLU, and rotary in both pair layouts (rotate-half and llama.cpp's interleaved).
/// </summary>
public static class LlamaKernels
{
    /// <summary>
    /// LlamaRMSNorm of each of <paramref name="rows"/> rows: y = x / sqrt(mean(x²) + eps) · weight. transformers
    /// computes the variance in f32 (hidden states upcast); here the sum of squares is accumulated in f32 vector
    /// lanes and finished in f64.
    /// </summary>
    public static void RmsNorm(ReadOnlySpan<float> x, Span<float> y, int rows, int dim, ReadOnlySpan<float> weight, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            var yr = y.Slice(r * dim, dim);
            double meanSquare = (double)TensorPrimitives.SumOfSquares(xr) / dim;
            float rstd = (float)(1.0 / Math.Sqrt(meanSquare + eps));
            TensorPrimitives.Multiply(xr, rstd, yr);
            TensorPrimitives.Multiply(yr, weight, yr);
        }
    }

    /// <summary>Scalar f64 reference of <see cref="RmsNorm"/> for one row.</summary>
    public static void RmsNormReference(ReadOnlySpan<float> x, Span<float> y, ReadOnlySpan<float> weight, float eps)
    {
        double ss = 0;
        foreach (float v in x) ss += (double)v * v;
        double rstd = 1.0 / Math.Sqrt(ss / x.Length + eps);
        for (int i = 0; i < x.Length; i++) y[i] = (float)(x[i] * rstd * weight[i]);
    }

    /// <summary>SwiGLU in place: gate ← silu(gate) · up, silu(g) = g / (1 + e^(−g)).</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        // silu(g) = g · sigmoid(g); TensorPrimitives' sigmoid is vectorised.
        var tmp = System.Buffers.ArrayPool<float>.Shared.Rent(Math.Min(gate.Length, 4096));
        try
        {
            for (int i = 0; i < gate.Length; i += 4096)
            {
                int n = Math.Min(4096, gate.Length - i);
                var g = gate.Slice(i, n);
                var s = tmp.AsSpan(0, n);
                TensorPrimitives.Sigmoid(g, s);
                TensorPrimitives.Multiply(g, s, g);
                TensorPrimitives.Multiply(g, up.Slice(i, n), g);
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(tmp); }
    }

    /// <summary>Scalar f64 reference of <see cref="SwiGlu"/> for one value.</summary>
    public static float SwiGluReference(float gate, float up) => (float)(gate / (1.0 + Math.Exp(-(double)gate)) * up);

    /// <summary>
    /// Rotates <paramref name="heads"/> consecutive head vectors in place. Rotate-half (Hugging Face): pair i is
    /// (x[i], x[i + d/2]); interleaved (a llama.cpp <c>llama</c> GGUF, whose q/k rows were permuted so): pair i is
    /// (x[2i], x[2i + 1]). Either way out₁ = x₁cos − x₂sin, out₂ = x₂cos + x₁sin.
    /// </summary>
    public static void Rotary(Span<float> x, int heads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool interleaved)
    {
        if (!interleaved)
        {
            Harpia.Tensors.Rope.Apply(x, heads, headDim, cos, sin);
            return;
        }
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            var v = x.Slice(h * headDim, headDim);
            for (int i = 0; i < half; i++)
            {
                float x1 = v[2 * i], x2 = v[2 * i + 1];
                v[2 * i] = x1 * cos[i] - x2 * sin[i];
                v[2 * i + 1] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

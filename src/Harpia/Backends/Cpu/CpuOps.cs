using System.Numerics.Tensors;

namespace Harpia.Backends.Cpu;

/// <summary>The CPU kernels that Tensors/ did not have yet (RMSNorm, SiLU, interleaved/partial rotary), with scalar references.</summary>
public static class CpuOps
{
    /// <summary>y = x / √(mean(x²) + eps) · weight, the mean of squares in f64 as Norms.LayerNorm combines its sums.</summary>
    public static void RmsNormRow(ReadOnlySpan<float> x, Span<float> y, ReadOnlySpan<float> weight, float eps)
    {
        double meanSquare = (double)TensorPrimitives.SumOfSquares(x) / x.Length;
        float rstd = (float)(1.0 / Math.Sqrt(meanSquare + eps));
        TensorPrimitives.Multiply(x, rstd, y);
        TensorPrimitives.Multiply(y, weight, y);
    }

    /// <summary>Scalar f64 reference of <see cref="RmsNormRow"/>.</summary>
    public static void RmsNormReference(ReadOnlySpan<float> x, Span<float> y, ReadOnlySpan<float> weight, float eps)
    {
        double ms = 0;
        foreach (float v in x) ms += (double)v * v;
        double rstd = 1.0 / Math.Sqrt(ms / x.Length + eps);
        for (int i = 0; i < x.Length; i++) y[i] = (float)(x[i] * rstd * weight[i]);
    }

    /// <summary>SiLU x·σ(x) in place, vectorised in slices through a stack buffer.</summary>
    public static void Silu(Span<float> x)
    {
        Span<float> sig = stackalloc float[256];
        for (int i = 0; i < x.Length; i += sig.Length)
        {
            var part = x.Slice(i, Math.Min(sig.Length, x.Length - i));
            var s = sig[..part.Length];
            TensorPrimitives.Sigmoid(part, s);
            TensorPrimitives.Multiply(part, s, part);
        }
    }

    /// <summary>gate = silu(gate) · up (SwiGLU).</summary>
    public static void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
    {
        Silu(gate);
        TensorPrimitives.Multiply(gate, up, gate);
    }

    /// <summary>The scalar reference of SiLU.</summary>
    public static float SiluScalar(float v) => (float)(v / (1.0 + Math.Exp(-v)));

    /// <summary>Rotates q and k of each token by its position (angles in f64, as <see cref="Tensors.Rope.Table(int, ReadOnlySpan{double}, Span{float}, Span{float})"/>).</summary>
    public static void Rope(Span<float> q, int qHeads, Span<float> k, int kHeads, int headDim, ReadOnlySpan<int> positions, RotaryEmbedding rope)
    {
        int pairs = rope.InverseFrequencies.Length;
        if (pairs * 2 > headDim) throw new ArgumentException($"rotary embedding of {pairs * 2} dims is wider than the head ({headDim})");
        Span<float> cos = stackalloc float[pairs], sin = stackalloc float[pairs];
        int qWidth = qHeads * headDim, kWidth = kHeads * headDim;
        bool kernel = rope.Style == RopeStyle.RotateHalf && pairs * 2 == headDim && rope.AttentionFactor == 1f;
        for (int t = 0; t < positions.Length; t++)
        {
            Tensors.Rope.Table(positions[t], rope.InverseFrequencies, cos, sin);
            if (rope.AttentionFactor != 1f)
            {
                TensorPrimitives.Multiply(cos, rope.AttentionFactor, cos);
                TensorPrimitives.Multiply(sin, rope.AttentionFactor, sin);
            }
            var qt = q.Slice(t * qWidth, qWidth);
            var kt = k.Slice(t * kWidth, kWidth);
            if (kernel)
            {
                Tensors.Rope.Apply(qt, qHeads, headDim, cos, sin);
                Tensors.Rope.Apply(kt, kHeads, headDim, cos, sin);
            }
            else
            {
                RotateHeads(qt, qHeads, headDim, cos, sin, rope.Style);
                RotateHeads(kt, kHeads, headDim, cos, sin, rope.Style);
            }
        }
    }

    /// <summary>
    /// Rotates the first 2 × cos.Length dims of each head (partial rotary leaves the rest), pairing (i, i + r/2) for
    /// rotate-half or (2i, 2i + 1) for interleaved.
    /// </summary>
    public static void RotateHeads(Span<float> x, int heads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, RopeStyle style)
    {
        int pairs = cos.Length;
        for (int h = 0; h < heads; h++)
        {
            var v = x.Slice(h * headDim, headDim);
            for (int i = 0; i < pairs; i++)
            {
                int a = style == RopeStyle.RotateHalf ? i : 2 * i;
                int b = style == RopeStyle.RotateHalf ? i + pairs : 2 * i + 1;
                float x1 = v[a], x2 = v[b];
                v[a] = x1 * cos[i] - x2 * sin[i];
                v[b] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

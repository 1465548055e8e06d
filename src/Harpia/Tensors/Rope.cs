namespace Harpia.Tensors;

/// <summary>
/// Rotary position embedding in the GPT-NeoX layout Falcon uses: the head vector is split in halves
/// (x₁ = x[0..d/2), x₂ = x[d/2..d)) and pair i is rotated by angle p·θ^(−2i/d):
/// out₁ = x₁cos − x₂sin, out₂ = x₂cos + x₁sin (Hugging Face's <c>rotate_half</c>).
/// </summary>
public static class Rope
{
    /// <summary>The d/2 inverse frequencies θ^(−2i/d), in f64.</summary>
    public static double[] InverseFrequencies(int headDim, double theta)
    {
        var invFreq = new double[headDim / 2];
        for (int i = 0; i < invFreq.Length; i++) invFreq[i] = Math.Pow(theta, -2.0 * i / headDim);
        return invFreq;
    }

    /// <summary>Fills cos/sin tables (d/2 each) for one position; angles computed in f64.</summary>
    public static void Table(int position, ReadOnlySpan<double> invFreq, Span<float> cos, Span<float> sin)
    {
        for (int i = 0; i < invFreq.Length; i++)
        {
            double angle = position * invFreq[i];
            cos[i] = (float)Math.Cos(angle);
            sin[i] = (float)Math.Sin(angle);
        }
    }

    public static void Table(int position, int headDim, double theta, Span<float> cos, Span<float> sin) =>
        Table(position, InverseFrequencies(headDim, theta), cos, sin);

    /// <summary>Rotates <paramref name="heads"/> consecutive head vectors of <paramref name="headDim"/> in place.</summary>
    public static void Apply(Span<float> x, int heads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            var v = x.Slice(h * headDim, headDim);
            for (int i = 0; i < half; i++)
            {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * cos[i] - x2 * sin[i];
                v[i + half] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

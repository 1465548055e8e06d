using Harpia.Tensors;

namespace Harpia.Tests.Models;

[Trait("Category", "Simd")]
public class KernelTests
{
    [Theory]
    [InlineData(0.0, 0.0)]
    [InlineData(0.1, 0.1124629160182849)]
    [InlineData(0.5, 0.5204998778130465)]
    [InlineData(1.0, 0.8427007929497149)]
    [InlineData(2.0, 0.9953222650189527)]
    [InlineData(2.4999, 0.9995928300996666)]
    [InlineData(2.5, 0.9995930479825550)]
    [InlineData(3.0, 0.9999779095030014)]
    [InlineData(4.0, 0.9999999845827421)]
    [InlineData(-1.5, -0.9661051464753108)]
    [InlineData(7.0, 1.0)]
    public void ErfIsAccurateToBetterThan1e12(double x, double expected)
    {
        const double tolerance = 1e-13;
        Assert.Equal(expected, Activations.Erf(x), tolerance);
    }

    [Fact]
    public void GeluIsTheErfFormNotTheTanhApproximation()
    {
        float[] x = [-3f, -1f, 0f, 0.5f, 1f, 3f];
        Activations.GeluExact(x);
        // torch.nn.functional.gelu(torch.tensor([...], dtype=torch.float64))
        double[] expected = [-0.0040496985, -0.1586552539, 0.0, 0.3457312306, 0.8413447461, 2.9959503015];
        for (int i = 0; i < x.Length; i++) Assert.Equal(expected[i], x[i], 1e-6);
    }

    [SkippableTheory]
    [InlineData(Harpia.Quantization.SimdPath.Vector512)]
    [InlineData(Harpia.Quantization.SimdPath.Vector256)]
    [InlineData(Harpia.Quantization.SimdPath.Scalar)]
    public void VectorizedGeluMatchesTheFloat64ErfFormEverywhere(Harpia.Quantization.SimdPath path)
    {
        // Each path over a dense sweep, against float64 erf: the float approximation must stay within a few float
        // ulps of GELU's magnitude. 20,011 = 1,250 · 16 + 8 + 3: on the Vector512 path the 512-bit body, the
        // 256-bit loop (one step) and the scalar tail all run.
        Skip.IfNot(Harpia.Quantization.SimdPaths.IsSupported(path), $"{path} cannot run on this CPU");
        var x = Enumerable.Range(0, 20_011).Select(i => -10f + i * 0.001f).ToArray();
        var y = (float[])x.Clone();
        Activations.GeluExact(y, path);
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double exact = 0.5 * x[i] * (1 + Activations.Erf(x[i] / Math.Sqrt(2)));
            worst = Math.Max(worst, Math.Abs(y[i] - exact) / Math.Max(1.0, Math.Abs(exact)));
            Assert.Equal(Activations.GeluScalar(x[i]), y[i], 1e-6f);
        }
        Assert.True(worst < 5e-7, $"worst error {worst:E2}");
        Assert.True(float.IsNaN(Activations.GeluScalar(float.NaN)));
    }

    readonly struct ArrayHead(float[][] keys, float[][] values) : Attention.IHeadVectors
    {
        public ReadOnlySpan<float> Key(int position) => keys[position];
        public ReadOnlySpan<float> Value(int position) => values[position];
    }

    [Theory]
    [InlineData(64, 1)]
    [InlineData(64, 37)]
    [InlineData(32, 37)]   // the general path
    public void AttentionOverAHeadMatchesTheFloat64Reference(int dim, int count)
    {
        var random = new Random(dim * 1000 + count);
        float[] Vec() => Enumerable.Range(0, dim).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var q = Vec();
        var keys = Enumerable.Range(0, count).Select(_ => Vec()).ToArray();
        var values = Enumerable.Range(0, count).Select(_ => Vec()).ToArray();
        float scale = 1f / MathF.Sqrt(dim);
        var output = new float[dim];
        Attention.AttendOneHead(q, count, scale, new ArrayHead(keys, values), new float[count], output);

        var logits = keys.Select(k => k.Select((v, i) => (double)v * q[i]).Sum() * scale).ToArray();
        double max = logits.Max();
        var weights = logits.Select(l => Math.Exp(l - max)).ToArray();
        double total = weights.Sum();
        for (int d = 0; d < dim; d++)
        {
            double expected = 0;
            for (int j = 0; j < count; j++) expected += weights[j] / total * values[j][d];
            Assert.Equal(expected, output[d], 1e-5);
        }
    }

    [Fact]
    public void LayerNormMatchesTheFloat64Reference()
    {
        var random = new Random(7);
        int dim = 333;
        var x = Enumerable.Range(0, 2 * dim).Select(_ => (float)(random.NextDouble() * 6 - 2)).ToArray();
        var w = Enumerable.Range(0, dim).Select(_ => (float)random.NextDouble() + 0.5f).ToArray();
        var b = Enumerable.Range(0, dim).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        var y = new float[2 * dim];
        var expected = new float[dim];
        Norms.LayerNorm(x, y, 2, dim, w, b, 1e-5f);
        for (int r = 0; r < 2; r++)
        {
            Norms.LayerNormReference(x.AsSpan(r * dim, dim), expected, w, b, 1e-5f);
            for (int i = 0; i < dim; i++) Assert.Equal(expected[i], y[r * dim + i], 1e-5);
        }
    }

    [Fact]
    public void RopeRotatesHalvesAndPreservesNorm()
    {
        int d = 8;
        var cos = new float[d / 2];
        var sin = new float[d / 2];
        Rope.Table(0, d, 10000, cos, sin);
        float[] v = [1, 2, 3, 4, 5, 6, 7, 8];
        var copy = (float[])v.Clone();
        Rope.Apply(v, 1, d, cos, sin);
        Assert.Equal(copy, v); // position 0 is the identity
        Rope.Table(3, d, 10000, cos, sin);
        Rope.Apply(v, 1, d, cos, sin);
        // pair 0 turns by 3 radians: (x0, x4) = (1, 5)
        Assert.Equal(1 * Math.Cos(3) - 5 * Math.Sin(3), v[0], 1e-5);
        Assert.Equal(5 * Math.Cos(3) + 1 * Math.Sin(3), v[4], 1e-5);
        // pair 1 turns by 3 · 10000^(−2/8)
        double a = 3 * Math.Pow(10000, -0.25);
        Assert.Equal(2 * Math.Cos(a) - 6 * Math.Sin(a), v[1], 1e-5);
        Assert.Equal(copy.Sum(x => x * x), v.Sum(x => x * x), 1e-3);
    }

    [Fact]
    public void SoftmaxIsStableForLargeScores()
    {
        float[] x = [1000f, 1001f, 999f];
        Attention.Softmax(x);
        Assert.Equal(1.0, x.Sum(), 1e-6);
        Assert.Equal(Math.Exp(1) / (1 + Math.E + Math.Exp(-1) * 1), x[1], 1e-3);
        Assert.All(x, v => Assert.True(float.IsFinite(v)));
    }
}

using Harpia.Tensors;

namespace Harpia.Tests.Tensors;

[Trait("Category", "Simd")]
public unsafe class MatMulTests
{
    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void FloatMatMulMatchesNaiveProduct(GgmlType type)
    {
        const int rows = 37, cols = 64, n = 3;
        var rng = new Random(1);
        // Values exactly representable in bf16 and f16 so every type must give the same exact answer.
        float[] wf = Enumerable.Range(0, rows * cols).Select(_ => (float)rng.Next(-8, 9) / 4).ToArray();
        float[] x = Enumerable.Range(0, n * cols).Select(_ => (float)rng.Next(-8, 9) / 8).ToArray();
        byte[] bytes = type switch
        {
            GgmlType.F32 => wf.SelectMany(BitConverter.GetBytes).ToArray(),
            GgmlType.F16 => wf.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray(),
            _ => wf.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >> 16))).ToArray(),
        };
        var y = new float[n * rows];
        fixed (byte* p = bytes)
            MatMul.Compute(new WeightMatrix("w", type, rows, cols, p, null), x, n, y);
        for (int i = 0; i < n; i++)
            for (int r = 0; r < rows; r++)
            {
                float expect = 0;
                for (int c = 0; c < cols; c++) expect += wf[r * cols + c] * x[i * cols + c];
                Assert.Equal(expect, y[i * rows + r], 4);
            }
    }

    [Fact]
    public void RowsNotAWholeNumberOfBlocksAreRefused()
    {
        var ex = Assert.Throws<HarpiaException>(() => new WeightMatrix("blk.0.attn", GgmlType.Q4_K, 4, 100, null, null));
        Assert.Contains("blk.0.attn", ex.Message);
    }
}

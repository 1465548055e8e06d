using Harpia.Quantization;
using Harpia.Tensors;
using Harpia.Tests.Quantization;

namespace Harpia.Tests.Tensors;

[Trait("Category", "Simd")]
public unsafe class QuantMatMulTests
{
    public static IEnumerable<object[]> Cases() =>
        from t in QuantFormats.Supported
        from n in new[] { 1, 3, 11 }
        select new object[] { t, n };

    /// <summary>
    /// MatMul on quantized weights equals the dequantized weights times x, up to the 8-bit activation rounding
    /// (≤ half a step of 1/127 of each block's max per term), for decode (n = 1) and prefill (n &gt; 1) with row
    /// counts that do not divide the prefill tile or the thread count.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDequantizedProduct(GgmlType type, int n)
    {
        const int rows = 37, cols = 512;
        var wf = QuantTestData.Weights(rows * cols, 21);
        var w = QuantTestData.Quantize(type, wf);
        var wd = QuantTestData.Dequantize(type, w, rows * cols);
        var x = QuantTestData.Weights(n * cols, 22, 1f);
        var y = new float[n * rows];
        fixed (byte* p = w)
            MatMul.Compute(new WeightMatrix("blk.0.test", type, rows, cols, p, null), x, n, y);
        for (int i = 0; i < n; i++)
            for (int r = 0; r < rows; r++)
            {
                double expect = 0, abs = 0, xmax = 0;
                for (int c = 0; c < cols; c++)
                {
                    expect += (double)wd[r * cols + c] * x[i * cols + c];
                    abs += Math.Abs((double)wd[r * cols + c]);
                    xmax = Math.Max(xmax, Math.Abs(x[i * cols + c]));
                }
                double tol = abs * xmax / 127 * 0.5 * 0.25 + 1e-5;   // random rounding errors cancel; 1/4 of worst case
                Assert.True(Math.Abs(y[i * rows + r] - expect) <= tol, $"{type} n={n} [{i},{r}]: {y[i * rows + r]} vs {expect} (tol {tol})");
            }
    }

    /// <summary>
    /// A Q8_0, Q4_K, Q5_K or Q6_K matrix repacked at load (eight interleaved rows; AVX-VNNI or its exact AVX2
    /// emulation) gives the products of the row-major kernels, for decode and prefill (groups of four activation rows
    /// and the rest), with a row count that leaves a partial last tile; the fp16 scale conversion (subnormal scales
    /// included) matches the scalar one. The expected side runs on the scalar path, so it never uses tiles.
    /// </summary>
    [SkippableTheory]
    [InlineData(GgmlType.Q8_0, 1)]
    [InlineData(GgmlType.Q8_0, 6)]
    [InlineData(GgmlType.Q4_K, 1)]
    [InlineData(GgmlType.Q4_K, 6)]
    [InlineData(GgmlType.Q4_K, 9)]
    [InlineData(GgmlType.Q5_K, 1)]
    [InlineData(GgmlType.Q5_K, 6)]
    [InlineData(GgmlType.Q5_K, 9)]
    [InlineData(GgmlType.Q6_K, 1)]
    [InlineData(GgmlType.Q6_K, 6)]
    [InlineData(GgmlType.Q6_K, 9)]
    public void RepackedMatricesMatchTheRowMajorKernels(GgmlType type, int n)
    {
        Skip.IfNot(Q8_0Tiled.IsSupported, "the tiled kernels need AVX2 and FMA, which this CPU lacks");
        Skip.If(SimdPaths.Active is SimdPath.Scalar or SimdPath.Vector128, $"HARPIA_SIMD={SimdPaths.Active}: the tiled kernels run on the 256/512-bit paths only");
        const int rows = 37, cols = 768;
        var wf = QuantTestData.Weights(rows * cols, 41);
        for (int i = 0; i < cols; i++) wf[i] *= 1e-3f;  // row 0: fp16 scales below 6.1e-5 are subnormal
        var w = QuantTestData.Quantize(type, wf);
        var x = QuantTestData.Weights(n * cols, 42, 1f);
        var expected = new float[n * rows];
        var actual = new float[n * rows];
        fixed (byte* p = w)
        {
            SimdPaths.Forced = SimdPath.Scalar;
            try { MatMul.Compute(new WeightMatrix("w", type, rows, cols, p, null), x, n, expected); }
            finally { SimdPaths.Forced = SimdPath.Auto; }
            var packed = new WeightMatrix("w", type, rows, cols, p, null);
            using var repacked = RepackedWeights.Create(type, p, rows, cols, releaseSource: false);
            packed.Repacked = repacked;
            MatMul.Compute(packed, x, n, actual);
        }
        float scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * scale + 1e-4f * Math.Abs(expected[i]), $"[{i}] {actual[i]} vs {expected[i]}");
        Assert.NotEqual(0f, expected[0]);
    }

    /// <summary>
    /// The tiled k-quant kernels, called directly so they run wherever AVX2 does (with the AVX2 form of vpdpbusd
    /// where AVX-VNNI is missing): packed tiles of a matrix whose row count leaves a partial last tile, against the
    /// row-major kernels, for one activation row, groups of four, and the scalar reference of the layout.
    /// </summary>
    [SkippableTheory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    public void TiledKQuantKernelsMatchTheRowMajorKernels(GgmlType type)
    {
        Skip.IfNot(Q4_KTiled.IsSupported, "the tiled kernels need AVX2 and FMA, which this CPU lacks");
        const int rows = 37, cols = 768, n = 5, nsb = cols / 256;
        var wf = QuantTestData.Weights(rows * cols, 43);
        for (int i = 0; i < cols; i++) wf[i] *= 1e-3f;  // row 0: fp16 scales below 6.1e-5 are subnormal
        var w = QuantTestData.Quantize(type, wf);
        var x = QuantTestData.Weights(n * cols, 44, 1f);
        var expected = new float[n * rows];
        var four = new float[n * rows];
        var one = new float[n * rows];
        var scalar = new float[n * rows];
        var xk = new BlockQ8_K[n * nsb];
        fixed (byte* p = w)
        fixed (float* px = x)
        fixed (BlockQ8_K* pk = xk)
        fixed (float* p4 = four, p1 = one, ps = scalar)
        {
            MatMul.Compute(new WeightMatrix("w", type, rows, cols, p, null), x, n, expected);
            for (int i = 0; i < n; i++) Q8_K.Quantize(px + i * cols, pk + i * nsb, nsb);
            using var packed = RepackedWeights.Create(type, p, rows, cols, releaseSource: false);
            for (int t = 0; t < packed.Tiles; t++)
            {
                int r0 = t * 8, valid = Math.Min(8, rows - r0);
                byte* tile = packed.Tile(t);
                switch (type)
                {
                    case GgmlType.Q4_K: Q4_KTiled.Multiply4(tile, nsb, pk, nsb, p4 + r0, rows, valid); break;
                    case GgmlType.Q5_K: Q5_KTiled.Multiply4(tile, nsb, pk, nsb, p4 + r0, rows, valid); break;
                    default: Q6_KTiled.Multiply4(tile, nsb, pk, nsb, p4 + r0, rows, valid); break;
                }
                for (int i = 0; i < n; i++)
                {
                    BlockQ8_K* xi = pk + i * nsb;
                    long o = (long)i * rows + r0;
                    switch (type)
                    {
                        case GgmlType.Q4_K: Q4_KTiled.Multiply1(tile, nsb, xi, p1 + o, valid); break;
                        case GgmlType.Q5_K: Q5_KTiled.Multiply1(tile, nsb, xi, p1 + o, valid); Q5_KTiled.Multiply1Scalar(tile, nsb, xi, ps + o, valid); break;
                        default: Q6_KTiled.Multiply1(tile, nsb, xi, p1 + o, valid); Q6_KTiled.Multiply1Scalar(tile, nsb, xi, ps + o, valid); break;
                    }
                }
            }
        }
        if (type == GgmlType.Q4_K) scalar = expected;   // its scalar reference is the row-major one
        float scale = expected.Max(Math.Abs);
        for (int i = 0; i < n * rows; i++)
        {
            float tol = 1e-5f * scale + 1e-4f * Math.Abs(expected[i]);
            Assert.True(Math.Abs(expected[i] - one[i]) <= tol, $"{type} one [{i}] {one[i]} vs {expected[i]}");
            Assert.True(Math.Abs(expected[i] - scalar[i]) <= tol, $"{type} scalar [{i}] {scalar[i]} vs {expected[i]}");
            if (i / rows < 4) Assert.True(Math.Abs(expected[i] - four[i]) <= tol, $"{type} four [{i}] {four[i]} vs {expected[i]}");
        }
        Assert.NotEqual(0f, expected[0]);
    }

    /// <summary>Prefill over long rows (FFN-down widths: a decoded tile larger than L1) against decode of each row.</summary>
    [Theory]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.Q3_K)]
    public void PrefillOverLongRowsEqualsDecode(GgmlType type)
    {
        const int rows = 9, n = 6;
        const int cols = 8192 + 512;
        var w = QuantTestData.Quantize(type, QuantTestData.Weights(rows * cols, 51));
        var x = QuantTestData.Weights(n * cols, 52, 1f);
        var prefill = new float[n * rows];
        var decode = new float[rows];
        fixed (byte* p = w)
        {
            var m = new WeightMatrix("w", type, rows, cols, p, null);
            MatMul.Compute(m, x, n, prefill);
            for (int i = 0; i < n; i++)
            {
                MatMul.Compute(m, x.AsSpan(i * cols, cols), 1, decode);
                for (int r = 0; r < rows; r++)
                    Assert.True(Math.Abs(prefill[i * rows + r] - decode[r]) <= 1e-4f * (1 + Math.Abs(decode[r])), $"{type} [{i},{r}] {prefill[i * rows + r]} vs {decode[r]}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(QuantTestData.TypeCases), MemberType = typeof(QuantTestData))]
    public void PrefillRowsEqualDecodeOfEachRowOnEveryPath(GgmlType type)
    {
        const int rows = 19, cols = 768, n = 4;
        var w = QuantTestData.Quantize(type, QuantTestData.Weights(rows * cols, 31));
        var x = QuantTestData.Weights(n * cols, 32, 1f);
        fixed (byte* p = w)
        {
            var m = new WeightMatrix("w", type, rows, cols, p, null);
            var prefill = new float[n * rows];
            MatMul.Compute(m, x, n, prefill);
            foreach (var path in new[] { SimdPath.Scalar, SimdPath.Vector128, SimdPath.Vector256, SimdPath.Vector512 }.Where(SimdPaths.IsSupported))
            {
                SimdPaths.Forced = path;
                try
                {
                    // Prefill on the forced path as well: the same products as prefill on the default path.
                    var forcedPrefill = new float[n * rows];
                    MatMul.Compute(m, x, n, forcedPrefill);
                    for (int k = 0; k < prefill.Length; k++)
                        Assert.True(MathF.Abs(prefill[k] - forcedPrefill[k]) <= 1e-5f * (1 + MathF.Abs(prefill[k])), $"{type} {path} prefill [{k}]: {forcedPrefill[k]} vs {prefill[k]}");
                    for (int i = 0; i < n; i++)
                    {
                        var one = new float[rows];
                        MatMul.Compute(m, x.AsSpan(i * cols, cols), 1, one);
                        for (int r = 0; r < rows; r++)
                        {
                            float a = prefill[i * rows + r], b = one[r];
                            Assert.True(MathF.Abs(a - b) <= 1e-5f * (1 + MathF.Abs(a)), $"{type} {path} [{i},{r}]: prefill {a} decode {b}");
                        }
                    }
                }
                finally { SimdPaths.Forced = SimdPath.Auto; }
            }
        }
    }

    [Fact]
    public void DequantizeRowDecodesQuantizedRows()
    {
        const int rows = 3, cols = 256;
        var wf = QuantTestData.Weights(rows * cols, 41);
        var w = QuantTestData.Quantize(GgmlType.Q4_K, wf);
        var all = QuantTestData.Dequantize(GgmlType.Q4_K, w, rows * cols);
        var row = new float[cols];
        fixed (byte* p = w)
            MatMul.DequantizeRow(new WeightMatrix("w", GgmlType.Q4_K, rows, cols, p, null), 2, row);
        Assert.Equal(all.AsSpan(2 * cols, cols).ToArray(), row);
    }

    [Fact]
    public void UnsupportedTypeIsAClearError()
    {
        var ex = Assert.Throws<HarpiaException>(() =>
        {
            var w = new WeightMatrix("blk.3.ffn_up.weight", GgmlType.IQ4_XS, 1, 256, null, null);
            MatMul.Compute(w, new float[256], 1, new float[1]);
        });
        Assert.Contains("blk.3.ffn_up.weight", ex.Message);
        Assert.Contains("IQ4_XS", ex.Message);
    }

    [Theory]
    [InlineData(GgmlType.BF16, 1)]
    [InlineData(GgmlType.BF16, 5)]
    [InlineData(GgmlType.F16, 1)]
    [InlineData(GgmlType.F32, 1)]
    public void FloatDecodeMatchesNaiveProductOnOddLengths(GgmlType type, int n)
    {
        const int rows = 9, cols = 203;   // not a multiple of any vector width: exercises the tails
        var rng = new Random(5);
        float[] wf = Enumerable.Range(0, rows * cols).Select(_ => (float)rng.Next(-8, 9) / 4).ToArray();
        float[] x = Enumerable.Range(0, n * cols).Select(_ => (float)rng.Next(-8, 9) / 8).ToArray();
        byte[] bytes = type switch
        {
            GgmlType.F32 => wf.SelectMany(BitConverter.GetBytes).ToArray(),
            GgmlType.F16 => wf.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray(),
            _ => wf.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >> 16))).ToArray(),
        };
        // Every SIMD path (the bf16 decode has a 512-, 256- and 128-bit loop, each chosen by the path).
        foreach (var path in new[] { SimdPath.Auto, SimdPath.Scalar, SimdPath.Vector128, SimdPath.Vector256, SimdPath.Vector512 }.Where(SimdPaths.IsSupported))
        {
            var y = new float[n * rows];
            SimdPaths.Forced = path;
            try
            {
                fixed (byte* p = bytes)
                    MatMul.Compute(new WeightMatrix("w", type, rows, cols, p, null), x, n, y);
            }
            finally { SimdPaths.Forced = SimdPath.Auto; }
            for (int i = 0; i < n; i++)
                for (int r = 0; r < rows; r++)
                {
                    float expect = 0;
                    for (int c = 0; c < cols; c++) expect += wf[r * cols + c] * x[i * cols + c];
                    Assert.Equal(expect, y[i * rows + r], 4);
                }
        }
    }
}

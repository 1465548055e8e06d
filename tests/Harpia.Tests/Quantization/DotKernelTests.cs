using Harpia.Quantization;
using Harpia.Tensors;
using Xunit.Abstractions;
using static Harpia.Tests.Quantization.QuantTestData;

namespace Harpia.Tests.Quantization;

/// <summary>
/// Every SIMD path of the integer dot kernels against the scalar path and against a float reference. Vector512,
/// Vector256 and the x86 form of Vector128 run here; the Arm NEON branches (AdvSimd/Dp) compile but need an Arm
/// machine to execute.
/// </summary>
[Trait("Category", "Simd")]
public unsafe class DotKernelTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> PathCases() =>
        from t in QuantFormats.Supported
        from p in new[] { SimdPath.Vector128, SimdPath.Vector256, SimdPath.Vector512 }
        select new object[] { t, p };

    private static float RowDot(GgmlType type, byte[] w, int cols, float[] x, SimdPath path)
    {
        fixed (byte* pw = w)
        fixed (float* px = x)
        {
            if (QuantFormats.ActivationFor(type) == ActivationFormat.Q8_K)
            {
                var xk = new BlockQ8_K[cols / 256];
                fixed (BlockQ8_K* pk = xk)
                {
                    Q8_K.Quantize(px, pk, cols / 256);
                    return QuantFormats.DotRowK(type, pw, cols / 256, pk, path);
                }
            }
            var xq = new sbyte[cols];
            var xd = new float[cols / 32];
            fixed (sbyte* pq = xq)
            fixed (float* pd = xd)
            {
                Q8Activations.Quantize(px, cols, pq, pd);
                return QuantFormats.DotRowQ8(type, pw, cols / 32, pq, pd, path);
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(PathCases))]
    public void SimdPathAgreesWithScalar(GgmlType type, SimdPath path)
    {
        Skip.IfNot(SimdPaths.IsSupported(path), $"{path} kernels cannot run on this CPU");
        const int cols = 2560;   // 10 super-blocks, 80 blocks: exercises the odd-block tail of Vector512 too... for Q8
        var w = Quantize(type, Weights(cols, 5));
        for (int seed = 0; seed < 4; seed++)
        {
            var x = Weights(cols, 100 + seed, 1f);
            float scalar = RowDot(type, w, cols, x, SimdPath.Scalar);
            float simd = RowDot(type, w, cols, x, path);
            // Integer sums are exact on every path. The 256/128-bit k-quant paths combine them in the scalar order
            // (bit for bit); the fused AVX-512 Q4_K/Q5_K/Q6_K decode kernels keep per-lane f32 sums across
            // super-blocks instead of a horizontal sum per super-block, so they agree to f32 rounding.
            bool fused512 = path == SimdPath.Vector512 && type is GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;
            if (QuantFormats.ActivationFor(type) == ActivationFormat.Q8_K && !fused512)
                Assert.Equal(scalar, simd);
            else
                Assert.True(MathF.Abs(scalar - simd) <= 1e-5f * (1 + MathF.Abs(scalar)), $"{scalar} vs {simd}");
        }
    }

    [Theory]
    [MemberData(nameof(TypeCases), MemberType = typeof(QuantTestData))]
    public void ScalarDotMatchesDequantizedReference(GgmlType type)
    {
        const int cols = 1024;
        var wf = Weights(cols, 9);
        var w = Quantize(type, wf);
        var x = Weights(cols, 10, 1f);
        double reference = QuantFormats.ReferenceDot(type, w, cols, x);
        double absSum = 0;
        var wd = Dequantize(type, w, cols);
        for (int i = 0; i < cols; i++) absSum += Math.Abs(wd[i] * x[i]);
        float got = RowDot(type, w, cols, x, SimdPath.Scalar);
        output.WriteLine($"{type}: dot {got} reference {reference:G7} |diff|/Σ|wx| {Math.Abs(got - reference) / absSum:E2}");
        // The only difference is the 8-bit activation quantization: ≤ half a step of 1/127 per term.
        Assert.True(Math.Abs(got - reference) <= absSum / 127 * 0.5 + 1e-6, $"{got} vs {reference}");
    }

    [SkippableFact]
    public void Q8_0FiveTwelveBitKernelAgreesWithScalarWhenVnniIsPreferredElsewhere()
    {
        // On AVX-VNNI machines the Vector512 path hands Q8_0 to the 256-bit kernel; exercise the 512-bit one too,
        // called directly (no process-wide switch is flipped, so parallel tests see nothing).
        Skip.IfNot(SimdPaths.IsSupported(SimdPath.Vector512), "Vector512 kernels cannot run on this CPU");
        const int cols = 32 * 37;   // odd block count: the 256-bit tail runs as well
        var w = Quantize(GgmlType.Q8_0, Weights(cols, 15));
        var x = Weights(cols, 16, 1f);
        float scalar = RowDot(GgmlType.Q8_0, w, cols, x, SimdPath.Scalar);
        var xq = new sbyte[cols];
        var xd = new float[cols / 32];
        float v512;
        fixed (byte* pw = w)
        fixed (float* px = x, pd = xd)
        fixed (sbyte* pq = xq)
        {
            Q8Activations.Quantize(px, cols, pq, pd);
            v512 = Q8_0.Dot512((BlockQ8_0*)pw, pq, pd, cols / 32);
        }
        Assert.True(MathF.Abs(scalar - v512) <= 1e-5f * (1 + MathF.Abs(scalar)), $"{scalar} vs {v512}");
    }

    [Fact]
    public void Q8_0NegativeExtremesAreHandled()
    {
        // −128 is a legal int8 in a Q8_0 file even though ggml's quantizer never writes it; |−128| must not overflow.
        var w = new byte[BlockQ8_0.Bytes * 2];
        BitConverter.TryWriteBytes(w.AsSpan(0, 2), BitConverter.HalfToUInt16Bits((Half)1f));
        BitConverter.TryWriteBytes(w.AsSpan(34, 2), BitConverter.HalfToUInt16Bits((Half)0.5f));
        for (int j = 0; j < 32; j++) { w[2 + j] = 0x80; w[36 + j] = (byte)(sbyte)(j - 16); }
        var x = Enumerable.Range(0, 64).Select(i => (float)((i % 7) - 3)).ToArray();
        float scalar = RowDot(GgmlType.Q8_0, w, 64, x, SimdPath.Scalar);
        foreach (var p in new[] { SimdPath.Vector128, SimdPath.Vector256, SimdPath.Vector512 }.Where(SimdPaths.IsSupported))
        {
            float got = RowDot(GgmlType.Q8_0, w, 64, x, p);
            Assert.True(MathF.Abs(got - scalar) <= 1e-6f * MathF.Abs(scalar), $"{p}: {got} vs {scalar}");
        }
    }
}

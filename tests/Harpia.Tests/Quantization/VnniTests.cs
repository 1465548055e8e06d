using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Tests.Quantization;

/// <summary>
/// The AVX2 / AVX-512BW emulation of vpdpbusd and vpdpwssd (<see cref="Vnni"/>) against a scalar model of the
/// instructions on every lane, extremes included, and against the instructions themselves where the CPU has them;
/// then the Q8_0 tile kernel (the one whose biased activations need the general emulation) against the scalar dot.
/// </summary>
[Trait("Category", "Simd")]
public unsafe class VnniTests
{
    /// <summary>Lane inputs: random, plus the extremes where a narrower form would saturate or wrap.</summary>
    private static (uint[] acc, uint[] u, uint[] s) Inputs(int seed, int lanes)
    {
        var rng = new Random(seed);
        var acc = new uint[lanes];
        var u = new uint[lanes];
        var s = new uint[lanes];
        for (int i = 0; i < lanes; i++) { acc[i] = (uint)rng.NextInt64(); u[i] = (uint)rng.NextInt64(); s[i] = (uint)rng.NextInt64(); }
        u[0] = 0xFFFFFFFF; s[0] = 0x80808080;            // 4 · 255 · −128: every pair leaves int16
        u[1] = 0xFFFFFFFF; s[1] = 0x7F7F7F7F;            // 4 · 255 · 127
        acc[2] = int.MaxValue; u[2] = 0xFFFFFFFF; s[2] = 0x7F7F7F7F;   // the int32 sum wraps
        acc[3] = unchecked((uint)int.MinValue); u[3] = 0xFFFFFFFF; s[3] = 0x80808080;
        u[4] = 0x00FF00FF; s[4] = 0x7F807F80;            // mixed signs in one lane
        return (acc, u, s);
    }

    [SkippableFact]
    public void EmulatedDotBytesEqualsTheScalarModelOnEveryLane()
    {
        Skip.IfNot(Avx2.IsSupported, "the vpdpbusd emulation is AVX2 code and this CPU has no AVX2");
        for (int seed = 0; seed < 64; seed++)
        {
            var (acc, u, s) = Inputs(seed, 8);
            fixed (uint* pa = acc, pu = u, ps = s)
            {
                var got = Vnni.DotBytesEmulated(Vector256.Load((int*)pa), Vector256.Load((byte*)pu), Vector256.Load((sbyte*)ps));
                for (int i = 0; i < 8; i++)
                    Assert.Equal(Vnni.DotBytesScalar((int)acc[i], u[i], s[i]), got.GetElement(i));
            }
        }
    }

    [SkippableFact]
    public void EmulatedDotBytes512EqualsTheScalarModelOnEveryLane()
    {
        Skip.IfNot(Avx512BW.IsSupported, "the 512-bit vpdpbusd emulation needs AVX-512BW, which this CPU lacks");
        for (int seed = 0; seed < 32; seed++)
        {
            var (acc, u, s) = Inputs(seed, 16);
            fixed (uint* pa = acc, pu = u, ps = s)
            {
                var got = Vnni.DotBytesEmulated(Vector512.Load((int*)pa), Vector512.Load((byte*)pu), Vector512.Load((sbyte*)ps));
                for (int i = 0; i < 16; i++)
                    Assert.Equal(Vnni.DotBytesScalar((int)acc[i], u[i], s[i]), got.GetElement(i));
            }
        }
    }

    [SkippableFact]
    public void EmulationEqualsTheAvxVnniInstructions()
    {
        Skip.IfNot(AvxVnni.IsSupported, "no AVX-VNNI on this CPU: the emulation is checked against the scalar model only");
        for (int seed = 0; seed < 64; seed++)
        {
            var (acc, u, s) = Inputs(seed, 8);
            fixed (uint* pa = acc, pu = u, ps = s)
            {
                var a = Vector256.Load((int*)pa);
                Assert.Equal(AvxVnni.MultiplyWideningAndAdd(a, Vector256.Load((byte*)pu), Vector256.Load((sbyte*)ps)),
                    Vnni.DotBytesEmulated(a, Vector256.Load((byte*)pu), Vector256.Load((sbyte*)ps)));
                var x = Vector256.Load((short*)pu);
                var y = Vector256.Load((short*)ps);
                Assert.Equal(AvxVnni.MultiplyWideningAndAdd(a, x, y), a + Avx2.MultiplyAddAdjacent(x, y));
            }
        }
        // vpdpwssd's one overflow (−32768 · −32768 twice) wraps the same way in vpmaddwd.
        var min = Vector256.Create(short.MinValue);
        Assert.Equal(AvxVnni.MultiplyWideningAndAdd(Vector256.Create(5), min, min), Vector256.Create(5) + Avx2.MultiplyAddAdjacent(min, min));
    }

    [SkippableFact]
    public void TheSmallFormIsExactWithinItsBound()
    {
        Skip.IfNot(Avx2.IsSupported, "the vpdpbusd emulation is AVX2 code and this CPU has no AVX2");
        // |w| ≤ 128 against sign-moved activations in [−127, 127]: the Q8_0 per-row bound.
        var rng = new Random(7);
        var u = new byte[32];
        var s = new sbyte[32];
        for (int k = 0; k < 200; k++)
        {
            for (int i = 0; i < 32; i++) { u[i] = (byte)rng.Next(0, 129); s[i] = (sbyte)rng.Next(-127, 128); }
            if (k == 0) { Array.Fill(u, (byte)128); Array.Fill(s, (sbyte)-127); }
            var uv = Vector256.Create(u);
            var sv = Vector256.Create(s);
            var small = Vnni.DotBytesSmall(Vector256.Create(3), uv, sv);
            Assert.Equal(Vnni.DotBytesEmulated(Vector256.Create(3), uv, sv), small);
        }
    }

    [SkippableTheory]
    [InlineData("", null)]
    [InlineData("none", VnniPath.None)]
    [InlineData("Off", VnniPath.None)]
    [InlineData("emulate", VnniPath.Emulated)]
    public void TheSettingIsParsed(string setting, VnniPath? expected)
    {
        Skip.IfNot(Avx2.IsSupported, "the emulated path needs AVX2");
        Assert.Equal(expected ?? (AvxVnni.IsSupported ? VnniPath.Hardware : VnniPath.None), Vnni.Detect(setting));
    }

    [Fact]
    public void ABadSettingIsAClearError()
    {
        var ex = Assert.Throws<HarpiaException>(() => Vnni.Detect("fast"));
        Assert.Contains("HARPIA_VNNI", ex.Message);
        Assert.Contains("fast", ex.Message);
        if (!AvxVnni.IsSupported) Assert.Contains("no AVX-VNNI", Assert.Throws<HarpiaException>(() => Vnni.Detect("hardware")).Message);
    }

    /// <summary>
    /// The Q8_0 tile kernel called directly (Pack, Multiply4, Multiply1) against the scalar dot of each row, with
    /// −128 weights and extreme activations (the case only the general vpdpbusd form gets right) and a partial tile.
    /// It runs the instructions <see cref="Vnni.Active"/> selects: the CI runs it again with HARPIA_VNNI=emulate.
    /// </summary>
    [SkippableFact]
    public void Q8_0TileKernelsMatchTheScalarDot()
    {
        Skip.IfNot(Q8_0Tiled.IsSupported, "the tiled kernels need AVX2 and FMA, which this CPU lacks");
        const int rows = 7, nb = 5, cols = nb * 32, n = 6;
        var w = QuantTestData.Quantize(GgmlType.Q8_0, QuantTestData.Weights(rows * cols, 61));
        for (int b = 0; b < nb; b++) w[b * BlockQ8_0.Bytes + 2 + b] = 0x80;   // row 0: a −128 in each block
        var x = QuantTestData.Weights(n * cols, 62, 1f);
        for (int j = 0; j < 32; j++) x[j] = j % 2 == 0 ? 1f : -1f;          // row 0: activations ±127
        var xq = new sbyte[n * cols];
        var xu = new byte[n * cols];
        var xd = new float[n * nb];
        var expected = new float[n * rows];
        var four = new float[n * rows];
        var one = new float[n * rows];
        var pack = new byte[Q8_0Tiled.PackedBytes(nb)];
        fixed (byte* pw = w, pu = xu, pp = pack)
        fixed (sbyte* pq = xq)
        fixed (float* px = x, pd = xd, pe = expected, p4 = four, p1 = one)
        {
            for (int i = 0; i < n; i++)
            {
                Q8Activations.Quantize(px + i * cols, cols, pq + i * cols, pd + i * nb);
                for (int r = 0; r < rows; r++)
                    pe[i * rows + r] = Q8_0.DotScalar((BlockQ8_0*)(pw + r * nb * BlockQ8_0.Bytes), pq + i * cols, pd + i * nb, nb);
            }
            Q8_0Tiled.ToUnsigned(pq, pu, n * cols);
            var src = stackalloc BlockQ8_0*[8];
            for (int r = 0; r < rows; r++) src[r] = (BlockQ8_0*)(pw + r * nb * BlockQ8_0.Bytes);
            Q8_0Tiled.Pack(src, rows, nb, pp);
            Q8_0Tiled.Multiply4(pp, nb, pu, cols, pd, p4, rows, rows);
            for (int i = 0; i < n; i++) Q8_0Tiled.Multiply1(pp, nb, pu + i * cols, pd + i * nb, p1 + i * rows, rows);
        }
        float scale = expected.Max(Math.Abs);
        for (int i = 0; i < n * rows; i++)
        {
            float tol = 1e-5f * scale + 1e-5f * Math.Abs(expected[i]);
            Assert.True(Math.Abs(expected[i] - one[i]) <= tol, $"{Vnni.Active} one [{i}] {one[i]} vs {expected[i]}");
            if (i / rows < 4) Assert.True(Math.Abs(expected[i] - four[i]) <= tol, $"{Vnni.Active} four [{i}] {four[i]} vs {expected[i]}");
        }
    }
}

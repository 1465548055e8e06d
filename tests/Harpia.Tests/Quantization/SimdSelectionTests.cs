using System.Runtime.Intrinsics.X86;
using Harpia.Quantization;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>
/// The SIMD matrix of the CI runs the kernel tests once per HARPIA_SIMD / HARPIA_VNNI value: each leg must really run
/// the path it names, not silently the default (an unsupported HARPIA_SIMD would otherwise fall back to the best path).
/// </summary>
[Trait("Category", "Simd")]
public class SimdSelectionTests(ITestOutputHelper output)
{
    [Fact]
    public void TheEnvironmentSelectsThePathsThisRunUses()
    {
        output.WriteLine($"SIMD: {SimdPaths.Describe()}; VNNI: {Vnni.Describe()}");
        if (Environment.GetEnvironmentVariable("HARPIA_SIMD") is { Length: > 0 } simd)
            Assert.Equal(Enum.Parse<SimdPath>(simd, ignoreCase: true), SimdPaths.Best);
        else
            Assert.Equal(new[] { SimdPath.Vector512, SimdPath.Vector256, SimdPath.Vector128, SimdPath.Scalar }.First(SimdPaths.IsSupported), SimdPaths.Best);
        Assert.Equal(Vnni.Detect(Environment.GetEnvironmentVariable("HARPIA_VNNI")), Vnni.Active);
        Assert.Equal(Vnni.Active != VnniPath.None && Avx2.IsSupported, RepackedWeights.Enabled || Environment.GetEnvironmentVariable("HARPIA_REPACK") == "0");
    }
}

using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>Which vector width the integer dot kernels use. Tests force each one in turn.</summary>
public enum SimdPath { Auto = 0, Scalar, Vector128, Vector256, Vector512 }

/// <summary>
/// Picks the widest integer-dot path the CPU runs well, and lets tests force a narrower one
/// (<see cref="Forced"/>) so every path is exercised on one machine.
/// </summary>
public static class SimdPaths
{
    [ThreadStatic] private static SimdPath _forced;

    /// <summary>
    /// Set by tests/benchmarks; <see cref="SimdPath.Auto"/> means "best available". Per calling thread (MatMul reads
    /// it once on the caller and hands it to its workers), so parallel tests cannot disturb each other.
    /// </summary>
    public static SimdPath Forced
    {
        get => _forced;
        set => _forced = value != SimdPath.Auto && !IsSupported(value)
            ? throw new PlatformNotSupportedException($"{value} kernels cannot run on this CPU")
            : value;
    }

    public static SimdPath Best { get; } = Detect();

    public static SimdPath Active => Forced == SimdPath.Auto ? Best : Forced;

    public static bool IsSupported(SimdPath path) => path switch
    {
        SimdPath.Scalar => true,
        SimdPath.Vector128 => Ssse3.IsSupported || AdvSimd.IsSupported,
        SimdPath.Vector256 => Avx2.IsSupported && Fma.IsSupported,
        SimdPath.Vector512 => Avx512BW.IsSupported && Avx512F.IsSupported && Vector512.IsHardwareAccelerated,
        _ => true,
    };

    private static SimdPath Detect()
    {
        if (Environment.GetEnvironmentVariable("HARPIA_SIMD") is { } env && Enum.TryParse(env, true, out SimdPath p)
            && p != SimdPath.Auto && IsSupported(p))
            return p;
        if (IsSupported(SimdPath.Vector512)) return SimdPath.Vector512;
        if (IsSupported(SimdPath.Vector256)) return SimdPath.Vector256;
        if (IsSupported(SimdPath.Vector128)) return SimdPath.Vector128;
        return SimdPath.Scalar;
    }

    /// <summary>A one-line description for benchmark output.</summary>
    public static string Describe() =>
        $"{Active} (AVX-512BW {Avx512BW.IsSupported}, AVX-VNNI {AvxVnni.IsSupported}, AVX2 {Avx2.IsSupported}, " +
        $"NEON {AdvSimd.IsSupported}, NEON-dot {Dp.IsSupported}), VNNI path {Vnni.Active}";
}

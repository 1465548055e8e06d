using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>How the integer dot kernels get vpdpbusd/vpdpwssd (AVX-VNNI).</summary>
public enum VnniPath
{
    /// <summary>The CPU's AVX-VNNI instructions; the tiled kernels and load-time repacking are on.</summary>
    Hardware,
    /// <summary>Exact AVX2 equivalents of the same instructions; the tiled kernels and repacking are on, so a CPU
    /// without AVX-VNNI (Zen 4) runs — and tests compare — exactly the code paths an AVX-VNNI CPU runs.</summary>
    Emulated,
    /// <summary>No tiled kernels and no repacking (what a CPU without AVX-VNNI does by default); the per-row kernels
    /// use their vpmaddubsw/vpmaddwd forms.</summary>
    None,
}

/// <summary>
/// The one place that chooses between AVX-VNNI and its AVX2 equivalents, so every kernel that uses them can run
/// either way on any AVX2 machine. <c>HARPIA_VNNI=hardware|emulate|none</c> selects the path for the process (the CI
/// runs the kernel tests once per path); unset, it is <see cref="VnniPath.Hardware"/> where the CPU has AVX-VNNI
/// and <see cref="VnniPath.None"/> elsewhere. Read once into a static readonly field, so the JIT folds the choice
/// away: the hardware path pays nothing for the option. The emulation is exact (integer sums, wrapping as the
/// instructions wrap), so both paths give bit-identical results; <c>VnniTests</c> checks it against the
/// instructions where the CPU has them and against a scalar model everywhere.
/// </summary>
public static class Vnni
{
    public static VnniPath Active { get; } = Detect(Environment.GetEnvironmentVariable("HARPIA_VNNI"));

    /// <summary>Whether <see cref="DotBytes"/> and friends issue the AVX-VNNI instructions themselves.</summary>
    internal static readonly bool UseHardware = Active == VnniPath.Hardware;

    /// <summary>Whether the tiled (eight-row interleaved) kernels are used and matrices are repacked at load.</summary>
    public static bool Tiles => Active != VnniPath.None && Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Parses a <c>HARPIA_VNNI</c> value (null or empty: pick by CPU).</summary>
    public static VnniPath Detect(string? setting) => setting?.Trim().ToLowerInvariant() switch
    {
        null or "" => AvxVnni.IsSupported ? VnniPath.Hardware : VnniPath.None,
        "hardware" when AvxVnni.IsSupported => VnniPath.Hardware,
        "hardware" => throw new HarpiaException("HARPIA_VNNI=hardware: this CPU has no AVX-VNNI (use emulate or none)"),
        "emulate" or "emulated" when Avx2.IsSupported => VnniPath.Emulated,
        "emulate" or "emulated" => throw new HarpiaException("HARPIA_VNNI=emulate: the emulation needs AVX2, which this CPU lacks"),
        "none" or "off" => VnniPath.None,
        _ => throw new HarpiaException($"HARPIA_VNNI='{setting}' is not one of hardware, emulate, none"),
    };

    /// <summary>
    /// vpdpbusd: acc + Σ of each lane's four u8 × s8 products, for any inputs. Emulated, each 16-bit half of a lane
    /// is split into its even and odd byte, widened to int16 (zero- for u, sign-extended for s), and multiplied
    /// with vpmaddwd, whose int32 pair sums cannot overflow (|u·s| ≤ 255·128).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotBytes(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s) =>
        UseHardware ? AvxVnni.MultiplyWideningAndAdd(acc, u, s) : DotBytesEmulated(acc, u, s);

    /// <summary>
    /// vpdpbusd where each pair of adjacent products is known to fit int16 (|u₀s₀ + u₁s₁| ≤ 32767: e.g. 6-bit
    /// k-quant levels against int8, or |w| ≤ 128 against sign-moved activations ≤ 127): the cheaper
    /// vpmaddubsw + vpmaddwd form, exact under that bound (vpmaddubsw saturates only beyond it).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotBytesSmall(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s) =>
        UseHardware ? AvxVnni.MultiplyWideningAndAdd(acc, u, s)
            : acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));

    /// <summary>vpdpwssd: acc + Σ of each lane's two s16 × s16 products; vpmaddwd + vpaddd wrap exactly as it does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotPairs(Vector256<int> acc, Vector256<short> a, Vector256<short> b) =>
        UseHardware ? AvxVnni.MultiplyWideningAndAdd(acc, a, b) : acc + Avx2.MultiplyAddAdjacent(a, b);

    /// <summary>The AVX2 form of vpdpbusd used by <see cref="DotBytes"/> off the hardware path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotBytesEmulated(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s)
    {
        var u16 = u.AsInt16();
        var s16 = s.AsInt16();
        var uEven = u16 & Vector256.Create((short)0xFF);
        var uOdd = Avx2.ShiftRightLogical(u16, 8);
        var sEven = Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(s16, 8), 8);
        var sOdd = Avx2.ShiftRightArithmetic(s16, 8);
        return acc + Avx2.MultiplyAddAdjacent(uEven, sEven) + Avx2.MultiplyAddAdjacent(uOdd, sOdd);
    }

    /// <summary>The 512-bit (AVX-512BW) form of the same emulation, for kernels that work on 64 bytes at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> DotBytesEmulated(Vector512<int> acc, Vector512<byte> u, Vector512<sbyte> s)
    {
        var u16 = u.AsInt16();
        var s16 = s.AsInt16();
        var uEven = u16 & Vector512.Create((short)0xFF);
        var uOdd = Avx512BW.ShiftRightLogical(u16, 8);
        var sEven = Avx512BW.ShiftRightArithmetic(Avx512BW.ShiftLeftLogical(s16, 8), 8);
        var sOdd = Avx512BW.ShiftRightArithmetic(s16, 8);
        return acc + Avx512BW.MultiplyAddAdjacent(uEven, sEven) + Avx512BW.MultiplyAddAdjacent(uOdd, sOdd);
    }

    /// <summary>Scalar model of vpdpbusd on one int32 lane (the reference the tests hold both forms to).</summary>
    public static int DotBytesScalar(int acc, uint u, uint s)
    {
        int sum = 0;
        for (int i = 0; i < 4; i++) sum += (int)((u >> (8 * i)) & 0xFF) * (sbyte)(s >> (8 * i));
        return unchecked(acc + sum);
    }

    /// <summary>One line for benchmark and test output.</summary>
    public static string Describe() => $"{Active} (AVX-VNNI {AvxVnni.IsSupported}, tiles {Tiles})";
}

using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Quantization;

namespace Harpia.Tests.Backends;

/// <summary>
/// One backend configuration the conformance suite runs: a factory for the backend, and the SIMD path forced on the
/// test thread while it runs (the CPU kernels read <see cref="SimdPaths.Forced"/> on the calling thread).
/// </summary>
/// <param name="Name">The name the theory cases carry ("cpu-mapped-avx2").</param>
/// <param name="Create">A fresh backend; the suite disposes it after each test.</param>
/// <param name="Simd">The CPU vector path to force, or Auto; a path the CPU lacks makes the case skip.</param>
public sealed record ConformanceBackend(string Name, Func<IComputeBackend> Create, SimdPath Simd = SimdPath.Auto)
{
    public override string ToString() => Name;
}

/// <summary>
/// The backends the conformance suite (<see cref="BackendConformanceTests"/>) checks. A new backend joins with one
/// line in <see cref="All"/> (e.g. <c>new("cuda-sim", () => new CudaBackend(simulator: true))</c>) and then passes
/// or fails every op, weight type and shape the suite covers.
/// </summary>
public static class ConformanceBackends
{
    public static IReadOnlyList<ConformanceBackend> All { get; } =
    [
        // What the runtime uses on this machine (repacks where the tiled kernels are in use).
        new("cpu", () => new CpuBackend()),
        // Weights kept in their mapped row-major form / always repacked into tiles, whatever the machine.
        new("cpu-mapped", () => new CpuBackend(repackAtLoad: false)),
        new("cpu-repacked", () => new CpuBackend(repackAtLoad: true)),
        // Each integer-dot vector width on mapped weights (cases the CPU cannot run are skipped).
        new("cpu-mapped-avx512", () => new CpuBackend(repackAtLoad: false), SimdPath.Vector512),
        new("cpu-mapped-avx2", () => new CpuBackend(repackAtLoad: false), SimdPath.Vector256),
        new("cpu-mapped-v128", () => new CpuBackend(repackAtLoad: false), SimdPath.Vector128),
        new("cpu-mapped-scalar", () => new CpuBackend(repackAtLoad: false), SimdPath.Scalar),
        new("cpu-repacked-avx2", () => new CpuBackend(repackAtLoad: true), SimdPath.Vector256),
    ];

    /// <summary>Theory data: one case per backend, by name.</summary>
    public static IEnumerable<object[]> Backends => All.Select(b => new object[] { b.Name });

    /// <summary>Theory data: every backend with each KV-cache element type.</summary>
    public static IEnumerable<object[]> BackendsAndKvTypes =>
        All.SelectMany(b => new[] { KvCacheDtype.F32, KvCacheDtype.F16 }.Select(d => new object[] { b.Name, d }));

    /// <summary>A backend of <see cref="All"/> by name, or "perturbed:Op": the CPU backend with one op made slightly wrong
    /// (<see cref="PerturbedBackend"/>), which the suite must fail.</summary>
    public static ConformanceBackend Get(string name) =>
        name.StartsWith(PerturbedBackend.Prefix, StringComparison.Ordinal)
            ? new(name, () => new PerturbedBackend(new CpuBackend(repackAtLoad: false), name[PerturbedBackend.Prefix.Length..]))
            : All.FirstOrDefault(b => b.Name == name) ?? throw new ArgumentException($"no conformance backend '{name}'");
}

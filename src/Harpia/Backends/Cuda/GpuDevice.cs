using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Harpia.Backends.Cuda;

/// <summary>
/// One accelerator the CUDA backend runs on: an NVIDIA GPU through ILGPU's CUDA runtime, or ILGPU's CPU accelerator
/// configured as an NVIDIA device (warp 32), which runs the very same kernels — with real groups, barriers, shared
/// memory and shuffles — so CI checks every kernel without a GPU. The CPU accelerator is for correctness only (about
/// 60 µs per launched thread), so launch sizes are chosen per accelerator (<see cref="Launch"/>).
/// </summary>
public sealed class GpuDevice : IDisposable
{
    public Context Context { get; }
    public Accelerator Accelerator { get; }
    /// <summary>True for ILGPU's CPU accelerator (tests), false on a real GPU.</summary>
    public bool IsSimulator { get; }
    public int Index { get; }
    public string Name { get; }
    /// <summary>Device memory in bytes (the host's for the simulator).</summary>
    public long TotalBytes { get; }
    /// <summary>Compute capability (major, minor), or (0, 0) for the simulator.</summary>
    public (int Major, int Minor) ComputeCapability { get; }
    /// <summary>Whether the GPU shares one memory with the CPU (DGX Spark's GB10, Jetson): then weights can be read where the host maps them.</summary>
    public bool IsUnifiedMemory { get; }
    public int Multiprocessors { get; }

    private readonly Lazy<GpuKernels> _kernels;
    public GpuKernels Kernels => _kernels.Value;

    private GpuDevice(Context context, Accelerator accelerator, bool simulator, int index, string name, long totalBytes,
        (int, int) capability, bool unified)
    {
        Context = context; Accelerator = accelerator; IsSimulator = simulator; Index = index; Name = name;
        TotalBytes = totalBytes; ComputeCapability = capability; IsUnifiedMemory = unified;
        Multiprocessors = Math.Max(1, accelerator.NumMultiprocessors);
        _kernels = new Lazy<GpuKernels>(() => new GpuKernels(this));
    }

    /// <summary>ILGPU's CPU accelerator shaped as an NVIDIA GPU (warp 32), for tests and CI.</summary>
    public static GpuDevice CreateSimulator()
    {
        var context = Context.Create(b => b.CPU(CPUDevice.Nvidia).EnableAlgorithms());
        try
        {
            var accelerator = context.GetCPUDevice(0).CreateCPUAccelerator(context, CPUAcceleratorMode.Parallel);
            return new GpuDevice(context, accelerator, true, 0, "ILGPU CPU accelerator (NVIDIA-shaped, warp 32)",
                GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, (0, 0), unified: true);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The NVIDIA GPUs the driver reports, by index, without opening any (empty without a driver).</summary>
    public static IReadOnlyList<GpuInfo> List()
    {
        if (!CudaDriver.IsInstalled()) return [];
        try
        {
            using var context = Context.Create(b => b.Cuda());
            var list = new List<GpuInfo>();
            foreach (var device in context.GetCudaDevices())
                list.Add(new GpuInfo(list.Count, device.Name, device.MemorySize,
                    (device.Architecture?.Major ?? 0, device.Architecture?.Minor ?? 0)));
            return list;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or CudaException or InvalidOperationException)
        {
            return [];
        }
    }

    /// <summary>Opens NVIDIA GPU <paramref name="index"/>; a one-line <see cref="HarpiaException"/> says why when it cannot.</summary>
    public static GpuDevice OpenCuda(int index, string flag = "--device")
    {
        if (!CudaDriver.IsInstalled())
            throw new HarpiaException($"{flag} cuda:{index}: no NVIDIA driver on this machine (libcuda.so.1 does not load); install the NVIDIA driver, or use --device cpu");
        Context? context = null;
        try
        {
            context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
            var devices = context.GetCudaDevices();
            if (devices.Count == 0)
                throw new HarpiaException($"{flag} cuda:{index}: the NVIDIA driver is installed but reports no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES), or use --device cpu");
            if (index >= devices.Count)
                throw new HarpiaException($"{flag} cuda:{index}: this machine has {devices.Count} GPU(s) ({DeviceNames(devices)}); pick one of them");
            var device = devices[index];
            var arch = device.Architecture;
            if (arch is { Major: < 8 })
                throw new HarpiaException($"{flag} cuda:{index}: {device.Name} is compute capability {arch.Value.Major}.{arch.Value.Minor}; Harpia's kernels need 8.0 or newer (A100, H100, L4, RTX 30xx+, GB10), or use --device cpu");
            var accelerator = device.CreateCudaAccelerator(context);
            bool unified = device.Name.Contains("GB10", StringComparison.OrdinalIgnoreCase)
                || device.Name.Contains("Orin", StringComparison.OrdinalIgnoreCase)
                || device.Name.Contains("Thor", StringComparison.OrdinalIgnoreCase);
            return new GpuDevice(context, accelerator, false, index, device.Name, device.MemorySize,
                (arch?.Major ?? 0, arch?.Minor ?? 0), unified);
        }
        catch (HarpiaException)
        {
            context?.Dispose();
            throw;
        }
        catch (Exception e) when (e is CudaException or DllNotFoundException or TypeInitializationException or InvalidOperationException or NotSupportedException)
        {
            context?.Dispose();
            throw new HarpiaException($"{flag} cuda:{index}: the GPU could not be opened ({e.Message.ReplaceLineEndings(" ")}); check nvidia-smi, or use --device cpu");
        }
    }

    private static string DeviceNames(Context.DeviceCollection<CudaDevice> devices)
    {
        var names = new List<string>();
        for (int i = 0; i < devices.Count; i++) names.Add($"cuda:{i} {devices[i].Name}");
        return string.Join(", ", names);
    }

    /// <summary>Free and total device memory now (the CUDA driver's cuMemGetInfo), or the simulator's host memory.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        if (IsSimulator) return (GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, TotalBytes);
        Accelerator.Bind();
        return CudaDriver.MemoryInfo() ?? (TotalBytes, TotalBytes);
    }

    /// <summary>Grid size for <paramref name="work"/> independent items of <paramref name="perGroup"/> each: enough groups to fill a GPU, few on the simulator.</summary>
    public KernelConfig Launch(long work, int groupSize, long perGroup = 0)
    {
        if (perGroup <= 0) perGroup = groupSize;
        long needed = Math.Max(1, (work + perGroup - 1) / perGroup);
        long cap = IsSimulator ? 3 : Multiprocessors * 16L;
        return new KernelConfig((int)Math.Min(needed, cap), groupSize);
    }

    /// <summary>Threads per group for element-wise and per-row kernels: two warps on the simulator (exercises the cross-warp paths cheaply), 256 on a GPU.</summary>
    public int GroupSize => IsSimulator ? 64 : 256;

    public void Synchronize() => Accelerator.Synchronize();

    public override string ToString() => IsSimulator ? "cuda-sim" : $"cuda:{Index}";

    public void Dispose()
    {
        Accelerator.Dispose();
        Context.Dispose();
    }
}

/// <summary>One NVIDIA GPU as the driver reports it.</summary>
public sealed record GpuInfo(int Index, string Name, long MemoryBytes, (int Major, int Minor) ComputeCapability)
{
    public override string ToString() => $"cuda:{Index} {Name} ({MemoryBytes / (1024.0 * 1024 * 1024):F1} GiB, sm_{ComputeCapability.Major}{ComputeCapability.Minor})";
}

using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Models.Llama;
using Harpia.Placement;

namespace Harpia.Runtime;

/// <summary>
/// The runtime's side of device maps: which devices exist on this machine, and the map of a loaded (mapped, not yet
/// prepared) model over them, built by the same <see cref="DeviceMapper"/> the planner uses and printed at start.
/// </summary>
public static class ModelPlacement
{
    /// <summary>Environment variable: N CPU devices standing in for GPUs 0…N−1 (to run and test a split without GPUs).</summary>
    public const string CpuDevicesVariable = "HARPIA_CPU_DEVICES";

    /// <summary>
    /// The devices that exist: the CPU, with the machine's memory (the container's limit where there is one), less a
    /// reserve of a tenth (at least 1 GiB) left to the OS; and, with <see cref="CpuDevicesVariable"/>=N, N stand-in
    /// devices 0…N−1 that each may use the same memory (they share it: --max-memory divides it).
    /// </summary>
    public static IReadOnlyList<DeviceCapacity> DetectDevices()
    {
        long ram = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        long reserve = Math.Max(1L << 30, ram / 10);
        var devices = new List<DeviceCapacity>();
        int standIns = CpuStandIns();
        for (int i = 0; i < standIns; i++) devices.Add(new DeviceCapacity(DeviceId.Gpu(i), ram, 0, "none (a CPU stand-in)"));
        devices.Add(new DeviceCapacity(DeviceId.Cpu, ram, reserve, "a tenth of RAM, at least 1 GiB, left to the OS"));
        return devices;
    }

    /// <summary>The value of <see cref="CpuDevicesVariable"/> (0 when unset).</summary>
    public static int CpuStandIns()
    {
        string? text = Environment.GetEnvironmentVariable(CpuDevicesVariable);
        if (string.IsNullOrWhiteSpace(text)) return 0;
        return int.TryParse(text, out int n) && n is >= 0 and <= 64 ? n
            : throw new HarpiaException($"{CpuDevicesVariable}={text}: expected a number of CPU stand-in devices from 0 to 64");
    }

    /// <summary>
    /// Builds the map of <paramref name="model"/> for the runtime's limits and writes it (and the disk warning) to
    /// <paramref name="log"/>. KV is sized at <paramref name="kvDtype"/>. The model keeps running where it was loaded:
    /// to run the map, load with <see cref="Load"/>.
    /// </summary>
    /// <returns>The map, or null for an architecture whose footprint is not described (Falcon's and Llama's are).</returns>
    public static DeviceMap? Place(DecoderModel model, string name, PlacementRequest? request, long maxBatchTotalTokens, int maxBatchPrefillTokens,
        TextWriter? log, IReadOnlyList<DeviceCapacity>? devices = null, KvCacheDtype kvDtype = KvCacheDtype.F32)
    {
        var footprint = Footprint(model, name, kvDtype);
        if (footprint is null)
        {
            log?.WriteLine($"device map: not computed for the {model.Architecture.Name} architecture yet; everything runs on the CPU");
            return null;
        }
        return Build(footprint, request, maxBatchTotalTokens, maxBatchPrefillTokens, log, devices);
    }

    /// <summary>What each part of a loaded model weighs (null for an architecture without a footprint).</summary>
    public static ModelFootprint? Footprint(DecoderModel model, string name, KvCacheDtype kvDtype = KvCacheDtype.F32) => model switch
    {
        FalconModel falcon => ModelFootprint.FromFalcon(name, falcon.Config, falcon.Weights, KvCacheDtypes.BytesPerElement(kvDtype)),
        LlamaModel llama => ModelFootprint.FromLlama(name, llama.Config, llama.Weights, KvCacheDtypes.BytesPerElement(kvDtype)),
        _ => null,
    };

    private static DeviceMap Build(ModelFootprint footprint, PlacementRequest? request, long maxBatchTotalTokens, int maxBatchPrefillTokens,
        TextWriter? log, IReadOnlyList<DeviceCapacity>? devices)
    {
        var map = (request ?? new PlacementRequest()).Build(footprint, devices ?? DetectDevices(), maxBatchTotalTokens, maxBatchPrefillTokens);
        if (log is not null)
        {
            foreach (var line in map.Describe()) log.WriteLine(line);
            if (PlacementRequest.DiskWarning(map) is { } warning) log.WriteLine(warning);
        }
        return map;
    }

    /// <summary>
    /// Loads a checkpoint and runs it as its device map says: the map is built from the bound weights' footprint
    /// (after any quantization on load) before any weight is prepared, printed, and each device's modules are prepared
    /// on that device's backend (<paramref name="backendOf"/>, default <see cref="DefaultBackends"/>); KV storage
    /// follows the layers, activations cross devices at the map's boundaries. The map is <c>model.Devices.Plan</c>.
    /// </summary>
    /// <param name="limits">From the model's shape: the KV positions each layer's device must hold (e.g.
    /// <see cref="ModelHost.KvTokenBudget(ModelShape, GeneratorOptions?)"/>) and the tokens of one prefill step.</param>
    public static DecoderModel Load(string modelPath, ModelLoadOptions? options, PlacementRequest? request, Func<ModelShape, (long KvTokens, int PrefillTokens)> limits,
        KvCacheDtype kvDtype, TextWriter? log, IReadOnlyList<DeviceCapacity>? devices = null, Func<DeviceMap, DeviceId, IComputeBackend>? backendOf = null)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath));
        // --device cuda|cuda:N|auto opens its GPU before anything loads (its one-line errors, auto's fallback); the map
        // then has that GPU as its only GPU, run by the CUDA backend, instead of the detected devices and stand-ins.
        var gpu = request?.Device is { } device && backendOf is null
            ? Backends.Cuda.DeviceSelection.Open(device, modelPath, options?.Quantize is not null, log ?? Console.Error) as Backends.Cuda.CudaBackend
            : null;
        if (gpu is not null)
        {
            var (_, total) = gpu.Gpu.MemoryInfo();
            var gpuId = DeviceId.Gpu(gpu.Gpu.Index);
            devices = [new DeviceCapacity(gpuId, total, Backends.Cuda.DeviceSelection.Reserve(total), $"5 % or 1 GiB left on {gpu.Name} (CUDA context, scratch)"),
                .. (devices ?? DetectDevices()).Where(d => !d.Device.IsGpu)];
            var cpu = DefaultBackends(CpuBackend.Default, standIns: 0);
            backendOf = (map, d) => d == gpuId ? gpu : cpu(map, d);
        }
        try
        {
            return ModelRegistry.Load(modelPath, (options ?? new ModelLoadOptions()) with
            {
                Place = (shape, footprint) =>
                {
                    var (kvTokens, prefillTokens) = limits(shape);
                    var map = Build(footprint.WithKvBytesPerElement(KvCacheDtypes.BytesPerElement(kvDtype)) with { ModelName = name },
                        request, kvTokens, prefillTokens, log, devices);
                    var of = backendOf ?? DefaultBackends(CpuBackend.Default);
                    return BackendMap.FromPlacement(map, d => of(map, d));
                },
            });
        }
        catch
        {
            gpu?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The backends of a map's devices on a machine without a GPU backend: the CPU runs "cpu"; "disk" layers run on its
    /// disk-offload backend (<see cref="CpuBackend.ForDisk"/>: same memory, weights streamed from the file); GPU i is
    /// a CPU stand-in (<see cref="CpuStandIns"/>) held to the map's budget for it. A GPU backend plugs in here.
    /// </summary>
    /// <param name="standIns">GPUs to stand CPU backends in for; default: <see cref="CpuStandIns"/>.</param>
    public static Func<DeviceMap, DeviceId, IComputeBackend> DefaultBackends(CpuBackend cpu, int? standIns = null) => (map, device) => device.Kind switch
    {
        Harpia.Placement.DeviceKind.Cpu => cpu,
        Harpia.Placement.DeviceKind.Disk => cpu.ForDisk(),
        _ when device.Index < (standIns ?? CpuStandIns()) => CpuBackend.StandIn(device.Index, Budget(map, device), cpu.RepackAtLoad),
        _ => throw new HarpiaException($"the device map puts modules on {device.Label}, but no GPU backend runs here " +
            $"({CpuDevicesVariable}=N stands N CPU devices in for GPUs)"),
    };

    /// <summary>A device's budget in the map (null: unbounded).</summary>
    public static long? Budget(DeviceMap map, DeviceId device) =>
        map.Usage.FirstOrDefault(u => u.Device == device) is { Unbounded: false } u ? u.BudgetBytes - u.ReserveBytes : null;
}

using Harpia.Models.Falcon;
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
    /// <paramref name="log"/>. KV is sized at the runtime's f32 cache.
    /// </summary>
    /// <returns>The map, or null for an architecture whose footprint is not described yet (only Falcon's is).</returns>
    public static DeviceMap? Place(Harpia.Models.DecoderModel model, string name, PlacementRequest? request, long maxBatchTotalTokens, int maxBatchPrefillTokens,
        TextWriter? log, IReadOnlyList<DeviceCapacity>? devices = null)
    {
        if (model is not FalconModel falcon)
        {
            log?.WriteLine($"device map: not computed for the {model.Architecture.Name} architecture yet; everything runs on the CPU");
            return null;
        }
        var footprint = ModelFootprint.FromFalcon(name, falcon.Config, falcon.Weights, kvBytesPerElement: sizeof(float));
        var map = (request ?? new PlacementRequest()).Build(footprint, devices ?? DetectDevices(), maxBatchTotalTokens, maxBatchPrefillTokens);
        if (log is not null)
        {
            foreach (var line in map.Describe()) log.WriteLine(line);
            if (PlacementRequest.DiskWarning(map) is { } warning) log.WriteLine(warning);
        }
        return map;
    }
}

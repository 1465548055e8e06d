using Harpia.Placement;

namespace Harpia.Planning;

/// <summary>
/// The device map the runtime would build on a catalog entry: the same <see cref="DeviceMapper"/> the runtime runs,
/// over the entry's devices. The entry's first memory tier is one GPU per unit (a unified-memory box is one device);
/// later tiers are the CPU's memory (llama.cpp-style offload). Reserves: the catalog's runtime overhead per GPU,
/// and its OS reserve on the CPU tier — or, on a unified-memory box, on each box's one device.
/// </summary>
public static class PlanDeviceMaps
{
    public static IReadOnlyList<DeviceCapacity> Devices(HardwareEntry hw)
    {
        const double GiB = 1L << 30;
        var devices = new List<DeviceCapacity>();
        bool unified = hw.Tiers.Count == 1;
        double osPerUnit = unified ? hw.ReservedGB * 1e9 * (hw.Split == SplitMode.Pipeline ? 1 : 1.0 / hw.Units) : 0;
        for (int i = 0; i < hw.Units; i++)
        {
            long reserve = (long)(hw.RuntimeOverheadGib * GiB + osPerUnit);
            string why = unified && osPerUnit > 0 ? $"{hw.RuntimeOverheadGib:0.#} GiB runtime + OS reserve" : $"{hw.RuntimeOverheadGib:0.#} GiB runtime";
            devices.Add(new DeviceCapacity(DeviceId.Gpu(i), (long)hw.Tiers[0].Bytes, reserve, why));
        }
        if (!unified)
            devices.Add(new DeviceCapacity(DeviceId.Cpu, (long)hw.Tiers.Skip(1).Sum(t => t.Bytes), (long)(hw.ReservedGB * 1e9), "OS reserve"));
        return devices;
    }

    /// <summary>
    /// The map for <paramref name="p"/> on <paramref name="hw"/>, with the plan's KV (context × concurrent sequences at
    /// its KV dtype) and one prefill chunk per sequence; or the runtime's refusal, as text.
    /// </summary>
    public static (DeviceMap? Map, string? Error) For(PlanRequest r, HardwareEntry hw, Precision p)
    {
        var footprint = ModelFootprint.FromSpec(r.Model, p, Planner.KvBytesPerElement(r.KvDtype));
        var settings = new DeviceMapSettings
        {
            Devices = Devices(hw),
            MaxBatchTotalTokens = (long)r.Context * r.Concurrent,
            MaxBatchPrefillTokens = checked(r.Concurrent * Math.Min(r.Context, Planner.PrefillChunk)),
        };
        try { return (DeviceMapper.Build(footprint, settings), null); }
        catch (HarpiaException e) { return (null, e.Message); }
    }
}

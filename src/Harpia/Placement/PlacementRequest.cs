namespace Harpia.Placement;

/// <summary>
/// The placement flags of <c>serve</c>, <c>chat</c>, <c>generate</c>, <c>bench</c> and <c>perplexity</c>:
/// <c>--device-map auto|balanced|sequential|FILE.json</c>, <c>--max-memory 0=75GiB,cpu=200GiB</c>,
/// <c>--num-shard N</c> and <c>--sharded</c> (TGI's flags: split the layers over N GPUs, or every GPU).
/// </summary>
public sealed record PlacementRequest(string? DeviceMap = null, string? MaxMemory = null, int? NumShard = null, bool Sharded = false)
{
    /// <summary><c>--device cpu|cuda|cuda:N|auto</c> (null: the CPU), see <see cref="Backends.Cuda.DeviceSelection"/>.</summary>
    public string? Device { get; init; }

    /// <summary>Builds the map of <paramref name="footprint"/> over <paramref name="devices"/>, the devices that exist.</summary>
    public DeviceMap Build(ModelFootprint footprint, IReadOnlyList<DeviceCapacity> devices, long maxBatchTotalTokens, int maxBatchPrefillTokens)
    {
        var (strategy, file) = DeviceMapSettings.ParseStrategy(DeviceMap);
        int gpus = devices.Count(d => d.Device.IsGpu);
        int? numShard = NumShard;
        if (numShard is int n && n < 1) throw new HarpiaException($"--num-shard must be at least 1 (got {n})");
        // One shard on a machine without GPUs is the CPU itself (TGI's default of --num-shard 1 keeps working).
        if (numShard == 1 && gpus == 0) numShard = null;
        if (numShard is > 1 && gpus == 0)
            throw new HarpiaException($"--num-shard {numShard}: this machine has no GPU; Harpia runs on the CPU as one device " +
                "(HARPIA_CPU_DEVICES=N stands N CPU devices in for GPUs, to test a split)");
        if (Sharded && numShard is null && gpus > 0) numShard = gpus;
        return DeviceMapper.Build(footprint, new DeviceMapSettings
        {
            Devices = devices,
            Strategy = strategy,
            FileAssignments = file is null ? null : Placement.DeviceMap.ReadFile(file),
            FileName = file ?? "--device-map",
            MaxMemory = Placement.MaxMemory.Parse(MaxMemory),
            NumShard = numShard,
            MaxBatchTotalTokens = maxBatchTotalTokens,
            MaxBatchPrefillTokens = maxBatchPrefillTokens,
        });
    }

    /// <summary>
    /// The warning printed when layers stay on disk: every forward pass reads them from the file. At an assumed 2 GB/s
    /// (a fast NVMe SSD; the page cache helps only while RAM holds them) that bounds decode to this many seconds a token.
    /// </summary>
    public static string? DiskWarning(DeviceMap map)
    {
        if (!map.UsesDisk) return null;
        var disk = map.Usage.First(u => u.Device == DeviceId.Disk);
        double seconds = disk.WeightBytes / 2e9;
        return $"warning: {map.LayerCountOn(DeviceId.Disk)} layer(s) ({ByteSize.Format(disk.WeightBytes)}) stay on disk and are read from the checkpoint on every " +
               $"forward pass: expect at least {seconds:0.##} s per token at 2 GB/s (a fast NVMe SSD), far slower than from memory";
    }
}

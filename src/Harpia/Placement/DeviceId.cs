using System.Globalization;

namespace Harpia.Placement;

/// <summary>What holds a part of the model: an accelerator (GPU), the CPU's memory, or the checkpoint file on disk.</summary>
public enum DeviceKind { Gpu, Cpu, Disk }

/// <summary>
/// A device of a device map, spelled as accelerate spells it: a GPU by its index ("0", "1"; "cuda:1" is read too),
/// "cpu" and "disk". Ordered as devices are filled: GPUs by index, then the CPU, then disk.
/// </summary>
public readonly record struct DeviceId(DeviceKind Kind, int Index) : IComparable<DeviceId>
{
    public static DeviceId Gpu(int index) => new(DeviceKind.Gpu, index);
    public static readonly DeviceId Cpu = new(DeviceKind.Cpu, 0);
    public static readonly DeviceId Disk = new(DeviceKind.Disk, 0);

    public bool IsGpu => Kind == DeviceKind.Gpu;

    /// <summary>The device whose memory holds this device's KV blocks and activations: disk layers run on the CPU.</summary>
    public DeviceId MemoryDevice => Kind == DeviceKind.Disk ? Cpu : this;

    public override string ToString() => Kind switch
    {
        DeviceKind.Gpu => Index.ToString(CultureInfo.InvariantCulture),
        DeviceKind.Cpu => "cpu",
        _ => "disk",
    };

    /// <summary>For people: "GPU 0", "CPU", "disk".</summary>
    public string Label => Kind switch { DeviceKind.Gpu => $"GPU {Index}", DeviceKind.Cpu => "CPU", _ => "disk" };

    public int CompareTo(DeviceId other) => Kind != other.Kind ? Kind.CompareTo(other.Kind) : Index.CompareTo(other.Index);

    /// <summary>Reads "0", "cuda:0", "gpu0", "cpu" or "disk"; <paramref name="where"/> names the flag or file in errors.</summary>
    public static DeviceId Parse(string text, string where)
    {
        string s = text.Trim().ToLowerInvariant();
        if (s == "cpu") return Cpu;
        if (s == "disk") return Disk;
        string digits = s.StartsWith("cuda:", StringComparison.Ordinal) ? s[5..] : s.StartsWith("gpu", StringComparison.Ordinal) ? s[3..] : s;
        if (digits.Length > 0 && digits.All(char.IsAsciiDigit) && int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < 4096)
            return Gpu(i);
        throw new HarpiaException($"{where}: '{text}' is not a device (use a GPU index such as 0 or cuda:0, cpu or disk)");
    }
}

/// <summary>
/// <c>--max-memory 0=75GiB,1=75GiB,cpu=200GiB</c>: the most memory each device may give the model (weights, KV cache,
/// activations and the stated reserve together). accelerate's <c>max_memory</c>, written as a flag.
/// </summary>
public static class MaxMemory
{
    public static IReadOnlyDictionary<DeviceId, long> Parse(string? text, string flag = "--max-memory")
    {
        var result = new SortedDictionary<DeviceId, long>();
        if (string.IsNullOrWhiteSpace(text)) return result;
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0 || eq == part.Length - 1)
                throw new HarpiaException($"{flag}: '{part}' is not DEVICE=SIZE (write e.g. 0=75GiB,1=75GiB,cpu=200GiB)");
            var device = DeviceId.Parse(part[..eq], flag);
            long bytes = ByteSize.Parse(part[(eq + 1)..], $"{flag} {device}");
            if (!result.TryAdd(device, bytes)) throw new HarpiaException($"{flag}: device {device} is given twice");
        }
        return result;
    }
}

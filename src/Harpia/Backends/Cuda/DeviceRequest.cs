namespace Harpia.Backends.Cuda;

/// <summary>What <c>--device</c> asked for.</summary>
public enum DeviceChoice { Cpu, Cuda, Auto }

/// <summary>
/// A parsed <c>--device</c> value: <c>cpu</c>, <c>cuda</c> (GPU 0), <c>cuda:N</c>, or <c>auto</c> (a usable NVIDIA
/// GPU, else the CPU). <c>gpu</c>/<c>gpu:N</c> are accepted as synonyms of cuda.
/// </summary>
public readonly record struct DeviceRequest(DeviceChoice Choice, int Index)
{
    public static DeviceRequest Cpu => new(DeviceChoice.Cpu, 0);
    public static DeviceRequest Auto => new(DeviceChoice.Auto, 0);

    public static DeviceRequest Parse(string? value, string flag = "--device")
    {
        string v = (value ?? "").Trim().ToLowerInvariant();
        if (v is "cpu") return Cpu;
        if (v is "auto" or "") return Auto;
        if (v is "cuda" or "gpu") return new(DeviceChoice.Cuda, 0);
        int colon = v.IndexOf(':');
        if (colon > 0 && v[..colon] is "cuda" or "gpu")
        {
            string n = v[(colon + 1)..];
            if (n.Length > 0 && n.Length <= 3 && n.All(char.IsAsciiDigit)) return new(DeviceChoice.Cuda, int.Parse(n));
            throw new HarpiaException($"{flag}: '{value}' has no GPU number after the colon; use cuda:0, cuda:1, …");
        }
        throw new HarpiaException($"{flag}: unknown device '{value}'; use cpu, cuda, cuda:N or auto");
    }

    public override string ToString() => Choice switch
    {
        DeviceChoice.Cpu => "cpu",
        DeviceChoice.Auto => "auto",
        _ => $"cuda:{Index}",
    };
}

using System.Text.Json;
using Harpia.Backends;
using Harpia.Formats;

namespace Harpia.Models;

/// <summary>How to load a model: where it runs, and an optional quantization on load.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Re-encode float weights on load (e.g. Q8_0), or null to run the stored types.</summary>
    public Quantization.QuantizationScheme? Quantize { get; init; }
    /// <summary>Threads for quantizing on load (null: all cores).</summary>
    public int? Threads { get; init; }
    /// <summary>Where each part of the model runs, given its shape; null: everything on the CPU backend.</summary>
    public Func<ModelShape, BackendMap>? Devices { get; init; }
    /// <summary>
    /// Where each part runs, chosen from what each part weighs: called with the footprint of the bound weights (after
    /// any quantization on load, before any weight is prepared on a device) — how the runtime executes its device map
    /// (<see cref="Runtime.ModelPlacement.Load"/>). Takes precedence over <see cref="Devices"/>.
    /// </summary>
    public Func<ModelShape, Placement.ModelFootprint, BackendMap>? Place { get; init; }

    /// <summary>Everything on one backend.</summary>
    public static ModelLoadOptions On(IComputeBackend backend) => new() { Devices = shape => BackendMap.Single(backend, shape.Layers) };
}

/// <summary>
/// One architecture the registry can load: the names checkpoints use for it, and its loader.
/// </summary>
/// <param name="Name">Harpia's name for it ("falcon", "llama").</param>
/// <param name="HfModelTypes">config.json <c>model_type</c> values.</param>
/// <param name="HfArchitectures">config.json <c>architectures</c> entries.</param>
/// <param name="GgufArchitectures">GGUF <c>general.architecture</c> values.</param>
/// <param name="Load">Opens a Hugging Face folder (or a file in it) or a GGUF file and returns the running model.</param>
public sealed record ArchitectureRegistration(string Name, string[] HfModelTypes, string[] HfArchitectures, string[] GgufArchitectures,
    Func<string, ModelLoadOptions, DecoderModel> Load);

/// <summary>
/// From a checkpoint to a running model: reads what architecture it is (config.json's <c>model_type</c> /
/// <c>architectures</c>, or GGUF's <c>general.architecture</c>) and calls that architecture's loader. Every command
/// and the server get their <see cref="ICausalLM"/> here.
/// <para>
/// <b>Adding an architecture.</b> Write <c>Models/&lt;Name&gt;/</c>: a config reader, a weights binder, an
/// <see cref="IDecoderArchitecture"/> (its layer math over <see cref="ForwardContext"/>'s ops; no buffers, no
/// threads), a <see cref="DecoderModel"/> subclass or factory that prepares the weights on the
/// <see cref="BackendMap"/>'s backends, and a static <see cref="ArchitectureRegistration"/> naming its config and
/// GGUF identifiers. Then add that registration to <see cref="BuiltIn"/> below (one line), or call
/// <see cref="Register"/> at run time (tests do, for a toy architecture).
/// </para>
/// </summary>
public static class ModelRegistry
{
    private static readonly object Gate = new();
    private static readonly List<ArchitectureRegistration> Registered = [.. BuiltIn()];

    /// <summary>The architectures Harpia ships with.</summary>
    private static IEnumerable<ArchitectureRegistration> BuiltIn() =>
    [
        Falcon.FalconModel.Registration,
        Llama.LlamaModel.Registration,
    ];

    public static IReadOnlyList<ArchitectureRegistration> Known { get { lock (Gate) return Registered.ToArray(); } }

    /// <summary>Adds (or, by the same name, replaces) an architecture.</summary>
    public static void Register(ArchitectureRegistration registration)
    {
        lock (Gate)
        {
            Registered.RemoveAll(r => r.Name == registration.Name);
            Registered.Add(registration);
        }
    }

    /// <summary>Removes an architecture registered at run time (tests).</summary>
    public static void Unregister(string name)
    {
        lock (Gate) Registered.RemoveAll(r => r.Name == name);
    }

    /// <summary>Loads a Hugging Face folder (config.json + safetensors) or a GGUF file with its architecture's loader.</summary>
    public static DecoderModel Load(string path, ModelLoadOptions? options = null) => Resolve(path).Load(path, options ?? new ModelLoadOptions());

    /// <summary>The registration for a checkpoint, or a clear error naming what the file says and what is known.</summary>
    public static ArchitectureRegistration Resolve(string path)
    {
        var known = Known;
        string KnownList() => string.Join(", ", known.Select(k => k.Name));
        if (File.Exists(path) && GgufFile.HasGgufMagic(path))
        {
            // Only the one key is read (no vocabulary built just to be dropped); where this file's header lacks it
            // (a later gguf-split shard, a broken file) the full open gives its usual error or finds it.
            string? arch = GgufFile.ReadMetadataString(path, "general.architecture");
            if (arch is null)
                using (var gguf = GgufFile.Open(path)) arch = gguf.GetString("general.architecture");
            if (arch is null) throw new InvalidModelFileException(path, "GGUF metadata has no general.architecture");
            return known.FirstOrDefault(k => k.GgufArchitectures.Contains(arch, StringComparer.OrdinalIgnoreCase))
                ?? throw new HarpiaException($"{path}: GGUF architecture '{arch}' is not supported; known architectures: {KnownList()}");
        }
        string folder = File.Exists(path) ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;
        if (!Directory.Exists(folder)) throw new HarpiaException($"{path}: no such model folder or GGUF file");
        string configFile = Path.Combine(folder, "config.json");
        if (!File.Exists(configFile)) throw new HarpiaException($"{configFile}: config.json not found");
        if (new FileInfo(configFile).Length > 1 << 20) throw new InvalidModelFileException(configFile, "config.json is larger than 1 MiB; not a model config");
        string? modelType = null;
        var architectures = new List<string>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(configFile));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidModelFileException(configFile, "not a JSON object");
            if (doc.RootElement.TryGetProperty("model_type", out var t) && t.ValueKind == JsonValueKind.String) modelType = t.GetString();
            if (doc.RootElement.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array)
                foreach (var e in a.EnumerateArray()) if (e.ValueKind == JsonValueKind.String) architectures.Add(e.GetString()!);
        }
        catch (JsonException e) { throw new InvalidModelFileException(configFile, $"not valid JSON ({e.Message})"); }
        var match = known.FirstOrDefault(k => modelType is not null && k.HfModelTypes.Contains(modelType, StringComparer.OrdinalIgnoreCase))
            ?? known.FirstOrDefault(k => architectures.Any(a => k.HfArchitectures.Contains(a, StringComparer.Ordinal)));
        if (match is not null) return match;
        string said = modelType is not null ? $"model_type '{modelType}'" : architectures.Count > 0 ? $"architectures [{string.Join(", ", architectures)}]" : "no model_type or architectures";
        throw new HarpiaException($"{configFile}: {said} is not supported; known architectures: {KnownList()}");
    }
}

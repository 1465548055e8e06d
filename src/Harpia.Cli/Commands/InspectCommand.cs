using System.ComponentModel;
using Harpia.Models;
using Harpia.Tensors;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary><c>harpia inspect &lt;model&gt;</c>: architecture, parameter count, dtypes, tensors and memory needed.</summary>
public sealed class InspectCommand : Command<InspectCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "[MODEL]")]
        [Description("A Hugging Face folder (config.json + safetensors) or a GGUF file; default: the bundled tiny Falcon.")]
        public string Model { get; init; } = "";

        [CommandOption("--summary")]
        [Description("Leave out the tensor list.")]
        public bool Summary { get; init; }

        [CommandOption("--quantize <TYPE>")]
        [Description("Show the model as quantized on load to TYPE (Q8_0, Q4_K_M, …): per-tensor types and memory.")]
        public string? Quantize { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var scheme = settings.Quantize is null ? null : Harpia.Quantization.QuantizationScheme.Parse(settings.Quantize, "--quantize", onLoad: true);
        using var model = ModelRegistry.Load(TextGeneratorFactory.LocalModelOrBundled(settings.Model), new ModelLoadOptions { Quantize = scheme });
        Console.Write(Describe(model, !settings.Summary));
        return 0;
    }

    internal static string Describe(DecoderModel model, bool tensors)
    {
        var c = model.Shape;
        var w = new StringWriter();
        var entries = model.Source.Tensors.Values.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        long parameters = entries.Sum(t => t.ElementCount);
        long weightBytes = entries.Sum(t => t.ByteLength);
        w.WriteLine($"model:        {model.Source.Path}");
        foreach (var (label, text) in model.Architecture.Describe()) w.WriteLine($"{label + ":",-13} {text}");
        w.WriteLine($"parameters:   {parameters:N0} ({parameters / 1e9:F2} B)");
        w.WriteLine("dtypes:       " + string.Join(", ", entries.GroupBy(t => t.Type).OrderByDescending(g => g.Sum(t => t.ByteLength))
            .Select(g => $"{g.Key} {g.Count()} tensors {Bytes(g.Sum(t => t.ByteLength))}")));
        long kvPerToken = KvStorage.BytesFor(c, 1, 1, Harpia.Backends.KvCacheDtype.F32);
        // The runner's residual stream and the architecture's per-layer scratch, plus one logits row.
        long activations = 4L * (c.HiddenSize + model.Architecture.Scratch.Sum(w => (long)w)) + 4L * c.VocabSize;
        w.WriteLine($"memory:       weights {Bytes(weightBytes)} (memory-mapped, files {Bytes(model.Source.FileBytes)}); " +
                    $"KV cache {Bytes(kvPerToken)}/token f32, {Bytes(kvPerToken * c.MaxPositions)} for {c.MaxPositions} positions; " +
                    $"activations {Bytes(activations)}/token in flight");
        w.WriteLine($"              one {c.MaxPositions}-token sequence (weights + KV cache + a 512-token prefill) ≈ {Bytes(weightBytes + kvPerToken * c.MaxPositions + activations * 512)}");
        using (var self = System.Diagnostics.Process.GetCurrentProcess())
            w.WriteLine($"resident:     {Bytes(self.WorkingSet64)} for this process after loading (weights are mapped, read on first touch)");
        if (tensors)
        {
            w.WriteLine($"tensors ({entries.Count}):");
            int width = entries.Max(t => t.Name.Length);
            foreach (var t in entries)
                w.WriteLine($"  {t.Name.PadRight(width)}  {t.Type,-5} {t.ShapeText,-16} {Bytes(t.ByteLength),10}  {Path.GetFileName(t.FilePath)}");
        }
        return w.ToString();
    }

    internal static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };
}

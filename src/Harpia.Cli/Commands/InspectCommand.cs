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
        // GPTQ / bitsandbytes linears: stored as several tensors (qweight, qzeros, scales, g_idx; codes, absmax, maps),
        // repacked at load. They count as rows × cols parameters, and their memory is the repacked matrix's.
        var packed = model.Architecture.LayerMatrices.Where(m => m.Packed is not null).ToList();
        var packedStems = packed.Select(m => PackedStem(m.Name)).ToHashSet(StringComparer.Ordinal);
        bool PartOfPacked(string name) => !name.EndsWith(".bias", StringComparison.Ordinal) && packedStems.Any(s => name.StartsWith(s + ".", StringComparison.Ordinal));
        var plain = entries.Where(t => !PartOfPacked(t.Name)).ToList();
        long parameters = plain.Sum(t => t.ElementCount) + packed.Sum(m => (long)m.Rows * m.Cols);
        long mappedBytes = plain.Sum(t => t.ByteLength);
        long packedBytes = packed.Sum(m => m.ByteLength);
        long weightBytes = mappedBytes + packedBytes;
        w.WriteLine($"model:        {model.Source.Path}");
        foreach (var (label, text) in model.Architecture.Describe()) w.WriteLine($"{label + ":",-13} {text}");
        w.WriteLine($"parameters:   {parameters:N0} ({parameters / 1e9:F2} B)");
        if (packed.Count > 0)
        {
            string folder = Directory.Exists(model.Source.Path) ? model.Source.Path : Path.GetDirectoryName(model.Source.Path) ?? ".";
            string method = Harpia.Quantization.CheckpointQuantization.Detect(folder) switch
            {
                Harpia.Quantization.GptqCheckpoint g => $"gptq (bits {g.Config.Bits}, group_size {g.Config.GroupSize}, desc_act {Lower(g.Config.DescAct)}, sym {Lower(g.Config.Sym)}; {g.Config.ConfigPath})",
                { } q => q.Method,
                null => "quantized on load",
            };
            long packedParameters = packed.Sum(m => (long)m.Rows * m.Cols);
            w.WriteLine($"quantization: {method}");
            foreach (var g in packed.GroupBy(m => m.Packed!.Format).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                long n = g.Sum(m => (long)m.Rows * m.Cols);
                double bits = g.Sum(m => m.Packed!.BitsPerWeight * m.Rows * m.Cols) / n;
                w.WriteLine($"              {g.Key}: {g.Count()} matrices, {n:N0} weights, {bits:F2} bits/weight stored");
            }
            w.WriteLine($"              {packedParameters * 100.0 / parameters:F1}% of the parameters; {(parameters - packedParameters):N0} others as stored (embeddings, norms)");
        }
        w.WriteLine("dtypes:       " + string.Join(", ", entries.GroupBy(t => t.Type).OrderByDescending(g => g.Sum(t => t.ByteLength))
            .Select(g => $"{g.Key} {g.Count()} tensors {Bytes(g.Sum(t => t.ByteLength))}")));
        long kvPerToken = KvStorage.BytesFor(c, 1, 1, Harpia.Backends.KvCacheDtype.F32);
        // The runner's residual stream and the architecture's per-layer scratch, plus one logits row.
        long activations = 4L * (c.HiddenSize + model.Architecture.Scratch.Sum(w => (long)w)) + 4L * c.VocabSize;
        string where = packed.Count == 0 ? "memory-mapped"
            : $"{Bytes(packedBytes)} in {packed.Count} matrices repacked at load + {Bytes(mappedBytes)} memory-mapped";
        w.WriteLine($"memory:       weights {Bytes(weightBytes)} ({where}, files {Bytes(model.Source.FileBytes)}); " +
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
            if (packed.Count > 0)
            {
                w.WriteLine($"quantized weights ({packed.Count}; [out, in], bits per weight with scales/zeros/indices, group = inputs per scale):");
                int pw = packed.Max(m => PackedStem(m.Name).Length), fw = packed.Max(m => m.Packed!.Format.Length);
                foreach (var m in packed.OrderBy(m => m.Name, StringComparer.Ordinal))
                    w.WriteLine($"  {PackedStem(m.Name).PadRight(pw)}  {m.Packed!.Format.PadRight(fw)}  {$"[{m.Rows}, {m.Cols}]",-12}  {m.Packed.BitsPerWeight,5:F2} bpw  group {m.Packed.GroupSize,-5} {Bytes(m.ByteLength),10} in memory");
            }
        }
        return w.ToString();
    }

    /// <summary>The linear a packed matrix's name belongs to: <c>….dense.qweight</c> / <c>….dense.weight</c> → <c>….dense</c>.</summary>
    private static string PackedStem(string name) =>
        name.EndsWith(".qweight", StringComparison.Ordinal) ? name[..^".qweight".Length]
        : name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : name;

    private static string Lower(bool b) => b ? "true" : "false";

    internal static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };
}

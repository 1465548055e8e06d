using System.ComponentModel;
using System.Diagnostics;
using Harpia.Models.Falcon;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary><c>harpia synth --shape falcon-40b --layers 4 --out DIR</c>: a random-weight checkpoint of real shapes.</summary>
public sealed class SynthCommand : Command<SynthCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--shape <SHAPE>")]
        [Description("falcon-7b, falcon-40b or falcon-180b (real layer shapes).")]
        public string Shape { get; init; } = "falcon-40b";

        [CommandOption("--layers <N>")]
        [Description("Number of decoder layers to write (default: the model's own count).")]
        public int? Layers { get; init; }

        [CommandOption("--out <DIR>")]
        [Description("Output folder (Hugging Face layout).")]
        public string? Out { get; init; }

        [CommandOption("--seed <SEED>")]
        public ulong Seed { get; init; }

        public override Spectre.Console.ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Out)) return Spectre.Console.ValidationResult.Error("--out DIR is required");
            if (Layers is <= 0 or > 1000) return Spectre.Console.ValidationResult.Error("--layers must be between 1 and 1000");
            return Spectre.Console.ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var config = FalconConfig.Preset(settings.Shape);
        if (settings.Layers is int layers) config = config with { NumLayers = layers };
        var sw = Stopwatch.StartNew();
        var result = FalconSynth.Write(config, settings.Out!, settings.Seed, msg => Console.Error.WriteLine(msg));
        Console.WriteLine($"wrote {result.Folder}: {settings.Shape} shapes, {config.NumLayers} layers, {result.Parameters:N0} parameters, " +
                          $"{result.TotalBytes / 1e9:F2} GB in {result.Shards} shards ({sw.Elapsed.TotalSeconds:F1} s)");
        return 0;
    }
}

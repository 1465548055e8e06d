using System.ComponentModel;
using System.Diagnostics;
using Harpia.Models.Falcon;
using Harpia.Quantization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia quantize IN OUT --type Q4_K_M</c>: a Hugging Face folder or an f32/f16/bf16 GGUF to a llama.cpp GGUF.
/// Thin over <see cref="Harpia.Models.ModelQuantizer.WriteGguf"/> (the architecture's own writer); shows a progress bar on a terminal, plain lines otherwise.
/// </summary>
public sealed class QuantizeCommand : Command<QuantizeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<IN>")]
        [Description("A Hugging Face folder (config.json + safetensors, bf16/f16/f32) or an f32/f16/bf16 GGUF file.")]
        public string Input { get; init; } = "";

        [CommandArgument(1, "<OUT>")]
        [Description("The GGUF file to write (written to OUT.partial, renamed when complete).")]
        public string Output { get; init; } = "";

        [CommandOption("-t|--type <TYPE>")]
        [Description("Q8_0, Q4_0, Q5_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q3_K_M, Q2_K, F16, BF16 or F32 (case-insensitive).")]
        public string? Type { get; init; }

        [CommandOption("--tokenizer <FILE>")]
        [Description("tokenizer.json (or a GGUF carrying a tokenizer) to embed; default: IN's own.")]
        public string? Tokenizer { get; init; }

        [CommandOption("--threads <N>")]
        public int? Threads { get; init; }

        [CommandOption("--force")]
        [Description("Overwrite OUT if it exists.")]
        public bool Force { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Type)) return ValidationResult.Error($"--type is required: {QuantizationScheme.SupportedList}");
            if (Threads is <= 0) return ValidationResult.Error("--threads must be at least 1");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var request = new QuantizeRequest(settings.Input, settings.Output, QuantizationScheme.Parse(settings.Type!, "--type"))
        {
            Tokenizer = settings.Tokenizer, Force = settings.Force, Threads = settings.Threads,
        };
        var sw = Stopwatch.StartNew();
        QuantizeResult result;
        if (Console.IsErrorRedirected || Console.IsOutputRedirected)
        {
            int last = -1;
            result = Harpia.Models.ModelQuantizer.WriteGguf(request, p =>
            {
                if (p.TensorIndex == last || p.TensorIndex >= p.TensorCount) return;
                last = p.TensorIndex;
                Console.Error.WriteLine($"[{p.TensorIndex + 1}/{p.TensorCount}] {p.TensorName} → {p.Type}");
            });
        }
        else
        {
            result = null!;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask($"quantizing to {request.Scheme.Name}", maxValue: 1);
                    result = Harpia.Models.ModelQuantizer.WriteGguf(request, p =>
                    {
                        task.MaxValue = Math.Max(1, p.BytesTotal);
                        task.Value = p.BytesDone;
                        if (p.TensorIndex < p.TensorCount)
                            task.Description = Markup.Escape($"[{p.TensorIndex + 1}/{p.TensorCount}] {p.TensorName} → {p.Type}");
                    });
                    task.Description = $"quantized to {request.Scheme.Name}";
                });
        }
        Console.WriteLine($"wrote {result.Path}: {request.Scheme.Name}, {result.Tensors} tensors ({string.Join(", ", result.TypeCounts.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Value} {kv.Key}"))}), " +
                          $"{result.Parameters:N0} parameters, {InspectCommand.Bytes(result.Bytes)} in {sw.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}

using System.ComponentModel;
using System.Text;
using System.Text.Json.Nodes;
using Harpia.Evaluation;
using Harpia.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia perplexity --model M --file text.txt</c>: llama.cpp-style perplexity of a text, and with
/// <c>--reference</c> / <c>--reference-logits</c> the KL divergence from a reference model — what a quantization
/// costs in quality. <c>--save-reference</c> records this model's log-probs so the reference need not be rerun.
/// </summary>
public sealed class PerplexityCommand : Command<PerplexityCommand.Settings>
{
    public sealed class Settings : PlacementSettings
    {
        [CommandOption("-m|--model <MODEL>")]
        [Description("The model under test: a Hugging Face folder or a GGUF file.")]
        public string Model { get; set; } = "";

        [CommandOption("-f|--file <FILE>")]
        [Description("The text to score (UTF-8); - reads stdin.")]
        public string File { get; init; } = "";

        [CommandOption("-c|--context <N>")]
        [Description("Tokens per window (default 512, at most the model's positions). The first half of each window is context only.")]
        public int? Context { get; init; }

        [CommandOption("--max-windows <N>")]
        [Description("Evaluate at most N windows.")]
        public int? MaxWindows { get; init; }

        [CommandOption("--score-all")]
        [Description("Score every token of a window after the first, not only the second half.")]
        public bool ScoreAll { get; init; }

        [CommandOption("--threads <N>")]
        public int? Threads { get; init; }

        [CommandOption("--tokenizer <FILE>")]
        [Description("tokenizer.json to use (default: the model's own).")]
        public string? Tokenizer { get; init; }

        [CommandOption("--reference <MODEL>")]
        [Description("A reference model (e.g. the f32/bf16 original) to compute KL(reference ‖ model) against.")]
        public string? Reference { get; init; }

        [CommandOption("--reference-logits <FILE>")]
        [Description("A reference's log-probs saved earlier with --save-reference, instead of --reference.")]
        public string? ReferenceLogits { get; init; }

        [CommandOption("--save-reference <FILE>")]
        [Description("Save --model's log-probs for later --reference-logits runs (4 bytes × vocabulary per scored token).")]
        public string? SaveReference { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of the summary.")]
        public bool Json { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(File)) return ValidationResult.Error("--file <text file, or - for stdin> is required");
            if (Context is < 2) return ValidationResult.Error($"--context {Context}: a window needs at least 2 tokens");
            if (MaxWindows is < 1) return ValidationResult.Error($"--max-windows {MaxWindows}: must be at least 1");
            if (Threads is < 1) return ValidationResult.Error($"--threads {Threads}: must be at least 1");
            if (Reference is not null && ReferenceLogits is not null) return ValidationResult.Error("give --reference or --reference-logits, not both");
            if (SaveReference is not null && (Reference is not null || ReferenceLogits is not null))
                return ValidationResult.Error("--save-reference records --model's log-probs; run it without --reference / --reference-logits");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Threads is int threads) Harpia.Backends.Cpu.CpuBackend.Default.Threads = threads;
        using var stdin = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false));
        bool interactive = !settings.Json && !Console.IsErrorRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        return Run(settings, stdin, Console.Out, interactive, cancellationToken);
    }

    /// <summary>The whole command minus the process: text from <paramref name="stdin"/> for <c>--file -</c>, report to <paramref name="stdout"/>.</summary>
    internal static int Run(Settings settings, TextReader stdin, TextWriter stdout, bool interactive, CancellationToken cancel)
    {
        var validation = settings.Validate();
        if (!validation.Successful) throw new HarpiaException(validation.Message ?? "invalid arguments");
        var (text, source) = ReadText(settings.File, stdin);

        settings.Model = TextGeneratorFactory.LocalModelOrBundled(settings.Model);
        using var model = Harpia.Runtime.ModelHost.LoadModel(settings.Model, device: settings.Device, log: interactive ? Console.Error : null);
        var tokenizer = GenerateCommand.LoadTokenizer(model, settings.Model, settings.Tokenizer)
                        ?? throw new HarpiaException($"{settings.Model}: no tokenizer (no tokenizer.json found); pass --tokenizer FILE");
        int[] tokens = tokenizer.Encode(text).ToArray();
        int contextTokens = settings.Context ?? Math.Min(EvaluationWindows.DefaultContext, model.Shape.MaxPositions);
        Harpia.Runtime.ModelPlacement.Place(model, Path.GetFileName(Path.TrimEndingDirectorySeparator(settings.Model)), settings.Placement,
            Math.Max(1, contextTokens), Math.Max(1, contextTokens), interactive ? Console.Error : null);
        var windows = EvaluationWindows.Plan(tokens.Length, contextTokens, model.Shape, settings.MaxWindows, settings.ScoreAll, source);

        DecoderModel? referenceModel = null;
        IReferenceLogProbs? reference = null;
        ReferenceLogProbsFile.Writer? save = null;
        try
        {
            if (settings.Reference is not null)
            {
                referenceModel = Harpia.Runtime.ModelHost.LoadModel(settings.Reference);
                CheckSameTokenization(referenceModel, settings.Reference, settings.Model, model.Shape.VocabSize, text, tokens);
                reference = new ModelReference(referenceModel, tokens, windows, settings.Reference);
            }
            else if (settings.ReferenceLogits is not null)
                reference = ReferenceLogProbsFile.Open(settings.ReferenceLogits, model.Shape.VocabSize, tokens, windows);
            if (settings.SaveReference is not null)
                save = new ReferenceLogProbsFile.Writer(settings.SaveReference, model.Shape.VocabSize, tokens, windows);

            var started = System.Diagnostics.Stopwatch.StartNew();
            PerplexityResult result;
            if (interactive)
            {
                result = null!;
                AnsiConsole.Progress().AutoClear(true)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask("perplexity", maxValue: windows.Count);
                        result = Perplexity.Evaluate(model, tokens, windows, reference, save, progress: new Inline(p =>
                        {
                            task.Value = p.WindowsDone;
                            task.Description = $"window {p.WindowsDone}/{p.Windows}  PPL {p.Perplexity:F4}";
                        }), cancel: cancel);
                    });
            }
            else result = Perplexity.Evaluate(model, tokens, windows, reference, save, cancel: cancel);
            save?.Complete();
            started.Stop();

            var report = new Report(settings, source, tokens.Length, model.Shape.VocabSize, result, started.Elapsed.TotalSeconds);
            stdout.WriteLine(settings.Json ? report.ToJson().ToJsonString() : report.ToText());
            return 0;
        }
        finally
        {
            save?.Dispose();
            (reference as IDisposable)?.Dispose();
            referenceModel?.Dispose();
        }
    }

    private static (string Text, string Source) ReadText(string file, TextReader stdin)
    {
        string text, source;
        if (file == "-") (text, source) = (stdin.ReadToEnd(), "stdin");
        else
        {
            if (!System.IO.File.Exists(file)) throw new HarpiaException($"--file {file}: not found");
            (text, source) = (System.IO.File.ReadAllText(file, Encoding.UTF8), file);
        }
        if (string.IsNullOrWhiteSpace(text)) throw new HarpiaException($"{source}: the text is empty");
        return (text, source);
    }

    /// <summary>KL divergence is only meaningful token for token: same vocabulary, and the same ids for this text.</summary>
    private static void CheckSameTokenization(DecoderModel reference, string referencePath, string modelPath, int vocab, string text, int[] tokens)
    {
        if (reference.Shape.VocabSize != vocab)
            throw new HarpiaException($"--reference {referencePath} has a vocabulary of {reference.Shape.VocabSize} tokens, --model {modelPath} {vocab}: " +
                                      "KL divergence needs models with the same tokenizer");
        var own = GenerateCommand.LoadTokenizer(reference, referencePath, null);
        if (own is null) return; // nothing to compare with; the model's tokenizer is used for both
        var ids = own.Encode(text);
        int n = Math.Min(ids.Count, tokens.Length);
        for (int i = 0; i < n; i++)
            if (ids[i] != tokens[i])
                throw new HarpiaException($"--reference {referencePath} tokenizes the text differently from --model (token {i}: {ids[i]} vs {tokens[i]}): " +
                                          "KL divergence needs the same tokenizer");
        if (ids.Count != tokens.Length)
            throw new HarpiaException($"--reference {referencePath} tokenizes the text into {ids.Count} tokens, --model into {tokens.Length}: KL divergence needs the same tokenizer");
    }

    /// <summary>Reports on the evaluating thread (Progress&lt;T&gt; would post to the thread pool, after the bar is gone).</summary>
    private sealed class Inline(Action<PerplexityProgress> report) : IProgress<PerplexityProgress>
    {
        public void Report(PerplexityProgress value) => report(value);
    }

    internal sealed record Report(Settings Settings, string Source, int TextTokens, int Vocab, PerplexityResult Result, double Seconds)
    {
        public JsonObject ToJson()
        {
            var r = Result;
            var json = new JsonObject
            {
                ["model"] = Settings.Model,
                ["file"] = Source,
                ["text_tokens"] = TextTokens,
                ["context"] = r.Windows.Context,
                ["windows"] = r.Windows.Count,
                ["score_all"] = Settings.ScoreAll,
                ["tokens_scored"] = r.TokensScored,
                ["perplexity"] = r.Perplexity,
                ["perplexity_stderr"] = r.PerplexityStdErr,
                ["mean_nll"] = r.MeanNll,
                ["mean_nll_stderr"] = r.MeanNllStdErr,
                ["tokens_per_second"] = Math.Round(r.TokensPerSecond, 1),
                ["seconds"] = Math.Round(Seconds, 3),
            };
            if (Settings.SaveReference is not null) json["saved_reference"] = Settings.SaveReference;
            if (r.Kl is { } kl)
            {
                json["reference"] = Settings.Reference ?? Settings.ReferenceLogits;
                json["reference_perplexity"] = kl.ReferencePerplexity;
                json["reference_perplexity_stderr"] = kl.ReferencePerplexityStdErr;
                json["kl_divergence_mean"] = kl.Mean;
                json["kl_divergence_stderr"] = kl.StdErr;
                json["kl_divergence_median"] = kl.Median;
                json["kl_divergence_p99"] = kl.P99;
                json["kl_divergence_max"] = kl.Max;
                json["kl_divergence_min"] = kl.Min;
                json["same_top_percent"] = 100 * kl.SameTopFraction;
                json["same_top_stderr_percent"] = 100 * kl.SameTopStdErr;
                json["rms_delta_p_percent"] = 100 * kl.RmsDeltaP;
                json["rms_delta_p_stderr_percent"] = 100 * kl.RmsDeltaPStdErr;
                json["mean_delta_p_percent"] = 100 * kl.MeanDeltaP;
                json["mean_delta_p_stderr_percent"] = 100 * kl.MeanDeltaPStdErr;
            }
            return json;
        }

        public string ToText()
        {
            var r = Result;
            var w = r.Windows;
            var s = new StringBuilder();
            s.AppendLine($"model        {Settings.Model} (vocabulary {Vocab:N0})");
            s.AppendLine($"text         {Source}: {TextTokens:N0} tokens; {w.Count} windows of {w.Context}, scoring {w.ScoredPerWindow} per window " +
                         $"({r.TokensScored:N0} tokens)");
            s.AppendLine($"perplexity   {r.Perplexity:F4} ± {r.PerplexityStdErr:F4}   (mean NLL {r.MeanNll:F5} ± {r.MeanNllStdErr:F5} nats/token)");
            s.Append($"speed        {r.TokensPerSecond:N1} tokens/s through --model, {Harpia.Backends.Cpu.CpuBackend.Default.Threads} threads; {Seconds:F1} s in all");
            if (Settings.SaveReference is not null) s.Append($"\nsaved        {Settings.SaveReference} (log-probs for --reference-logits)");
            if (r.Kl is { } kl)
            {
                s.AppendLine();
                s.AppendLine($"reference    {Settings.Reference ?? Settings.ReferenceLogits}: perplexity {kl.ReferencePerplexity:F4} ± {kl.ReferencePerplexityStdErr:F4}");
                s.AppendLine($"KL(ref‖model) mean {kl.Mean:F6} ± {kl.StdErr:F6}   median {kl.Median:F6}   99% {kl.P99:F6}   max {kl.Max:F6}   (nats/token)");
                s.AppendLine($"same top     {100 * kl.SameTopFraction:F3} ± {100 * kl.SameTopStdErr:F3} %");
                s.Append($"Δp           RMS {100 * kl.RmsDeltaP:F3} ± {100 * kl.RmsDeltaPStdErr:F3} %, mean {100 * kl.MeanDeltaP:F3} ± {100 * kl.MeanDeltaPStdErr:F3} % " +
                         "(probability of the actual next token, model − reference)");
            }
            return s.ToString();
        }
    }
}

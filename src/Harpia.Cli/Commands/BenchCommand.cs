using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Runtime;
using Harpia.Tensors;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia bench &lt;model&gt;</c>: prefill and decode tokens/s like llama-bench (pp P, tg G, mean ± sd over reps),
/// peak resident memory, the weight bytes read per decoded token (for a roofline), and with <c>--concurrency</c>
/// aggregate decode throughput and time to first token of N concurrent streams through the batching runtime.
/// </summary>
public sealed class BenchCommand : Command<BenchCommand.Settings>
{
    public sealed class Settings : PlacementSettings
    {
        [CommandArgument(0, "<MODEL>")]
        [Description("A Hugging Face folder (config.json + safetensors) or a GGUF file.")]
        public string Model { get; init; } = "";

        [CommandOption("--prompt-tokens <P>"), Description("Prompt length of the prefill test (pp P)."), DefaultValue(512)]
        public int PromptTokens { get; init; } = 512;

        [CommandOption("--gen-tokens <G>"), Description("Decode steps of the generation test (tg G); also each concurrent stream's length."), DefaultValue(128)]
        public int GenTokens { get; init; } = 128;

        [CommandOption("--reps <N>"), Description("Timed repetitions of each test, after one warm-up."), DefaultValue(3)]
        public int Reps { get; init; } = 3;

        [CommandOption("--warmup <SECONDS>"), Description("Untimed warm-up before the timed runs (at least one round), so the JIT has optimized the kernels."), DefaultValue(ModelBenchmark.DefaultWarmupSeconds)]
        public double Warmup { get; init; } = ModelBenchmark.DefaultWarmupSeconds;

        [CommandOption("--threads <N>"), Description("Compute threads (default: all cores).")]
        public int? Threads { get; init; }

        [CommandOption("--quantize <TYPE>"), Description("Quantize weights on load (e.g. q8_0, q4_k_m).")]
        public string? Quantize { get; init; }

        [CommandOption("--concurrency <LIST>"), Description("Comma-separated stream counts (e.g. 1,4,16) to run through the batching runtime.")]
        public string? Concurrency { get; init; }

        [CommandOption("--concurrency-prompt-tokens <P>"), Description("Prompt length of each concurrent stream."), DefaultValue(128)]
        public int ConcurrencyPromptTokens { get; init; } = 128;

        [CommandOption("--kv-cache-dtype <TYPE>"), Description("KV cache element type: f32 (default) or f16.")]
        public string? KvCacheDtype { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of a table.")]
        public bool Json { get; init; }

        /// <summary>Throws a <see cref="HarpiaException"/> for the first bad argument; returns the concurrency levels (empty without --concurrency).</summary>
        public int[] Check()
        {
            if (PromptTokens < 1) throw new HarpiaException($"--prompt-tokens must be at least 1, got {PromptTokens}");
            if (GenTokens < 1) throw new HarpiaException($"--gen-tokens must be at least 1, got {GenTokens}");
            if (Reps < 1) throw new HarpiaException($"--reps must be at least 1, got {Reps}");
            if (!(Warmup >= 0) || double.IsInfinity(Warmup)) throw new HarpiaException($"--warmup must be a number of seconds ≥ 0, got {Warmup}");
            if (Threads is < 1) throw new HarpiaException($"--threads must be at least 1, got {Threads}");
            if (KvCacheDtype is { } kv) Harpia.Backends.KvCacheDtypes.Parse(kv);
            if (Concurrency is null) return [];
            var levels = ParseConcurrency(Concurrency);
            if (ConcurrencyPromptTokens < 1) throw new HarpiaException($"--concurrency-prompt-tokens must be at least 1, got {ConcurrencyPromptTokens}");
            if (GenTokens < 2) throw new HarpiaException($"--concurrency needs --gen-tokens of at least 2 (the first token comes from prefill), got {GenTokens}");
            return levels;
        }

        public override Spectre.Console.ValidationResult Validate()
        {
            try
            {
                Check();
                return Spectre.Console.ValidationResult.Success();
            }
            catch (HarpiaException e)
            {
                return Spectre.Console.ValidationResult.Error(e.Message);
            }
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken) =>
        Run(settings, Console.Out, Console.Error, cancellationToken);

    /// <summary>Parses "1,4,16": positive stream counts, duplicates kept in order.</summary>
    internal static int[] ParseConcurrency(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var levels = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out levels[i]) || levels[i] < 1)
                throw new HarpiaException($"--concurrency {text}: '{parts[i]}' is not a stream count (give positive integers like 1,4,16)");
        return levels;
    }

    /// <summary>Runs the benchmark; progress goes to <paramref name="stderr"/>, the table or JSON to <paramref name="stdout"/>.</summary>
    internal static int Run(Settings s, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var levels = s.Check();
        string modelPath = TextGeneratorFactory.LocalModelOrBundled(s.Model);
        if (!File.Exists(modelPath) && !Directory.Exists(modelPath))
            throw new HarpiaException($"{modelPath}: no such model folder or GGUF file");
        if (s.Threads is int threads) Harpia.Backends.Cpu.CpuBackend.Default.Threads = threads;
        var kvDtype = s.KvCacheDtype is { } kv ? Harpia.Backends.KvCacheDtypes.Parse(kv) : Harpia.Backends.KvCacheDtype.F32;

        stderr.WriteLine($"bench: loading {modelPath}…");
        var model = ModelHost.LoadModel(modelPath, s.Quantize, device: s.Device, log: stderr);
        try { ModelPlacement.Place(model, Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath)), s.Placement, s.PromptTokens + s.GenTokens, s.PromptTokens, stderr); }
        catch { model.Dispose(); throw; }
        ModelBenchmarkResult result;
        IReadOnlyList<ConcurrencyResult>? concurrency = null;
        try
        {
            int maxPositions = model.Shape.MaxPositions;
            if (levels.Length > 0 && s.ConcurrencyPromptTokens + s.GenTokens > maxPositions)
                throw new HarpiaException($"--concurrency-prompt-tokens ({s.ConcurrencyPromptTokens}) + --gen-tokens ({s.GenTokens}) exceed the model's {maxPositions} positions");
            stderr.WriteLine($"bench: pp{s.PromptTokens} and tg{s.GenTokens}, {s.Reps} reps after a warm-up, {Harpia.Backends.Cpu.CpuBackend.Default.Threads} threads…");
            result = ModelBenchmark.Run(model, s.PromptTokens, s.GenTokens, s.Reps, s.Warmup, kvDtype, cancellationToken: cancellationToken);
        }
        catch
        {
            model.Dispose();
            throw;
        }

        if (levels.Length > 0)
        {
            stderr.WriteLine($"bench: concurrency {string.Join(",", levels)} (prompt {s.ConcurrencyPromptTokens}, {s.GenTokens} tokens per stream)…");
            // The same loaded (and possibly quantized-on-load) model, now owned by the generator.
            using var generator = ModelHost.OpenGenerator(model, modelPath,
                ConcurrencyOptions(levels.Max(), s.ConcurrencyPromptTokens, s.GenTokens) with { KvCacheDtype = kvDtype }, placement: s.Placement);
            var throughput = new ThroughputBenchmark(generator, s.ConcurrencyPromptTokens, s.GenTokens);
            concurrency = throughput.RunAsync(levels, cancellationToken: cancellationToken).GetAwaiter().GetResult();
        }
        else model.Dispose();

        if (s.Json) stdout.WriteLine(ToJson(s, result, concurrency).ToJsonString());
        else WriteTable(stdout, s, result, concurrency);
        return 0;
    }

    /// <summary>
    /// Runtime limits that admit every stream of the largest level at once: each request's whole length fits, the KV
    /// budget holds all of them (plus one spare request for blocks the prefix cache still holds), and one step's
    /// prefill budget takes all their prompts, so no stream waits for another's prompt to be chunked in.
    /// </summary>
    internal static GeneratorOptions ConcurrencyOptions(int maxStreams, int promptTokens, int genTokens)
    {
        var defaults = new GeneratorOptions();
        int total = promptTokens + genTokens;
        long perRequest = (total + defaults.KvBlockSize - 1L) / defaults.KvBlockSize * defaults.KvBlockSize;
        return new GeneratorOptions
        {
            MaxConcurrentRequests = Math.Max(defaults.MaxConcurrentRequests, maxStreams + 1),
            MaxInputTokens = promptTokens,
            MaxTotalTokens = total,
            MaxBatchTotalTokens = (maxStreams + 1L) * perRequest,
            MaxBatchPrefillTokens = (int)Math.Min(int.MaxValue, Math.Max(defaults.MaxBatchPrefillTokens, (long)maxStreams * promptTokens)),
        };
    }

    internal static JsonObject ToJson(Settings s, ModelBenchmarkResult r, IReadOnlyList<ConcurrencyResult>? concurrency)
    {
        var json = new JsonObject
        {
            ["model"] = s.Model,
            ["quantize"] = s.Quantize,
            ["threads"] = r.Threads,
            ["prompt_tokens"] = r.PromptTokens,
            ["gen_tokens"] = r.GenTokens,
            ["reps"] = r.Reps,
            ["warmup_s"] = s.Warmup,
            ["prefill_tokens_per_s"] = r.PrefillTokensPerSecond,
            ["prefill_tokens_per_s_sd"] = r.PrefillTokensPerSecondSd,
            ["decode_tokens_per_s"] = r.DecodeTokensPerSecond,
            ["decode_tokens_per_s_sd"] = r.DecodeTokensPerSecondSd,
            ["prefill_samples"] = new JsonArray(r.PrefillSamples.Select(v => (JsonNode?)v).ToArray()),
            ["decode_samples"] = new JsonArray(r.DecodeSamples.Select(v => (JsonNode?)v).ToArray()),
            ["peak_rss_bytes"] = r.PeakRssBytes,
            ["current_rss_bytes"] = r.CurrentRssBytes,
            ["weight_bytes_per_token"] = r.WeightBytesPerToken,
        };
        if (concurrency is not null)
        {
            json["concurrency_prompt_tokens"] = s.ConcurrencyPromptTokens;
            json["concurrency"] = JsonSerializer.SerializeToNode(concurrency);
        }
        return json;
    }

    private static void WriteTable(TextWriter o, Settings s, ModelBenchmarkResult r, IReadOnlyList<ConcurrencyResult>? concurrency)
    {
        var c = CultureInfo.InvariantCulture;
        o.WriteLine($"{s.Model}{(s.Quantize is null ? "" : $" (--quantize {s.Quantize})")}: {r.Threads} threads, {r.Reps} reps after a warm-up");
        o.WriteLine();
        o.WriteLine($"{"test",-8} {"tokens/s",12} {"± sd",10}");
        o.WriteLine(string.Create(c, $"{"pp" + r.PromptTokens,-8} {r.PrefillTokensPerSecond,12:F1} {r.PrefillTokensPerSecondSd,10:F1}"));
        o.WriteLine(string.Create(c, $"{"tg" + r.GenTokens,-8} {r.DecodeTokensPerSecond,12:F1} {r.DecodeTokensPerSecondSd,10:F1}"));
        o.WriteLine();
        string rss = r.PeakRssBytes is long peak ? string.Create(c, $"{peak / 1e6:F1} MB") + (r.CurrentRssBytes is long cur ? string.Create(c, $" (now {cur / 1e6:F1} MB)") : "") : "n/a";
        o.WriteLine($"peak RSS: {rss}");
        o.WriteLine(string.Create(c, $"weights read per decoded token: {r.WeightBytesPerToken / 1e6:F2} MB (÷ memory bandwidth = decode upper bound)"));
        if (concurrency is null) return;
        o.WriteLine();
        o.WriteLine($"concurrent streams (prompt {s.ConcurrencyPromptTokens} tokens, {s.GenTokens} generated each):");
        o.WriteLine($"{"streams",7} {"decode tok/s",13} {"ttft p50 ms",12} {"ttft p95 ms",12}");
        foreach (var l in concurrency)
            o.WriteLine(string.Create(c, $"{l.Streams,7} {l.DecodeTokensPerSecond,13:F1} {l.TtftP50Ms,12:F1} {l.TtftP95Ms,12:F1}"));
    }
}

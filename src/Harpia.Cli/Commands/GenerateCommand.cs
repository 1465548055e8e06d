using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Formats;
using Harpia.Models;
using Harpia.Backends;
using Harpia.Tokenization;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia generate --model &lt;folder|gguf&gt; "prompt"</c>: streams a continuation (greedy with
/// <c>--temperature 0</c>), or with <c>--json</c> prints one TGI <c>GenerateResponse</c> with details and timings.
/// Every generation runs through the serving runtime's <see cref="Harpia.Runtime.Generator"/> and sampler, so the same
/// seed gives the same tokens here as from <c>harpia serve</c>.
/// </summary>
public sealed class GenerateCommand : Command<GenerateCommand.Settings>
{
    public sealed class Settings : PlacementSettings
    {
        [CommandArgument(0, "[PROMPT]")]
        [Description("The prompt text.")]
        public string? Prompt { get; init; }

        [CommandOption("-m|--model <MODEL>")]
        [Description("A Hugging Face folder (config.json + safetensors) or a GGUF file; default: the bundled tiny Falcon.")]
        public string Model { get; init; } = "";

        [CommandOption("--ids <IDS>")]
        [Description("The prompt as comma-separated token ids instead of text.")]
        public string? Ids { get; init; }

        [CommandOption("--max-new-tokens <N>")]
        public int MaxNewTokens { get; init; } = 32;

        [CommandOption("--temperature <T>")]
        [Description("0 (default) is greedy; above 0 samples from softmax(logits / T).")]
        public float Temperature { get; init; }

        [CommandOption("--seed <SEED>")]
        public ulong? Seed { get; init; }

        [CommandOption("--ignore-eos")]
        [Description("Keep generating after the end-of-text token.")]
        public bool IgnoreEos { get; init; }

        [CommandOption("--tokenizer <FILE>")]
        [Description("tokenizer.json to use (default: the one in the model folder or next to the GGUF file).")]
        public string? Tokenizer { get; init; }

        [CommandOption("--threads <N>")]
        public int? Threads { get; init; }

        [CommandOption("--quantize <TYPE>")]
        [Description("Quantize the f32/f16/bf16 weights in memory when loading: Q8_0, Q4_K_M, Q6_K, … (as `harpia quantize --type`).")]
        public string? Quantize { get; init; }

        [CommandOption("--kv-cache-dtype <TYPE>")]
        [Description("KV cache element type: f32 (default) or f16.")]
        public string? KvCacheDtype { get; init; }

        [CommandOption("--json")]
        [Description("Print one TGI GenerateResponse (with details and timings) instead of streaming text.")]
        public bool Json { get; init; }

        // The knobs below run through the serving runtime (Generator), with TGI / Hugging Face semantics.
        [CommandOption("--top-k <K>")]
        public int? TopK { get; init; }

        [CommandOption("--top-p <P>")]
        public float? TopP { get; init; }

        [CommandOption("--typical-p <P>")]
        public float? TypicalP { get; init; }

        [CommandOption("--repetition-penalty <R>")]
        [Description("CTRL-style: > 1 divides positive logits of seen tokens and multiplies negative ones.")]
        public float? RepetitionPenalty { get; init; }

        [CommandOption("--frequency-penalty <F>")]
        public float? FrequencyPenalty { get; init; }

        [CommandOption("--presence-penalty <F>")]
        public float? PresencePenalty { get; init; }

        [CommandOption("--stop <TEXT>")]
        [Description("Stop when this text is generated (not printed); repeat for several.")]
        public string[] Stop { get; init; } = [];

        /// <summary>Whether any knob beyond temperature/seed is set (all of them run through the runtime's sampler).</summary>
        public bool UsesRuntime => TopK is not null || TopP is not null || TypicalP is not null || RepetitionPenalty is not null
                                   || FrequencyPenalty is not null || PresencePenalty is not null || Stop.Length > 0;

        public override Spectre.Console.ValidationResult Validate()
        {
            if (Prompt is null == Ids is null) return Spectre.Console.ValidationResult.Error("give either a prompt or --ids");
            if (MaxNewTokens < 0) return Spectre.Console.ValidationResult.Error("--max-new-tokens must be ≥ 0");
            if (!(Temperature >= 0) || float.IsInfinity(Temperature)) return Spectre.Console.ValidationResult.Error("--temperature must be ≥ 0");
            return Spectre.Console.ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Threads is int threads) Harpia.Backends.Cpu.CpuBackend.Default.Threads = threads;
        if (settings.KvCacheDtype is { } kv) KvCacheDtypes.Parse(kv); // a bad value fails before the model loads
        string modelPath = TextGeneratorFactory.ResolveModelAsync(NullIfEmpty(settings.Model), ct: cancellationToken).GetAwaiter().GetResult();
        settings = new Settings
        {
            Prompt = settings.Prompt, Model = modelPath, Ids = settings.Ids, MaxNewTokens = settings.MaxNewTokens, Temperature = settings.Temperature,
            Seed = settings.Seed, IgnoreEos = settings.IgnoreEos, Tokenizer = settings.Tokenizer, Threads = settings.Threads, Quantize = settings.Quantize,
            KvCacheDtype = settings.KvCacheDtype, Json = settings.Json, TopK = settings.TopK, TopP = settings.TopP, TypicalP = settings.TypicalP,
            RepetitionPenalty = settings.RepetitionPenalty, FrequencyPenalty = settings.FrequencyPenalty, PresencePenalty = settings.PresencePenalty,
            Stop = settings.Stop, Device = settings.Device,
            DeviceMap = settings.DeviceMap, MaxMemory = settings.MaxMemory, NumShard = settings.NumShard, Sharded = settings.Sharded,
        };
        var load = Stopwatch.StartNew();
        // Loaded onto its device map (printed before anything runs): KV and activations for a whole context (generate's dense cache).
        var kvDtype = settings.KvCacheDtype is { } kvText ? KvCacheDtypes.Parse(kvText) : KvCacheDtype.F32;
        using var model = Harpia.Runtime.ModelPlacement.Load(settings.Model, new ModelLoadOptions { Quantize = Harpia.Runtime.ModelHost.QuantizeScheme(settings.Model, settings.Quantize) },
            settings.Placement, shape => (shape.MaxPositions, shape.MaxPositions), kvDtype, Console.Error);
        var tokenizer = LoadTokenizer(model, settings.Model, settings.Tokenizer);
        load.Stop();

        int[] prompt;
        if (settings.Ids is not null) prompt = ParseIds(settings.Ids);
        else if (tokenizer is null)
            throw new HarpiaException($"no tokenizer for {settings.Model} (no tokenizer.json found, or none can be loaded yet); pass the prompt as --ids 1,2,3");
        else prompt = tokenizer.Encode(settings.Prompt!).ToArray();
        if (prompt.Length == 0) throw new HarpiaException("the prompt is empty");

        int room = NewTokensThatFit(model, prompt.Length, settings.MaxNewTokens);
        if (room < settings.MaxNewTokens)
            Console.Error.WriteLine($"note: the model's context is {model.Shape.MaxPositions} positions; after the {prompt.Length}-token prompt " +
                                    $"there is room for {room} new tokens, not {settings.MaxNewTokens}");
        if (settings.Stop.Length > 0 && tokenizer is null) throw new HarpiaException($"no tokenizer for {settings.Model}: --stop needs one");
        var output = Console.Out;
        // With a tokenizer the runtime streams detokenized text; without one (--ids only) each id is printed.
        var result = RunWithRuntime(model, tokenizer, settings, prompt, cancellationToken,
            settings.Json || tokenizer is null ? null : text => { output.Write(text); output.Flush(); },
            settings.Json || tokenizer is not null ? null : token => { output.Write($"{token.Id} "); output.Flush(); }).GetAwaiter().GetResult();
        if (settings.Json) output.WriteLine(ToTgiJson(result, tokenizer, load.Elapsed.TotalMilliseconds).ToJsonString());
        else
        {
            output.WriteLine();
            Console.Error.WriteLine($"[{result.Tokens.Count} tokens, {result.FinishReason}; prefill {prompt.Length} tokens in {result.PrefillMs:F0} ms, " +
                                    $"decode {result.DecodeTokensPerSecond:F1} tokens/s]");
        }
        return 0;
    }

    private static string? NullIfEmpty(string s) => string.IsNullOrEmpty(s) ? null : s;

    /// <summary>
    /// The one place the CLI obtains a tokenizer: a tokenizer.json given explicitly, the tokenizer a GGUF file
    /// carries in its metadata, or tokenizer.json in the model folder (or next to the GGUF file).
    /// </summary>
    internal static ITokenizer? LoadTokenizer(DecoderModel model, string modelPath, string? explicitFile) =>
        Harpia.Runtime.ModelHost.LoadTokenizer(model.Source, modelPath, explicitFile);

    /// <summary>
    /// How many of <paramref name="requested"/> new tokens fit the model's context after the prompt: generation stops
    /// there (finish reason "length"), as llama.cpp stops at n_ctx, rather than run positions the model never saw.
    /// </summary>
    internal static int NewTokensThatFit(ICausalLM model, int promptLength, int requested)
    {
        int context = model.Shape.MaxPositions;
        if (promptLength >= context)
            throw new HarpiaException($"the prompt has {promptLength} tokens; the model's context is {context} positions, which leaves no room to generate");
        return Math.Min(requested, context - promptLength);
    }

    public sealed record Options(int MaxNewTokens, float Temperature, ulong? Seed, bool StopAtEos);
    public sealed record GeneratedToken(int Id, float Logprob, bool Special);
    public sealed record Result(int[] Prompt, List<GeneratedToken> Tokens, string FinishReason, double PrefillMs, double DecodeMs)
    {
        public double DecodeTokensPerSecond => Tokens.Count > 1 && DecodeMs > 0 ? (Tokens.Count - 1) / (DecodeMs / 1000) : 0;
    }

    /// <summary>
    /// A generation through the serving runtime's <see cref="Harpia.Runtime.Generator"/>: its sampler (temperature,
    /// top-k, top-p, typical-p, penalties, seeds) and its stop-sequence matching, exactly as `harpia serve` applies them.
    /// </summary>
    /// <param name="tokenizer">Null with --ids and no tokenizer: tokens are reported by id, with no text.</param>
    internal static async Task<Result> RunWithRuntime(DecoderModel model, ITokenizer? tokenizer, Settings s, int[] prompt,
        CancellationToken cancel, Action<string>? onText, Action<GeneratedToken>? onToken = null)
    {
        int maxNew = NewTokensThatFit(model, prompt.Length, s.MaxNewTokens);
        if (maxNew == 0) return new Result(prompt, [], "length", 0, 0);
        var description = Harpia.Runtime.ModelHost.Describe(model, s.Model);
        int total = prompt.Length + maxNew;
        var defaults = new Harpia.Runtime.GeneratorOptions();
        using var generator = new Harpia.Runtime.Generator(model, tokenizer ?? new IdsOnlyTokenizer(model.Shape.VocabSize, model.EosTokenId), description,
            new Harpia.Runtime.GeneratorOptions
            {
                MaxConcurrentRequests = 1, MaxTotalTokens = total, MaxInputTokens = Math.Max(1, total - 1), MaxStopSequences = Math.Max(4, s.Stop.Length),
                // One sequence: the KV cache holds exactly its positions.
                MaxBatchTotalTokens = (total + defaults.KvBlockSize - 1L) / defaults.KvBlockSize * defaults.KvBlockSize,
                KvCacheDtype = s.KvCacheDtype is { } kv ? KvCacheDtypes.Parse(kv) : defaults.KvCacheDtype,
            });
        bool sample = s.Temperature > 0 || s.TopK > 0 || s.TopP < 1 || s.TypicalP < 1;
        var request = new Harpia.Runtime.GenerationRequest
        {
            PromptIds = prompt,
            MaxNewTokens = maxNew,
            StopSequences = s.Stop,
            IgnoreEos = s.IgnoreEos,
            Sampling = new Harpia.Runtime.SamplingParameters
            {
                DoSample = sample,
                Temperature = s.Temperature > 0 ? s.Temperature : 1f,
                TopK = s.TopK ?? 0,
                TopP = s.TopP ?? 1f,
                TypicalP = s.TypicalP ?? 1f,
                RepetitionPenalty = s.RepetitionPenalty ?? 1f,
                FrequencyPenalty = s.FrequencyPenalty ?? 0f,
                PresencePenalty = s.PresencePenalty ?? 0f,
                Seed = s.Seed,
            },
        };
        var tokens = new List<GeneratedToken>();
        string finish = "length";
        var clock = Stopwatch.StartNew();
        double prefillMs = 0;
        await foreach (var e in generator.GenerateAsync(request, cancel).ConfigureAwait(false))
        {
            if (e.Token is { } t)
            {
                if (tokens.Count == 0) prefillMs = clock.Elapsed.TotalMilliseconds;
                var token = new GeneratedToken(t.Id, t.Logprob, t.Special);
                tokens.Add(token);
                onToken?.Invoke(token);
            }
            if (e.TextDelta.Length > 0) onText?.Invoke(e.TextDelta);
            if (e.Finish is { } f)
                finish = f switch { Harpia.Runtime.FinishReason.EosToken => "eos_token", Harpia.Runtime.FinishReason.StopSequence => "stop_sequence", _ => "length" };
        }
        return new Result(prompt, tokens, finish, prefillMs, clock.Elapsed.TotalMilliseconds - prefillMs);
    }

    /// <summary>
    /// Prefill, then one token per step, greedy at temperature 0, else sampled with the seed: the runtime's path
    /// (<see cref="RunWithRuntime"/>) with only temperature, seed and EOS set.
    /// </summary>
    internal static Result Run(DecoderModel model, int[] prompt, Options options, CancellationToken cancel, Action<GeneratedToken> onToken)
    {
        var settings = new Settings
        {
            Model = model.Source.Path, MaxNewTokens = options.MaxNewTokens, Temperature = options.Temperature, Seed = options.Seed,
            IgnoreEos = !options.StopAtEos,
        };
        return RunWithRuntime(model, null, settings, prompt, cancel, null, onToken).GetAwaiter().GetResult();
    }

    /// <summary>For prompts given as ids with no tokenizer: decodes nothing, marks only EOS special.</summary>
    private sealed class IdsOnlyTokenizer(int vocabSize, int? eos) : ITokenizer
    {
        public int VocabSize => vocabSize;
        public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false) => throw new HarpiaException("this model has no tokenizer; give the prompt as --ids");
        public IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false) => throw new HarpiaException("this model has no tokenizer; give the prompt as --ids");
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false) => "";
        public string? IdToToken(int id) => null;
        public int? TokenToId(string token) => null;
        public bool IsSpecial(int id) => id == eos;
        public byte[]? TokenBytes(int id) => null;
        public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new NoText();
        private sealed class NoText : IStreamingDecoder
        {
            public string Push(int id) => "";
            public string Flush() => "";
        }
    }

    internal static JsonObject ToTgiJson(Result result, ITokenizer? tokenizer, double loadMs)
    {
        string Text(int id) => tokenizer?.Decode([id]) ?? "";
        var ids = result.Tokens.Where(t => !t.Special).Select(t => t.Id).ToArray();
        var tokens = new JsonArray(result.Tokens.Select(t => (JsonNode)new JsonObject
        {
            ["id"] = t.Id, ["text"] = Text(t.Id), ["logprob"] = t.Logprob, ["special"] = t.Special,
        }).ToArray());
        return new JsonObject
        {
            ["generated_text"] = tokenizer?.Decode(ids, skipSpecialTokens: true) ?? "",
            ["details"] = new JsonObject
            {
                ["finish_reason"] = result.FinishReason,
                ["generated_tokens"] = result.Tokens.Count,
                ["seed"] = null,
                ["prefill"] = new JsonArray(),
                ["tokens"] = tokens,
            },
            ["timings"] = new JsonObject
            {
                ["load_ms"] = Math.Round(loadMs, 2),
                ["prompt_tokens"] = result.Prompt.Length,
                ["prefill_ms"] = Math.Round(result.PrefillMs, 2),
                ["decode_ms"] = Math.Round(result.DecodeMs, 2),
                ["decode_tokens_per_second"] = Math.Round(result.DecodeTokensPerSecond, 2),
            },
        };
    }

    private static int[] ParseIds(string text)
    {
        var parts = text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i]) || ids[i] < 0) throw new HarpiaException($"--ids: '{parts[i]}' is not a token id");
        return ids;
    }
}

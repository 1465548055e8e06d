using System.ComponentModel;
using Harpia.Backends;
using Harpia.Runtime;
using Harpia.Server;
using Microsoft.Extensions.Hosting;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// The one place the CLI obtains a runtime for a model: <c>harpia serve</c> and <c>harpia chat</c> both call
/// <see cref="Open"/>, which loads the model through <see cref="ModelHost"/>.
/// </summary>
public static class TextGeneratorFactory
{
    public sealed record Request(string ModelPath, string? Quantize, int MaxConcurrentRequests, int? MaxBatchPrefillTokens,
        int? MaxBatchTotalTokens, int? MaxInputTokens = null, int? MaxTotalTokens = null, int? MaxTopNTokens = null, int? MaxStopSequences = null,
        string? KvCacheDtype = null, Harpia.Placement.PlacementRequest? Placement = null);

    /// <summary>Replaces the runtime (tests run the commands over a fake generator).</summary>
    public static Func<Request, ITextGenerator>? Override { get; set; }

    /// <summary>Loads the model and starts the continuous-batching runtime over it, with the launcher's limits.</summary>
    public static ITextGenerator Open(Request request)
    {
        if (Override is { } make) return make(request);
        var defaults = new GeneratorOptions();
        var options = new GeneratorOptions
        {
            MaxConcurrentRequests = request.MaxConcurrentRequests,
            MaxBatchPrefillTokens = request.MaxBatchPrefillTokens ?? defaults.MaxBatchPrefillTokens,
            MaxBatchTotalTokens = request.MaxBatchTotalTokens,
            MaxInputTokens = request.MaxInputTokens,
            MaxTotalTokens = request.MaxTotalTokens,
            MaxTopNTokens = request.MaxTopNTokens ?? defaults.MaxTopNTokens,
            MaxStopSequences = request.MaxStopSequences ?? defaults.MaxStopSequences,
            KvCacheDtype = request.KvCacheDtype is { } kv ? KvCacheDtypes.Parse(kv) : defaults.KvCacheDtype,
        };
        return ModelHost.OpenGenerator(request.ModelPath, options, request.Quantize, placement: request.Placement, log: Console.Error);
    }

    /// <summary>The tiny Falcon shipped in models/, found from the working directory or the executable's folder upward.</summary>
    public static string BundledModel(string flag = "--model")
    {
        if (Environment.GetEnvironmentVariable("HARPIA_BUNDLED_MODEL") is { Length: > 0 } fromEnv)
            return Directory.Exists(fromEnv) ? Path.GetFullPath(fromEnv)
                : throw new HarpiaException($"HARPIA_BUNDLED_MODEL={fromEnv}: no such folder");
        foreach (var start in BundledModelSearchStarts())
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "models", "harpia-tiny-falcon");
                if (Directory.Exists(candidate)) return candidate;
            }
        }
        throw new HarpiaException($"no {flag} given and the bundled model models/harpia-tiny-falcon/ was not found");
    }

    /// <summary>A local model argument: the path given, or the bundled model when none is.</summary>
    public static string LocalModelOrBundled(string? model, string flag = "--model") =>
        string.IsNullOrWhiteSpace(model) ? BundledModel(flag) : model;

    /// <summary>
    /// Where to look (each folder and its parents) for models/harpia-tiny-falcon: the working directory (a clone),
    /// the program's folder, and the folder a symlink to the program points into (an installed bundle:
    /// /usr/local/bin/harpia → /opt/harpia/bin/harpia, model in /opt/harpia/models).
    /// </summary>
    static IEnumerable<string> BundledModelSearchStarts()
    {
        yield return Directory.GetCurrentDirectory();
        yield return AppContext.BaseDirectory;
        if (Environment.ProcessPath is { } exe && new FileInfo(exe).ResolveLinkTarget(returnFinalTarget: true) is { } target
            && Path.GetDirectoryName(target.FullName) is { } dir)
            yield return dir;
    }

    /// <summary>
    /// The model folder or GGUF file to load: <paramref name="modelId"/> as a local path; else, like TGI's launcher, a
    /// Hugging Face repository id (owner/name) fetched into the local cache at <paramref name="revision"/>; or, with
    /// no id, the tiny Falcon shipped in models/.
    /// </summary>
    public static async Task<string> ResolveModelAsync(string? modelId, string revision = "main", CancellationToken ct = default)
    {
        if (string.IsNullOrWhiteSpace(modelId)) return BundledModel("--model-id");
        if (Directory.Exists(modelId) || File.Exists(modelId)) return Path.GetFullPath(modelId);
        if (!Harpia.Hub.HubClient.LooksLikeRepoId(Harpia.Hub.GgufFileChoice.SplitModelId(modelId).Repo))
            throw new HarpiaException($"--model-id {modelId}: no such folder or file, and not a Hugging Face repository id (owner/name, or owner/name:Q4_K_M for one GGUF quantization)");
        using var hub = new Harpia.Hub.HubClient();
        var (path, offline) = await DownloadCommand.WithProgressAsync(progress => hub.EnsureModelAsync(modelId, revision, null, progress, ct))
            .ConfigureAwait(false);
        if (offline) Console.Error.WriteLine($"harpia: the hub cannot be reached; using the cached copy of {modelId} in {path}");
        return path;
    }
}

public sealed class ServeCommand : AsyncCommand<ServeCommand.Settings>
{
    public sealed class Settings : PlacementSettings
    {
        [CommandOption("--model-id <PATH>"), Description("Model folder (config.json, safetensors, tokenizer.json), .gguf file, or Hugging Face repository id (fetched into the cache, as TGI does; owner/name:Q4_K_M fetches only that GGUF quantization, every part of a split one); default: the bundled tiny Falcon")]
        public string? ModelId { get; init; }

        [CommandOption("--revision <REV>"), Description("With a repository id: branch, tag or commit"), DefaultValue("main")]
        public string Revision { get; init; } = "main";

        [CommandOption("--hostname <HOST>"), Description("Address to listen on"), DefaultValue("127.0.0.1")]
        public string Hostname { get; init; } = "127.0.0.1";

        [CommandOption("-p|--port <PORT>"), Description("Port to listen on"), DefaultValue(8080)]
        public int Port { get; init; } = 8080;

        [CommandOption("--max-concurrent-requests <N>"), Description("Requests in flight before answering 429"), DefaultValue(128)]
        public int MaxConcurrentRequests { get; init; } = 128;

        [CommandOption("--max-best-of <N>"), DefaultValue(2)]
        public int MaxBestOf { get; init; } = 2;

        [CommandOption("--max-stop-sequences <N>"), DefaultValue(4)]
        public int MaxStopSequences { get; init; } = 4;

        [CommandOption("--max-top-n-tokens <N>"), DefaultValue(5)]
        public int MaxTopNTokens { get; init; } = 5;

        [CommandOption("--max-input-tokens|--max-input-length <N>"), Description("Longest prompt in tokens (default: context - 1)")]
        public int? MaxInputTokens { get; init; }

        [CommandOption("--max-total-tokens <N>"), Description("Prompt + generated tokens per request (default: the model's context)")]
        public int? MaxTotalTokens { get; init; }

        [CommandOption("--max-batch-prefill-tokens <N>")]
        public int? MaxBatchPrefillTokens { get; init; }

        [CommandOption("--max-batch-total-tokens <N>")]
        public int? MaxBatchTotalTokens { get; init; }

        [CommandOption("--kv-cache-dtype <TYPE>"), Description("KV cache element type: f32 (default) or f16 (half the memory; attention still computes in f32)")]
        public string? KvCacheDtype { get; init; }

        [CommandOption("--max-client-batch-size <N>"), DefaultValue(4)]
        public int MaxClientBatchSize { get; init; } = 4;

        [CommandOption("--max-n <N>"), Description("Most choices per prompt an OpenAI request may ask for (`n`, `best_of` on /v1/completions)"), DefaultValue(8)]
        public int MaxN { get; init; } = 8;

        [CommandOption("--quantize <KIND>"), Description("Quantize float weights on load: q8_0, q4_k_m, q5_k_m, q6_k, q4_0, …, or TGI's bitsandbytes-nf4/-fp4 (Falcon); gptq (or bitsandbytes-nf4 on a 4-bit checkpoint) loads such a checkpoint as stored; other TGI kinds are refused by name")]
        public string? Quantize { get; init; }

        [CommandOption("--api-key <KEY>"), Description("Bearer token clients must send; required unless --hostname is loopback. Default: $HARPIA_API_KEY (keeps the secret out of the process list)")]
        public string? ApiKey { get; init; }

        /// <summary>The flag, else the environment variable; empty means none. A whitespace-only key is refused: it
        /// looks like protection but is one a client can guess (and shells easily produce it from an unset variable).</summary>
        public string? ResolvedApiKey
        {
            get
            {
                if (ApiKey is { Length: > 0 } && string.IsNullOrWhiteSpace(ApiKey))
                    throw new HarpiaException("--api-key is only whitespace: pass a real token, or leave the flag out");
                if (!string.IsNullOrEmpty(ApiKey)) return ApiKey;
                string? fromEnv = Environment.GetEnvironmentVariable("HARPIA_API_KEY");
                if (fromEnv is { Length: > 0 } && string.IsNullOrWhiteSpace(fromEnv))
                    throw new HarpiaException("HARPIA_API_KEY is only whitespace: set a real token, or unset it");
                return string.IsNullOrEmpty(fromEnv) ? null : fromEnv;
            }
        }

        [CommandOption("--cors-allow-origin <ORIGIN>"), Description("Origin browsers may call from, as scheme://host or scheme://host:port; repeat or comma-separate. Default: none, no CORS headers")]
        public string[] CorsAllowOrigin { get; init; } = [];

        /// <summary>Every --cors-allow-origin value, comma-separated lists split.</summary>
        public IReadOnlyList<string> CorsAllowOrigins => CorsAllowOrigin
            .SelectMany(v => v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)).ToArray();

        [CommandOption("--payload-limit <BYTES>"), DefaultValue(2_000_000L)]
        public long PayloadLimit { get; init; } = 2_000_000;

        [CommandOption("--shutdown-grace-seconds <S>"), Description("On SIGTERM, how long to wait for in-flight requests"), DefaultValue(30.0)]
        public double ShutdownGraceSeconds { get; init; } = 30;
    }

    /// <summary>The server options these flags mean (checked again against the model when the server is built).</summary>
    public static ServerOptions ToServerOptions(Settings s, string? modelId = null) => new()
    {
        Hostname = s.Hostname,
        Port = s.Port,
        MaxConcurrentRequests = s.MaxConcurrentRequests,
        MaxBestOf = s.MaxBestOf,
        MaxStopSequences = s.MaxStopSequences,
        MaxTopNTokens = s.MaxTopNTokens,
        MaxInputTokens = s.MaxInputTokens,
        MaxTotalTokens = s.MaxTotalTokens,
        MaxBatchPrefillTokens = s.MaxBatchPrefillTokens,
        MaxBatchTotalTokens = s.MaxBatchTotalTokens,
        MaxClientBatchSize = s.MaxClientBatchSize,
        MaxN = s.MaxN,
        ApiKey = s.ResolvedApiKey,
        CorsAllowOrigins = s.CorsAllowOrigins,
        PayloadLimit = s.PayloadLimit,
        ShutdownGraceSeconds = s.ShutdownGraceSeconds,
        ModelId = modelId,
        LogToConsole = true,
    };

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        // Refuse an unprotected public bind (or a blank key) before loading anything (loading a big model takes minutes).
        if (!ServerOptions.IsLoopback(settings.Hostname) && settings.ResolvedApiKey is null)
            throw new HarpiaException($"--hostname {settings.Hostname} exposes the server beyond this machine: pass --api-key <token> or set HARPIA_API_KEY");
        string modelPath = await TextGeneratorFactory.ResolveModelAsync(settings.ModelId, settings.Revision, cancellationToken).ConfigureAwait(false);
        var generator = TextGeneratorFactory.Open(new TextGeneratorFactory.Request(modelPath, settings.Quantize,
            settings.MaxConcurrentRequests, settings.MaxBatchPrefillTokens, settings.MaxBatchTotalTokens,
            settings.MaxInputTokens, settings.MaxTotalTokens, settings.MaxTopNTokens, settings.MaxStopSequences, settings.KvCacheDtype, settings.Placement));
        try
        {
            var app = HarpiaServer.Build(ToServerOptions(settings, settings.ModelId ?? generator.Model.ModelId), generator);
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            AnsiConsole.MarkupLine($"[green]harpia[/] serving [bold]{Markup.Escape(generator.Model.ModelId)}[/] on {Markup.Escape(HarpiaServer.BoundAddress(app).ToString())}" +
                (settings.ResolvedApiKey is null ? "" : " (API key required)"));
            await app.WaitForShutdownAsync(CancellationToken.None).ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            (generator as IDisposable)?.Dispose();
        }
        return 0;
    }
}

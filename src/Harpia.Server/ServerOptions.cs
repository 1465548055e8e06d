using System.Net;

namespace Harpia.Server;

/// <summary>The server's settings, named after TGI's launcher flags.</summary>
public sealed record ServerOptions
{
    public string Hostname { get; init; } = "127.0.0.1";
    /// <summary>0 = any free port (tests read the bound address back).</summary>
    public int Port { get; init; } = 8080;
    public int MaxConcurrentRequests { get; init; } = 128;
    public int MaxBestOf { get; init; } = 2;
    public int MaxStopSequences { get; init; } = 4;
    public int MaxTopNTokens { get; init; } = 5;
    /// <summary>The total-token limit when neither the flag nor a smaller model context sets one (TGI's default too).</summary>
    public const int DefaultMaxTotalTokens = 4096;
    /// <summary>Null: the model's context length minus one.</summary>
    public int? MaxInputTokens { get; init; }
    /// <summary>Null: the model's context length, at most <see cref="DefaultMaxTotalTokens"/>.</summary>
    public int? MaxTotalTokens { get; init; }
    public int? MaxBatchPrefillTokens { get; init; }
    public int? MaxBatchTotalTokens { get; init; }
    public int MaxClientBatchSize { get; init; } = 4;
    /// <summary>
    /// Most choices one OpenAI request may ask for per prompt (<c>n</c>, and <c>best_of</c> on /v1/completions); each
    /// is its own generation, so a request costs prompts × n of the <see cref="MaxConcurrentRequests"/> slots.
    /// </summary>
    public int MaxN { get; init; } = 8;
    /// <summary>Bearer token clients must send; required when <see cref="Hostname"/> is not a loopback address.</summary>
    public string? ApiKey { get; init; }
    /// <summary>Origins (scheme://host[:port], or *) allowed by CORS; empty (the default) sends no CORS headers.</summary>
    public IReadOnlyList<string> CorsAllowOrigins { get; init; } = [];
    /// <summary>How long SIGTERM waits for in-flight requests before cancelling them.</summary>
    public double ShutdownGraceSeconds { get; init; } = 30;
    /// <summary>Largest request body, in bytes (TGI's <c>--payload-limit</c>); larger bodies get 413.</summary>
    public long PayloadLimit { get; init; } = 2_000_000;
    /// <summary>The id /info and /v1/models report; null: the model's own id.</summary>
    public string? ModelId { get; init; }
    public bool LogToConsole { get; init; }
    /// <summary>What one request's grammar may cost (source size, enum values, compilations at once).</summary>
    public Harpia.Runtime.Grammar.GrammarLimits GrammarLimits { get; init; } = Harpia.Runtime.Grammar.GrammarLimits.Default;

    public static bool IsLoopback(string hostname) =>
        hostname.Equals("localhost", StringComparison.OrdinalIgnoreCase)
        || (IPAddress.TryParse(hostname.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));

    /// <summary>Checks the flags against each other and the model; returns the effective input/total limits.</summary>
    public (int MaxInputTokens, int MaxTotalTokens) Resolve(int modelContextLength)
    {
        if (Port is < 0 or > 65535) throw new HarpiaException($"--port must be between 0 and 65535, got {Port}");
        if (MaxConcurrentRequests <= 0) throw new HarpiaException($"--max-concurrent-requests must be positive, got {MaxConcurrentRequests}");
        if (MaxBestOf <= 0) throw new HarpiaException($"--max-best-of must be positive, got {MaxBestOf}");
        if (MaxN <= 0) throw new HarpiaException($"--max-n must be positive, got {MaxN}");
        if (MaxStopSequences < 0) throw new HarpiaException($"--max-stop-sequences must not be negative, got {MaxStopSequences}");
        if (PayloadLimit <= 0) throw new HarpiaException($"--payload-limit must be positive, got {PayloadLimit}");
        if (ShutdownGraceSeconds < 0) throw new HarpiaException($"--shutdown-grace-seconds must not be negative, got {ShutdownGraceSeconds}");
        foreach (var origin in CorsAllowOrigins)
            if (origin != "*" && !(Uri.TryCreate(origin, UriKind.Absolute, out var u) && (u.Scheme == "http" || u.Scheme == "https")
                                   && u.AbsolutePath == "/" && !origin.EndsWith('/') && string.IsNullOrEmpty(u.Query)))
                throw new HarpiaException($"--cors-allow-origin '{origin}' is not an origin: use scheme://host[:port] (e.g. https://app.example.com) or *");
        if (ApiKey is { Length: > 0 } && string.IsNullOrWhiteSpace(ApiKey))
            throw new HarpiaException("--api-key is only whitespace: pass a real token, or leave the flag out");
        if (!IsLoopback(Hostname) && string.IsNullOrEmpty(ApiKey))
            throw new HarpiaException($"--hostname {Hostname} exposes the server beyond this machine: pass --api-key <token> (clients send it as 'Authorization: Bearer <token>')");
        // Defaults as the runtime resolves them (GeneratorOptions.ResolveFor, TGI's launcher): min(context, 4096), so
        // /info advertises what is enforced, not a context (up to 2^30 in a GGUF) that requests would then fail on.
        int total = MaxTotalTokens ?? Math.Min(modelContextLength, DefaultMaxTotalTokens);
        int input = MaxInputTokens ?? Math.Max(1, Math.Min(total - 1, DefaultMaxTotalTokens - 1));
        if (total <= 0) throw new HarpiaException($"--max-total-tokens must be positive, got {total}");
        if (total > modelContextLength)
            throw new HarpiaException($"--max-total-tokens {total} is larger than the model's context length {modelContextLength}");
        if (input <= 0 || input >= total)
            throw new HarpiaException($"--max-input-tokens ({input}) must be positive and less than --max-total-tokens ({total})");
        if (MaxBatchPrefillTokens is { } prefill && prefill < input)
            throw new HarpiaException($"--max-batch-prefill-tokens ({prefill}) must be >= --max-input-tokens ({input})");
        if (MaxBatchTotalTokens is { } batchTotal && batchTotal < total)
            throw new HarpiaException($"--max-batch-total-tokens ({batchTotal}) must be >= --max-total-tokens ({total})");
        return (input, total);
    }
}

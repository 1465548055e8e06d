namespace Harpia.Runtime;

/// <summary>Limits of a <see cref="Generator"/>, named after TGI's launcher flags.</summary>
public sealed record GeneratorOptions
{
    /// <summary><c>--max-concurrent-requests</c>: requests in flight (queued or running) before new ones get 429.</summary>
    public int MaxConcurrentRequests { get; init; } = 128;
    /// <summary><c>--max-input-tokens</c>: longest prompt. Null: as TGI, min(model positions − 1, 4095), and below MaxTotalTokens.</summary>
    public int? MaxInputTokens { get; init; }
    /// <summary><c>--max-total-tokens</c>: prompt + max_new_tokens of one request. Null: as TGI, min(model positions, 4096).</summary>
    public int? MaxTotalTokens { get; init; }
    /// <summary><c>--max-batch-prefill-tokens</c>: prompt tokens run in one step (longer prompts are chunked).</summary>
    public int MaxBatchPrefillTokens { get; init; } = 4096;
    /// <summary><c>--max-batch-total-tokens</c>: the KV cache budget in positions over all sequences. Null: from
    /// <see cref="MaxKvCacheBytes"/>, else max(MaxTotalTokens, 16384). Storage is allocated as blocks are first used.</summary>
    public long? MaxBatchTotalTokens { get; init; }
    /// <summary>The KV cache budget in bytes (used when <see cref="MaxBatchTotalTokens"/> is null).</summary>
    public long? MaxKvCacheBytes { get; init; }
    /// <summary><c>--kv-cache-dtype</c>: element type of the KV cache (f16 halves its memory; attention still runs in f32).</summary>
    public Backends.KvCacheDtype KvCacheDtype { get; init; } = Backends.KvCacheDtype.F32;
    /// <summary>Positions per KV block.</summary>
    public int KvBlockSize { get; init; } = 16;
    /// <summary><c>--max-batch-size</c>: sequences per step; null = limited by memory only.</summary>
    public int? MaxBatchSize { get; init; }
    /// <summary><c>--max-top-n-tokens</c>.</summary>
    public int MaxTopNTokens { get; init; } = 5;
    /// <summary><c>--max-stop-sequences</c>.</summary>
    public int MaxStopSequences { get; init; } = 4;
    /// <summary>Share the KV blocks of common prompt prefixes between requests.</summary>
    public bool PrefixCaching { get; init; } = true;

    /// <summary>These options with every default resolved against the model's positions.</summary>
    public GeneratorOptions ResolveFor(int maxPositions)
    {
        int total = MaxTotalTokens ?? Math.Min(maxPositions, 4096);
        int input = MaxInputTokens ?? Math.Min(Math.Min(maxPositions - 1, 4095), total - 1);
        return this with { MaxTotalTokens = total, MaxInputTokens = input };
    }
}

/// <summary>A snapshot of the generator's state, for metrics and tests.</summary>
public sealed record GeneratorStatistics(int Running, int Waiting, int InFlightRequests, long Steps, long Preemptions,
    long PrefixCacheHitTokens, int KvBlocksUsed, int KvBlocksCached, int KvBlocksTotal, int KvBlockSize, long KvCacheBytes = 0);

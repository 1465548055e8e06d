using System.Diagnostics;
using System.Text.Json.Serialization;
using Harpia.Runtime.Sampling;

namespace Harpia.Runtime;

/// <summary>One concurrency level of a throughput run (the shape of <c>harpia bench --concurrency … --json</c>).</summary>
public sealed record ConcurrencyResult(
    [property: JsonPropertyName("streams")] int Streams,
    [property: JsonPropertyName("decode_tokens_per_s")] double DecodeTokensPerSecond,
    [property: JsonPropertyName("ttft_p50_ms")] double TtftP50Ms,
    [property: JsonPropertyName("ttft_p95_ms")] double TtftP95Ms,
    [property: JsonPropertyName("prompt_tokens")] int PromptTokens,
    [property: JsonPropertyName("generated_tokens")] long GeneratedTokens,
    [property: JsonPropertyName("wall_s")] double WallSeconds);

/// <summary>
/// Measures a text generator under concurrent load: per level, N streams start together, each with its own random
/// prompt of <c>promptTokens</c> ids and greedy generation of exactly <c>generatedTokens</c> tokens (EOS ignored).
/// <list type="bullet">
/// <item>time to first token (TTFT): from the start of the level to the stream's first token; p50/p95 by linear
/// interpolation between order statistics (NumPy's default);</item>
/// <item>aggregate decode tokens/s: the tokens after each stream's first (the first comes from prefill), summed over
/// streams, divided by the time from the earliest first token to the last stream's end. Prefill steps that overlap
/// this window count against it, so the figure is conservative.</item>
/// </list>
/// </summary>
public sealed class ThroughputBenchmark(ITextGenerator generator, int promptTokens, int generatedTokens, ulong seed = 1)
{
    public async Task<IReadOnlyList<ConcurrencyResult>> RunAsync(IEnumerable<int> streamCounts, bool warmup = true, CancellationToken cancellationToken = default)
    {
        if (promptTokens < 1 || generatedTokens < 2)
            throw new HarpiaException($"benchmark needs at least 1 prompt token and 2 generated tokens, got {promptTokens} and {generatedTokens}");
        if (warmup) await RunStreamAsync(Prompt(0, 0), 2, Stopwatch.StartNew(), cancellationToken).ConfigureAwait(false);
        var results = new List<ConcurrencyResult>();
        foreach (int n in streamCounts)
        {
            if (n < 1) throw new HarpiaException($"concurrency levels must be at least 1, got {n}");
            results.Add(await RunLevelAsync(n, cancellationToken).ConfigureAwait(false));
        }
        return results;
    }

    public async Task<ConcurrencyResult> RunLevelAsync(int streams, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var tasks = new Task<StreamTiming>[streams];
        for (int i = 0; i < streams; i++)
            tasks[i] = RunStreamAsync(Prompt(streams, i), generatedTokens, clock, cancellationToken);
        var timings = await Task.WhenAll(tasks).ConfigureAwait(false);
        double wall = clock.Elapsed.TotalSeconds;
        double firstToken = timings.Min(t => t.FirstTokenSeconds);
        double lastEnd = timings.Max(t => t.EndSeconds);
        long decodeTokens = timings.Sum(t => (long)Math.Max(0, t.Tokens - 1));
        double window = lastEnd - firstToken;
        var ttfts = timings.Select(t => t.FirstTokenSeconds * 1000).ToArray();
        return new ConcurrencyResult(streams, window > 0 ? decodeTokens / window : 0,
            Percentile(ttfts, 50), Percentile(ttfts, 95), promptTokens, timings.Sum(t => (long)t.Tokens), wall);
    }

    private readonly record struct StreamTiming(double FirstTokenSeconds, double EndSeconds, int Tokens);

    private async Task<StreamTiming> RunStreamAsync(int[] prompt, int maxNew, Stopwatch clock, CancellationToken cancellationToken)
    {
        await Task.Yield(); // start every stream before any of them runs
        var request = new GenerationRequest { PromptIds = prompt, MaxNewTokens = maxNew, IgnoreEos = true };
        double first = double.NaN;
        int tokens = 0;
        await foreach (var e in generator.GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            if (e.Token is null) continue;
            if (tokens++ == 0) first = clock.Elapsed.TotalSeconds;
        }
        if (tokens == 0) throw new HarpiaException("benchmark stream produced no token");
        return new StreamTiming(first, clock.Elapsed.TotalSeconds, tokens);
    }

    /// <summary>Distinct random prompts per level and stream, so no prefix is shared.</summary>
    private int[] Prompt(int level, int stream)
    {
        var rng = new Xoshiro256StarStar(seed ^ ((ulong)level << 32) ^ (ulong)stream * 0x9E3779B97F4A7C15UL);
        int vocab = generator.Model.VocabSize;
        int low = Math.Min(256, vocab / 2); // keep clear of the special tokens at the start of most vocabularies
        var prompt = new int[promptTokens];
        for (int i = 0; i < prompt.Length; i++) prompt[i] = low + (int)(rng.NextUInt64() % (ulong)(vocab - low));
        return prompt;
    }

    /// <summary>The p-th percentile (0–100) by linear interpolation between the closest ranks.</summary>
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        double rank = p / 100 * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank), hi = (int)Math.Ceiling(rank);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Text;
using System.Threading.Channels;
using Harpia.Runtime;

namespace Harpia.Server;

/// <summary>The stream ended before an event carried a finish reason (500 <c>incomplete_generation</c>).</summary>
public sealed class IncompleteGenerationException() : Exception("Incomplete generation");

/// <summary>A whole generation, collected for a non-streaming answer.</summary>
internal sealed class GenerationResult
{
    public readonly StringBuilder Text = new();
    public readonly List<GeneratedToken> Tokens = [];
    public IReadOnlyList<TokenLogprob>? Prefill;
    public FinishReason Finish;
    public ulong? Seed;
    public int GeneratedTokens;
    public int PromptTokens;
    public double SumLogprob => Tokens.Sum(t => float.IsFinite(t.Logprob) ? (double)t.Logprob : 0);
}

/// <summary>Runs generations on the runtime and maps what can go wrong onto TGI's errors.</summary>
internal sealed class GenerationRunner(ITextGenerator generator)
{
    /// <summary>
    /// The runtime's events up to and including the one with the finish reason. Faults other than Harpia's own
    /// exceptions become <see cref="GenerationFailedException"/> (424); a stream that stops early is
    /// <see cref="IncompleteGenerationException"/> (500); cancellation propagates as such.
    /// </summary>
    public async IAsyncEnumerable<GenerationEvent> RunAsync(GenerationRequest request, ServerMetrics.GenerationTracker tracker,
        [EnumeratorCancellation] CancellationToken ct)
    {
        var e = generator.GenerateAsync(request, ct).GetAsyncEnumerator(ct);
        try
        {
            while (true)
            {
                bool has;
                try { has = await e.MoveNextAsync().ConfigureAwait(false); }
                catch (Exception ex) when (ex is not HarpiaException and not OperationCanceledException)
                {
                    throw new GenerationFailedException(ex.Message, ex);
                }
                if (!has) break;
                tracker.FirstEvent();
                yield return e.Current;
                if (e.Current.Finish is not null) yield break;
            }
            ct.ThrowIfCancellationRequested();
            throw new IncompleteGenerationException();
        }
        finally
        {
            await e.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async Task<GenerationResult> CollectAsync(GenerationRequest request, ServerMetrics.GenerationTracker tracker, CancellationToken ct)
    {
        var result = new GenerationResult { PromptTokens = request.PromptIds.Count };
        await foreach (var ev in RunAsync(request, tracker, ct).ConfigureAwait(false))
        {
            Absorb(result, ev);
        }
        return result;
    }

    /// <summary>
    /// Several generations at once (OpenAI's <c>n</c>, several prompts, <c>best_of</c>), each its own runtime request
    /// so the runtime batches them: their events as they arrive, tagged with the request's index, each generation's
    /// in order. Each is tracked in <paramref name="metrics"/> as one generation. The first failure cancels the others
    /// and is thrown once the events that came before it have been read; so is cancellation.
    /// </summary>
    public async IAsyncEnumerable<(int Index, GenerationEvent Event)> RunManyAsync(IReadOnlyList<GenerationRequest> requests,
        ServerMetrics metrics, [EnumeratorCancellation] CancellationToken ct)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var channel = Channel.CreateUnbounded<(int, GenerationEvent)>(new UnboundedChannelOptions { SingleReader = true });
        Exception? failure = null;
        var pumps = new Task[requests.Count];
        for (int i = 0; i < pumps.Length; i++) pumps[i] = Pump(i, requests[i]);
        var all = Task.WhenAll(pumps).ContinueWith(_ => channel.Writer.TryComplete(), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        try
        {
            await foreach (var item in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
                yield return item;
        }
        finally
        {
            // Also when the caller stops early (a failed write): nothing keeps generating for nobody.
            await stop.CancelAsync().ConfigureAwait(false);
            await all.ConfigureAwait(false);
        }
        if (Volatile.Read(ref failure) is { } f) ExceptionDispatchInfo.Throw(f);

        async Task Pump(int index, GenerationRequest request)
        {
            await Task.Yield();
            using var tracker = metrics.Track();
            try
            {
                int tokens = 0, generated = 0;
                await foreach (var ev in RunAsync(request, tracker, stop.Token).ConfigureAwait(false))
                {
                    if (ev.Token is not null) tokens++;
                    generated = Math.Max(generated, Math.Max(ev.GeneratedTokens, tokens));
                    if (ev.Finish is not null) tracker.Succeeded(generated);
                    channel.Writer.TryWrite((index, ev));
                }
            }
            catch (Exception ex)
            {
                // The first failure wins; the others are the cancellations it causes.
                Interlocked.CompareExchange(ref failure, ex, null);
                await stop.CancelAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Whole generations at once (see <see cref="RunManyAsync"/>), in the order of the requests.</summary>
    public async Task<GenerationResult[]> CollectManyAsync(IReadOnlyList<GenerationRequest> requests, ServerMetrics metrics, CancellationToken ct)
    {
        var results = requests.Select(r => new GenerationResult { PromptTokens = r.PromptIds.Count }).ToArray();
        await foreach (var (i, ev) in RunManyAsync(requests, metrics, ct).ConfigureAwait(false)) Absorb(results[i], ev);
        return results;
    }

    public static void Absorb(GenerationResult result, GenerationEvent ev)
    {
        result.Text.Append(ev.TextDelta);
        if (ev.Token is not null) result.Tokens.Add(ev.Token);
        if (ev.Prefill is not null) result.Prefill = ev.Prefill;
        if (ev.Seed is not null) result.Seed = ev.Seed;
        if (ev.PromptTokens > 0) result.PromptTokens = ev.PromptTokens;
        result.GeneratedTokens = Math.Max(result.GeneratedTokens, Math.Max(ev.GeneratedTokens, result.Tokens.Count));
        if (ev.Finish is { } f) result.Finish = f;
    }

    public static string FinishName(FinishReason f) => f switch
    {
        FinishReason.Length => "length",
        FinishReason.EosToken => "eos_token",
        _ => "stop_sequence",
    };

    public static string OpenAiFinishName(FinishReason f) => f == FinishReason.Length ? "length" : "stop";
}

using System.Collections.Concurrent;
using Harpia.Runtime.KvCache;

namespace Harpia.Runtime;

/// <summary>
/// The queue and scheduler of continuous batching (TGI's <c>queue.rs</c>, vLLM's scheduler): incoming requests, the
/// waiting queue and the running set, and each step's plan. Each step it gives every running sequence its next work
/// (one decode token, or the next prompt chunk), then admits waiting requests first come, first served while the KV
/// budget holds their whole prompt and the step's prefill budget lasts. When a running sequence needs a KV block
/// and none is free, the newest sequence (by arrival) is preempted: its blocks are freed and it goes back to the
/// front of the queue, to recompute later. Loop thread only, except <see cref="Enqueue"/>.
/// </summary>
internal sealed class BatchScheduler
{
    private readonly GeneratorOptions _options;
    private readonly KvBlockPool _pool;
    private readonly ConcurrentQueue<GenerationSequence> _incoming = new();
    private readonly LinkedList<GenerationSequence> _waiting = new();
    private readonly List<GenerationSequence> _running = [];     // by arrival
    private readonly List<WorkItem> _plan = [];
    private long _preemptions, _prefixHits;

    public BatchScheduler(GeneratorOptions options, KvBlockPool pool)
    {
        _options = options;
        _pool = pool;
    }

    /// <summary>This step's work, in the order the forward pass runs it (valid after <see cref="Schedule"/>).</summary>
    public IReadOnlyList<WorkItem> Plan => _plan;
    public int RunningCount => _running.Count;
    public int WaitingCount => _waiting.Count;
    public bool Idle => _running.Count == 0 && _waiting.Count == 0;
    public long Preemptions => Interlocked.Read(ref _preemptions);
    public long PrefixHits => Interlocked.Read(ref _prefixHits);

    /// <summary>Queues a new request (any thread); the loop takes it in with <see cref="TakeIncoming"/>.</summary>
    public void Enqueue(GenerationSequence sequence) => _incoming.Enqueue(sequence);

    /// <summary>Moves the requests that arrived since the last step to the back of the waiting queue.</summary>
    public void TakeIncoming()
    {
        while (_incoming.TryDequeue(out var s)) { _waiting.AddLast(s); s.Node = _waiting.Last; }
    }

    /// <summary>Drops cancelled sequences; their KV blocks go back to the pool at once.</summary>
    public void DropCancelled()
    {
        for (int i = _running.Count - 1; i >= 0; i--)
            if (_running[i].Cancelled) Complete(_running[i], null);
        for (var node = _waiting.First; node is not null;)
        {
            var next = node.Next;
            if (node.Value.Cancelled) Complete(node.Value, null);
            node = next;
        }
    }

    /// <summary>Plans one step (<see cref="Plan"/>); false when there is nothing to run.</summary>
    public bool Schedule()
    {
        _plan.Clear();
        int prefillLeft = _options.MaxBatchPrefillTokens;

        // 1. Running sequences, oldest first: a decode token each, or their next prompt chunk.
        for (int i = 0; i < _running.Count; i++)
        {
            var s = _running[i];
            int pending = s.Count - s.Cache.Length;
            bool decode = pending == 1;
            int want = decode ? 1 : PrefillChunk(s, pending, prefillLeft);
            if (want == 0) continue;
            while (!TryReserve(s, ref want, allowShrink: !decode))
            {
                var victim = _running[^1]; // the newest arrival
                Preempt(victim);
                if (victim == s) { want = 0; break; }
            }
            if (want == 0) break; // s itself was preempted; it was the last one
            if (!decode) prefillLeft -= want;
            _plan.Add(new WorkItem(s, s.Cache.Length, want, s.WantsPromptLogprobs));
        }

        // 2. Admit waiting requests in arrival order while their whole prompt fits; never skip the head.
        while (_waiting.First is { } head && prefillLeft > 0 && (_options.MaxBatchSize is not int maxBatch || _running.Count < maxBatch))
        {
            var s = head.Value;
            int reused = _options.PrefixCaching && !s.WantsPromptLogprobs ? s.Cache.AttachPrefix(s.Tokens.AsSpan(0, s.Count), s.Count - 1) : 0;
            // Keep a little room for the running sequences' next blocks, so a new prompt does not get preempted
            // right after its prefill (vLLM's watermark). Alone, a request always fits (checked at construction).
            int watermark = _running.Count > 0 ? Math.Max(1, _pool.TotalBlocks / 100) : 0;
            if (s.Cache.BlocksNeededFor(s.Count) + watermark > _pool.AvailableBlocks)
            {
                s.Cache.Free();
                break;
            }
            Interlocked.Add(ref _prefixHits, reused);
            s.Cache.EnsureCapacity(s.Count);
            _waiting.RemoveFirst();
            s.Node = null;
            InsertRunning(s);
            int want = PrefillChunk(s, s.Count - s.Cache.Length, prefillLeft);
            prefillLeft -= want;
            _plan.Add(new WorkItem(s, s.Cache.Length, want, s.WantsPromptLogprobs));
        }
        return _plan.Count > 0;
    }

    /// <summary>Forgets the finished step's plan, so it does not keep its sequences (and requests) reachable while idle.</summary>
    public void ClearPlan() => _plan.Clear();

    /// <summary>
    /// Prompt tokens to run this step. With prompt log-probs every position returns a logits row, so the chunk is
    /// capped to keep the logits buffer small (256 × vocab floats) instead of prefill-budget × vocab.
    /// </summary>
    private static int PrefillChunk(GenerationSequence s, int pending, int prefillLeft)
        => Math.Min(Math.Min(pending, prefillLeft), s.WantsPromptLogprobs ? MaxLogitsRowsPerChunk : int.MaxValue);

    private const int MaxLogitsRowsPerChunk = 256;

    /// <summary>Reserves KV blocks for <paramref name="want"/> more positions; a prefill chunk may shrink to what fits.</summary>
    private bool TryReserve(GenerationSequence s, ref int want, bool allowShrink)
    {
        int end = s.Cache.Length + want;
        int needed = s.Cache.BlocksNeededFor(end);
        int available = _pool.AvailableBlocks;
        if (needed > available)
        {
            if (!allowShrink) return false;
            int fits = s.Cache.Capacity + available * _pool.BlockSize - s.Cache.Length;
            if (fits < 1) return false;
            want = Math.Min(want, fits);
            end = s.Cache.Length + want;
        }
        s.Cache.EnsureCapacity(end);
        return true;
    }

    private void Preempt(GenerationSequence s)
    {
        _running.Remove(s);
        s.Cache.Free();
        if (s.WantsPromptLogprobs) s.PromptLogprobs!.RemoveRange(1, s.PromptLogprobs.Count - 1); // recomputed from 0
        // Back to the front, ahead of newer arrivals; preempted sequences among themselves stay in arrival order.
        var before = _waiting.First;
        while (before is not null && before.Value.Id < s.Id && before.Value.Preempted) before = before.Next;
        s.Node = before is null ? _waiting.AddLast(s) : _waiting.AddBefore(before, s);
        s.Preempted = true;
        Interlocked.Increment(ref _preemptions);
    }

    private void InsertRunning(GenerationSequence s)
    {
        int at = _running.Count;
        while (at > 0 && _running[at - 1].Id > s.Id) at--;
        _running.Insert(at, s);
    }

    /// <summary>Removes a sequence, frees its blocks and ends its stream (with <paramref name="error"/> if any).</summary>
    public void Complete(GenerationSequence s, Exception? error)
    {
        if (s.Node is not null) { _waiting.Remove(s.Node); s.Node = null; }
        else _running.Remove(s);
        s.Cache.Free();
        s.Completed = true;
        s.Events.Writer.TryComplete(error);
    }

    /// <summary>Ends a sequence with an error (as a <see cref="GenerationFailedException"/>), unless it already ended.</summary>
    public void Fail(GenerationSequence s, Exception error)
    {
        if (s.Completed) return;
        Complete(s, error as GenerationFailedException ?? new GenerationFailedException($"generation failed: {error.Message}", error));
    }

    /// <summary>Fails every running and waiting sequence (a bug in the loop, or shutdown).</summary>
    public void FailAll(Exception error)
    {
        foreach (var s in _running.ToArray()) Fail(s, error);
        foreach (var s in _waiting.ToArray()) Fail(s, error);
    }

    /// <summary>Ends the streams of requests that were queued but never taken in (shutdown).</summary>
    public void DrainIncoming(GenerationFailedException shutdown)
    {
        while (_incoming.TryDequeue(out var s)) { s.Completed = true; s.Events.Writer.TryComplete(shutdown); }
    }
}

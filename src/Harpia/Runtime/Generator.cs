using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Harpia.Models;
using Harpia.Runtime.KvCache;
using Harpia.Runtime.Sampling;
using Harpia.Tokenization;

namespace Harpia.Runtime;

/// <summary>
/// Continuous batching over a paged KV cache (TGI / vLLM style). One background thread runs the model step after
/// step; each step it
/// <list type="number">
/// <item>drops cancelled sequences (their KV blocks go back to the pool at once),</item>
/// <item>gives every running sequence its next work: one decode token, or the next prompt chunk,</item>
/// <item>admits waiting requests first come, first served while the KV budget holds their whole prompt and the
/// step's prefill budget (<see cref="GeneratorOptions.MaxBatchPrefillTokens"/>) lasts,</item>
/// <item>runs all of it in ONE <see cref="ICausalLM.Forward"/> call, then samples and streams the new tokens.</item>
/// </list>
/// When a running sequence needs a KV block and none is free, the newest sequence (by arrival) is preempted: its
/// blocks are freed and it goes back to the front of the queue, to recompute prompt + generated tokens later. Its
/// sampler (seeded PRNG state, penalty counts) is kept, so the output is the same as if it had never been preempted.
/// The oldest request always makes progress, so none starves.
/// </summary>
public sealed class Generator : ITextGenerator, IAsyncDisposable, IDisposable
{
    private readonly ICausalLM _model;
    private readonly GeneratorOptions _options;
    private readonly KvBlockPool _pool;
    private readonly KvStorage _kv;
    private readonly int _vocab;
    // The tokens' bytes for grammar masks: built on the first constrained request (~0.1 s for 65k tokens), then shared.
    private readonly Lazy<Grammar.TokenVocabulary> _grammarVocab;
    private readonly SamplerScratch _scratch;
    private readonly ConcurrentQueue<Sequence> _incoming = new();
    private readonly LinkedList<Sequence> _waiting = new();      // loop thread only
    private readonly List<Sequence> _running = [];               // loop thread only, by arrival
    private readonly List<WorkItem> _plan = [];
    private readonly List<SequenceChunk> _chunks = [];
    private float[] _logits = [];
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly Thread _loop;
    private volatile bool _disposed;
    private long _nextId;
    private int _inFlight;
    private int _runningCount, _waitingCount;
    private long _steps, _preemptions, _prefixHits;

    public ModelDescription Model { get; }
    public ITokenizer Tokenizer { get; }
    /// <summary>The options in force, defaults resolved.</summary>
    public GeneratorOptions Options => _options;
    private readonly int _maxInputTokens, _maxTotalTokens;
    /// <summary>The KV block pool (for metrics and leak checks).</summary>
    public KvBlockPool KvPool => _pool;
    /// <summary>The model the generator runs (the server's embeddings run it too, between generation steps).</summary>
    public ICausalLM CausalModel => _model;
    /// <summary>The KV storage the model's backends allocated for the pool (its bytes are what <c>harpia plan</c> counts).</summary>
    public KvStorage KvStorage => _kv;

    private readonly bool _ownsModel;

    /// <param name="ownsModel">Dispose the model (its mapped files, quantized buffers) when the generator is disposed.</param>
    public Generator(ICausalLM model, ITokenizer tokenizer, ModelDescription description, GeneratorOptions? options = null, bool ownsModel = false)
    {
        _model = model;
        _ownsModel = ownsModel;
        Tokenizer = tokenizer;
        Model = description;
        var shape = model.Shape;
        _options = (options ?? new GeneratorOptions()).ResolveFor(shape.MaxPositions);
        _vocab = shape.VocabSize;
        _grammarVocab = new(() => Grammar.TokenVocabulary.FromTokenizer(Tokenizer, Model.EosTokenId));
        var o = _options;
        int maxInput = o.MaxInputTokens!.Value, maxTotal = o.MaxTotalTokens!.Value;
        _maxInputTokens = maxInput;
        _maxTotalTokens = maxTotal;
        if (o.MaxConcurrentRequests < 1) throw new HarpiaException($"max concurrent requests must be at least 1, got {o.MaxConcurrentRequests}");
        if (maxInput < 1) throw new HarpiaException($"max input tokens must be at least 1, got {maxInput}");
        if (maxTotal <= maxInput)
            throw new HarpiaException($"max total tokens ({maxTotal}) must be greater than max input tokens ({maxInput})");
        if (maxTotal > shape.MaxPositions)
            throw new HarpiaException($"max total tokens ({maxTotal}) exceeds the model's {shape.MaxPositions} positions");
        if (o.MaxBatchPrefillTokens < 1) throw new HarpiaException($"max batch prefill tokens must be at least 1, got {o.MaxBatchPrefillTokens}");
        if (o.MaxBatchSize is < 1) throw new HarpiaException($"max batch size must be at least 1, got {o.MaxBatchSize}");
        if (o.MaxTopNTokens < 0 || o.MaxStopSequences < 0) throw new HarpiaException("max top-n tokens and max stop sequences must not be negative");
        var dtype = o.KvCacheDtype;
        _pool = o.MaxBatchTotalTokens is long tokens ? KvBlockPool.ForTokenBudget(shape, o.KvBlockSize, tokens, dtype)
            : o.MaxKvCacheBytes is long bytes ? KvBlockPool.ForByteBudget(shape, o.KvBlockSize, bytes, dtype)
            : KvBlockPool.ForTokenBudget(shape, o.KvBlockSize, Math.Max(maxTotal, 16384), dtype);
        // One request alone must always fit, or it could wait for ever.
        long perRequestBlocks = ((long)maxTotal + o.KvBlockSize - 1) / o.KvBlockSize;
        if (perRequestBlocks > _pool.TotalBlocks)
            throw new HarpiaException($"the KV cache budget ({_pool.TokenCapacity} tokens) is smaller than max total tokens ({maxTotal}); one request could never fit");
        // The storage behind the pool's blocks, on the backends of the model's layers.
        _kv = model.AllocateKv(_pool.TotalBlocks, _pool.BlockSize, dtype);
        _scratch = new SamplerScratch(_vocab);
        _loop = new Thread(Loop) { IsBackground = true, Name = "harpia-generator" };
        _loop.Start();
    }

    public GeneratorStatistics Statistics => new(Volatile.Read(ref _runningCount), Volatile.Read(ref _waitingCount),
        Volatile.Read(ref _inFlight), Interlocked.Read(ref _steps), Interlocked.Read(ref _preemptions),
        Interlocked.Read(ref _prefixHits), _pool.UsedBlocks, _pool.CachedBlocks, _pool.TotalBlocks, _pool.BlockSize, _kv.Bytes);

    /// <summary>
    /// Validates the request at once (throws <see cref="GenerationValidationException"/>); the stream then throws
    /// <see cref="GeneratorOverloadedException"/> on its first MoveNextAsync when too many requests are in flight,
    /// and <see cref="GenerationFailedException"/> if the model fails. Cancelling the token, or disposing the
    /// enumerator early, ends the generation and frees its KV blocks before the next step.
    /// </summary>
    public IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        Validate(request);
        return Stream(request, cancellationToken);
    }

    private async IAsyncEnumerable<GenerationEvent> Stream(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Interlocked.Increment(ref _inFlight) > _options.MaxConcurrentRequests)
        {
            Interlocked.Decrement(ref _inFlight);
            throw new GeneratorOverloadedException($"Model is overloaded: {_options.MaxConcurrentRequests} requests already in flight");
        }
        Sequence? sequence = null;
        try
        {
            var constraint = request.Grammar is { } grammar ? new Grammar.TokenConstraint(grammar, _grammarVocab.Value) : null;
            sequence = new Sequence(Interlocked.Increment(ref _nextId), request, _pool, _kv, _vocab, Tokenizer, constraint);
            using var registration = cancellationToken.Register(() => Cancel(sequence));
            _incoming.Enqueue(sequence);
            _wake.Set();
            await foreach (var e in sequence.Events.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return e;
        }
        finally
        {
            if (sequence is { Completed: false }) Cancel(sequence);
            Interlocked.Decrement(ref _inFlight);
        }
    }

    private void Cancel(Sequence sequence)
    {
        sequence.Cancelled = true;
        _wake.Set();
    }

    private void Validate(GenerationRequest r)
    {
        static GenerationValidationException Bad(string m) => new(m);
        var o = _options;
        if (r.PromptIds is null || r.PromptIds.Count == 0) throw Bad("`inputs` must not be empty");
        for (int i = 0; i < r.PromptIds.Count; i++)
            if ((uint)r.PromptIds[i] >= (uint)_vocab) throw Bad($"`inputs` token {i} has id {r.PromptIds[i]}, outside the vocabulary of {_vocab}");
        if (r.PromptIds.Count > _maxInputTokens)
            throw Bad($"`inputs` must have less than {_maxInputTokens} tokens. Given: {r.PromptIds.Count}");
        if (r.MaxNewTokens < 1) throw Bad($"`max_new_tokens` must be strictly positive. Given: {r.MaxNewTokens}");
        if ((long)r.PromptIds.Count + r.MaxNewTokens > _maxTotalTokens)
            throw Bad($"`inputs` tokens + `max_new_tokens` must be <= {_maxTotalTokens}. Given: {r.PromptIds.Count} `inputs` tokens and {r.MaxNewTokens} `max_new_tokens`");
        var s = r.Sampling ?? throw Bad("`parameters` must not be null");
        if (!(s.Temperature > 0) || float.IsInfinity(s.Temperature)) throw Bad($"`temperature` must be strictly positive. Given: {s.Temperature}");
        if (s.TopK < 0) throw Bad($"`top_k` must be strictly positive. Given: {s.TopK}");
        if (!(s.TopP > 0 && s.TopP <= 1)) throw Bad($"`top_p` must be > 0.0 and <= 1.0. Given: {s.TopP}");
        if (!(s.TypicalP > 0 && s.TypicalP <= 1)) throw Bad($"`typical_p` must be > 0.0 and <= 1.0. Given: {s.TypicalP}");
        if (!(s.RepetitionPenalty > 0) || float.IsInfinity(s.RepetitionPenalty)) throw Bad($"`repetition_penalty` must be strictly positive. Given: {s.RepetitionPenalty}");
        if (!(s.FrequencyPenalty >= -2 && s.FrequencyPenalty <= 2)) throw Bad($"`frequency_penalty` must be >= -2.0 and <= 2.0. Given: {s.FrequencyPenalty}");
        if (!(s.PresencePenalty >= -2 && s.PresencePenalty <= 2)) throw Bad($"`presence_penalty` must be >= -2.0 and <= 2.0. Given: {s.PresencePenalty}");
        if (r.TopNTokens < 0 || r.TopNTokens > o.MaxTopNTokens) throw Bad($"`top_n_tokens` must be >= 0 and <= {o.MaxTopNTokens}. Given: {r.TopNTokens}");
        if (r.StopSequences is null) throw Bad("`stop` must not be null");
        if (r.Grammar is not null && r.IgnoreEos) throw Bad("a grammar ends generation with EOS once matched; it cannot be combined with ignoring EOS");
        if (r.StopSequences.Count > o.MaxStopSequences) throw Bad($"`stop` supports up to {o.MaxStopSequences} stop sequences. Given: {r.StopSequences.Count}");
        foreach (var stop in r.StopSequences)
            if (string.IsNullOrEmpty(stop)) throw Bad("`stop` sequences must not be empty");
    }

    // ---------------------------------------------------------------- the loop (one thread)

    private void Loop()
    {
        while (true)
        {
            _wake.Reset();
            if (_disposed) break;
            try
            {
                while (_incoming.TryDequeue(out var s)) { _waiting.AddLast(s); s.Node = _waiting.Last; }
                DropCancelled();
                if (_running.Count == 0 && _waiting.Count == 0) { PublishCounts(); _wake.Wait(); continue; }
                bool ran;
                // The plan and chunks of a finished step are dropped at once: kept until the next step, they held the
                // last step's sequences (and their requests) reachable for as long as the loop idled.
                try { ran = Step(); }
                finally { _plan.Clear(); _chunks.Clear(); }
                if (!ran) _wake.Wait(10); // nothing could run (cannot happen with validated options); do not spin
            }
            catch (Exception ex)
            {
                // A bug in the loop itself: fail everything in flight rather than hang the callers; keep serving.
                foreach (var s in _running.ToArray()) Fail(s, ex);
                foreach (var s in _waiting.ToArray()) Fail(s, ex);
            }
            PublishCounts();
        }
        var shutdown = new GenerationFailedException("the generator was shut down");
        while (_incoming.TryDequeue(out var s)) { s.Events.Writer.TryComplete(shutdown); s.Completed = true; }
        foreach (var s in _running.ToArray()) Fail(s, shutdown);
        foreach (var s in _waiting.ToArray()) Fail(s, shutdown);
        PublishCounts();
    }

    private void PublishCounts()
    {
        Volatile.Write(ref _runningCount, _running.Count);
        Volatile.Write(ref _waitingCount, _waiting.Count);
    }

    private void DropCancelled()
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

    private readonly record struct WorkItem(Sequence Sequence, int Start, int Count, bool AllLogits);

    /// <summary>Runs one step; false when there was nothing to run.</summary>
    private bool Step()
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
        if (_plan.Count == 0) return false;

        // 3. One forward pass over every chunk.
        _chunks.Clear();
        int rows = 0;
        foreach (var w in _plan)
        {
            _chunks.Add(new SequenceChunk(w.Sequence.Tokens.AsMemory(w.Start, w.Count), w.Start, w.Sequence.Cache, w.AllLogits));
            rows += w.AllLogits ? w.Count : 1;
        }
        if (_logits.Length < (long)rows * _vocab) _logits = new float[(long)rows * _vocab];
        Interlocked.Increment(ref _steps);
        try
        {
            _model.Forward(_chunks, _logits.AsSpan(0, rows * _vocab));
        }
        catch (Exception ex)
        {
            RetryOneByOne(ex);
            return true;
        }

        // 4. Sample and stream.
        int row = 0;
        foreach (var w in _plan)
        {
            var s = w.Sequence;
            int rowCount = w.AllLogits ? w.Count : 1;
            var chunkLogits = _logits.AsSpan(row * _vocab, rowCount * _vocab);
            row += rowCount;
            if (s.Completed) continue;
            if (s.Cancelled) { Complete(s, null); continue; } // free at once, do not sample for nobody
            try
            {
                AfterForward(s, w, chunkLogits);
            }
            catch (Exception ex)
            {
                Fail(s, ex as GenerationFailedException ?? new GenerationFailedException($"generation failed: {ex.Message}", ex));
            }
        }
        return true;
    }

    /// <summary>
    /// The batched forward failed: run each chunk alone so that only the requests that really fail get the error
    /// (the others go on as if nothing happened). Positions past a chunk's start are rewritten, so a partial write
    /// by the failed pass does no harm.
    /// </summary>
    private void RetryOneByOne(Exception batchError)
    {
        var plan = _plan.ToArray();
        if (plan.Length == 1)
        {
            Fail(plan[0].Sequence, new GenerationFailedException($"the model failed: {batchError.Message}", batchError));
            return;
        }
        foreach (var w in plan)
        {
            var s = w.Sequence;
            if (s.Completed) continue;
            int rows = w.AllLogits ? w.Count : 1;
            try
            {
                s.Cache.SetLength(w.Start);
                _model.Forward([new SequenceChunk(s.Tokens.AsMemory(w.Start, w.Count), w.Start, s.Cache, w.AllLogits)], _logits.AsSpan(0, rows * _vocab));
            }
            catch (Exception ex)
            {
                Fail(s, new GenerationFailedException($"the model failed: {ex.Message}", ex));
                continue;
            }
            try { AfterForward(s, w, _logits.AsSpan(0, rows * _vocab)); }
            catch (Exception ex) { Fail(s, ex as GenerationFailedException ?? new GenerationFailedException($"generation failed: {ex.Message}", ex)); }
        }
    }

    /// <summary>
    /// Prompt tokens to run this step. With prompt log-probs every position returns a logits row, so the chunk is
    /// capped to keep the logits buffer small (256 × vocab floats) instead of prefill-budget × vocab.
    /// </summary>
    private static int PrefillChunk(Sequence s, int pending, int prefillLeft)
        => Math.Min(Math.Min(pending, prefillLeft), s.WantsPromptLogprobs ? MaxLogitsRowsPerChunk : int.MaxValue);

    private const int MaxLogitsRowsPerChunk = 256;

    /// <summary>Reserves KV blocks for <paramref name="want"/> more positions; a prefill chunk may shrink to what fits.</summary>
    private bool TryReserve(Sequence s, ref int want, bool allowShrink)
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

    private void Preempt(Sequence s)
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

    private void InsertRunning(Sequence s)
    {
        int at = _running.Count;
        while (at > 0 && _running[at - 1].Id > s.Id) at--;
        _running.Insert(at, s);
    }

    private void AfterForward(Sequence s, WorkItem w, ReadOnlySpan<float> logits)
    {
        int end = w.Start + w.Count;
        if (s.Cache.Length != end)
            throw new GenerationFailedException($"the model left the KV cache at {s.Cache.Length} positions after a chunk ending at {end}");
        if (_options.PrefixCaching) s.Cache.PublishFullBlocks(s.Tokens.AsSpan(0, end));
        if (w.AllLogits)
        {
            for (int r = 0; r < w.Count; r++)
            {
                int next = w.Start + r + 1;
                if (next >= s.PromptLength) break;
                var rowLogits = logits.Slice(r * _vocab, _vocab);
                int id = s.Tokens[next];
                float lp = (float)(rowLogits[id] - LogitsProcessors.LogSumExp(rowLogits));
                s.PromptLogprobs!.Add(new TokenLogprob(id, Tokenizer.Decode([id]), lp, Tokenizer.IsSpecial(id)));
            }
            if (end >= s.PromptLength) s.WantsPromptLogprobs = false;
        }
        if (end < s.Count) return; // more prompt to prefill

        var last = logits.Slice(logits.Length - _vocab, _vocab);
        var sampled = s.Sampler.Sample(last, s.Request.TopNTokens, _scratch);
        s.Sampler.Accept(sampled.Id);
        s.Tokens[s.Count++] = sampled.Id;
        int generated = s.Count - s.PromptLength;

        FinishReason? finish = null;
        string piece = s.Decoder.Push(sampled.Id);
        string delta = s.Stop.Push(piece);
        if (s.Stop.Stopped) finish = FinishReason.StopSequence;
        else if (!s.Request.IgnoreEos && Model.EosTokenId == sampled.Id) finish = FinishReason.EosToken;
        // A model without an EOS token cannot say "done": end once the grammar is matched and nothing can extend it.
        else if (Model.EosTokenId is null && s.Sampler.GrammarComplete) finish = FinishReason.EosToken;
        else if (generated >= s.Request.MaxNewTokens) finish = FinishReason.Length;
        if (finish is not null && finish != FinishReason.StopSequence)
        {
            delta += s.Stop.Push(s.Decoder.Flush());
            if (s.Stop.Stopped) finish = FinishReason.StopSequence;
            else delta += s.Stop.Flush();
        }

        var top = new TokenLogprob[sampled.TopTokens.Length];
        for (int i = 0; i < top.Length; i++)
        {
            int id = sampled.TopTokens[i].Id;
            top[i] = new TokenLogprob(id, Tokenizer.Decode([id]), sampled.TopTokens[i].Logprob, Tokenizer.IsSpecial(id));
        }
        var token = new GeneratedToken(sampled.Id, Tokenizer.Decode([sampled.Id]), sampled.Logprob, Tokenizer.IsSpecial(sampled.Id), top);
        var e = new GenerationEvent
        {
            Token = token,
            TextDelta = delta,
            Finish = finish,
            Prefill = generated == 1 ? s.PromptLogprobs : null,
            PromptTokens = s.PromptLength,
            GeneratedTokens = generated,
            Seed = s.Request.Sampling.DoSample ? s.Sampler.Seed : null,
        };
        s.Events.Writer.TryWrite(e);
        if (finish is not null) Complete(s, null);
    }

    /// <summary>Removes a sequence, frees its blocks and ends its stream (with <paramref name="error"/> if any).</summary>
    private void Complete(Sequence s, Exception? error)
    {
        if (s.Node is not null) { _waiting.Remove(s.Node); s.Node = null; }
        else _running.Remove(s);
        s.Cache.Free();
        s.Completed = true;
        s.Events.Writer.TryComplete(error);
    }

    private void Fail(Sequence s, Exception error)
    {
        if (s.Completed) return;
        Complete(s, error as GenerationFailedException ?? new GenerationFailedException($"generation failed: {error.Message}", error));
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _wake.Set();
        _loop.Join();
        var shutdown = new GenerationFailedException("the generator was shut down");
        while (_incoming.TryDequeue(out var s)) { s.Completed = true; s.Events.Writer.TryComplete(shutdown); }
        _kv.Dispose();
        if (_ownsModel) (_model as IDisposable)?.Dispose();
    }

    public ValueTask DisposeAsync() => new(Task.Run(Dispose));

    /// <summary>One request's state; touched by the loop thread only, except <see cref="Cancelled"/>.</summary>
    private sealed class Sequence
    {
        public readonly long Id;
        public readonly GenerationRequest Request;
        public readonly int[] Tokens;   // prompt, then generated tokens
        public int Count;
        public readonly int PromptLength;
        public readonly PagedKvCache Cache;
        public readonly TokenSampler Sampler;
        public readonly StopSequenceMatcher Stop;
        public readonly IStreamingDecoder Decoder;
        public readonly Channel<GenerationEvent> Events = Channel.CreateUnbounded<GenerationEvent>(
            new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        public readonly List<TokenLogprob>? PromptLogprobs;
        public bool WantsPromptLogprobs;
        public bool Preempted;
        public LinkedListNode<Sequence>? Node;
        public volatile bool Cancelled;
        public volatile bool Completed;

        public Sequence(long id, GenerationRequest request, KvBlockPool pool, KvStorage storage, int vocab, ITokenizer tokenizer, Grammar.TokenConstraint? constraint)
        {
            Id = id;
            Request = request;
            PromptLength = request.PromptIds.Count;
            Tokens = new int[PromptLength + request.MaxNewTokens];
            for (int i = 0; i < PromptLength; i++) Tokens[i] = request.PromptIds[i];
            Count = PromptLength;
            Cache = new PagedKvCache(pool, storage);
            ulong seed = request.Sampling.Seed ?? (ulong)Random.Shared.NextInt64(long.MinValue, long.MaxValue);
            Sampler = new TokenSampler(request.Sampling, request.PromptIds, vocab, seed, constraint);
            Stop = new StopSequenceMatcher(request.StopSequences, request.KeepStopSequence);
            Decoder = tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
            if (request.PromptLogprobs)
            {
                WantsPromptLogprobs = true;
                PromptLogprobs = [new TokenLogprob(Tokens[0], tokenizer.Decode([Tokens[0]]), float.NaN, tokenizer.IsSpecial(Tokens[0]))];
            }
        }
    }
}

using System.Runtime.CompilerServices;
using Harpia.Models;
using Harpia.Runtime.KvCache;
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
/// <para>
/// The stages are separate types, as in TGI's router and vLLM's engine: <see cref="RequestValidator"/> (validation),
/// <see cref="BatchScheduler"/> (queue, admission, preemption, the step's plan), <see cref="BatchExecutor"/> (the
/// forward pass over the batch) and <see cref="OutputProcessor"/> (log-probs, sampling, stop sequences, detokenized
/// streaming). This class owns the loop thread and the public API, and wires them together.
/// </para>
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
    private readonly RequestValidator _validator;
    private readonly BatchScheduler _scheduler;
    private readonly BatchExecutor _executor;
    private readonly OutputProcessor _output;
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly Thread _loop;
    private volatile bool _disposed;
    private long _nextId;
    private int _inFlight;
    private int _runningCount, _waitingCount;
    private long _steps;

    public ModelDescription Model { get; }
    public ITokenizer Tokenizer { get; }
    /// <summary>The options in force, defaults resolved.</summary>
    public GeneratorOptions Options => _options;
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
        _validator = new RequestValidator(o, shape);
        int maxTotal = o.MaxTotalTokens!.Value;
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
        _scheduler = new BatchScheduler(o, _pool);
        _executor = new BatchExecutor(model);
        _output = new OutputProcessor(description, tokenizer, _vocab, o.PrefixCaching);
        _loop = new Thread(Loop) { IsBackground = true, Name = "harpia-generator" };
        _loop.Start();
    }

    public GeneratorStatistics Statistics => new(Volatile.Read(ref _runningCount), Volatile.Read(ref _waitingCount),
        Volatile.Read(ref _inFlight), Interlocked.Read(ref _steps), _scheduler.Preemptions,
        _scheduler.PrefixHits, _pool.UsedBlocks, _pool.CachedBlocks, _pool.TotalBlocks, _pool.BlockSize, _kv.Bytes);

    /// <summary>
    /// Validates the request at once (throws <see cref="GenerationValidationException"/>); the stream then throws
    /// <see cref="GeneratorOverloadedException"/> on its first MoveNextAsync when too many requests are in flight,
    /// and <see cref="GenerationFailedException"/> if the model fails. Cancelling the token, or disposing the
    /// enumerator early, ends the generation and frees its KV blocks before the next step.
    /// </summary>
    public IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        _validator.Validate(request);
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
        GenerationSequence? sequence = null;
        try
        {
            var constraint = request.Grammar is { } grammar ? new Grammar.TokenConstraint(grammar, _grammarVocab.Value) : null;
            sequence = new GenerationSequence(Interlocked.Increment(ref _nextId), request, _pool, _kv, _vocab, Tokenizer, constraint);
            using var registration = cancellationToken.Register(() => Cancel(sequence));
            _scheduler.Enqueue(sequence);
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

    private void Cancel(GenerationSequence sequence)
    {
        sequence.Cancelled = true;
        _wake.Set();
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
                _scheduler.TakeIncoming();
                _scheduler.DropCancelled();
                if (_scheduler.Idle) { PublishCounts(); _wake.Wait(); continue; }
                bool ran;
                // The plan and chunks of a finished step are dropped at once: kept until the next step, they held the
                // last step's sequences (and their requests) reachable for as long as the loop idled.
                try { ran = Step(); }
                finally { _scheduler.ClearPlan(); _executor.Clear(); }
                if (!ran) _wake.Wait(10); // nothing could run (cannot happen with validated options); do not spin
            }
            catch (Exception ex)
            {
                // A bug in the loop itself: fail everything in flight rather than hang the callers; keep serving.
                _scheduler.FailAll(ex);
            }
            PublishCounts();
        }
        var shutdown = new GenerationFailedException("the generator was shut down");
        _scheduler.DrainIncoming(shutdown);
        _scheduler.FailAll(shutdown);
        PublishCounts();
    }

    private void PublishCounts()
    {
        Volatile.Write(ref _runningCount, _scheduler.RunningCount);
        Volatile.Write(ref _waitingCount, _scheduler.WaitingCount);
    }

    /// <summary>Runs one step: schedule, one forward pass, output processing; false when there was nothing to run.</summary>
    private bool Step()
    {
        if (!_scheduler.Schedule()) return false;
        var plan = _scheduler.Plan;
        Interlocked.Increment(ref _steps);
        ReadOnlySpan<float> logits;
        try
        {
            logits = _executor.Forward(plan);
        }
        catch (Exception ex)
        {
            RetryOneByOne(ex);
            return true;
        }

        int row = 0;
        foreach (var w in plan)
        {
            var s = w.Sequence;
            var chunkLogits = logits.Slice(row * _vocab, w.LogitRows * _vocab);
            row += w.LogitRows;
            if (s.Completed) continue;
            if (s.Cancelled) { _scheduler.Complete(s, null); continue; } // free at once, do not sample for nobody
            Output(s, w, chunkLogits);
        }
        return true;
    }

    /// <summary>The output stage for one item; a sequence that finished is completed, one whose output failed is failed.</summary>
    private void Output(GenerationSequence s, WorkItem w, ReadOnlySpan<float> logits)
    {
        try
        {
            if (_output.Process(s, w, logits)) _scheduler.Complete(s, null);
        }
        catch (Exception ex)
        {
            _scheduler.Fail(s, ex as GenerationFailedException ?? new GenerationFailedException($"generation failed: {ex.Message}", ex));
        }
    }

    /// <summary>
    /// The batched forward failed: run each chunk alone so that only the requests that really fail get the error
    /// (the others go on as if nothing happened). Positions past a chunk's start are rewritten, so a partial write
    /// by the failed pass does no harm.
    /// </summary>
    private void RetryOneByOne(Exception batchError)
    {
        var plan = _scheduler.Plan.ToArray();
        if (plan.Length == 1)
        {
            _scheduler.Fail(plan[0].Sequence, new GenerationFailedException($"the model failed: {batchError.Message}", batchError));
            return;
        }
        foreach (var w in plan)
        {
            var s = w.Sequence;
            if (s.Completed) continue;
            ReadOnlySpan<float> logits;
            try
            {
                logits = _executor.ForwardAlone(w);
            }
            catch (Exception ex)
            {
                _scheduler.Fail(s, new GenerationFailedException($"the model failed: {ex.Message}", ex));
                continue;
            }
            Output(s, w, logits);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _wake.Set();
        _loop.Join();
        _scheduler.DrainIncoming(new GenerationFailedException("the generator was shut down"));
        _kv.Dispose();
        if (_ownsModel) (_model as IDisposable)?.Dispose();
    }

    public ValueTask DisposeAsync() => new(Task.Run(Dispose));
}

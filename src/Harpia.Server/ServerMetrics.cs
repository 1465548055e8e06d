using System.Diagnostics;
using Prometheus;

namespace Harpia.Server;

/// <summary>
/// Prometheus metrics under TGI's names, in a registry of this server's own (tests run several servers in
/// one process). The runtime does not report its queue and batch, so the server counts them from what it sees:
/// a request is "queued" from validation until its first event (queue + prefill) and "in the batch" from then
/// until it ends.
/// </summary>
public sealed class ServerMetrics
{
    public CollectorRegistry Registry { get; } = Metrics.NewCustomRegistry();

    readonly Counter _requestCount, _requestSuccess, _requestFailure;
    readonly Histogram _requestDuration, _validationDuration, _queueDuration, _inferenceDuration, _timePerToken,
        _generatedTokens, _inputLength, _maxNewTokens;
    readonly Gauge _queueSize, _batchSize;

    public ServerMetrics()
    {
        var f = Metrics.WithCustomRegistry(Registry);
        var seconds = Histogram.ExponentialBuckets(0.001, 2, 18);
        var tokens = Histogram.ExponentialBuckets(1, 2, 16);
        _requestCount = f.CreateCounter("tgi_request_count", "Generation requests received");
        _requestSuccess = f.CreateCounter("tgi_request_success", "Generation requests that completed");
        _requestFailure = f.CreateCounter("tgi_request_failure", "Generation requests that failed, by error type",
            new CounterConfiguration { LabelNames = ["err"] });
        _requestDuration = f.CreateHistogram("tgi_request_duration", "End-to-end request duration (seconds)", new HistogramConfiguration { Buckets = seconds });
        _validationDuration = f.CreateHistogram("tgi_request_validation_duration", "Request validation and tokenization (seconds)", new HistogramConfiguration { Buckets = seconds });
        _queueDuration = f.CreateHistogram("tgi_request_queue_duration", "From validation to the first generated token: queue plus prefill (seconds)", new HistogramConfiguration { Buckets = seconds });
        _inferenceDuration = f.CreateHistogram("tgi_request_inference_duration", "From the first generated token to the end (seconds)", new HistogramConfiguration { Buckets = seconds });
        _timePerToken = f.CreateHistogram("tgi_request_mean_time_per_token_duration", "Mean time per generated token (seconds)", new HistogramConfiguration { Buckets = seconds });
        _generatedTokens = f.CreateHistogram("tgi_request_generated_tokens", "Tokens generated per request", new HistogramConfiguration { Buckets = tokens });
        _inputLength = f.CreateHistogram("tgi_request_input_length", "Prompt tokens per request", new HistogramConfiguration { Buckets = tokens });
        _maxNewTokens = f.CreateHistogram("tgi_request_max_new_tokens", "max_new_tokens per request", new HistogramConfiguration { Buckets = tokens });
        _queueSize = f.CreateGauge("tgi_queue_size", "Requests waiting for their first token");
        _batchSize = f.CreateGauge("tgi_batch_current_size", "Requests generating tokens now");
    }

    /// <summary>
    /// The runtime's own state, read at each scrape: scheduler steps, sequences running and waiting, preemptions,
    /// prefix-cache hits and the paged KV cache's blocks (TGI has no names for these; vLLM exports the like).
    /// </summary>
    public void ObserveRuntime(Func<Harpia.Runtime.GeneratorStatistics> read)
    {
        var f = Metrics.WithCustomRegistry(Registry);
        var steps = f.CreateCounter("harpia_runtime_steps_total", "Scheduler steps (forward passes over the running batch)");
        var preemptions = f.CreateCounter("harpia_runtime_preemptions_total", "Sequences preempted for KV memory and recomputed later");
        var prefixHits = f.CreateCounter("harpia_prefix_cache_hit_tokens_total", "Prompt tokens whose KV came from the prefix cache");
        var running = f.CreateGauge("harpia_runtime_running", "Sequences in the running batch");
        var waiting = f.CreateGauge("harpia_runtime_waiting", "Sequences waiting to be scheduled");
        var used = f.CreateGauge("harpia_kv_blocks_used", "KV cache blocks held by sequences");
        var cached = f.CreateGauge("harpia_kv_blocks_cached", "Free KV cache blocks still holding a reusable prefix");
        var total = f.CreateGauge("harpia_kv_blocks_total", "KV cache blocks in the pool");
        var blockSize = f.CreateGauge("harpia_kv_block_size_tokens", "Tokens per KV cache block");
        var kvBytes = f.CreateGauge("harpia_kv_cache_bytes", "Bytes of KV cache storage allocated by the backends (--kv-cache-dtype f16 halves it)");
        Registry.AddBeforeCollectCallback(() =>
        {
            var s = read();
            steps.IncTo(s.Steps);
            preemptions.IncTo(s.Preemptions);
            prefixHits.IncTo(s.PrefixCacheHitTokens);
            running.Set(s.Running);
            waiting.Set(s.Waiting);
            used.Set(s.KvBlocksUsed);
            cached.Set(s.KvBlocksCached);
            total.Set(s.KvBlocksTotal);
            blockSize.Set(s.KvBlockSize);
            kvBytes.Set(s.KvCacheBytes);
        });
    }

    public double QueueSize => _queueSize.Value;
    public double BatchSize => _batchSize.Value;

    public void RequestReceived() => _requestCount.Inc();
    public void Failed(string errorType) => _requestFailure.WithLabels(errorType).Inc();
    public void ValidationDone(TimeSpan elapsed, int inputLength, int maxNewTokens)
    {
        _validationDuration.Observe(elapsed.TotalSeconds);
        _inputLength.Observe(inputLength);
        _maxNewTokens.Observe(maxNewTokens);
    }

    /// <summary>Tracks one generation from admission to its end; dispose exactly once.</summary>
    public GenerationTracker Track() => new(this);

    public sealed class GenerationTracker : IDisposable
    {
        readonly ServerMetrics _m;
        readonly long _start = Stopwatch.GetTimestamp();
        long _firstToken;
        bool _inBatch, _done;

        internal GenerationTracker(ServerMetrics metrics)
        {
            _m = metrics;
            _m._queueSize.Inc();
        }

        public void FirstEvent()
        {
            if (_inBatch || _done) return;
            _inBatch = true;
            _firstToken = Stopwatch.GetTimestamp();
            _m._queueSize.Dec();
            _m._batchSize.Inc();
            _m._queueDuration.Observe(Stopwatch.GetElapsedTime(_start, _firstToken).TotalSeconds);
        }

        public void Succeeded(int generatedTokens)
        {
            if (_done) return;
            var now = Stopwatch.GetTimestamp();
            _m._requestSuccess.Inc();
            _m._requestDuration.Observe(Stopwatch.GetElapsedTime(_start, now).TotalSeconds);
            if (_inBatch)
            {
                var inference = Stopwatch.GetElapsedTime(_firstToken, now).TotalSeconds;
                _m._inferenceDuration.Observe(inference);
                if (generatedTokens > 0) _m._timePerToken.Observe(Stopwatch.GetElapsedTime(_start, now).TotalSeconds / generatedTokens);
            }
            _m._generatedTokens.Observe(generatedTokens);
            Dispose();
        }

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            if (_inBatch) _m._batchSize.Dec();
            else _m._queueSize.Dec();
        }
    }
}

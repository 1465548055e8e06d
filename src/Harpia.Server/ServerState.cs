using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Harpia.Server;

/// <summary>
/// What the server shares across requests: the concurrency limit (TGI's semaphore: over the limit is 429, not a
/// queue), the count of requests in flight, and the drain state for a graceful shutdown.
/// </summary>
public sealed class ServerState
{
    readonly SemaphoreSlim _slots;
    int _inFlight;
    volatile bool _draining;
    readonly CancellationTokenSource _hardStop = new();

    public ServerState(int maxConcurrentRequests)
    {
        MaxConcurrentRequests = maxConcurrentRequests;
        _slots = new SemaphoreSlim(maxConcurrentRequests, maxConcurrentRequests);
    }

    public int MaxConcurrentRequests { get; }
    /// <summary>Generation slots taken now.</summary>
    public int ActiveGenerations => MaxConcurrentRequests - _slots.CurrentCount;
    /// <summary>HTTP requests being served now (all but /health and /metrics).</summary>
    public int InFlight => Volatile.Read(ref _inFlight);
    public bool Draining => _draining;
    /// <summary>Cancelled when the drain grace period runs out: in-flight generations stop.</summary>
    public CancellationToken HardStop => _hardStop.Token;

    /// <summary>Takes a generation slot without waiting; null when all are taken (→ 429).</summary>
    public IDisposable? TryAcquireSlot() => _slots.Wait(0) ? new Slot(_slots) : null;

    /// <summary>
    /// Takes <paramref name="count"/> more slots, all or none, without waiting: a request that runs several generations
    /// (OpenAI's <c>n</c>, several prompts) holds one slot per generation. Null when they are not all free.
    /// </summary>
    public IDisposable? TryAcquireSlots(int count)
    {
        var taken = new List<IDisposable>(count);
        for (int i = 0; i < count; i++)
        {
            if (TryAcquireSlot() is { } slot) { taken.Add(slot); continue; }
            foreach (var t in taken) t.Dispose();
            return null;
        }
        return new Slots(taken);
    }

    sealed class Slots(List<IDisposable> slots) : IDisposable
    {
        public void Dispose() { foreach (var s in slots) s.Dispose(); }
    }

    sealed class Slot(SemaphoreSlim slots) : IDisposable
    {
        int _released;
        public void Dispose() { if (Interlocked.Exchange(ref _released, 1) == 0) slots.Release(); }
    }

    public void EnterRequest() => Interlocked.Increment(ref _inFlight);
    public void LeaveRequest() => Interlocked.Decrement(ref _inFlight);

    public void BeginDrain() => _draining = true;

    /// <summary>Waits for in-flight requests to finish; after <paramref name="grace"/> cancels them and waits a little more.</summary>
    public async Task DrainAsync(TimeSpan grace, ILogger logger, CancellationToken cancellationToken)
    {
        BeginDrain();
        var deadline = DateTime.UtcNow + grace;
        if (InFlight > 0) logger.LogInformation("draining: waiting up to {Grace}s for {Count} request(s)", grace.TotalSeconds, InFlight);
        while (InFlight > 0 && DateTime.UtcNow < deadline && !cancellationToken.IsCancellationRequested)
            await Task.Delay(20, CancellationToken.None).ConfigureAwait(false);
        if (InFlight == 0) return;
        logger.LogWarning("draining: grace period over, cancelling {Count} request(s)", InFlight);
        _hardStop.Cancel();
        var hardDeadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (InFlight > 0 && DateTime.UtcNow < hardDeadline)
            await Task.Delay(20, CancellationToken.None).ConfigureAwait(false);
    }
}

/// <summary>
/// Runs the drain when the host stops (SIGTERM, Ctrl+C, StopAsync): the stopping phase runs before Kestrel stops
/// listening, so while it waits /health answers 503 and new requests are refused with 503.
/// </summary>
internal sealed class DrainService(ServerState state, ServerOptions options, ILogger<DrainService> logger,
    IHostApplicationLifetime lifetime) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken)
    {
        lifetime.ApplicationStopping.Register(state.BeginDrain);
        return Task.CompletedTask;
    }
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StoppingAsync(CancellationToken cancellationToken) =>
        state.DrainAsync(TimeSpan.FromSeconds(options.ShutdownGraceSeconds), logger, cancellationToken);
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

using System.Text.Json;

namespace Harpia.Runtime.Grammar;

/// <summary>
/// Compiles grammars from untrusted clients (the server's): the source is checked against <see cref="Limits"/> before
/// any compiling, at most <see cref="GrammarLimits.MaxConcurrentCompilations"/> compile at once (the others wait
/// asynchronously, holding no thread, so a burst of heavy grammars cannot starve /health), and each compiles on the
/// requesting task with its cancellation token, so a client that leaves stops paying for it. A cached grammar
/// skips the queue.
/// </summary>
public sealed class GrammarCompiler
{
    readonly SemaphoreSlim _gate;
    int _running, _waiting, _peakRunning;
    long _started;

    public GrammarCompiler(GrammarLimits? limits = null)
    {
        Limits = limits ?? GrammarLimits.Default;
        if (Limits.MaxConcurrentCompilations <= 0) throw new ArgumentOutOfRangeException(nameof(limits), "MaxConcurrentCompilations must be positive");
        _gate = new SemaphoreSlim(Limits.MaxConcurrentCompilations, Limits.MaxConcurrentCompilations);
    }

    public GrammarLimits Limits { get; }
    /// <summary>Compilations started since this compiler was made (cache hits and refusals by limit not counted).</summary>
    public long CompilationsStarted => Interlocked.Read(ref _started);
    /// <summary>Compilations running now / waiting for a turn now / the most that ever ran at once.</summary>
    public int Running => Volatile.Read(ref _running);
    public int Waiting => Volatile.Read(ref _waiting);
    public int PeakRunning => Volatile.Read(ref _peakRunning);

    /// <summary>Runs inside a compilation's turn, before it compiles (tests hold compilations here).</summary>
    internal Func<CancellationToken, Task>? OnCompiling { get; set; }

    /// <summary>TGI's <c>grammar</c> parameter (see <see cref="Grammars.FromTgi"/>); null for a JSON null.</summary>
    /// <exception cref="HarpiaException">malformed, unsupported, or over a limit.</exception>
    public async ValueTask<ByteDfa?> FromTgiAsync(JsonElement grammar, CancellationToken ct) =>
        Grammars.Describe(grammar, Limits) is { } g ? await CompileAsync(g.Key, g.Compile, ct).ConfigureAwait(false) : null;

    /// <summary>A JSON schema (OpenAI's <c>response_format</c>).</summary>
    public ValueTask<ByteDfa> JsonSchemaAsync(JsonElement schema, CancellationToken ct)
    {
        var (key, compile) = Grammars.SchemaSource(schema, Limits);
        return CompileAsync(key, compile, ct);
    }

    /// <summary>
    /// A pattern built from schemas that were checked against <see cref="Limits"/> (tool calling's union of function
    /// schemas): compiled under the same gate and cache, without the source-length limit meant for clients' regexes.
    /// </summary>
    public ValueTask<ByteDfa> SchemaPatternAsync(string pattern, CancellationToken ct) =>
        CompileAsync("schema-pattern\n" + pattern, c => ByteDfa.FromSchemaPattern(pattern, c), ct);

    async ValueTask<ByteDfa> CompileAsync(string key, Func<CancellationToken, ByteDfa> compile, CancellationToken ct)
    {
        if (Grammars.TryCached(key, out var cached)) return cached;
        Interlocked.Increment(ref _waiting);
        try { await _gate.WaitAsync(ct).ConfigureAwait(false); }
        finally { Interlocked.Decrement(ref _waiting); }
        try
        {
            int running = Interlocked.Increment(ref _running);
            for (int peak = PeakRunning; running > peak; peak = PeakRunning)
                Interlocked.CompareExchange(ref _peakRunning, running, peak);
            Interlocked.Increment(ref _started);
            if (OnCompiling is { } hook) await hook(ct).ConfigureAwait(false);
            return Grammars.Cached(key, compile, ct);
        }
        finally
        {
            Interlocked.Decrement(ref _running);
            _gate.Release();
        }
    }
}

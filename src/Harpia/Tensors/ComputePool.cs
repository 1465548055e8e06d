using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace Harpia.Tensors;

/// <summary>
/// Runs a range of independent work items across the compute threads. Decode enters hundreds of parallel regions
/// per token, each a few tens of microseconds long, so entering one must cost far less than that: the pool keeps
/// <see cref="Threads"/> − 1 dedicated workers that spin briefly on a generation counter before blocking, a region
/// is published through static fields (no allocation, no task objects), and the calling thread takes chunks too.
/// Nested or concurrent regions (a second thread entering while one runs) simply run inline on their caller.
/// </summary>
public static unsafe class ComputePool
{
    private static int _threads = Math.Max(1, Environment.ProcessorCount);

    /// <summary>Number of threads kernels split work over, caller included (the CLI's <c>--threads</c>).</summary>
    public static int Threads
    {
        get => _threads;
        set => _threads = Math.Max(1, value);
    }

    /// <summary>How long an idle worker spins before it blocks; decode regions follow each other within microseconds.</summary>
    private const int SpinIterations = 20_000;

    // The published region. Written only by the thread that holds _busy, before _generation is bumped.
    private static Action<int, int>? _body;
    private static delegate*<void*, int, int, void> _fnBody;
    private static void* _fnState;
    private static int _count, _chunks;
    private static long _ticket;           // (generation << 32) | next chunk index
    private static int _done;              // chunks finished in this generation
    private static int _generation;
    private static Exception? _error;
    private static int _busy;

    private static readonly object Gate = new();
    private static int _sleepers;
    private static readonly List<Thread> Workers = [];

    /// <summary>Calls <paramref name="body"/>(start, end) over disjoint chunks covering [0, count).</summary>
    public static void For(int count, Action<int, int> body, int minChunk = 1)
    {
        ArgumentNullException.ThrowIfNull(body);
        Run(count, ChunkCount(count, minChunk), body, null, null);
    }

    /// <summary>
    /// Allocation-free form: <paramref name="body"/>(state, start, end) over <paramref name="chunks"/> near-equal
    /// chunks of [0, count). <paramref name="state"/> must stay valid until the call returns (a caller's local).
    /// </summary>
    public static void For(int count, int chunks, delegate*<void*, int, int, void> body, void* state)
    {
        if (body == null) throw new ArgumentNullException(nameof(body));
        Run(count, Math.Clamp(chunks, 1, Math.Max(1, count)), null, body, state);
    }

    /// <summary>Chunks for <paramref name="count"/> items: one per thread unless that makes chunks smaller than minChunk.</summary>
    public static int ChunkCount(int count, int minChunk) =>
        Math.Max(1, Math.Min(_threads, count / Math.Max(1, minChunk)));

    private static void Run(int count, int chunks, Action<int, int>? body, delegate*<void*, int, int, void> fn, void* state)
    {
        if (count <= 0) return;
        if (chunks <= 1 || _threads <= 1 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            // Serial: a single chunk, one thread, or a nested/concurrent region.
            for (int c = 0; c < chunks; c++) Invoke(body, fn, state, Start(count, chunks, c), Start(count, chunks, c + 1));
            return;
        }
        try
        {
            EnsureWorkers(_threads - 1);
            int gen = _generation + 1;
            // Close the previous generation's ticket first, so a late worker can no longer claim with stale fields.
            Interlocked.Exchange(ref _ticket, (long)gen << 32);
            _body = body; _fnBody = fn; _fnState = state;
            _count = count; _chunks = chunks;
            _done = 0; _error = null;
            Interlocked.Exchange(ref _generation, gen);   // publish (full fence)
            if (Volatile.Read(ref _sleepers) > 0)
                lock (Gate) Monitor.PulseAll(Gate);

            RunChunks(gen);
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < chunks) spin.SpinOnce(sleep1Threshold: -1);
            var error = _error;
            _body = null; _fnBody = null; _fnState = null;
            if (error is not null) ExceptionDispatchInfo.Capture(error).Throw();
        }
        finally { Volatile.Write(ref _busy, 0); }
    }

    private static int Start(int count, int chunks, int c) => (int)((long)count * c / chunks);

    private static void Invoke(Action<int, int>? body, delegate*<void*, int, int, void> fn, void* state, int start, int end)
    {
        if (end <= start) return;
        if (body is not null) body(start, end);
        else fn(state, start, end);
    }

    /// <summary>Claims and runs chunks of generation <paramref name="gen"/> until none are left.</summary>
    private static void RunChunks(int gen)
    {
        var body = _body;
        var fn = _fnBody;
        var state = _fnState;
        int count = _count, chunks = _chunks;
        while (true)
        {
            long t = Volatile.Read(ref _ticket);
            if ((int)(t >> 32) != gen) return;
            int c = (int)t;
            if (c >= chunks) return;
            if (Interlocked.CompareExchange(ref _ticket, t + 1, t) != t) continue;
            try { Invoke(body, fn, state, Start(count, chunks, c), Start(count, chunks, c + 1)); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); }
            Interlocked.Increment(ref _done);
        }
    }

    private static void EnsureWorkers(int wanted)
    {
        if (Workers.Count >= wanted) return;
        lock (Workers)
            while (Workers.Count < wanted)
            {
                int index = Workers.Count;
                var t = new Thread(() => WorkerLoop(index), 4 << 20) { IsBackground = true, Name = $"harpia-compute-{index + 1}" };
                Workers.Add(t);
                t.Start();
            }
    }

    private static void WorkerLoop(int index)
    {
        Pin(index + 1);
        int seen = Volatile.Read(ref _generation);
        while (true)
        {
            int gen = WaitForGeneration(seen, index);
            seen = gen;
            // A worker beyond the current thread count stays out so at most Threads threads compute.
            if (index < _threads - 1) RunChunks(gen);
        }
    }

    private static int WaitForGeneration(int seen, int index)
    {
        if (index < _threads - 1)
            for (int i = 0; i < SpinIterations; i++)
            {
                int g = Volatile.Read(ref _generation);
                if (g != seen) return g;
                Thread.SpinWait(8);
            }
        lock (Gate)
        {
            Interlocked.Increment(ref _sleepers);
            int g;
            while ((g = Volatile.Read(ref _generation)) == seen) Monitor.Wait(Gate);
            Interlocked.Decrement(ref _sleepers);
            return g;
        }
    }

    /// <summary>Pins the calling worker to one CPU on Linux (HARPIA_PIN=0 turns it off); best effort.</summary>
    private static void Pin(int cpu)
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("HARPIA_PIN") == "0") return;
        int n = Environment.ProcessorCount;
        if (_threads > n || n > 64) return;
        ulong mask = 1UL << (cpu % n);
        try { _ = sched_setaffinity(0, (nint)sizeof(ulong), &mask); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int sched_setaffinity(int pid, nint cpusetsize, ulong* mask);
}

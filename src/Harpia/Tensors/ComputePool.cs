namespace Harpia.Tensors;

/// <summary>
/// Runs a range of independent work items across the compute threads. Decode calls this hundreds of times per
/// token, so it must be cheap to enter; this first version leans on <see cref="Parallel.For(int,int,Action{int})"/>.
/// </summary>
public static class ComputePool
{
    private static int _threads = Environment.ProcessorCount;

    /// <summary>Number of threads kernels split work over (the CLI's <c>--threads</c>).</summary>
    public static int Threads
    {
        get => _threads;
        set => _threads = Math.Max(1, value);
    }

    /// <summary>Calls <paramref name="body"/>(start, end) over disjoint chunks covering [0, count).</summary>
    public static void For(int count, Action<int, int> body, int minChunk = 1)
    {
        if (count <= 0) return;
        int chunks = Math.Min(_threads, Math.Max(1, count / Math.Max(1, minChunk)));
        if (chunks == 1) { body(0, count); return; }
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, c =>
        {
            int start = (int)((long)count * c / chunks);
            int end = (int)((long)count * (c + 1) / chunks);
            if (end > start) body(start, end);
        });
    }
}

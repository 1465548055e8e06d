using Harpia.Tensors;

namespace Harpia.Tests.Tensors;

[Collection(ProcessWideStateCollection.Name)]
public unsafe class ComputePoolTests
{
    [Fact]
    public void ManyShortRegionsCoverEveryIndexExactlyOnce()
    {
        int saved = ComputePool.Threads;
        try
        {
            foreach (int threads in new[] { 1, 2, 3, 4 })
            {
                ComputePool.Threads = threads;
                var hits = new int[1000];
                var rng = new Random(threads);
                for (int region = 0; region < 3000; region++)
                {
                    int count = rng.Next(1, hits.Length);
                    ComputePool.For(count, (s, e) =>
                    {
                        for (int i = s; i < e; i++) Interlocked.Increment(ref hits[i]);
                    });
                    for (int i = 0; i < count; i++)
                    {
                        Assert.Equal(1, hits[i]);
                        hits[i] = 0;
                    }
                    for (int i = count; i < hits.Length; i++) Assert.Equal(0, hits[i]);
                }
            }
        }
        finally { ComputePool.Threads = saved; }
    }

    private static void AddRange(void* state, int s, int e)
    {
        var sums = (long*)state;
        long local = 0;
        for (int i = s; i < e; i++) local += i;
        Interlocked.Add(ref sums[0], local);
        Interlocked.Increment(ref sums[1]);
    }

    [Fact]
    public void FunctionPointerFormSplitsIntoTheRequestedChunks()
    {
        int saved = ComputePool.Threads;
        ComputePool.Threads = 3;
        try
        {
            long* sums = stackalloc long[2];
            for (int chunks = 1; chunks <= 7; chunks++)
            {
                sums[0] = 0; sums[1] = 0;
                ComputePool.For(1001, chunks, &AddRange, sums);
                Assert.Equal(1001L * 1000 / 2, sums[0]);
                Assert.Equal(chunks, sums[1]);
            }
        }
        finally { ComputePool.Threads = saved; }
    }

    [Fact]
    public void ExceptionInAWorkerChunkReachesTheCallerAndThePoolStaysUsable()
    {
        int saved = ComputePool.Threads;
        ComputePool.Threads = 4;
        try
        {
            for (int attempt = 0; attempt < 20; attempt++)
            {
                var ex = Assert.Throws<InvalidOperationException>(() =>
                    ComputePool.For(400, (s, e) =>
                    {
                        if (s <= 350 && 350 < e) throw new InvalidOperationException("chunk failed at 350");
                    }));
                Assert.Equal("chunk failed at 350", ex.Message);
            }
            int total = 0;
            ComputePool.For(400, (s, e) => Interlocked.Add(ref total, e - s));
            Assert.Equal(400, total);
        }
        finally { ComputePool.Threads = saved; }
    }

    [Fact]
    public void NestedAndConcurrentRegionsRunCorrectly()
    {
        int saved = ComputePool.Threads;
        ComputePool.Threads = 3;
        try
        {
            long total = 0;
            ComputePool.For(10, (s, e) =>
            {
                for (int i = s; i < e; i++)
                    ComputePool.For(100, (a, b) => Interlocked.Add(ref total, b - a));
            });
            Assert.Equal(1000, total);

            long concurrent = 0;
            Parallel.For(0, 8, _ =>
            {
                for (int k = 0; k < 200; k++) ComputePool.For(50, (a, b) => Interlocked.Add(ref concurrent, b - a));
            });
            Assert.Equal(8 * 200 * 50, concurrent);
        }
        finally { ComputePool.Threads = saved; }
    }

    [Fact]
    public void ThreadsIsClampedToAtLeastOne()
    {
        int saved = ComputePool.Threads;
        try
        {
            ComputePool.Threads = 0;
            Assert.Equal(1, ComputePool.Threads);
            int calls = 0;
            ComputePool.For(10, (s, e) => { Assert.Equal((0, 10), (s, e)); calls++; });
            Assert.Equal(1, calls);
        }
        finally { ComputePool.Threads = saved; }
    }
}

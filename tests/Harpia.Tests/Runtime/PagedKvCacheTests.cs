using Harpia.Models;
using Harpia.Runtime.KvCache;

namespace Harpia.Tests.Runtime;

public class PagedKvCacheTests
{
    private static readonly ModelShape Shape = new(Layers: 3, KvHeads: 2, HeadDim: 4, VocabSize: 10, MaxPositions: 1000, HiddenSize: 8);

    // The pool keeps block ids only; the storage (host, f32) is shared by every cache of one pool, as the Generator does.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<KvBlockPool, KvStorage> Storages = new();

    private static PagedKvCache Cache(KvBlockPool pool) =>
        new(pool, Storages.GetValue(pool, p => KvStorage.Allocate(p.Shape, p.TotalBlocks, p.BlockSize, p.Dtype, _ => Harpia.Backends.Cpu.CpuBackend.Default)));

    [Fact]
    public void Positions_map_to_distinct_storage_across_blocks_layers_and_K_V()
    {
        var pool = new KvBlockPool(Shape, blockSize: 4, totalBlocks: 8);
        using var a = Cache(pool);
        using var b = Cache(pool);
        a.EnsureCapacity(10);
        b.EnsureCapacity(7);
        for (int p = 0; p < 10; p++)
            for (int l = 0; l < 3; l++) { a.HostKeys(l, p).Fill(p * 10 + l); a.HostValues(l, p).Fill(-(p * 10 + l)); }
        for (int p = 0; p < 7; p++)
            for (int l = 0; l < 3; l++) { b.HostKeys(l, p).Fill(1000 + p); b.HostValues(l, p).Fill(2000 + p); }
        for (int p = 0; p < 10; p++)
            for (int l = 0; l < 3; l++)
            {
                Assert.All(a.HostKeys(l, p).ToArray(), f => Assert.Equal(p * 10 + l, f));
                Assert.All(a.HostValues(l, p).ToArray(), f => Assert.Equal(-(p * 10 + l), f));
            }
        Assert.Equal(3, a.BlockCount);
        Assert.Equal(2, b.BlockCount);
        Assert.Equal(5, pool.UsedBlocks);
        Assert.Throws<ArgumentOutOfRangeException>(() => a.HostKeys(0, 12));
    }

    [Fact]
    public void A_full_pool_throws_KvCacheFull_and_free_returns_every_block_at_once()
    {
        var pool = KvBlockPool.ForTokenBudget(Shape, blockSize: 4, maxTokens: 16);
        Assert.Equal(4, pool.TotalBlocks);
        var a = Cache(pool);
        a.EnsureCapacity(13);
        var b = Cache(pool);
        Assert.Throws<KvCacheFullException>(() => b.EnsureCapacity(5));
        a.Free();
        Assert.Equal(0, a.BlockCount);
        b.EnsureCapacity(16);
        b.Free();
        Assert.Equal(pool.TotalBlocks, pool.AvailableBlocks);
        Assert.Throws<InvalidOperationException>(() => pool.Release(0));
    }

    [Fact]
    public void Byte_budget_gives_whole_blocks_and_bad_budgets_are_clear_errors()
    {
        long blockBytes = 4L * 3 * 2 * 2 * 4 * sizeof(float);
        var pool = KvBlockPool.ForByteBudget(Shape, 4, blockBytes * 5 + 7);
        Assert.Equal(5, pool.TotalBlocks);
        Assert.Equal(blockBytes, pool.BytesPerBlock);
        Assert.Throws<HarpiaException>(() => KvBlockPool.ForByteBudget(Shape, 4, blockBytes - 1));
        Assert.Throws<HarpiaException>(() => new KvBlockPool(Shape, 0, 4));
        Assert.Throws<HarpiaException>(() => KvBlockPool.ForTokenBudget(Shape, 4, 0));
    }

    [Fact]
    public void Storage_is_allocated_lazily_and_recycled_not_grown()
    {
        var pool = new KvBlockPool(Shape, 4, 100);
        Assert.Equal(0, pool.AllocatedBytes);
        for (int i = 0; i < 50; i++)
        {
            using var c = Cache(pool);
            c.EnsureCapacity(8);
        }
        Assert.Equal(2 * pool.BytesPerBlock, pool.AllocatedBytes);
    }

    [Fact]
    public void Prefix_blocks_are_shared_by_refcount_and_evicted_only_when_unreferenced()
    {
        var pool = new KvBlockPool(Shape, 4, 6);
        int[] prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        var a = Cache(pool);
        a.EnsureCapacity(9);
        for (int p = 0; p < 9; p++) a.HostKeys(0, p).Fill(prompt[p]);
        a.SetLength(9);
        a.PublishFullBlocks(prompt);

        var b = Cache(pool);
        Assert.Equal(8, b.AttachPrefix([1, 2, 3, 4, 5, 6, 7, 8, 42], maxTokens: 8));
        Assert.Equal(a.BlockTable.Take(2), b.BlockTable);
        Assert.Equal(5f, b.HostKeys(0, 4)[0]);
        var c = Cache(pool);
        Assert.Equal(4, c.AttachPrefix([1, 2, 3, 4, 9, 9, 9, 9, 9], 8)); // second block differs
        var d = Cache(pool);
        Assert.Equal(0, d.AttachPrefix([2, 2, 3, 4, 5], 4));
        Assert.Equal(3, pool.UsedBlocks);

        a.Free();
        Assert.Equal(2, pool.UsedBlocks); // the two shared blocks; a's third went back to the pool
        b.Free(); c.Free();
        Assert.Equal(0, pool.UsedBlocks);
        Assert.Equal(2, pool.CachedBlocks);       // still findable
        Assert.Equal(6, pool.AvailableBlocks);    // but counted as available
        var e = Cache(pool);
        Assert.Equal(8, e.AttachPrefix(prompt, 8));
        e.Free();
        // Exhausting the pool evicts the cached blocks; the prefix is then gone.
        var big = Cache(pool);
        big.EnsureCapacity(24);
        big.Free();
        Assert.Equal(0, pool.CachedBlocks);
        Assert.Equal(0, Cache(pool).AttachPrefix(prompt, 8));
    }
}

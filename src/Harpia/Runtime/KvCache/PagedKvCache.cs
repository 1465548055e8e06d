using Harpia.Models;

namespace Harpia.Runtime.KvCache;

/// <summary>
/// The KV cache of one sequence: a block table mapping position / BlockSize to a block id of the shared
/// <see cref="KvBlockPool"/>, whose storage is the model's <see cref="KvStorage"/>. Grows a block at a time; <see cref="Free"/> returns every block to the pool at once.
/// Full blocks of a prompt can be shared with other sequences through the pool's prefix index: shared blocks lie
/// entirely below <see cref="Length"/>, and a sequence only ever writes at or after its Length, so sharing needs
/// no copy-on-write.
/// </summary>
public sealed class PagedKvCache : IKvCache, IDisposable
{
    private readonly KvBlockPool _pool;
    private readonly List<int> _table = [];
    private int _publishedBlocks;
    private ulong _chainHash; // hash of the prefix covered by the published blocks

    public PagedKvCache(KvBlockPool pool, KvStorage storage)
    {
        if (storage.BlockSize != pool.BlockSize || storage.Blocks < pool.TotalBlocks)
            throw new ArgumentException($"KV storage of {storage.Blocks} blocks of {storage.BlockSize} does not fit a pool of {pool.TotalBlocks} blocks of {pool.BlockSize}");
        _pool = pool;
        Storage = storage;
    }

    public KvStorage Storage { get; }

    public int Length { get; private set; }
    public int Capacity => _table.Count * _pool.BlockSize;
    public IReadOnlyList<int> BlockTable => _table;
    public int BlockCount => _table.Count;

    /// <summary>Blocks still to allocate before <paramref name="length"/> positions fit.</summary>
    public int BlocksNeededFor(int length) => Math.Max(0, (length + _pool.BlockSize - 1) / _pool.BlockSize - _table.Count);

    public void EnsureCapacity(int length)
    {
        while (Capacity < length)
        {
            if (!_pool.TryAllocate(out int block))
                throw new KvCacheFullException($"KV cache full: {_pool.TotalBlocks} blocks of {_pool.BlockSize} positions are all in use");
            _table.Add(block);
        }
    }

    public void SetLength(int length)
    {
        if (length < 0 || length > Capacity)
            throw new ArgumentOutOfRangeException(nameof(length), $"length {length} outside the cache's capacity {Capacity}");
        Length = length;
    }

    /// <summary>
    /// On an empty cache: attaches the longest run of published full blocks that match the start of
    /// <paramref name="tokens"/>, covering at most <paramref name="maxTokens"/> positions, and sets Length to it.
    /// Returns the number of positions reused.
    /// </summary>
    public int AttachPrefix(ReadOnlySpan<int> tokens, int maxTokens)
    {
        if (_table.Count != 0 || Length != 0) throw new InvalidOperationException("AttachPrefix needs an empty cache");
        int bs = _pool.BlockSize;
        ulong parent = 0;
        while ((_table.Count + 1) * bs <= Math.Min(maxTokens, tokens.Length))
        {
            var blockTokens = tokens.Slice(_table.Count * bs, bs);
            ulong hash = KvBlockPool.ChainHash(parent, blockTokens);
            int block = _pool.TryShare(parent, hash, blockTokens);
            if (block < 0) break;
            _table.Add(block);
            parent = hash;
        }
        _publishedBlocks = _table.Count;
        _chainHash = parent;
        Length = _table.Count * bs;
        return Length;
    }

    /// <summary>Publishes the full blocks below Length; <paramref name="tokens"/> are the tokens at positions [0, Length).</summary>
    public void PublishFullBlocks(ReadOnlySpan<int> tokens)
    {
        int bs = _pool.BlockSize;
        int full = Math.Min(Length, tokens.Length) / bs;
        for (; _publishedBlocks < full; _publishedBlocks++)
        {
            var blockTokens = tokens.Slice(_publishedBlocks * bs, bs);
            ulong hash = KvBlockPool.ChainHash(_chainHash, blockTokens);
            _pool.Publish(_table[_publishedBlocks], _chainHash, hash, blockTokens);
            _chainHash = hash;
        }
    }

    /// <summary>Returns every block to the pool; the cache is empty and reusable afterwards.</summary>
    public void Free()
    {
        foreach (int block in _table) _pool.Release(block);
        _table.Clear();
        Length = 0;
        _publishedBlocks = 0;
        _chainHash = 0;
    }

    public void Dispose() => Free();
}

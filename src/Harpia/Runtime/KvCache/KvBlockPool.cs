using Harpia.Backends;
using Harpia.Models;

namespace Harpia.Runtime.KvCache;

/// <summary>
/// The block manager of a paged KV cache (PagedAttention): a fixed budget of block ids. A block holds
/// <see cref="BlockSize"/> positions of every layer; its storage is not here but in the model's
/// <see cref="KvStorage"/> (one per layer, on the layer's backend), addressed by the block id. Ids are handed out from
/// a free list and recycled, never beyond the budget. Blocks are reference-counted: a full block can be shared by several sequences through the
/// prefix index (a block's key is the hash of the whole token prefix up to its end, because its keys/values depend on
/// every earlier token). A released block that is in the index stays there, evictable, until its memory is needed.
/// Thread-safe for allocation and release; block contents are accessed without locking by the sequence that owns them.
/// </summary>
public sealed class KvBlockPool
{
    private readonly bool[] _everUsed;
    private int _everUsedCount;
    private readonly int[] _refCount;
    private readonly Stack<int> _free = new();
    // Prefix index: chain hash → block, plus each indexed block's own tokens and parent hash (checked on lookup).
    private readonly Dictionary<ulong, int> _prefixIndex = [];
    private readonly ulong[] _blockHash;
    private readonly ulong[] _parentHash;
    private readonly int[]?[] _blockTokens;
    private readonly LinkedList<int> _evictable = new(); // unreferenced indexed blocks, least recently used first
    private readonly LinkedListNode<int>?[] _evictableNode;
    private readonly Lock _lock = new();

    public ModelShape Shape { get; }
    public int BlockSize { get; }
    public int TotalBlocks { get; }
    public KvCacheDtype Dtype { get; }
    /// <summary>Bytes of one block's storage over all layers (K and V).</summary>
    public long BytesPerBlock => KvStorage.BytesFor(Shape, 1, BlockSize, Dtype);
    public int TokenCapacity => TotalBlocks * BlockSize;

    public KvBlockPool(ModelShape shape, int blockSize, int totalBlocks, KvCacheDtype dtype = KvCacheDtype.F32)
    {
        if (blockSize < 1) throw new HarpiaException($"KV block size must be at least 1 position, got {blockSize}");
        if (totalBlocks < 1) throw new HarpiaException($"the KV cache budget must hold at least one block, got {totalBlocks}");
        if (shape.Layers < 1 || shape.KvHeads < 1 || shape.HeadDim < 1)
            throw new HarpiaException($"model shape has no KV cache: {shape.Layers} layers, {shape.KvHeads} KV heads, head dim {shape.HeadDim}");
        Shape = shape;
        BlockSize = blockSize;
        TotalBlocks = totalBlocks;
        Dtype = dtype;
        _everUsed = new bool[totalBlocks];
        _refCount = new int[totalBlocks];
        _blockHash = new ulong[totalBlocks];
        _parentHash = new ulong[totalBlocks];
        _blockTokens = new int[totalBlocks][];
        _evictableNode = new LinkedListNode<int>[totalBlocks];
        for (int b = totalBlocks - 1; b >= 0; b--) _free.Push(b);
    }

    /// <summary>A pool for <paramref name="maxTokens"/> positions in total (TGI's <c>--max-batch-total-tokens</c>).</summary>
    public static KvBlockPool ForTokenBudget(ModelShape shape, int blockSize, long maxTokens, KvCacheDtype dtype = KvCacheDtype.F32)
    {
        if (maxTokens < 1) throw new HarpiaException($"max batch total tokens must be positive, got {maxTokens}");
        long blocks = (maxTokens + blockSize - 1) / Math.Max(blockSize, 1);
        if (blocks > int.MaxValue / 2) throw new HarpiaException($"max batch total tokens {maxTokens} is too large");
        return new KvBlockPool(shape, blockSize, (int)blocks, dtype);
    }

    /// <summary>A pool of as many blocks as fit in <paramref name="bytes"/>.</summary>
    public static KvBlockPool ForByteBudget(ModelShape shape, int blockSize, long bytes, KvCacheDtype dtype = KvCacheDtype.F32)
    {
        long perBlock = KvStorage.BytesFor(shape, 1, Math.Max(blockSize, 1), dtype);
        long blocks = perBlock > 0 ? bytes / perBlock : 0;
        if (blocks < 1) throw new HarpiaException($"a KV cache budget of {bytes} bytes holds no block of {perBlock} bytes");
        return new KvBlockPool(shape, blockSize, (int)Math.Min(blocks, int.MaxValue / 2), dtype);
    }

    /// <summary>Blocks that can be handed out now: never used, released, or cached but unreferenced.</summary>
    public int AvailableBlocks { get { lock (_lock) return _free.Count + _evictable.Count; } }
    /// <summary>Blocks referenced by at least one sequence.</summary>
    public int UsedBlocks { get { lock (_lock) return TotalBlocks - _free.Count - _evictable.Count; } }
    /// <summary>Unreferenced blocks kept for prefix reuse.</summary>
    public int CachedBlocks { get { lock (_lock) return _evictable.Count; } }
    /// <summary>
    /// Bytes of the blocks handed out at least once: the storage is reserved whole but its pages are committed as
    /// first written, so this is what the cache has made resident (grows to the budget at most, never past it).
    /// </summary>
    public long AllocatedBytes { get { lock (_lock) return _everUsedCount * BytesPerBlock; } }

    public bool TryAllocate(out int block)
    {
        lock (_lock)
        {
            if (_free.Count > 0) block = _free.Pop();
            else if (_evictable.First is { } oldest)
            {
                block = oldest.Value;
                _evictable.RemoveFirst();
                _evictableNode[block] = null;
                Unindex(block);
            }
            else { block = -1; return false; }
            _refCount[block] = 1;
            // Free blocks are handed out most recently released first, so the touched set stays small.
            if (!_everUsed[block]) { _everUsed[block] = true; _everUsedCount++; }
            return true;
        }
    }

    public void Release(int block)
    {
        lock (_lock)
        {
            if (_refCount[block] <= 0) throw new InvalidOperationException($"KV block {block} released twice");
            if (--_refCount[block] > 0) return;
            if (_blockTokens[block] is not null) _evictableNode[block] = _evictable.AddLast(block);
            else _free.Push(block);
        }
    }

    /// <summary>Chain hash of a block's tokens after a prefix whose hash is <paramref name="parentHash"/> (FNV-1a over 64-bit words, then mixed).</summary>
    public static ulong ChainHash(ulong parentHash, ReadOnlySpan<int> tokens)
    {
        ulong h = 0xCBF29CE484222325UL ^ parentHash;
        foreach (int t in tokens) { h ^= (uint)t; h *= 0x100000001B3UL; h = ulong.RotateLeft(h, 29); }
        ulong x = h;
        return Sampling.Xoshiro256StarStar.SplitMix64(ref x) | 1; // never 0: 0 is "no parent"
    }

    /// <summary>Makes a full, written block findable by later sequences with the same prefix. A duplicate is left private.</summary>
    public void Publish(int block, ulong parentHash, ulong hash, ReadOnlySpan<int> tokens)
    {
        lock (_lock)
        {
            if (_refCount[block] <= 0) throw new InvalidOperationException($"KV block {block} published while free");
            if (_blockTokens[block] is not null || _prefixIndex.ContainsKey(hash)) return;
            _prefixIndex[hash] = block;
            _blockHash[block] = hash;
            _parentHash[block] = parentHash;
            _blockTokens[block] = tokens.ToArray();
        }
    }

    /// <summary>Finds a published block for these tokens after this prefix and takes a reference to it; −1 if none.</summary>
    public int TryShare(ulong parentHash, ulong hash, ReadOnlySpan<int> tokens)
    {
        lock (_lock)
        {
            if (!_prefixIndex.TryGetValue(hash, out int block)) return -1;
            if (_parentHash[block] != parentHash || !tokens.SequenceEqual(_blockTokens[block])) return -1;
            if (_evictableNode[block] is { } node) { _evictable.Remove(node); _evictableNode[block] = null; }
            _refCount[block]++;
            return block;
        }
    }

    /// <summary>Drops every unreferenced cached block from the prefix index (they become plain free blocks).</summary>
    public void ClearPrefixCache()
    {
        lock (_lock)
        {
            while (_evictable.First is { } node)
            {
                _evictable.RemoveFirst();
                _evictableNode[node.Value] = null;
                Unindex(node.Value);
                _free.Push(node.Value);
            }
        }
    }

    private void Unindex(int block)
    {
        if (_blockTokens[block] is null) return;
        _prefixIndex.Remove(_blockHash[block]);
        _blockTokens[block] = null;
    }
}

using Harpia.Models;

namespace Harpia.Runtime.KvCache;

/// <summary>
/// A fixed budget of KV-cache blocks (PagedAttention). A block holds <see cref="BlockSize"/> positions of every layer:
/// keys then values, each <c>KvHeads × HeadDim</c> floats per position, laid out
/// <c>[layer][K|V][position in block][kv_head][head_dim]</c>. Storage is allocated on first use and recycled, never
/// beyond the budget. Blocks are reference-counted: a full block can be shared by several sequences through the
/// prefix index (a block's key is the hash of the whole token prefix up to its end, because its keys/values depend on
/// every earlier token). A released block that is in the index stays there, evictable, until its memory is needed.
/// Thread-safe for allocation and release; block contents are accessed without locking by the sequence that owns them.
/// </summary>
public sealed class KvBlockPool
{
    private readonly float[]?[] _storage;
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
    /// <summary>Floats of one position of one layer for K (and as many for V).</summary>
    public int RowFloats { get; }
    public int FloatsPerBlock { get; }
    public long BytesPerBlock => FloatsPerBlock * (long)sizeof(float);
    public int TokenCapacity => TotalBlocks * BlockSize;

    public KvBlockPool(ModelShape shape, int blockSize, int totalBlocks)
    {
        if (blockSize < 1) throw new HarpiaException($"KV block size must be at least 1 position, got {blockSize}");
        if (totalBlocks < 1) throw new HarpiaException($"the KV cache budget must hold at least one block, got {totalBlocks}");
        if (shape.Layers < 1 || shape.KvHeads < 1 || shape.HeadDim < 1)
            throw new HarpiaException($"model shape has no KV cache: {shape.Layers} layers, {shape.KvHeads} KV heads, head dim {shape.HeadDim}");
        long row = (long)shape.KvHeads * shape.HeadDim;
        long perBlock = row * 2 * shape.Layers * blockSize;
        if (perBlock > Array.MaxLength)
            throw new HarpiaException($"a KV block of {blockSize} positions needs {perBlock} floats, more than one array can hold; use smaller blocks");
        Shape = shape;
        BlockSize = blockSize;
        TotalBlocks = totalBlocks;
        RowFloats = (int)row;
        FloatsPerBlock = (int)perBlock;
        _storage = new float[totalBlocks][];
        _refCount = new int[totalBlocks];
        _blockHash = new ulong[totalBlocks];
        _parentHash = new ulong[totalBlocks];
        _blockTokens = new int[totalBlocks][];
        _evictableNode = new LinkedListNode<int>[totalBlocks];
        for (int b = totalBlocks - 1; b >= 0; b--) _free.Push(b);
    }

    /// <summary>A pool for <paramref name="maxTokens"/> positions in total (TGI's <c>--max-batch-total-tokens</c>).</summary>
    public static KvBlockPool ForTokenBudget(ModelShape shape, int blockSize, long maxTokens)
    {
        if (maxTokens < 1) throw new HarpiaException($"max batch total tokens must be positive, got {maxTokens}");
        long blocks = (maxTokens + blockSize - 1) / Math.Max(blockSize, 1);
        if (blocks > int.MaxValue / 2) throw new HarpiaException($"max batch total tokens {maxTokens} is too large");
        return new KvBlockPool(shape, blockSize, (int)blocks);
    }

    /// <summary>A pool of as many blocks as fit in <paramref name="bytes"/>.</summary>
    public static KvBlockPool ForByteBudget(ModelShape shape, int blockSize, long bytes)
    {
        long perBlock = (long)shape.KvHeads * shape.HeadDim * 2 * shape.Layers * Math.Max(blockSize, 1) * sizeof(float);
        long blocks = perBlock > 0 ? bytes / perBlock : 0;
        if (blocks < 1) throw new HarpiaException($"a KV cache budget of {bytes} bytes holds no block of {perBlock} bytes");
        return new KvBlockPool(shape, blockSize, (int)Math.Min(blocks, int.MaxValue / 2));
    }

    /// <summary>Blocks that can be handed out now: never used, released, or cached but unreferenced.</summary>
    public int AvailableBlocks { get { lock (_lock) return _free.Count + _evictable.Count; } }
    /// <summary>Blocks referenced by at least one sequence.</summary>
    public int UsedBlocks { get { lock (_lock) return TotalBlocks - _free.Count - _evictable.Count; } }
    /// <summary>Unreferenced blocks kept for prefix reuse.</summary>
    public int CachedBlocks { get { lock (_lock) return _evictable.Count; } }
    /// <summary>Bytes of block storage allocated so far (grows to the budget at most, never past it).</summary>
    public long AllocatedBytes { get { lock (_lock) return _storage.Count(s => s is not null) * BytesPerBlock; } }

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
            // Never-read-before-written: the model writes a position before attention reads it.
            _storage[block] ??= GC.AllocateUninitializedArray<float>(FloatsPerBlock);
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

    public Span<float> BlockData(int block) => _storage[block];

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

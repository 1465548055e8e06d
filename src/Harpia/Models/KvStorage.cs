using Harpia.Backends;
using Harpia.Backends.Cpu;

namespace Harpia.Models;

/// <summary>
/// A model's KV storage: one <see cref="KvLayerStorage"/> per layer, each allocated by the backend that runs the layer
/// (so a device map can put layers on different devices), all with the same blocks. Its bytes are exactly
/// blocks × block size × the per-token KV bytes that <c>harpia plan</c> counts (2 × layers × KV heads × head dim ×
/// element size).
/// </summary>
public sealed class KvStorage : IDisposable
{
    public IReadOnlyList<KvLayerStorage> Layers { get; }
    public int Blocks { get; }
    public int BlockSize { get; }
    public KvCacheDtype Dtype { get; }
    public long Bytes => Layers.Sum(l => l.Bytes);
    public int TokenCapacity => Blocks * BlockSize;

    private KvStorage(IReadOnlyList<KvLayerStorage> layers, int blocks, int blockSize, KvCacheDtype dtype)
    {
        Layers = layers; Blocks = blocks; BlockSize = blockSize; Dtype = dtype;
    }

    /// <summary>Allocates every layer's storage on the backend <paramref name="backendOfLayer"/> gives it.</summary>
    public static KvStorage Allocate(ModelShape shape, int blocks, int blockSize, KvCacheDtype dtype, Func<int, IComputeBackend> backendOfLayer)
    {
        if (blocks < 1) throw new HarpiaException($"the KV cache must hold at least one block, got {blocks}");
        if (blockSize < 1) throw new HarpiaException($"KV block size must be at least 1 position, got {blockSize}");
        var layers = new List<KvLayerStorage>(shape.Layers);
        try
        {
            for (int l = 0; l < shape.Layers; l++)
                layers.Add(backendOfLayer(l).AllocateKv(blocks, blockSize, shape.KvHeads, shape.HeadDim, dtype));
        }
        catch
        {
            foreach (var layer in layers) layer.Dispose();
            throw;
        }
        return new KvStorage(layers, blocks, blockSize, dtype);
    }

    /// <summary>Bytes of a storage of this shape, without allocating it (what <c>harpia plan</c> must agree with).</summary>
    public static long BytesFor(ModelShape shape, long blocks, int blockSize, KvCacheDtype dtype) =>
        shape.Layers * KvLayerStorage.BytesFor(blocks, blockSize, shape.KvHeads, shape.HeadDim, dtype);

    public void Dispose()
    {
        foreach (var layer in Layers) layer.Dispose();
    }
}

/// <summary>Host-side access to a sequence's KV rows, for CPU f32 storage (tests and test doubles).</summary>
public static class KvCacheHostAccess
{
    /// <summary>Keys of all KV heads of one layer at one position (a view into the storage).</summary>
    public static Span<float> HostKeys(this IKvCache cache, int layer, int position) => Row(cache, layer, position, keys: true);
    public static Span<float> HostValues(this IKvCache cache, int layer, int position) => Row(cache, layer, position, keys: false);

    private static Span<float> Row(IKvCache cache, int layer, int position, bool keys)
    {
        var storage = cache.Storage;
        if ((uint)layer >= (uint)storage.Layers.Count) throw new ArgumentOutOfRangeException(nameof(layer));
        int bs = storage.BlockSize;
        if (position < 0 || position / bs >= cache.BlockTable.Count)
            throw new ArgumentOutOfRangeException(nameof(position), $"position {position} beyond the cache's capacity {cache.BlockTable.Count * bs}");
        var kv = storage.Layers[layer] as CpuKvLayer ?? throw new InvalidOperationException("host access needs CPU KV storage");
        int block = cache.BlockTable[position / bs];
        return keys ? kv.KeysF32(block, position % bs) : kv.ValuesF32(block, position % bs);
    }
}

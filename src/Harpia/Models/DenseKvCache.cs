using Harpia.Backends;

namespace Harpia.Models;

/// <summary>
/// The simplest <see cref="IKvCache"/>: one sequence with storage of its own for up to <see cref="MaxCapacity"/>
/// positions (allocated by the model's backends; host pages are committed only as positions are written), its
/// block table the blocks 0, 1, 2, … For the CLI's tools and tests; the runtime shares a paged pool instead.
/// </summary>
public sealed class DenseKvCache : IKvCache, IDisposable
{
    /// <summary>Positions per block.</summary>
    public const int BlockSize = 16;

    private readonly List<int> _table = [];

    public KvStorage Storage { get; }
    public int Length { get; private set; }
    public int MaxCapacity { get; }
    public IReadOnlyList<int> BlockTable => _table;
    public int Capacity => _table.Count * BlockSize;

    public DenseKvCache(ICausalLM model, int maxCapacity, int initialCapacity = 64, KvCacheDtype dtype = KvCacheDtype.F32)
    {
        if (maxCapacity <= 0) throw new ArgumentOutOfRangeException(nameof(maxCapacity));
        MaxCapacity = maxCapacity;
        Storage = model.AllocateKv((maxCapacity + BlockSize - 1) / BlockSize, BlockSize, dtype);
        Grow(Math.Min(maxCapacity, Math.Max(1, initialCapacity)));
    }

    public void EnsureCapacity(int length)
    {
        if (length > MaxCapacity)
            throw new KvCacheFullException($"the sequence needs {length} positions but the KV cache holds at most {MaxCapacity}");
        Grow(length);
    }

    private void Grow(int length)
    {
        while (Capacity < length) _table.Add(_table.Count);
    }

    public void SetLength(int length)
    {
        if (length < 0 || length > Math.Min(Capacity, MaxCapacity)) throw new ArgumentOutOfRangeException(nameof(length));
        Length = length;
    }

    public void Dispose() => Storage.Dispose();
}

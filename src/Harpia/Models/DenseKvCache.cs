namespace Harpia.Models;

/// <summary>
/// The simplest <see cref="IKvCache"/>: per layer one contiguous array for keys and one for values,
/// <c>[position, kvHeads × headDim]</c>, grown by doubling up to <see cref="MaxCapacity"/>. For the CLI and tests;
/// the runtime uses a paged cache behind the same interface.
/// </summary>
public sealed class DenseKvCache : IKvCache
{
    private readonly float[][] _keys;
    private readonly float[][] _values;
    private readonly int _stride;
    private int _capacity;

    public int Length { get; private set; }
    public int MaxCapacity { get; }

    public DenseKvCache(ModelShape shape, int maxCapacity, int initialCapacity = 64)
    {
        if (maxCapacity <= 0) throw new ArgumentOutOfRangeException(nameof(maxCapacity));
        _stride = shape.KvHeads * shape.HeadDim;
        MaxCapacity = maxCapacity;
        _capacity = Math.Min(maxCapacity, Math.Max(1, initialCapacity));
        _keys = new float[shape.Layers][];
        _values = new float[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            _keys[l] = new float[(long)_capacity * _stride];
            _values[l] = new float[(long)_capacity * _stride];
        }
    }

    public void EnsureCapacity(int length)
    {
        if (length <= _capacity) return;
        if (length > MaxCapacity)
            throw new KvCacheFullException($"the sequence needs {length} positions but the KV cache holds at most {MaxCapacity}");
        int capacity = (int)Math.Min(MaxCapacity, Math.Max(length, 2L * _capacity));
        for (int l = 0; l < _keys.Length; l++)
        {
            Array.Resize(ref _keys[l], capacity * _stride);
            Array.Resize(ref _values[l], capacity * _stride);
        }
        _capacity = capacity;
    }

    public void SetLength(int length)
    {
        if (length < 0 || length > _capacity) throw new ArgumentOutOfRangeException(nameof(length));
        Length = length;
    }

    public Span<float> Keys(int layer, int position) => _keys[layer].AsSpan(Check(position) * _stride, _stride);
    public Span<float> Values(int layer, int position) => _values[layer].AsSpan(Check(position) * _stride, _stride);

    private int Check(int position) =>
        (uint)position < (uint)_capacity ? position : throw new ArgumentOutOfRangeException(nameof(position));
}

using System.Runtime.InteropServices;
using Harpia.Tensors;

namespace Harpia.Backends.Cpu;

/// <summary>A host tensor in a managed array (f32) so kernels take it as a span at no cost.</summary>
public sealed class CpuTensor : DeviceTensor
{
    private readonly float[]? _f32;
    private readonly Half[]? _f16;

    private readonly HostMemory? _account;
    private readonly MemoryUse _use;
    private int _released;

    /// <param name="use">What the tensor holds, for the backend's <see cref="HostMemory"/> accounting.</param>
    public CpuTensor(CpuBackend backend, TensorType type, int rows, int cols, MemoryUse use = MemoryUse.Activations) : base(backend, type, rows, cols)
    {
        long elements = checked((long)rows * cols);
        if (elements > System.Array.MaxLength) throw new HarpiaException($"a [{rows}, {cols}] tensor is larger than one host array can hold");
        _use = use;
        // The disk backend's uploads (a disk layer's norm vectors, a few KB) are counted with the disk's weights, as
        // the device map counts them, not against the memory they are copied into.
        if (use != MemoryUse.Weights || !backend.StreamsWeights)
        {
            backend.Memory.Charge(use, elements * (type == TensorType.F32 ? 4 : 2));
            _account = backend.Memory;
        }
        if (type == TensorType.F32) _f32 = GC.AllocateUninitializedArray<float>((int)elements);
        else _f16 = GC.AllocateUninitializedArray<Half>((int)elements);
    }

    private CpuTensor(CpuTensor of, int cols) : base(of.Backend, of.Type, (int)(of.Elements / cols), cols)
    {
        _f32 = of._f32; _f16 = of._f16;
    }

    /// <summary>Gives the tensor's bytes back to its backend's account (a view owns none).</summary>
    public override void Dispose()
    {
        if (_account is null || Interlocked.Exchange(ref _released, 1) != 0) return;
        _account.Release(_use, Elements * (Type == TensorType.F32 ? 4 : 2));
    }

    private CpuTensor(CpuBackend backend, float[] values) : base(backend, TensorType.F32, 1, values.Length)
    {
        _f32 = values;
        // Accounted as the copy it replaces was (weights, except on the disk backend): a device map counts a layer's
        // norm vectors on that layer's device, and a stand-in device's budget must see them.
        _use = MemoryUse.Weights;
        if (!backend.StreamsWeights)
        {
            backend.Memory.Charge(_use, values.LongLength * 4);
            _account = backend.Memory;
        }
    }

    /// <summary>A [1, values.Length] tensor over <paramref name="values"/> itself (parameters the caller keeps).</summary>
    internal static CpuTensor Wrap(CpuBackend backend, float[] values) => new(backend, values);

    internal CpuTensor View(int cols) => cols > 0 && cols <= Elements ? new CpuTensor(this, cols)
        : throw new ArgumentOutOfRangeException(nameof(cols), $"a view of {cols} columns of a {Elements}-element tensor");

    /// <summary>The f32 elements (row-major).</summary>
    public float[] Array => _f32 ?? throw new InvalidOperationException($"an {Type} tensor has no f32 view");
    public Span<float> Span => Array;
    public Span<float> RowsSpan(int n) => Array.AsSpan(0, checked(n * Cols));
    public Span<Half> HalfSpan => _f16 ?? throw new InvalidOperationException($"an {Type} tensor has no f16 view");
}

/// <summary>A weight on the CPU: the mapped (or quantized-on-load) matrix, repacked into tiles where that is faster.</summary>
public sealed class CpuWeight : DeviceWeight
{
    private Quantization.RepackedWeights? _ownRepack;

    private readonly HostMemory? _account;

    internal CpuWeight(CpuBackend backend, WeightMatrix weight, WeightRole role) : base(backend, weight)
    {
        // A weight the disk backend streams is not resident: it counts against no memory.
        if (!backend.StreamsWeights && backend.Memory.ChargeMatrix(weight)) _account = backend.Memory;
        // Repack at load for the AVX-VNNI kernels (a third to a half of the instructions per weight in decode, no
        // per-tile unpack in prefill); pages of a mapped file are released as each matrix is repacked, so the model
        // is resident once. An embedding table is read row by row and keeps its row-major form; a matrix already
        // repacked (tied weights prepared twice) is shared.
        if (role == WeightRole.Linear && backend.RepackAtLoad
            && Quantization.RepackedWeights.RepacksAtLoad(weight.Type) && weight.Repacked is null)
        {
            unsafe
            {
                _ownRepack = Quantization.RepackedWeights.Create(weight.Type, weight.Data, weight.Rows, weight.Cols,
                    releaseSource: weight.Owner is Formats.MappedFile);
            }
            weight.Repacked = _ownRepack;
        }
    }

    public override void Dispose()
    {
        _account?.ReleaseMatrix(Source);
        _ownRepack?.Dispose();
        _ownRepack = null;
    }
}

/// <summary>
/// One layer's KV storage in native memory, <c>[block][K|V][slot][kv head × head dim]</c>. Allocated whole but
/// committed by the OS page by page as positions are first written, so resident memory grows with use.
/// </summary>
public sealed unsafe class CpuKvLayer : KvLayerStorage
{
    private byte* _data;

    internal CpuKvLayer(CpuBackend backend, int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype)
        : base(backend, blocks, blockSize, kvHeads, headDim, dtype)
    {
        backend.Memory.Charge(MemoryUse.Kv, Bytes);
        _account = backend.Memory;
        _data = (byte*)NativeMemory.AlignedAlloc((nuint)Bytes, NativeBuffer.Alignment);
        GC.AddMemoryPressure(Bytes);
    }

    private readonly HostMemory _account;

    private long ElementSize => KvCacheDtypes.BytesPerElement(Dtype);

    /// <summary>First byte of the keys (kv = 0) or values (kv = 1) of one slot.</summary>
    internal byte* RowPointer(int block, int kv, int slot)
    {
        if (_data == null) throw new ObjectDisposedException(nameof(CpuKvLayer));
        if ((uint)block >= (uint)Blocks) throw new ArgumentOutOfRangeException(nameof(block), $"KV block {block} outside the storage's {Blocks} blocks");
        return _data + (((long)block * 2 + kv) * BlockSize + slot) * RowElements * ElementSize;
    }

    /// <summary>Keys of one slot as f32 (f32 storage only; for tests and host-side tools).</summary>
    public Span<float> KeysF32(int block, int slot) => F32Row(block, 0, slot);
    public Span<float> ValuesF32(int block, int slot) => F32Row(block, 1, slot);

    private Span<float> F32Row(int block, int kv, int slot)
    {
        if (Dtype != KvCacheDtype.F32) throw new InvalidOperationException("only f32 KV storage has float views");
        if ((uint)slot >= (uint)BlockSize) throw new ArgumentOutOfRangeException(nameof(slot));
        return new Span<float>(RowPointer(block, kv, slot), RowElements);
    }

    public override void Clear()
    {
        if (_data == null) throw new ObjectDisposedException(nameof(CpuKvLayer));
        NativeMemory.Clear(_data, (nuint)Bytes);
    }

    public override void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    ~CpuKvLayer() => Free();

    private void Free()
    {
        byte* p = _data;
        if (p == null) return;
        _data = null;
        NativeMemory.AlignedFree(p);
        GC.RemoveMemoryPressure(Bytes);
        _account.Release(MemoryUse.Kv, Bytes);
    }
}

using System.Runtime.InteropServices;
using Harpia.Tensors;
using ILGPU;
using ILGPU.Runtime;
using KernelCode = Harpia.Backends.Cuda.Kernels;

namespace Harpia.Backends.Cuda;

/// <summary>
/// The CUDA backend: the seam's op set over the ILGPU kernels (<see cref="GpuKernels"/>) on one
/// <see cref="GpuDevice"/> — an NVIDIA GPU, or ILGPU's CPU accelerator shaped as one (tests and CI run the same
/// kernels there). Activations and KV storage live in device memory; weights are uploaded at
/// <see cref="PrepareWeight"/> in their stored blocks (every type the kernels decode; other types are dequantized
/// to f32 on the host first). Host-side per-pass arrays (token ids, positions, slots, block tables, rotary tables)
/// go through small device scratch buffers; every launch and copy is on the accelerator's default stream, so a
/// scratch buffer can be rewritten by the next op without waiting (stream order). Ops are issued from one thread.
/// </summary>
public sealed class CudaBackend : IComputeBackend
{
    private readonly bool _ownsDevice;
    private readonly Scratch<int> _ints0, _ints1, _ints2, _ints3;
    private readonly Scratch<float> _floats0, _floats1, _partial, _logits;
    private bool _disposed;

    public GpuDevice Gpu { get; }
    public GpuKernels Kernels => Gpu.Kernels;
    public DeviceInfo Device { get; }
    public string Name { get; }

    /// <param name="device">The accelerator; disposed with the backend when <paramref name="ownsDevice"/>.</param>
    public CudaBackend(GpuDevice device, bool ownsDevice = true)
    {
        Gpu = device;
        _ownsDevice = ownsDevice;
        Device = new DeviceInfo(DeviceKind.Cuda, device.Index, device.Name, device.TotalBytes);
        Name = device.IsSimulator ? $"cuda:{device.Index} (ILGPU CPU accelerator)" : $"cuda:{device.Index}";
        var acc = device.Accelerator;
        _ints0 = new(acc); _ints1 = new(acc); _ints2 = new(acc); _ints3 = new(acc);
        _floats0 = new(acc); _floats1 = new(acc); _partial = new(acc); _logits = new(acc);
    }

    /// <summary>A backend on NVIDIA GPU <paramref name="index"/> (a one-line <see cref="HarpiaException"/> when there is none).</summary>
    public static CudaBackend OpenCuda(int index, string flag = "--device") => new(GpuDevice.OpenCuda(index, flag));

    /// <summary>A backend on ILGPU's CPU accelerator (tests, CI, and <c>HARPIA_CUDA_ON_CPU_ACCELERATOR=1</c>).</summary>
    public static CudaBackend OpenSimulator() => new(GpuDevice.CreateSimulator());

    // ---- memory --------------------------------------------------------------------------------------------------

    public DeviceTensor Allocate(TensorType type, int rows, int cols)
    {
        Enter();
        return new CudaTensor(this, type, rows, cols);
    }

    public DeviceTensor Upload(ReadOnlySpan<float> values)
    {
        var t = new CudaTensor(this, TensorType.F32, 1, values.Length);
        Upload(values, t);
        return t;
    }

    public DeviceTensor View(DeviceTensor tensor, int cols) => Tensor(tensor).View(cols);

    public void Upload(ReadOnlySpan<float> values, DeviceTensor dst)
    {
        var d = F32(dst);
        if (values.Length > d.Length) throw new ArgumentException($"{values.Length} values do not fit a tensor of {d.Length}");
        if (values.Length == 0) return;
        ArrayView1D<float, Stride1D.Dense> target = d.SubView(0, values.Length);
        target.CopyFromCPU(ref MemoryMarshal.GetReference(values), values.Length);
    }

    public void Download(DeviceTensor src, Span<float> values)
    {
        var s = F32(src);
        if (values.Length > s.Length) throw new ArgumentException($"{values.Length} values asked of a tensor of {s.Length}");
        if (values.Length == 0) return;
        ArrayView1D<float, Stride1D.Dense> source = s.SubView(0, values.Length);
        source.CopyToCPU(ref MemoryMarshal.GetReference(values), values.Length);
    }

    public void CopyFrom(DeviceTensor src, int rows, DeviceTensor dst)
    {
        long count = checked((long)rows * dst.Cols);
        if (src is CudaTensor device && ReferenceEquals(device.Backend, this))
        {
            ArrayView1D<float, Stride1D.Dense> from = F32(src).SubView(0, count), to = F32(dst).SubView(0, count);
            from.CopyTo(to);
            return;
        }
        // From another backend: through host memory (the CPU backend's tensors are host arrays already).
        if (src is Cpu.CpuTensor host) { Upload(host.Array.AsSpan(0, checked((int)count)), dst); return; }
        var staging = new float[count];
        src.Backend.Download(src, staging);
        Upload(staging, dst);
    }

    public DeviceWeight PrepareWeight(WeightMatrix weight, WeightRole role = WeightRole.Linear)
    {
        Enter();
        try
        {
            return new CudaWeight(this, weight);
        }
        catch (Exception e) when (e is AcceleratorException or OutOfMemoryException || e.GetType().Name.Contains("OutOfMemory"))
        {
            var (free, total) = Gpu.MemoryInfo();
            throw new HarpiaException($"{Name}: out of device memory uploading '{weight.Name}' ({Bytes(weight.ByteLength)}); " +
                $"{Bytes(free)} of {Bytes(total)} free. Use a smaller quantization (--quantize q4_k_m), or --device cpu");
        }
    }

    public KvLayerStorage AllocateKv(int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype)
    {
        if (blocks < 1 || blockSize < 1 || kvHeads < 1 || headDim < 1)
            throw new HarpiaException($"KV storage needs a positive shape, got {blocks} blocks × {blockSize} positions × {kvHeads} KV heads × {headDim}");
        if (headDim > KernelCode.AttentionKernels.MaxHeadDim)
            throw new HarpiaException($"attention head dimension {headDim} exceeds the CUDA kernels' {KernelCode.AttentionKernels.MaxHeadDim}");
        Enter();
        try
        {
            return new CudaKvLayer(this, blocks, blockSize, kvHeads, headDim, dtype);
        }
        catch (Exception e) when (e is AcceleratorException or OutOfMemoryException || e.GetType().Name.Contains("OutOfMemory"))
        {
            var (free, total) = Gpu.MemoryInfo();
            throw new HarpiaException($"{Name}: out of device memory for the KV cache ({Bytes(KvLayerStorage.BytesFor(blocks, blockSize, kvHeads, headDim, dtype))} per layer); " +
                $"{Bytes(free)} of {Bytes(total)} free. Lower --max-batch-total-tokens, use --kv-cache-dtype f16, or --device cpu");
        }
    }

    // ---- ops -----------------------------------------------------------------------------------------------------

    public void MatMul(DeviceWeight w, DeviceTensor x, int n, DeviceTensor y)
    {
        var gw = Weight(w);
        CheckRows(x, n, gw.Cols, "matmul input");
        CheckRows(y, n, gw.Rows, "matmul output");
        if (n == 0) return;
        Kernels.MatMul(gw, F32(x), n, F32(y));
    }

    public void AddBias(DeviceTensor y, int n, DeviceTensor bias)
    {
        if (n == 0) return;
        Kernels.AddBias(F32(y), F32(bias), y.Cols, n);
    }

    public void Add(DeviceTensor a, DeviceTensor b, int n)
    {
        long count = checked((long)n * a.Cols);
        if (count > 0) Kernels.Add(F32(a), F32(b), count);
    }

    public void LayerNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, DeviceTensor? bias, float eps)
    {
        if (n == 0) return;
        Kernels.LayerNorm(F32(x), F32(y), n, x.Cols, F32(weight), bias is null ? null : F32(bias), eps);
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, float eps)
    {
        if (n > 0) Kernels.RmsNorm(F32(x), F32(y), n, x.Cols, F32(weight), eps);
    }

    public void Gelu(DeviceTensor x, int n)
    {
        long count = (long)n * x.Cols;
        if (count > 0) Kernels.Gelu(F32(x), count);
    }

    public void Silu(DeviceTensor x, int n)
    {
        long count = (long)n * x.Cols;
        if (count > 0) Kernels.Silu(F32(x), count);
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, int n)
    {
        long count = (long)n * gate.Cols;
        if (count > 0) Kernels.SiluMul(F32(gate), F32(up), count);
    }

    public void Embed(DeviceWeight table, ReadOnlySpan<int> tokens, DeviceTensor y)
    {
        var gw = Weight(table);
        if (tokens.Length == 0) return;
        foreach (int t in tokens)
            if ((uint)t >= (uint)gw.Rows) throw new HarpiaException($"token id {t} is outside the embedding table's {gw.Rows} rows");
        CheckRows(y, tokens.Length, gw.Cols, "embedding output");
        Kernels.Embed(gw, _ints0.Put(tokens), tokens.Length, F32(y));
    }

    public void GatherRows(DeviceTensor src, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        if (rows.Length == 0) return;
        foreach (int r in rows)
            if ((uint)r >= (uint)src.Rows) throw new ArgumentOutOfRangeException(nameof(rows), $"row {r} of a {src.Rows}-row tensor");
        Kernels.GatherRows(F32(src), _ints0.Put(rows), rows.Length, src.Cols, F32(dst));
    }

    public void CopyColumns(DeviceTensor src, int n, int offset, int groups, int groupStride, int width, DeviceTensor dst)
    {
        int srcCols = src.Cols, dstCols = dst.Cols;
        if (offset + (long)(groups - 1) * groupStride + width > srcCols || (long)groups * width > dstCols)
            throw new ArgumentException($"column copy of {groups} × {width} at {offset} (stride {groupStride}) does not fit [{srcCols}] → [{dstCols}]");
        // The kernel writes packed rows of groups × width; a wider destination is filled row by row of its own stride.
        if ((long)groups * width != dstCols)
            throw new ArgumentException($"the CUDA column copy writes whole rows: {groups} × {width} columns into a tensor of {dstCols}");
        if (n > 0) Kernels.CopyColumns(F32(src), srcCols, n, offset, groups, groupStride, width, F32(dst));
    }

    public void Rope(DeviceTensor q, int qHeads, DeviceTensor k, int kHeads, int headDim, ReadOnlySpan<int> positions, RotaryEmbedding rope)
    {
        int pairs = rope.InverseFrequencies.Length, n = positions.Length;
        if (pairs * 2 > headDim) throw new ArgumentException($"rotary embedding of {pairs * 2} dims is wider than the head ({headDim})");
        if (n == 0 || pairs == 0) return;
        // Angles in f64 on the host, exactly as the CPU backend makes them; the kernel only rotates.
        var cos = new float[n * pairs];
        var sin = new float[n * pairs];
        for (int t = 0; t < n; t++)
        {
            var c = cos.AsSpan(t * pairs, pairs);
            var s = sin.AsSpan(t * pairs, pairs);
            Tensors.Rope.Table(positions[t], rope.InverseFrequencies, c, s);
            if (rope.AttentionFactor != 1f)
            {
                System.Numerics.Tensors.TensorPrimitives.Multiply(c, rope.AttentionFactor, c);
                System.Numerics.Tensors.TensorPrimitives.Multiply(s, rope.AttentionFactor, s);
            }
        }
        Kernels.Rope(F32(q), qHeads, F32(k), kHeads, headDim, n, _floats0.Put(cos), _floats1.Put(sin), pairs, rope.Style == RopeStyle.Interleaved);
    }

    public void StoreKv(DeviceTensor k, DeviceTensor v, KvLayerStorage kv, AttentionBatch batch)
    {
        var layer = Kv(kv);
        foreach (var (first, count, sequences) in RowRuns(batch))
        {
            var slots = new int[count];
            int i = 0;
            foreach (int s in sequences)
                for (int j = 0; j < batch.QueryLength[s]; j++) slots[i++] = CheckedSlot(batch, s, batch.StartPosition[s] + j, layer);
            long o = (long)first * layer.RowElements;
            Kernels.StoreKv(F32(k).SubView(o), F32(v).SubView(o), _ints0.Put(slots), count, layer.RowElements, layer.BlockSize,
                layer.Half, layer.Full, layer.Dtype == KvCacheDtype.F16);
        }
    }

    public void Attention(DeviceTensor q, KvLayerStorage kv, AttentionBatch batch, AttentionShape shape, DeviceTensor output)
    {
        var layer = Kv(kv);
        if (shape.HeadDim != layer.HeadDim || shape.KvHeads != layer.KvHeads || shape.Heads % shape.KvHeads != 0)
            throw new ArgumentException($"attention of {shape.Heads} heads over {shape.KvHeads} KV heads of {shape.HeadDim} does not match the KV storage ({layer.KvHeads} × {layer.HeadDim})");
        int width = shape.Heads * shape.HeadDim;
        foreach (var (first, count, sequences) in RowRuns(batch))
        {
            // Rows of this run are [first, first + count); the kernel sees them as rows 0… with their sequence
            // (an index into this run's block tables) and position.
            var rowSequence = new int[count];
            var rowPosition = new int[count];
            var tableStart = new int[sequences.Count + 1];
            var tables = new List<int>();
            int i = 0, maxContext = 0;
            for (int m = 0; m < sequences.Count; m++)
            {
                int s = sequences[m];
                for (int j = 0; j < batch.QueryLength[s]; j++)
                {
                    rowSequence[i] = m;
                    rowPosition[i++] = batch.StartPosition[s] + j;
                }
                int context = batch.StartPosition[s] + batch.QueryLength[s];
                maxContext = Math.Max(maxContext, context);
                var table = batch.BlockTable(s);
                int blocks = (context + batch.BlockSize - 1) / batch.BlockSize;
                if (table.Length < blocks) throw new InvalidOperationException($"a block table of {table.Length} blocks for {context} positions");
                foreach (int b in table[..blocks])
                {
                    if ((uint)b >= (uint)layer.Blocks) throw new ArgumentOutOfRangeException(nameof(batch), $"KV block {b} outside the storage's {layer.Blocks} blocks");
                    tables.Add(b);
                }
                tableStart[m + 1] = tables.Count;
            }
            var partial = _partial.Get(GpuKernels.PartialFloats(count, shape.Heads, shape.HeadDim, maxContext));
            long o = (long)first * width;
            Kernels.Attention(F32(q).SubView(o), layer.Half, layer.Full, layer.Dtype == KvCacheDtype.F16, layer.BlockSize,
                _ints0.Put(rowSequence), _ints1.Put(rowPosition), _ints2.Put(tableStart), _ints3.Put(tables.ToArray()),
                count, shape.Heads, shape.KvHeads, shape.HeadDim, shape.Scale, maxContext, partial, F32(output).SubView(o));
        }
    }

    public void Logits(DeviceWeight w, DeviceTensor x, int n, Span<float> logits)
    {
        var gw = Weight(w);
        long count = (long)n * gw.Rows;
        if (logits.Length < count) throw new ArgumentException($"logits holds {logits.Length} floats; {n} rows need {count}");
        if (n == 0) return;
        CheckRows(x, n, gw.Cols, "logits input");
        var y = _logits.Get(count);
        Kernels.MatMul(gw, F32(x), n, y);
        // Only the rows asked for leave the device.
        ArrayView1D<float, Stride1D.Dense> source = y.SubView(0, count);
        source.CopyToCPU(ref MemoryMarshal.GetReference(logits), count);
    }

    public void Synchronize()
    {
        Enter();
        Gpu.Synchronize();
    }

    /// <summary>
    /// Makes this backend's accelerator current on the calling thread (a CUDA context is per thread; the runtime
    /// issues a forward pass from its own thread, not the one that loaded the model). Every entry point calls it.
    /// </summary>
    internal void Enter()
    {
        if (!ReferenceEquals(Accelerator.Current, Gpu.Accelerator)) Gpu.Accelerator.Bind();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Enter();
        _ints0.Dispose(); _ints1.Dispose(); _ints2.Dispose(); _ints3.Dispose();
        _floats0.Dispose(); _floats1.Dispose(); _partial.Dispose(); _logits.Dispose();
        if (_ownsDevice) Gpu.Dispose();
    }

    public override string ToString() => Name;

    // ---- helpers -------------------------------------------------------------------------------------------------

    /// <summary>
    /// The batch's sequences as runs of consecutive activation rows (each run one kernel launch): usually one run,
    /// as the runner lays a storage's sequences out in order; sequences of other storages in between split it.
    /// </summary>
    private static List<(int First, int Count, List<int> Sequences)> RowRuns(AttentionBatch batch)
    {
        var runs = new List<(int First, int Count, List<int> Sequences)>();
        for (int s = 0; s < batch.Sequences; s++)
        {
            int start = batch.QueryStart[s], length = batch.QueryLength[s];
            if (length == 0) continue;
            if (runs.Count > 0 && runs[^1].First + runs[^1].Count == start)
            {
                var last = runs[^1];
                last.Sequences.Add(s);
                runs[^1] = (last.First, last.Count + length, last.Sequences);
            }
            else runs.Add((start, length, [s]));
        }
        return runs;
    }

    private static int CheckedSlot(AttentionBatch batch, int sequence, int position, CudaKvLayer layer)
    {
        var table = batch.BlockTable(sequence);
        int index = position / batch.BlockSize;
        if (index >= table.Length) throw new InvalidOperationException($"position {position} is beyond the block table's {table.Length} blocks");
        int block = table[index];
        if ((uint)block >= (uint)layer.Blocks) throw new ArgumentOutOfRangeException(nameof(batch), $"KV block {block} outside the storage's {layer.Blocks} blocks");
        return block * batch.BlockSize + position % batch.BlockSize;
    }

    private static void CheckRows(DeviceTensor t, int n, int cols, string what)
    {
        if ((long)n * cols > t.Elements) throw new ArgumentException($"{what}: a [{t.Rows}, {t.Cols}] tensor cannot hold {n} rows of {cols}");
    }

    private CudaTensor Tensor(DeviceTensor t)
    {
        Enter();
        return t is CudaTensor c && ReferenceEquals(c.Backend, this) ? c : throw new ArgumentException($"a tensor of backend {t.Backend.Name} was passed to the CUDA backend {Name}");
    }

    private ArrayView<float> F32(DeviceTensor t) => Tensor(t).F32;

    private GpuWeight Weight(DeviceWeight w)
    {
        Enter();
        return w is CudaWeight c && ReferenceEquals(c.Backend, this) ? c.Gpu
            : throw new ArgumentException($"weight '{w.Name}' was prepared for backend {w.Backend.Name}, not {Name}");
    }

    private CudaKvLayer Kv(KvLayerStorage kv)
    {
        Enter();
        return kv is CudaKvLayer c && ReferenceEquals(c.Backend, this) ? c
            : throw new ArgumentException($"KV storage of backend {kv.Backend.Name} was passed to the CUDA backend {Name}");
    }

    public static string Bytes(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F1} GiB" : $"{bytes / (double)(1L << 20):F1} MiB";

    /// <summary>A device buffer that grows to the largest size asked of it and is reused (per-pass host arrays).</summary>
    private sealed class Scratch<T>(Accelerator accelerator) : IDisposable where T : unmanaged
    {
        private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

        public ArrayView<T> Get(long length)
        {
            length = Math.Max(1, length);
            if (_buffer is null || _buffer.Length < length)
            {
                // The old buffer may still be read by queued kernels: wait for them before freeing it.
                if (_buffer is not null) { accelerator.Synchronize(); _buffer.Dispose(); }
                _buffer = accelerator.Allocate1D<T>(Math.Max(length, 256));
            }
            return _buffer.View.SubView(0, length);
        }

        public ArrayView<T> Put(ReadOnlySpan<T> values)
        {
            var view = Get(values.Length);
            ArrayView1D<T, Stride1D.Dense> target = view.SubView(0, values.Length);
            target.CopyFromCPU(ref MemoryMarshal.GetReference(values), values.Length);
            return view;
        }

        public void Dispose() => _buffer?.Dispose();
    }
}

/// <summary>An activation tensor in device memory (f32; f16 tensors are allocated but no op reads them yet).</summary>
public sealed class CudaTensor : DeviceTensor
{
    private readonly MemoryBuffer1D<float, Stride1D.Dense>? _f32;
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense>? _f16;
    private readonly bool _owns;
    private readonly ArrayView<float> _view;

    internal CudaTensor(CudaBackend backend, TensorType type, int rows, int cols) : base(backend, type, rows, cols)
    {
        long elements = Math.Max(1, checked((long)rows * cols));
        if (type == TensorType.F32) { _f32 = backend.Gpu.Accelerator.Allocate1D<float>(elements); _view = _f32.View; }
        else _f16 = backend.Gpu.Accelerator.Allocate1D<ushort>(elements);
        _owns = true;
    }

    private CudaTensor(CudaTensor of, int cols) : base(of.Backend, of.Type, (int)(of.Elements / cols), cols)
    {
        _f32 = of._f32; _f16 = of._f16; _view = of._view;
        _owns = false;
    }

    internal CudaTensor View(int cols) => cols > 0 && cols <= Elements ? new CudaTensor(this, cols)
        : throw new ArgumentOutOfRangeException(nameof(cols), $"a view of {cols} columns of a {Elements}-element tensor");

    internal ArrayView<float> F32 => _f32 is not null ? _view : throw new InvalidOperationException($"an {Type} tensor has no f32 view");

    public override void Dispose()
    {
        if (!_owns) return;
        ((CudaBackend)Backend).Enter();
        _f32?.Dispose();
        _f16?.Dispose();
    }
}

/// <summary>
/// A weight in device memory: the file's blocks as stored where the kernels decode the type (see
/// <see cref="KernelCode.DeviceQuant.Supports"/>), else the rows dequantized to f32 on the host and uploaded.
/// </summary>
public sealed unsafe class CudaWeight : DeviceWeight
{
    private readonly WeightMatrix? _dequantized;
    public GpuWeight Gpu { get; }

    internal CudaWeight(CudaBackend backend, WeightMatrix weight) : base(backend, weight)
    {
        if (weight.Packed is null && KernelCode.DeviceQuant.Supports(weight.Type))
        {
            Gpu = new GpuWeight(backend.Gpu, weight);
            return;
        }
        if (weight.Cols % 8 != 0) throw new HarpiaException($"tensor '{weight.Name}': the CUDA kernels need a multiple of 8 columns, got {weight.Cols}");
        // A type the kernels do not decode, or a packed (GPTQ, bitsandbytes) matrix: f32 rows (4 bytes a weight), made one row at a time by the reference dequantizer.
        var rows = new DequantizedRows(weight.Rows, weight.Cols);
        try
        {
            for (int r = 0; r < weight.Rows; r++) Tensors.MatMul.DequantizeRow(weight, r, rows.Row(r));
            _dequantized = new WeightMatrix(weight.Name, GgmlType.F32, weight.Rows, weight.Cols, rows.Pointer, rows);
            Gpu = new GpuWeight(backend.Gpu, _dequantized);
        }
        finally
        {
            rows.Dispose();   // uploaded: the host copy is no longer needed
        }
    }

    public override void Dispose()
    {
        ((CudaBackend)Backend).Enter();
        Gpu.Dispose();
    }

    private sealed class DequantizedRows(int rows, int cols) : IDisposable
    {
        public byte* Pointer { get; private set; } = (byte*)NativeMemory.AlignedAlloc((nuint)((long)rows * cols * sizeof(float)), 64);
        public Span<float> Row(int r) => new((float*)Pointer + (long)r * cols, cols);
        public void Dispose()
        {
            if (Pointer == null) return;
            NativeMemory.AlignedFree(Pointer);
            Pointer = null;
        }
    }
}

/// <summary>One layer's paged KV storage in device memory, f16 or f32, in the seam's layout.</summary>
public sealed class CudaKvLayer : KvLayerStorage
{
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _half;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _full;

    internal CudaKvLayer(CudaBackend backend, int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype)
        : base(backend, blocks, blockSize, kvHeads, headDim, dtype)
    {
        long elements = (long)blocks * blockSize * 2 * kvHeads * headDim;
        var acc = backend.Gpu.Accelerator;
        // The kernels take both views; the unused one is a one-element placeholder.
        _half = acc.Allocate1D<ushort>(dtype == KvCacheDtype.F16 ? elements : 1);
        try { _full = acc.Allocate1D<float>(dtype == KvCacheDtype.F32 ? elements : 1); }
        catch { _half.Dispose(); throw; }
    }

    internal ArrayView<ushort> Half => _half.View;
    internal ArrayView<float> Full => _full.View;

    /// <summary>Every element as f32, in storage order (tests).</summary>
    public float[] ReadAll()
    {
        if (Dtype == KvCacheDtype.F32) return _full.GetAsArray1D();
        return _half.GetAsArray1D().Select(h => (float)BitConverter.UInt16BitsToHalf(h)).ToArray();
    }

    public override void Clear()
    {
        ((CudaBackend)Backend).Enter();
        _half.View.MemSetToZero();
        _full.View.MemSetToZero();
    }

    public override void Dispose()
    {
        ((CudaBackend)Backend).Enter();
        _half.Dispose();
        _full.Dispose();
    }
}

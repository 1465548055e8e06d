using System.Numerics.Tensors;
using Harpia.Tensors;

namespace Harpia.Backends.Cpu;

/// <summary>
/// The CPU backend: today's kernels (Tensors/, Quantization/) behind the seam. Tensors are managed f32 arrays, weights
/// stay memory-mapped (some quant types repacked at load, see <see cref="CpuWeight"/>), KV storage is native memory.
/// Ops run synchronously on the calling thread plus this backend's compute threads (<see cref="Threads"/>, the
/// pool <see cref="ComputePool"/> the kernels split rows over).
/// </summary>
public sealed class CpuBackend : IComputeBackend
{
    /// <summary>The process's CPU backend (there is one pool of compute threads per process).</summary>
    public static CpuBackend Default { get; } = new();

    private float[] _zeros = [];

    /// <param name="repackAtLoad">Repack Q8_0/K-quant matrices into the tiled AVX-VNNI layouts at load; default: where
    /// that is enabled (<see cref="Quantization.RepackedWeights.Enabled"/>).</param>
    public CpuBackend(bool? repackAtLoad = null)
        : this(repackAtLoad ?? Quantization.RepackedWeights.Enabled, "cpu", new HostMemory("CPU"), streamWeights: false,
            new DeviceInfo(DeviceKind.Cpu, 0, $"CPU ({Environment.ProcessorCount} logical cores)", HostMemoryBytes())) { }

    private CpuBackend(bool repackAtLoad, string name, HostMemory memory, bool streamWeights, DeviceInfo device)
    {
        RepackAtLoad = repackAtLoad && !streamWeights;
        Name = name; Memory = memory; StreamsWeights = streamWeights; Device = device;
    }

    /// <summary>
    /// A CPU backend standing in for GPU <paramref name="gpuIndex"/> (HARPIA_CPU_DEVICES, tests): the same kernels, but
    /// its own memory account (<paramref name="budgetBytes"/>: the most it may hold), so a device map's split, the
    /// copies at its boundaries and each device's budget run without a GPU.
    /// </summary>
    public static CpuBackend StandIn(int gpuIndex, long? budgetBytes = null, bool? repackAtLoad = null) =>
        new(repackAtLoad ?? Quantization.RepackedWeights.Enabled, $"cpu-standin:{gpuIndex}", new HostMemory($"GPU {gpuIndex} (CPU stand-in)", budgetBytes),
            streamWeights: false, new DeviceInfo(DeviceKind.Cpu, gpuIndex, $"CPU stand-in for GPU {gpuIndex}", budgetBytes ?? HostMemoryBytes()));

    /// <summary>
    /// The backend of a device map's "disk" layers: this backend's kernels and memory (their KV and activations live in
    /// CPU memory), but weights are never made resident: not repacked, kept as the checkpoint's mapped bytes, and their
    /// pages dropped from this process after every use (madvise DONTNEED), so each pass reads them from the file again
    /// (from the page cache while the OS keeps it, else from the disk) — accelerate's offload_folder, without the copy.
    /// </summary>
    public CpuBackend ForDisk() => new(false, "disk", Memory, streamWeights: true, Device);

    /// <summary>Whether <see cref="PrepareWeight"/> repacks the matrices it can.</summary>
    public bool RepackAtLoad { get; }
    /// <summary>Weights are read from their mapped file on each use and released after it (<see cref="ForDisk"/>).</summary>
    public bool StreamsWeights { get; }
    /// <summary>The memory this backend allocates from, with its accounting (shared with its <see cref="ForDisk"/> backend).</summary>
    public HostMemory Memory { get; }

    public DeviceInfo Device { get; }
    public string Name { get; }

    /// <summary>Threads the kernels split work over, caller included (the CLI's <c>--threads</c>).</summary>
    public int Threads
    {
        get => ComputePool.Threads;
        set => ComputePool.Threads = value;
    }

    private static long HostMemoryBytes()
    {
        try { return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes; } catch { return 0; }
    }

    // ---- memory --------------------------------------------------------------------------------------------------

    public DeviceTensor Allocate(TensorType type, int rows, int cols) => new CpuTensor(this, type, rows, cols);

    public DeviceTensor Upload(ReadOnlySpan<float> values)
    {
        var t = new CpuTensor(this, TensorType.F32, 1, values.Length, MemoryUse.Weights);
        values.CopyTo(t.Span);
        return t;
    }

    /// <summary>Shares <paramref name="values"/> (no copy): ops only read parameter tensors.</summary>
    public DeviceTensor UploadParameters(float[] values) => CpuTensor.Wrap(this, values);

    public DeviceTensor View(DeviceTensor tensor, int cols) => tensor is CpuTensor c ? c.View(cols)
        : throw new ArgumentException($"a tensor of backend {tensor.Backend.Name} was passed to the CPU backend");

    public void Upload(ReadOnlySpan<float> values, DeviceTensor dst) => values.CopyTo(F32(dst));

    public void Download(DeviceTensor src, Span<float> values) => F32(src).AsSpan(0, values.Length).CopyTo(values);

    public void CopyFrom(DeviceTensor src, int rows, DeviceTensor dst)
    {
        var target = F32(dst).AsSpan(0, checked(rows * dst.Cols));
        if (src is CpuTensor host) host.Array.AsSpan(0, target.Length).CopyTo(target);
        else src.Backend.Download(src, target); // from a device: the source backend reads it out
    }

    public DeviceWeight PrepareWeight(WeightMatrix weight, WeightRole role = WeightRole.Linear) => new CpuWeight(this, weight, role);

    public KvLayerStorage AllocateKv(int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype)
    {
        if (blocks < 1 || blockSize < 1 || kvHeads < 1 || headDim < 1)
            throw new HarpiaException($"KV storage needs a positive shape, got {blocks} blocks × {blockSize} positions × {kvHeads} KV heads × {headDim}");
        return new CpuKvLayer(this, blocks, blockSize, kvHeads, headDim, dtype);
    }

    // ---- ops -------------------------------------------------------------------------------------------------------

    public void MatMul(DeviceWeight w, DeviceTensor x, int n, DeviceTensor y)
    {
        Tensors.MatMul.Compute(Weight(w), F32(x), n, F32(y));
        Released(w);
    }

    public void AddBias(DeviceTensor y, int n, DeviceTensor bias)
    {
        var b = F32(bias).AsSpan(0, y.Cols);
        var rows = F32(y);
        for (int i = 0; i < n; i++) TensorPrimitives.Add(rows.AsSpan(i * y.Cols, y.Cols), b, rows.AsSpan(i * y.Cols, y.Cols));
    }

    public void Add(DeviceTensor a, DeviceTensor b, int n)
    {
        var span = F32(a).AsSpan(0, checked(n * a.Cols));
        TensorPrimitives.Add(span, F32(b).AsSpan(0, span.Length), span);
    }

    public void LayerNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, DeviceTensor? bias, float eps)
    {
        int dim = x.Cols;
        Norms.LayerNorm(F32(x).AsSpan(0, n * dim), F32(y).AsSpan(0, n * dim), n, dim, F32(weight).AsSpan(0, dim),
            bias is null ? Zeros(dim) : F32(bias).AsSpan(0, dim), eps);
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, float eps)
    {
        int dim = x.Cols;
        var xs = F32(x); var ys = F32(y); var w = F32(weight).AsSpan(0, dim);
        for (int r = 0; r < n; r++) CpuOps.RmsNormRow(xs.AsSpan(r * dim, dim), ys.AsSpan(r * dim, dim), w, eps);
    }

    public void Gelu(DeviceTensor x, int n)
    {
        var a = F32(x);
        ComputePool.For(n * x.Cols, (i0, i1) => Activations.GeluExact(a.AsSpan(i0, i1 - i0)), minChunk: 4096);
    }

    public void Silu(DeviceTensor x, int n)
    {
        var a = F32(x);
        ComputePool.For(n * x.Cols, (i0, i1) => CpuOps.Silu(a.AsSpan(i0, i1 - i0)), minChunk: 4096);
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, int n)
    {
        var g = F32(gate); var u = F32(up);
        ComputePool.For(n * gate.Cols, (i0, i1) => CpuOps.SiluMul(g.AsSpan(i0, i1 - i0), u.AsSpan(i0, i1 - i0)), minChunk: 4096);
    }

    public void Embed(DeviceWeight table, ReadOnlySpan<int> tokens, DeviceTensor y)
    {
        var w = Weight(table);
        var rows = F32(y);
        for (int t = 0; t < tokens.Length; t++) Tensors.MatMul.DequantizeRow(w, tokens[t], rows.AsSpan(t * w.Cols, w.Cols));
        Released(table);
    }

    public void GatherRows(DeviceTensor src, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        int cols = src.Cols;
        var s = F32(src); var d = F32(dst);
        for (int i = 0; i < rows.Length; i++) s.AsSpan(rows[i] * cols, cols).CopyTo(d.AsSpan(i * cols, cols));
    }

    public void CopyColumns(DeviceTensor src, int n, int offset, int groups, int groupStride, int width, DeviceTensor dst)
    {
        var s = F32(src); var d = F32(dst);
        int srcCols = src.Cols, dstCols = dst.Cols;
        if (offset + (long)(groups - 1) * groupStride + width > srcCols || (long)groups * width > dstCols)
            throw new ArgumentException($"column copy of {groups} × {width} at {offset} (stride {groupStride}) does not fit [{srcCols}] → [{dstCols}]");
        for (int t = 0; t < n; t++)
            for (int g = 0; g < groups; g++)
                s.AsSpan(t * srcCols + offset + g * groupStride, width).CopyTo(d.AsSpan(t * dstCols + g * width, width));
    }

    public void Rope(DeviceTensor q, int qHeads, DeviceTensor k, int kHeads, int headDim, ReadOnlySpan<int> positions, RotaryEmbedding rope) =>
        CpuOps.Rope(F32(q), qHeads, F32(k), kHeads, headDim, positions, rope);

    public void StoreKv(DeviceTensor k, DeviceTensor v, KvLayerStorage kv, AttentionBatch batch) =>
        CpuAttention.Store(F32(k), F32(v), Kv(kv), batch);

    public void Attention(DeviceTensor q, KvLayerStorage kv, AttentionBatch batch, AttentionShape shape, DeviceTensor output) =>
        CpuAttention.Attend(F32(q), Kv(kv), batch, shape, F32(output));

    public void Logits(DeviceWeight w, DeviceTensor x, int n, Span<float> logits)
    {
        Tensors.MatMul.Compute(Weight(w), F32(x), n, logits);
        Released(w);
    }

    public void Synchronize() { }

    public void Dispose() { }

    // ---- helpers ---------------------------------------------------------------------------------------------------

    /// <summary>On the disk backend, drops a streamed weight's pages from this process once it has been used.</summary>
    private unsafe void Released(DeviceWeight w)
    {
        if (StreamsWeights && w.Source.Owner is Formats.MappedFile && w.Source.Data != null)
            Formats.PageRelease.DontNeed(w.Source.Data, w.Source.ByteLength);
    }

    private ReadOnlySpan<float> Zeros(int n)
    {
        if (_zeros.Length < n) _zeros = new float[n];
        return _zeros.AsSpan(0, n);
    }

    private static float[] F32(DeviceTensor t) => t is CpuTensor c ? c.Array
        : throw new ArgumentException($"a tensor of backend {t.Backend.Name} was passed to the CPU backend");

    private static WeightMatrix Weight(DeviceWeight w) => w is CpuWeight ? w.Source
        : throw new ArgumentException($"weight '{w.Name}' was prepared for backend {w.Backend.Name}, not the CPU");

    private static CpuKvLayer Kv(KvLayerStorage kv) => kv as CpuKvLayer
        ?? throw new ArgumentException($"KV storage of backend {kv.Backend.Name} was passed to the CPU backend");

    public override string ToString() => Name;
}

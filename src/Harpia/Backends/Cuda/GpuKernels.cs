using Harpia.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Harpia.Backends.Cuda;

/// <summary>
/// Host side of the kernels: each is compiled on first use for its accelerator (PTX on a GPU, IL on the simulator)
/// and launched on the default stream with a grid sized by <see cref="GpuDevice.Launch"/>. Launches are
/// asynchronous; <see cref="GpuDevice.Synchronize"/> or a copy back waits for them.
/// </summary>
public sealed class GpuKernels
{
    private readonly GpuDevice _device;
    private Accelerator Acc => _device.Accelerator;

    private readonly Lazy<Action<KernelConfig, ArrayView<byte>, ArrayView<uint>, long, int, int, int, ArrayView<float>, int, ArrayView<float>>> _matVec;
    private readonly Lazy<Action<KernelConfig, ArrayView<byte>, ArrayView<uint>, long, int, int, int, ArrayView<float>, int, ArrayView<float>, int>> _matMulTiled;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<float>, long>> _add;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, long>> _addBias;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, long>> _gelu, _silu;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<float>, long>> _siluMul;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int, ArrayView<float>, ArrayView<float>, int, float>> _layerNorm;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int, ArrayView<float>, float>> _rmsNorm;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, int, ArrayView<float>, int, int, int, ArrayView<float>, ArrayView<float>, int, int>> _rope;
    private readonly Lazy<Action<KernelConfig, ArrayView<byte>, ArrayView<uint>, long, int, int, ArrayView<int>, int, ArrayView<float>>> _embed;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<int>, int, int, ArrayView<float>>> _gatherRows;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, int, int, int, int, int, int, ArrayView<float>>> _copyColumns;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, int, int, ArrayView<int>>> _argmax;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, ArrayView<ushort>, ArrayView<float>, int>> _storeKv;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, AttentionKernels.AttentionParams>> _attend;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, int, int, int, ArrayView<int>, int, ArrayView<float>>> _combine;
    private readonly Lazy<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, long>> _halfRoundTrip;

    /// <summary>Whether the tiled matrix product issues tensor-core MMAs on a GPU (HARPIA_CUDA_MMA=0 runs the C# twin there too).</summary>
    public bool UseMma { get; set; } = Environment.GetEnvironmentVariable("HARPIA_CUDA_MMA") != "0";

    /// <summary>From this many tokens on, a linear layer uses the tiled (tensor-core) product instead of the per-row decode kernel.</summary>
    public int TiledFromTokens { get; set; } = 8;

    internal GpuKernels(GpuDevice device)
    {
        _device = device;
        _matVec = new(() => Acc.LoadStreamKernel<ArrayView<byte>, ArrayView<uint>, long, int, int, int, ArrayView<float>, int, ArrayView<float>>(LinearKernels.MatVec));
        _matMulTiled = new(() => Acc.LoadStreamKernel<ArrayView<byte>, ArrayView<uint>, long, int, int, int, ArrayView<float>, int, ArrayView<float>, int>(LinearKernels.MatMulTiled));
        _add = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long>(ElementKernels.Add));
        _addBias = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, long>(ElementKernels.AddBias));
        _gelu = new(() => Acc.LoadStreamKernel<ArrayView<float>, long>(ElementKernels.Gelu));
        _silu = new(() => Acc.LoadStreamKernel<ArrayView<float>, long>(ElementKernels.Silu));
        _siluMul = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long>(ElementKernels.SiluMul));
        _layerNorm = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int, ArrayView<float>, ArrayView<float>, int, float>(ElementKernels.LayerNorm));
        _rmsNorm = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int, ArrayView<float>, float>(ElementKernels.RmsNorm));
        _rope = new(() => Acc.LoadStreamKernel<ArrayView<float>, int, ArrayView<float>, int, int, int, ArrayView<float>, ArrayView<float>, int, int>(ElementKernels.Rope));
        _embed = new(() => Acc.LoadStreamKernel<ArrayView<byte>, ArrayView<uint>, long, int, int, ArrayView<int>, int, ArrayView<float>>(ElementKernels.Embed));
        _gatherRows = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<int>, int, int, ArrayView<float>>(ElementKernels.GatherRows));
        _copyColumns = new(() => Acc.LoadStreamKernel<ArrayView<float>, int, int, int, int, int, int, ArrayView<float>>(ElementKernels.CopyColumns));
        _argmax = new(() => Acc.LoadStreamKernel<ArrayView<float>, int, int, ArrayView<int>>(ElementKernels.Argmax));
        _storeKv = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, ArrayView<ushort>, ArrayView<float>, int>(AttentionKernels.StoreKv));
        _attend = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, AttentionKernels.AttentionParams>(AttentionKernels.AttendSplits));
        _combine = new(() => Acc.LoadStreamKernel<ArrayView<float>, int, int, int, ArrayView<int>, int, ArrayView<float>>(AttentionKernels.CombineSplits));
        _halfRoundTrip = new(() => Acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, long>(ElementKernels.HalfRoundTrip));
    }

    private int G => _device.GroupSize;
    private KernelConfig Elements(long count) => _device.Launch(count, G);

    /// <summary>y[n, rows] = x[n, cols] · Wᵀ; the weight's bytes as uploaded by <see cref="GpuWeight"/>.</summary>
    public void MatMul(GpuWeight w, ArrayView<float> x, int n, ArrayView<float> y, bool? tiled = null)
    {
        bool useTiles = tiled ?? (n >= TiledFromTokens && w.Cols % LinearKernels.TileK == 0);
        if (useTiles)
        {
            long tiles = (long)((w.Rows + LinearKernels.TileRows - 1) / LinearKernels.TileRows) * ((n + LinearKernels.TileTokens - 1) / LinearKernels.TileTokens);
            var config = _device.Launch(tiles, LinearKernels.TileThreads, 1);
            _matMulTiled.Value(config, w.Bytes, w.Words, w.RowBytes, w.Rows, w.Cols, w.TypeId, x, n, y, UseMma ? 1 : 0);
        }
        else
        {
            // One warp per row, no cross-warp step: on the simulator one-warp groups cost a quarter of 128-thread ones.
            int groupSize = _device.IsSimulator ? 32 : 128;
            _matVec.Value(_device.Launch(w.Rows, groupSize, groupSize / 32), w.Bytes, w.Words, w.RowBytes, w.Rows, w.Cols, w.TypeId, x, n, y);
        }
    }

    public void Add(ArrayView<float> a, ArrayView<float> b, long count) => _add.Value(Elements(count), a, b, count);
    public void AddBias(ArrayView<float> y, ArrayView<float> bias, int cols, int n) => _addBias.Value(Elements((long)n * cols), y, bias, cols, (long)n * cols);
    public void Gelu(ArrayView<float> x, long count) => _gelu.Value(Elements(count), x, count);
    public void Silu(ArrayView<float> x, long count) => _silu.Value(Elements(count), x, count);
    public void SiluMul(ArrayView<float> gate, ArrayView<float> up, long count) => _siluMul.Value(Elements(count), gate, up, count);

    public void LayerNorm(ArrayView<float> x, ArrayView<float> y, int rows, int dim, ArrayView<float> weight, ArrayView<float>? bias, float eps) =>
        _layerNorm.Value(_device.Launch(rows, G, 1), x, y, rows, dim, weight, bias ?? weight, bias.HasValue ? 1 : 0, eps);

    public void RmsNorm(ArrayView<float> x, ArrayView<float> y, int rows, int dim, ArrayView<float> weight, float eps) =>
        _rmsNorm.Value(_device.Launch(rows, G, 1), x, y, rows, dim, weight, eps);

    public void Rope(ArrayView<float> q, int qHeads, ArrayView<float> k, int kHeads, int headDim, int n,
        ArrayView<float> cos, ArrayView<float> sin, int pairs, bool interleaved) =>
        _rope.Value(Elements((long)n * (qHeads + kHeads) * pairs), q, qHeads, k, kHeads, headDim, n, cos, sin, pairs, interleaved ? 1 : 0);

    public void Embed(GpuWeight table, ArrayView<int> tokens, int n, ArrayView<float> y) =>
        _embed.Value(Elements((long)n * table.Cols / 8), table.Bytes, table.Words, table.RowBytes, table.Cols, table.TypeId, tokens, n, y);

    public void GatherRows(ArrayView<float> src, ArrayView<int> rows, int n, int cols, ArrayView<float> dst) =>
        _gatherRows.Value(Elements((long)n * cols), src, rows, n, cols, dst);

    public void CopyColumns(ArrayView<float> src, int srcCols, int n, int offset, int groups, int groupStride, int width, ArrayView<float> dst) =>
        _copyColumns.Value(Elements((long)n * groups * width), src, srcCols, n, offset, groups, groupStride, width, dst);

    public void Argmax(ArrayView<float> logits, int rows, int vocab, ArrayView<int> ids) =>
        _argmax.Value(_device.Launch(rows, G, 1), logits, rows, vocab, ids);

    public void StoreKv(ArrayView<float> k, ArrayView<float> v, ArrayView<int> slots, int rows, int rowElems, int blockSize,
        ArrayView<ushort> half, ArrayView<float> full, bool isHalf) =>
        _storeKv.Value(Elements((long)rows * rowElems), k, v, slots, rows, rowElems, blockSize, half, full, isHalf ? 1 : 0);

    /// <summary>Splits needed for a context of <paramref name="maxContext"/> positions.</summary>
    public static int SplitsFor(int maxContext) => Math.Max(1, (maxContext + AttentionKernels.SplitSize - 1) / AttentionKernels.SplitSize);

    /// <summary>Floats of scratch the attention of <paramref name="rows"/> rows over up to <paramref name="maxContext"/> positions needs.</summary>
    public static long PartialFloats(int rows, int heads, int headDim, int maxContext) => (long)rows * heads * SplitsFor(maxContext) * (headDim + 2);

    /// <summary>Causal paged attention: split-K partials, then their combination into <paramref name="output"/> [rows, heads·headDim].</summary>
    public void Attention(ArrayView<float> q, ArrayView<ushort> half, ArrayView<float> full, bool isHalf, int blockSize,
        ArrayView<int> rowSequence, ArrayView<int> rowPosition, ArrayView<int> tableStart, ArrayView<int> tables,
        int rows, int heads, int kvHeads, int headDim, float scale, int maxContext, ArrayView<float> partial, ArrayView<float> output)
    {
        if (headDim > AttentionKernels.MaxHeadDim) throw new HarpiaException($"attention head dimension {headDim} exceeds the CUDA kernels' {AttentionKernels.MaxHeadDim}");
        int splits = SplitsFor(maxContext);
        var p = new AttentionKernels.AttentionParams
        {
            Rows = rows, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, IsHalf = isHalf ? 1 : 0, BlockSize = blockSize,
            MaxSplits = splits, Scale = scale,
        };
        int groupSize = _device.IsSimulator ? 64 : 32 * AttentionKernels.MaxWarps / 2;
        _attend.Value(_device.Launch((long)rows * heads * splits, groupSize, groupSize / 32), q, half, full, rowSequence, rowPosition, tableStart, tables, partial, p);
        _combine.Value(Elements((long)rows * heads * headDim), partial, rows, heads, headDim, rowPosition, splits, output);
    }

    public void HalfRoundTrip(ArrayView<float> x, ArrayView<ushort> bits, ArrayView<float> back, long count) =>
        _halfRoundTrip.Value(Elements(count), x, bits, back, count);
}

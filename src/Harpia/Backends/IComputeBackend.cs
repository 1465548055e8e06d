using Harpia.Tensors;

namespace Harpia.Backends;

/// <summary>What kind of processor a backend drives.</summary>
public enum DeviceKind { Cpu, Cuda }

/// <summary>One device a backend runs on (a CPU socket's cores, or one GPU).</summary>
/// <param name="Index">The device's ordinal within its kind (CUDA device 0, 1, …; 0 for the CPU).</param>
/// <param name="MemoryBytes">Memory the device can hold tensors in (host RAM for the CPU).</param>
public sealed record DeviceInfo(DeviceKind Kind, int Index, string Name, long MemoryBytes)
{
    public override string ToString() => Kind == DeviceKind.Cpu ? "cpu" : $"{Kind.ToString().ToLowerInvariant()}:{Index}";
}

/// <summary>Element type of activations and KV-cache tensors (weights keep their own <see cref="GgmlType"/>).</summary>
public enum TensorType { F32, F16 }

/// <summary>
/// A device-neutral 2-D tensor handle: <see cref="Rows"/> × <see cref="Cols"/> elements of <see cref="Type"/>,
/// row-major, living in memory of <see cref="Backend"/>. Activations are [tokens, features]; ops take a row count
/// <c>n</c> so one workspace tensor sized for the largest batch serves every smaller one.
/// </summary>
public abstract class DeviceTensor(IComputeBackend backend, TensorType type, int rows, int cols) : IDisposable
{
    public IComputeBackend Backend { get; } = backend;
    public TensorType Type { get; } = type;
    public int Rows { get; } = rows;
    public int Cols { get; } = cols;
    public long Elements => (long)Rows * Cols;
    public virtual void Dispose() { }
}

/// <summary>
/// A weight matrix prepared for one backend: the CPU keeps the mapped view (or repacked tiles); a GPU uploads it.
/// Shape and type are the <see cref="WeightMatrix"/>'s: y = x·Wᵀ maps <see cref="Cols"/> inputs to <see cref="Rows"/> outputs.
/// </summary>
public abstract class DeviceWeight(IComputeBackend backend, WeightMatrix source) : IDisposable
{
    public IComputeBackend Backend { get; } = backend;
    public WeightMatrix Source { get; } = source;
    public string Name => Source.Name;
    public GgmlType Type => Source.Type;
    public int Rows => Source.Rows;
    public int Cols => Source.Cols;
    public virtual void Dispose() { }
}

/// <summary>How a weight is used: a linear layer's matrix (may be repacked), or an embedding table read row by row.</summary>
public enum WeightRole { Linear, Embedding }

/// <summary>Element type of the KV cache (<c>--kv-cache-dtype</c>).</summary>
public enum KvCacheDtype { F32, F16 }

public static class KvCacheDtypes
{
    public static int BytesPerElement(KvCacheDtype dtype) => dtype == KvCacheDtype.F16 ? 2 : 4;

    /// <summary>Parses a <c>--kv-cache-dtype</c> value: f32/fp32/float32 or f16/fp16/float16.</summary>
    public static KvCacheDtype Parse(string value, string flag = "--kv-cache-dtype") => value.Trim().ToLowerInvariant() switch
    {
        "f32" or "fp32" or "float32" => KvCacheDtype.F32,
        "f16" or "fp16" or "float16" or "half" => KvCacheDtype.F16,
        _ => throw new HarpiaException($"{flag}: unknown KV-cache dtype '{value}'; use f32 or f16"),
    };

    public static string Name(KvCacheDtype dtype) => dtype == KvCacheDtype.F16 ? "f16" : "f32";
}

/// <summary>
/// One layer's paged KV storage on a backend: <see cref="Blocks"/> blocks of <see cref="BlockSize"/> positions,
/// laid out <c>[block][K|V][slot in block][kv head][head dim]</c> (vLLM's flash layout: a position's keys of all
/// KV heads are contiguous). Sequences address it through block tables; the block ids come from the runtime's
/// block manager, which never sees the storage.
/// </summary>
public abstract class KvLayerStorage(IComputeBackend backend, int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype) : IDisposable
{
    public IComputeBackend Backend { get; } = backend;
    public int Blocks { get; } = blocks;
    public int BlockSize { get; } = blockSize;
    public int KvHeads { get; } = kvHeads;
    public int HeadDim { get; } = headDim;
    public KvCacheDtype Dtype { get; } = dtype;
    /// <summary>Elements of one position's keys (as many again for values).</summary>
    public int RowElements => KvHeads * HeadDim;
    public long Bytes => BytesFor(Blocks, BlockSize, KvHeads, HeadDim, Dtype);
    public static long BytesFor(long blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype) =>
        blocks * blockSize * 2L * kvHeads * headDim * KvCacheDtypes.BytesPerElement(dtype);
    /// <summary>Sets every element to zero.</summary>
    public abstract void Clear();
    public virtual void Dispose() { }
}

/// <summary>How a rotary embedding pairs a head's dimensions.</summary>
public enum RopeStyle
{
    /// <summary>Hugging Face's <c>rotate_half</c> (GPT-NeoX): pair (i, i + d/2). Falcon, and Llama in HF layout.</summary>
    RotateHalf,
    /// <summary>GPT-J / llama.cpp's "normal" mode: pair (2i, 2i + 1). Llama weights converted to GGUF use this.</summary>
    Interleaved,
}

/// <summary>
/// A rotary position embedding: pair i of a head is rotated by position × <see cref="InverseFrequencies"/>[i]
/// (scaling schemes such as Llama 3's are folded into the frequencies by the architecture), the rotated values
/// multiplied by <see cref="AttentionFactor"/> (YaRN's mscale; 1 otherwise).
/// </summary>
public sealed record RotaryEmbedding(double[] InverseFrequencies, RopeStyle Style, float AttentionFactor = 1f)
{
    public int RotaryDims => InverseFrequencies.Length * 2;

    /// <summary>Plain θ^(−2i/d) frequencies (<see cref="Rope.InverseFrequencies"/>).</summary>
    public static RotaryEmbedding Standard(int headDim, double theta, RopeStyle style) => new(Rope.InverseFrequencies(headDim, theta), style);
}

/// <summary>Head geometry of one attention: query heads, the KV heads they share (GQA), head size and score scale.</summary>
public readonly record struct AttentionShape(int Heads, int KvHeads, int HeadDim, float Scale)
{
    public int QueriesPerKvHead => Heads / KvHeads;
}

/// <summary>
/// The sequences of one forward pass that share one KV storage, as paged attention needs them: for each sequence
/// the rows of its new tokens in the activations (<see cref="QueryStart"/>, <see cref="QueryLength"/>), the position
/// of its first new token (= positions already cached), and its block table (<see cref="BlockTable(int)"/>:
/// block <c>i</c> holds positions [i·BlockSize, (i+1)·BlockSize)). A new token at position p attends to [0, p].
/// Host arrays; a device backend uploads them (once per instance: the runner builds one per forward pass).
/// </summary>
public sealed class AttentionBatch
{
    public required int BlockSize { get; init; }
    public required int[] QueryStart { get; init; }
    public required int[] QueryLength { get; init; }
    public required int[] StartPosition { get; init; }
    /// <summary>Offsets into <see cref="BlockTables"/>, one per sequence plus an end.</summary>
    public required int[] BlockTableStart { get; init; }
    public required int[] BlockTables { get; init; }
    public int Sequences => QueryStart.Length;
    /// <summary>The most positions any sequence attends over after this pass.</summary>
    public int MaxContext { get; init; }
    public ReadOnlySpan<int> BlockTable(int sequence) =>
        BlockTables.AsSpan(BlockTableStart[sequence], BlockTableStart[sequence + 1] - BlockTableStart[sequence]);
    /// <summary>Where the KV of position <paramref name="position"/> of a sequence lives: block × BlockSize + slot.</summary>
    public int Slot(int sequence, int position) => BlockTable(sequence)[position / BlockSize] * BlockSize + position % BlockSize;
}

/// <summary>
/// The compute seam: a device, its memory and the op set a decoder layer needs. Model code (an architecture's
/// layer math and the generic runner) calls only these; each backend implements them with its own kernels (the
/// CPU backend calls Tensors/ and Quantization/). Tensors passed to an op must belong to this backend. Ops are
/// issued from one thread per forward pass (the runner's); a backend may run them asynchronously as long as
/// <see cref="Download"/> and <see cref="Logits"/> return finished results.
/// Every op is checked by the conformance suite (tests/Harpia.Tests/Backends) against the CPU reference.
/// </summary>
public interface IComputeBackend : IDisposable
{
    DeviceInfo Device { get; }
    /// <summary>Short name for flags and test names: "cpu", "cuda:0".</summary>
    string Name { get; }

    // ---- memory ------------------------------------------------------------------------------------------------
    /// <summary>A [rows, cols] tensor; contents undefined until written.</summary>
    DeviceTensor Allocate(TensorType type, int rows, int cols);
    /// <summary>A [1, values.Length] f32 tensor holding <paramref name="values"/> (norm weights, biases).</summary>
    DeviceTensor Upload(ReadOnlySpan<float> values);
    /// <summary>
    /// A [1, values.Length] f32 tensor of model parameters (norm weights, biases) that the caller keeps, unchanged, for
    /// the tensor's whole life. A device copies them (the default); the CPU backend uses the array itself, so a
    /// vector the model's weights already hold is not resident twice.
    /// </summary>
    DeviceTensor UploadParameters(float[] values) => Upload(values);
    /// <summary>
    /// A view of the same memory as <paramref name="tensor"/> with <paramref name="cols"/> columns (rows = elements / cols),
    /// so one scratch buffer can serve two shapes in turn.
    /// </summary>
    DeviceTensor View(DeviceTensor tensor, int cols);
    /// <summary>Writes host rows into the first <c>values.Length / Cols</c> rows of an f32 tensor.</summary>
    void Upload(ReadOnlySpan<float> values, DeviceTensor dst);
    /// <summary>Reads the first <c>values.Length</c> elements (row-major) of an f32 tensor into host memory.</summary>
    void Download(DeviceTensor src, Span<float> values);
    /// <summary>Copies the first <paramref name="rows"/> rows of <paramref name="src"/> (on any backend) into dst on this one.</summary>
    void CopyFrom(DeviceTensor src, int rows, DeviceTensor dst);
    /// <summary>
    /// Prepares a weight for this backend. The CPU keeps the mapped bytes, repacking some quant types into
    /// interleaved tiles (releasing the file's pages); a GPU copies them to device memory.
    /// </summary>
    DeviceWeight PrepareWeight(WeightMatrix weight, WeightRole role = WeightRole.Linear);
    /// <summary>One layer's KV storage.</summary>
    KvLayerStorage AllocateKv(int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype);

    // ---- ops (n = rows used; y may not alias x unless said) ------------------------------------------------------
    /// <summary>y[n, w.Rows] = x[n, w.Cols] · Wᵀ, for every weight type Harpia reads.</summary>
    void MatMul(DeviceWeight w, DeviceTensor x, int n, DeviceTensor y);
    /// <summary>y[i, :] += bias for each of n rows.</summary>
    void AddBias(DeviceTensor y, int n, DeviceTensor bias);
    /// <summary>a[0..n·cols) += b (the residual add).</summary>
    void Add(DeviceTensor a, DeviceTensor b, int n);
    /// <summary>y = (x − mean)/√(var + eps) · weight + bias per row (torch's LayerNorm, biased variance); y may be x.</summary>
    void LayerNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, DeviceTensor? bias, float eps);
    /// <summary>y = x / √(mean(x²) + eps) · weight per row (Llama's RMSNorm); y may be x.</summary>
    void RmsNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, float eps);
    /// <summary>Exact (erf) GELU in place over n rows.</summary>
    void Gelu(DeviceTensor x, int n);
    /// <summary>SiLU x·σ(x) in place over n rows.</summary>
    void Silu(DeviceTensor x, int n);
    /// <summary>SwiGLU's gate: gate = silu(gate) · up, in place over n rows.</summary>
    void SiluMul(DeviceTensor gate, DeviceTensor up, int n);
    /// <summary>y[t, :] = row tokens[t] of the embedding table, dequantized.</summary>
    void Embed(DeviceWeight table, ReadOnlySpan<int> tokens, DeviceTensor y);
    /// <summary>dst[i, :] = src[rows[i], :].</summary>
    void GatherRows(DeviceTensor src, ReadOnlySpan<int> rows, DeviceTensor dst);
    /// <summary>
    /// Strided column copy, for splitting fused projections: for each of n rows and g in [0, groups),
    /// dst[t, g·width .. (g+1)·width) = src[t, offset + g·groupStride .. + width).
    /// </summary>
    void CopyColumns(DeviceTensor src, int n, int offset, int groups, int groupStride, int width, DeviceTensor dst);
    /// <summary>
    /// Rotates q ([n, qHeads × headDim]) and k ([n, kHeads × headDim]) in place, token t at positions[t].
    /// </summary>
    void Rope(DeviceTensor q, int qHeads, DeviceTensor k, int kHeads, int headDim, ReadOnlySpan<int> positions, RotaryEmbedding rope);
    /// <summary>Writes the new tokens' k and v ([rows, kvHeads × headDim]) into the KV storage at their slots.</summary>
    void StoreKv(DeviceTensor k, DeviceTensor v, KvLayerStorage kv, AttentionBatch batch);
    /// <summary>
    /// Causal paged attention: for each new token (row) of each sequence at position p, each query head attends over
    /// the sequence's positions [0, p] in the KV storage; output [rows, heads × headDim]. Query heads sharing a KV
    /// head (GQA) are processed together.
    /// </summary>
    void Attention(DeviceTensor q, KvLayerStorage kv, AttentionBatch batch, AttentionShape shape, DeviceTensor output);
    /// <summary>Logits out: logits[n, w.Rows] (host) = x[n, w.Cols] · Wᵀ.</summary>
    void Logits(DeviceWeight w, DeviceTensor x, int n, Span<float> logits);
    /// <summary>Waits for queued work (a no-op where ops are synchronous).</summary>
    void Synchronize();
}

using Harpia.Backends;

namespace Harpia.Models;

/// <summary>
/// One model architecture as layer math over the backend op set, in the order of its Hugging Face modeling file:
/// embeddings, one decoder layer, the final norm. No buffers, no threads, no batching: the generic
/// <see cref="DecoderModel"/> flattens the batch, owns the workspaces (<see cref="Scratch"/> declares what one
/// layer needs per token), runs the layer loop and produces the logits.
/// An architecture is built by its loader (see <see cref="ModelRegistry"/>) with its weights already prepared on the
/// backends of a <see cref="BackendMap"/>.
/// </summary>
public interface IDecoderArchitecture : IDisposable
{
    /// <summary>The registry name ("falcon", "llama").</summary>
    string Name { get; }
    ModelShape Shape { get; }
    /// <summary>Per-token widths (f32 elements) of the scratch tensors one layer uses; ctx.Scratch[i] has Scratch[i] columns.</summary>
    IReadOnlyList<int> Scratch { get; }
    /// <summary>hidden[t] = embedding of token t (on the map's embedding backend).</summary>
    void Embed(ForwardContext ctx, DeviceTensor hidden);
    /// <summary>One decoder layer, updating the residual stream <paramref name="hidden"/> in place.</summary>
    void Layer(int layer, ForwardContext ctx, DeviceTensor hidden);
    /// <summary>The final norm over <paramref name="rows"/> rows of x, in place (on the map's head backend).</summary>
    void FinalNorm(ForwardContext ctx, DeviceTensor x, int rows);
    /// <summary>The output projection (lm_head), on the head backend.</summary>
    DeviceWeight LmHead { get; }
    /// <summary>The decoder layers' matrices in the checkpoint's types, for descriptions (dominant dtype, bytes per token).</summary>
    IEnumerable<Tensors.WeightMatrix> LayerMatrices { get; }
    /// <summary>The token embedding table (one row is read per token).</summary>
    Tensors.WeightMatrix Embeddings { get; }
    /// <summary>Lines for <c>harpia inspect</c>: ("architecture", "60 layers, hidden 8192, …"), and any the architecture adds.</summary>
    IReadOnlyList<(string Label, string Text)> Describe();
}

/// <summary>A linear layer prepared on a backend: y = x·Wᵀ (+ b).</summary>
public sealed record DeviceLinear(DeviceWeight Weight, DeviceTensor? Bias) : IDisposable
{
    public static DeviceLinear Prepare(IComputeBackend backend, Tensors.WeightMatrix weight, float[]? bias) =>
        new(backend.PrepareWeight(weight), bias is null ? null : backend.UploadParameters(bias));
    public void Dispose() { Weight.Dispose(); Bias?.Dispose(); }
}

/// <summary>A LayerNorm's or RMSNorm's parameters on a backend (<see cref="Bias"/> null: none, or RMSNorm).</summary>
public sealed record DeviceNorm(DeviceTensor Weight, DeviceTensor? Bias, float Eps) : IDisposable
{
    public static DeviceNorm Prepare(IComputeBackend backend, float[] weight, float[]? bias, float eps) =>
        new(backend.UploadParameters(weight), bias is null ? null : backend.UploadParameters(bias), eps);
    public void Dispose() { Weight.Dispose(); Bias?.Dispose(); }
}

/// <summary>
/// What an architecture's layer code sees of one forward pass on one backend: the token count, positions, the
/// layer's KV storage with the batch's block tables, the scratch tensors — and the ops, with the row count filled in,
/// so the layer reads as the modeling file does.
/// </summary>
public sealed class ForwardContext
{
    internal ForwardContext(IComputeBackend backend, int tokens, int[] tokenIds, int[] positions,
        IReadOnlyList<(KvStorage Storage, AttentionBatch Batch)> groups, DeviceTensor[] scratch)
    {
        Backend = backend; Tokens = tokens; TokenIds = tokenIds; Positions = positions; _groups = groups; Scratch = scratch;
    }

    private readonly IReadOnlyList<(KvStorage Storage, AttentionBatch Batch)> _groups;

    public IComputeBackend Backend { get; }
    /// <summary>Rows of every activation tensor in this pass (all new tokens of all sequences).</summary>
    public int Tokens { get; }
    public int[] TokenIds { get; }
    /// <summary>Position of each token in its sequence.</summary>
    public int[] Positions { get; }
    /// <summary>The architecture's scratch tensors (<see cref="IDecoderArchitecture.Scratch"/>), [max tokens, width].</summary>
    public DeviceTensor[] Scratch { get; }

    public void Linear(DeviceLinear linear, DeviceTensor x, DeviceTensor y)
    {
        Backend.MatMul(linear.Weight, x, Tokens, y);
        if (linear.Bias is { } bias) Backend.AddBias(y, Tokens, bias);
    }

    public void LayerNorm(DeviceNorm norm, DeviceTensor x, DeviceTensor y) => Backend.LayerNorm(x, y, Tokens, norm.Weight, norm.Bias, norm.Eps);
    public void RmsNorm(DeviceNorm norm, DeviceTensor x, DeviceTensor y) => Backend.RmsNorm(x, y, Tokens, norm.Weight, norm.Eps);
    public void Gelu(DeviceTensor x) => Backend.Gelu(x, Tokens);
    public void Silu(DeviceTensor x) => Backend.Silu(x, Tokens);
    public void SiluMul(DeviceTensor gate, DeviceTensor up) => Backend.SiluMul(gate, up, Tokens);
    /// <summary>residual += x.</summary>
    public void Add(DeviceTensor residual, DeviceTensor x) => Backend.Add(residual, x, Tokens);
    public void CopyColumns(DeviceTensor src, int offset, int groups, int groupStride, int width, DeviceTensor dst) =>
        Backend.CopyColumns(src, Tokens, offset, groups, groupStride, width, dst);
    public DeviceTensor View(DeviceTensor tensor, int cols) => Backend.View(tensor, cols);
    public void Rotary(RotaryEmbedding rope, DeviceTensor q, int heads, DeviceTensor k, int kvHeads, int headDim) =>
        Backend.Rope(q, heads, k, kvHeads, headDim, Positions, rope);

    /// <summary>
    /// Stores this pass's keys and values in layer <paramref name="layer"/>'s KV cache, then causal attention of q over
    /// each sequence's cached positions into <paramref name="output"/> [tokens, heads × head dim].
    /// </summary>
    public void Attention(int layer, AttentionShape shape, DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor output)
    {
        foreach (var (storage, batch) in _groups)
        {
            var kv = storage.Layers[layer];
            Backend.StoreKv(k, v, kv, batch);
            Backend.Attention(q, kv, batch, shape, output);
        }
    }
}

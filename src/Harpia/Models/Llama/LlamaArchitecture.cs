using Harpia.Backends;
using Harpia.Tensors;

namespace Harpia.Models.Llama;

/// <summary>
/// The Llama architecture's layer math over the backend ops (Llama 2/3.x, Falcon3, Mistral, Qwen2), in the order of
/// Hugging Face's <c>modeling_llama.py</c>:
/// <code>
/// h = embed_tokens(ids)
/// for each decoder layer:
///     x = input_layernorm(h)                                   (RMSNorm)
///     q, k, v = q_proj(x), k_proj(x), v_proj(x);  rotary(q, k)  (biases: attention_bias, Qwen2's q/k/v)
///     h = h + o_proj(softmax(q·kᵀ/√d + causal) · v)             grouped KV heads, over the sequence's KV cache
///     x = post_attention_layernorm(h)
///     h = h + down_proj(silu(gate_proj(x)) · up_proj(x))       (SwiGLU; biases with mlp_bias)
/// logits = lm_head(norm(h))                                    (lm_head is embed_tokens when tied)
/// </code>
/// Rotary pairs dimensions (i, i + d/2) as transformers' rotate_half does, or (2i, 2i + 1) for a llama.cpp
/// <c>llama</c> GGUF, whose q/k rows its converter permuted so (q·k is the same either way).
/// </summary>
public sealed class LlamaArchitecture : IDecoderArchitecture
{
    // Scratch slots: the normalized input and the sublayer output are reused by attention and then the MLP.
    private const int Normed = 0, Output = 1, Q = 2, K = 3, V = 4, Context = 5, Gate = 6, Up = 7;

    private readonly LlamaConfig _c;
    private readonly LlamaWeights _weights;
    private readonly DeviceWeight _embeddings;
    private readonly LayerWeights[] _layers;
    private readonly DeviceNorm _norm;
    private readonly RopeStyle _ropeStyle;
    private readonly RotaryEmbedding _rope;
    private readonly AttentionShape _attention;
    // Dynamic NTK: the frequencies of the last sequence length seen (one forward pass calls every layer with it).
    private (int Length, RotaryEmbedding Rope) _dynamic;

    private sealed record LayerWeights(DeviceNorm InputLayernorm, DeviceLinear QProj, DeviceLinear KProj, DeviceLinear VProj, DeviceLinear OProj,
        DeviceNorm PostAttentionLayernorm, DeviceLinear GateProj, DeviceLinear UpProj, DeviceLinear DownProj);

    public string Name => "llama";
    public ModelShape Shape { get; }
    public IReadOnlyList<int> Scratch { get; }
    public DeviceWeight LmHead { get; }

    /// <summary>
    /// The per-token scratch widths of one layer (as the slots above use them). The device map's activation estimate
    /// reads the same list (<see cref="Placement.ModelFootprint.LayerScratch"/>).
    /// </summary>
    public static int[] ScratchWidths(int hidden, int q, int kv, int ffn) => [hidden, hidden, q, kv, kv, q, ffn, ffn];

    /// <summary>Prepares <paramref name="weights"/> on the backends of <paramref name="devices"/>.</summary>
    public LlamaArchitecture(LlamaConfig config, LlamaWeights weights, BackendMap devices)
    {
        _c = config;
        _weights = weights;
        int D = config.HeadDim;
        Shape = LlamaModel.ShapeOf(config);
        _ropeStyle = config.RotaryInterleaved ? RopeStyle.Interleaved : RopeStyle.RotateHalf;
        _rope = new RotaryEmbedding(config.RotaryInverseFrequencies(), _ropeStyle);
        _dynamic = (0, _rope);
        _attention = new AttentionShape(config.NumHeads, config.NumKvHeads, D, 1f / MathF.Sqrt(D));
        int h = config.HiddenSize, q = config.QueryWidth, kv = config.KvWidth, f = config.IntermediateSize;
        Scratch = ScratchWidths(h, q, kv, f);

        _embeddings = devices.Embedding.PrepareWeight(weights.TokenEmbeddings, WeightRole.Embedding);
        _layers = new LayerWeights[config.NumLayers];
        float eps = config.RmsNormEps;
        for (int i = 0; i < _layers.Length; i++)
        {
            var b = devices.Layers[i];
            var w = weights.Layers[i];
            DeviceNorm Norm(float[] weight) => DeviceNorm.Prepare(b, weight, null, eps);
            DeviceLinear Lin(Falcon.Linear l) => DeviceLinear.Prepare(b, l.Weight, l.Bias);
            _layers[i] = new LayerWeights(Norm(w.InputLayernorm), Lin(w.QProj), Lin(w.KProj), Lin(w.VProj), Lin(w.OProj),
                Norm(w.PostAttentionLayernorm), Lin(w.GateProj), Lin(w.UpProj), Lin(w.DownProj));
        }
        _norm = DeviceNorm.Prepare(devices.Head, weights.FinalNorm, null, eps);
        LmHead = devices.Head.PrepareWeight(weights.LmHead);
    }

    public IEnumerable<WeightMatrix> LayerMatrices =>
        _weights.Layers.SelectMany(l => new[] { l.QProj.Weight, l.KProj.Weight, l.VProj.Weight, l.OProj.Weight, l.GateProj.Weight, l.UpProj.Weight, l.DownProj.Weight });

    public WeightMatrix Embeddings => _weights.TokenEmbeddings;

    public IReadOnlyList<(string Label, string Text)> Describe() =>
    [
        ("architecture", _c.Describe()),
        ("lm_head", _weights.Tied ? "tied to token embeddings" : "stored"),
    ];

    public void Embed(ForwardContext ctx, DeviceTensor hidden) => ctx.Backend.Embed(_embeddings, ctx.TokenIds, hidden);

    public void Layer(int layer, ForwardContext ctx, DeviceTensor hidden)
    {
        var w = _layers[layer];
        var normed = ctx.Scratch[Normed];
        var output = ctx.Scratch[Output];

        ctx.RmsNorm(w.InputLayernorm, hidden, normed);
        SelfAttention(layer, w, ctx, normed, output);
        ctx.Add(hidden, output);

        ctx.RmsNorm(w.PostAttentionLayernorm, hidden, normed);
        Mlp(w, ctx, normed, output);
        ctx.Add(hidden, output);
    }

    /// <summary>LlamaAttention: q/k/v projections, rotary, grouped-KV attention over the paged cache, o_proj.</summary>
    private void SelfAttention(int layer, LayerWeights w, ForwardContext ctx, DeviceTensor x, DeviceTensor output)
    {
        var (q, k, v, context) = (ctx.Scratch[Q], ctx.Scratch[K], ctx.Scratch[V], ctx.Scratch[Context]);
        ctx.Linear(w.QProj, x, q);
        ctx.Linear(w.KProj, x, k);
        ctx.Linear(w.VProj, x, v);
        ctx.Rotary(RopeFor(ctx), q, _c.NumHeads, k, _c.NumKvHeads, _c.HeadDim);
        ctx.Attention(layer, _attention, q, k, v, context);
        ctx.Linear(w.OProj, context, output);
    }

    /// <summary>LlamaMLP: down_proj(silu(gate_proj(x)) · up_proj(x)).</summary>
    private static void Mlp(LayerWeights w, ForwardContext ctx, DeviceTensor x, DeviceTensor output)
    {
        var (gate, up) = (ctx.Scratch[Gate], ctx.Scratch[Up]);
        ctx.Linear(w.GateProj, x, gate);
        ctx.Linear(w.UpProj, x, up);
        ctx.SiluMul(gate, up);
        ctx.Linear(w.DownProj, gate, output);
    }

    /// <summary>
    /// The rotary frequencies of this pass. Only dynamic NTK depends on it: transformers' dynamic_rope_update
    /// recomputes them from the longest position of the call (max(position_ids) + 1).
    /// </summary>
    private RotaryEmbedding RopeFor(ForwardContext ctx)
    {
        if (!_c.RopeDependsOnLength) return _rope;
        int length = 0;
        foreach (int p in ctx.Positions) length = Math.Max(length, p + 1);
        if (length <= _c.MaxPositionEmbeddingsForDynamic) return _rope;
        if (_dynamic.Length != length) _dynamic = (length, new RotaryEmbedding(_c.RotaryInverseFrequencies(length), _ropeStyle));
        return _dynamic.Rope;
    }

    public void FinalNorm(ForwardContext ctx, DeviceTensor x, int rows) =>
        ctx.Backend.RmsNorm(x, x, rows, _norm.Weight, _norm.Eps);

    public void Dispose()
    {
        _embeddings.Dispose();
        foreach (var l in _layers)
        {
            l.InputLayernorm.Dispose(); l.PostAttentionLayernorm.Dispose();
            l.QProj.Dispose(); l.KProj.Dispose(); l.VProj.Dispose(); l.OProj.Dispose();
            l.GateProj.Dispose(); l.UpProj.Dispose(); l.DownProj.Dispose();
        }
        _norm.Dispose();
        LmHead.Dispose();
    }
}

using Harpia.Backends;
using Harpia.Tensors;

namespace Harpia.Models.Falcon;

/// <summary>
/// Falcon's layer math over the backend ops, in the order of Hugging Face's <c>modeling_falcon.py</c>:
/// <code>
/// h = word_embeddings(ids)
/// for each decoder layer:
///     attn_in = ln_attn(h)            (7B: input_layernorm)
///     mlp_in  = ln_mlp(h)             (7B with parallel_attn: the same attn_in)
///     qkv     = query_key_value(attn_in);  split q, k, v per KV group;  rotary(q, k)
///     attn    = dense(softmax(q·kᵀ/√d + causal) · v)     over the sequence's KV cache
///     mlp     = dense_4h_to_h(gelu(dense_h_to_4h(mlp_in)))
///     h       = h + attn + mlp        (sequential layers: h += attn first, then the MLP on post_attention_layernorm(h))
/// logits = lm_head(ln_f(h))
/// </code>
/// Compute is f32; weights stay in their stored types (the backend's matmul handles each).
/// </summary>
public sealed class FalconArchitecture : IDecoderArchitecture
{
    // Scratch slots (per-token widths in Scratch): one normalized-input and one output buffer serve attention and then
    // the MLP in turn (the MLP's input norm reads `hidden`, which attention leaves untouched until its output is added).
    private const int Normed = 0, Output = 1, Qkv = 2, Q = 3, K = 4, V = 5, Up = 6;

    private readonly FalconConfig _c;
    private readonly DeviceWeight _wordEmbeddings;
    private readonly LayerWeights[] _layers;
    private readonly DeviceNorm _lnF;
    private readonly RotaryEmbedding _rope;
    private readonly AttentionShape _attention;
    private readonly FalconWeights _weights;

    private sealed record LayerWeights(DeviceNorm? LnAttn, DeviceNorm? LnMlp, DeviceNorm? InputLayernorm, DeviceNorm? PostAttentionLayernorm,
        DeviceLinear QueryKeyValue, DeviceLinear Dense, DeviceLinear DenseHTo4H, DeviceLinear Dense4HToH);

    public string Name => "falcon";
    public ModelShape Shape { get; }
    public IReadOnlyList<int> Scratch { get; }
    public DeviceWeight LmHead { get; }

    /// <summary>
    /// The per-token scratch widths of one layer (the normalized input, the output, the fused QKV — which also holds the
    /// attention context once q, k, v are split out —, q, k, v, the MLP's intermediate). The device map's activation
    /// estimate reads the same list (<see cref="Placement.ModelFootprint.LayerScratch"/>).
    /// </summary>
    public static int[] ScratchWidths(int hidden, int qkv, int q, int kv, int ffn) => [hidden, hidden, Math.Max(qkv, q), q, kv, kv, ffn];

    /// <summary>Prepares <paramref name="weights"/> on the backends of <paramref name="devices"/>.</summary>
    public FalconArchitecture(FalconConfig config, FalconWeights weights, BackendMap devices)
    {
        _c = config;
        _weights = weights;
        int D = config.HeadDim;
        Shape = new ModelShape(config.NumLayers, config.NumKvHeads, D, config.VocabSize, config.MaxPositions, config.HiddenSize);
        _rope = RotaryEmbedding.Standard(D, config.RopeTheta, RopeStyle.RotateHalf);
        _attention = new AttentionShape(config.NumHeads, config.NumKvHeads, D, 1f / MathF.Sqrt(D));
        int h = config.HiddenSize, q = config.NumHeads * D, kv = config.NumKvHeads * D;
        // The fused QKV buffer also holds the attention context (heads × head_dim ≤ the fused width) once q, k, v are split out.
        Scratch = ScratchWidths(h, config.QkvSize, q, kv, config.FfnHiddenSize);

        _wordEmbeddings = devices.Embedding.PrepareWeight(weights.WordEmbeddings, WeightRole.Embedding);
        _layers = new LayerWeights[config.NumLayers];
        float eps = config.LayerNormEpsilon;
        for (int i = 0; i < _layers.Length; i++)
        {
            var b = devices.Layers[i];
            var w = weights.Layers[i];
            DeviceNorm? Norm(LayerNormWeights? n) => n is null ? null : DeviceNorm.Prepare(b, n.Weight, n.Bias, eps);
            DeviceLinear Lin(Linear l) => DeviceLinear.Prepare(b, l.Weight, l.Bias);
            _layers[i] = new LayerWeights(Norm(w.LnAttn), Norm(w.LnMlp), Norm(w.InputLayernorm), Norm(w.PostAttentionLayernorm),
                Lin(w.QueryKeyValue), Lin(w.Dense), Lin(w.DenseHTo4H), Lin(w.Dense4HToH));
        }
        _lnF = DeviceNorm.Prepare(devices.Head, weights.LnF.Weight, weights.LnF.Bias, eps);
        LmHead = devices.Head.PrepareWeight(weights.LmHead);
    }

    public IEnumerable<WeightMatrix> LayerMatrices =>
        _weights.Layers.SelectMany(l => new[] { l.QueryKeyValue.Weight, l.Dense.Weight, l.DenseHTo4H.Weight, l.Dense4HToH.Weight });

    public WeightMatrix Embeddings => _weights.WordEmbeddings;

    public IReadOnlyList<(string Label, string Text)> Describe() =>
    [
        ("architecture", _c.Describe()),
        ("qkv layout", $"{_c.QkvLayout}; lm_head {(ReferenceEquals(_weights.LmHead, _weights.WordEmbeddings) ? "tied to word embeddings" : "stored")}"),
    ];

    public void Embed(ForwardContext ctx, DeviceTensor hidden) => ctx.Backend.Embed(_wordEmbeddings, ctx.TokenIds, hidden);

    public void Layer(int layer, ForwardContext ctx, DeviceTensor hidden)
    {
        var w = _layers[layer];
        var normed = ctx.Scratch[Normed];
        var output = ctx.Scratch[Output];

        ctx.LayerNorm(w.LnAttn ?? w.InputLayernorm!, hidden, normed);
        SelfAttention(layer, w, ctx, normed, output);
        if (_c.AttentionAndMlpInParallel)
        {
            // 40B/180B: ln_mlp(h); 7B: the same input_layernorm(h) attention used, still in `normed`.
            if (w.LnMlp is { } lnMlp) ctx.LayerNorm(lnMlp, hidden, normed);
            ctx.Add(hidden, output);
        }
        else
        {
            ctx.Add(hidden, output);
            ctx.LayerNorm(w.PostAttentionLayernorm!, hidden, normed);
        }
        Mlp(w, ctx, normed, output);
        ctx.Add(hidden, output);
    }

    /// <summary>FalconAttention: fused QKV, split per KV group, rotary, attention over the paged cache, output dense.</summary>
    private void SelfAttention(int layer, LayerWeights w, ForwardContext ctx, DeviceTensor x, DeviceTensor output)
    {
        var (qkv, q, k, v) = (ctx.Scratch[Qkv], ctx.Scratch[Q], ctx.Scratch[K], ctx.Scratch[V]);
        ctx.Linear(w.QueryKeyValue, x, qkv);
        SplitQkv(ctx, qkv, q, k, v);
        ctx.Rotary(_rope, q, _c.NumHeads, k, _c.NumKvHeads, _c.HeadDim);
        var context = ctx.View(qkv, _c.NumHeads * _c.HeadDim);
        ctx.Attention(layer, _attention, q, k, v, context);
        ctx.Linear(w.Dense, context, output);
    }

    /// <summary>FalconMLP: dense_h_to_4h → exact GELU → dense_4h_to_h.</summary>
    private static void Mlp(LayerWeights w, ForwardContext ctx, DeviceTensor x, DeviceTensor output)
    {
        var up = ctx.Scratch[Up];
        ctx.Linear(w.DenseHTo4H, x, up);
        ctx.Gelu(up);
        ctx.Linear(w.Dense4HToH, up, output);
    }

    /// <summary>
    /// The three layouts of the fused projection: per KV group [q₀ … q_{n−1}, k, v] (40B/180B, 7B multi-query),
    /// [all q, all k, all v] (GGUF files from llama.cpp), and per head [q, k, v] (old multi-head RW checkpoints).
    /// </summary>
    private void SplitQkv(ForwardContext ctx, DeviceTensor qkv, DeviceTensor q, DeviceTensor k, DeviceTensor v)
    {
        int D = _c.HeadDim, heads = _c.NumHeads, kvHeads = _c.NumKvHeads, qPerKv = _c.QueriesPerKvHead;
        switch (_c.QkvLayout)
        {
            case QkvLayout.PerKvGroup:
                int group = (qPerKv + 2) * D;
                ctx.CopyColumns(qkv, 0, kvHeads, group, qPerKv * D, q);
                ctx.CopyColumns(qkv, qPerKv * D, kvHeads, group, D, k);
                ctx.CopyColumns(qkv, (qPerKv + 1) * D, kvHeads, group, D, v);
                break;
            case QkvLayout.Grouped:
                ctx.CopyColumns(qkv, 0, 1, 0, heads * D, q);
                ctx.CopyColumns(qkv, heads * D, 1, 0, kvHeads * D, k);
                ctx.CopyColumns(qkv, (heads + kvHeads) * D, 1, 0, kvHeads * D, v);
                break;
            default:
                ctx.CopyColumns(qkv, 0, heads, 3 * D, D, q);
                ctx.CopyColumns(qkv, D, heads, 3 * D, D, k);
                ctx.CopyColumns(qkv, 2 * D, heads, 3 * D, D, v);
                break;
        }
    }

    public void FinalNorm(ForwardContext ctx, DeviceTensor x, int rows) =>
        ctx.Backend.LayerNorm(x, x, rows, _lnF.Weight, _lnF.Bias, _lnF.Eps);

    public void Dispose()
    {
        _wordEmbeddings.Dispose();
        foreach (var l in _layers)
        {
            l.QueryKeyValue.Dispose(); l.Dense.Dispose(); l.DenseHTo4H.Dispose(); l.Dense4HToH.Dispose();
            l.LnAttn?.Dispose(); l.LnMlp?.Dispose(); l.InputLayernorm?.Dispose(); l.PostAttentionLayernorm?.Dispose();
        }
        _lnF.Dispose();
        LmHead.Dispose();
    }
}

using Harpia.Models.Falcon;
using Harpia.Models.Llama;
using Harpia.Planning;

namespace Harpia.Placement;

/// <summary>
/// What each placeable part of a model costs in memory: the token embedding, every decoder layer, and the head
/// (final norm + output projection), plus the per-token sizes of its KV cache and activations. Built from the real
/// tensors of a loaded model (<see cref="FromFalcon"/>, <see cref="FromLlama"/>) or from a config and a precision (<see cref="FromSpec"/>);
/// <see cref="DeviceMapper"/> reads only this, so the planner and the runtime place a model the same way.
/// </summary>
public sealed record ModelFootprint
{
    public required string ModelName { get; init; }
    /// <summary>How modules are named in map files and output (Hugging Face's module names).</summary>
    public required ModuleNaming Naming { get; init; }
    /// <summary>Bytes of the token-embedding matrix.</summary>
    public required long EmbeddingBytes { get; init; }
    /// <summary>Bytes of each decoder layer's weights (matrices, norms, biases), in layer order.</summary>
    public required IReadOnlyList<long> LayerBytes { get; init; }
    /// <summary>Bytes of the final norm (ln_f).</summary>
    public required long FinalNormBytes { get; init; }
    /// <summary>Bytes of a separately stored output projection (lm_head); 0 when it is tied to the embedding.</summary>
    public required long OutputHeadBytes { get; init; }
    /// <summary>The head multiplies by the embedding matrix itself: placed on another device than the embedding, that device stores a copy (as llama.cpp duplicates a tied output tensor).</summary>
    public required bool TiedHead { get; init; }
    /// <summary>K and V of one position of one layer, in bytes, at the KV cache's element type.</summary>
    public required double KvBytesPerTokenPerLayer { get; init; }
    /// <summary>Bytes of one KV element at the cache's dtype (4: f32, 2: f16), the unit of <see cref="KvBytesPerTokenPerLayer"/>.</summary>
    public double KvBytesPerElement { get; init; } = sizeof(float);
    public required int Hidden { get; init; }
    /// <summary>
    /// Per-token widths (f32 elements) of the scratch tensors one decoder layer uses: the architecture's own
    /// <see cref="Models.IDecoderArchitecture.Scratch"/> (<see cref="FalconArchitecture.ScratchWidths"/>,
    /// <see cref="LlamaArchitecture.ScratchWidths"/>), so the estimate is what the runner allocates.
    /// </summary>
    public required IReadOnlyList<int> LayerScratch { get; init; }
    public required int Vocab { get; init; }

    public int Layers => LayerBytes.Count;
    public long WeightBytes => EmbeddingBytes + LayerBytes.Sum() + FinalNormBytes + OutputHeadBytes;

    /// <summary>
    /// Activation bytes per prefill token on a device that runs decoder layers: <see cref="Models.DecoderModel"/>'s f32
    /// workspace there, the residual stream (H) and the layer's scratch tensors (<see cref="LayerScratch"/>).
    /// </summary>
    public long LayerActivationBytesPerToken => 4L * (Hidden + LayerScratch.Sum(w => (long)w));
    /// <summary>
    /// Activation bytes per prefill token on the head's device: the gathered rows ln_f and lm_head read (H) and a row
    /// of logits (every prompt row's logits, the worst case: perplexity; on the CPU the caller's host buffer, on a GPU
    /// the buffer the logits leave the device from).
    /// </summary>
    public long HeadActivationBytesPerToken => 4L * (Hidden + Vocab);
    /// <summary>Activation bytes per prefill token on a device that runs no layer but holds the embedding or the head: the residual stream it receives or produces.</summary>
    public long EmbeddingActivationBytesPerToken => 4L * Hidden;

    /// <summary>The same model with its KV cache at another element size (2 for <c>--kv-cache-dtype f16</c>).</summary>
    public ModelFootprint WithKvBytesPerElement(double bytes) =>
        this with { KvBytesPerTokenPerLayer = KvBytesPerTokenPerLayer / KvBytesPerElement * bytes, KvBytesPerElement = bytes };

    /// <summary>KV bytes of one layer for <paramref name="tokens"/> positions.</summary>
    public long KvBytesPerLayer(long tokens) => (long)Math.Ceiling(KvBytesPerTokenPerLayer * tokens);

    /// <summary>From a config (or GGUF header) and a precision: the planner's sizes, tensor by tensor.</summary>
    public static ModelFootprint FromSpec(ModelSpec model, Precision precision, double kvBytesPerElement)
    {
        long embedding = 0, finalNorm = 0, head = 0;
        var layers = new long[model.Layers];
        foreach (var t in model.Tensors())
        {
            long bytes = precision.Store(model, t).Sum(p => p.Bytes);
            if (t.Layer >= 0) layers[t.Layer] += bytes;
            else if (t.Role == TensorRole.TokenEmbedding) embedding += bytes;
            else if (t.Role == TensorRole.OutputHead) head += bytes;
            else finalNorm += bytes;
        }
        return new ModelFootprint
        {
            ModelName = model.Name,
            Naming = model.Family == ModelFamily.Falcon ? ModuleNaming.Falcon : ModuleNaming.Llama,
            EmbeddingBytes = embedding, LayerBytes = layers, FinalNormBytes = finalNorm, OutputHeadBytes = head,
            TiedHead = model.TiedHead,
            KvBytesPerTokenPerLayer = 2.0 * model.KvHeads * model.HeadDim * kvBytesPerElement, KvBytesPerElement = kvBytesPerElement,
            Hidden = model.Hidden, Vocab = model.Vocab,
            LayerScratch = model.Family == ModelFamily.Falcon
                ? FalconArchitecture.ScratchWidths(model.Hidden, (int)model.QkvWidth, model.Heads * model.HeadDim, model.KvHeads * model.HeadDim, model.FfnHidden)
                : LlamaArchitecture.ScratchWidths(model.Hidden, model.Heads * model.HeadDim, model.KvHeads * model.HeadDim, model.FfnHidden),
        };
    }

    /// <summary>From a loaded Falcon model's real tensors: stored matrix bytes, norms and biases as the f32 arrays they are in memory.</summary>
    public static ModelFootprint FromFalcon(string name, FalconConfig config, FalconWeights weights, double kvBytesPerElement)
    {
        static long Linear(Linear l) => l.Weight.ByteLength + 4L * (l.Bias?.Length ?? 0);
        static long Norm(LayerNormWeights? n) => n is null ? 0 : 4L * (n.Weight.Length + n.Bias.Length);
        var layers = weights.Layers.Select(w =>
            Linear(w.QueryKeyValue) + Linear(w.Dense) + Linear(w.DenseHTo4H) + Linear(w.Dense4HToH)
            + Norm(w.LnAttn) + Norm(w.LnMlp) + Norm(w.InputLayernorm) + Norm(w.PostAttentionLayernorm)).ToArray();
        bool tied = ReferenceEquals(weights.LmHead, weights.WordEmbeddings);
        return new ModelFootprint
        {
            ModelName = name, Naming = ModuleNaming.Falcon,
            EmbeddingBytes = weights.WordEmbeddings.ByteLength, LayerBytes = layers, FinalNormBytes = Norm(weights.LnF),
            OutputHeadBytes = tied ? 0 : weights.LmHead.ByteLength, TiedHead = tied,
            KvBytesPerTokenPerLayer = 2.0 * config.NumKvHeads * config.HeadDim * kvBytesPerElement, KvBytesPerElement = kvBytesPerElement,
            Hidden = config.HiddenSize, Vocab = config.VocabSize,
            LayerScratch = FalconArchitecture.ScratchWidths(config.HiddenSize, config.QkvSize, config.NumHeads * config.HeadDim,
                config.NumKvHeads * config.HeadDim, config.FfnHiddenSize),
        };
    }

    /// <summary>From a loaded Llama-architecture model's real tensors: stored matrix bytes, RMSNorm weights and biases as the f32 arrays they are in memory.</summary>
    public static ModelFootprint FromLlama(string name, LlamaConfig config, LlamaWeights weights, double kvBytesPerElement)
    {
        static long Linear(Linear l) => l.Weight.ByteLength + 4L * (l.Bias?.Length ?? 0);
        var layers = weights.Layers.Select(w =>
            Linear(w.QProj) + Linear(w.KProj) + Linear(w.VProj) + Linear(w.OProj) + Linear(w.GateProj) + Linear(w.UpProj) + Linear(w.DownProj)
            + 4L * (w.InputLayernorm.Length + w.PostAttentionLayernorm.Length)).ToArray();
        bool tied = weights.Tied;
        return new ModelFootprint
        {
            ModelName = name, Naming = ModuleNaming.Llama,
            EmbeddingBytes = weights.TokenEmbeddings.ByteLength, LayerBytes = layers, FinalNormBytes = 4L * weights.FinalNorm.Length,
            OutputHeadBytes = tied ? 0 : weights.LmHead.ByteLength, TiedHead = tied,
            KvBytesPerTokenPerLayer = 2.0 * config.NumKvHeads * config.HeadDim * kvBytesPerElement, KvBytesPerElement = kvBytesPerElement,
            Hidden = config.HiddenSize, Vocab = config.VocabSize,
            LayerScratch = LlamaArchitecture.ScratchWidths(config.HiddenSize, config.QueryWidth, config.KvWidth, config.IntermediateSize),
        };
    }
}

/// <summary>Hugging Face module names of a family, as accelerate's device maps name them.</summary>
public sealed record ModuleNaming(string Embedding, string LayerPrefix, string FinalNorm, string OutputHead)
{
    public static readonly ModuleNaming Falcon = new("transformer.word_embeddings", "transformer.h", "transformer.ln_f", "lm_head");
    public static readonly ModuleNaming Llama = new("model.embed_tokens", "model.layers", "model.norm", "lm_head");

    public string Layer(int i) => $"{LayerPrefix}.{i}";
}

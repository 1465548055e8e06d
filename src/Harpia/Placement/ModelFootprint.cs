using Harpia.Models.Falcon;
using Harpia.Planning;

namespace Harpia.Placement;

/// <summary>
/// What each placeable part of a model costs in memory: the token embedding, every decoder layer, and the head
/// (final norm + output projection), plus the per-token sizes of its KV cache and activations. Built from the real
/// tensors of a loaded model (<see cref="FromFalcon"/>) or from a config and a precision (<see cref="FromSpec"/>);
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
    public required int Hidden { get; init; }
    public required int QkvWidth { get; init; }
    /// <summary>heads × head_dim: the attention context width.</summary>
    public required int AttentionWidth { get; init; }
    public required int FfnHidden { get; init; }
    public required int Vocab { get; init; }

    public int Layers => LayerBytes.Count;
    public long WeightBytes => EmbeddingBytes + LayerBytes.Sum() + FinalNormBytes + OutputHeadBytes;

    /// <summary>
    /// Activation bytes per prefill token on a device that runs decoder layers: the runtime's f32 workspace, i.e. the
    /// hidden state, the normalized input and the layer output (3·H), the fused QKV projection (which later holds the
    /// attention context), the rotated queries and the MLP's intermediate (F).
    /// </summary>
    public long LayerActivationBytesPerToken => 4L * (3L * Hidden + Math.Max(QkvWidth, AttentionWidth) + AttentionWidth + FfnHidden);
    /// <summary>Activation bytes per prefill token on the head's device: the ln_f row and a row of logits (every prompt row's logits, the worst case: perplexity).</summary>
    public long HeadActivationBytesPerToken => 4L * (Hidden + Vocab);
    /// <summary>Activation bytes per prefill token on a device holding the embedding but no layer: the embedded rows.</summary>
    public long EmbeddingActivationBytesPerToken => 4L * Hidden;

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
            KvBytesPerTokenPerLayer = 2.0 * model.KvHeads * model.HeadDim * kvBytesPerElement,
            Hidden = model.Hidden, QkvWidth = (int)model.QkvWidth, AttentionWidth = model.Heads * model.HeadDim,
            FfnHidden = model.FfnHidden, Vocab = model.Vocab,
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
            KvBytesPerTokenPerLayer = 2.0 * config.NumKvHeads * config.HeadDim * kvBytesPerElement,
            Hidden = config.HiddenSize, QkvWidth = config.QkvSize, AttentionWidth = config.NumHeads * config.HeadDim,
            FfnHidden = config.FfnHiddenSize, Vocab = config.VocabSize,
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

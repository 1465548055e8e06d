using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Models.Falcon;

/// <summary>A LayerNorm's affine parameters (small; widened to f32 at load).</summary>
public sealed record LayerNormWeights(float[] Weight, float[] Bias);

/// <summary>A linear layer y = x·Wᵀ (+ b) whose weight stays in the mapped file in its stored type.</summary>
public sealed record Linear(WeightMatrix Weight, float[]? Bias)
{
    public int OutFeatures => Weight.Rows;
    public int InFeatures => Weight.Cols;
}

/// <summary>One decoder layer's parameters, named as in modeling_falcon.py.</summary>
public sealed class FalconLayerWeights
{
    /// <summary>40B/180B: normalises the attention input.</summary>
    public LayerNormWeights? LnAttn { get; init; }
    /// <summary>40B/180B: normalises the MLP input.</summary>
    public LayerNormWeights? LnMlp { get; init; }
    /// <summary>7B: the one norm in front of attention (and, with parallel_attn, the MLP).</summary>
    public LayerNormWeights? InputLayernorm { get; init; }
    /// <summary>Sequential (non-parallel) classic layers only: the norm in front of the MLP.</summary>
    public LayerNormWeights? PostAttentionLayernorm { get; init; }
    public required Linear QueryKeyValue { get; init; }
    public required Linear Dense { get; init; }
    public required Linear DenseHTo4H { get; init; }
    public required Linear Dense4HToH { get; init; }
}

/// <summary>Which part of a decoder layer a tensor belongs to; mapped to each format's names below.</summary>
public enum FalconLayerPart { QueryKeyValue, Dense, DenseHTo4H, Dense4HToH, LnAttn, LnMlp, InputLayernorm, PostAttentionLayernorm }

/// <summary>Falcon's tensor names in a checkpoint format (Hugging Face or llama.cpp GGUF).</summary>
public sealed class FalconTensorNames : TensorNames<FalconLayerPart>
{
    private FalconTensorNames(string embeddings, string finalNorm, string lmHead, string layerPrefix, Func<FalconLayerPart, string> part)
        : base(embeddings, finalNorm, lmHead, layerPrefix, part) { }

    public string WordEmbeddings => Embeddings;

    public static readonly FalconTensorNames HuggingFace = new("transformer.word_embeddings.weight", "transformer.ln_f", "lm_head.weight", "transformer.h.",
        part => part switch
        {
            FalconLayerPart.QueryKeyValue => "self_attention.query_key_value",
            FalconLayerPart.Dense => "self_attention.dense",
            FalconLayerPart.DenseHTo4H => "mlp.dense_h_to_4h",
            FalconLayerPart.Dense4HToH => "mlp.dense_4h_to_h",
            FalconLayerPart.LnAttn => "ln_attn",
            FalconLayerPart.LnMlp => "ln_mlp",
            FalconLayerPart.InputLayernorm => "input_layernorm",
            _ => "post_attention_layernorm",
        });

    /// <summary>llama.cpp names ln_mlp "attn_norm" and ln_attn "attn_norm_2" (its tensor_mapping for Falcon-40B).</summary>
    public static readonly FalconTensorNames Gguf = new("token_embd.weight", "output_norm", "output.weight", "blk.",
        part => part switch
        {
            FalconLayerPart.QueryKeyValue => "attn_qkv",
            FalconLayerPart.Dense => "attn_output",
            FalconLayerPart.DenseHTo4H => "ffn_up",
            FalconLayerPart.Dense4HToH => "ffn_down",
            FalconLayerPart.LnAttn => "attn_norm_2",
            FalconLayerPart.LnMlp => "attn_norm",
            FalconLayerPart.InputLayernorm => "attn_norm",
            _ => "ffn_norm",
        });
}

/// <summary>Binds a checkpoint's tensors to Falcon's parameters, checking every shape against the config.</summary>
public sealed class FalconWeights
{
    public required WeightMatrix WordEmbeddings { get; init; }
    public required FalconLayerWeights[] Layers { get; init; }
    public required LayerNormWeights LnF { get; init; }
    /// <summary>The output projection; the word embeddings themselves when they are tied.</summary>
    public required WeightMatrix LmHead { get; init; }

    /// <param name="quantized">Reads a linear stored in a quantized checkpoint format (GPTQ, bitsandbytes 4-bit) by its name
    /// stem, or returns null when that linear is stored as a plain <c>.weight</c>.</param>
    public static FalconWeights Bind(ITensorSource source, FalconConfig config, FalconTensorNames names,
        Func<string, int, int, Linear?>? quantized = null)
    {
        int h = config.HiddenSize;
        var tensors = new CheckedTensors(source);
        WeightMatrix Matrix(string name, int rows, int cols) => tensors.Matrix(name, rows, cols);
        float[] Vector(string name, int length) => tensors.Vector(name, length);

        LayerNormWeights Norm(string stem) => new(Vector(stem + ".weight", h), Vector(stem + ".bias", h));

        Linear LinearLayer(string stem, int outFeatures, int inFeatures) =>
            quantized?.Invoke(stem, outFeatures, inFeatures) is { } q ? q with { Bias = q.Bias ?? (config.Bias ? Vector(stem + ".bias", outFeatures) : null) }
            : new(Matrix(stem + ".weight", outFeatures, inFeatures), config.Bias ? Vector(stem + ".bias", outFeatures) : null);

        var layers = new FalconLayerWeights[config.NumLayers];
        for (int i = 0; i < layers.Length; i++)
        {
            string P(FalconLayerPart part) => names.Layer(i, part);
            bool twoNorms = config.NumLayerNormsInParallelAttn == 2;
            layers[i] = new FalconLayerWeights
            {
                LnAttn = twoNorms ? Norm(P(FalconLayerPart.LnAttn)) : null,
                LnMlp = twoNorms ? Norm(P(FalconLayerPart.LnMlp)) : null,
                InputLayernorm = twoNorms ? null : Norm(P(FalconLayerPart.InputLayernorm)),
                PostAttentionLayernorm = config.AttentionAndMlpInParallel ? null : Norm(P(FalconLayerPart.PostAttentionLayernorm)),
                QueryKeyValue = LinearLayer(P(FalconLayerPart.QueryKeyValue), config.QkvSize, h),
                Dense = LinearLayer(P(FalconLayerPart.Dense), h, config.NumHeads * config.HeadDim),
                DenseHTo4H = LinearLayer(P(FalconLayerPart.DenseHTo4H), config.FfnHiddenSize, h),
                Dense4HToH = LinearLayer(P(FalconLayerPart.Dense4HToH), h, config.FfnHiddenSize),
            };
        }

        var embeddings = Matrix(names.WordEmbeddings, config.VocabSize, h);
        WeightMatrix lmHead;
        if (source.Tensors.ContainsKey(names.LmHead)) lmHead = Matrix(names.LmHead, config.VocabSize, h);
        else if (config.TieWordEmbeddings) lmHead = embeddings;
        else throw new InvalidModelFileException(source.Path, $"tensor '{names.LmHead}' is missing and tie_word_embeddings is false");

        return new FalconWeights { WordEmbeddings = embeddings, Layers = layers, LnF = Norm(names.FinalNorm), LmHead = lmHead };
    }
}

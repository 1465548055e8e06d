using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Tensors;

namespace Harpia.Models.Llama;

/// <summary>One decoder layer's parameters, named as in modeling_llama.py.</summary>
public sealed class LlamaLayerWeights
{
    public required float[] InputLayernorm { get; init; }
    public required Linear QProj { get; init; }
    public required Linear KProj { get; init; }
    public required Linear VProj { get; init; }
    public required Linear OProj { get; init; }
    public required float[] PostAttentionLayernorm { get; init; }
    public required Linear GateProj { get; init; }
    public required Linear UpProj { get; init; }
    public required Linear DownProj { get; init; }
}

/// <summary>Which part of a decoder layer a tensor belongs to; mapped to each format's names below.</summary>
public enum LlamaLayerPart { InputLayernorm, QProj, KProj, VProj, OProj, PostAttentionLayernorm, GateProj, UpProj, DownProj }

/// <summary>The Llama architecture's tensor names in a checkpoint format: Hugging Face's or llama.cpp's (GGUF).</summary>
public sealed class LlamaTensorNames : TensorNames<LlamaLayerPart>
{
    private LlamaTensorNames(string embeddings, string finalNorm, string lmHead, string layerPrefix, Func<LlamaLayerPart, string> part)
        : base(embeddings, finalNorm, lmHead, layerPrefix, part) { }

    public string TokenEmbeddings => Embeddings;

    public static readonly LlamaTensorNames HuggingFace = new("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers.",
        part => part switch
        {
            LlamaLayerPart.InputLayernorm => "input_layernorm",
            LlamaLayerPart.QProj => "self_attn.q_proj",
            LlamaLayerPart.KProj => "self_attn.k_proj",
            LlamaLayerPart.VProj => "self_attn.v_proj",
            LlamaLayerPart.OProj => "self_attn.o_proj",
            LlamaLayerPart.PostAttentionLayernorm => "post_attention_layernorm",
            LlamaLayerPart.GateProj => "mlp.gate_proj",
            LlamaLayerPart.UpProj => "mlp.up_proj",
            _ => "mlp.down_proj",
        });

    public static readonly LlamaTensorNames Gguf = new("token_embd.weight", "output_norm.weight", "output.weight", "blk.",
        part => part switch
        {
            LlamaLayerPart.InputLayernorm => "attn_norm",
            LlamaLayerPart.QProj => "attn_q",
            LlamaLayerPart.KProj => "attn_k",
            LlamaLayerPart.VProj => "attn_v",
            LlamaLayerPart.OProj => "attn_output",
            LlamaLayerPart.PostAttentionLayernorm => "ffn_norm",
            LlamaLayerPart.GateProj => "ffn_gate",
            LlamaLayerPart.UpProj => "ffn_up",
            _ => "ffn_down",
        });
}

/// <summary>Binds a checkpoint's tensors to the Llama architecture's parameters, checking every shape against the config.</summary>
public sealed class LlamaWeights
{
    public required WeightMatrix TokenEmbeddings { get; init; }
    public required LlamaLayerWeights[] Layers { get; init; }
    public required float[] FinalNorm { get; init; }
    /// <summary>The output projection; the token embeddings themselves when they are tied.</summary>
    public required WeightMatrix LmHead { get; init; }

    public bool Tied => ReferenceEquals(LmHead, TokenEmbeddings);

    public static LlamaWeights Bind(ITensorSource source, LlamaConfig config, LlamaTensorNames names)
    {
        int h = config.HiddenSize;
        var tensors = new CheckedTensors(source);
        WeightMatrix Matrix(string name, int rows, int cols) => tensors.Matrix(name, rows, cols);
        float[] Vector(string name, int length) => tensors.Vector(name, length);

        Linear LinearLayer(string stem, int outFeatures, int inFeatures, bool bias) =>
            new(Matrix(stem + ".weight", outFeatures, inFeatures), bias ? Vector(stem + ".bias", outFeatures) : null);

        var layers = new LlamaLayerWeights[config.NumLayers];
        bool qkvBias = config.HasQkvBias;
        for (int i = 0; i < layers.Length; i++)
        {
            string P(LlamaLayerPart part) => names.Layer(i, part);
            layers[i] = new LlamaLayerWeights
            {
                InputLayernorm = Vector(P(LlamaLayerPart.InputLayernorm) + ".weight", h),
                QProj = LinearLayer(P(LlamaLayerPart.QProj), config.QueryWidth, h, qkvBias),
                KProj = LinearLayer(P(LlamaLayerPart.KProj), config.KvWidth, h, qkvBias),
                VProj = LinearLayer(P(LlamaLayerPart.VProj), config.KvWidth, h, qkvBias),
                OProj = LinearLayer(P(LlamaLayerPart.OProj), h, config.QueryWidth, config.AttentionBias),
                PostAttentionLayernorm = Vector(P(LlamaLayerPart.PostAttentionLayernorm) + ".weight", h),
                GateProj = LinearLayer(P(LlamaLayerPart.GateProj), config.IntermediateSize, h, config.MlpBias),
                UpProj = LinearLayer(P(LlamaLayerPart.UpProj), config.IntermediateSize, h, config.MlpBias),
                DownProj = LinearLayer(P(LlamaLayerPart.DownProj), h, config.IntermediateSize, config.MlpBias),
            };
        }

        var embeddings = Matrix(names.TokenEmbeddings, config.VocabSize, h);
        WeightMatrix lmHead;
        // A tied checkpoint may still store lm_head (transformers saves the shared tensor once, but some tools write
        // both); the stored one is what the model computes with either way.
        if (source.Tensors.ContainsKey(names.LmHead)) lmHead = Matrix(names.LmHead, config.VocabSize, h);
        else if (config.TieWordEmbeddings) lmHead = embeddings;
        else throw new InvalidModelFileException(source.Path, $"tensor '{names.LmHead}' is missing and tie_word_embeddings is false");

        return new LlamaWeights { TokenEmbeddings = embeddings, Layers = layers, FinalNorm = Vector(names.FinalNorm, h), LmHead = lmHead };
    }

    /// <summary>
    /// convert_hf_to_gguf.py's q/k row permutation for a <c>llama</c> GGUF, as a row order: output row
    /// <c>h·d + 2i + j</c> (pair i, member j) is Hugging Face row <c>h·d + j·d/2 + i</c>. Rotate-half pairs
    /// (i, i + d/2) become adjacent rows, which is what llama.cpp's interleaved rotary expects.
    /// </summary>
    public static int[] InterleavedRowOrder(int heads, int headDim)
    {
        var order = new int[heads * headDim];
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                    order[h * headDim + 2 * i + j] = h * headDim + j * half + i;
        return order;
    }
}

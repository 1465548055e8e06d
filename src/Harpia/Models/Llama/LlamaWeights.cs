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

/// <summary>Tensor names of a checkpoint format: Hugging Face's or llama.cpp's (GGUF).</summary>
public abstract class LlamaTensorNames
{
    public abstract string TokenEmbeddings { get; }
    public abstract string FinalNorm { get; }
    public abstract string LmHead { get; }
    /// <summary>Name stem of a layer part; append ".weight" / ".bias".</summary>
    public abstract string Layer(int layer, LlamaLayerPart part);

    public static readonly LlamaTensorNames HuggingFace = new HfNames();
    public static readonly LlamaTensorNames Gguf = new GgufNames();

    private sealed class HfNames : LlamaTensorNames
    {
        public override string TokenEmbeddings => "model.embed_tokens.weight";
        public override string FinalNorm => "model.norm.weight";
        public override string LmHead => "lm_head.weight";
        public override string Layer(int layer, LlamaLayerPart part) => $"model.layers.{layer}." + part switch
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
        };
    }

    private sealed class GgufNames : LlamaTensorNames
    {
        public override string TokenEmbeddings => "token_embd.weight";
        public override string FinalNorm => "output_norm.weight";
        public override string LmHead => "output.weight";
        public override string Layer(int layer, LlamaLayerPart part) => $"blk.{layer}." + part switch
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
        };
    }
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
        TensorEntry Get(string name) => source.Tensors.TryGetValue(name, out var t) ? t
            : throw new InvalidModelFileException(source.Path, $"tensor '{name}' is missing");

        WeightMatrix Matrix(string name, int rows, int cols)
        {
            var t = Get(name);
            if (t.Shape.Length != 2 || t.Shape[0] != rows || t.Shape[1] != cols)
                throw new InvalidModelFileException(t.FilePath, $"tensor '{name}': shape {t.ShapeText}, expected [{rows}, {cols}] for this config");
            return t.AsMatrix();
        }

        float[] Vector(string name, int length)
        {
            var t = Get(name);
            if (t.Shape.Length != 1 || t.Shape[0] != length)
                throw new InvalidModelFileException(t.FilePath, $"tensor '{name}': shape {t.ShapeText}, expected [{length}]");
            return t.ToFloatVector();
        }

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

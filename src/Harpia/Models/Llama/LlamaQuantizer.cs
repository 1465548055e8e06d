using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Models.Llama;

/// <summary>
/// Converts a Llama-architecture model's weights to a <see cref="QuantizationScheme"/> with llama.cpp's per-tensor
/// choices (<see cref="QuantizationScheme.TypeForLlama"/>), two ways over one plan: <see cref="WriteGguf"/> streams a
/// GGUF llama.cpp loads (llama.cpp names, <c>llama.*</c> / <c>qwen2.*</c> keys, the tokenizer, q/k rows permuted for
/// llama.cpp's interleaved rotary as convert_hf_to_gguf.py does, <c>rope_freqs.weight</c> for Llama 3.1 scaling);
/// <see cref="QuantizeOnLoad"/> converts a loaded model in memory. Rows are encoded by the same reference quantizer
/// as Falcon's (<see cref="ModelQuantizer"/>).
/// </summary>
public static unsafe class LlamaQuantizer
{
    /// <summary>
    /// Every tensor llama.cpp's graph reads, tensors outside the layers first, then each layer's, by name.
    /// <paramref name="forFile"/>: lay the q/k rows out as the GGUF architecture expects (permuted for <c>llama</c>
    /// when the model holds them in Hugging Face order) and add <c>rope_freqs.weight</c>; a model in memory keeps its own layout.
    /// </summary>
    public static IReadOnlyList<PlannedTensor> Plan(LlamaModel model, QuantizationScheme scheme, bool forFile)
    {
        var c = model.Config;
        var w = model.Weights;
        var names = LlamaTensorNames.Gguf;
        bool tied = w.Tied;
        var list = new List<(int Layer, PlannedTensor Tensor)>();

        void Matrix(int layer, string name, WeightMatrix m, int[]? rowOrder = null)
        {
            var type = scheme.TypeForLlama(name, 2, m.Cols, Math.Max(layer, 0), c.NumLayers, c.NumHeads, c.NumKvHeads, tied);
            list.Add((layer, new PlannedTensor(name, type, [m.Rows, m.Cols], m, null, rowOrder)));
        }
        void Vector(int layer, string name, float[] v, int[]? order = null)
        {
            if (order is not null) v = order.Select(i => v[i]).ToArray();
            list.Add((layer, new PlannedTensor(name, GgmlType.F32, [v.Length], null, v, null)));
        }

        bool permute = forFile && c.GgufArchitecture == "llama" && !c.RotaryInterleaved;
        if (forFile && c.GgufArchitecture == "qwen2" && c.RotaryInterleaved)
            throw new HarpiaException($"{model.Source.Path}: a qwen2 GGUF needs q/k rows in Hugging Face order, and this model's are interleaved");
        int[]? qOrder = permute ? LlamaWeights.InterleavedRowOrder(c.NumHeads, c.HeadDim) : null;
        int[]? kOrder = permute ? LlamaWeights.InterleavedRowOrder(c.NumKvHeads, c.HeadDim) : null;

        Matrix(-1, names.TokenEmbeddings, w.TokenEmbeddings);
        if (!tied) Matrix(-1, names.LmHead, w.LmHead);
        Vector(-1, names.FinalNorm, w.FinalNorm);
        if (forFile && c.GgufRopeFreqFactors() is { } factors) Vector(-1, "rope_freqs.weight", factors);
        for (int i = 0; i < c.NumLayers; i++)
        {
            var l = w.Layers[i];
            string P(LlamaLayerPart part) => names.Layer(i, part);
            void Lin(LlamaLayerPart part, Linear lin, int[]? order = null)
            {
                Matrix(i, P(part) + ".weight", lin.Weight, order);
                if (lin.Bias is not null) Vector(i, P(part) + ".bias", lin.Bias, order);
            }
            Vector(i, P(LlamaLayerPart.InputLayernorm) + ".weight", l.InputLayernorm);
            Vector(i, P(LlamaLayerPart.PostAttentionLayernorm) + ".weight", l.PostAttentionLayernorm);
            Lin(LlamaLayerPart.QProj, l.QProj, qOrder);
            Lin(LlamaLayerPart.KProj, l.KProj, kOrder);
            Lin(LlamaLayerPart.VProj, l.VProj);
            Lin(LlamaLayerPart.OProj, l.OProj);
            Lin(LlamaLayerPart.GateProj, l.GateProj);
            Lin(LlamaLayerPart.UpProj, l.UpProj);
            Lin(LlamaLayerPart.DownProj, l.DownProj);
        }
        return list.OrderBy(x => x.Layer).ThenBy(x => x.Tensor.Name, StringComparer.Ordinal).Select(x => x.Tensor).ToList();
    }

    /// <summary>The GGUF metadata llama.cpp reads for this architecture, then the tokenizer, then the file type.</summary>
    public static List<KeyValuePair<string, object>> Metadata(LlamaConfig c, string name, QuantizationScheme scheme, IEnumerable<KeyValuePair<string, object>> tokenizer)
    {
        string a = c.GgufArchitecture;
        if (c.RopeFreqFactors is null && c.RopeScaling.Type == RopeScalingType.Dynamic)
            throw new HarpiaException($"{name}: rope_scaling 'dynamic' (NTK) has no llama.cpp equivalent; a GGUF of this model would compute different positions");
        var kv = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", a),
            new("general.name", name),
            new($"{a}.vocab_size", (uint)c.VocabSize),
            new($"{a}.context_length", (uint)c.MaxPositionEmbeddingsForDynamic),
            new($"{a}.embedding_length", (uint)c.HiddenSize),
            new($"{a}.feed_forward_length", (uint)c.IntermediateSize),
            new($"{a}.block_count", (uint)c.NumLayers),
            new($"{a}.attention.head_count", (uint)c.NumHeads),
            new($"{a}.attention.head_count_kv", (uint)c.NumKvHeads),
            new($"{a}.attention.key_length", (uint)c.HeadDim),
            new($"{a}.attention.value_length", (uint)c.HeadDim),
            new($"{a}.rope.dimension_count", (uint)c.HeadDim),
            new($"{a}.attention.layer_norm_rms_epsilon", c.RmsNormEps),
            new($"{a}.rope.freq_base", (float)c.RopeTheta),
        };
        if (c.RopeFreqFactors is null && c.RopeScaling.Type == RopeScalingType.Linear)
        {
            kv.Add(new($"{a}.rope.scaling.type", "linear"));
            kv.Add(new($"{a}.rope.scaling.factor", (float)c.RopeScaling.Factor));
        }
        kv.AddRange(tokenizer);
        if (scheme.IsQuantized) kv.Add(new("general.quantization_version", 2u));
        kv.Add(new("general.file_type", (uint)scheme.FileType));
        return kv;
    }

    /// <summary>
    /// <c>harpia quantize IN OUT</c> for a Llama-architecture IN (a Hugging Face folder or an f32/f16/bf16 GGUF): writes
    /// OUT as GGUF through OUT.partial, one tensor at a time, rows encoded in parallel (<see cref="ModelQuantizer"/>'s shared writer).
    /// </summary>
    public static QuantizeResult WriteGguf(QuantizeRequest request, Action<QuantizeProgress>? progress = null) =>
        ModelQuantizer.WriteGguf(request, new ModelQuantizer.GgufWriting<LlamaModel>(
            LlamaModel.Load,
            (model, scheme) => Plan(model, scheme, forFile: true),
            (model, name, scheme, tokenizer) => Metadata(model.Config, name, scheme, tokenizer),
            model => (model.Config.VocabSize, model.Config.BosTokenId, model.Config.EosTokenId)), progress);

    /// <summary>
    /// Converts every f32/f16/bf16 weight matrix of <paramref name="model"/> to the type <paramref name="scheme"/> gives
    /// it, one tensor at a time into native memory (the source stays mapped). The returned model owns the new memory
    /// and <paramref name="model"/>'s checkpoint: dispose only the returned model.
    /// </summary>
    /// <param name="place">Chooses the devices from the quantized weights (the runtime's device map); overrides <paramref name="devices"/>.</param>
    public static LlamaModel QuantizeOnLoad(LlamaModel model, QuantizationScheme scheme, int? threads = null, Backends.BackendMap? devices = null,
        Func<LlamaWeights, Backends.BackendMap>? place = null)
    {
        var (swap, source) = ModelQuantizer.EncodeOnLoad(Plan(model, scheme, forFile: false), model.Source, scheme, threads);
        WeightMatrix Swap(WeightMatrix m) => swap(m);
        Linear SwapLinear(Linear l) => l with { Weight = Swap(l.Weight) };
        var w = model.Weights;
        var weights = new LlamaWeights
        {
            TokenEmbeddings = Swap(w.TokenEmbeddings),
            LmHead = Swap(w.LmHead),
            FinalNorm = w.FinalNorm,
            Layers = w.Layers.Select(l => new LlamaLayerWeights
            {
                InputLayernorm = l.InputLayernorm, PostAttentionLayernorm = l.PostAttentionLayernorm,
                QProj = SwapLinear(l.QProj), KProj = SwapLinear(l.KProj), VProj = SwapLinear(l.VProj), OProj = SwapLinear(l.OProj),
                GateProj = SwapLinear(l.GateProj), UpProj = SwapLinear(l.UpProj), DownProj = SwapLinear(l.DownProj),
            }).ToArray(),
        };
        return new LlamaModel(model.Config, weights, source, place?.Invoke(weights) ?? devices);
    }
}

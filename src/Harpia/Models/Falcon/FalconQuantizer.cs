using Harpia.Formats;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Models.Falcon;

/// <summary>One tensor of a quantization plan: its llama.cpp name and target type, and where its values come from.</summary>
public sealed record PlannedTensor(string Name, GgmlType Type, long[] Shape, WeightMatrix? Matrix, float[]? Vector, int[]? RowOrder)
{
    public long ByteSize => GgmlTypes.ByteSize(Type, Shape.Aggregate(1L, (a, b) => a * b))!.Value;
}

/// <summary>What <see cref="FalconQuantizer.WriteGguf"/> is told to do.</summary>
public sealed record QuantizeRequest(string Input, string Output, QuantizationScheme Scheme)
{
    /// <summary>A tokenizer.json, or a GGUF that carries a tokenizer; default: IN's own.</summary>
    public string? Tokenizer { get; init; }
    public bool Force { get; init; }
    /// <summary>Worker threads for quantizing rows (default: all cores).</summary>
    public int? Threads { get; init; }
}

/// <summary>Progress of a write: the tensor being written and bytes of the file done so far.</summary>
public readonly record struct QuantizeProgress(int TensorIndex, int TensorCount, string TensorName, GgmlType Type, long BytesDone, long BytesTotal);

public sealed record QuantizeResult(string Path, int Tensors, long Bytes, long Parameters, IReadOnlyDictionary<GgmlType, int> TypeCounts);

/// <summary>
/// Converts a Falcon model's weights to a <see cref="QuantizationScheme"/>, two ways over one plan:
/// <see cref="WriteGguf"/> streams a llama.cpp-compatible GGUF file (llama.cpp names, <c>falcon.*</c> keys, the
/// tokenizer, the fused QKV reordered to llama.cpp's [all q, all k, all v]); <see cref="QuantizeOnLoad"/> converts
/// a loaded model in memory, tensor by tensor, so a bf16 checkpoint runs as Q4_K_M without a file. Both encode each
/// row with the same reference quantizer, so a tensor's bytes are identical either way.
/// </summary>
public static unsafe class FalconQuantizer
{
    /// <summary>
    /// Every tensor llama.cpp's Falcon graph reads, in llama-quantize's order (tensors outside the layers by name, then
    /// each layer's by name), with the type <paramref name="scheme"/> gives it. <paramref name="groupedQkv"/>: reorder
    /// the fused QKV rows to [all q, all k, all v] (for files; a model in memory keeps its own layout).
    /// </summary>
    public static IReadOnlyList<PlannedTensor> Plan(FalconModel model, QuantizationScheme scheme, bool groupedQkv)
    {
        var c = model.Config;
        var w = model.Weights;
        var names = FalconTensorNames.Gguf;
        if (!c.AttentionAndMlpInParallel)
            throw new HarpiaException($"{model.Source.Path}: a sequential (parallel_attn: false) Falcon has no llama.cpp GGUF layout");
        bool tied = ReferenceEquals(w.LmHead, w.WordEmbeddings);
        var list = new List<(int Layer, PlannedTensor Tensor)>();

        void Matrix(int layer, string name, WeightMatrix m, int[]? rowOrder = null)
        {
            var type = scheme.TypeFor(name, 2, m.Cols, Math.Max(layer, 0), c.NumLayers, c.NumHeads, c.NumKvHeads, tied);
            list.Add((layer, new PlannedTensor(name, type, [m.Rows, m.Cols], m, null, rowOrder)));
        }
        void Vector(int layer, string name, float[] v, int[]? order = null)
        {
            if (order is not null) v = order.Select(i => v[i]).ToArray();
            list.Add((layer, new PlannedTensor(name, GgmlType.F32, [v.Length], null, v, null)));
        }
        void Norm(int layer, string stem, LayerNormWeights n) { Vector(layer, stem + ".weight", n.Weight); Vector(layer, stem + ".bias", n.Bias); }

        Matrix(-1, names.WordEmbeddings, w.WordEmbeddings);
        if (!tied) Matrix(-1, names.LmHead, w.LmHead);
        Norm(-1, names.FinalNorm, w.LnF);
        int[]? qkvOrder = groupedQkv && c.QkvLayout != QkvLayout.Grouped ? GroupedQkvRowOrder(c) : null;
        for (int i = 0; i < c.NumLayers; i++)
        {
            var l = w.Layers[i];
            string P(FalconLayerPart part) => names.Layer(i, part);
            if (l.LnAttn is not null) Norm(i, P(FalconLayerPart.LnAttn), l.LnAttn);
            if (l.LnMlp is not null) Norm(i, P(FalconLayerPart.LnMlp), l.LnMlp);
            if (l.InputLayernorm is not null) Norm(i, P(FalconLayerPart.InputLayernorm), l.InputLayernorm);
            void Lin(FalconLayerPart part, Linear lin, int[]? order = null)
            {
                Matrix(i, P(part) + ".weight", lin.Weight, order);
                if (lin.Bias is not null) Vector(i, P(part) + ".bias", lin.Bias, order);
            }
            Lin(FalconLayerPart.QueryKeyValue, l.QueryKeyValue, qkvOrder);
            Lin(FalconLayerPart.Dense, l.Dense);
            Lin(FalconLayerPart.DenseHTo4H, l.DenseHTo4H);
            Lin(FalconLayerPart.Dense4HToH, l.Dense4HToH);
        }
        return list.OrderBy(x => x.Layer).ThenBy(x => x.Tensor.Name, StringComparer.Ordinal).Select(x => x.Tensor).ToList();
    }

    /// <summary>
    /// For each output row of a [all q, all k, all v] fused QKV, the row of the model's own layout it comes from
    /// (what convert_hf_to_gguf.py does to Falcon-40B/180B's per-KV-group rows).
    /// </summary>
    public static int[] GroupedQkvRowOrder(FalconConfig c)
    {
        int D = c.HeadDim, heads = c.NumHeads, kv = c.NumKvHeads, qPerKv = c.QueriesPerKvHead;
        var order = new int[c.QkvSize];
        int QuerySlot(int h) => c.QkvLayout == QkvLayout.PerKvGroup ? (h / qPerKv) * (qPerKv + 2) + h % qPerKv : h * 3;
        int KeySlot(int g) => c.QkvLayout == QkvLayout.PerKvGroup ? g * (qPerKv + 2) + qPerKv : g * 3 + 1;
        for (int h = 0; h < heads; h++)
            for (int d = 0; d < D; d++) order[h * D + d] = QuerySlot(h) * D + d;
        for (int g = 0; g < kv; g++)
            for (int d = 0; d < D; d++)
            {
                order[(heads + g) * D + d] = KeySlot(g) * D + d;
                order[(heads + kv + g) * D + d] = (KeySlot(g) + 1) * D + d;
            }
        return order;
    }

    /// <summary>The GGUF metadata llama.cpp reads for Falcon, then the tokenizer, then the file type.</summary>
    public static List<KeyValuePair<string, object>> Metadata(FalconConfig c, string name, QuantizationScheme scheme, IEnumerable<KeyValuePair<string, object>> tokenizer)
    {
        var kv = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", "falcon"),
            new("general.name", name),
            new("falcon.context_length", (uint)c.MaxPositions),
            new("falcon.embedding_length", (uint)c.HiddenSize),
            new("falcon.feed_forward_length", (uint)c.FfnHiddenSize),
            new("falcon.block_count", (uint)c.NumLayers),
            new("falcon.attention.head_count", (uint)c.NumHeads),
            new("falcon.attention.head_count_kv", (uint)c.NumKvHeads),
            new("falcon.attention.layer_norm_epsilon", c.LayerNormEpsilon),
            new("falcon.rope.freq_base", (float)c.RopeTheta),
        };
        kv.AddRange(tokenizer);
        if (scheme.IsQuantized) kv.Add(new("general.quantization_version", 2u)); // ggml's GGML_QNT_VERSION
        kv.Add(new("general.file_type", (uint)scheme.FileType));
        return kv;
    }

    /// <summary>
    /// <c>harpia quantize IN OUT</c>: loads IN (a Hugging Face folder or an f32/f16/bf16 GGUF), writes OUT as GGUF
    /// through OUT.partial, one tensor at a time, rows encoded in parallel (<see cref="ModelQuantizer"/>'s shared writer).
    /// </summary>
    public static QuantizeResult WriteGguf(QuantizeRequest request, Action<QuantizeProgress>? progress = null) =>
        ModelQuantizer.WriteGguf(request, new ModelQuantizer.GgufWriting<FalconModel>(
            FalconModel.Load,
            (model, scheme) => Plan(model, scheme, groupedQkv: true),
            (model, name, scheme, tokenizer) => Metadata(model.Config, name, scheme, tokenizer),
            model => (model.Config.VocabSize, model.Config.BosTokenId, model.Config.EosTokenId)), progress);

    /// <summary>
    /// Converts every f32/f16/bf16 2-D weight of <paramref name="model"/> to the type <paramref name="scheme"/> gives it,
    /// one tensor at a time into 64-byte-aligned native memory, so peak memory is about the quantized size (the source
    /// stays memory-mapped). Tensors already quantized are left alone. The returned model owns the new memory and
    /// <paramref name="model"/>'s checkpoint: dispose only the returned model.
    /// </summary>
    /// <param name="place">Chooses the devices from the quantized weights (the runtime's device map); overrides <paramref name="devices"/>.</param>
    public static FalconModel QuantizeOnLoad(FalconModel model, QuantizationScheme scheme, int? threads = null, Backends.BackendMap? devices = null,
        Func<FalconWeights, Backends.BackendMap>? place = null)
    {
        var (swap, source) = ModelQuantizer.EncodeOnLoad(Plan(model, scheme, groupedQkv: false), model.Source, scheme, threads);
        WeightMatrix Swap(WeightMatrix m) => swap(m);
        Linear SwapLinear(Linear l) => l with { Weight = Swap(l.Weight) };
        var w = model.Weights;
        var weights = new FalconWeights
        {
            WordEmbeddings = Swap(w.WordEmbeddings),
            LmHead = Swap(w.LmHead),
            LnF = w.LnF,
            Layers = w.Layers.Select(l => new FalconLayerWeights
            {
                LnAttn = l.LnAttn, LnMlp = l.LnMlp, InputLayernorm = l.InputLayernorm, PostAttentionLayernorm = l.PostAttentionLayernorm,
                QueryKeyValue = SwapLinear(l.QueryKeyValue), Dense = SwapLinear(l.Dense),
                DenseHTo4H = SwapLinear(l.DenseHTo4H), Dense4HToH = SwapLinear(l.Dense4HToH),
            }).ToArray(),
        };
        return new FalconModel(model.Config, weights, source, place?.Invoke(weights) ?? devices);
    }

}

/// <summary>
/// A checkpoint whose tensors were partly re-encoded in memory: the re-encoded entries replace the originals by
/// name (so <c>inspect</c> shows the new types); disposing frees them and unmaps the original.
/// </summary>
public sealed class QuantizedTensorSource : ITensorSource
{
    private readonly ITensorSource _inner;
    private readonly List<NativeBuffer> _buffers;

    public QuantizedTensorSource(ITensorSource inner, IReadOnlyDictionary<string, TensorEntry> replaced, List<NativeBuffer> buffers)
    {
        _inner = inner; _buffers = buffers;
        var all = new Dictionary<string, TensorEntry>(inner.Tensors, StringComparer.Ordinal);
        foreach (var (name, entry) in replaced) all[name] = entry;
        Tensors = all;
    }

    public ITensorSource Inner => _inner;
    public string Path => _inner.Path;
    public IReadOnlyDictionary<string, TensorEntry> Tensors { get; }
    public long FileBytes => _inner.FileBytes;

    public void Dispose()
    {
        foreach (var b in _buffers) b.Dispose();
        _inner.Dispose();
    }
}

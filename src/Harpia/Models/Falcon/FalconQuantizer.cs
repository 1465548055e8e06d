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
    /// <summary>Rows are encoded and written in chunks of about this many output bytes (bounds memory on huge tensors).</summary>
    private const long ChunkBytes = 32L << 20;

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
    /// through OUT.partial, one tensor at a time, rows encoded in parallel.
    /// </summary>
    public static QuantizeResult WriteGguf(QuantizeRequest request, Action<QuantizeProgress>? progress = null)
    {
        string input = request.Input, output = request.Output;
        if (string.IsNullOrWhiteSpace(input)) throw new HarpiaException("IN: give a Hugging Face model folder or a GGUF file");
        if (string.IsNullOrWhiteSpace(output)) throw new HarpiaException("OUT: give the GGUF file to write");
        if (!File.Exists(input) && !Directory.Exists(input)) throw new HarpiaException($"{input}: no such model folder or GGUF file");
        string outFull = Path.GetFullPath(output);
        if (string.Equals(Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar), outFull, StringComparison.Ordinal))
            throw new HarpiaException($"{output}: OUT is the same path as IN; Harpia never overwrites its input");
        if (File.Exists(outFull) && !request.Force) throw new HarpiaException($"{output}: already exists (pass --force to overwrite it)");
        if (request.Threads is <= 0) throw new HarpiaException($"--threads {request.Threads}: must be at least 1");

        using var model = FalconModel.Load(input);
        var inputFiles = model.Source.Tensors.Values.Select(t => Path.GetFullPath(t.FilePath)).ToHashSet(StringComparer.Ordinal);
        if (inputFiles.Contains(outFull))
            throw new HarpiaException($"{output}: OUT is one of IN's own files; Harpia never overwrites its input");

        var tokenizer = TokenizerMetadata(model, input, request.Tokenizer);
        var plan = Plan(model, request.Scheme, groupedQkv: true);
        foreach (var t in plan)
            if (t.Matrix is { } m && GgmlTypes.IsQuantized(m.Type) && m.Type != t.Type)
                throw new HarpiaException($"{input}: tensor '{m.Name}' is already {m.Type}; quantize from the f32/f16/bf16 checkpoint instead");
        string name = Path.GetFileNameWithoutExtension(Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar));
        var metadata = Metadata(model.Config, name, request.Scheme, tokenizer);
        var infos = plan.Select(t => new GgufWriter.TensorInfo(t.Name, t.Type, t.Shape)).ToList();

        using var writer = GgufWriter.Create(outFull, metadata, infos, request.Force);
        long maxChunk = plan.Max(t => Math.Min(t.ByteSize, ChunkBytes + RowBytes(t)));
        using var buffer = new NativeBuffer(maxChunk);
        long done = 0, parameters = 0;
        int threads = request.Threads ?? Environment.ProcessorCount;
        for (int i = 0; i < plan.Count; i++)
        {
            var t = plan[i];
            progress?.Invoke(new QuantizeProgress(i, plan.Count, t.Name, t.Type, done, writer.TotalBytes));
            parameters += t.Shape.Aggregate(1L, (a, b) => a * b);
            if (t.Vector is { } v)
            {
                writer.WriteTensorData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
                done += t.ByteSize;
                continue;
            }
            long rowBytes = RowBytes(t);
            int rows = (int)t.Shape[0];
            int chunkRows = (int)Math.Max(1, Math.Min(rows, ChunkBytes / rowBytes));
            for (int r0 = 0; r0 < rows; r0 += chunkRows)
            {
                int n = Math.Min(chunkRows, rows - r0);
                EncodeRows(t, r0, n, buffer.Pointer, threads);
                writer.WriteTensorData(new ReadOnlySpan<byte>(buffer.Pointer, checked((int)(n * rowBytes))));
                done += n * rowBytes;
                progress?.Invoke(new QuantizeProgress(i, plan.Count, t.Name, t.Type, done, writer.TotalBytes));
            }
        }
        writer.Commit();
        progress?.Invoke(new QuantizeProgress(plan.Count, plan.Count, "", GgmlType.F32, writer.TotalBytes, writer.TotalBytes));
        var counts = plan.GroupBy(t => t.Type).ToDictionary(g => g.Key, g => g.Count());
        return new QuantizeResult(outFull, plan.Count, writer.TotalBytes, parameters, counts);
    }

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
        var plan = Plan(model, scheme, groupedQkv: false);
        var replaced = new Dictionary<WeightMatrix, WeightMatrix>(ReferenceEqualityComparer.Instance);
        var entries = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        var buffers = new List<NativeBuffer>();
        try
        {
            foreach (var t in plan)
            {
                if (t.Matrix is not { } m || m.Type == t.Type || GgmlTypes.IsQuantized(m.Type) || replaced.ContainsKey(m)) continue;
                var buffer = new NativeBuffer(t.ByteSize);
                buffers.Add(buffer);
                EncodeRows(t, 0, m.Rows, buffer.Pointer, threads ?? Environment.ProcessorCount);
                var q = new WeightMatrix(m.Name, t.Type, m.Rows, m.Cols, buffer.Pointer, buffer);
                replaced[m] = q;
                entries[m.Name] = new TensorEntry(m.Name, t.Type, [m.Rows, m.Cols], buffer.Pointer, t.ByteSize, model.Source.Path + $" ({scheme.Name} on load)", buffer);
            }
        }
        catch
        {
            foreach (var b in buffers) b.Dispose();
            throw;
        }
        WeightMatrix Swap(WeightMatrix m) => replaced.TryGetValue(m, out var q) ? q : m;
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
        return new FalconModel(model.Config, weights, new QuantizedTensorSource(model.Source, entries, buffers), place?.Invoke(weights) ?? devices);
    }

    internal static long RowBytes(PlannedTensor t) => t.Shape.Length == 2 ? GgmlTypes.ByteSize(t.Type, t.Shape[1])!.Value : t.ByteSize;

    /// <summary>Encodes rows [r0, r0 + n) of a planned matrix into dst, rows split across threads.</summary>
    internal static void EncodeRows(PlannedTensor t, int r0, int n, byte* dst, int threads)
    {
        var m = t.Matrix!;
        long rowBytes = RowBytes(t);
        var order = t.RowOrder;
        var type = t.Type;
        nint dstAddress = (nint)dst;
        if (m.Type == type)
        {
            // Same type: the bytes are copied through (a reorder moves whole rows).
            for (int r = 0; r < n; r++)
                Buffer.MemoryCopy(m.Data + (order?[r0 + r] ?? r0 + r) * m.RowBytes, dst + r * rowBytes, rowBytes, rowBytes);
            GC.KeepAlive(m);
            return;
        }
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = threads },
            () => new float[m.Cols],
            (r, _, row) =>
            {
                MatMul.DequantizeRow(m, order?[r0 + r] ?? r0 + (int)r, row);
                RowEncoder.Encode(type, row, new Span<byte>((byte*)dstAddress + r * rowBytes, (int)rowBytes));
                return row;
            },
            _ => { });
        GC.KeepAlive(m);
    }

    /// <summary>The tokenizer metadata for the file: --tokenizer, else IN's GGUF tokenizer, else IN's tokenizer.json.</summary>
    private static List<KeyValuePair<string, object>> TokenizerMetadata(FalconModel model, string input, string? explicitPath)
    {
        var c = model.Config;
        if (explicitPath is not null)
        {
            if (!File.Exists(explicitPath)) throw new HarpiaException($"--tokenizer {explicitPath}: file not found");
            if (GgufFile.HasGgufMagic(explicitPath))
            {
                using var g = GgufFile.Open(explicitPath);
                if (!GgufTokenizerJson.HasTokenizer(g)) throw new HarpiaException($"--tokenizer {explicitPath}: this GGUF carries no tokenizer");
                return GgufTokenizerMetadata.FromGguf(g);
            }
            return GgufTokenizerMetadata.FromTokenizerJson(explicitPath, c.VocabSize, c.BosTokenId, c.EosTokenId);
        }
        if (model.Source is GgufFile gguf)
        {
            if (GgufTokenizerJson.HasTokenizer(gguf)) return GgufTokenizerMetadata.FromGguf(gguf);
            throw new HarpiaException($"{input}: this GGUF carries no tokenizer, which llama.cpp needs; pass --tokenizer tokenizer.json");
        }
        string json = Path.Combine(model.Source.Path, "tokenizer.json");
        if (!File.Exists(json))
            throw new HarpiaException($"{input}: no tokenizer.json in the model folder, and llama.cpp needs the tokenizer in the GGUF; pass --tokenizer FILE (a tokenizer.json, or a GGUF that carries one)");
        return GgufTokenizerMetadata.FromTokenizerJson(json, c.VocabSize, c.BosTokenId, c.EosTokenId);
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

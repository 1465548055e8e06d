using System.Numerics.Tensors;
using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Tensors;

namespace Harpia.Models.Llama;

/// <summary>
/// The Llama architecture's forward pass (Llama 2/3.x, Falcon3, Mistral, Qwen2), in the order of Hugging Face's
/// <c>modeling_llama.py</c>:
/// <code>
/// h = embed_tokens(ids)
/// for each decoder layer:
///     x = input_layernorm(h)                          (RMSNorm)
///     q, k, v = q_proj(x), k_proj(x), v_proj(x);  rotary(q, k)      (biases: attention_bias, Qwen2's q/k/v)
///     h = h + o_proj(softmax(q·kᵀ/√d + causal) · v)    over the sequence's KV cache, grouped KV heads
///     x = post_attention_layernorm(h)
///     h = h + down_proj(silu(gate_proj(x)) · up_proj(x))
/// logits = lm_head(norm(h))                           (lm_head tied to embed_tokens when the checkpoint says so)
/// </code>
/// All tokens of all sequences in a batch go through each linear layer together; attention runs per sequence.
/// Compute is f32; the kernels are Tensors/' (matmul, attention) and <see cref="LlamaKernels"/>.
/// </summary>
public sealed class LlamaModel : ICausalLM, IDisposable
{
    public LlamaConfig Config { get; }
    public ModelShape Shape { get; }
    public LlamaWeights Weights { get; }
    /// <summary>The mapped checkpoint; weights point into it, so it lives as long as the model.</summary>
    public ITensorSource Source { get; }

    private readonly object _forwardLock = new();
    private Workspace? _ws;
    private float[] _head = [];
    private readonly double[] _ropeInverseFrequencies;
    private readonly List<Quantization.RepackedWeights> _repacked = [];

    public LlamaModel(LlamaConfig config, LlamaWeights weights, ITensorSource source)
    {
        Config = config; Weights = weights; Source = source;
        Shape = new ModelShape(config.NumLayers, config.NumKvHeads, config.HeadDim, config.VocabSize, config.MaxPositions, config.HiddenSize);
        _ropeInverseFrequencies = config.RotaryInverseFrequencies();
        if (Quantization.RepackedWeights.Enabled) Repack();
    }

    /// <summary>The matrices that go through MatMul (not the embeddings, which are only read row by row).</summary>
    public IEnumerable<WeightMatrix> LinearWeights()
    {
        yield return Weights.LmHead;
        foreach (var l in Weights.Layers)
            foreach (var lin in new[] { l.QProj, l.KProj, l.VProj, l.OProj, l.GateProj, l.UpProj, l.DownProj })
                yield return lin.Weight;
    }

    private unsafe void Repack()
    {
        foreach (var w in LinearWeights())
        {
            if (!Quantization.RepackedWeights.RepacksAtLoad(w.Type) || w.Repacked is not null) continue;
            w.Repacked = Quantization.RepackedWeights.Create(w.Type, w.Data, w.Rows, w.Cols, releaseSource: w.Owner is MappedFile);
            _repacked.Add(w.Repacked);
        }
    }

    /// <summary>Whether <paramref name="folderOrGguf"/> is a Llama-architecture checkpoint (by config.json model_type or GGUF architecture).</summary>
    public static bool IsLlamaCheckpoint(string folderOrGguf)
    {
        try
        {
            if (File.Exists(folderOrGguf) && GgufFile.HasGgufMagic(folderOrGguf))
            {
                using var gguf = GgufFile.Open(folderOrGguf);
                return gguf.GetString("general.architecture") is "llama" or "qwen2";
            }
            string folder = File.Exists(folderOrGguf) ? Path.GetDirectoryName(Path.GetFullPath(folderOrGguf))! : folderOrGguf;
            string config = Path.Combine(folder, "config.json");
            if (!File.Exists(config) || new FileInfo(config).Length > 1 << 20) return false;
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(config));
            return doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object
                && doc.RootElement.TryGetProperty("model_type", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String
                && LlamaConfig.ModelTypes.Contains(t.GetString());
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or HarpiaException) { return false; }
    }

    /// <summary>
    /// Opens a Hugging Face folder (config.json + safetensors) or a GGUF file, maps the weights (nothing is copied)
    /// and binds them. A <c>llama</c> GGUF keeps its q/k rows as llama.cpp permuted them and rotates interleaved pairs.
    /// </summary>
    public static LlamaModel Load(string folderOrGguf)
    {
        ITensorSource? source = null;
        try
        {
            LlamaConfig config;
            LlamaTensorNames names;
            if (File.Exists(folderOrGguf) && GgufFile.HasGgufMagic(folderOrGguf))
            {
                var gguf = GgufFile.Open(folderOrGguf);
                source = gguf;
                config = LlamaConfig.FromGguf(gguf);
                names = LlamaTensorNames.Gguf;
            }
            else
            {
                string folder = File.Exists(folderOrGguf) ? Path.GetDirectoryName(Path.GetFullPath(folderOrGguf))! : folderOrGguf;
                if (!Directory.Exists(folder)) throw new HarpiaException($"{folderOrGguf}: no such model folder or GGUF file");
                config = LlamaConfig.FromJsonFile(folder);
                source = SafetensorsCheckpoint.Open(folderOrGguf);
                names = LlamaTensorNames.HuggingFace;
            }
            return new LlamaModel(config, LlamaWeights.Bind(source, config, names), source);
        }
        catch
        {
            source?.Dispose();
            throw;
        }
    }

    /// <summary>Loads, then with <paramref name="quantize"/> converts the float weights in memory (<see cref="LlamaQuantizer.QuantizeOnLoad"/>).</summary>
    public static LlamaModel Load(string folderOrGguf, Quantization.QuantizationScheme? quantize, int? threads = null)
    {
        var model = Load(folderOrGguf);
        if (quantize is null) return model;
        try { return LlamaQuantizer.QuantizeOnLoad(model, quantize, threads); }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var r in _repacked) r.Dispose();
        _repacked.Clear();
        Source.Dispose();
    }

    // ---- forward ---------------------------------------------------------------------------------------------

    public void Forward(IReadOnlyList<SequenceChunk> batch, Span<float> logits)
    {
        var plan = BatchPlan.Create(batch, Config.VocabSize);
        if (logits.Length < (long)plan.LogitRows * Config.VocabSize)
            throw new ArgumentException($"logits holds {logits.Length} floats; the batch needs {plan.LogitRows} × {Config.VocabSize}");
        lock (_forwardLock)
        {
            if (_ws is null || _ws.Tokens < plan.TotalTokens) _ws = new Workspace(plan.TotalTokens, Config);
            var ws = _ws;
            int T = plan.TotalTokens, H = Config.HiddenSize;
            var hidden = ws.Hidden.AsSpan(0, T * H);

            for (int t = 0; t < T; t++) MatMul.DequantizeRow(Weights.TokenEmbeddings, plan.Tokens[t], hidden.Slice(t * H, H));

            for (int layer = 0; layer < Config.NumLayers; layer++) DecoderLayer(layer, plan, ws);

            if (_head.Length < plan.LogitRows * H) _head = new float[plan.LogitRows * H];
            var rows = _head.AsSpan(0, plan.LogitRows * H);
            for (int r = 0; r < plan.LogitRows; r++)
                LlamaKernels.RmsNorm(hidden.Slice(plan.LogitTokenIndex[r] * H, H), rows.Slice(r * H, H), 1, H, Weights.FinalNorm, Config.RmsNormEps);
            MatMul.Compute(Weights.LmHead, rows, plan.LogitRows, logits);
        }
        foreach (var chunk in batch) chunk.Cache.SetLength(chunk.StartPosition + chunk.Tokens.Length);
    }

    private void DecoderLayer(int layer, BatchPlan plan, Workspace ws)
    {
        var w = Weights.Layers[layer];
        int T = plan.TotalTokens, H = Config.HiddenSize;
        var hidden = ws.Hidden.AsSpan(0, T * H);
        var normed = ws.Normed.AsSpan(0, T * H);
        var output = ws.Output.AsSpan(0, T * H);

        LlamaKernels.RmsNorm(hidden, normed, T, H, w.InputLayernorm, Config.RmsNormEps);
        SelfAttention(layer, w, plan, ws, normed, output);
        TensorPrimitives.Add(hidden, output, hidden);

        LlamaKernels.RmsNorm(hidden, normed, T, H, w.PostAttentionLayernorm, Config.RmsNormEps);
        Mlp(w, ws, normed, T, output);
        TensorPrimitives.Add(hidden, output, hidden);
    }

    /// <summary>LlamaAttention: q/k/v projections, rotary, cache write, causal grouped-KV attention, o_proj.</summary>
    private void SelfAttention(int layer, LlamaLayerWeights w, BatchPlan plan, Workspace ws, ReadOnlySpan<float> x, Span<float> output)
    {
        int T = plan.TotalTokens, D = Config.HeadDim, heads = Config.NumHeads, kvHeads = Config.NumKvHeads;
        int qW = Config.QueryWidth, kvW = Config.KvWidth;
        var queries = ws.Queries.AsSpan(0, T * qW);
        var keys = ws.Keys.AsSpan(0, T * kvW);
        var values = ws.Values.AsSpan(0, T * kvW);
        Project(w.QProj, x, T, queries);
        Project(w.KProj, x, T, keys);
        Project(w.VProj, x, T, values);

        Span<float> cos = stackalloc float[D / 2], sin = stackalloc float[D / 2];
        bool interleaved = Config.RotaryInterleaved;
        for (int c = 0; c < plan.Chunks.Count; c++)
        {
            var chunk = plan.Chunks[c];
            // Dynamic NTK: transformers recomputes the frequencies from the longest position the call reaches.
            var invFreq = Config.RopeDependsOnLength
                ? Config.RotaryInverseFrequencies(chunk.StartPosition + chunk.Tokens.Length)
                : _ropeInverseFrequencies;
            for (int i = 0; i < chunk.Tokens.Length; i++)
            {
                int t = plan.ChunkTokenOffset[c] + i, position = chunk.StartPosition + i;
                Rope.Table(position, invFreq, cos, sin);
                LlamaKernels.Rotary(queries.Slice(t * qW, qW), heads, D, cos, sin, interleaved);
                var k = keys.Slice(t * kvW, kvW);
                LlamaKernels.Rotary(k, kvHeads, D, cos, sin, interleaved);
                k.CopyTo(chunk.Cache.Keys(layer, position));
                values.Slice(t * kvW, kvW).CopyTo(chunk.Cache.Values(layer, position));
            }
        }

        var context = ws.Context;
        var queriesArray = ws.Queries;
        float scale = 1f / MathF.Sqrt(D);
        int qPerKv = Config.QueriesPerKvHead;
        ComputePool.For(plan.Chunks.Count * heads, (i0, i1) =>
        {
            float[] scores = System.Buffers.ArrayPool<float>.Shared.Rent(plan.MaxEndPosition);
            try
            {
                for (int item = i0; item < i1; item++)
                {
                    int c = item / heads, h = item % heads;
                    var chunk = plan.Chunks[c];
                    var head = new CachedHead(chunk.Cache, layer, h / qPerKv, D);
                    for (int i = 0; i < chunk.Tokens.Length; i++)
                    {
                        int t = plan.ChunkTokenOffset[c] + i;
                        var q = new ReadOnlySpan<float>(queriesArray, t * qW + h * D, D);
                        Attention.AttendOneHead(q, chunk.StartPosition + i + 1, scale, head, scores, context.AsSpan(t * qW + h * D, D));
                    }
                }
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(scores); }
        });

        Project(w.OProj, context.AsSpan(0, T * qW), T, output);
    }

    /// <summary>LlamaMLP: down_proj(silu(gate_proj(x)) · up_proj(x)).</summary>
    private void Mlp(LlamaLayerWeights w, Workspace ws, ReadOnlySpan<float> x, int T, Span<float> output)
    {
        int F = Config.IntermediateSize;
        var gate = ws.Gate;
        var up = ws.Up;
        Project(w.GateProj, x, T, gate.AsSpan(0, T * F));
        Project(w.UpProj, x, T, up.AsSpan(0, T * F));
        ComputePool.For(T * F, (a, b) => LlamaKernels.SwiGlu(gate.AsSpan(a, b - a), up.AsSpan(a, b - a)), minChunk: 4096);
        Project(w.DownProj, gate.AsSpan(0, T * F), T, output);
    }

    private static void Project(Linear linear, ReadOnlySpan<float> x, int n, Span<float> y)
    {
        MatMul.Compute(linear.Weight, x, n, y);
        if (linear.Bias is { } bias)
            for (int i = 0; i < n; i++) TensorPrimitives.Add(y.Slice(i * linear.OutFeatures, linear.OutFeatures), bias, y.Slice(i * linear.OutFeatures, linear.OutFeatures));
    }

    private readonly struct CachedHead(IKvCache cache, int layer, int kvHead, int headDim) : Attention.IHeadVectors
    {
        public ReadOnlySpan<float> Key(int position) => cache.Keys(layer, position).Slice(kvHead * headDim, headDim);
        public ReadOnlySpan<float> Value(int position) => cache.Values(layer, position).Slice(kvHead * headDim, headDim);
    }

    private sealed class Workspace
    {
        public readonly int Tokens;
        public readonly float[] Hidden, Normed, Output, Queries, Keys, Values, Context, Gate, Up;

        public Workspace(int tokens, LlamaConfig c)
        {
            Tokens = tokens;
            int h = checked(tokens * c.HiddenSize);
            Hidden = new float[h]; Normed = new float[h]; Output = new float[h];
            Queries = new float[checked(tokens * c.QueryWidth)];
            Context = new float[checked(tokens * c.QueryWidth)];
            Keys = new float[checked(tokens * c.KvWidth)];
            Values = new float[checked(tokens * c.KvWidth)];
            Gate = new float[checked(tokens * c.IntermediateSize)];
            Up = new float[checked(tokens * c.IntermediateSize)];
        }
    }

    /// <summary>The batch flattened to tokens, checked before anything is computed.</summary>
    private sealed class BatchPlan
    {
        public required IReadOnlyList<SequenceChunk> Chunks { get; init; }
        public required int[] Tokens { get; init; }
        public required int[] ChunkTokenOffset { get; init; }
        public required int[] LogitTokenIndex { get; init; }
        public int TotalTokens => Tokens.Length;
        public int LogitRows => LogitTokenIndex.Length;
        public int MaxEndPosition { get; init; }

        public static BatchPlan Create(IReadOnlyList<SequenceChunk> batch, int vocabSize)
        {
            if (batch.Count == 0) throw new ArgumentException("the batch is empty");
            int total = 0, logitRows = 0, maxEnd = 0;
            var seen = new HashSet<IKvCache>(ReferenceEqualityComparer.Instance);
            foreach (var chunk in batch)
            {
                if (chunk.Tokens.Length == 0) throw new ArgumentException("a sequence chunk has no tokens");
                if (chunk.Cache is null) throw new ArgumentException("a sequence chunk has no KV cache");
                if (!seen.Add(chunk.Cache)) throw new ArgumentException("two chunks of one batch share a KV cache");
                if (chunk.StartPosition != chunk.Cache.Length)
                    throw new ArgumentException($"chunk starts at position {chunk.StartPosition} but its cache holds {chunk.Cache.Length}");
                total = checked(total + chunk.Tokens.Length);
                logitRows += chunk.LogitRows;
                maxEnd = Math.Max(maxEnd, checked(chunk.StartPosition + chunk.Tokens.Length));
            }
            var tokens = new int[total];
            var offsets = new int[batch.Count];
            var logitIndex = new int[logitRows];
            int t = 0, r = 0;
            for (int c = 0; c < batch.Count; c++)
            {
                var chunk = batch[c];
                chunk.Cache.EnsureCapacity(chunk.StartPosition + chunk.Tokens.Length);
                offsets[c] = t;
                var ids = chunk.Tokens.Span;
                for (int i = 0; i < ids.Length; i++, t++)
                {
                    if ((uint)ids[i] >= (uint)vocabSize)
                        throw new HarpiaException($"token id {ids[i]} is outside the vocabulary (0..{vocabSize - 1})");
                    tokens[t] = ids[i];
                    if (chunk.AllLogits || i == ids.Length - 1) logitIndex[r++] = t;
                }
            }
            return new BatchPlan { Chunks = batch, Tokens = tokens, ChunkTokenOffset = offsets, LogitTokenIndex = logitIndex, MaxEndPosition = maxEnd };
        }
    }
}

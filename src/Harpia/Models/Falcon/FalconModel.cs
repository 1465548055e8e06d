using System.Numerics.Tensors;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Models.Falcon;

/// <summary>
/// Falcon's forward pass, in the order of Hugging Face's <c>modeling_falcon.py</c>:
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
/// All tokens of all sequences in a batch go through each linear layer together; attention runs per sequence.
/// Compute is f32; bf16/f16 weights are widened row by row inside <see cref="MatMul"/>; kernels live in Tensors/.
/// </summary>
public sealed class FalconModel : ICausalLM, IDisposable
{
    public FalconConfig Config { get; }
    public ModelShape Shape { get; }
    public FalconWeights Weights { get; }
    /// <summary>The mapped checkpoint; weights point into it, so it lives as long as the model.</summary>
    public ITensorSource Source { get; }

    private readonly object _forwardLock = new();
    private Workspace? _ws;
    private float[] _head = [];   // ln_f output of the rows whose logits are wanted (usually one per sequence)
    private readonly double[] _ropeInverseFrequencies;

    private readonly List<Quantization.RepackedWeights> _repacked = [];

    public FalconModel(FalconConfig config, FalconWeights weights, ITensorSource source)
        : this(config, weights, source, Quantization.RepackedWeights.Enabled) { }

    /// <summary>As the public constructor, with load-time repacking chosen by the caller (tests run it on every CPU:
    /// the tiled kernels fall back to the exact AVX2 emulation of AVX-VNNI, <see cref="Quantization.Vnni"/>).</summary>
    internal FalconModel(FalconConfig config, FalconWeights weights, ITensorSource source, bool repack)
    {
        Config = config; Weights = weights; Source = source;
        Shape = new ModelShape(config.NumLayers, config.NumKvHeads, config.HeadDim, config.VocabSize, config.MaxPositions, config.HiddenSize);
        _ropeInverseFrequencies = Rope.InverseFrequencies(config.HeadDim, config.RopeTheta);
        if (repack && Quantization.Q8_0Tiled.IsSupported) Repack();
    }

    /// <summary>The matrices repacked at load (tests).</summary>
    internal int RepackedMatrices => _repacked.Count;

    /// <summary>
    /// Repacks the Q8_0, Q4_K, Q5_K and Q6_K matrices that go through MatMul into the eight-row interleaved layouts of the
    /// AVX-VNNI kernels (a third to a half of the instructions per weight in decode, no per-tile unpack in prefill). Pages of a mapped file are released as each
    /// matrix is repacked, so the model is resident once.
    /// </summary>
    private unsafe void Repack()
    {
        var matrices = new List<WeightMatrix> { Weights.LmHead };
        foreach (var layer in Weights.Layers)
            matrices.AddRange([layer.QueryKeyValue.Weight, layer.Dense.Weight, layer.DenseHTo4H.Weight, layer.Dense4HToH.Weight]);
        foreach (var w in matrices)
        {
            if (!Quantization.RepackedWeights.RepacksAtLoad(w.Type) || w.Repacked is not null) continue;
            w.Repacked = Quantization.RepackedWeights.Create(w.Type, w.Data, w.Rows, w.Cols, releaseSource: w.Owner is MappedFile);
            _repacked.Add(w.Repacked);
        }
    }

    /// <summary>
    /// Opens a Hugging Face folder (config.json + safetensors, single or sharded) or a GGUF file, maps the weights
    /// (nothing is copied; pages load when first touched) and binds them to the architecture.
    /// </summary>
    public static FalconModel Load(string folderOrGguf) => Load(folderOrGguf, Quantization.RepackedWeights.Enabled);

    /// <summary><see cref="Load(string)"/> with load-time repacking on or off regardless of the CPU (tests).</summary>
    internal static FalconModel Load(string folderOrGguf, bool repack)
    {
        ITensorSource? source = null;
        try
        {
            FalconConfig config;
            FalconTensorNames names;
            Formats.UntrustedFile.CheckModelPath(folderOrGguf);
            if (File.Exists(folderOrGguf) && GgufFile.HasGgufMagic(folderOrGguf))
            {
                var gguf = GgufFile.Open(folderOrGguf);
                source = gguf;
                config = FalconConfig.FromGguf(gguf);
                names = FalconTensorNames.Gguf;
            }
            else
            {
                string folder = File.Exists(folderOrGguf) ? Path.GetDirectoryName(Path.GetFullPath(folderOrGguf))! : folderOrGguf;
                if (!Directory.Exists(folder)) throw new HarpiaException($"{folderOrGguf}: no such model folder or GGUF file");
                config = FalconConfig.FromJsonFile(folder);
                source = SafetensorsCheckpoint.Open(folderOrGguf);
                names = FalconTensorNames.HuggingFace;
                if (Quantization.CheckpointQuantization.Detect(folder) is { } quantization)
                {
                    // GPTQ / bitsandbytes linears are repacked at load into memory the wrapped source frees.
                    var weights = FalconWeights.Bind(source, config, names,
                        (stem, o, i) => quantization.BindLinear(source, stem, o, i) is { } q ? new Linear(q.Weight, q.Bias) : null);
                    source = new QuantizedTensorSource(source, new Dictionary<string, TensorEntry>(), [.. quantization.Buffers]);
                    return new FalconModel(config, weights, source);
                }
            }
            return new FalconModel(config, FalconWeights.Bind(source, config, names), source, repack);
        }
        catch
        {
            source?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads as <see cref="Load(string)"/>, then, when <paramref name="quantize"/> is given, converts the f32/f16/bf16
    /// weights to that scheme in memory (<see cref="FalconQuantizer.QuantizeOnLoad"/>); quantized tensors stay as they are.
    /// </summary>
    public static FalconModel Load(string folderOrGguf, Quantization.QuantizationScheme? quantize, int? threads = null)
    {
        var model = Load(folderOrGguf);
        if (quantize is null) return model;
        try
        {
            return quantize.IsBitsAndBytes
                ? FalconBnbQuantizer.QuantizeOnLoad(model, quantize == Quantization.QuantizationScheme.BitsAndBytesFp4 ? Quantization.Bnb4Type.FP4 : Quantization.Bnb4Type.NF4)
                : FalconQuantizer.QuantizeOnLoad(model, quantize, threads);
        }
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
        var plan = BatchPlan.Create(batch, Config);
        if (logits.Length < (long)plan.LogitRows * Config.VocabSize)
            throw new ArgumentException($"logits holds {logits.Length} floats; the batch needs {plan.LogitRows} × {Config.VocabSize}");
        lock (_forwardLock)
        {
            if (_ws is null || _ws.Tokens < plan.TotalTokens) _ws = new Workspace(plan.TotalTokens, Config);
            var ws = _ws;
            int T = plan.TotalTokens, H = Config.HiddenSize;
            var hidden = ws.Hidden.AsSpan(0, T * H);

            // word_embeddings
            for (int t = 0; t < T; t++) MatMul.DequantizeRow(Weights.WordEmbeddings, plan.Tokens[t], hidden.Slice(t * H, H));

            for (int layer = 0; layer < Config.NumLayers; layer++) DecoderLayer(layer, plan, ws);

            // ln_f and lm_head, only on the rows whose logits were asked for
            if (_head.Length < plan.LogitRows * H) _head = new float[plan.LogitRows * H];
            var rows = _head.AsSpan(0, plan.LogitRows * H);
            for (int r = 0; r < plan.LogitRows; r++)
                Norms.LayerNorm(hidden.Slice(plan.LogitTokenIndex[r] * H, H), rows.Slice(r * H, H), 1, H, Weights.LnF.Weight, Weights.LnF.Bias, Config.LayerNormEpsilon);
            MatMul.Compute(Weights.LmHead, rows, plan.LogitRows, logits);
        }
        foreach (var chunk in batch) chunk.Cache.SetLength(chunk.StartPosition + chunk.Tokens.Length);
    }

    private void DecoderLayer(int layer, BatchPlan plan, Workspace ws)
    {
        var w = Weights.Layers[layer];
        int T = plan.TotalTokens, H = Config.HiddenSize;
        float eps = Config.LayerNormEpsilon;
        var hidden = ws.Hidden.AsSpan(0, T * H);
        // One normalized-input and one output buffer serve attention and then the MLP in turn (the MLP's input
        // norm reads `hidden`, which attention leaves untouched until its output is added): a 512-token prefill of
        // Falcon-40B shapes holds 3 × 17 MB less than with a buffer per use.
        var normed = ws.Normed.AsSpan(0, T * H);
        var output = ws.Output.AsSpan(0, T * H);
        var lnAttn = Config.NumLayerNormsInParallelAttn == 2 ? w.LnAttn! : w.InputLayernorm!;

        Norms.LayerNorm(hidden, normed, T, H, lnAttn.Weight, lnAttn.Bias, eps);
        SelfAttention(layer, w, plan, ws, normed, output);

        if (Config.AttentionAndMlpInParallel)
        {
            // 40B/180B: ln_mlp(h); 7B: the same input_layernorm(h) attention used, still in `normed`.
            if (Config.NumLayerNormsInParallelAttn == 2)
                Norms.LayerNorm(hidden, normed, T, H, w.LnMlp!.Weight, w.LnMlp.Bias, eps);
            TensorPrimitives.Add(hidden, output, hidden);
        }
        else
        {
            TensorPrimitives.Add(hidden, output, hidden);
            Norms.LayerNorm(hidden, normed, T, H, w.PostAttentionLayernorm!.Weight, w.PostAttentionLayernorm.Bias, eps);
        }
        Mlp(w, ws, normed, T, output);
        TensorPrimitives.Add(hidden, output, hidden);
    }

    /// <summary>FalconAttention: fused QKV, rotary, cache write, causal attention over the cache, output dense.</summary>
    private void SelfAttention(int layer, FalconLayerWeights w, BatchPlan plan, Workspace ws, ReadOnlySpan<float> x, Span<float> output)
    {
        int T = plan.TotalTokens, D = Config.HeadDim, heads = Config.NumHeads, kvHeads = Config.NumKvHeads;
        int qkvSize = Config.QkvSize, qSize = heads * D;
        var qkv = ws.Qkv.AsSpan(0, T * qkvSize);
        var queries = ws.Queries.AsSpan(0, T * qSize);
        Project(w.QueryKeyValue, x, T, qkv);

        // Split q / k / v out of the fused projection, rotate q and k, and store k and v in each sequence's cache.
        Span<float> cos = stackalloc float[D / 2], sin = stackalloc float[D / 2];
        for (int t = 0; t < T; t++)
        {
            int position = plan.Positions[t];
            var cache = plan.CacheOf(t);
            var row = qkv.Slice(t * qkvSize, qkvSize);
            var q = queries.Slice(t * qSize, qSize);
            var keys = cache.Keys(layer, position);
            var values = cache.Values(layer, position);
            for (int h = 0; h < heads; h++) row.Slice(QueryOffset(h), D).CopyTo(q.Slice(h * D, D));
            for (int g = 0; g < kvHeads; g++)
            {
                row.Slice(KeyOffset(g), D).CopyTo(keys.Slice(g * D, D));
                row.Slice(ValueOffset(g), D).CopyTo(values.Slice(g * D, D));
            }
            Rope.Table(position, _ropeInverseFrequencies, cos, sin);
            Rope.Apply(q, heads, D, cos, sin);
            Rope.Apply(keys, kvHeads, D, cos, sin);
        }

        // Causal attention: each (sequence, head) pair is independent work; query i sees positions [0, pos_i].
        // The per-head outputs go where the fused QKV was: q, k and v have all been copied out of it by now.
        var context = ws.Qkv;
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
                        var q = new ReadOnlySpan<float>(queriesArray, t * qSize + h * D, D);
                        Attention.AttendOneHead(q, chunk.StartPosition + i + 1, scale, head, scores, context.AsSpan(t * qSize + h * D, D));
                    }
                }
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(scores); }
        });

        Project(w.Dense, context.AsSpan(0, T * qSize), T, output);
    }

    /// <summary>FalconMLP: dense_h_to_4h → exact GELU → dense_4h_to_h.</summary>
    private void Mlp(FalconLayerWeights w, Workspace ws, ReadOnlySpan<float> x, int T, Span<float> output)
    {
        int F = Config.FfnHiddenSize;
        var up = ws.Up;
        Project(w.DenseHTo4H, x, T, up.AsSpan(0, T * F));
        ComputePool.For(T * F, (a, b) => Activations.GeluExact(up.AsSpan(a, b - a)), minChunk: 4096);
        Project(w.Dense4HToH, up.AsSpan(0, T * F), T, output);
    }

    private static void Project(Linear linear, ReadOnlySpan<float> x, int n, Span<float> y)
    {
        MatMul.Compute(linear.Weight, x, n, y);
        if (linear.Bias is { } bias)
            for (int i = 0; i < n; i++) TensorPrimitives.Add(y.Slice(i * linear.OutFeatures, linear.OutFeatures), bias, y.Slice(i * linear.OutFeatures, linear.OutFeatures));
    }

    // Where head h's query and KV group g's key/value start inside one token's fused QKV row.
    private int QueryOffset(int h)
    {
        int D = Config.HeadDim, qPerKv = Config.QueriesPerKvHead;
        return Config.QkvLayout switch
        {
            QkvLayout.PerKvGroup => ((h / qPerKv) * (qPerKv + 2) + h % qPerKv) * D,
            QkvLayout.Grouped => h * D,
            _ => h * 3 * D,
        };
    }

    private int KeyOffset(int g)
    {
        int D = Config.HeadDim, qPerKv = Config.QueriesPerKvHead;
        return Config.QkvLayout switch
        {
            QkvLayout.PerKvGroup => (g * (qPerKv + 2) + qPerKv) * D,
            QkvLayout.Grouped => (Config.NumHeads + g) * D,
            _ => (g * 3 + 1) * D,
        };
    }

    private int ValueOffset(int g) => Config.QkvLayout switch
    {
        QkvLayout.Grouped => (Config.NumHeads + Config.NumKvHeads + g) * Config.HeadDim,
        _ => KeyOffset(g) + Config.HeadDim,
    };

    /// <summary>One KV head's vectors in a sequence's cache.</summary>
    private readonly struct CachedHead(IKvCache cache, int layer, int kvHead, int headDim) : Attention.IHeadVectors
    {
        public ReadOnlySpan<float> Key(int position) => cache.Keys(layer, position).Slice(kvHead * headDim, headDim);
        public ReadOnlySpan<float> Value(int position) => cache.Values(layer, position).Slice(kvHead * headDim, headDim);
    }

    /// <summary>Activation buffers for up to <see cref="Tokens"/> tokens, reused across forward passes.</summary>
    private sealed class Workspace
    {
        public readonly int Tokens;
        public readonly float[] Hidden, Normed, Output, Qkv, Queries, Up;

        public Workspace(int tokens, FalconConfig c)
        {
            Tokens = tokens;
            // checked: a batch too large for one array fails here rather than wrapping around.
            int h = checked(tokens * c.HiddenSize);
            Hidden = new float[h]; Normed = new float[h]; Output = new float[h];
            // Also holds the attention context (heads × head_dim ≤ the fused QKV width) once q, k, v are split out.
            Qkv = new float[checked(tokens * Math.Max(c.QkvSize, c.NumHeads * c.HeadDim))];
            Queries = new float[checked(tokens * c.NumHeads * c.HeadDim)];
            Up = new float[checked(tokens * c.FfnHiddenSize)];
        }
    }

    /// <summary>The batch flattened to tokens, checked before anything is computed.</summary>
    private sealed class BatchPlan
    {
        public required IReadOnlyList<SequenceChunk> Chunks { get; init; }
        public required int[] Tokens { get; init; }
        public required int[] Positions { get; init; }
        public required int[] ChunkOfToken { get; init; }
        public required int[] ChunkTokenOffset { get; init; }
        /// <summary>For each logits row, the token whose hidden state produces it.</summary>
        public required int[] LogitTokenIndex { get; init; }
        public int TotalTokens => Tokens.Length;
        public int LogitRows => LogitTokenIndex.Length;
        public int MaxEndPosition { get; init; }

        public IKvCache CacheOf(int token) => Chunks[ChunkOfToken[token]].Cache;

        public static BatchPlan Create(IReadOnlyList<SequenceChunk> batch, FalconConfig config)
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
            var positions = new int[total];
            var chunkOf = new int[total];
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
                    if ((uint)ids[i] >= (uint)config.VocabSize)
                        throw new HarpiaException($"token id {ids[i]} is outside the vocabulary (0..{config.VocabSize - 1})");
                    tokens[t] = ids[i];
                    positions[t] = chunk.StartPosition + i;
                    chunkOf[t] = c;
                    if (chunk.AllLogits || i == ids.Length - 1) logitIndex[r++] = t;
                }
            }
            return new BatchPlan
            {
                Chunks = batch, Tokens = tokens, Positions = positions, ChunkOfToken = chunkOf, ChunkTokenOffset = offsets,
                LogitTokenIndex = logitIndex, MaxEndPosition = maxEnd,
            };
        }
    }
}

using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Formats;
using static Harpia.Models.ConfigJson;

namespace Harpia.Models.Llama;

/// <summary>How <c>rope_scaling</c> changes the rotary frequencies (transformers' <c>rope_type</c>).</summary>
public enum RopeScalingType
{
    /// <summary>Plain θ^(−2i/d).</summary>
    None,
    /// <summary>Position interpolation: every inverse frequency divided by <c>factor</c>.</summary>
    Linear,
    /// <summary>
    /// Dynamic NTK: past <c>max_position_embeddings</c>, the base grows with the sequence length
    /// (transformers' <c>_compute_dynamic_ntk_parameters</c>).
    /// </summary>
    Dynamic,
    /// <summary>Llama 3.1's wavelength-banded scaling (transformers' <c>_compute_llama3_parameters</c>).</summary>
    Llama3,
}

/// <summary>The <c>rope_scaling</c> object of a config (only the fields its type uses are meaningful).</summary>
public sealed record RopeScaling(RopeScalingType Type, double Factor = 1, double LowFreqFactor = 1, double HighFreqFactor = 4,
    int OriginalMaxPositions = 8192);

/// <summary>
/// The Llama architecture's hyper-parameters — Llama 2/3.x, Falcon3, Mistral and Qwen2 share it — read from Hugging
/// Face <c>config.json</c> (<c>model_type</c> llama, mistral, qwen2) or from llama.cpp GGUF metadata
/// (<c>general.architecture</c> llama, qwen2). Variants Harpia does not run are refused by name.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>llama, mistral or qwen2 (as config.json or GGUF names it).</summary>
    public string ModelType { get; init; } = "llama";
    public int HiddenSize { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    /// <summary>Explicit in Falcon3 and Mistral-Nemo configs (heads × head_dim may differ from hidden).</summary>
    public int HeadDim { get; init; }
    public int NumLayers { get; init; }
    public int VocabSize { get; init; }
    public int IntermediateSize { get; init; }
    public float RmsNormEps { get; init; } = 1e-6f;
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling RopeScaling { get; init; } = new(RopeScalingType.None);
    /// <summary>
    /// llama.cpp's <c>rope_freqs.weight</c>: per-pair divisors of the inverse frequencies (how a GGUF carries Llama 3.1
    /// scaling). When set it replaces <see cref="RopeScaling"/>.
    /// </summary>
    public float[]? RopeFreqFactors { get; init; }
    /// <summary>
    /// The q/k projections' rows are in llama.cpp's interleaved order (a <c>llama</c> GGUF): rotary then rotates
    /// adjacent pairs (2i, 2i+1) instead of halves. q·k is unchanged, since both carry the same permutation.
    /// </summary>
    public bool RotaryInterleaved { get; init; }
    /// <summary>q, k, v and o projections carry biases (<c>attention_bias</c>).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>q, k and v (not o) carry biases: Qwen2.</summary>
    public bool QkvBias { get; init; }
    public bool MlpBias { get; init; }
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Positions Harpia allows: max_position_embeddings, or Mistral's sliding window when smaller (see <see cref="FromJson"/>).</summary>
    public int MaxPositions { get; init; } = 2048;
    public int BosTokenId { get; init; } = 1;
    public int EosTokenId { get; init; } = 2;
    /// <summary>Every end-of-sequence id (Llama 3.1 lists several).</summary>
    public int[] EosTokenIds { get; init; } = [2];

    public int QueriesPerKvHead => NumHeads / NumKvHeads;
    public int QueryWidth => NumHeads * HeadDim;
    public int KvWidth => NumKvHeads * HeadDim;
    public bool HasQkvBias => AttentionBias || QkvBias;
    /// <summary>GGUF <c>general.architecture</c> for this model: llama.cpp converts Mistral as llama.</summary>
    public string GgufArchitecture => ModelType == "qwen2" ? "qwen2" : "llama";

    public string Describe() =>
        $"{ModelType}: {NumLayers} layers, hidden {HiddenSize}, {NumHeads} heads × {HeadDim}, {NumKvHeads} KV heads, " +
        $"FFN {IntermediateSize} (SwiGLU), vocab {VocabSize}, rope θ {RopeTheta}" +
        (RopeFreqFactors is not null ? " with rope_freqs" : RopeScaling.Type != RopeScalingType.None ? $" ({RopeScaling.Type} ×{RopeScaling.Factor})" : "") +
        $", RMSNorm eps {RmsNormEps}" + (HasQkvBias ? AttentionBias ? ", attention bias" : ", q/k/v bias" : "") + (MlpBias ? ", MLP bias" : "") +
        (TieWordEmbeddings ? ", tied embeddings" : "");

    /// <summary>Reads <c>config.json</c> (a file or the folder holding it).</summary>
    public static LlamaConfig FromJsonFile(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "config.json");
        if (!File.Exists(path)) throw new HarpiaException($"{path}: config.json not found");
        if (new FileInfo(path).Length > 1 << 20) throw new InvalidModelFileException(path, "config.json is larger than 1 MiB; not a model config");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidModelFileException(path, "not a JSON object");
        }
        catch (JsonException e) { throw new InvalidModelFileException(path, $"not valid JSON ({e.Message})"); }
        return FromJson(root, path);
    }

    /// <summary>The model types this architecture reads from config.json.</summary>
    public static readonly string[] ModelTypes = ["llama", "mistral", "qwen2"];

    /// <summary>
    /// Reads a config.json object with transformers' defaults for each model type (LlamaConfig, MistralConfig,
    /// Qwen2Config) where a key is optional; the shape keys are required.
    /// </summary>
    public static LlamaConfig FromJson(JsonObject c, string source)
    {
        string modelType = Str(c, "model_type") ?? throw Missing(source, "model_type");
        if (!ModelTypes.Contains(modelType))
            throw new HarpiaException($"{source}: model_type '{modelType}' is not a Llama-architecture model ({string.Join(", ", ModelTypes)})");
        string activation = Str(c, "hidden_act") ?? "silu";
        if (activation != "silu")
            throw new HarpiaException($"{source}: hidden_act '{activation}' is not supported (the Llama architecture's MLP is SwiGLU: silu)");
        if (Num(c, source, "partial_rotary_factor") is double prf && prf != 1.0)
            throw new HarpiaException($"{source}: partial_rotary_factor {prf} is not supported (Harpia rotates the whole head)");

        int hidden = Int(c, source, "hidden_size") ?? throw Missing(source, "hidden_size");
        int heads = Int(c, source, "num_attention_heads") ?? throw Missing(source, "num_attention_heads");
        int kvHeads = Int(c, source, "num_key_value_heads") ?? heads;
        int headDim = Int(c, source, "head_dim") ?? (heads > 0 && hidden % heads == 0 ? hidden / heads
            : throw new InvalidModelFileException(source, $"hidden_size {hidden} is not divisible by {heads} heads and there is no head_dim"));
        int trainedPositions = Int(c, source, "max_position_embeddings") ?? modelType switch { "mistral" => 4096 * 32, "qwen2" => 32768, _ => 2048 };
        int maxPositions = trainedPositions;
        // Mistral's sliding-window attention equals full attention while the sequence fits in the window; Harpia
        // has no windowed attention, so it limits sequences to the window rather than compute something else beyond.
        bool slidingWindow = modelType == "mistral" || (modelType == "qwen2" && Bool(c, "use_sliding_window") == true);
        if (slidingWindow && Int(c, source, "sliding_window") is int window && window > 0) maxPositions = Math.Min(maxPositions, window);

        var (eos, eosIds) = EosIds(c, source);
        var config = new LlamaConfig
        {
            ModelType = modelType,
            HiddenSize = hidden, NumHeads = heads, NumKvHeads = kvHeads, HeadDim = headDim,
            NumLayers = Int(c, source, "num_hidden_layers") ?? throw Missing(source, "num_hidden_layers"),
            VocabSize = Int(c, source, "vocab_size") ?? throw Missing(source, "vocab_size"),
            IntermediateSize = Int(c, source, "intermediate_size") ?? throw Missing(source, "intermediate_size"),
            RmsNormEps = (float)(Num(c, source, "rms_norm_eps") ?? 1e-6),
            RopeTheta = Num(c, source, "rope_theta") ?? 10000.0,
            RopeScaling = ReadRopeScaling(c, source),
            AttentionBias = Bool(c, "attention_bias") ?? false,
            QkvBias = modelType == "qwen2",
            MlpBias = Bool(c, "mlp_bias") ?? false,
            TieWordEmbeddings = Bool(c, "tie_word_embeddings") ?? false,
            MaxPositions = maxPositions, MaxPositionEmbeddingsForDynamic = trainedPositions,
            BosTokenId = Int(c, source, "bos_token_id") ?? 1,
            EosTokenId = eos ?? 2,
            EosTokenIds = eosIds ?? [eos ?? 2],
        };
        config.Validate(source);
        return config;
    }

    private static (int? First, int[]? All) EosIds(JsonObject c, string source)
    {
        if (c["eos_token_id"] is JsonArray list)
        {
            var ids = new int[list.Count];
            for (int i = 0; i < ids.Length; i++)
                ids[i] = list[i] is JsonValue v && v.TryGetValue<int>(out int id) ? id
                    : throw new InvalidModelFileException(source, "config key 'eos_token_id' must be an integer or a list of integers");
            if (ids.Length == 0) throw new InvalidModelFileException(source, "config key 'eos_token_id' is an empty list");
            return (ids[0], ids);
        }
        int? one = Int(c, source, "eos_token_id");
        return (one, one is int x ? [x] : null);
    }

    /// <summary>transformers' rope_scaling: <c>rope_type</c> (or the older <c>type</c>) and its parameters.</summary>
    private static RopeScaling ReadRopeScaling(JsonObject c, string source)
    {
        if (c["rope_scaling"] is not JsonNode node || node.GetValueKind() == JsonValueKind.Null) return new(RopeScalingType.None);
        if (node is not JsonObject s) throw new InvalidModelFileException(source, "config key 'rope_scaling' must be an object or null");
        string type = Str(s, "rope_type") ?? Str(s, "type") ?? throw new InvalidModelFileException(source, "rope_scaling has no 'rope_type'");
        double Factor()
        {
            double f = Num(s, source, "factor") ?? throw new InvalidModelFileException(source, $"rope_scaling type '{type}' needs 'factor'");
            if (!(f >= 1) || !double.IsFinite(f)) throw new InvalidModelFileException(source, $"rope_scaling factor {f} must be at least 1");
            return f;
        }
        switch (type)
        {
            case "default": return new(RopeScalingType.None);
            case "linear": return new(RopeScalingType.Linear, Factor());
            case "dynamic": return new(RopeScalingType.Dynamic, Factor());
            case "llama3":
                var r = new RopeScaling(RopeScalingType.Llama3, Factor(),
                    Num(s, source, "low_freq_factor") ?? throw new InvalidModelFileException(source, "rope_scaling llama3 needs 'low_freq_factor'"),
                    Num(s, source, "high_freq_factor") ?? throw new InvalidModelFileException(source, "rope_scaling llama3 needs 'high_freq_factor'"),
                    Int(s, source, "original_max_position_embeddings") ?? throw new InvalidModelFileException(source, "rope_scaling llama3 needs 'original_max_position_embeddings'"));
                if (!(r.HighFreqFactor > r.LowFreqFactor) || r.LowFreqFactor <= 0 || r.OriginalMaxPositions <= 0)
                    throw new InvalidModelFileException(source, "rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor and a positive original_max_position_embeddings");
                return r;
            default:
                throw new HarpiaException($"{source}: rope_scaling type '{type}' is not supported (Harpia implements default, linear, dynamic and llama3)");
        }
    }

    /// <summary>
    /// Reads llama.cpp's <c>llama.*</c> / <c>qwen2.*</c> metadata. Biases, the tied head and the vocabulary come from
    /// the tensors; a <c>llama</c> file's q/k rows are permuted for interleaved rotary (convert_hf_to_gguf.py), a
    /// <c>qwen2</c> file's are not (llama.cpp runs Qwen2 with NeoX rotary).
    /// </summary>
    public static LlamaConfig FromGguf(GgufFile gguf)
    {
        string arch = gguf.GetString("general.architecture") ?? throw new InvalidModelFileException(gguf.Path, "no general.architecture");
        if (arch is not ("llama" or "qwen2"))
            throw new HarpiaException($"{gguf.Path}: architecture '{arch}' is not a Llama-architecture model (llama, qwen2)");
        long? Opt(string key) => gguf.GetInteger($"{arch}.{key}");
        int Req(string key)
        {
            long v = Opt(key) ?? throw new InvalidModelFileException(gguf.Path, $"missing metadata {arch}.{key}");
            if (v <= 0 || v > int.MaxValue) throw new InvalidModelFileException(gguf.Path, $"metadata {arch}.{key} = {v} is out of range");
            return (int)v;
        }
        int hidden = Req("embedding_length");
        int heads = Req("attention.head_count");
        if (!gguf.Tensors.TryGetValue("token_embd.weight", out var embd) || embd.Shape.Length != 2)
            throw new InvalidModelFileException(gguf.Path, "tensor 'token_embd.weight' is missing or not a matrix");
        int headDim = Opt("attention.key_length") is long kl ? checked((int)kl)
            : hidden % heads == 0 ? hidden / heads : throw new InvalidModelFileException(gguf.Path, $"embedding_length {hidden} is not divisible by {heads} heads and there is no {arch}.attention.key_length");
        if (Opt("attention.value_length") is long vl && vl != headDim)
            throw new InvalidModelFileException(gguf.Path, $"{arch}.attention.value_length {vl} differs from key_length {headDim}; Harpia needs equal key and value head sizes");
        if (Opt("rope.dimension_count") is long rd && rd != headDim)
            throw new HarpiaException($"{gguf.Path}: {arch}.rope.dimension_count {rd} is not the head size {headDim}; partial rotary is not supported");

        var scaling = new RopeScaling(RopeScalingType.None);
        string? scalingType = gguf.GetString($"{arch}.rope.scaling.type");
        if (scalingType is not (null or "none"))
        {
            double factor = gguf.GetFloat($"{arch}.rope.scaling.factor") ?? throw new InvalidModelFileException(gguf.Path, $"{arch}.rope.scaling.type is '{scalingType}' but there is no {arch}.rope.scaling.factor");
            scaling = scalingType == "linear" ? new RopeScaling(RopeScalingType.Linear, factor)
                : throw new HarpiaException($"{gguf.Path}: {arch}.rope.scaling.type '{scalingType}' is not supported (Harpia reads linear scaling and rope_freqs.weight)");
        }
        float[]? freqFactors = null;
        if (gguf.Tensors.TryGetValue("rope_freqs.weight", out var rf))
        {
            if (rf.Shape.Length != 1 || rf.Shape[0] != headDim / 2)
                throw new InvalidModelFileException(gguf.Path, $"tensor 'rope_freqs.weight': shape {rf.ShapeText}, expected [{headDim / 2}]");
            freqFactors = rf.ToFloatVector();
            foreach (float f in freqFactors)
                if (!(f > 0) || !float.IsFinite(f)) throw new InvalidModelFileException(gguf.Path, "tensor 'rope_freqs.weight' holds a factor that is not positive and finite");
        }
        bool Has(string name) => gguf.Tensors.ContainsKey(name);
        int eos = checked((int)(gguf.GetInteger("tokenizer.ggml.eos_token_id") ?? 2));
        var config = new LlamaConfig
        {
            ModelType = arch,
            HiddenSize = hidden, NumHeads = heads, HeadDim = headDim,
            NumKvHeads = Opt("attention.head_count_kv") is long kv ? checked((int)kv) : heads,
            NumLayers = Req("block_count"),
            VocabSize = checked((int)embd.Shape[0]),
            IntermediateSize = Req("feed_forward_length"),
            RmsNormEps = (float)(gguf.GetFloat($"{arch}.attention.layer_norm_rms_epsilon") ?? 1e-5),
            RopeTheta = gguf.GetFloat($"{arch}.rope.freq_base") ?? 10000.0,
            RopeScaling = scaling,
            RopeFreqFactors = freqFactors,
            RotaryInterleaved = arch == "llama",
            AttentionBias = Has("blk.0.attn_output.bias"),
            QkvBias = Has("blk.0.attn_q.bias"),
            MlpBias = Has("blk.0.ffn_up.bias"),
            TieWordEmbeddings = !Has("output.weight"),
            MaxPositions = Req("context_length"), MaxPositionEmbeddingsForDynamic = Req("context_length"),
            BosTokenId = checked((int)(gguf.GetInteger("tokenizer.ggml.bos_token_id") ?? 1)),
            EosTokenId = eos, EosTokenIds = [eos],
        };
        config.Validate(gguf.Path);
        return config;
    }

    public void Validate(string source)
    {
        void Check(bool ok, string problem) { if (!ok) throw new InvalidModelFileException(source, problem); }
        Check(HiddenSize > 0 && NumHeads > 0 && NumKvHeads > 0 && NumLayers > 0 && VocabSize > 0 && IntermediateSize > 0 && HeadDim > 0,
            "hidden size, head counts, head_dim, layers, vocabulary and intermediate size must all be positive");
        Check(HeadDim % 2 == 0, $"head dimension {HeadDim} must be even for rotary embeddings");
        Check(NumHeads % NumKvHeads == 0, $"{NumHeads} heads cannot be grouped over {NumKvHeads} KV heads");
        Check(RmsNormEps > 0 && float.IsFinite(RmsNormEps), "rms_norm_eps must be positive");
        Check(RopeTheta > 1 && double.IsFinite(RopeTheta), "rope_theta must be greater than 1");
        Check(MaxPositions > 0, "max_position_embeddings must be positive");
        Check((uint)BosTokenId < (uint)VocabSize || BosTokenId == -1, $"bos_token_id {BosTokenId} is outside the vocabulary");
        Check((uint)EosTokenId < (uint)VocabSize, $"eos_token_id {EosTokenId} is outside the vocabulary");
    }

    // ---- rotary frequencies ------------------------------------------------------------------------------

    /// <summary>transformers' default inverse frequencies for a base: 1 / base^(2i/d), i &lt; d/2, in f64.</summary>
    public static double[] DefaultInverseFrequencies(int headDim, double theta)
    {
        var inv = new double[headDim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
        return inv;
    }

    /// <summary>Whether the frequencies depend on the sequence length (dynamic NTK past the trained context).</summary>
    public bool RopeDependsOnLength => RopeFreqFactors is null && RopeScaling.Type == RopeScalingType.Dynamic;

    /// <summary>
    /// The rotary inverse frequencies for a forward pass whose longest sequence is <paramref name="sequenceLength"/>
    /// positions long, as transformers computes them in f64: <c>rope_freqs.weight</c> divides the defaults when the
    /// GGUF has it; otherwise rope_scaling's rule. Dynamic NTK follows transformers' <c>dynamic_rope_update</c>: the
    /// defaults up to max_position_embeddings, past it the base <c>θ·(factor·L/max − (factor−1))^(d/(d−2))</c>.
    /// </summary>
    public double[] RotaryInverseFrequencies(int sequenceLength = 0)
    {
        int d = HeadDim;
        if (RopeFreqFactors is { } factors)
        {
            var inv = DefaultInverseFrequencies(d, RopeTheta);
            for (int i = 0; i < inv.Length; i++) inv[i] /= factors[i];
            return inv;
        }
        var s = RopeScaling;
        switch (s.Type)
        {
            case RopeScalingType.Linear:
            {
                var inv = DefaultInverseFrequencies(d, RopeTheta);
                for (int i = 0; i < inv.Length; i++) inv[i] /= s.Factor;
                return inv;
            }
            case RopeScalingType.Dynamic:
            {
                if (sequenceLength <= MaxPositionEmbeddingsForDynamic) return DefaultInverseFrequencies(d, RopeTheta);
                double L = sequenceLength, max = MaxPositionEmbeddingsForDynamic;
                double theta = RopeTheta * Math.Pow(s.Factor * L / max - (s.Factor - 1), d / (d - 2.0));
                return DefaultInverseFrequencies(d, theta);
            }
            case RopeScalingType.Llama3:
            {
                var inv = DefaultInverseFrequencies(d, RopeTheta);
                double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor, highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
                for (int i = 0; i < inv.Length; i++)
                {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen > lowWavelen) inv[i] /= s.Factor;               // low frequencies: interpolated
                    else if (wavelen >= highWavelen)                               // the band between: blended
                    {
                        double smooth = (s.OriginalMaxPositions / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                        inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                    }
                    // high frequencies (wavelen < highWavelen) stay as they are
                }
                return inv;
            }
            default:
                return DefaultInverseFrequencies(d, RopeTheta);
        }
    }

    /// <summary>
    /// The max_position_embeddings that dynamic NTK compares against: the config's own value (a Mistral sliding
    /// window may have lowered <see cref="MaxPositions"/>, but never below what transformers compares).
    /// </summary>
    public int MaxPositionEmbeddingsForDynamic { get; init; } = 2048;

    /// <summary>
    /// llama.cpp's <c>rope_freqs.weight</c> for this configuration when its scaling is per-frequency (llama3), as
    /// convert_hf_to_gguf.py writes it: inv_default / inv_scaled per pair. Null when the GGUF needs none.
    /// </summary>
    public float[]? GgufRopeFreqFactors()
    {
        if (RopeFreqFactors is not null) return RopeFreqFactors;
        if (RopeScaling.Type != RopeScalingType.Llama3) return null;
        var baseline = DefaultInverseFrequencies(HeadDim, RopeTheta);
        var scaled = RotaryInverseFrequencies();
        var factors = new float[baseline.Length];
        for (int i = 0; i < factors.Length; i++) factors[i] = (float)(baseline[i] / scaled[i]);
        return factors;
    }
}

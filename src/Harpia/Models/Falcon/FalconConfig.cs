using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Formats;
using static Harpia.Models.ConfigJson;

namespace Harpia.Models.Falcon;

/// <summary>How the fused query_key_value projection orders its output features.</summary>
public enum QkvLayout
{
    /// <summary>
    /// Hugging Face, per KV group: for each KV head g, its q heads, then k, then v
    /// (<c>[kv, q_per_kv + 2, head_dim]</c>). Falcon-7B's multi-query layout <c>[q…q, k, v]</c> is the one-group case.
    /// </summary>
    PerKvGroup,
    /// <summary>llama.cpp's GGUF conversion: all q heads, then all k heads, then all v heads.</summary>
    Grouped,
    /// <summary>Old non-multi-query Falcon (no new decoder architecture): per head <c>[q, k, v]</c>.</summary>
    PerHeadTriplet,
}

/// <summary>
/// Falcon's architecture hyper-parameters, read from Hugging Face <c>config.json</c> (every published variant and
/// the older RefinedWeb key names) or from GGUF metadata. Variants Harpia does not run are refused by name.
/// </summary>
public sealed record FalconConfig
{
    public int HiddenSize { get; init; }
    public int NumHeads { get; init; }
    /// <summary>Effective KV heads: 1 for Falcon-7B's multi-query attention, the group count for 40B/180B.</summary>
    public int NumKvHeads { get; init; }
    public int NumLayers { get; init; }
    public int VocabSize { get; init; }
    public int FfnHiddenSize { get; init; }
    public float LayerNormEpsilon { get; init; } = 1e-5f;
    public double RopeTheta { get; init; } = 10000.0;
    public int MaxPositions { get; init; } = 2048;
    public bool NewDecoderArchitecture { get; init; }
    public bool ParallelAttn { get; init; } = true;
    public bool Bias { get; init; }
    /// <summary>2: separate <c>ln_attn</c> and <c>ln_mlp</c> (40B/180B); 1: one <c>input_layernorm</c>.</summary>
    public int NumLayerNormsInParallelAttn { get; init; } = 1;
    public bool TieWordEmbeddings { get; init; } = true;
    public int BosTokenId { get; init; } = 11;
    public int EosTokenId { get; init; } = 11;
    public QkvLayout QkvLayout { get; init; } = QkvLayout.PerKvGroup;

    public int HeadDim => HiddenSize / NumHeads;
    public int QueriesPerKvHead => NumHeads / NumKvHeads;
    public int QkvSize => (NumHeads + 2 * NumKvHeads) * HeadDim;
    /// <summary>Attention and MLP both read the layer input and their outputs are summed (7B, 40B, 180B).</summary>
    public bool AttentionAndMlpInParallel => NewDecoderArchitecture || ParallelAttn;

    public string Describe() =>
        $"Falcon: {NumLayers} layers, hidden {HiddenSize}, {NumHeads} heads × {HeadDim}, {NumKvHeads} KV heads" +
        $"{(NumKvHeads == 1 ? " (multi-query)" : NumKvHeads < NumHeads ? " (grouped)" : "")}, FFN {FfnHiddenSize}, vocab {VocabSize}, " +
        $"{(NewDecoderArchitecture ? "new decoder architecture" : "classic decoder")}, " +
        $"{(NumLayerNormsInParallelAttn == 2 ? "ln_attn + ln_mlp" : "one layer norm")}, {(AttentionAndMlpInParallel ? "parallel attention/MLP" : "sequential attention/MLP")}, " +
        $"{(Bias ? "bias" : "no bias")}, rope θ {RopeTheta}, eps {LayerNormEpsilon}";

    /// <summary>Reads <c>config.json</c> (a file or the folder holding it).</summary>
    public static FalconConfig FromJsonFile(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "config.json");
        Formats.UntrustedFile.RequireRegularFile(path, "config.json");
        if (new FileInfo(path).Length > 1 << 20) throw new InvalidModelFileException(path, "config.json is larger than 1 MiB; not a model config");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(Formats.UntrustedFile.ReadAllBytes(path, "config.json", 1 << 20)) as JsonObject ?? throw new InvalidModelFileException(path, "not a JSON object");
        }
        catch (JsonException e) { throw new InvalidModelFileException(path, $"not valid JSON ({e.Message})"); }
        return FromJson(root, path);
    }

    public static FalconConfig FromJson(JsonObject c, string source)
    {
        string modelType = Str(c, "model_type") ?? "falcon";
        if (modelType is not ("falcon" or "RefinedWeb" or "RefinedWebModel"))
            throw new HarpiaException($"{source}: model_type '{modelType}' is not Falcon; Harpia runs Falcon-7B/40B/180B checkpoints");
        if (Bool(c, "alibi") == true)
            throw new HarpiaException($"{source}: this Falcon variant uses ALiBi positions (alibi: true, e.g. Falcon-RW); Harpia runs the rotary Falcon models (7B, 40B, 180B) only");
        if (c["rope_scaling"] is JsonNode scaling && scaling.GetValueKind() != JsonValueKind.Null)
            throw new HarpiaException($"{source}: rope_scaling {scaling.ToJsonString()} is not supported; Harpia runs Falcon with plain rotary positions");
        string activation = Str(c, "activation") ?? "gelu";
        if (activation != "gelu")
            throw new HarpiaException($"{source}: activation '{activation}' is not supported (Falcon uses exact gelu)");

        int hidden = Int(c, source, "hidden_size", "n_embed") ?? throw Missing(source, "hidden_size");
        int heads = Int(c, source, "num_attention_heads", "n_head") ?? throw Missing(source, "num_attention_heads");
        int layers = Int(c, source, "num_hidden_layers", "n_layer") ?? throw Missing(source, "num_hidden_layers");
        int vocab = Int(c, source, "vocab_size") ?? throw Missing(source, "vocab_size");
        bool newArch = Bool(c, "new_decoder_architecture") ?? modelType == "RefinedWeb";
        bool multiQuery = Bool(c, "multi_query") ?? true;
        int? kvHeadsKey = Int(c, source, "num_kv_heads", "n_head_kv");
        // As modeling_falcon.py: the KV head count only applies to the new architecture; the classic one is
        // multi-query (one KV head) or full multi-head.
        int kvHeads = newArch ? kvHeadsKey ?? heads : multiQuery ? 1 : heads;
        bool parallel = Bool(c, "parallel_attn") ?? true;
        int numLn = newArch ? Int(c, source, "num_ln_in_parallel_attn") ?? 2 : 1;
        if (newArch && numLn == 1 && !parallel)
            throw new HarpiaException($"{source}: new_decoder_architecture with one layer norm and parallel_attn: false is not a valid Falcon layout");

        var config = new FalconConfig
        {
            HiddenSize = hidden, NumHeads = heads, NumKvHeads = kvHeads, NumLayers = layers, VocabSize = vocab,
            FfnHiddenSize = Int(c, source, "ffn_hidden_size") ?? (int)Math.Min(4L * hidden, int.MaxValue), // too large: Validate says so
            LayerNormEpsilon = (float)(Num(c, source, "layer_norm_epsilon") ?? 1e-5),
            RopeTheta = Num(c, source, "rope_theta") ?? 10000.0,
            MaxPositions = Int(c, source, "max_position_embeddings") ?? 2048,
            NewDecoderArchitecture = newArch, ParallelAttn = parallel, Bias = Bool(c, "bias") ?? false,
            NumLayerNormsInParallelAttn = numLn,
            TieWordEmbeddings = Bool(c, "tie_word_embeddings") ?? true,
            BosTokenId = Int(c, source, "bos_token_id") ?? 11, EosTokenId = Int(c, source, "eos_token_id") ?? 11,
            QkvLayout = newArch || multiQuery ? QkvLayout.PerKvGroup : QkvLayout.PerHeadTriplet,
        };
        config.Validate(source);
        return config;
    }

    /// <summary>Reads llama.cpp's <c>falcon.*</c> metadata; layout facts the metadata lacks come from the tensors.</summary>
    public static FalconConfig FromGguf(GgufFile gguf)
    {
        string arch = gguf.GetString("general.architecture") ?? throw new InvalidModelFileException(gguf.Path, "no general.architecture");
        if (arch != "falcon")
            throw new HarpiaException($"{gguf.Path}: architecture '{arch}' is not Falcon; Harpia runs Falcon-7B/40B/180B");
        int Req(string key) => gguf.GetInt32($"falcon.{key}") ?? throw new InvalidModelFileException(gguf.Path, $"missing metadata falcon.{key}");
        int hidden = Req("embedding_length");
        int heads = Req("attention.head_count");
        bool newArch = gguf.Tensors.ContainsKey("blk.0.attn_norm_2.weight");
        if (!gguf.Tensors.TryGetValue("token_embd.weight", out var embd))
            throw new InvalidModelFileException(gguf.Path, "tensor 'token_embd.weight' is missing");
        var config = new FalconConfig
        {
            HiddenSize = hidden, NumHeads = heads,
            NumKvHeads = gguf.GetInt32("falcon.attention.head_count_kv") ?? 1,
            NumLayers = Req("block_count"),
            VocabSize = embd.Shape[0] <= int.MaxValue ? (int)embd.Shape[0]
                : throw new InvalidModelFileException(gguf.Path, $"token_embd.weight rows = {embd.Shape[0]} is too large for a 32-bit vocabulary size"),
            FfnHiddenSize = gguf.GetInt32("falcon.feed_forward_length") ?? (int)Math.Min(4L * hidden, int.MaxValue),
            LayerNormEpsilon = (float)(gguf.GetFloat("falcon.attention.layer_norm_epsilon") ?? 1e-5),
            RopeTheta = gguf.GetFloat("falcon.rope.freq_base") ?? 10000.0,
            MaxPositions = gguf.GetInt32("falcon.context_length") ?? 2048,
            NewDecoderArchitecture = newArch, ParallelAttn = true,
            Bias = gguf.Tensors.ContainsKey("blk.0.attn_qkv.bias"),
            NumLayerNormsInParallelAttn = newArch ? 2 : 1,
            TieWordEmbeddings = !gguf.Tensors.ContainsKey("output.weight"),
            BosTokenId = gguf.GetInt32("tokenizer.ggml.bos_token_id") ?? 11,
            EosTokenId = gguf.GetInt32("tokenizer.ggml.eos_token_id") ?? 11,
            QkvLayout = QkvLayout.Grouped,
        };
        config.Validate(gguf.Path);
        return config;
    }

    /// <summary>The published shapes (for <c>harpia synth</c> and the planner).</summary>
    public static FalconConfig Preset(string name) => name.ToLowerInvariant() switch
    {
        "falcon-7b" => new FalconConfig
        {
            HiddenSize = 4544, NumHeads = 71, NumKvHeads = 1, NumLayers = 32, VocabSize = 65024, FfnHiddenSize = 4 * 4544,
            NewDecoderArchitecture = false, ParallelAttn = true, NumLayerNormsInParallelAttn = 1,
        },
        "falcon-40b" => new FalconConfig
        {
            HiddenSize = 8192, NumHeads = 128, NumKvHeads = 8, NumLayers = 60, VocabSize = 65024, FfnHiddenSize = 4 * 8192,
            NewDecoderArchitecture = true, ParallelAttn = true, NumLayerNormsInParallelAttn = 2,
        },
        "falcon-180b" => new FalconConfig
        {
            HiddenSize = 14848, NumHeads = 232, NumKvHeads = 8, NumLayers = 80, VocabSize = 65024, FfnHiddenSize = 4 * 14848,
            NewDecoderArchitecture = true, ParallelAttn = true, NumLayerNormsInParallelAttn = 2,
        },
        _ => throw new HarpiaException($"unknown shape '{name}' (falcon-7b, falcon-40b, falcon-180b)"),
    };

    /// <summary>The Hugging Face <c>config.json</c> for this configuration.</summary>
    public JsonObject ToHuggingFaceJson() => new()
    {
        ["alibi"] = false,
        ["architectures"] = new JsonArray("FalconForCausalLM"),
        ["attention_dropout"] = 0.0, ["hidden_dropout"] = 0.0,
        ["bias"] = Bias,
        ["bos_token_id"] = BosTokenId, ["eos_token_id"] = EosTokenId,
        ["hidden_size"] = HiddenSize,
        ["ffn_hidden_size"] = FfnHiddenSize,
        ["initializer_range"] = 0.02,
        ["layer_norm_epsilon"] = LayerNormEpsilon,
        ["max_position_embeddings"] = MaxPositions,
        ["model_type"] = "falcon",
        ["multi_query"] = NumKvHeads < NumHeads,
        ["new_decoder_architecture"] = NewDecoderArchitecture,
        ["num_attention_heads"] = NumHeads,
        ["num_hidden_layers"] = NumLayers,
        ["num_kv_heads"] = NumKvHeads,
        ["num_ln_in_parallel_attn"] = NewDecoderArchitecture ? NumLayerNormsInParallelAttn : null,
        ["parallel_attn"] = ParallelAttn,
        ["rope_scaling"] = null,
        ["rope_theta"] = RopeTheta,
        ["tie_word_embeddings"] = TieWordEmbeddings,
        ["torch_dtype"] = "bfloat16",
        ["use_cache"] = true,
        ["vocab_size"] = VocabSize,
    };

    public void Validate(string source)
    {
        void Check(bool ok, string problem) { if (!ok) throw new InvalidModelFileException(source, problem); }
        // Sizes far beyond any Falcon are refused by name before they reach arithmetic that would overflow.
        foreach (var (name, value, max) in (ReadOnlySpan<(string, int, int)>)[("hidden_size", HiddenSize, MaxDimension),
                     ("ffn_hidden_size", FfnHiddenSize, 4 * MaxDimension), ("vocab_size", VocabSize, MaxVocabulary),
                     ("num_hidden_layers", NumLayers, MaxLayers), ("num_attention_heads", NumHeads, MaxDimension)])
            Check(value <= max, $"{name} = {value} is too large for a Falcon model (at most {max:N0})");
        Check(HiddenSize > 0 && NumHeads > 0 && NumKvHeads > 0 && NumLayers > 0 && VocabSize > 0 && FfnHiddenSize > 0,
            "hidden size, head counts, layers, vocabulary and FFN size must all be positive");
        Check(HiddenSize % NumHeads == 0, $"hidden_size {HiddenSize} is not divisible by {NumHeads} heads");
        Check(HeadDim % 2 == 0, $"head dimension {HeadDim} must be even for rotary embeddings");
        Check(NumHeads % NumKvHeads == 0, $"{NumHeads} heads cannot be grouped over {NumKvHeads} KV heads");
        Check(QkvLayout != QkvLayout.PerHeadTriplet || NumKvHeads == NumHeads, "per-head [q, k, v] layout needs as many KV heads as heads");
        Check(LayerNormEpsilon > 0 && float.IsFinite(LayerNormEpsilon), "layer_norm_epsilon must be positive");
        Check(RopeTheta > 0 && double.IsFinite(RopeTheta), "rope_theta must be positive");
        Check(MaxPositions > 0, "max_position_embeddings must be positive");
        // A token id outside the vocabulary would index past the logits (or never match) at every step.
        Check(EosTokenId >= 0 && EosTokenId < VocabSize, $"eos_token_id = {EosTokenId} is outside the vocabulary (0 to {VocabSize - 1})");
        Check(BosTokenId >= 0 && BosTokenId < VocabSize, $"bos_token_id = {BosTokenId} is outside the vocabulary (0 to {VocabSize - 1})");
    }

    private const int MaxDimension = 1 << 20, MaxVocabulary = 1 << 24, MaxLayers = 4096;
}

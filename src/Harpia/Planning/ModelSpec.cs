using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text.Json;

namespace Harpia.Planning;

/// <summary>Layout families whose tensor list the planner can derive from a config alone.</summary>
public enum ModelFamily
{
    /// <summary>Falcon (and its RefinedWeb ancestors): fused QKV, LayerNorm with bias, GELU MLP (up, down).</summary>
    Falcon,
    /// <summary>Llama, Mistral: separate q/k/v/o, RMSNorm (weight only), gated MLP (gate, up, down).</summary>
    LlamaStyle,
}

/// <summary>What a weight tensor does; the quantization recipes pick a type per role (as llama.cpp does).</summary>
public enum TensorRole { TokenEmbedding, OutputHead, AttnQkv, AttnQ, AttnK, AttnV, AttnOutput, FfnUp, FfnGate, FfnDown, Norm, Bias }

/// <summary>
/// One weight tensor: <see cref="Cols"/> is the input dimension (ggml's ne[0], the row length that a
/// block quantizer walks), <see cref="Rows"/> the output dimension. <see cref="Layer"/> is -1 outside the blocks.
/// </summary>
public readonly record struct ModelTensor(TensorRole Role, int Layer, long Rows, long Cols)
{
    public long Elements => Rows * Cols;
}

/// <summary>
/// The shape of a decoder-only model, enough to count its parameters, size its KV cache and list its tensors.
/// Everything is computed from the config; nothing is looked up by model name.
/// </summary>
public sealed record ModelSpec
{
    public required string Name { get; init; }
    public required ModelFamily Family { get; init; }
    public required int Layers { get; init; }
    public required int Hidden { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int FfnHidden { get; init; }
    public required int Vocab { get; init; }
    /// <summary>True when the output head shares the token embedding matrix (no separate lm_head stored).</summary>
    public required bool TiedHead { get; init; }
    public required int MaxPositions { get; init; }
    /// <summary>Linear layers carry bias vectors (Falcon's <c>bias</c> flag).</summary>
    public bool LinearBias { get; init; }
    /// <summary>Llama-style models: bias elements per layer (attention_bias: q, k, v, o; Qwen2: q, k, v; mlp_bias: gate, up, down).</summary>
    public long LlamaBiasPerLayer { get; init; }
    /// <summary>Norms per decoder block: Falcon-7B has one (parallel attention), 40B/180B two (ln_attn, ln_mlp).</summary>
    public int NormsPerLayer { get; init; } = 2;
    /// <summary>LayerNorm has weight and bias; RMSNorm has a weight only.</summary>
    public bool NormHasBias { get; init; } = true;

    /// <summary>
    /// When the spec was read from a GGUF file: its tensors as stored (GGUF name → element type and bytes). Null for
    /// configs and presets.
    /// </summary>
    public IReadOnlyDictionary<string, StoredTensor>? Stored { get; init; }

    /// <summary>The stored file's format ("Q4_K_M", "F16", …) when <see cref="Stored"/> is set.</summary>
    public string? StoredFormat { get; init; }

    /// <summary>What <see cref="Stored"/> was read from, for messages: "a GGUF file", "a GPTQ checkpoint", ….</summary>
    public string StoredKind { get; init; } = "a GGUF file";

    /// <summary>
    /// True when the weights exist only in an already-quantized file (a quantized GGUF): the precision they have is the
    /// file's, and no more precise format can be recovered from it.
    /// </summary>
    public bool IsStoredQuantized => Stored is not null && Stored.Values.Any(t => t.Rank >= 2 && !IsFloat(t.Type));

    private static bool IsFloat(Harpia.Tensors.GgmlType t) =>
        t is Harpia.Tensors.GgmlType.F32 or Harpia.Tensors.GgmlType.F16 or Harpia.Tensors.GgmlType.BF16 or Harpia.Tensors.GgmlType.F64;

    /// <summary>Width of the fused QKV projection output: (heads + 2·kv heads)·head_dim.</summary>
    public long QkvWidth => (long)(Heads + 2 * KvHeads) * HeadDim;

    /// <summary>Query heads sharing one KV head (llama.cpp's n_gqa).</summary>
    public int GroupSize => KvHeads == 0 ? 0 : Heads / KvHeads;

    public long ParameterCount => Tensors().Sum(t => t.Elements);

    /// <summary>KV-cache elements stored per token: K and V, every layer, every KV head.</summary>
    public long KvElementsPerToken => 2L * Layers * KvHeads * HeadDim;

    /// <summary>KV cache in bytes for <paramref name="tokens"/> tokens of each of <paramref name="sequences"/> sequences.</summary>
    public long KvCacheBytes(long tokens, int sequences, double bytesPerElement) =>
        (long)Math.Ceiling(KvElementsPerToken * tokens * sequences * bytesPerElement);

    /// <summary>
    /// Rejects shapes no real model has (and that would overflow the byte arithmetic), naming the field.
    /// Limits are far above any released model: hidden 1,048,576, layers 65,536, vocabulary 16,777,216.
    /// </summary>
    public ModelSpec Validated(string source)
    {
        static void Check(bool ok, string source, string what) { if (!ok) throw new HarpiaException($"{source}: {what}"); }
        Check(Hidden is > 0 and <= 1 << 20, source, $"hidden size {Hidden} is out of range (1 to 1,048,576)");
        Check(Layers is > 0 and <= 1 << 16, source, $"layer count {Layers} is out of range (1 to 65,536)");
        Check(Vocab is > 0 and <= 1 << 24, source, $"vocabulary {Vocab} is out of range (1 to 16,777,216)");
        Check(FfnHidden is > 0 and <= 1 << 24, source, $"FFN size {FfnHidden} is out of range (1 to 16,777,216)");
        Check(Heads is > 0 && Heads <= Hidden, source, $"head count {Heads} is out of range (1 to hidden size)");
        Check(KvHeads is > 0 && KvHeads <= Heads, source, $"KV head count {KvHeads} is out of range (1 to head count)");
        Check(HeadDim is > 0 and <= 1 << 16, source, $"head dim {HeadDim} is out of range");
        Check(NormsPerLayer is >= 0 and <= 4, source, $"norms per layer {NormsPerLayer} is out of range (0 to 4)");
        return this;
    }

    /// <summary>Every weight tensor of the model, in file order (embedding, blocks, final norm, head).</summary>
    public IEnumerable<ModelTensor> Tensors()
    {
        long h = Hidden, f = FfnHidden, normParams = NormHasBias ? 2 : 1;
        yield return new ModelTensor(TensorRole.TokenEmbedding, -1, Vocab, h);
        for (int i = 0; i < Layers; i++)
        {
            for (int n = 0; n < NormsPerLayer; n++) yield return new ModelTensor(TensorRole.Norm, i, normParams, h);
            if (Family == ModelFamily.Falcon)
            {
                yield return new ModelTensor(TensorRole.AttnQkv, i, QkvWidth, h);
                yield return new ModelTensor(TensorRole.AttnOutput, i, h, (long)Heads * HeadDim);
                yield return new ModelTensor(TensorRole.FfnUp, i, f, h);
                yield return new ModelTensor(TensorRole.FfnDown, i, h, f);
                if (LinearBias)
                    yield return new ModelTensor(TensorRole.Bias, i, 1, QkvWidth + h + f + h);
            }
            else
            {
                yield return new ModelTensor(TensorRole.AttnQ, i, (long)Heads * HeadDim, h);
                yield return new ModelTensor(TensorRole.AttnK, i, (long)KvHeads * HeadDim, h);
                yield return new ModelTensor(TensorRole.AttnV, i, (long)KvHeads * HeadDim, h);
                yield return new ModelTensor(TensorRole.AttnOutput, i, h, (long)Heads * HeadDim);
                yield return new ModelTensor(TensorRole.FfnGate, i, f, h);
                yield return new ModelTensor(TensorRole.FfnUp, i, f, h);
                yield return new ModelTensor(TensorRole.FfnDown, i, h, f);
                if (LlamaBiasPerLayer > 0)
                    yield return new ModelTensor(TensorRole.Bias, i, 1, LlamaBiasPerLayer);
            }
        }
        yield return new ModelTensor(TensorRole.Norm, -1, normParams, h);
        if (!TiedHead) yield return new ModelTensor(TensorRole.OutputHead, -1, Vocab, h);
    }

    // ---------------------------------------------------------------- presets

    public static IReadOnlyList<string> PresetNames { get; } = ["falcon-7b", "falcon-40b", "falcon-180b"];

    /// <summary>A preset: the model's real config.json, embedded as <c>Harpia.Planning.Data.&lt;name&gt;.config.json</c>.</summary>
    public static ModelSpec FromPreset(string name)
    {
        string key = name.Trim().ToLowerInvariant();
        if (!PresetNames.Contains(key))
            throw new HarpiaException($"unknown model preset '{name}': use one of {string.Join(", ", PresetNames)}, or a path to a config.json, a model folder or a .gguf file");
        return FromConfigJson(EmbeddedData.ReadText($"{key}.config.json"), key) with { Name = key };
    }

    /// <summary>A preset name, a config.json, a model folder holding one, or a .gguf file.</summary>
    public static ModelSpec Resolve(string modelArgument)
    {
        if (PresetNames.Contains(modelArgument.Trim().ToLowerInvariant())) return FromPreset(modelArgument);
        string path = modelArgument;
        if (Directory.Exists(path))
        {
            string config = Path.Combine(path, "config.json");
            if (File.Exists(config)) return WithCheckpointQuantization(FromConfigFile(config), path);
            // A gguf-split set opens from its first shard, a byte-split set from its -split-a piece: both sort first.
            var gguf = Directory.GetFiles(path).Where(IsGgufFileName).OrderBy(p => p, StringComparer.Ordinal).FirstOrDefault();
            if (gguf is not null) return FromGgufFile(gguf);
            throw new HarpiaException($"{path}: folder has no config.json and no .gguf file");
        }
        if (File.Exists(path))
            return IsGgufFileName(path) ? FromGgufFile(path) : FromConfigFile(path);
        throw new HarpiaException($"unknown model '{modelArgument}': not a preset ({string.Join(", ", PresetNames)}) and no such file or folder");
    }

    /// <summary>A .gguf file, or a piece of a byte-split one (<c>….gguf-split-a</c>).</summary>
    private static bool IsGgufFileName(string path) =>
        path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) || Harpia.Formats.GgufFile.IsBytePart(path);

    /// <summary>Reads the spec from a GGUF file's header (metadata and tensor names only; no weights are read).</summary>
    /// <remarks>
    /// Named by <c>general.name</c> when the file has one, else by the file stem. The tensors' stored types and sizes are
    /// kept (<see cref="Stored"/>), so an already-quantized file is planned as it is.
    /// </remarks>
    public static ModelSpec FromGgufFile(string path)
    {
        using var gguf = Harpia.Formats.GgufFile.Open(path);
        string stem = Path.GetFileNameWithoutExtension(path);
        string name = gguf.GetString("general.name") is { } n && !string.IsNullOrWhiteSpace(n) ? n.Trim() : stem;
        var stored = gguf.Tensors.Values.ToDictionary(t => t.Name, t => new StoredTensor(t.Type, t.ByteLength, t.Shape.Length), StringComparer.Ordinal);
        return FromGgufMetadata(gguf.Metadata, name, hasOutputTensor: gguf.Tensors.ContainsKey("output.weight")) with
        {
            Stored = stored, StoredFormat = StoredFormatOf(gguf.GetInteger("general.file_type"), stem, stored),
        };
    }

    /// <summary>
    /// A GPTQ or bitsandbytes 4-bit checkpoint folder (<c>quantization_config</c> in config.json, or quantize_config.json)
    /// is planned as stored, like a quantized GGUF: each linear's bytes are the sum of the tensors that store it
    /// (qweight, qzeros, scales, g_idx; or the 4-bit codes, absmax, maps and quant state), read from the safetensors
    /// headers, so the bits per parameter are the checkpoint's own. Any other folder keeps <paramref name="spec"/>.
    /// </summary>
    internal static ModelSpec WithCheckpointQuantization(ModelSpec spec, string folder)
    {
        var quantization = Harpia.Quantization.CheckpointQuantization.Detect(folder);
        if (quantization is null || !Harpia.Formats.SafetensorsCheckpoint.IsCheckpointFolder(folder)) return spec;
        using var source = Harpia.Formats.SafetensorsCheckpoint.Open(folder);
        var sums = new Dictionary<string, (Harpia.Tensors.GgmlType Type, long Bytes)>(StringComparer.Ordinal);
        string? bnbType = null;
        bool nested = false;
        foreach (var t in source.Tensors.Values)
        {
            if (GgufNameOfCheckpointTensor(t.Name) is not { } gguf) continue;
            var type = t.Name.EndsWith(".qweight", StringComparison.Ordinal) ? Harpia.Tensors.GgmlType.GPTQ
                : t.Name.EndsWith(".weight", StringComparison.Ordinal) && t.Type == Harpia.Tensors.GgmlType.U8 ? Harpia.Tensors.GgmlType.BNB_4BIT
                : t.Type;
            if (t.Name.Contains(".quant_state.bitsandbytes__", StringComparison.Ordinal)) bnbType ??= t.Name[(t.Name.LastIndexOf("__", StringComparison.Ordinal) + 2)..].ToUpperInvariant();
            if (t.Name.EndsWith(".nested_absmax", StringComparison.Ordinal)) nested = true;
            var have = sums.GetValueOrDefault(gguf, (type, 0));
            // The packed weight names the type; its companions (scales, zeros, absmax, maps) only add bytes.
            sums[gguf] = (type is Harpia.Tensors.GgmlType.GPTQ or Harpia.Tensors.GgmlType.BNB_4BIT ? type : have.Type, have.Bytes + t.ByteLength);
        }
        string format = quantization switch
        {
            Harpia.Quantization.GptqCheckpoint g => $"GPTQ {g.Config.Bits}-bit " + (g.Config.GroupSize < 0 ? "no groups" : $"g{g.Config.GroupSize}")
                                                    + (g.Config.DescAct ? " act-order" : ""),
            _ => $"bitsandbytes {bnbType ?? "4-bit"}" + (nested ? " (double quant)" : ""),
        };
        return spec with
        {
            Stored = sums.ToDictionary(p => p.Key, p => new StoredTensor(p.Value.Type, p.Value.Bytes, 2), StringComparer.Ordinal),
            StoredFormat = format,
            StoredKind = quantization is Harpia.Quantization.GptqCheckpoint ? "a GPTQ checkpoint" : "a bitsandbytes checkpoint",
        };
    }

    /// <summary>
    /// llama.cpp's name for the matrix a Hugging Face checkpoint tensor belongs to (Falcon and Llama layouts), e.g.
    /// <c>transformer.h.3.mlp.dense_4h_to_h.qzeros</c> → <c>blk.3.ffn_down.weight</c>; null for norms, biases and
    /// tensors of no matrix.
    /// </summary>
    internal static string? GgufNameOfCheckpointTensor(string name)
    {
        if (name.EndsWith(".bias", StringComparison.Ordinal)) return null;
        if (name.StartsWith("transformer.word_embeddings.", StringComparison.Ordinal) || name.StartsWith("model.embed_tokens.", StringComparison.Ordinal))
            return "token_embd.weight";
        if (name.StartsWith("lm_head.", StringComparison.Ordinal)) return "output.weight";
        var m = System.Text.RegularExpressions.Regex.Match(name, @"^(?:transformer\.h|model\.layers)\.(\d+)\.([a-z_]+\.[a-z_0-9]+)\.");
        if (!m.Success) return null;
        string? matrix = m.Groups[2].Value switch
        {
            "self_attention.query_key_value" => "attn_qkv",
            "self_attention.dense" or "self_attn.o_proj" => "attn_output",
            "mlp.dense_h_to_4h" or "mlp.up_proj" => "ffn_up",
            "mlp.dense_4h_to_h" or "mlp.down_proj" => "ffn_down",
            "mlp.gate_proj" => "ffn_gate",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            _ => null,
        };
        return matrix is null ? null : $"blk.{m.Groups[1].Value}.{matrix}.weight";
    }

    /// <summary>
    /// The file's format name: from <c>general.file_type</c> when it is a type Harpia names, else a format named in the
    /// file name (model-Q4_K_M.gguf), else the type holding most of the 2-D weights.
    /// </summary>
    internal static string StoredFormatOf(long? fileType, string stem, IReadOnlyDictionary<string, StoredTensor> stored)
    {
        var schemes = Harpia.Quantization.QuantizationScheme.All;
        if (fileType is long ft && schemes.FirstOrDefault(q => (long)q.FileType == ft) is { } byType) return byType.Name;
        string upper = stem.ToUpperInvariant().Replace('-', '_').Replace('.', '_');
        var named = schemes.Where(q => ContainsToken(upper, q.Name)).OrderByDescending(q => q.Name.Length).FirstOrDefault();
        if (named is not null) return named.Name;
        var dominant = stored.Values.Where(t => t.Rank >= 2).GroupBy(t => t.Type).OrderByDescending(g => g.Sum(t => t.Bytes)).FirstOrDefault();
        return dominant?.Key.ToString() ?? "unknown";

        static bool ContainsToken(string text, string token)
        {
            for (int i = text.IndexOf(token, StringComparison.Ordinal); i >= 0; i = text.IndexOf(token, i + 1, StringComparison.Ordinal))
            {
                bool startOk = i == 0 || !char.IsLetterOrDigit(text[i - 1]);
                int end = i + token.Length;
                bool endOk = end == text.Length || !char.IsLetterOrDigit(text[end]);
                if (startOk && endOk) return true;
            }
            return false;
        }
    }

    public static ModelSpec FromConfigFile(string path)
    {
        string text;
        try { text = System.Text.Encoding.UTF8.GetString(Formats.UntrustedFile.ReadAllBytes(path, "config", 1 << 20)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new HarpiaException($"{path}: cannot read config: {e.Message}"); }
        return FromConfigJson(text, path) with { Name = NameForConfigFile(path) };
    }

    /// <summary>
    /// A config.json is named by its folder (models/falcon-40b/config.json → falcon-40b); a config with a name of its
    /// own by its file stem, less a leading "config-" (fixtures/config-falcon-40b.json → falcon-40b).
    /// </summary>
    public static string NameForConfigFile(string path)
    {
        string full = Path.GetFullPath(path);
        string file = Path.GetFileName(full);
        if (!string.Equals(file, "config.json", StringComparison.OrdinalIgnoreCase))
        {
            string stem = Path.GetFileNameWithoutExtension(file);
            if (stem.StartsWith("config-", StringComparison.OrdinalIgnoreCase) && stem.Length > "config-".Length) stem = stem["config-".Length..];
            if (stem.Length > 0) return stem;
        }
        return Path.GetFileName(Path.GetDirectoryName(full)) is { Length: > 0 } folder ? folder : "model";
    }

    /// <summary>Parses a Hugging Face config.json. <paramref name="source"/> names the file in error messages.</summary>
    public static ModelSpec FromConfigJson(string json, string source = "config.json")
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new HarpiaException($"{source}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new HarpiaException($"{source}: expected a JSON object");
            var cfg = new ConfigReader(root, source);
            string modelType = cfg.String("model_type") ?? InferModelType(root) ?? throw new HarpiaException($"{source}: missing field 'model_type'");
            string name = cfg.String("_name_or_path") is { Length: > 0 } n ? n.Split('/')[^1].ToLowerInvariant() : modelType;
            var spec = modelType.ToLowerInvariant() switch
            {
                "falcon" or "refinedweb" or "refinedwebmodel" => FalconFromConfig(cfg, name),
                "llama" or "mistral" or "qwen2" => LlamaFromConfig(cfg, name, modelType.ToLowerInvariant()),
                _ => throw new HarpiaException($"{source}: model_type '{modelType}' is not supported by the planner (supported: falcon, llama, mistral, qwen2)"),
            };
            return spec.Validated(source);
        }
    }

    private static string? InferModelType(JsonElement root)
    {
        if (root.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array)
            foreach (var e in a.EnumerateArray())
                if (e.ValueKind == JsonValueKind.String && e.GetString() is { } s)
                {
                    if (s.StartsWith("Falcon", StringComparison.Ordinal) || s.StartsWith("RW", StringComparison.Ordinal)) return "falcon";
                    if (s.StartsWith("Llama", StringComparison.Ordinal)) return "llama";
                    if (s.StartsWith("Mistral", StringComparison.Ordinal)) return "mistral";
                    if (s.StartsWith("Qwen2", StringComparison.Ordinal)) return "qwen2";
                }
        return null;
    }

    private static ModelSpec FalconFromConfig(ConfigReader cfg, string name)
    {
        // Older RefinedWeb configs spell the fields n_embed / n_head / n_layer / n_head_kv.
        int hidden = cfg.Int("hidden_size", "n_embed");
        int heads = cfg.Int("num_attention_heads", "n_head");
        int layers = cfg.Int("num_hidden_layers", "n_layer");
        int vocab = cfg.Int("vocab_size");
        bool newArch = cfg.Bool("new_decoder_architecture") ?? false;
        bool multiQuery = cfg.Bool("multi_query") ?? true;
        bool parallel = cfg.Bool("parallel_attn") ?? true;
        int? kvField = cfg.OptionalInt("num_kv_heads", "n_head_kv");
        // As modeling_falcon.py: the new architecture uses num_kv_heads; otherwise multi_query means ONE shared
        // K/V head, whatever num_kv_heads says (Falcon-7B's config says 71 but its fused QKV is H + 2·64 wide).
        int kv = newArch ? kvField ?? heads : multiQuery ? 1 : heads;
        cfg.Require(hidden % heads == 0, "hidden_size", $"{hidden} is not a multiple of num_attention_heads {heads}");
        cfg.Require(kv >= 1 && heads % kv == 0, "num_kv_heads", $"{kv} does not divide num_attention_heads {heads}");
        int ffn = cfg.OptionalInt("ffn_hidden_size") ?? 4 * hidden;
        int norms = newArch ? cfg.OptionalInt("num_ln_in_parallel_attn") ?? 2 : parallel ? 1 : 2;
        return new ModelSpec
        {
            Name = name, Family = ModelFamily.Falcon, Layers = layers, Hidden = hidden, Heads = heads, KvHeads = kv,
            HeadDim = hidden / heads, FfnHidden = ffn, Vocab = vocab,
            TiedHead = cfg.Bool("tie_word_embeddings") ?? true,
            MaxPositions = cfg.OptionalInt("max_position_embeddings") ?? 2048,
            LinearBias = cfg.Bool("bias") ?? false, NormsPerLayer = norms, NormHasBias = true,
        };
    }

    /// <summary>
    /// Llama, Mistral, Qwen2 (and Falcon3, a Llama): explicit head_dim where given (Falcon3, Mistral-Nemo), else
    /// hidden / heads; biases as transformers creates them (attention_bias on q, k, v and o; Qwen2 always on q, k, v;
    /// mlp_bias on gate, up and down). Defaults are transformers' config classes'.
    /// </summary>
    private static ModelSpec LlamaFromConfig(ConfigReader cfg, string name, string modelType)
    {
        int hidden = cfg.Int("hidden_size");
        int heads = cfg.Int("num_attention_heads");
        int kv = cfg.OptionalInt("num_key_value_heads") ?? heads;
        int? explicitHeadDim = cfg.OptionalInt("head_dim");
        cfg.Require(hidden % heads == 0 || explicitHeadDim is not null, "hidden_size", $"{hidden} is not a multiple of num_attention_heads {heads}");
        cfg.Require(kv >= 1 && heads % kv == 0, "num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}");
        int headDim = explicitHeadDim ?? hidden / heads;
        int ffn = cfg.Int("intermediate_size");
        long q = (long)heads * headDim, kvWidth = (long)kv * headDim;
        bool attentionBias = cfg.Bool("attention_bias") ?? false;
        long bias = (attentionBias ? q + 2 * kvWidth + hidden : modelType == "qwen2" ? q + 2 * kvWidth : 0)
                  + ((cfg.Bool("mlp_bias") ?? false) ? 2L * ffn + hidden : 0);
        return new ModelSpec
        {
            Name = name, Family = ModelFamily.LlamaStyle, Layers = cfg.Int("num_hidden_layers"), Hidden = hidden,
            Heads = heads, KvHeads = kv, HeadDim = headDim,
            FfnHidden = ffn, Vocab = cfg.Int("vocab_size"),
            TiedHead = cfg.Bool("tie_word_embeddings") ?? false,
            MaxPositions = cfg.OptionalInt("max_position_embeddings") ?? modelType switch { "mistral" => 131072, "qwen2" => 32768, _ => 2048 },
            LinearBias = bias > 0, LlamaBiasPerLayer = bias, NormsPerLayer = 2, NormHasBias = false,
        };
    }

    /// <summary>
    /// Builds the spec from GGUF metadata (keys as llama.cpp writes them). The vocabulary is the length of
    /// <c>tokenizer.ggml.tokens</c>. GGUF Falcon files from llama.cpp store no separate output tensor, so the
    /// head is tied unless <paramref name="hasOutputTensor"/> says otherwise.
    /// </summary>
    public static ModelSpec FromGgufMetadata(IReadOnlyDictionary<string, object> metadata, string name = "gguf-model", bool? hasOutputTensor = null)
    {
        const string src = "GGUF metadata";
        string arch = metadata.TryGetValue("general.architecture", out var a) && a is string s ? s
            : throw new HarpiaException($"{src}: missing string key 'general.architecture'");
        if (arch is not ("falcon" or "llama" or "qwen2"))
            throw new HarpiaException($"{src}: architecture '{arch}' is not supported by the planner (supported: falcon, llama, qwen2)");
        int Get(string key, int? fallback = null)
        {
            string full = $"{arch}.{key}";
            if (!metadata.TryGetValue(full, out var v)) return fallback ?? throw new HarpiaException($"{src}: missing key '{full}'");
            try
            {
                long value = Convert.ToInt64(v, CultureInfo.InvariantCulture);
                if (value <= 0 || value > int.MaxValue) throw new HarpiaException($"{src}: key '{full}' = {value} is out of range");
                return (int)value;
            }
            catch (Exception e) when (e is InvalidCastException or FormatException or OverflowException)
            { throw new HarpiaException($"{src}: key '{full}' is not an integer"); }
        }
        int hidden = Get("embedding_length"), heads = Get("attention.head_count");
        int kv = Get("attention.head_count_kv", heads);
        // Falcon3 and Mistral-Nemo store heads × head size ≠ hidden: llama.cpp writes the head size as attention.key_length.
        bool hasKeyLength = metadata.ContainsKey($"{arch}.attention.key_length");
        int headDim = hasKeyLength ? Get("attention.key_length") : hidden / Math.Max(1, heads);
        if (!hasKeyLength && hidden % heads != 0) throw new HarpiaException($"{src}: embedding_length {hidden} is not a multiple of head_count {heads}");
        if (heads % kv != 0) throw new HarpiaException($"{src}: head_count_kv {kv} does not divide head_count {heads}");
        int vocab = metadata.TryGetValue("tokenizer.ggml.tokens", out var toks) ? toks switch
        {
            ICollection c => c.Count,
            IEnumerable<string> e => e.Count(),
            _ => throw new HarpiaException($"{src}: 'tokenizer.ggml.tokens' is not an array"),
        } : metadata.TryGetValue($"{arch}.vocab_size", out _) ? Get("vocab_size")
          : throw new HarpiaException($"{src}: missing 'tokenizer.ggml.tokens' (needed for the vocabulary size)");
        bool falcon = arch == "falcon";
        var spec = new ModelSpec
        {
            Name = name, Family = falcon ? ModelFamily.Falcon : ModelFamily.LlamaStyle,
            Layers = Get("block_count"), Hidden = hidden, Heads = heads, KvHeads = kv, HeadDim = headDim,
            FfnHidden = Get("feed_forward_length", falcon ? 4 * hidden : null), Vocab = vocab,
            TiedHead = hasOutputTensor is bool has ? !has : falcon,
            MaxPositions = Get("context_length", 2048),
            // llama.cpp's Falcon graph uses attn_norm_2 exactly in the grouped-KV (40B/180B) layout.
            NormsPerLayer = falcon ? (kv > 1 ? 2 : 1) : 2, NormHasBias = falcon,
        };
        return spec.Validated(src);
    }

    /// <summary>Typed access to config fields with errors that name the file and the field.</summary>
    private readonly struct ConfigReader(JsonElement root, string source)
    {
        private JsonElement? Find(params string[] keys)
        {
            foreach (var k in keys)
                if (root.TryGetProperty(k, out var v) && v.ValueKind != JsonValueKind.Null) return v;
            return null;
        }

        public string? String(string key) => Find(key) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

        public bool? Bool(string key) => Find(key) switch
        {
            null => null,
            { ValueKind: JsonValueKind.True } => true,
            { ValueKind: JsonValueKind.False } => false,
            _ => throw new HarpiaException($"{source}: field '{key}' must be true or false"),
        };

        public int? OptionalInt(params string[] keys)
        {
            if (Find(keys) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
                throw new HarpiaException($"{source}: field '{keys[0]}' must be a whole number");
            if (x <= 0 || x > int.MaxValue)
                throw new HarpiaException($"{source}: field '{keys[0]}' = {x} is out of range");
            return (int)x;
        }

        public int Int(params string[] keys) =>
            OptionalInt(keys) ?? throw new HarpiaException($"{source}: missing field '{keys[0]}'");

        public void Require(bool ok, string field, string problem)
        {
            if (!ok) throw new HarpiaException($"{source}: field '{field}': {problem}");
        }
    }
}

/// <summary>One tensor of a GGUF file as stored: its element type, its bytes and its rank (1 for norms and biases).</summary>
public readonly record struct StoredTensor(Harpia.Tensors.GgmlType Type, long Bytes, int Rank);

/// <summary>Reads the planner's embedded data files (logical names <c>Harpia.Planning.Data.&lt;file&gt;</c>).</summary>
internal static class EmbeddedData
{
    public static string ReadText(string file)
    {
        string name = "Harpia.Planning.Data." + file;
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded resource {name} is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

using Harpia.Tensors;

namespace Harpia.Planning;

/// <summary>Bytes of a model's weights in one storage format, with the split by element type.</summary>
public sealed record WeightsSize(long Bytes, IReadOnlyDictionary<string, long> BytesByType)
{
    public double BitsPerWeight(long parameters) => parameters == 0 ? 0 : Bytes * 8.0 / parameters;
}

/// <summary>
/// A way of storing the weights. Sizes are computed tensor by tensor from the model's shapes and the format's
/// real layout (block scales, zero points, group indices, the tensors a recipe keeps at higher precision).
/// </summary>
public abstract class Precision
{
    public abstract string Id { get; }
    public abstract string Label { get; }
    /// <summary>Where this format comes from and how its size is counted (shown in the docs and markdown).</summary>
    public abstract string Method { get; }
    public virtual IReadOnlyList<string> Aliases => [];

    /// <summary>The parts (element type, bytes) that store one tensor in this format.</summary>
    public abstract IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor tensor);

    public WeightsSize Weights(ModelSpec model)
    {
        var byType = new Dictionary<string, long>();
        foreach (var t in model.Tensors())
            foreach (var (type, bytes) in Store(model, t)) Add(byType, type, bytes);
        return new WeightsSize(byType.Values.Sum(), byType);
    }

    /// <summary>
    /// Bytes streamed from memory to produce one token: every weight except an untied token embedding, of which
    /// decoding reads one row (a tied embedding is read whole, as the output head).
    /// </summary>
    public long DecodeReadBytes(ModelSpec model) => model.Tensors()
        .Where(t => t.Role != TensorRole.TokenEmbedding || model.TiedHead)
        .Sum(t => Store(model, t).Sum(p => p.Bytes));

    public override string ToString() => Label;

    /// <summary>All formats the planner knows, most precise first.</summary>
    public static IReadOnlyList<Precision> All { get; } =
    [
        new DensePrecision("bf16", "BF16", 16, "Hugging Face checkpoint: every tensor 2 bytes."),
        new Int8Precision(),
        new GgufMix(GgufFileType.Q8_0),
        new GgufMix(GgufFileType.Q6_K),
        new GgufMix(GgufFileType.Q5_K_M),
        new GgufMix(GgufFileType.Q4_K_M),
        new GptqPrecision(128),
        new GptqPrecision(-1),
        new Nf4Precision(),
        new GgufMix(GgufFileType.Q3_K_M),
        new GgufMix(GgufFileType.Q2_K),
    ];

    /// <summary>
    /// The precisions worth planning for <paramref name="model"/>: every format, except for a model that exists only as
    /// an already-quantized file, which has exactly one — its own (<see cref="AsStored"/>).
    /// </summary>
    public static IReadOnlyList<Precision> For(ModelSpec model) => model.IsStoredQuantized ? [AsStored(model)] : All;

    /// <summary>A GGUF file's weights exactly as stored (types and bytes read from the file).</summary>
    public static Precision AsStored(ModelSpec model) =>
        model.Stored is null ? throw new ArgumentException("the model was not read from a file", nameof(model)) : new StoredPrecision(model.StoredFormat ?? "unknown");

    public static Precision Parse(string name)
    {
        string key = name.Trim().ToLowerInvariant();
        return All.FirstOrDefault(p => p.Id == key || p.Aliases.Contains(key))
            ?? throw new HarpiaException($"unknown precision '{name}': use one of {string.Join(", ", All.Select(p => p.Id))}");
    }

    /// <summary>True for the Linear weights that GPTQ / bitsandbytes quantize (not embeddings, head or norms).</summary>
    protected static bool IsBlockLinear(TensorRole role) => role is TensorRole.AttnQkv or TensorRole.AttnQ or TensorRole.AttnK
        or TensorRole.AttnV or TensorRole.AttnOutput or TensorRole.FfnUp or TensorRole.FfnGate or TensorRole.FfnDown;

    protected static void Add(Dictionary<string, long> byType, string type, long bytes) =>
        byType[type] = byType.GetValueOrDefault(type) + bytes;
}

/// <summary>Every tensor at a fixed width (bf16 / f16 / f32).</summary>
internal sealed class DensePrecision(string id, string label, int bits, string method) : Precision
{
    public override string Id => id;
    public override string Label => label;
    public override string Method => method;
    public override IReadOnlyList<string> Aliases => id == "bf16" ? ["f16", "fp16", "bfloat16"] : [];

    public override IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor t)
    {
        yield return (label, t.Elements * bits / 8);
    }
}

/// <summary>bitsandbytes LLM.int8: Linear weights int8 with one fp32 scale per output row; the rest stays bf16.</summary>
internal sealed class Int8Precision : Precision
{
    public override string Id => "int8";
    public override string Label => "int8 (LLM.int8)";
    public override string Method => "bitsandbytes LLM.int8: block Linear weights 1 byte + fp32 row scale (SCB); embedding, untied head and norms stay bf16.";
    public override IReadOnlyList<string> Aliases => ["llm.int8", "bnb-int8"];

    public override IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor t)
    {
        if (!IsBlockLinear(t.Role)) { yield return ("bf16", t.Elements * 2); yield break; }
        yield return ("int8", t.Elements);
        yield return ("f32 row scales", t.Rows * 4);
    }
}

/// <summary>
/// AutoGPTQ 4-bit: qweight 4 bits/weight; per group of <c>groupSize</c> input columns and per output column an fp16
/// scale and a 4-bit zero point (packed qzeros); an int32 g_idx per input column. Group size -1 means one group
/// spanning the whole row (the guide's <c>gptq-4bit--1g-actorder_True</c>). Embedding, head and norms stay fp16.
/// </summary>
internal sealed class GptqPrecision(int groupSize) : Precision
{
    public override string Id => groupSize > 0 ? $"gptq-4bit-{groupSize}g" : "gptq-4bit";
    public override string Label => groupSize > 0 ? $"GPTQ 4-bit g{groupSize}" : "GPTQ 4-bit (no groups)";
    public override string Method => $"AutoGPTQ layout: 4-bit qweight + per-group fp16 scale and 4-bit zero ({(groupSize > 0 ? $"group {groupSize}" : "one group per row")}) + int32 g_idx per input column; embedding, head, norms fp16.";
    public override IReadOnlyList<string> Aliases => groupSize > 0
        ? ["gptq", $"gptq-4bit-g{groupSize}", $"gptq-4bit-{groupSize}g-actorder_true"]
        : ["gptq-4bit--1g", "gptq-4bit--1g-actorder_true", "gptq-4bit-nogroup"];

    public override IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor t)
    {
        if (!IsBlockLinear(t.Role)) { yield return ("fp16", t.Elements * 2); yield break; }
        long groups = groupSize > 0 ? (t.Cols + groupSize - 1) / groupSize : 1;
        yield return ("int4 qweight", (t.Elements + 1) / 2);
        yield return ("fp16 scales + int4 zeros", groups * t.Rows * 2 + (groups * t.Rows + 1) / 2);
        yield return ("int32 g_idx", t.Cols * 4);
    }
}

/// <summary>
/// bitsandbytes NF4 with double quantization: 4-bit codes; each block of 64 weights has an absmax stored as an
/// 8-bit code, with one fp32 scale per 256 absmax codes. Embedding, head and norms stay bf16.
/// </summary>
internal sealed class Nf4Precision : Precision
{
    public override string Id => "nf4";
    public override string Label => "NF4 (double quant)";
    public override string Method => "bitsandbytes NF4, double quant: 4-bit codes, 8-bit absmax per 64 weights, fp32 scale per 256 absmax; embedding, head, norms bf16.";
    public override IReadOnlyList<string> Aliases => ["nf4-dq", "bnb-nf4", "qlora"];

    public override IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor t)
    {
        if (!IsBlockLinear(t.Role)) { yield return ("bf16", t.Elements * 2); yield break; }
        long blocks = (t.Elements + 63) / 64;
        yield return ("nf4 codes", (t.Elements + 1) / 2);
        yield return ("absmax (8-bit) + fp32 scales", blocks + (blocks + 255) / 256 * 4);
    }
}

/// <summary>The llama.cpp file types (quantization mixes) the planner sizes.</summary>
public enum GgufFileType { Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K }

/// <summary>
/// A llama.cpp quantization mix. Each tensor gets the type llama.cpp's <c>llama_tensor_get_type</c> rules give it
/// (output/tied embedding, attention-V-like tensors incl. Falcon's fused attn_qkv, ffn_down by layer,
/// attn_output), then the shape fallback for rows not divisible by the block size (Falcon-7B's 4,544), and its
/// bytes come from the type's exact block geometry. 1-D tensors (norms, biases) stay f32.
/// </summary>
internal sealed class GgufMix(GgufFileType fileType) : Precision
{
    public override string Id => fileType.ToString().ToLowerInvariant();
    public override string Label => fileType.ToString();
    public override string Method => "llama.cpp recipe: per-tensor types from llama_tensor_get_type's rules + shape fallback, exact block sizes; norms f32.";
    public override IReadOnlyList<string> Aliases => fileType == GgufFileType.Q8_0 ? ["int8-gguf", "q8"] : [];

    private GgmlType BaseType => fileType switch
    {
        GgufFileType.Q8_0 => GgmlType.Q8_0,
        GgufFileType.Q6_K => GgmlType.Q6_K,
        GgufFileType.Q5_K_M => GgmlType.Q5_K,
        GgufFileType.Q4_K_M => GgmlType.Q4_K,
        GgufFileType.Q3_K_M => GgmlType.Q3_K,
        _ => GgmlType.Q2_K,
    };

    // llama.cpp: "more bits" for the first and last eighth of the layers and every third layer between.
    private static bool UseMoreBits(int i, int n) => i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;

    /// <summary>The type llama.cpp picks for <paramref name="t"/> (before the shape fallback).</summary>
    internal GgmlType ChooseType(ModelSpec m, ModelTensor t)
    {
        if (t.Role is TensorRole.Norm or TensorRole.Bias) return GgmlType.F32;
        bool falcon = m.Family == ModelFamily.Falcon;
        int n = m.Layers, i = t.Layer;
        GgmlType type = BaseType;
        bool isOutput = t.Role == TensorRole.OutputHead || (m.TiedHead && t.Role == TensorRole.TokenEmbedding);
        if (isOutput)
        {
            // Falcon's output (or the tied embedding that serves as output) is always Q8_0.
            if (falcon || t.Cols % GgmlTypes.Geometry(type).BlockSize != 0) return GgmlType.Q8_0;
            return type == GgmlType.Q8_0 ? GgmlType.Q8_0 : GgmlType.Q6_K;
        }
        switch (t.Role)
        {
            case TensorRole.AttnV or TensorRole.AttnQkv: // "attention-V-like": attn_v and fused attn_qkv
                type = fileType switch
                {
                    GgufFileType.Q2_K => m.GroupSize >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K,
                    GgufFileType.Q3_K_M => i < 2 ? GgmlType.Q5_K : GgmlType.Q4_K,
                    GgufFileType.Q4_K_M or GgufFileType.Q5_K_M when UseMoreBits(i, n) => GgmlType.Q6_K,
                    _ => type,
                };
                break;
            case TensorRole.FfnDown:
                type = fileType switch
                {
                    GgufFileType.Q2_K => GgmlType.Q3_K,
                    GgufFileType.Q3_K_M => i < n / 16 ? GgmlType.Q5_K : !falcon || UseMoreBits(i, n) ? GgmlType.Q4_K : GgmlType.Q3_K,
                    GgufFileType.Q4_K_M when falcon => i < n / 16 ? GgmlType.Q6_K : UseMoreBits(i, n) ? GgmlType.Q5_K : GgmlType.Q4_K,
                    GgufFileType.Q4_K_M or GgufFileType.Q5_K_M when UseMoreBits(i, n) => GgmlType.Q6_K,
                    _ => type,
                };
                break;
            case TensorRole.AttnOutput when !falcon:
                type = fileType switch
                {
                    GgufFileType.Q2_K => GgmlType.Q3_K,
                    GgufFileType.Q3_K_M => GgmlType.Q4_K,
                    _ => type,
                };
                break;
        }
        return type;
    }

    /// <summary>llama.cpp's fallback when a row is not a whole number of blocks of the chosen type.</summary>
    internal static GgmlType Fallback(GgmlType type, long cols)
    {
        if (cols % GgmlTypes.Geometry(type).BlockSize == 0) return type;
        GgmlType next = type switch
        {
            GgmlType.Q2_K or GgmlType.Q3_K => GgmlType.Q4_0,
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_1,
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => GgmlType.F16,
        };
        return cols % GgmlTypes.Geometry(next).BlockSize == 0 ? next : GgmlType.F16;
    }

    public override IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor t)
    {
        var type = Fallback(ChooseType(model, t), t.Cols);
        long bytes = GgmlTypes.ByteSize(type, t.Elements)
            ?? throw new InvalidOperationException($"{type} cannot hold a {t.Rows}x{t.Cols} tensor");
        yield return (type.ToString(), bytes);
    }
}

/// <summary>
/// A GGUF file's own weights: each tensor at the type and size the file stores it with (norms and biases f32, as
/// llama.cpp writes them). A model that exists only as a quantized file has this precision and no other.
/// </summary>
internal sealed class StoredPrecision(string format) : Precision
{
    public const string StoredId = "as-stored";
    public override string Id => StoredId;
    public override string Label => $"{format} (as stored)";
    public override string Method => $"the file's own tensors ({format}): types and bytes read from the file, not computed from a recipe.";
    public override IReadOnlyList<string> Aliases => ["stored", "as stored"];

    public override IEnumerable<(string Type, long Bytes)> Store(ModelSpec model, ModelTensor t)
    {
        if (t.Role is TensorRole.Norm or TensorRole.Bias) { yield return ("F32", t.Elements * 4); yield break; }
        var stored = model.Stored ?? throw new InvalidOperationException("the model was not read from a file");
        if (GgufName(model, t) is { } name && stored.TryGetValue(name, out var st))
        {
            yield return (st.Type.ToString(), st.Bytes);
            yield break;
        }
        // A tensor named otherwise than llama.cpp names it: size it at the type holding most of the file's matrices.
        var type = stored.Values.Where(x => x.Rank >= 2).GroupBy(x => x.Type).OrderByDescending(g => g.Sum(x => x.Bytes)).Select(g => g.Key).FirstOrDefault();
        yield return (type.ToString(), GgmlTypes.ByteSize(type, t.Elements) ?? t.Elements * 2);
    }

    /// <summary>llama.cpp's GGUF name for a weight matrix.</summary>
    private static string? GgufName(ModelSpec model, ModelTensor t)
    {
        string? baseName = t.Role switch
        {
            TensorRole.TokenEmbedding => "token_embd",
            TensorRole.OutputHead => "output",
            TensorRole.AttnQkv => "attn_qkv",
            TensorRole.AttnQ => "attn_q",
            TensorRole.AttnK => "attn_k",
            TensorRole.AttnV => "attn_v",
            TensorRole.AttnOutput => "attn_output",
            TensorRole.FfnUp => "ffn_up",
            TensorRole.FfnGate => "ffn_gate",
            TensorRole.FfnDown => "ffn_down",
            _ => null,
        };
        if (baseName is null) return null;
        return t.Layer < 0 ? $"{baseName}.weight" : $"blk.{t.Layer}.{baseName}.weight";
    }
}

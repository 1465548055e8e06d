using Harpia.Tensors;

namespace Harpia.Quantization;

/// <summary>llama.cpp's <c>llama_ftype</c> numbers, as stored in <c>general.file_type</c>.</summary>
public enum LlamaFileType : uint
{
    AllF32 = 0, MostlyF16 = 1, MostlyQ4_0 = 2, MostlyQ8_0 = 7, MostlyQ5_0 = 8, MostlyQ2_K = 10,
    MostlyQ3_K_M = 12, MostlyQ4_K_S = 14, MostlyQ4_K_M = 15, MostlyQ5_K_S = 16, MostlyQ5_K_M = 17, MostlyQ6_K = 18,
    MostlyBF16 = 32,
}

/// <summary>What a tensor is, for choosing its type (llama.cpp decides by the tensor's GGUF name).</summary>
public enum TensorRole { Output, TokenEmbedding, AttentionQkv, AttentionOutput, FfnUp, FfnDown, Other }

/// <summary>
/// A named file type (<c>Q4_K_M</c>, <c>Q8_0</c>, <c>F16</c>, …) and the per-tensor type it gives each Falcon weight,
/// following llama.cpp's <c>llama_tensor_get_type</c> for <c>LLM_ARCH_FALCON</c> so a Harpia-quantized file has the
/// same mix as one made by <c>llama-quantize</c>:
/// <list type="bullet">
/// <item>the output projection — and the token embeddings when they are tied to it — is Q8_0 for every quantized
/// type (llama.cpp special-cases Falcon there); the float types keep it in that float type;</item>
/// <item>the fused attn_qkv is treated as llama.cpp's attn_v (more bits in the layers <c>use_more_bits</c> picks);</item>
/// <item>ffn_down follows Falcon's own rules for Q3_K_M and Q4_K_M;</item>
/// <item>a row whose length is not a multiple of the chosen type's block falls back as llama.cpp does
/// (Q4_K → Q5_0, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, then F16), except Q5_K, whose fallback Q5_1 Harpia does not
/// implement, which falls back to Q5_0.</item>
/// </list>
/// One-dimensional tensors (norms, biases) are always F32.
/// </summary>
public sealed partial class QuantizationScheme
{
    public string Name { get; }
    public LlamaFileType FileType { get; }
    /// <summary>The type most 2-D weights get.</summary>
    public GgmlType DefaultType { get; }

    private QuantizationScheme(string name, LlamaFileType fileType, GgmlType defaultType)
    {
        Name = name; FileType = fileType; DefaultType = defaultType;
    }

    public static readonly QuantizationScheme Q8_0 = new("Q8_0", LlamaFileType.MostlyQ8_0, GgmlType.Q8_0);
    public static readonly QuantizationScheme Q4_0 = new("Q4_0", LlamaFileType.MostlyQ4_0, GgmlType.Q4_0);
    public static readonly QuantizationScheme Q5_0 = new("Q5_0", LlamaFileType.MostlyQ5_0, GgmlType.Q5_0);
    public static readonly QuantizationScheme Q4_K_S = new("Q4_K_S", LlamaFileType.MostlyQ4_K_S, GgmlType.Q4_K);
    public static readonly QuantizationScheme Q4_K_M = new("Q4_K_M", LlamaFileType.MostlyQ4_K_M, GgmlType.Q4_K);
    public static readonly QuantizationScheme Q5_K_S = new("Q5_K_S", LlamaFileType.MostlyQ5_K_S, GgmlType.Q5_K);
    public static readonly QuantizationScheme Q5_K_M = new("Q5_K_M", LlamaFileType.MostlyQ5_K_M, GgmlType.Q5_K);
    public static readonly QuantizationScheme Q6_K = new("Q6_K", LlamaFileType.MostlyQ6_K, GgmlType.Q6_K);
    public static readonly QuantizationScheme Q3_K_M = new("Q3_K_M", LlamaFileType.MostlyQ3_K_M, GgmlType.Q3_K);
    public static readonly QuantizationScheme Q2_K = new("Q2_K", LlamaFileType.MostlyQ2_K, GgmlType.Q2_K);
    public static readonly QuantizationScheme F16 = new("F16", LlamaFileType.MostlyF16, GgmlType.F16);
    public static readonly QuantizationScheme BF16 = new("BF16", LlamaFileType.MostlyBF16, GgmlType.BF16);
    public static readonly QuantizationScheme F32 = new("F32", LlamaFileType.AllF32, GgmlType.F32);

    /// <summary>TGI's <c>--quantize bitsandbytes-nf4</c> / <c>-fp4</c>: linears to bitsandbytes 4-bit on load (blocksize 64,
    /// absmax double-quantized in blocks of 256, as the guide configures). Load-time only: there is no GGUF of them.</summary>
    public static readonly QuantizationScheme BitsAndBytesNf4 = new("bitsandbytes-nf4", LlamaFileType.AllF32, GgmlType.BNB_4BIT);
    public static readonly QuantizationScheme BitsAndBytesFp4 = new("bitsandbytes-fp4", LlamaFileType.AllF32, GgmlType.BNB_4BIT);

    public bool IsBitsAndBytes => DefaultType == GgmlType.BNB_4BIT;

    public static IReadOnlyList<QuantizationScheme> All { get; } = [Q8_0, Q4_0, Q5_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q3_K_M, Q2_K, F16, BF16, F32];

    /// <summary>Hugging Face TGI's <c>--quantize</c> methods, which work on GPU kernels Harpia does not have.</summary>
    private static readonly string[] TgiMethods =
        ["bitsandbytes", "bitsandbytes-nf4", "bitsandbytes-fp4", "gptq", "awq", "eetq", "exl2", "fp8", "marlin", "compressed-tensors"];

    public static string SupportedList => string.Join(", ", All.Select(s => s.Name));

    public bool IsQuantized => GgmlTypes.IsQuantized(DefaultType);

    public override string ToString() => Name;

    /// <summary>
    /// Parses a user's spelling, case-insensitively and with '-' for '_' (q4_k_m, Q4_K_M, q4-k-m; f16/fp16/float16,
    /// bf16/bfloat16, f32/fp32/float32). TGI's method names and anything else are refused with the list of what works.
    /// </summary>
    /// <param name="onLoad">The scheme is for quantizing on load (<c>--quantize</c>), where TGI's bitsandbytes-nf4/-fp4 also work.</param>
    public static QuantizationScheme Parse(string text, string what = "--type", bool onLoad = false)
    {
        string t = text.Trim();
        string upper = t.ToUpperInvariant().Replace('-', '_');
        upper = upper switch
        {
            "FP16" or "FLOAT16" or "HALF" => "F16",
            "BFLOAT16" => "BF16",
            "FP32" or "FLOAT32" or "FLOAT" => "F32",
            _ => upper,
        };
        foreach (var s in All) if (s.Name == upper) return s;
        foreach (var s in (QuantizationScheme[])[BitsAndBytesNf4, BitsAndBytesFp4])
            if (string.Equals(s.Name, t, StringComparison.OrdinalIgnoreCase))
                return onLoad ? s : throw new HarpiaException($"{what} {t}: bitsandbytes 4-bit is a load-time quantization (--quantize {s.Name} when loading a model); " +
                                               $"as a file type it is not implemented; file types: {SupportedList}");
        if (TgiMethods.Contains(t.ToLowerInvariant()))
            throw new HarpiaException($"{what} {t}: TGI's '{t}' quantization (a GPU kernel format) is not implemented by Harpia; " +
                                      $"Harpia quantizes to llama.cpp's formats: {SupportedList}");
        throw new HarpiaException($"{what} {t}: unknown quantization type; supported: {SupportedList}");
    }

    /// <summary>The role of a Falcon tensor from its llama.cpp (GGUF) name, as llama.cpp's substring tests decide it.</summary>
    public static TensorRole RoleOf(string ggufName) => ggufName switch
    {
        "output.weight" => TensorRole.Output,
        "token_embd.weight" => TensorRole.TokenEmbedding,
        _ when ggufName.Contains("attn_qkv.weight", StringComparison.Ordinal) => TensorRole.AttentionQkv,
        _ when ggufName.Contains("attn_output.weight", StringComparison.Ordinal) => TensorRole.AttentionOutput,
        _ when ggufName.Contains("ffn_down", StringComparison.Ordinal) => TensorRole.FfnDown,
        _ when ggufName.Contains("ffn_up", StringComparison.Ordinal) => TensorRole.FfnUp,
        _ => TensorRole.Other,
    };

    /// <summary>Whether llama.cpp quantizes a tensor at all: 2-D weights that are not norms.</summary>
    public static bool IsQuantizable(string ggufName, int rank) =>
        rank >= 2 && ggufName.EndsWith("weight", StringComparison.Ordinal) && !ggufName.Contains("_norm.weight", StringComparison.Ordinal);

    /// <summary>
    /// The type this scheme gives a Falcon tensor. <paramref name="layer"/> is the tensor's decoder layer (its
    /// llama.cpp counters i_attention_wv / i_ffn_down equal it: one such tensor per layer, in layer order);
    /// <paramref name="rowLength"/> is ne[0]; <paramref name="tiedEmbeddings"/>: the file has no output.weight, so the
    /// token embeddings double as the output projection.
    /// </summary>
    public GgmlType TypeFor(string ggufName, int rank, long rowLength, int layer, int layers, int heads, int kvHeads, bool tiedEmbeddings)
    {
        if (!IsQuantizable(ggufName, rank)) return GgmlType.F32;
        if (!IsQuantized) return DefaultType;
        var role = RoleOf(ggufName);
        var type = DefaultType;
        var f = FileType;
        if (role == TensorRole.Output || (role == TensorRole.TokenEmbedding && tiedEmbeddings))
            type = GgmlType.Q8_0; // llama.cpp: Falcon's output tensor is always Q8_0
        else if (role == TensorRole.AttentionQkv)
        {
            int gqa = heads / Math.Max(1, kvHeads);
            if (f == LlamaFileType.MostlyQ2_K) type = gqa >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K;
            else if (f == LlamaFileType.MostlyQ3_K_M) type = layer < 2 ? GgmlType.Q5_K : GgmlType.Q4_K;
            else if ((f is LlamaFileType.MostlyQ4_K_M or LlamaFileType.MostlyQ5_K_M) && UseMoreBits(layer, layers)) type = GgmlType.Q6_K;
            else if (f == LlamaFileType.MostlyQ4_K_S && layer < 4) type = GgmlType.Q5_K;
        }
        else if (role == TensorRole.FfnDown)
        {
            if (f == LlamaFileType.MostlyQ2_K) type = GgmlType.Q3_K;
            else if (f == LlamaFileType.MostlyQ3_K_M)
                type = layer < layers / 16 ? GgmlType.Q5_K : UseMoreBits(layer, layers) ? GgmlType.Q4_K : GgmlType.Q3_K;
            else if (f == LlamaFileType.MostlyQ4_K_M)
                type = layer < layers / 16 ? GgmlType.Q6_K : UseMoreBits(layer, layers) ? GgmlType.Q5_K : GgmlType.Q4_K;
            else if (f == LlamaFileType.MostlyQ5_K_M && UseMoreBits(layer, layers)) type = GgmlType.Q6_K;
        }
        // attn_output and ffn_up: no Falcon-specific change for these file types.
        return Fallback(type, rowLength);
    }

    /// <summary>llama.cpp's choice of layers that get more bits: the first and last eighth, and every third between.</summary>
    public static bool UseMoreBits(int layer, int layers) =>
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;

    private static GgmlType Fallback(GgmlType type, long rowLength)
    {
        if (rowLength % GgmlTypes.Geometry(type).BlockSize == 0) return type;
        var fallback = type switch
        {
            GgmlType.Q2_K or GgmlType.Q3_K => GgmlType.Q4_0,
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_0, // llama.cpp: Q5_1, which Harpia does not implement
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => GgmlType.F16,
        };
        return rowLength % GgmlTypes.Geometry(fallback).BlockSize == 0 ? fallback : GgmlType.F16;
    }
}

using System.Text.Json;
using Harpia.Formats;
using Harpia.Tensors;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>A linear layer's weight (and bias, when the checkpoint stores one) read from a quantized checkpoint.</summary>
public sealed record QuantizedLinear(WeightMatrix Weight, float[]? Bias);

/// <summary>
/// How a Hugging Face checkpoint's linear layers are quantized, from <c>quantization_config</c> in config.json (or
/// AutoGPTQ's quantize_config.json): GPTQ or bitsandbytes 4-bit. <see cref="BindLinear"/> reads one linear's tensors,
/// checks each against the config and the layer's shape, and returns the weight the kernels multiply.
/// </summary>
public abstract class CheckpointQuantization
{
    /// <summary>"gptq", "bitsandbytes".</summary>
    public abstract string Method { get; }

    /// <summary>Native memory of the matrices bound so far (repacked weights); the model's source frees it.</summary>
    public List<NativeBuffer> Buffers { get; } = [];

    /// <summary>The linear stored under <paramref name="stem"/> (e.g. <c>transformer.h.0.mlp.dense_h_to_4h</c>), or null when
    /// it is stored unquantized (<c>stem.weight</c> in a float type).</summary>
    public abstract QuantizedLinear? BindLinear(ITensorSource source, string stem, int outFeatures, int inFeatures);

    /// <summary>The quantization of the checkpoint in <paramref name="folder"/>, or null for a plain float checkpoint.</summary>
    public static CheckpointQuantization? Detect(string folder)
    {
        string configPath = Path.Combine(folder, "config.json");
        if (File.Exists(configPath))
        {
            using var doc = ParseJson(configPath);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("quantization_config", out var qc)
                && qc.ValueKind == JsonValueKind.Object)
                return FromQuantizationConfig(qc, configPath + " quantization_config");
        }
        string gptqPath = Path.Combine(folder, "quantize_config.json");
        if (File.Exists(gptqPath))
        {
            using var doc = ParseJson(gptqPath);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidModelFileException(gptqPath, "not a JSON object");
            return new GptqCheckpoint(ParseGptq(doc.RootElement, gptqPath));
        }
        return null;
    }

    /// <summary>
    /// TGI's <c>--quantize gptq</c> names the checkpoint's own format (TGI needs it to pick its GPTQ kernels), as
    /// <c>--quantize bitsandbytes-nf4</c>/<c>-fp4</c> may for a checkpoint transformers saved in 4-bit: true when
    /// <paramref name="quantize"/> is such a flag and <paramref name="modelPath"/> is such a checkpoint, so it loads as
    /// stored. <c>gptq</c> for anything else is an error: GPTQ quantization needs calibration data and does not happen on load.
    /// </summary>
    public static bool IsCheckpointFlag(string modelPath, string quantize)
    {
        string flag = quantize.Trim().ToLowerInvariant();
        if (flag is not ("gptq" or "bitsandbytes-nf4" or "bitsandbytes-fp4")) return false;
        string? folder = Directory.Exists(modelPath) ? modelPath
            : File.Exists(modelPath) && !GgufFile.HasGgufMagic(modelPath) ? Path.GetDirectoryName(Path.GetFullPath(modelPath)) : null;
        var detected = folder is null ? null : Detect(folder);
        if (flag == "gptq")
            return detected is GptqCheckpoint ? true
                : throw new HarpiaException($"--quantize gptq: {modelPath} is not a GPTQ checkpoint (no quantization_config with quant_method \"gptq\" in config.json, " +
                                            "no quantize_config.json); Harpia does not GPTQ-quantize on load (that needs calibration data): load a GPTQ checkpoint " +
                                            "such as TheBloke/Falcon-180B-GPTQ, or quantize on load with --quantize q4_k_m or bitsandbytes-nf4");
        return detected is BnbCheckpoint;
    }

    private static JsonDocument ParseJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidModelFileException(path, $"not valid JSON ({e.Message})"); }
    }

    public static CheckpointQuantization FromQuantizationConfig(JsonElement qc, string where)
    {
        string method = qc.TryGetProperty("quant_method", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()! : "gptq";
        return method switch
        {
            "gptq" => new GptqCheckpoint(ParseGptq(qc, where)),
            "bitsandbytes" => BnbCheckpoint.Parse(qc, where),
            _ => throw new HarpiaException($"{where}: quant_method '{method}' is not supported (Harpia reads gptq and bitsandbytes 4-bit checkpoints, and GGUF)"),
        };
    }

    public static GptqConfig ParseGptq(JsonElement e, string where)
    {
        int Int(string key, int? fallback)
        {
            if (e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
            if (e.TryGetProperty(key, out _) || fallback is null) throw new HarpiaException($"{where}: '{key}' must be an integer");
            return fallback.Value;
        }
        bool Bool(string key, bool fallback) => !e.TryGetProperty(key, out var v) ? fallback
            : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
            : throw new HarpiaException($"{where}: '{key}' must be true or false");
        if (e.TryGetProperty("checkpoint_format", out var f) && f.ValueKind == JsonValueKind.String && f.GetString() != "gptq")
            throw new HarpiaException($"{where}: checkpoint_format '{f.GetString()}' is not supported (only AutoGPTQ's 'gptq' layout)");
        int bits = Int("bits", null);
        if (Array.IndexOf(GptqConfig.SupportedBits, bits) < 0)
            throw new HarpiaException($"{where}: bits {bits} is not a GPTQ width Harpia reads (2, 3, 4, 8)");
        int groupSize = Int("group_size", -1);
        if (groupSize == 0 || groupSize < -1) throw new HarpiaException($"{where}: group_size {groupSize} must be −1 or positive");
        return new GptqConfig(bits, groupSize, Bool("desc_act", false), Bool("sym", true), where);
    }

    /// <summary>Reads a checkpoint tensor's bytes as a span of T, checking dtype and shape first.</summary>
    internal static unsafe ReadOnlySpan<T> Data<T>(TensorEntry t) where T : unmanaged =>
        new(t.Data, checked((int)(t.ByteLength / sizeof(T))));

    internal static TensorEntry Require(ITensorSource source, string name) =>
        source.Tensors.TryGetValue(name, out var t) ? t : throw new InvalidModelFileException(source.Path, $"tensor '{name}' is missing");

    internal static void ExpectShape(TensorEntry t, GgmlType type, params long[] shape)
    {
        if (t.Type != type)
            throw new InvalidModelFileException(t.FilePath, $"tensor '{t.Name}': dtype {t.Type}, expected {type}");
        if (!t.Shape.AsSpan().SequenceEqual(shape))
            throw new InvalidModelFileException(t.FilePath, $"tensor '{t.Name}': shape {t.ShapeText}, expected [{string.Join(", ", shape)}] for this layer and quantization config");
    }

    internal static float[]? OptionalBias(ITensorSource source, string stem, int outFeatures)
    {
        if (!source.Tensors.TryGetValue(stem + ".bias", out var b)) return null;
        if (b.Shape.Length != 1 || b.Shape[0] != outFeatures)
            throw new InvalidModelFileException(b.FilePath, $"tensor '{b.Name}': shape {b.ShapeText}, expected [{outFeatures}]");
        return b.ToFloatVector();
    }
}

/// <summary>A GPTQ checkpoint: every linear stored as qweight/qzeros/scales/g_idx (+ bias).</summary>
public sealed class GptqCheckpoint(GptqConfig config) : CheckpointQuantization
{
    public GptqConfig Config { get; } = config;
    public override string Method => "gptq";

    public override unsafe QuantizedLinear? BindLinear(ITensorSource source, string stem, int outFeatures, int inFeatures)
    {
        if (!source.Tensors.TryGetValue(stem + ".qweight", out var qweight)) return null;
        int bits = Config.Bits, N = outFeatures, K = inFeatures;
        if ((long)K * bits % 32 != 0)
            throw new InvalidModelFileException(qweight.FilePath, $"tensor '{qweight.Name}': {K} input channels do not pack into 32-bit words at {bits} bits");
        if ((long)N * bits % 32 != 0)
            throw new InvalidModelFileException(qweight.FilePath, $"tensor '{stem}.qzeros': {N} outputs do not pack into 32-bit words at {bits} bits");
        int groupSize = Config.GroupSize < 0 ? K : Config.GroupSize;
        if (K % groupSize != 0)
            throw new InvalidModelFileException(qweight.FilePath, $"tensor '{qweight.Name}': group_size {groupSize} does not divide the {K} input channels");
        int G = K / groupSize;
        ExpectShape(qweight, GgmlType.I32, K * bits / 32, N);
        var qzeros = Require(source, stem + ".qzeros");
        ExpectShape(qzeros, GgmlType.I32, G, N * bits / 32);
        var scales = Require(source, stem + ".scales");
        if (scales.Shape.Length != 2 || scales.Shape[0] != G || scales.Shape[1] != N)
            throw new InvalidModelFileException(scales.FilePath, $"tensor '{scales.Name}': shape {scales.ShapeText}, expected [{G}, {N}] for this layer and quantization config");
        Half[] scaleValues = new Half[G * N];
        if (scales.Type == GgmlType.F16) Data<Half>(scales).CopyTo(scaleValues);
        else if (scales.Type is GgmlType.F32 or GgmlType.BF16)
        {
            var f = new float[G * N];
            Tensors.MatMul.Widen(scales.Type, new ReadOnlySpan<byte>(scales.Data, checked((int)scales.ByteLength)), f);
            for (int i = 0; i < f.Length; i++) scaleValues[i] = (Half)f[i];
        }
        else throw new InvalidModelFileException(scales.FilePath, $"tensor '{scales.Name}': dtype {scales.Type}, expected F16");
        int[] gIdx = new int[K];
        long gIdxBytes = 0;
        if (source.Tensors.TryGetValue(stem + ".g_idx", out var gi))
        {
            ExpectShape(gi, GgmlType.I32, K);
            Data<int>(gi).CopyTo(gIdx);
            gIdxBytes = gi.ByteLength;
            for (int k = 0; k < K; k++)
                if ((uint)gIdx[k] >= (uint)G)
                    throw new InvalidModelFileException(gi.FilePath, $"tensor '{gi.Name}': g_idx[{k}] = {gIdx[k]} is outside the {G} groups");
        }
        else if (Config.DescAct) throw new InvalidModelFileException(qweight.FilePath, $"tensor '{stem}.g_idx' is missing, and desc_act needs it");
        else for (int k = 0; k < K; k++) gIdx[k] = k / groupSize;

        double bpw = 8.0 * (qweight.ByteLength + qzeros.ByteLength + scales.ByteLength + gIdxBytes) / ((double)N * K);
        var matrix = new GptqMatrix(stem + ".qweight", N, K, bits, groupSize, G, Data<int>(qweight), Data<int>(qzeros), scaleValues, gIdx, bpw);
        Buffers.Add(matrix.Buffer);
        return new QuantizedLinear(new WeightMatrix(stem + ".qweight", matrix), OptionalBias(source, stem, N));
    }
}

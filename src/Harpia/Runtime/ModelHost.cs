using System.Text;
using System.Text.Json;
using Harpia.Formats;
using Harpia.Models;
using Harpia.Quantization;
using Harpia.Tokenization;

namespace Harpia.Runtime;

/// <summary>
/// Opens a model for serving: the checkpoint (a Hugging Face folder or a GGUF file), its tokenizer and chat
/// template, and a continuous-batching <see cref="Generator"/> over them. The one place where the server, the chat
/// REPL, the benchmarks and the in-process <c>IChatClient</c> turn a path into a running model.
/// </summary>
public static class ModelHost
{
    /// <summary>Loads <paramref name="modelPath"/> and starts a generator that owns (and disposes) the model.</summary>
    /// <param name="quantize">A quantization applied on load (e.g. "q8_0", "q4_k_m"), or null to run the stored types.</param>
    /// <param name="tokenizerFile">A tokenizer.json to use instead of the one found with the model.</param>
    /// <param name="placement">The device-map flags (null: auto); the map is built before the generator starts and printed to <paramref name="log"/>.</param>
    public static Generator OpenGenerator(string modelPath, GeneratorOptions? options = null, string? quantize = null, string? tokenizerFile = null,
        Placement.PlacementRequest? placement = null, TextWriter? log = null) =>
        OpenGenerator(LoadPlaced(modelPath, options, quantize, placement, log), modelPath, options, tokenizerFile, placement, log);

    /// <summary>
    /// Loads <paramref name="modelPath"/> onto the devices of its device map (built for the generator's KV budget and
    /// prefill tokens, at its KV dtype, and printed to <paramref name="log"/>): <see cref="ModelPlacement.Load"/>.
    /// </summary>
    public static DecoderModel LoadPlaced(string modelPath, GeneratorOptions? options = null, string? quantize = null,
        Placement.PlacementRequest? placement = null, TextWriter? log = null)
    {
        var o = options ?? new GeneratorOptions();
        return ModelPlacement.Load(modelPath, new ModelLoadOptions { Quantize = QuantizeScheme(modelPath, quantize) }, placement,
            shape => (KvTokenBudget(shape, o), o.MaxBatchPrefillTokens), o.KvCacheDtype, log);
    }

    /// <summary>Starts a generator over an already loaded model, which it takes over (disposed with it, or here on failure).</summary>
    public static Generator OpenGenerator(DecoderModel model, string modelPath, GeneratorOptions? options = null, string? tokenizerFile = null,
        Placement.PlacementRequest? placement = null, TextWriter? log = null)
    {
        try
        {
            var tokenizer = LoadTokenizer(model.Source, modelPath, tokenizerFile)
                ?? throw new HarpiaException($"{modelPath}: no tokenizer.json beside the model and none inside the GGUF file; pass a tokenizer.json");
            var description = Describe(model, modelPath);
            // A model loaded onto its map (LoadPlaced) carries it; otherwise the map is computed and printed for a model that stays where it was loaded.
            var map = model.Devices.Plan ?? ModelPlacement.Place(model, description.ModelId, placement, KvTokenBudget(model, options),
                (options ?? new GeneratorOptions()).MaxBatchPrefillTokens, log, kvDtype: (options ?? new GeneratorOptions()).KvCacheDtype);
            return new Generator(model, tokenizer, description with { DeviceMap = map, Device = DeviceOf(model) }, options, ownsModel: true);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The KV positions the generator will hold (as <see cref="Generator"/> sizes its block pool).</summary>
    public static long KvTokenBudget(DecoderModel model, GeneratorOptions? options) => KvTokenBudget(model.Shape, options);

    /// <summary>
    /// The KV positions the generator's block pool holds for a model of this shape: whole blocks, and with
    /// <c>--max-kv-cache-bytes</c> as many as fit at the KV dtype (an f16 cache holds twice the positions of an f32 one).
    /// </summary>
    public static long KvTokenBudget(ModelShape shape, GeneratorOptions? options)
    {
        var o = (options ?? new GeneratorOptions()).ResolveFor(shape.MaxPositions);
        int blockSize = Math.Max(1, o.KvBlockSize);
        long Blocks(long tokens) => (tokens + blockSize - 1) / blockSize * blockSize;
        if (o.MaxBatchTotalTokens is long tokens) return Blocks(tokens);
        if (o.MaxKvCacheBytes is long bytes)
            return Math.Max(1, bytes / KvStorage.BytesFor(shape, 1, blockSize, o.KvCacheDtype)) * blockSize;
        return Blocks(Math.Max(o.MaxTotalTokens!.Value, 16384));
    }

    /// <summary>
    /// Maps the checkpoint with its architecture's loader (<see cref="ModelRegistry"/>); with <paramref name="quantize"/>,
    /// converts its float weights on load.
    /// </summary>
    /// <param name="device">A <c>--device</c> value (null: as <paramref name="options"/> say, by default the CPU); the choice is written to <paramref name="log"/>.</param>
    public static DecoderModel LoadModel(string modelPath, string? quantize = null, ModelLoadOptions? options = null, string? device = null, TextWriter? log = null)
    {
        var resolved = (options ?? new ModelLoadOptions()) with
        {
            Quantize = quantize is null ? options?.Quantize : QuantizeScheme(modelPath, quantize),
        };
        if (device is null) return ModelRegistry.Load(modelPath, resolved);
        // Through the device-map path (the map is the model's Plan, printed to log): with cuda the GPU holds the model.
        return ModelPlacement.Load(modelPath, resolved, new Placement.PlacementRequest { Device = device },
            shape => (shape.MaxPositions, shape.MaxPositions), Backends.KvCacheDtype.F32, log ?? Console.Error);
    }

    /// <summary>The backends a model runs on, as /info shows them ("cpu", "cuda:0 NVIDIA H100 80GB HBM3").</summary>
    public static string DeviceOf(DecoderModel model) =>
        string.Join(", ", model.Devices.Backends.Select(b => b.Device.Kind == Backends.DeviceKind.Cpu ? b.Name : $"{b.Name} {b.Device.Name}"));

    /// <summary>
    /// Parses a <c>--quantize</c> value for quantizing <paramref name="modelPath"/> on load (null: none). TGI's
    /// <c>--quantize gptq</c> (and bitsandbytes-nf4/-fp4 on a 4-bit checkpoint) names the checkpoint's own format: it
    /// loads as stored (<see cref="CheckpointQuantization.IsCheckpointFlag"/>).
    /// </summary>
    public static QuantizationScheme? QuantizeScheme(string modelPath, string? quantize) =>
        quantize is null || CheckpointQuantization.IsCheckpointFlag(modelPath, quantize) ? null
        : QuantizationScheme.Parse(quantize, "--quantize", onLoad: true);

    /// <summary>
    /// The tokenizer of a model: an explicit tokenizer.json, else the one a GGUF file carries in its metadata, else
    /// tokenizer.json in the model folder (or beside the GGUF file). Null when there is none.
    /// </summary>
    public static ITokenizer? LoadTokenizer(ITensorSource source, string modelPath, string? explicitFile = null)
    {
        if (explicitFile is not null)
        {
            if (!File.Exists(explicitFile)) throw new HarpiaException($"{explicitFile}: tokenizer file not found");
            return HfTokenizer.Parse(Formats.UntrustedFile.ReadAllBytes(explicitFile, "tokenizer file"), explicitFile);
        }
        if (FileOf(source) is GgufFile gguf && GgufTokenizerJson.HasTokenizer(gguf))
            return HfTokenizer.Parse(Encoding.UTF8.GetBytes(GgufTokenizerJson.Build(gguf).ToJsonString()), gguf.Path);
        string candidate = Path.Combine(ModelFolder(modelPath), "tokenizer.json");
        return File.Exists(candidate) ? HfTokenizer.Parse(Formats.UntrustedFile.ReadAllBytes(candidate, "tokenizer file"), candidate) : null;
    }

    /// <summary>
    /// What front ends show and need: the model's name, limits, EOS, and the chat template with its BOS/EOS texts
    /// (from tokenizer_config.json, or the GGUF's <c>tokenizer.chat_template</c>).
    /// </summary>
    public static ModelDescription Describe(DecoderModel model, string modelPath)
    {
        string? template = null, bos = null, eos = null;
        if (FileOf(model.Source) is GgufFile gguf)
        {
            template = gguf.GetString("tokenizer.chat_template");
            // Templates such as Llama 3's write bos_token themselves: llama.cpp gives them the texts of the GGUF's ids.
            bos = GgufTokenText(gguf, "tokenizer.ggml.bos_token_id");
            eos = GgufTokenText(gguf, "tokenizer.ggml.eos_token_id");
        }
        string configFile = Path.Combine(ModelFolder(modelPath), "tokenizer_config.json");
        if (template is null && File.Exists(configFile))
        {
            try
            {
                using var doc = JsonDocument.Parse(Formats.UntrustedFile.ReadAllBytes(configFile, "tokenizer_config.json"));
                var root = doc.RootElement;
                template = ChatTemplateOf(root);
                bos = TokenText(root, "bos_token");
                eos = TokenText(root, "eos_token");
            }
            catch (JsonException e)
            {
                throw new HarpiaException($"{configFile}: not valid JSON ({e.Message})");
            }
        }
        string name = Directory.Exists(modelPath) ? new DirectoryInfo(Path.GetFullPath(modelPath)).Name : Path.GetFileName(modelPath);
        return new ModelDescription(name, model.Shape.MaxPositions, model.Shape.VocabSize, model.EosTokenId, template, bos, eos, DominantDtype(model));
    }

    /// <summary>The type holding most of the layers' weights, named as TGI names torch dtypes where it is one.</summary>
    static string DominantDtype(DecoderModel model)
    {
        var bytesByType = new Dictionary<Tensors.GgmlType, long>();
        foreach (var w in model.Architecture.LayerMatrices)
            bytesByType[w.Type] = bytesByType.GetValueOrDefault(w.Type) + (long)w.Rows * w.Cols;
        var type = bytesByType.MaxBy(kv => kv.Value).Key;
        return type switch
        {
            Tensors.GgmlType.BF16 => "torch.bfloat16",
            Tensors.GgmlType.F16 => "torch.float16",
            Tensors.GgmlType.F32 => "torch.float32",
            _ => type.ToString(),
        };
    }

    /// <summary>The checkpoint behind a source: a model quantized on load keeps its file's metadata there.</summary>
    static ITensorSource FileOf(ITensorSource source) => source is Models.Falcon.QuantizedTensorSource quantized ? quantized.Inner : source;

    static string ModelFolder(string modelPath) =>
        Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath)) ?? ".";

    // chat_template is a string, or a list of {name, template} of which "default" is the one to use.
    static string? ChatTemplateOf(JsonElement root)
    {
        if (!root.TryGetProperty("chat_template", out var t)) return null;
        if (t.ValueKind == JsonValueKind.String) return t.GetString();
        if (t.ValueKind == JsonValueKind.Array)
            foreach (var item in t.EnumerateArray())
                if (item.TryGetProperty("name", out var n) && n.GetString() == "default" && item.TryGetProperty("template", out var body))
                    return body.GetString();
        return null;
    }

    static string? GgufTokenText(GgufFile gguf, string idKey) =>
        gguf.GetInteger(idKey) is long id && gguf.Metadata.TryGetValue("tokenizer.ggml.tokens", out var t) && t is string[] tokens
            && id >= 0 && id < tokens.Length ? tokens[id] : null;

    // A special token is written as a string or as an AddedToken object with "content".
    static string? TokenText(JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) ? c.GetString()
        : null;
}

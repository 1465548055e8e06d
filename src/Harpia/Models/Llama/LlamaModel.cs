using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Formats;

namespace Harpia.Models.Llama;

/// <summary>
/// A loaded Llama-architecture checkpoint (Llama 2/3.x, Falcon3, Mistral, Qwen2): <see cref="LlamaArchitecture"/> run
/// by the generic <see cref="DecoderModel"/>, plus what the tools need (config, host-side weights for the quantizer).
/// </summary>
public sealed class LlamaModel : DecoderModel
{
    public LlamaConfig Config { get; }
    public LlamaWeights Weights { get; }

    /// <summary>How the registry finds and loads the Llama architecture.</summary>
    public static ArchitectureRegistration Registration { get; } = new(
        "llama",
        HfModelTypes: LlamaConfig.ModelTypes,
        HfArchitectures: ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"],
        GgufArchitectures: ["llama", "qwen2"],
        Load: (path, options) => Load(path, options));

    internal static ModelShape ShapeOf(LlamaConfig c) => new(c.NumLayers, c.NumKvHeads, c.HeadDim, c.VocabSize, c.MaxPositions, c.HiddenSize);

    /// <param name="devices">Where each part runs; null: everything on the CPU.</param>
    public LlamaModel(LlamaConfig config, LlamaWeights weights, ITensorSource source, DeviceMap? devices = null)
        : this(config, weights, source, devices ?? DeviceMap.Single(CpuBackend.Default, config.NumLayers), 0) { }

    private LlamaModel(LlamaConfig config, LlamaWeights weights, ITensorSource source, DeviceMap devices, int _)
        : base(new LlamaArchitecture(config, weights, devices), devices, source, config.EosTokenId)
    {
        Config = config;
        Weights = weights;
    }

    /// <summary>
    /// Opens a Hugging Face folder (config.json + safetensors) or a GGUF file, maps the weights (nothing is copied)
    /// and binds them. A <c>llama</c> GGUF keeps its q/k rows as llama.cpp permuted them and rotates interleaved pairs.
    /// </summary>
    public static LlamaModel Load(string folderOrGguf) => Load(folderOrGguf, devices: null);

    private static LlamaModel Load(string folderOrGguf, Func<ModelShape, DeviceMap>? devices)
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
            return new LlamaModel(config, LlamaWeights.Bind(source, config, names), source, devices?.Invoke(ShapeOf(config)));
        }
        catch
        {
            source?.Dispose();
            throw;
        }
    }

    /// <summary>Loads, then with <paramref name="quantize"/> converts the float weights in memory (<see cref="LlamaQuantizer.QuantizeOnLoad"/>).</summary>
    public static LlamaModel Load(string folderOrGguf, Quantization.QuantizationScheme? quantize, int? threads = null) =>
        Load(folderOrGguf, new ModelLoadOptions { Quantize = quantize, Threads = threads });

    /// <summary>The registry's entry point: load on the requested devices, quantizing on load if asked.</summary>
    public static LlamaModel Load(string folderOrGguf, ModelLoadOptions options)
    {
        if (options.Quantize is { IsBitsAndBytes: true } bnb)
            throw new HarpiaException($"--quantize {bnb.Name}: bitsandbytes 4-bit on load is implemented for Falcon models; for this Llama-architecture model use --quantize q4_k_m (or q8_0)");
        // Quantizing on load re-encodes host weights: bind on the CPU first, then prepare the result on the devices.
        var model = Load(folderOrGguf, options.Quantize is null ? options.Devices : null);
        if (options.Quantize is null) return model;
        try { return LlamaQuantizer.QuantizeOnLoad(model, options.Quantize, options.Threads, options.Devices?.Invoke(model.Shape)); }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}

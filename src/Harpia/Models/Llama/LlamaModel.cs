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
    public LlamaModel(LlamaConfig config, LlamaWeights weights, ITensorSource source, BackendMap? devices = null)
        : base(d => new LlamaArchitecture(config, weights, d), devices, config.NumLayers, source, config.EosTokenId)
    {
        Config = config;
        Weights = weights;
    }

    /// <summary>
    /// Opens a Hugging Face folder (config.json + safetensors) or a GGUF file, maps the weights (nothing is copied)
    /// and binds them. A <c>llama</c> GGUF keeps its q/k rows as llama.cpp permuted them and rotates interleaved pairs.
    /// </summary>
    public static LlamaModel Load(string folderOrGguf) => Load(folderOrGguf, devices: null);

    /// <param name="place">
    /// The runtime's device map: chooses the devices from the bound weights' footprint; overrides <paramref name="devices"/>.
    /// </param>
    private static LlamaModel Load(string folderOrGguf, Func<ModelShape, BackendMap>? devices, Func<ModelShape, Placement.ModelFootprint, BackendMap>? place = null) =>
        OpenCheckpoint(folderOrGguf, LlamaConfig.FromGguf, LlamaConfig.FromJsonFile, (config, source, folder) =>
        {
            var bound = LlamaWeights.Bind(source, config, folder is null ? LlamaTensorNames.Gguf : LlamaTensorNames.HuggingFace);
            return new LlamaModel(config, bound, source, place is not null
                ? place(ShapeOf(config), Placement.ModelFootprint.FromLlama(NameOf(folderOrGguf), config, bound, sizeof(float)))
                : devices?.Invoke(ShapeOf(config)));
        });

    /// <summary>Loads, then with <paramref name="quantize"/> converts the float weights in memory (<see cref="LlamaQuantizer.QuantizeOnLoad"/>).</summary>
    public static LlamaModel Load(string folderOrGguf, Quantization.QuantizationScheme? quantize, int? threads = null) =>
        Load(folderOrGguf, new ModelLoadOptions { Quantize = quantize, Threads = threads });

    /// <summary>The registry's entry point: load on the requested devices, quantizing on load if asked.</summary>
    public static LlamaModel Load(string folderOrGguf, ModelLoadOptions options)
    {
        if (options.Quantize is { IsBitsAndBytes: true } bnb)
            throw new HarpiaException($"--quantize {bnb.Name}: bitsandbytes 4-bit on load is implemented for Falcon models; for this Llama-architecture model use --quantize q4_k_m (or q8_0)");
        // Quantizing on load re-encodes host weights: bind on the CPU first, then prepare the result on the devices.
        var model = Load(folderOrGguf, options.Quantize is null ? options.Devices : null, options.Quantize is null ? options.Place : null);
        if (options.Quantize is not Quantization.QuantizationScheme scheme) return model;
        return ConvertLoaded(model, m => LlamaQuantizer.QuantizeOnLoad(m, scheme, options.Threads, options.Place is null ? options.Devices?.Invoke(m.Shape) : null,
            options.Place is null ? null : w => options.Place(m.Shape, Placement.ModelFootprint.FromLlama(NameOf(folderOrGguf), m.Config, w, sizeof(float)))));
    }
}

using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Formats;

namespace Harpia.Models.Falcon;

/// <summary>
/// A loaded Falcon checkpoint: <see cref="FalconArchitecture"/> (the layer math) run by the generic
/// <see cref="DecoderModel"/>, plus what the Falcon tools need (config, host-side weights for the quantizer).
/// </summary>
public sealed class FalconModel : DecoderModel
{
    public FalconConfig Config { get; }
    public FalconWeights Weights { get; }

    /// <summary>How the registry finds and loads Falcon (and its RefinedWeb ancestors).</summary>
    public static ArchitectureRegistration Registration { get; } = new(
        "falcon",
        HfModelTypes: ["falcon", "RefinedWeb", "RefinedWebModel"],
        HfArchitectures: ["FalconForCausalLM", "RWForCausalLM"],
        GgufArchitectures: ["falcon"],
        Load: (path, options) => Load(path, options));

    private static ModelShape ShapeOf(FalconConfig c) => new(c.NumLayers, c.NumKvHeads, c.HeadDim, c.VocabSize, c.MaxPositions, c.HiddenSize);

    /// <param name="devices">Where each part runs; null: everything on the CPU.</param>
    public FalconModel(FalconConfig config, FalconWeights weights, ITensorSource source, BackendMap? devices = null)
        : base(d => new FalconArchitecture(config, weights, d), devices, config.NumLayers, source, config.EosTokenId)
    {
        Config = config;
        Weights = weights;
    }

    /// <summary>
    /// Opens a Hugging Face folder (config.json + safetensors, single or sharded) or a GGUF file, maps the weights
    /// (nothing is copied; pages load when first touched) and binds them to the architecture.
    /// </summary>
    public static FalconModel Load(string folderOrGguf) => Load(folderOrGguf, devices: null);

    /// <summary>
    /// <see cref="Load(string)"/> with load-time repacking on or off regardless of the CPU (tests: the tiled kernels
    /// fall back to the exact AVX2 emulation of AVX-VNNI, <see cref="Quantization.Vnni"/>).
    /// </summary>
    internal static FalconModel Load(string folderOrGguf, bool repack) =>
        Load(folderOrGguf, shape => BackendMap.Single(new CpuBackend(repack && Quantization.Q8_0Tiled.IsSupported), shape.Layers));

    /// <summary>The matrices repacked at load (tests).</summary>
    internal int RepackedMatrices =>
        Architecture.LayerMatrices.Append(Weights.LmHead).Distinct(ReferenceEqualityComparer.Instance).Count(w => ((Tensors.WeightMatrix)w!).Repacked is not null);

    /// <param name="place">
    /// The runtime's device map: chooses the devices from the bound weights' footprint; overrides <paramref name="devices"/>.
    /// </param>
    private static FalconModel Load(string folderOrGguf, Func<ModelShape, BackendMap>? devices, Func<ModelShape, Placement.ModelFootprint, BackendMap>? place = null) =>
        OpenCheckpoint(folderOrGguf, FalconConfig.FromGguf, FalconConfig.FromJsonFile, (config, source, folder) =>
        {
            BackendMap? Place(FalconWeights bound) =>
                place?.Invoke(ShapeOf(config), Placement.ModelFootprint.FromFalcon(NameOf(folderOrGguf), config, bound, sizeof(float)));
            if (folder is not null && Quantization.CheckpointQuantization.Detect(folder) is { } quantization)
            {
                // GPTQ / bitsandbytes linears are repacked at load into memory the wrapped source frees.
                var weights = FalconWeights.Bind(source, config, FalconTensorNames.HuggingFace,
                    (stem, o, i) => quantization.BindLinear(source, stem, o, i) is { } q ? new Linear(q.Weight, q.Bias) : null);
                try
                {
                    return new FalconModel(config, weights, new QuantizedTensorSource(source, new Dictionary<string, TensorEntry>(), [.. quantization.Buffers]), Place(weights));
                }
                catch
                {
                    // The checkpoint is closed by OpenCheckpoint; the repacked memory is freed here (placement may refuse).
                    foreach (var b in quantization.Buffers) b.Dispose();
                    throw;
                }
            }
            var bound = FalconWeights.Bind(source, config, folder is null ? FalconTensorNames.Gguf : FalconTensorNames.HuggingFace);
            return new FalconModel(config, bound, source, place is not null ? Place(bound) : devices?.Invoke(ShapeOf(config)));
        });

    /// <summary>
    /// Loads as <see cref="Load(string)"/>, then, when <paramref name="quantize"/> is given, converts the f32/f16/bf16
    /// weights to that scheme in memory (<see cref="FalconQuantizer.QuantizeOnLoad"/>); quantized tensors stay as they are.
    /// </summary>
    public static FalconModel Load(string folderOrGguf, Quantization.QuantizationScheme? quantize, int? threads = null) =>
        Load(folderOrGguf, new ModelLoadOptions { Quantize = quantize, Threads = threads });

    /// <summary>The registry's entry point: load on the requested devices, quantizing on load if asked.</summary>
    public static FalconModel Load(string folderOrGguf, ModelLoadOptions options)
    {
        // Quantizing on load re-encodes host weights: the checkpoint is bound on the CPU first, then the quantized
        // weights are prepared on the requested devices.
        var model = Load(folderOrGguf, options.Quantize is null ? options.Devices : null, options.Quantize is null ? options.Place : null);
        if (options.Quantize is not Quantization.QuantizationScheme scheme) return model;
        // TGI's --quantize bitsandbytes-nf4/-fp4: its own encoder and CPU kernels (there is no GGUF type to prepare on a
        // device, so no device map is built: it runs on the CPU).
        if (scheme.IsBitsAndBytes)
            return ConvertLoaded(model, m => FalconBnbQuantizer.QuantizeOnLoad(m, scheme == Quantization.QuantizationScheme.BitsAndBytesFp4 ? Quantization.Bnb4Type.FP4 : Quantization.Bnb4Type.NF4));
        return ConvertLoaded(model, m => FalconQuantizer.QuantizeOnLoad(m, scheme, options.Threads, options.Place is null ? options.Devices?.Invoke(m.Shape) : null,
            options.Place is null ? null : w => options.Place(m.Shape, Placement.ModelFootprint.FromFalcon(NameOf(folderOrGguf), m.Config, w, sizeof(float)))));
    }
}

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
    public FalconModel(FalconConfig config, FalconWeights weights, ITensorSource source, DeviceMap? devices = null)
        : this(config, weights, source, devices ?? DeviceMap.Single(CpuBackend.Default, config.NumLayers), 0) { }

    private FalconModel(FalconConfig config, FalconWeights weights, ITensorSource source, DeviceMap devices, int _)
        : base(new FalconArchitecture(config, weights, devices), devices, source, config.EosTokenId)
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
        Load(folderOrGguf, shape => DeviceMap.Single(new CpuBackend(repack && Quantization.Q8_0Tiled.IsSupported), shape.Layers));

    /// <summary>The matrices repacked at load (tests).</summary>
    internal int RepackedMatrices =>
        Architecture.LayerMatrices.Append(Weights.LmHead).Distinct(ReferenceEqualityComparer.Instance).Count(w => ((Tensors.WeightMatrix)w!).Repacked is not null);

    private static FalconModel Load(string folderOrGguf, Func<ModelShape, DeviceMap>? devices)
    {
        ITensorSource? source = null;
        try
        {
            FalconConfig config;
            FalconTensorNames names;
            Formats.UntrustedFile.CheckModelPath(folderOrGguf);
            if (File.Exists(folderOrGguf) && GgufFile.HasGgufMagic(folderOrGguf))
            {
                var gguf = GgufFile.Open(folderOrGguf);
                source = gguf;
                config = FalconConfig.FromGguf(gguf);
                names = FalconTensorNames.Gguf;
            }
            else
            {
                string folder = File.Exists(folderOrGguf) ? Path.GetDirectoryName(Path.GetFullPath(folderOrGguf))! : folderOrGguf;
                if (!Directory.Exists(folder)) throw new HarpiaException($"{folderOrGguf}: no such model folder or GGUF file");
                config = FalconConfig.FromJsonFile(folder);
                source = SafetensorsCheckpoint.Open(folderOrGguf);
                names = FalconTensorNames.HuggingFace;
                if (Quantization.CheckpointQuantization.Detect(folder) is { } quantization)
                {
                    // GPTQ / bitsandbytes linears are repacked at load into memory the wrapped source frees.
                    var weights = FalconWeights.Bind(source, config, names,
                        (stem, o, i) => quantization.BindLinear(source, stem, o, i) is { } q ? new Linear(q.Weight, q.Bias) : null);
                    source = new QuantizedTensorSource(source, new Dictionary<string, TensorEntry>(), [.. quantization.Buffers]);
                    return new FalconModel(config, weights, source);
                }
            }
            return new FalconModel(config, FalconWeights.Bind(source, config, names), source, devices?.Invoke(ShapeOf(config)) ?? DeviceMap.Single(CpuBackend.Default, config.NumLayers));
        }
        catch
        {
            source?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads as <see cref="Load(string)"/>, then, when <paramref name="quantize"/> is given, converts the f32/f16/bf16
    /// weights to that scheme in memory (<see cref="FalconQuantizer.QuantizeOnLoad"/>); quantized tensors stay as they are.
    /// </summary>
    public static FalconModel Load(string folderOrGguf, Quantization.QuantizationScheme? quantize, int? threads = null)
    {
        var model = Load(folderOrGguf);
        if (quantize is null) return model;
        try
        {
            return quantize.IsBitsAndBytes
                ? FalconBnbQuantizer.QuantizeOnLoad(model, quantize == Quantization.QuantizationScheme.BitsAndBytesFp4 ? Quantization.Bnb4Type.FP4 : Quantization.Bnb4Type.NF4)
                : FalconQuantizer.QuantizeOnLoad(model, quantize, threads);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The registry's entry point: load on the requested devices, quantizing on load if asked.</summary>
    public static FalconModel Load(string folderOrGguf, ModelLoadOptions options)
    {
        // Quantizing on load re-encodes host weights: the checkpoint is bound on the CPU first, then the quantized
        // weights are prepared on the requested devices.
        var model = Load(folderOrGguf, options.Quantize is null ? options.Devices : null);
        if (options.Quantize is null) return model;
        try
        {
            // TGI's --quantize bitsandbytes-nf4/-fp4: its own encoder and CPU kernels (there is no GGUF type to prepare on a device).
            if (options.Quantize.IsBitsAndBytes)
                return FalconBnbQuantizer.QuantizeOnLoad(model, options.Quantize == Quantization.QuantizationScheme.BitsAndBytesFp4 ? Quantization.Bnb4Type.FP4 : Quantization.Bnb4Type.NF4);
            return FalconQuantizer.QuantizeOnLoad(model, options.Quantize, options.Threads, options.Devices?.Invoke(model.Shape));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}

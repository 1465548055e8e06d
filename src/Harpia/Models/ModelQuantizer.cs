using Harpia.Models.Falcon;
using Harpia.Models.Llama;

namespace Harpia.Models;

/// <summary>
/// <c>harpia quantize</c> for any registered architecture: resolves IN's architecture through
/// <see cref="ModelRegistry"/> and hands the request to that architecture's GGUF writer (each writes llama.cpp's names,
/// metadata and per-tensor type choices for its architecture).
/// </summary>
public static class ModelQuantizer
{
    public static QuantizeResult WriteGguf(QuantizeRequest request, Action<QuantizeProgress>? progress = null)
    {
        if (string.IsNullOrWhiteSpace(request.Input)) throw new HarpiaException("IN: give a Hugging Face model folder or a GGUF file");
        var architecture = ModelRegistry.Resolve(request.Input);
        return architecture.Name switch
        {
            "falcon" => FalconQuantizer.WriteGguf(request, progress),
            "llama" => LlamaQuantizer.WriteGguf(request, progress),
            _ => throw new HarpiaException($"{request.Input}: Harpia cannot write a GGUF for the '{architecture.Name}' architecture"),
        };
    }
}

namespace Harpia.Models;

/// <summary>
/// Tensor names of one checkpoint format (Hugging Face or llama.cpp GGUF) for an architecture whose decoder layers
/// have the parts <typeparamref name="TPart"/>: the tensors outside the layers by name, a layer part by its stem.
/// </summary>
public abstract class TensorNames<TPart> where TPart : struct, Enum
{
    private readonly string _layerPrefix;
    private readonly Func<TPart, string> _part;

    /// <param name="layerPrefix">What precedes the layer index ("model.layers.", "blk.").</param>
    /// <param name="part">A part's name after "{prefix}{layer}.".</param>
    protected TensorNames(string embeddings, string finalNorm, string lmHead, string layerPrefix, Func<TPart, string> part)
    {
        Embeddings = embeddings; FinalNorm = finalNorm; LmHead = lmHead;
        _layerPrefix = layerPrefix; _part = part;
    }

    /// <summary>The token embedding matrix.</summary>
    public string Embeddings { get; }
    /// <summary>The final norm (Falcon: a stem for ".weight" / ".bias"; Llama: the weight).</summary>
    public string FinalNorm { get; }
    public string LmHead { get; }

    /// <summary>Name stem of a layer part; append ".weight" / ".bias".</summary>
    public string Layer(int layer, TPart part) => $"{_layerPrefix}{layer}." + _part(part);
}

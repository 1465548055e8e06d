namespace Harpia.Backends;

/// <summary>
/// Which backend runs each part of a model (Hugging Face's <c>device_map</c>): the embeddings, every decoder layer,
/// and the final norm + lm_head. The runner moves the residual stream between backends where consecutive parts
/// differ; each layer's weights and KV storage live on its backend.
/// </summary>
public sealed class DeviceMap
{
    public IComputeBackend Embedding { get; }
    public IReadOnlyList<IComputeBackend> Layers { get; }
    public IComputeBackend Head { get; }

    public DeviceMap(IComputeBackend embedding, IReadOnlyList<IComputeBackend> layers, IComputeBackend head)
    {
        Embedding = embedding; Layers = layers; Head = head;
    }

    /// <summary>Everything on one backend.</summary>
    public static DeviceMap Single(IComputeBackend backend, int layers) => new(backend, Enumerable.Repeat(backend, layers).ToArray(), backend);

    /// <summary>The distinct backends, in first-use order.</summary>
    public IReadOnlyList<IComputeBackend> Backends => new[] { Embedding }.Concat(Layers).Append(Head).Distinct().ToArray();
}

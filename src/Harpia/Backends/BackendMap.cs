using Harpia.Placement;

namespace Harpia.Backends;

/// <summary>
/// A device map made executable: the backend that runs each part of a model — the embeddings, every decoder layer,
/// and the final norm + lm_head. <see cref="Placement.DeviceMap"/> decides <i>where</i> each part goes (device ids,
/// budgets; the planner and the runtime share it); this binds those devices to live <see cref="IComputeBackend"/>s
/// (<see cref="FromPlacement"/>). The runner moves the residual stream between backends where consecutive parts
/// differ; each layer's weights and KV storage live on its backend.
/// </summary>
public sealed class BackendMap
{
    public IComputeBackend Embedding { get; }
    public IReadOnlyList<IComputeBackend> Layers { get; }
    public IComputeBackend Head { get; }
    /// <summary>The placement this map executes; null when it was built directly (one backend, tests).</summary>
    public DeviceMap? Plan { get; }

    public BackendMap(IComputeBackend embedding, IReadOnlyList<IComputeBackend> layers, IComputeBackend head, DeviceMap? plan = null)
    {
        Embedding = embedding; Layers = layers; Head = head; Plan = plan;
    }

    /// <summary>Everything on one backend.</summary>
    public static BackendMap Single(IComputeBackend backend, int layers) => new(backend, Enumerable.Repeat(backend, layers).ToArray(), backend);

    /// <summary>
    /// Binds a placement to backends: each device the map names gets the backend <paramref name="backendOf"/> gives it
    /// (called once per distinct device).
    /// </summary>
    public static BackendMap FromPlacement(DeviceMap plan, Func<DeviceId, IComputeBackend> backendOf)
    {
        var backends = new Dictionary<DeviceId, IComputeBackend>();
        IComputeBackend Of(DeviceId d) => backends.TryGetValue(d, out var b) ? b : backends[d] = backendOf(d);
        return new BackendMap(Of(plan.Embedding), plan.Layers.Select(Of).ToArray(), Of(plan.Head), plan);
    }

    /// <summary>The distinct backends, in first-use order.</summary>
    public IReadOnlyList<IComputeBackend> Backends => new[] { Embedding }.Concat(Layers).Append(Head).Distinct().ToArray();
}

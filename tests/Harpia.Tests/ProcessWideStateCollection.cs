namespace Harpia.Tests;

/// <summary>
/// Tests that change process-wide state — <see cref="Harpia.Tensors.ComputePool.Threads"/>, environment variables
/// such as HARPIA_API_KEY, <see cref="Console.SetError"/> — or assert on it. xUnit runs a collection that disables
/// parallelization after the parallel ones, alone, so no other test sees the state mid-change.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideStateCollection
{
    public const string Name = "Process-wide state (serial)";
}

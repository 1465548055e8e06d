namespace Harpia.Tests.Runtime;

/// <summary>
/// Tests that measure time or process memory run alone: other test classes running beside them on a loaded
/// 2-core machine would make the numbers noise.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialRuntimeCollection
{
    public const string Name = "Runtime timing and memory (serial)";
}

namespace Harpia.Runtime.Grammar;

/// <summary>
/// What one grammar from an untrusted client may cost, checked before anything is compiled: compiling is superlinear
/// in the source (a 100,000-value enum costs seconds and hundreds of MB), so size and count limits come first, then
/// the compiler's own state budgets (<see cref="ByteNfa.MaxStates"/>, <see cref="ByteDfa.MaxStates"/>) bound what is left.
/// </summary>
public sealed record GrammarLimits
{
    /// <summary>Longest grammar source: a regex's characters, or a JSON schema's JSON text.</summary>
    public int MaxSourceChars { get; init; } = 64 * 1024;
    /// <summary>Most <c>enum</c>/<c>const</c> values in one schema, all its enums together.</summary>
    public int MaxEnumValues { get; init; } = 1024;
    /// <summary>Longest regex a JSON schema may expand to (through <c>$ref</c>s, optional members …).</summary>
    public int MaxPatternChars { get; init; } = 256 * 1024;
    /// <summary>Most grammars compiled at once in one process; the rest wait (cancellably) for a turn.</summary>
    public int MaxConcurrentCompilations { get; init; } = Math.Max(1, Environment.ProcessorCount / 2);

    public static readonly GrammarLimits Default = new();
}

namespace Harpia.Tokenization;

/// <summary>Adds special tokens around a single sequence when encoding with addSpecialTokens.</summary>
internal abstract class PostProcessor
{
    /// <summary>Rewrites <paramref name="tokens"/> (id, start byte, stop byte) in place.</summary>
    public abstract void Process(List<(int Id, int Start, int Stop)> tokens);
}

/// <summary>TemplateProcessing (single-sequence template): special pieces and the sequence $A in order.</summary>
internal sealed class TemplatePostProcessor(IReadOnlyList<int[]?> pieces) : PostProcessor
{
    /// <summary>Each entry: the ids of a special piece, or null for the sequence itself.</summary>
    public IReadOnlyList<int[]?> Pieces { get; } = pieces;

    public override void Process(List<(int Id, int Start, int Stop)> tokens)
    {
        var sequence = tokens.ToArray();
        tokens.Clear();
        foreach (var piece in Pieces)
        {
            if (piece is null) tokens.AddRange(sequence);
            else foreach (int id in piece) tokens.Add((id, 0, 0));
        }
    }
}

/// <summary>ByteLevel post-processor: only trims offsets in the Rust library; ids are unchanged.</summary>
internal sealed class NoOpPostProcessor : PostProcessor
{
    public override void Process(List<(int Id, int Start, int Stop)> tokens) { }
}

internal sealed class SequencePostProcessor(IReadOnlyList<PostProcessor> steps) : PostProcessor
{
    public override void Process(List<(int Id, int Start, int Stop)> tokens) { foreach (var s in steps) s.Process(tokens); }
}

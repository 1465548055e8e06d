using Harpia.Models;

namespace Harpia.Runtime;

/// <summary>
/// The execution stage (TGI's model server call, vLLM's model runner): turns a step's plan into one
/// <see cref="ICausalLM.Forward"/> over every chunk of every sequence, into a logits buffer it keeps across steps.
/// </summary>
internal sealed class BatchExecutor(ICausalLM model)
{
    private readonly int _vocab = model.Shape.VocabSize;
    private readonly List<SequenceChunk> _chunks = [];
    private float[] _logits = [];

    /// <summary>
    /// Runs the plan in one forward pass and returns the logits: for each item in order, its
    /// <see cref="WorkItem.LogitRows"/> rows of the vocabulary. Throws what the model throws.
    /// </summary>
    public ReadOnlySpan<float> Forward(IReadOnlyList<WorkItem> plan)
    {
        _chunks.Clear();
        int rows = 0;
        foreach (var w in plan)
        {
            _chunks.Add(new SequenceChunk(w.Sequence.Tokens.AsMemory(w.Start, w.Count), w.Start, w.Sequence.Cache, w.AllLogits));
            rows += w.LogitRows;
        }
        var logits = Logits(rows);
        model.Forward(_chunks, logits);
        return logits;
    }

    /// <summary>
    /// Runs one item alone (after a failed batch), first rewinding its cache to the item's start so a partial write
    /// by the failed pass does no harm.
    /// </summary>
    public ReadOnlySpan<float> ForwardAlone(WorkItem w)
    {
        var logits = Logits(w.LogitRows);
        w.Sequence.Cache.SetLength(w.Start);
        model.Forward([new SequenceChunk(w.Sequence.Tokens.AsMemory(w.Start, w.Count), w.Start, w.Sequence.Cache, w.AllLogits)], logits);
        return logits;
    }

    /// <summary>Drops the last step's chunks (they hold its sequences' token arrays and caches).</summary>
    public void Clear() => _chunks.Clear();

    private Span<float> Logits(int rows)
    {
        if (_logits.Length < (long)rows * _vocab) _logits = new float[(long)rows * _vocab];
        return _logits.AsSpan(0, rows * _vocab);
    }
}

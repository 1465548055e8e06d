using Harpia.Models;

namespace Harpia.Evaluation;

/// <summary>
/// The reference side of a KL-divergence run: for each window, the log-probabilities a reference model gives at the
/// window's scored rows (<see cref="EvaluationWindows.ScoredPerWindow"/> rows × <see cref="VocabSize"/>), either
/// computed live or read back from a file saved earlier. Both paths hand out the same float-rounded values, so a
/// comparison against a saved file equals the live one exactly.
/// </summary>
public interface IReferenceLogProbs
{
    /// <summary>What the reference is (a model path, a file), for messages.</summary>
    string Name { get; }
    int VocabSize { get; }
    void Read(int window, Span<float> logProbs);
}

/// <summary>A reference model run over the same windows as the model under test.</summary>
public sealed class ModelReference : IReferenceLogProbs
{
    private readonly ICausalLM _model;
    private readonly ReadOnlyMemory<int> _tokens;
    private readonly EvaluationWindows _windows;
    private readonly DenseKvCache _cache;
    private readonly float[] _logits;

    public string Name { get; }
    public int VocabSize => _model.Shape.VocabSize;
    /// <summary>Time spent in the reference model's forward passes.</summary>
    public TimeSpan ForwardTime => _forward.Elapsed;
    private readonly System.Diagnostics.Stopwatch _forward = new();

    public ModelReference(ICausalLM model, ReadOnlyMemory<int> tokens, EvaluationWindows windows, string name)
    {
        if (windows.Context > model.Shape.MaxPositions)
            throw new HarpiaException($"{name}: the reference model has {model.Shape.MaxPositions} positions, fewer than --context {windows.Context}");
        if (tokens.Length < windows.TokensEvaluated) throw new ArgumentException("fewer tokens than the windows cover", nameof(tokens));
        _model = model;
        _tokens = tokens;
        _windows = windows;
        Name = name;
        _cache = new DenseKvCache(model, windows.Context, initialCapacity: windows.Context);
        _logits = new float[(long)windows.Context * model.Shape.VocabSize];
    }

    public void Read(int window, Span<float> logProbs)
    {
        int vocab = VocabSize, context = _windows.Context;
        _cache.SetLength(0);
        _forward.Start();
        _model.Forward([new SequenceChunk(_tokens.Slice(window * context, context), 0, _cache, AllLogits: true)], _logits);
        _forward.Stop();
        for (int r = 0; r < _windows.ScoredPerWindow; r++)
            LogSoftmax.Compute(_logits.AsSpan((_windows.FirstScored + r) * vocab, vocab), logProbs.Slice(r * vocab, vocab));
    }
}

namespace Harpia.Models;

/// <summary>
/// Key/value storage of one sequence, which the model's attention writes at new positions and reads back.
/// The runtime owns it (a paged cache of fixed-size blocks); the model only sees positions. One position holds
/// <c>KvHeads × HeadDim</c> floats for keys and as many for values, per layer.
/// </summary>
public interface IKvCache
{
    /// <summary>Positions already stored (valid for every layer).</summary>
    int Length { get; }
    /// <summary>Makes room for positions [0, length). Throws <see cref="KvCacheFullException"/> when it cannot.</summary>
    void EnsureCapacity(int length);
    /// <summary>Marks positions [0, length) as written; called by the model after a forward pass.</summary>
    void SetLength(int length);
    /// <summary>Keys of one layer at one position: <c>KvHeads × HeadDim</c> floats, head-major.</summary>
    Span<float> Keys(int layer, int position);
    Span<float> Values(int layer, int position);
}

public sealed class KvCacheFullException(string message) : HarpiaException(message);

/// <summary>
/// A run of new tokens of one sequence, at positions StartPosition … StartPosition + Tokens.Length − 1, whose
/// keys/values go into <see cref="Cache"/>. A prefill chunk has many tokens, a decode step one.
/// </summary>
/// <param name="AllLogits">true: logits for every token of the chunk (prompt log-probs, tests); false: last token only.</param>
public readonly record struct SequenceChunk(ReadOnlyMemory<int> Tokens, int StartPosition, IKvCache Cache, bool AllLogits = false)
{
    public int LogitRows => AllLogits ? Tokens.Length : 1;
}

/// <summary>The shape facts the runtime needs to size caches and batches.</summary>
public sealed record ModelShape(int Layers, int KvHeads, int HeadDim, int VocabSize, int MaxPositions, int HiddenSize);

/// <summary>
/// A decoder-only language model that runs a whole batch of sequence chunks in one pass: the linear layers see
/// all tokens of all chunks together (weights are read once per step, which is what makes batching pay), and
/// attention runs per sequence over its own cache.
/// </summary>
public interface ICausalLM
{
    ModelShape Shape { get; }
    /// <summary>
    /// Runs the chunks and writes logits row by row: for each chunk in order, <see cref="SequenceChunk.LogitRows"/>
    /// rows of <c>VocabSize</c> floats. Each chunk's StartPosition must equal its cache's Length.
    /// </summary>
    void Forward(IReadOnlyList<SequenceChunk> batch, Span<float> logits);
}

namespace Harpia.Models;

/// <summary>
/// The KV cache of one sequence as paged attention sees it: positions [0, Length) written, held in the blocks of
/// <see cref="BlockTable"/> (block i holds positions [i·BlockSize, (i+1)·BlockSize)) of the model's
/// <see cref="KvStorage"/>. The runtime owns the block ids (a pool with reference counts and prefix sharing); the
/// storage belongs to the backend each layer runs on.
/// </summary>
public interface IKvCache
{
    /// <summary>Where this cache's blocks live; one storage may serve many sequences.</summary>
    KvStorage Storage { get; }
    /// <summary>Positions already stored (valid for every layer).</summary>
    int Length { get; }
    /// <summary>Blocks holding positions [0, Capacity).</summary>
    IReadOnlyList<int> BlockTable { get; }
    /// <summary>Makes room for positions [0, length). Throws <see cref="KvCacheFullException"/> when it cannot.</summary>
    void EnsureCapacity(int length);
    /// <summary>Marks positions [0, length) as written; called by the model after a forward pass.</summary>
    void SetLength(int length);
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

    /// <summary>
    /// KV storage for <paramref name="blocks"/> blocks of <paramref name="blockSize"/> positions, each layer on the
    /// backend that runs it. The default is host memory (models that run on the CPU, and test doubles).
    /// </summary>
    KvStorage AllocateKv(int blocks, int blockSize, Backends.KvCacheDtype dtype) =>
        KvStorage.Allocate(Shape, blocks, blockSize, dtype, _ => Backends.Cpu.CpuBackend.Default);
}

using Harpia.Models;
using Harpia.Tokenization;

namespace Harpia.Runtime;

/// <summary>How a sequence's final hidden states become one vector.</summary>
public enum EmbeddingPooling
{
    /// <summary>The mean over every token's final hidden state (after the final norm).</summary>
    Mean,
    /// <summary>The last token's final hidden state: the one that has attended to the whole text in a causal model.</summary>
    LastToken,
}

/// <summary>Text embeddings from a model's final hidden states (the server's /v1/embeddings and /embed).</summary>
public interface ITextEmbedder
{
    /// <summary>Length of every vector (the model's hidden size).</summary>
    int Dimensions { get; }
    /// <summary>Longest input in tokens.</summary>
    int MaxInputTokens { get; }
    ITokenizer Tokenizer { get; }

    /// <summary>
    /// One L2-normalized vector per input (token ids), in the order given. Inputs run batched; a vector does not
    /// depend on the other inputs of its batch.
    /// </summary>
    /// <exception cref="GenerationValidationException">an input is empty or longer than <see cref="MaxInputTokens"/>.</exception>
    Task<float[][]> EmbedAsync(IReadOnlyList<IReadOnlyList<int>> inputs, EmbeddingPooling pooling, CancellationToken cancellationToken = default);
}

/// <summary>
/// Embeddings computed by a <see cref="DecoderModel"/>: each input runs through the model on a cache of its own (no
/// generation, no sampling), its final-normed hidden states are pooled (<see cref="EmbeddingPooling"/>) and the
/// vector is scaled to unit length, so a dot product is the cosine similarity. Passes share the model's forward lock
/// with the generator, so embeddings interleave with generation steps.
/// </summary>
public sealed class ModelEmbedder : ITextEmbedder
{
    readonly DecoderModel _model;

    /// <summary>Tokens per forward pass: a batch of inputs is cut into passes of at most this many tokens (memory bound).</summary>
    public int MaxBatchTokens { get; init; } = 4096;

    public ModelEmbedder(DecoderModel model, ITokenizer tokenizer)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
    }

    public int Dimensions => _model.Shape.HiddenSize;
    public int MaxInputTokens => _model.Shape.MaxPositions;
    public ITokenizer Tokenizer { get; }

    public Task<float[][]> EmbedAsync(IReadOnlyList<IReadOnlyList<int>> inputs, EmbeddingPooling pooling, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        for (int i = 0; i < inputs.Count; i++)
        {
            if (inputs[i].Count == 0) throw new GenerationValidationException($"input {i} is empty");
            if (inputs[i].Count > MaxInputTokens)
                throw new GenerationValidationException($"input {i} is {inputs[i].Count} tokens long; the model takes at most {MaxInputTokens}");
        }
        return Task.Run(() => Embed(inputs, pooling, cancellationToken), cancellationToken);
    }

    float[][] Embed(IReadOnlyList<IReadOnlyList<int>> inputs, EmbeddingPooling pooling, CancellationToken ct)
    {
        var vectors = new float[inputs.Count][];
        int H = Dimensions;
        for (int first = 0; first < inputs.Count;)
        {
            ct.ThrowIfCancellationRequested();
            // A pass takes inputs while they fit in MaxBatchTokens (always at least one).
            int end = first, tokens = 0;
            while (end < inputs.Count && (end == first || tokens + inputs[end].Count <= MaxBatchTokens)) tokens += inputs[end++].Count;
            var caches = new List<DenseKvCache>(end - first);
            try
            {
                var chunks = new List<SequenceChunk>(end - first);
                for (int i = first; i < end; i++)
                {
                    var cache = new DenseKvCache(_model, inputs[i].Count, inputs[i].Count);
                    caches.Add(cache);
                    chunks.Add(new SequenceChunk(inputs[i].ToArray(), 0, cache, AllLogits: pooling == EmbeddingPooling.Mean));
                }
                int rows = chunks.Sum(c => c.LogitRows);
                var hidden = new float[(long)rows * H];
                _model.ForwardHidden(chunks, hidden);
                int row = 0;
                for (int c = 0; c < chunks.Count; c++)
                {
                    int n = chunks[c].LogitRows;
                    vectors[first + c] = Pool(hidden.AsSpan(row * H, n * H), n, H);
                    row += n;
                }
            }
            finally
            {
                foreach (var cache in caches) cache.Dispose();
            }
            first = end;
        }
        return vectors;
    }

    /// <summary>The mean of <paramref name="rows"/> rows (a single row is itself), scaled to unit L2 norm.</summary>
    internal static float[] Pool(ReadOnlySpan<float> states, int rows, int width)
    {
        var sum = new double[width];
        for (int r = 0; r < rows; r++)
        {
            var row = states.Slice(r * width, width);
            for (int j = 0; j < width; j++) sum[j] += row[j];
        }
        double norm = 0;
        for (int j = 0; j < width; j++) norm += sum[j] * sum[j];
        norm = Math.Sqrt(norm);
        var vector = new float[width];
        // A zero vector (possible only for degenerate weights) stays zero rather than becoming NaN.
        if (norm > 0) for (int j = 0; j < width; j++) vector[j] = (float)(sum[j] / norm);
        return vector;
    }
}

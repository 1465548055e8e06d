using Harpia.Models;

namespace Harpia.Evaluation;

/// <summary>
/// How a token sequence is cut for perplexity, as llama.cpp's <c>perplexity</c> does it: non-overlapping windows of
/// <see cref="Context"/> tokens, each run from an empty cache, and within each window only the predictions of tokens
/// after <see cref="FirstScored"/> count — the first half of a window only gives the second half its context, so
/// every scored token sees at least Context/2 tokens before it. Tokens past the last whole window are not used.
/// </summary>
/// <param name="FirstScored">Logit row of the first scored prediction: row r predicts token r + 1 of the window.</param>
public readonly record struct EvaluationWindows(int Context, int Count, int FirstScored)
{
    /// <summary>Predictions scored per window: rows FirstScored … Context − 2 (the last row has no next token).</summary>
    public int ScoredPerWindow => Context - 1 - FirstScored;
    public long TokensScored => (long)Count * ScoredPerWindow;
    /// <summary>Tokens the windows cover (all of them go through the model).</summary>
    public long TokensEvaluated => (long)Count * Context;

    /// <summary>The default context, llama.cpp's.</summary>
    public const int DefaultContext = 512;

    /// <summary>
    /// Plans the windows over <paramref name="tokenCount"/> tokens. Like llama.cpp, at least two whole windows are
    /// required, so that the mean and its standard error rest on more than one independent run.
    /// </summary>
    /// <param name="source">Names the text in error messages (a file name, "stdin").</param>
    public static EvaluationWindows Plan(int tokenCount, int context, ModelShape shape, int? maxWindows, bool scoreAll, string source)
    {
        if (context < 2) throw new HarpiaException($"--context {context}: a window needs at least 2 tokens");
        if (context > shape.MaxPositions)
            throw new HarpiaException($"--context {context} is more than the model's {shape.MaxPositions} positions");
        if (maxWindows is < 1) throw new HarpiaException($"--max-windows {maxWindows}: must be at least 1");
        if (tokenCount < 2L * context)
            throw new HarpiaException($"{source}: {tokenCount} tokens; perplexity with --context {context} needs at least {2L * context} " +
                                      $"(two windows of {context}): give more text or a smaller --context");
        int count = tokenCount / context;
        if (maxWindows is int max) count = Math.Min(count, max);
        return new EvaluationWindows(context, count, scoreAll ? 0 : context / 2);
    }
}

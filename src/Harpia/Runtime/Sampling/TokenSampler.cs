using System.Numerics.Tensors;

namespace Harpia.Runtime.Sampling;

/// <summary>A chosen token and its log-probability, with the most likely alternatives when asked for.</summary>
public readonly record struct SampledToken(int Id, float Logprob, TokenIdLogprob[] TopTokens);

public readonly record struct TokenIdLogprob(int Id, float Logprob);

/// <summary>
/// Picks the next token of one sequence the way Hugging Face <c>generate</c> / TGI do: processors in their order
/// (OpenAI logit bias → repetition penalty → frequency → presence → temperature → top-k → top-p → typical-p), then argmax when
/// <see cref="SamplingParameters.DoSample"/> is false, else a draw from the softmax with a seeded xoshiro256**.
/// Greedy ignores the warpers (temperature, top-k/p, typical-p) but not the penalties, as in HF.
/// Log-probabilities are the log-softmax of the processed scores (TGI reports them so).
/// Keeps the sequence's token counts; one instance per sequence, used from one thread.
/// </summary>
public sealed class TokenSampler
{
    private readonly SamplingParameters _p;
    private readonly int _vocabSize;
    private readonly Dictionary<int, int> _contextCounts = []; // prompt + generated
    private readonly HashSet<int> _generated = [];
    private int _contextLength;
    private Xoshiro256StarStar _rng;
    private readonly Grammar.TokenConstraint? _constraint;

    public ulong Seed { get; }

    /// <summary>Whether the grammar (if any) is fully matched and nothing can extend it.</summary>
    public bool GrammarComplete => _constraint?.IsComplete ?? false;

    /// <param name="constraint">A grammar the sampled tokens must follow; its mask applies after the logit bias.</param>
    public TokenSampler(SamplingParameters parameters, IEnumerable<int> promptIds, int vocabSize, ulong seed, Grammar.TokenConstraint? constraint = null)
    {
        _p = parameters;
        _constraint = constraint;
        _vocabSize = vocabSize;
        Seed = seed;
        _rng = new Xoshiro256StarStar(seed);
        foreach (int id in promptIds) Count(id);
    }

    /// <summary>Records a generated token (the penalties see it from the next step on).</summary>
    public void Accept(int id)
    {
        _constraint?.Accept(id);
        Count(id);
        _generated.Add(id);
    }

    private void Count(int id)
    {
        _contextCounts[id] = _contextCounts.GetValueOrDefault(id) + 1;
        _contextLength++;
    }

    /// <summary>Chooses a token from one row of logits. Throws <see cref="HarpiaException"/> when no score is usable (NaN or all −∞).</summary>
    public SampledToken Sample(ReadOnlySpan<float> logits, int topN, SamplerScratch scratch)
    {
        if (logits.Length != _vocabSize) throw new ArgumentException($"logits row has {logits.Length} entries, expected {_vocabSize}");
        var scores = scratch.Scores.AsSpan(0, _vocabSize);
        logits.CopyTo(scores);
        if (float.IsNaN(TensorPrimitives.Max(scores))) // Max propagates NaN: one vectorised pass checks the row
            throw new HarpiaException($"the model produced a NaN logit (token {FirstNaN(scores)})");

        if (_p.LogitBias is { } bias)
            foreach (var (id, b) in bias) scores[id] += b;
        // The grammar first: penalties and warpers then act on the tokens it allows (top-k keeps k allowed ones).
        _constraint?.Mask(scores);
        LogitsProcessors.RepetitionPenalty(scores, _contextCounts.Keys, _p.RepetitionPenalty);
        LogitsProcessors.FrequencyPenalty(scores, _contextCounts, _contextLength, _p.FrequencyPenalty);
        LogitsProcessors.PresencePenalty(scores, _generated, _p.PresencePenalty);

        if (_p.DoSample)
        {
            LogitsProcessors.Temperature(scores, _p.Temperature);
            LogitsProcessors.TopK(scores, _p.TopK, scratch);
            LogitsProcessors.TopP(scores, _p.TopP, scratch);
            LogitsProcessors.TypicalP(scores, _p.TypicalP, scratch);
        }
        // One vectorised pass of exp (−∞ gives 0): the weights serve both the draw and the log-softmax normaliser.
        // Their sum runs in double, in id order, so it does not depend on the SIMD width.
        float max = TensorPrimitives.Max(scores);
        if (float.IsNegativeInfinity(max)) throw new HarpiaException("the model produced no finite logit");
        var weights = scratch.Weights.AsSpan(0, scores.Length);
        TensorPrimitives.Subtract(scores, max, weights);
        TensorPrimitives.Exp(weights, weights);
        double total = 0;
        foreach (float w in weights) total += w;
        int chosen = _p.DoSample ? Draw(weights, total, _rng.NextDouble()) : LogitsProcessors.ArgMax(scores);
        double logZ = max + Math.Log(total);
        var top = topN > 0 ? TopTokens(scores, topN, logZ) : [];
        return new SampledToken(chosen, (float)(scores[chosen] - logZ), top);
    }

    /// <summary>
    /// Inverse-CDF draw: walks the tokens in id order until the cumulative weight exceeds u × total, so the result
    /// depends only on the weights and u. Zero-weight (filtered) tokens are never chosen.
    /// </summary>
    public static int Draw(ReadOnlySpan<float> weights, double total, double u)
    {
        double target = u * total, cumulative = 0;
        int last = -1;
        for (int i = 0; i < weights.Length; i++)
        {
            if (weights[i] <= 0) continue;
            cumulative += weights[i];
            last = i;
            if (cumulative > target) return i;
        }
        return last; // rounding left the target at the very end
    }

    private static int FirstNaN(ReadOnlySpan<float> scores)
    {
        for (int i = 0; i < scores.Length; i++) if (float.IsNaN(scores[i])) return i;
        return -1;
    }

    /// <summary>The n most likely finite tokens, most likely first (ties: lower id first).</summary>
    public static TokenIdLogprob[] TopTokens(ReadOnlySpan<float> scores, int n, double logZ)
    {
        var best = new List<TokenIdLogprob>(n + 1);
        for (int i = 0; i < scores.Length; i++)
        {
            float s = scores[i];
            if (!(s > float.NegativeInfinity)) continue;
            if (best.Count == n && s <= best[^1].Logprob) continue;
            int at = best.Count;
            while (at > 0 && best[at - 1].Logprob < s) at--;
            best.Insert(at, new TokenIdLogprob(i, s));
            if (best.Count > n) best.RemoveAt(n);
        }
        var result = new TokenIdLogprob[best.Count];
        for (int j = 0; j < result.Length; j++) result[j] = new TokenIdLogprob(best[j].Id, (float)(best[j].Logprob - logZ));
        return result;
    }
}

namespace Harpia.Runtime.Sampling;

/// <summary>
/// The logits processors and warpers of Hugging Face <c>generate</c> / TGI, one function each, applied in place to
/// one row of scores. Filtered tokens become −∞. Each follows the reference semantics exactly, including
/// <c>min_tokens_to_keep = 1</c>, ties and the order of the comparisons; the comments name the rule.
/// </summary>
public static class LogitsProcessors
{
    /// <summary>
    /// CTRL repetition penalty (HF <c>RepetitionPenaltyLogitsProcessor</c>): for every distinct token already in the
    /// sequence (prompt and generated), a negative score is multiplied by the penalty, a positive one divided.
    /// </summary>
    public static void RepetitionPenalty(Span<float> scores, IEnumerable<int> seenTokens, float penalty)
    {
        if (penalty == 1f) return;
        foreach (int id in seenTokens)
        {
            float s = scores[id];
            scores[id] = s < 0 ? s * penalty : s / penalty;
        }
    }

    /// <summary>
    /// TGI's frequency penalty (<c>HeterogeneousFrequencyPenaltyLogitsProcessor</c>): subtracts
    /// <c>penalty × count(token) / length</c>, the token's relative frequency over prompt and generated tokens.
    /// </summary>
    public static void FrequencyPenalty(Span<float> scores, IEnumerable<KeyValuePair<int, int>> counts, int length, float penalty)
    {
        if (penalty == 0f || length == 0) return;
        foreach (var (id, count) in counts)
            scores[id] -= (float)count / length * penalty;
    }

    /// <summary>
    /// OpenAI/vLLM presence penalty (TGI has none): subtracts the penalty once from every token generated so far.
    /// </summary>
    public static void PresencePenalty(Span<float> scores, IEnumerable<int> generatedTokens, float penalty)
    {
        if (penalty == 0f) return;
        foreach (int id in generatedTokens) scores[id] -= penalty;
    }

    /// <summary>HF <c>TemperatureLogitsWarper</c>: scores / temperature.</summary>
    public static void Temperature(Span<float> scores, float temperature)
    {
        if (temperature == 1f) return;
        for (int i = 0; i < scores.Length; i++) scores[i] /= temperature;
    }

    /// <summary>
    /// HF <c>TopKLogitsWarper</c>: k = min(max(k, 1), vocab); removes every score strictly below the k-th largest,
    /// so tokens tied with the k-th are kept.
    /// </summary>
    public static void TopK(Span<float> scores, int topK, SamplerScratch scratch)
    {
        int k = Math.Min(Math.Max(topK, 1), scores.Length);
        if (topK <= 0 || k >= scores.Length) return;
        var sorted = scratch.Sorted.AsSpan(0, scores.Length);
        scores.CopyTo(sorted);
        sorted.Sort();
        float kth = sorted[scores.Length - k];
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] < kth) scores[i] = float.NegativeInfinity;
    }

    /// <summary>
    /// HF <c>TopPLogitsWarper</c>: sort ascending, take the cumulative softmax from the least likely token up and remove
    /// the tokens whose cumulative probability is ≤ 1 − top_p; the most likely token is always kept.
    /// </summary>
    public static void TopP(Span<float> scores, float topP, SamplerScratch scratch)
    {
        if (topP >= 1f) return;
        int n = FiniteOrder(scores, scratch.Order);
        var idx = scratch.Order.AsSpan(0, n);
        // Ascending by score; among equal scores the higher id comes first, so the lower id counts as more likely.
        var keys = scratch.Keys.AsSpan(0, n);
        for (int j = 0; j < n; j++)
            keys[j] = ((ulong)OrderableBits(scores[idx[j]]) << 32) | (uint)(int.MaxValue - idx[j]);
        keys.Sort();
        for (int j = 0; j < n; j++) idx[j] = int.MaxValue - (int)(uint)keys[j];
        var probs = scratch.Probs;
        Softmax(scores, idx, probs);
        double cumulative = 0, threshold = 1.0 - topP;
        for (int j = 0; j < n - 1; j++) // the last (most likely) is always kept: min_tokens_to_keep = 1
        {
            cumulative += probs[j];
            if (cumulative <= threshold) scores[idx[j]] = float.NegativeInfinity;
            else break; // cumulative only grows
        }
    }

    /// <summary>
    /// HF <c>TypicalLogitsWarper</c> (locally typical sampling): rank tokens by |−log p − H| (distance of their
    /// surprise from the entropy H), keep the smallest such set whose probability reaches <c>mass</c> — the first
    /// <c>count(cumulative &lt; mass)</c> + 1 tokens, plus any tied with the last — and at least one token.
    /// </summary>
    public static void TypicalP(Span<float> scores, float mass, SamplerScratch scratch)
    {
        if (mass >= 1f) return;
        int n = FiniteOrder(scores, scratch.Order);
        var idx = scratch.Order.AsSpan(0, n);
        double[] shifted = scratch.Shifted, probs = scratch.Probs;
        // log-softmax and entropy over the finite tokens (the −∞ ones contribute 0·(−∞) = NaN, which nansum drops).
        double max = double.NegativeInfinity;
        foreach (int i in idx) max = Math.Max(max, scores[i]);
        double sum = 0;
        foreach (int i in idx) sum += Math.Exp(scores[i] - max);
        double logZ = max + Math.Log(sum), entropy = 0;
        foreach (int i in idx)
        {
            double logp = scores[i] - logZ;
            entropy -= logp * Math.Exp(logp);
        }
        // Ascending distance; ties in id order (Array.Sort alone is deterministic but not stable).
        for (int j = 0; j < n; j++) shifted[j] = Math.Abs(-(scores[idx[j]] - logZ) - entropy);
        shifted.AsSpan(0, n).Sort(idx);
        for (int a = 0; a < n;)
        {
            int b = a + 1;
            while (b < n && shifted[b] == shifted[a]) b++;
            if (b - a > 1) idx[a..b].Sort();
            a = b;
        }
        Softmax(scores, idx, probs);
        int lastIndex = 0;
        double cumulative = 0;
        for (int j = 0; j < n; j++)
        {
            cumulative += probs[j];
            if (cumulative < mass) lastIndex++;
        }
        lastIndex = Math.Min(lastIndex, n - 1);
        double limit = shifted[lastIndex];
        for (int j = 1; j < n; j++) // j = 0 kept: min_tokens_to_keep = 1
            if (shifted[j] > limit) scores[idx[j]] = float.NegativeInfinity;
    }

    /// <summary>Index of the largest score; the first one on ties (torch.argmax). −1 when no score is finite.</summary>
    public static int ArgMax(ReadOnlySpan<float> scores)
    {
        int best = -1;
        float bestScore = float.NegativeInfinity;
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] > bestScore) { bestScore = scores[i]; best = i; }
        return best;
    }

    /// <summary>log Σ exp(score) over the finite scores, in double; −∞ when none is finite.</summary>
    public static double LogSumExp(ReadOnlySpan<float> scores)
    {
        float max = float.NegativeInfinity;
        foreach (float s in scores) if (s > max) max = s;
        if (float.IsNegativeInfinity(max)) return double.NegativeInfinity;
        double sum = 0;
        foreach (float s in scores) if (s > float.NegativeInfinity) sum += Math.Exp((double)s - max);
        return max + Math.Log(sum);
    }

    private static int FiniteOrder(ReadOnlySpan<float> scores, int[] order)
    {
        int n = 0;
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] > float.NegativeInfinity) order[n++] = i;
        return n;
    }

    /// <summary>Maps a float to a uint whose unsigned order is the float's order (−∞ lowest).</summary>
    private static uint OrderableBits(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        return (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
    }

    /// <summary>probs[j] = softmax(scores)[idx[j]] over the tokens in idx.</summary>
    private static void Softmax(ReadOnlySpan<float> scores, ReadOnlySpan<int> idx, double[] probs)
    {
        double max = double.NegativeInfinity;
        foreach (int i in idx) max = Math.Max(max, scores[i]);
        double sum = 0;
        for (int j = 0; j < idx.Length; j++) sum += probs[j] = Math.Exp(scores[idx[j]] - max);
        for (int j = 0; j < idx.Length; j++) probs[j] /= sum;
    }
}

/// <summary>Reusable per-sampler buffers of vocabulary size, so the warpers allocate nothing per step.</summary>
public sealed class SamplerScratch(int vocabSize)
{
    public float[] Scores { get; } = new float[vocabSize];
    public float[] Sorted { get; } = new float[vocabSize];
    public int[] Order { get; } = new int[vocabSize];
    public ulong[] Keys { get; } = new ulong[vocabSize];
    public double[] Probs { get; } = new double[vocabSize];
    public double[] Shifted { get; } = new double[vocabSize];
}

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
    /// so tokens tied with the k-th are kept. The k-th largest comes from a size-k min-heap, O(V log k).
    /// </summary>
    public static void TopK(Span<float> scores, int topK, SamplerScratch scratch)
    {
        int k = Math.Min(Math.Max(topK, 1), scores.Length);
        if (topK <= 0 || k >= scores.Length) return;
        var heap = scratch.Sorted.AsSpan(0, k);
        scores[..k].CopyTo(heap);
        for (int i = k / 2 - 1; i >= 0; i--) SiftDownMin(heap, i);
        for (int i = k; i < scores.Length; i++)
            if (scores[i] > heap[0]) { heap[0] = scores[i]; SiftDownMin(heap, 0); }
        float kth = heap[0];
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] < kth) scores[i] = float.NegativeInfinity;
    }

    // Top-p and typical-p need the tokens in rank order only around the point where the cumulative probability
    // crosses the threshold. Instead of sorting the vocabulary, tokens go into buckets of 1/64 nat of their ranking
    // quantity (monotone, so bucket order is rank order), bucket masses locate the crossing bucket, and only that
    // bucket is sorted: O(V) plus one small sort.
    private const int Buckets = 4096;
    private const float BucketsPerNat = 64f;

    private static int Bucket(double distance) => distance >= (Buckets - 1) / BucketsPerNat ? Buckets - 1 : (int)(distance * BucketsPerNat);

    /// <summary>
    /// HF <c>TopPLogitsWarper</c>: in ascending order, the tokens whose cumulative probability (from the least likely
    /// up, inclusive) is ≤ 1 − top_p are removed; the most likely token is always kept. Equal scores: the lower id
    /// ranks higher.
    /// </summary>
    public static void TopP(Span<float> scores, float topP, SamplerScratch scratch)
    {
        if (topP >= 1f) return;
        float max = float.NegativeInfinity;
        int finite = 0;
        foreach (float f in scores) if (f > float.NegativeInfinity) { finite++; if (f > max) max = f; }
        if (finite <= 1) return;
        var weight = scratch.Probs;
        var bucketMass = scratch.BucketMass;
        Array.Clear(bucketMass);
        double total = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            if (!(scores[i] > float.NegativeInfinity)) continue;
            total += weight[i] = Math.Exp((double)scores[i] - max);
            bucketMass[Bucket(max - scores[i])] += weight[i];
        }
        // The cumulative from the bottom, inclusive of token x, is total − (mass ranked above x).
        double threshold = (1.0 - topP) * total, above = 0;
        int crossing = -1;
        for (int b = 0; b < Buckets; b++)
        {
            if (total - (above + bucketMass[b]) <= threshold) { crossing = b; break; }
            above += bucketMass[b];
        }
        if (crossing < 0) return;
        var keys = scratch.Keys;
        int m = 0;
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] > float.NegativeInfinity && Bucket(max - scores[i]) == crossing) keys[m++] = RankKey(scores[i], i);
        var inBucket = keys.AsSpan(0, m);
        inBucket.Sort();
        inBucket.Reverse(); // most likely first
        ulong firstRemoved = 0;
        for (int j = 0; j < m; j++)
        {
            bool mostLikelyOverall = crossing == 0 && j == 0; // min_tokens_to_keep = 1
            if (!mostLikelyOverall && total - above <= threshold) { firstRemoved = inBucket[j]; break; }
            above += weight[IdOf(inBucket[j])];
        }
        for (int i = 0; i < scores.Length; i++)
        {
            if (!(scores[i] > float.NegativeInfinity)) continue;
            int b = Bucket(max - scores[i]);
            if (b > crossing || (b == crossing && firstRemoved != 0 && RankKey(scores[i], i) <= firstRemoved))
                scores[i] = float.NegativeInfinity;
        }
    }

    /// <summary>
    /// HF <c>TypicalLogitsWarper</c> (locally typical sampling): rank tokens by |−log p − H| (distance of their
    /// surprise from the entropy H, over the finite tokens: nansum drops the −∞ ones), accumulate probability in that
    /// order, and keep every token whose distance is ≤ that of the first token where the cumulative reaches
    /// <c>mass</c> (HF: index <c>count(cumulative &lt; mass)</c>, so ties with it are kept); at least one token.
    /// </summary>
    public static void TypicalP(Span<float> scores, float mass, SamplerScratch scratch)
    {
        if (mass >= 1f) return;
        double max = double.NegativeInfinity;
        foreach (float f in scores) if (f > max) max = f;
        if (double.IsNegativeInfinity(max)) return;
        double sum = 0;
        foreach (float f in scores) if (f > float.NegativeInfinity) sum += Math.Exp(f - max);
        double logZ = max + Math.Log(sum), entropy = 0;
        var probs = scratch.Probs;
        for (int i = 0; i < scores.Length; i++)
        {
            if (!(scores[i] > float.NegativeInfinity)) { probs[i] = 0; continue; }
            double logp = scores[i] - logZ;
            probs[i] = Math.Exp(logp);
            entropy -= logp * probs[i];
        }
        var bucketMass = scratch.BucketMass;
        Array.Clear(bucketMass);
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] > float.NegativeInfinity) bucketMass[Bucket(Distance(scores[i], logZ, entropy))] += probs[i];
        double cumulative = 0;
        int crossing = -1;
        for (int b = 0; b < Buckets; b++)
        {
            if (cumulative + bucketMass[b] >= mass) { crossing = b; break; }
            cumulative += bucketMass[b];
        }
        if (crossing < 0) return; // rounding kept the total below mass: keep everything
        double[] key = scratch.Shifted;
        int[] id = scratch.Order;
        int m = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            if (!(scores[i] > float.NegativeInfinity)) continue;
            double d = Distance(scores[i], logZ, entropy);
            if (Bucket(d) == crossing) { key[m] = d; id[m++] = i; }
        }
        key.AsSpan(0, m).Sort(id.AsSpan(0, m)); // ties need no order: the limit is their common distance
        double limit = key[m - 1];
        for (int j = 0; j < m; j++)
        {
            cumulative += probs[id[j]];
            if (cumulative >= mass) { limit = key[j]; break; }
        }
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] > float.NegativeInfinity && Distance(scores[i], logZ, entropy) > limit) scores[i] = float.NegativeInfinity;
    }

    private static double Distance(float score, double logZ, double entropy) => Math.Abs(-(score - logZ) - entropy);

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

    /// <summary>A key whose unsigned order is (score, then lower id) order: higher key = ranks higher.</summary>
    private static ulong RankKey(float score, int id) => ((ulong)OrderableBits(score) << 32) | (uint)(int.MaxValue - id);
    private static int IdOf(ulong key) => int.MaxValue - (int)(uint)key;

    private static void SiftDownMin(Span<float> heap, int i)
    {
        while (true)
        {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap.Length && heap[l] < heap[m]) m = l;
            if (r < heap.Length && heap[r] < heap[m]) m = r;
            if (m == i) return;
            (heap[i], heap[m]) = (heap[m], heap[i]);
            i = m;
        }
    }

    /// <summary>Maps a float to a uint whose unsigned order is the float's order (−∞ lowest).</summary>
    private static uint OrderableBits(float f)
    {
        if (f == 0) f = 0; // −0 and +0 compare equal, so they must rank as ties
        uint bits = BitConverter.SingleToUInt32Bits(f);
        return (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
    }
}

/// <summary>Reusable per-sampler buffers of vocabulary size, so the warpers allocate nothing per step.</summary>
public sealed class SamplerScratch(int vocabSize)
{
    public float[] Scores { get; } = new float[vocabSize];
    public float[] Weights { get; } = new float[vocabSize];
    public float[] Sorted { get; } = new float[vocabSize];
    public int[] Order { get; } = new int[vocabSize];
    public ulong[] Keys { get; } = new ulong[vocabSize];
    public double[] Probs { get; } = new double[vocabSize];
    public double[] Shifted { get; } = new double[vocabSize];
    public double[] BucketMass { get; } = new double[4096];
}

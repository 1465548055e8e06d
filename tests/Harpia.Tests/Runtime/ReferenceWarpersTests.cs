using Harpia.Runtime.Sampling;

namespace Harpia.Tests.Runtime;

/// <summary>
/// The warpers as Hugging Face writes them — a full sort of the vocabulary, cumulative sums in sorted order — and a
/// randomized comparison with the library's bucketed versions, which must keep exactly the same tokens.
/// </summary>
public class ReferenceWarpersTests
{
    private static void ReferenceTopK(float[] scores, int k)
    {
        k = Math.Min(Math.Max(k, 1), scores.Length);
        float kth = scores.OrderByDescending(s => s).ElementAt(k - 1);
        for (int i = 0; i < scores.Length; i++) if (scores[i] < kth) scores[i] = float.NegativeInfinity;
    }

    private static double[] Softmax(float[] scores, int[] order)
    {
        double max = order.Max(i => (double)scores[i]);
        var e = order.Select(i => float.IsNegativeInfinity(scores[i]) ? 0 : Math.Exp(scores[i] - max)).ToArray();
        double sum = e.Sum();
        return e.Select(x => x / sum).ToArray();
    }

    private static void ReferenceTopP(float[] scores, float topP)
    {
        // sort ascending (equal scores: higher id first), cumulative softmax, remove cumulative <= 1 - top_p, keep the last.
        var order = Enumerable.Range(0, scores.Length).OrderBy(i => scores[i]).ThenByDescending(i => i).ToArray();
        var probs = Softmax(scores, order);
        double cumulative = 0;
        for (int j = 0; j < order.Length - 1; j++)
        {
            cumulative += probs[j];
            if (cumulative <= 1 - topP) scores[order[j]] = float.NegativeInfinity;
        }
    }

    private static void ReferenceTypicalP(float[] scores, float mass)
    {
        var finite = Enumerable.Range(0, scores.Length).Where(i => !float.IsNegativeInfinity(scores[i])).ToArray();
        double max = finite.Max(i => (double)scores[i]);
        double logZ = max + Math.Log(finite.Sum(i => Math.Exp(scores[i] - max)));
        double entropy = -finite.Sum(i => (scores[i] - logZ) * Math.Exp(scores[i] - logZ));
        var shifted = scores.Select(s => float.IsNegativeInfinity(s) ? double.PositiveInfinity : Math.Abs(-(s - logZ) - entropy)).ToArray();
        var order = Enumerable.Range(0, scores.Length).OrderBy(i => shifted[i]).ThenBy(i => i).ToArray();
        var probs = Softmax(scores, order);
        double cumulative = 0;
        int last = 0;
        foreach (double p in probs) { cumulative += p; if (cumulative < mass) last++; }
        last = Math.Min(last, scores.Length - 1);
        double limit = shifted[order[last]];
        for (int j = 1; j < order.Length; j++) if (shifted[order[j]] > limit) scores[order[j]] = float.NegativeInfinity;
    }

    [Fact]
    public void Bucketed_top_k_top_p_and_typical_p_keep_the_same_tokens_as_the_sorting_reference()
    {
        var rng = new Random(2024);
        int compared = 0;
        for (int trial = 0; trial < 600; trial++)
        {
            int v = rng.Next(2, trial % 40 == 0 ? 70_000 : 2000);
            double spread = new[] { 0.01, 0.5, 3, 10, 40, 200 }[rng.Next(6)];
            bool coarse = rng.Next(3) == 0; // many exact ties
            var logits = new float[v];
            for (int i = 0; i < v; i++)
            {
                double x = (rng.NextDouble() * 2 - 1) * spread;
                logits[i] = coarse ? (float)Math.Round(x * 2) / 2 : (float)x;
                if (rng.Next(20) == 0) logits[i] = float.NegativeInfinity;
            }
            logits[rng.Next(v)] = (float)spread; // at least one finite
            var scratch = new SamplerScratch(v);
            float p = (float)(0.05 + rng.NextDouble() * 0.9);
            int k = rng.Next(1, Math.Max(2, v / 3));

            var a = (float[])logits.Clone(); var b = (float[])logits.Clone();
            LogitsProcessors.TopK(a, k, scratch); ReferenceTopK(b, k);
            Assert.Equal(b, a);
            a = (float[])logits.Clone(); b = (float[])logits.Clone();
            LogitsProcessors.TopP(a, p, scratch); ReferenceTopP(b, p);
            var diff = Enumerable.Range(0, v).Where(i => a[i] != b[i]).Select(i => $"{i}:{logits[i]}:{a[i]}/{b[i]}").Take(6);
            Assert.True(b.SequenceEqual(a), string.Join(" ", diff) + $"top-p {p} differs, trial {trial}, v {v}, spread {spread}, coarse {coarse}: kept {a.Count(float.IsFinite)} vs {b.Count(float.IsFinite)}");
            a = (float[])logits.Clone(); b = (float[])logits.Clone();
            LogitsProcessors.TypicalP(a, p, scratch); ReferenceTypicalP(b, p);
            Assert.True(b.SequenceEqual(a), $"typical-p {p} differs, trial {trial}, v {v}, spread {spread}, coarse {coarse}: kept {a.Count(float.IsFinite)} vs {b.Count(float.IsFinite)}");
            compared++;
        }
        Assert.Equal(600, compared);
    }
}

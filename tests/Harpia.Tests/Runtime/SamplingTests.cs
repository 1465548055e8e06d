using Harpia.Runtime;
using Harpia.Runtime.Sampling;

namespace Harpia.Tests.Runtime;

public class SamplingTests
{
    // Index order differs from rank order on purpose: 3.0 is id 1, 2.5 id 6, 2.0 id 3, 1.5 id 4, 1.0 id 8, 0.5 id 0 …
    private static readonly float[] Logits = [0.5f, 3.0f, -1.0f, 2.0f, 1.5f, -2.0f, 2.5f, 0.0f, 1.0f, -0.5f];
    private const int Draws = 20_000;

    [Fact]
    public void Xoshiro_matches_an_independent_reference_implementation()
    {
        // Values from a separate Python implementation of SplitMix64-seeded xoshiro256**.
        var a = new Xoshiro256StarStar(0);
        Assert.Equal(0x99ec5f36cb75f2b4UL, a.NextUInt64());
        Assert.Equal(0xbf6e1f784956452aUL, a.NextUInt64());
        Assert.Equal(0x1a5f849d4933e6e0UL, a.NextUInt64());
        var b = new Xoshiro256StarStar(42);
        Assert.Equal(0x15780b2e0c2ec716UL, b.NextUInt64());
        Assert.Equal(0x6104d9866d113a7eUL, b.NextUInt64());
        Assert.Equal(0xae17533239e499a1UL, b.NextUInt64());
    }

    [Fact]
    public void Same_seed_gives_the_same_tokens_and_another_seed_does_not()
    {
        var p = new SamplingParameters { DoSample = true, Temperature = 1.3f };
        Assert.Equal(DrawSequence(p, 7), DrawSequence(p, 7));
        Assert.NotEqual(DrawSequence(p, 7), DrawSequence(p, 8));
    }

    [Fact]
    public void Logit_bias_is_added_before_everything_greedy_included()
    {
        var scratch = new SamplerScratch(Logits.Length);
        // Greedy would take id 1 (3.0); a -100 bias on it hands the choice to id 6 (2.5), and +5 on id 2 (-1.0) wins.
        var banned = new TokenSampler(new SamplingParameters { LogitBias = new Dictionary<int, float> { [1] = -100 } }, [], Logits.Length, 1);
        Assert.Equal(6, banned.Sample(Logits, 0, scratch).Id);
        var forced = new TokenSampler(new SamplingParameters { LogitBias = new Dictionary<int, float> { [2] = 5 } }, [], Logits.Length, 1);
        var pick = forced.Sample(Logits, 0, scratch);
        Assert.Equal(2, pick.Id);
        // The reported log-prob is that of the biased distribution (what was actually sampled from).
        double z = Logits.Select((l, i) => Math.Exp(i == 2 ? l + 5 : l)).Sum();
        Assert.Equal(Math.Log(Math.Exp(4.0) / z), pick.Logprob, 4);
        // Sampling never draws a token banned with -100 (its weight is e^-100 relative: zero in float).
        var sampler = new TokenSampler(new SamplingParameters { DoSample = true, LogitBias = new Dictionary<int, float> { [1] = -100, [6] = -100 } }, [], Logits.Length, 3);
        for (int i = 0; i < 2000; i++) Assert.DoesNotContain(sampler.Sample(Logits, 0, scratch).Id, new[] { 1, 6 });
    }

    [Fact]
    public void Greedy_takes_the_first_argmax_and_ignores_the_warpers()
    {
        var sampler = new TokenSampler(new SamplingParameters { DoSample = false, Temperature = 0.01f, TopK = 1, TopP = 0.1f }, [], 4, 1);
        var scratch = new SamplerScratch(4);
        Assert.Equal(1, sampler.Sample([0f, 5f, 5f, 1f], 0, scratch).Id);
        // Greedy log-prob is the log-softmax of the unwarped scores: two tied maxima → log(≈0.5).
        var s = sampler.Sample([0f, 5f, 5f, 1f], 2, scratch);
        double expected = 5 - Math.Log(Math.Exp(0) + 2 * Math.Exp(5) + Math.Exp(1));
        Assert.Equal(expected, s.Logprob, 5);
        Assert.Equal([1, 2], s.TopTokens.Select(t => t.Id));
    }

    [Fact]
    public void Repetition_penalty_divides_positive_and_multiplies_negative_scores_of_seen_tokens()
    {
        float[] scores = [2f, -2f, 1f, 3f];
        LogitsProcessors.RepetitionPenalty(scores, [0, 1], 2f);
        Assert.Equal([1f, -4f, 1f, 3f], scores);
        // Through the sampler: the prompt counts; token 3 (best) was in the prompt, so greedy moves to token 0.
        var sampler = new TokenSampler(new SamplingParameters { RepetitionPenalty = 4f }, [3], 4, 1);
        Assert.Equal(0, sampler.Sample([2.5f, -2f, 1f, 3f], 0, new SamplerScratch(4)).Id);
        sampler.Accept(0); // generated tokens count too
        Assert.Equal(2, sampler.Sample([2.5f, -2f, 1f, 3f], 0, new SamplerScratch(4)).Id);
    }

    [Fact]
    public void Frequency_penalty_is_TGI_relative_frequency_and_presence_counts_generated_tokens_once()
    {
        float[] scores = [1f, 1f, 1f];
        var counts = new Dictionary<int, int> { [0] = 3, [1] = 1 };
        LogitsProcessors.FrequencyPenalty(scores, counts, 4, 0.8f);
        Assert.Equal(1f - 0.8f * 3 / 4, scores[0], 6);
        Assert.Equal(1f - 0.8f * 1 / 4, scores[1], 6);
        Assert.Equal(1f, scores[2]);
        LogitsProcessors.PresencePenalty(scores, [2], 0.5f);
        Assert.Equal(0.5f, scores[2]);

        var sampler = new TokenSampler(new SamplingParameters { PresencePenalty = 1f }, [1, 1], 3, 1);
        Assert.Equal(1, sampler.Sample([0f, 0.5f, 0.4f], 0, new SamplerScratch(3)).Id); // prompt is not "present"
        sampler.Accept(1);
        Assert.Equal(2, sampler.Sample([0f, 0.5f, 0.4f], 0, new SamplerScratch(3)).Id);
    }

    [Fact]
    public void Top_k_keeps_ties_with_the_kth_score()
    {
        float[] scores = [1f, 3f, 2f, 2f, 0f];
        LogitsProcessors.TopK(scores, 2, new SamplerScratch(5));
        Assert.Equal([float.NegativeInfinity, 3f, 2f, 2f, float.NegativeInfinity], scores);
    }

    [Fact]
    public void Top_p_and_typical_p_keep_at_least_one_token_and_typical_keeps_ties()
    {
        float[] scores = [0f, 10f, 0f];
        LogitsProcessors.TopP(scores, 0.01f, new SamplerScratch(3));
        Assert.Equal([float.NegativeInfinity, 10f, float.NegativeInfinity], scores);
        float[] peaked = [0f, 0f, 5f, 0f];
        LogitsProcessors.TypicalP(peaked, 0.01f, new SamplerScratch(4));
        Assert.Equal([float.NegativeInfinity, float.NegativeInfinity, 5f, float.NegativeInfinity], peaked);
        // A flat distribution: every token is exactly as typical as the entropy, so all tie with the last kept one.
        float[] flat = [1f, 1f, 1f, 1f];
        LogitsProcessors.TypicalP(flat, 0.01f, new SamplerScratch(4));
        Assert.Equal([1f, 1f, 1f, 1f], flat);
    }

    [Fact]
    public void Temperature_samples_the_whole_vocabulary_with_tempered_weights()
        => AssertDistribution(new SamplingParameters { DoSample = true, Temperature = 0.7f },
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0.7, seed: 11);

    [Fact]
    public void Top_k_samples_the_k_best_with_renormalised_weights()
        => AssertDistribution(new SamplingParameters { DoSample = true, TopK = 3 }, [1, 6, 3], 1.0, seed: 12);

    [Fact]
    public void Top_p_samples_the_smallest_set_reaching_the_mass()
    {
        // softmax: 3.0→.397, 2.5→.241, 2.0→.146, 1.5→.089: .784 < 0.8 without id 4, .872 with it.
        AssertDistribution(new SamplingParameters { DoSample = true, TopP = 0.8f }, [1, 6, 3, 4], 1.0, seed: 13);
    }

    [Fact]
    public void Typical_p_samples_the_tokens_closest_to_the_entropy()
    {
        // H = 1.656 nats; |−log p − H| ranks ids 6, 3, 1, 4, 8 …; cumulative .241, .387, .784: two below 0.5 → keep 3.
        AssertDistribution(new SamplingParameters { DoSample = true, TypicalP = 0.5f }, [1, 3, 6], 1.0, seed: 14);
        // At 0.2 only id 6 is kept although id 1 is the most likely token.
        AssertDistribution(new SamplingParameters { DoSample = true, TypicalP = 0.2f }, [6], 1.0, seed: 15);
        AssertDistribution(new SamplingParameters { DoSample = true, TypicalP = 0.9f }, [1, 3, 4, 6, 8], 1.0, seed: 16);
    }

    [Fact]
    public void Warpers_apply_in_HF_order_temperature_top_k_top_p_typical()
    {
        // Sets from a Python transcription of HF's warpers in the same order.
        AssertDistribution(new SamplingParameters { DoSample = true, Temperature = 0.5f, TopK = 6, TopP = 0.9f }, [1, 3, 6], 0.5, seed: 17);
        AssertDistribution(new SamplingParameters { DoSample = true, Temperature = 1.5f, TopK = 8, TopP = 0.95f, TypicalP = 0.6f },
            [1, 3, 4, 6], 1.5, seed: 18);
    }

    [Fact]
    public void The_chi_square_test_rejects_a_wrong_distribution()
    {
        // Power check: draws at temperature 0.7 compared with the untempered weights must fail badly.
        var counts = Histogram(new SamplingParameters { DoSample = true, Temperature = 0.7f }, 21);
        double chi2 = ChiSquare(counts, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 1.0);
        Assert.True(chi2 > Statistics.ChiSquareCritical(9, 0.001) * 10, $"chi2 {chi2}");
    }

    [Fact]
    public void Chi_square_helpers_match_textbook_values()
    {
        Assert.Equal(0.05, Statistics.ChiSquareSurvival(3.841, 1), 3);
        Assert.Equal(0.05, Statistics.ChiSquareSurvival(18.307, 10), 3);
        Assert.Equal(0.001, Statistics.ChiSquareSurvival(27.877, 9), 4);
        Assert.Equal(16.919, Statistics.ChiSquareCritical(9, 0.05), 2);
    }

    [Fact]
    public void Sampled_logprob_is_under_the_warped_distribution_and_top_tokens_are_sorted()
    {
        var sampler = new TokenSampler(new SamplingParameters { DoSample = true, TopK = 2 }, [], Logits.Length, 5);
        var s = sampler.Sample(Logits, 3, new SamplerScratch(Logits.Length));
        Assert.Contains(s.Id, new[] { 1, 6 });
        // Only two tokens survive top-k, so the alternatives stop at two, renormalised over {3.0, 2.5}.
        Assert.Equal([1, 6], s.TopTokens.Select(t => t.Id));
        double z = Math.Log(Math.Exp(3.0) + Math.Exp(2.5));
        Assert.Equal(3.0 - z, s.TopTokens[0].Logprob, 5);
        Assert.Equal(2.5 - z, s.TopTokens[1].Logprob, 5);
        Assert.Equal(s.TopTokens.Single(t => t.Id == s.Id).Logprob, s.Logprob);
    }

    [Fact]
    public void NaN_logits_are_an_error_not_a_token()
    {
        var sampler = new TokenSampler(new SamplingParameters(), [], 3, 1);
        Assert.Throws<HarpiaException>(() => sampler.Sample([0f, float.NaN, 1f], 0, new SamplerScratch(3)));
    }

    // ----------------------------------------------------------------------------------------------------------

    private static List<int> DrawSequence(SamplingParameters p, ulong seed)
    {
        var sampler = new TokenSampler(p, [], Logits.Length, seed);
        var scratch = new SamplerScratch(Logits.Length);
        return Enumerable.Range(0, 200).Select(_ => sampler.Sample(Logits, 0, scratch).Id).ToList();
    }

    private static int[] Histogram(SamplingParameters p, ulong seed)
    {
        var sampler = new TokenSampler(p, [], Logits.Length, seed);
        var scratch = new SamplerScratch(Logits.Length);
        var counts = new int[Logits.Length];
        for (int i = 0; i < Draws; i++) counts[sampler.Sample(Logits, 0, scratch).Id]++;
        return counts;
    }

    /// <summary>χ² of the counts against weights exp(logit / temperature) renormalised over <paramref name="allowed"/>.</summary>
    private static double ChiSquare(int[] counts, int[] allowed, double temperature)
    {
        double z = allowed.Sum(i => Math.Exp(Logits[i] / temperature));
        int n = counts.Sum();
        return allowed.Sum(i =>
        {
            double expected = n * Math.Exp(Logits[i] / temperature) / z;
            return (counts[i] - expected) * (counts[i] - expected) / expected;
        });
    }

    private static void AssertDistribution(SamplingParameters p, int[] allowed, double temperature, ulong seed)
    {
        var counts = Histogram(p, seed);
        for (int i = 0; i < counts.Length; i++)
            if (!allowed.Contains(i)) Assert.True(counts[i] == 0, $"token {i} drawn {counts[i]} times but is outside {{{string.Join(',', allowed)}}}");
        if (allowed.Length == 1) { Assert.Equal(Draws, counts[allowed[0]]); return; }
        double chi2 = ChiSquare(counts, allowed, temperature);
        double critical = Statistics.ChiSquareCritical(allowed.Length - 1, 0.001);
        Assert.True(chi2 < critical, $"chi2 {chi2:F2} ≥ critical {critical:F2} (df {allowed.Length - 1}); counts {string.Join(',', counts)}");
    }
}

/// <summary>χ² distribution functions through the regularised incomplete gamma function.</summary>
internal static class Statistics
{
    /// <summary>P(X ≥ chi2) for X ~ χ²(df).</summary>
    public static double ChiSquareSurvival(double chi2, int df) => UpperGammaQ(df / 2.0, chi2 / 2.0);

    /// <summary>The value whose survival probability is alpha, by bisection.</summary>
    public static double ChiSquareCritical(int df, double alpha)
    {
        double lo = 0, hi = df + 100 * Math.Sqrt(2.0 * df) + 100;
        for (int i = 0; i < 200; i++)
        {
            double mid = (lo + hi) / 2;
            if (ChiSquareSurvival(mid, df) > alpha) lo = mid; else hi = mid;
        }
        return (lo + hi) / 2;
    }

    private static double UpperGammaQ(double a, double x)
    {
        if (x <= 0) return 1;
        double lnPrefix = a * Math.Log(x) - x - LogGamma(a);
        if (x < a + 1)
        {
            double sum = 1 / a, term = sum;
            for (int n = 1; n < 1000; n++)
            {
                term *= x / (a + n);
                sum += term;
                if (Math.Abs(term) < Math.Abs(sum) * 1e-15) break;
            }
            return 1 - sum * Math.Exp(lnPrefix);
        }
        // Continued fraction (modified Lentz).
        double b = x + 1 - a, c = 1 / 1e-300, d = 1 / b, h = d;
        for (int i = 1; i < 1000; i++)
        {
            double an = -i * (i - a);
            b += 2;
            d = an * d + b; if (Math.Abs(d) < 1e-300) d = 1e-300;
            c = b + an / c; if (Math.Abs(c) < 1e-300) c = 1e-300;
            d = 1 / d;
            double delta = d * c;
            h *= delta;
            if (Math.Abs(delta - 1) < 1e-15) break;
        }
        return Math.Exp(lnPrefix) * h;
    }

    private static double LogGamma(double x)
    {
        // Lanczos approximation (g = 7, n = 9).
        double[] g = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
        if (x < 0.5) return Math.Log(Math.PI / Math.Sin(Math.PI * x)) - LogGamma(1 - x);
        x -= 1;
        double a = g[0], t = x + 7.5;
        for (int i = 1; i < 9; i++) a += g[i] / (x + i);
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(a);
    }
}

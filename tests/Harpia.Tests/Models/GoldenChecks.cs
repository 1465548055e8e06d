using Harpia.Models;
using Xunit.Abstractions;

namespace Harpia.Tests.Models;

/// <summary>
/// The checks every architecture's golden tests make against a float64 reference (../shared/fixtures/models/*):
/// last-position logits within a tolerance, the argmax at every prompt position, the greedy continuation with a KV cache.
/// </summary>
public static class GoldenChecks
{
    /// <summary>One prompt of a golden.json: its ids, greedy continuation, per-position argmax and last logits.</summary>
    public readonly record struct Prompt(int[] Ids, int[] GreedyNext8, int[] ArgmaxPerPosition, float[] LastLogits);

    /// <summary>Little-endian float32 values of a logits file.</summary>
    public static float[] ReadF32(string path)
    {
        byte[] raw = File.ReadAllBytes(path);
        var values = new float[raw.Length / 4];
        Buffer.BlockCopy(raw, 0, values, 0, raw.Length);
        return values;
    }

    /// <summary>One forward pass over <paramref name="ids"/> from an empty cache: the last position's logits, or every position's.</summary>
    public static float[] FullPass(ICausalLM model, int[] ids, bool allLogits = false)
    {
        var cache = new DenseKvCache(model, 256);
        var logits = new float[(allLogits ? ids.Length : 1) * model.Shape.VocabSize];
        model.Forward([new SequenceChunk(ids, 0, cache, allLogits)], logits);
        return logits;
    }

    public static void LastLogitsMatch(ICausalLM model, IEnumerable<Prompt> prompts, string name, float tolerance, ITestOutputHelper output)
    {
        foreach (var prompt in prompts)
        {
            var logits = FullPass(model, prompt.Ids);
            float err = FalconGoldenTests.MaxAbs(logits, prompt.LastLogits);
            output.WriteLine($"{name}: prompt of {prompt.Ids.Length} tokens, last-logits max-abs {err:E2}");
            Assert.True(err < tolerance, $"{name}: max-abs {err} ≥ {tolerance}");
        }
    }

    public static void ArgmaxAtEveryPositionMatches(ICausalLM model, IEnumerable<Prompt> prompts)
    {
        int vocab = model.Shape.VocabSize;
        foreach (var prompt in prompts)
        {
            var logits = FullPass(model, prompt.Ids, allLogits: true);
            for (int i = 0; i < prompt.Ids.Length; i++)
                Assert.Equal(prompt.ArgmaxPerPosition[i], FalconGoldenTests.ArgMax(logits.AsSpan(i * vocab, vocab)));
        }
    }

    public static void GreedyNext8IsExactWithTheKvCache(ICausalLM model, IEnumerable<Prompt> prompts)
    {
        int vocab = model.Shape.VocabSize;
        foreach (var prompt in prompts)
        {
            var cache = new DenseKvCache(model, 64, initialCapacity: 4);
            var logits = new float[vocab];
            model.Forward([new SequenceChunk(prompt.Ids, 0, cache)], logits);
            var generated = new List<int>();
            for (int step = 0; step < 8; step++)
            {
                int next = FalconGoldenTests.ArgMax(logits);
                generated.Add(next);
                model.Forward([new SequenceChunk(new[] { next }, cache.Length, cache)], logits);
            }
            Assert.Equal(prompt.GreedyNext8, generated);
        }
    }
}

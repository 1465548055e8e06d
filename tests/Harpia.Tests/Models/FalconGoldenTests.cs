using System.Text.Json;
using Xunit.Abstractions;
using Harpia.Models;
using Harpia.Models.Falcon;

namespace Harpia.Tests.Models;

/// <summary>
/// The forward pass against the float64 reference in ../shared/fixtures/models: last-position logits within
/// 2e-3 max-abs, the greedy continuation exact, and incremental decoding equal to one full pass.
/// </summary>
[Trait("Category", "Simd")]
public class FalconGoldenTests(ITestOutputHelper output)
{
    public const float Tolerance = 2e-3f;

    public sealed record GoldenPrompt(string Text, int[] Ids, int[] GreedyNext8, int[] ArgmaxPerPosition, float[] LastLogits);

    public static IReadOnlyList<GoldenPrompt> Golden(string model)
    {
        string dir = Fixtures.Model(model);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "golden.json")));
        var result = new List<GoldenPrompt>();
        foreach (var p in doc.RootElement.GetProperty("prompts").EnumerateArray())
        {
            int[] Ints(string key) => p.GetProperty(key).EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var logits = GoldenChecks.ReadF32(Path.Combine(dir, p.GetProperty("last_logits_file").GetString()!));
            result.Add(new GoldenPrompt(p.TryGetProperty("text", out var text) ? text.GetString()! : "", Ints("ids"), Ints("greedy_next_8"), Ints("argmax_per_position"), logits));
        }
        return result;
    }

    public static string ModelPath(string model) =>
        model.EndsWith(".gguf") ? Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), model) : Fixtures.Model(model);

    public static string GoldenModel(string model) => model.EndsWith(".gguf") ? "tiny-falcon-180b-h256" : model;

    public static float MaxAbs(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        float m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    public static float[] FullPass(FalconModel model, int[] ids, bool allLogits = false) => GoldenChecks.FullPass(model, ids, allLogits);

    static IEnumerable<GoldenChecks.Prompt> Checks(string name) =>
        Golden(GoldenModel(name)).Select(p => new GoldenChecks.Prompt(p.Ids, p.GreedyNext8, p.ArgmaxPerPosition, p.LastLogits));

    public static int ArgMax(ReadOnlySpan<float> x) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(x);

    public static TheoryData<string> Models => new() { "tiny-falcon-7b", "tiny-falcon-180b", "tiny-falcon-180b-h256", "model-f32.gguf" };

    [Theory]
    [MemberData(nameof(Models))]
    public void LastLogitsMatchGoldenOnEveryPrompt(string name)
    {
        using var model = FalconModel.Load(ModelPath(name));
        GoldenChecks.LastLogitsMatch(model, Checks(name), name, Tolerance, output);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void ArgmaxAtEveryPromptPositionMatchesGolden(string name)
    {
        using var model = FalconModel.Load(ModelPath(name));
        GoldenChecks.ArgmaxAtEveryPositionMatches(model, Checks(name));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyNext8IsExactWithTheKvCache(string name)
    {
        using var model = FalconModel.Load(ModelPath(name));
        GoldenChecks.GreedyNext8IsExactWithTheKvCache(model, Checks(name));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void TokenByTokenDecodingEqualsOneFullPass(string name)
    {
        using var model = FalconModel.Load(ModelPath(name));
        int vocab = model.Shape.VocabSize;
        var prompt = Golden(GoldenModel(name))[0];
        var full = FullPass(model, prompt.Ids, allLogits: true);
        var cache = new DenseKvCache(model, 64, initialCapacity: 1);
        var step = new float[vocab];
        for (int i = 0; i < prompt.Ids.Length; i++)
        {
            model.Forward([new SequenceChunk(new[] { prompt.Ids[i] }, i, cache)], step);
            Assert.True(MaxAbs(step, full.AsSpan(i * vocab, vocab)) < 1e-4f, $"position {i}");
        }
        Assert.Equal(prompt.Ids.Length, cache.Length);
    }

    [Fact]
    public void ABatchOfSequencesGivesEachItsOwnLogits()
    {
        using var model = FalconModel.Load(ModelPath("tiny-falcon-180b"));
        int vocab = model.Shape.VocabSize;
        var prompts = Golden("tiny-falcon-180b");
        // Sequence 0 prefilled in two chunks: the second rides in the same batch as the others' prefill.
        var caches = prompts.Select(_ => new DenseKvCache(model, 64)).ToArray();
        int split = prompts[0].Ids.Length / 2;
        model.Forward([new SequenceChunk(prompts[0].Ids[..split], 0, caches[0])], new float[vocab]);
        var logits = new float[(1 + 1 + prompts[2].Ids.Length) * vocab];
        model.Forward(
        [
            new SequenceChunk(prompts[0].Ids[split..], split, caches[0]),
            new SequenceChunk(prompts[1].Ids, 0, caches[1]),
            new SequenceChunk(prompts[2].Ids, 0, caches[2], AllLogits: true),
        ], logits);
        Assert.True(MaxAbs(logits.AsSpan(0, vocab), prompts[0].LastLogits) < Tolerance);
        Assert.True(MaxAbs(logits.AsSpan(vocab, vocab), prompts[1].LastLogits) < Tolerance);
        int last = 2 + prompts[2].Ids.Length - 1;
        Assert.True(MaxAbs(logits.AsSpan(last * vocab, vocab), prompts[2].LastLogits) < Tolerance);
        Assert.Equal(prompts[2].ArgmaxPerPosition[0], ArgMax(logits.AsSpan(2 * vocab, vocab)));
    }

    [Fact]
    public void BadBatchesAreRefusedBeforeAnythingRuns()
    {
        using var model = FalconModel.Load(ModelPath("tiny-falcon-7b"));
        var cache = new DenseKvCache(model, 8);
        var logits = new float[model.Shape.VocabSize];
        Assert.Throws<HarpiaException>(() => model.Forward([new SequenceChunk(new[] { 70000 }, 0, cache)], logits));
        Assert.Throws<ArgumentException>(() => model.Forward([new SequenceChunk(new[] { 1 }, 3, cache)], logits));
        Assert.Throws<ArgumentException>(() => model.Forward([new SequenceChunk(new[] { 1 }, 0, cache), new SequenceChunk(new[] { 2 }, 0, cache)], new float[2 * model.Shape.VocabSize]));
        Assert.Throws<KvCacheFullException>(() => model.Forward([new SequenceChunk(new int[9], 0, cache)], logits));
        Assert.Equal(0, cache.Length);
    }
}

using Harpia.Models;
using Harpia.Runtime;
using Harpia.Tokenization;

namespace Harpia.Tests.Runtime;

/// <summary>
/// Model-independent checks of the runtime over any <see cref="ICausalLM"/>: the fake model, and the real Falcon
/// (the bundled <c>models/harpia-tiny-falcon</c>, 6 layers, with its own tokenizer).
/// </summary>
public static class RuntimeConformance
{
    /// <summary>
    /// Greedy generation of every prompt alone (batch size 1, whole-prompt prefill) must equal, token for token,
    /// generating them all together with random arrival order and prefill chunks of <paramref name="prefillChunk"/>
    /// tokens in KV blocks of <paramref name="blockSize"/> positions.
    /// </summary>
    public static async Task AssertGreedyBatchedEqualsAloneAsync(ICausalLM model, ITokenizer tokenizer, ModelDescription description,
        IReadOnlyList<int[]> prompts, int maxNewTokens, int prefillChunk, int blockSize, int seed)
    {
        int longest = prompts.Max(p => p.Length);
        var limits = new GeneratorOptions { MaxInputTokens = longest, MaxTotalTokens = longest + maxNewTokens };
        var alone = new List<List<int>>();
        await using (var g = new Generator(model, tokenizer, description, limits with { MaxBatchSize = 1, PrefixCaching = false }))
            foreach (var p in prompts)
                alone.Add((await g.CompleteAsync(new GenerationRequest { PromptIds = p, MaxNewTokens = maxNewTokens })).Tokens.Select(t => t.Id).ToList());

        await using var batched = new Generator(model, tokenizer, description,
            limits with { MaxBatchPrefillTokens = prefillChunk, KvBlockSize = blockSize });
        var rng = new Random(seed);
        var tasks = new Task<GenerationResult>[prompts.Count];
        foreach (int i in Enumerable.Range(0, prompts.Count).OrderBy(_ => rng.Next()))
        {
            tasks[i] = batched.CompleteAsync(new GenerationRequest { PromptIds = prompts[i], MaxNewTokens = maxNewTokens });
            if (rng.Next(3) == 0) await Task.Delay(rng.Next(1, 4));
        }
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < prompts.Count; i++)
            Assert.True(alone[i].SequenceEqual(results[i].Tokens.Select(t => t.Id)),
                $"prompt {i}: alone [{string.Join(',', alone[i])}] batched [{string.Join(',', results[i].Tokens.Select(t => t.Id))}]");
    }
}

public class RuntimeConformanceTests
{
    [Fact]
    public async Task Fake_model_passes_the_batched_equals_alone_conformance_check()
    {
        var rng = new Random(31);
        var prompts = Enumerable.Range(0, 12).Select(_ => Enumerable.Range(0, rng.Next(1, 30)).Select(_ => rng.Next(2, 64)).ToArray()).ToList();
        await RuntimeConformance.AssertGreedyBatchedEqualsAloneAsync(new FakeCausalLM(), new FakeTokenizer(64),
            new ModelDescription("fake", 4096, 64, 0, null, null, null), prompts, maxNewTokens: 12, prefillChunk: 5, blockSize: 3, seed: 1);
    }

    [Fact]
    public async Task Real_falcon_passes_the_batched_equals_alone_conformance_check()
    {
        string path = Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon");
        using var model = ModelHost.LoadModel(path);
        var tokenizer = ModelHost.LoadTokenizer(model.Source, path) ?? throw new InvalidOperationException("no tokenizer beside " + path);
        var rng = new Random(37);
        var prompts = Enumerable.Range(0, 6)
            .Select(_ => Enumerable.Range(0, rng.Next(2, 24)).Select(_ => rng.Next(12, model.Shape.VocabSize)).ToArray()).ToList();
        await RuntimeConformance.AssertGreedyBatchedEqualsAloneAsync(model, tokenizer, ModelHost.Describe(model, path), prompts,
            maxNewTokens: 8, prefillChunk: 7, blockSize: 4, seed: 2);
    }
}

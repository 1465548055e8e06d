using Harpia.Models;
using Harpia.Runtime;
using Harpia.Runtime.Sampling;

namespace Harpia.Tests.Runtime;

public class GeneratorTests
{
    private const int Vocab = 64;
    private const int Eos = 0;

    private static ModelDescription Desc(int? eos = Eos) => new("fake", 4096, Vocab, eos, null, null, "<eos>");

    internal static Generator Make(ICausalLM model, GeneratorOptions? options = null, int? eos = Eos)
        => new(model, new FakeTokenizer(Vocab), Desc(eos), options ?? new GeneratorOptions { MaxInputTokens = 200, MaxTotalTokens = 400 });

    internal sealed record Result(List<int> Ids, string Text, FinishReason? Finish, List<GenerationEvent> Events);

    internal static async Task<Result> Collect(ITextGenerator g, GenerationRequest r, CancellationToken ct = default)
    {
        var events = new List<GenerationEvent>();
        await foreach (var e in g.GenerateAsync(r, ct)) events.Add(e);
        return new Result(events.Where(e => e.Token is not null).Select(e => e.Token!.Id).ToList(),
            string.Concat(events.Select(e => e.TextDelta)), events.LastOrDefault()?.Finish, events);
    }

    private static List<(int[] Prompt, int MaxNew)> RandomRequests(int count, int seed, int maxPrompt = 40, int maxNew = 20)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count)
            .Select(_ => (Enumerable.Range(0, rng.Next(1, maxPrompt + 1)).Select(_ => rng.Next(2, Vocab)).ToArray(), rng.Next(1, maxNew + 1)))
            .ToList();
    }

    public static TheoryData<int, int, int, long> Configurations => new()
    {
        // prefill budget, block size, arrival jitter (ms, 0 = all at once), KV budget in tokens
        { 4096, 16, 0, 16384 },
        { 7, 4, 3, 16384 },
        { 1, 1, 2, 4096 },
        { 13, 5, 1, 500 },   // small budget: preemption and recompute
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public async Task Greedy_batched_generation_equals_each_prompt_alone(int prefillBudget, int blockSize, int jitterMs, long kvTokens)
    {
        var requests = RandomRequests(24, seed: prefillBudget * 31 + blockSize);
        var reference = new FakeCausalLM();
        var expected = requests.Select(r => reference.GreedyReference(r.Prompt, r.MaxNew, Eos)).ToList();

        var model = new FakeCausalLM();
        await using var g = Make(model, new GeneratorOptions
        {
            MaxInputTokens = 200, MaxTotalTokens = 400, MaxBatchPrefillTokens = prefillBudget, KvBlockSize = blockSize,
            MaxBatchTotalTokens = kvTokens, PrefixCaching = false,
        });
        var rng = new Random(prefillBudget);
        var order = Enumerable.Range(0, requests.Count).OrderBy(_ => rng.Next()).ToArray();
        var tasks = new Task<Result>[requests.Count];
        foreach (int i in order)
        {
            tasks[i] = Collect(g, new GenerationRequest { PromptIds = requests[i].Prompt, MaxNewTokens = requests[i].MaxNew });
            if (jitterMs > 0) await Task.Delay(rng.Next(jitterMs + 1));
        }
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.Equal(expected[i], results[i].Ids);
            Assert.Equal(expected[i][^1] == Eos ? FinishReason.EosToken : FinishReason.Length, results[i].Finish);
        }
        Assert.True(model.MaxChunksInOneCall > 1, "no step batched more than one sequence");
        await WaitIdle(g);
    }

    [Fact]
    public async Task A_tiny_KV_budget_preempts_and_recomputes_without_changing_greedy_or_seeded_outputs()
    {
        var requests = RandomRequests(16, seed: 5, maxPrompt: 12, maxNew: 40);
        var reference = new FakeCausalLM();
        var model = new FakeCausalLM();
        // 48 positions for 16 sequences of up to 52: they cannot all run at once.
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 12, MaxTotalTokens = 52, KvBlockSize = 4, MaxBatchTotalTokens = 64 });
        var sampling = new SamplingParameters { DoSample = true, Temperature = 0.8f, TopK = 20, Seed = 99 };
        var greedy = requests.Select(r => Collect(g, new GenerationRequest { PromptIds = r.Prompt, MaxNewTokens = r.MaxNew, IgnoreEos = true })).ToArray();
        var sampled = requests.Select(r => Collect(g, new GenerationRequest { PromptIds = r.Prompt, MaxNewTokens = r.MaxNew, IgnoreEos = true, Sampling = sampling })).ToArray();
        var greedyResults = await Task.WhenAll(greedy);
        var sampledResults = await Task.WhenAll(sampled);
        Assert.True(g.Statistics.Preemptions > 0, "the budget was meant to force preemption");
        for (int i = 0; i < requests.Count; i++)
            Assert.Equal(reference.GreedyReference(requests[i].Prompt, requests[i].MaxNew, eos: null), greedyResults[i].Ids);

        // Each sampled request again, alone, in a fresh generator with room to spare: same tokens.
        await using var alone = Make(new FakeCausalLM(), new GeneratorOptions { MaxInputTokens = 12, MaxTotalTokens = 52 });
        for (int i = 0; i < requests.Count; i++)
        {
            var solo = await Collect(alone, new GenerationRequest { PromptIds = requests[i].Prompt, MaxNewTokens = requests[i].MaxNew, IgnoreEos = true, Sampling = sampling });
            Assert.Equal(solo.Ids, sampledResults[i].Ids);
        }
        await WaitIdle(g);
    }

    [Fact]
    public async Task Long_prompts_are_prefilled_in_chunks_while_other_streams_keep_decoding()
    {
        var model = new FakeCausalLM();
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 300, MaxTotalTokens = 400, MaxBatchPrefillTokens = 16, MaxBatchSize = 3 });
        var reference = new FakeCausalLM();
        var rng = new Random(4);
        int[] longPrompt = Enumerable.Range(0, 250).Select(_ => rng.Next(2, Vocab)).ToArray();
        var decoders = Enumerable.Range(0, 2).Select(i => Collect(g, new GenerationRequest { PromptIds = [20 + i], MaxNewTokens = 60, IgnoreEos = true })).ToArray();
        var first = await g.GenerateAsync(new GenerationRequest { PromptIds = [30], MaxNewTokens = 1 }).ToListAsync(); // let the decoders start
        var longOne = Collect(g, new GenerationRequest { PromptIds = longPrompt, MaxNewTokens = 5, IgnoreEos = true });
        var results = await Task.WhenAll(decoders.Append(longOne));
        Assert.Equal(reference.GreedyReference(longPrompt, 5, null), results[2].Ids);
        Assert.Equal(reference.GreedyReference([20], 60, null), results[0].Ids);
        Assert.True(model.MaxPrefillTokensInOneCall <= 16, $"a step prefilled {model.MaxPrefillTokensInOneCall} tokens");
        Assert.True(model.MaxChunksInOneCall <= 3);
        Assert.True(model.ForwardCalls >= 250 / 16);
        await WaitIdle(g);
    }

    [Fact]
    public async Task The_oldest_request_finishes_under_a_flood_of_newer_ones_and_a_tiny_budget()
    {
        var model = new FakeCausalLM();
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 8, MaxTotalTokens = 80, KvBlockSize = 4, MaxBatchTotalTokens = 96, MaxConcurrentRequests = 500 });
        var finished = new System.Collections.Concurrent.ConcurrentQueue<string>();
        // The flood starts once the old request has its first token (it is then certainly the oldest one admitted),
        // not after a fixed delay a loaded machine can overrun: a sleep of 20 ms let the flood overtake it under load.
        var admitted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var old = Task.Run(async () =>
        {
            await foreach (var e in g.GenerateAsync(new GenerationRequest { PromptIds = [3, 4, 5, 6, 7, 8, 9, 10], MaxNewTokens = 70, IgnoreEos = true }))
                if (e.Token is not null) admitted.TrySetResult();
            finished.Enqueue("old");
        });
        await Task.WhenAny(admitted.Task, old); // a failed old request ends the wait too; WhenAll below reports it
        var flood = Enumerable.Range(0, 200).Select(i => Task.Run(async () =>
        {
            await Task.Delay(i / 4);
            await Collect(g, new GenerationRequest { PromptIds = [2 + i % 50, 3, 4, 5, 6, 7], MaxNewTokens = 12, IgnoreEos = true });
            finished.Enqueue("new");
        })).ToArray();
        await Task.WhenAll(flood.Append(old));
        var order = finished.ToList();
        Assert.True(order.IndexOf("old") < order.Count - 20, $"the first request finished {order.IndexOf("old")}th of {order.Count}");
        await WaitIdle(g);
    }

    [Fact]
    public async Task Seeded_sampling_is_reproducible_and_reports_its_seed()
    {
        await using var g = Make(new FakeCausalLM());
        int[] prompt = [5, 6, 7];
        var p = new SamplingParameters { DoSample = true, Temperature = 1.2f, TopP = 0.95f, RepetitionPenalty = 1.3f, Seed = 1234 };
        var a = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 30, IgnoreEos = true, Sampling = p });
        var b = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 30, IgnoreEos = true, Sampling = p });
        var c = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 30, IgnoreEos = true, Sampling = p with { Seed = 1235 } });
        Assert.Equal(a.Ids, b.Ids);
        Assert.NotEqual(a.Ids, c.Ids);
        Assert.All(a.Events, e => Assert.Equal(1234UL, e.Seed));
        var unseeded = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 30, IgnoreEos = true, Sampling = p with { Seed = null } });
        ulong reported = unseeded.Events[0].Seed!.Value;
        var replay = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 30, IgnoreEos = true, Sampling = p with { Seed = reported } });
        Assert.Equal(unseeded.Ids, replay.Ids);
    }

    [Fact]
    public async Task Stop_sequence_across_tokens_ends_generation_and_is_not_emitted()
    {
        // a, " ", "ST", "OP", b …
        var model = new ScriptedCausalLM(Vocab, [2, 28, 30, 31, 3, 4, 5]) { PromptLength = 2 };
        await using var g = Make(model);
        var r = await Collect(g, new GenerationRequest { PromptIds = [9, 9], MaxNewTokens = 10, StopSequences = ["STOP"] });
        Assert.Equal([2, 28, 30, 31], r.Ids);
        Assert.Equal("a ", r.Text);
        Assert.Equal(FinishReason.StopSequence, r.Finish);
        Assert.Equal(4, r.Events[^1].GeneratedTokens);
        Assert.Equal(2, r.Events[^1].PromptTokens);
        Assert.Equal("", r.Events[2].TextDelta); // "ST" held back
    }

    [Fact]
    public async Task Eos_ends_generation_unless_ignored_and_max_new_tokens_ends_with_length()
    {
        var model = new ScriptedCausalLM(Vocab, [2, 3, Eos, 4, 5, 6, 7, 8]);
        await using var g = Make(model);
        var r = await Collect(g, new GenerationRequest { PromptIds = [9], MaxNewTokens = 10, StopSequences = ["cd"] });
        Assert.Equal([2, 3, Eos], r.Ids);
        Assert.Equal("ab", r.Text); // the special EOS is not text
        Assert.Equal(FinishReason.EosToken, r.Finish);
        Assert.True(r.Events[^1].Token!.Special);
        var ignored = await Collect(g, new GenerationRequest { PromptIds = [9], MaxNewTokens = 5, IgnoreEos = true });
        Assert.Equal([2, 3, Eos, 4, 5], ignored.Ids);
        Assert.Equal(FinishReason.Length, ignored.Finish);
        Assert.Equal("abcd", ignored.Text);
        Assert.Single(ignored.Events, e => e.Finish is not null);
    }

    [Fact]
    public async Task Prompt_logprobs_and_top_n_tokens_match_the_model_whatever_the_chunking()
    {
        int[] prompt = [3, 17, 42, 8, 8, 19, 60, 2, 33];
        var reference = new FakeCausalLM();
        var logits = new float[prompt.Length * Vocab];
        reference.Forward([new SequenceChunk(prompt, 0, new DenseKvCache(reference, reference.Shape.MaxPositions), AllLogits: true)], logits);
        foreach (int budget in new[] { 4096, 4, 1 })
        {
            await using var g = Make(new FakeCausalLM(), new GeneratorOptions { MaxInputTokens = 200, MaxTotalTokens = 400, MaxBatchPrefillTokens = budget });
            var r = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 3, PromptLogprobs = true, TopNTokens = 3, IgnoreEos = true });
            var prefill = r.Events[0].Prefill!;
            Assert.Equal(prompt, prefill.Select(t => t.Id));
            Assert.True(float.IsNaN(prefill[0].Logprob));
            for (int p = 1; p < prompt.Length; p++)
            {
                var row = logits.AsSpan((p - 1) * Vocab, Vocab);
                Assert.Equal(row[prompt[p]] - LogitsProcessors.LogSumExp(row), prefill[p].Logprob, 4);
            }
            Assert.Null(r.Events[1].Prefill);
            var last = logits.AsSpan((prompt.Length - 1) * Vocab, Vocab);
            var top = r.Events[0].Token!.TopTokens;
            Assert.Equal(3, top.Count);
            Assert.Equal(r.Ids[0], top[0].Id); // greedy picks the best
            Assert.Equal(last[top[0].Id] - LogitsProcessors.LogSumExp(last), top[0].Logprob, 4);
            Assert.True(top[0].Logprob >= top[1].Logprob && top[1].Logprob >= top[2].Logprob);
            Assert.Equal(FakeTokenizer.Piece(top[1].Id), top[1].Text);
        }
    }

    [Fact]
    public async Task Prompt_logprobs_of_a_long_prompt_come_in_bounded_chunks()
    {
        var rng = new Random(12);
        int[] prompt = Enumerable.Range(0, 600).Select(_ => rng.Next(2, Vocab)).ToArray();
        var reference = new FakeCausalLM();
        var logits = new float[prompt.Length * Vocab];
        reference.Forward([new SequenceChunk(prompt, 0, new DenseKvCache(reference, reference.Shape.MaxPositions), AllLogits: true)], logits);
        var model = new FakeCausalLM();
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 700, MaxTotalTokens = 800 });
        var r = await Collect(g, new GenerationRequest { PromptIds = prompt, MaxNewTokens = 2, PromptLogprobs = true, IgnoreEos = true });
        var prefill = r.Events[0].Prefill!;
        Assert.Equal(600, prefill.Count);
        foreach (int p in new[] { 1, 255, 256, 257, 511, 512, 599 })
        {
            var row = logits.AsSpan((p - 1) * Vocab, Vocab);
            Assert.Equal(row[prompt[p]] - LogitsProcessors.LogSumExp(row), prefill[p].Logprob, 4);
        }
        Assert.True(model.MaxPrefillTokensInOneCall <= 256, $"{model.MaxPrefillTokensInOneCall} prompt tokens with all logits in one call");
        Assert.Equal(reference.GreedyReference(prompt, 2, null), r.Ids);
    }

    [Fact]
    public async Task Shared_prompt_prefixes_reuse_KV_blocks_and_give_the_same_output()
    {
        var rng = new Random(8);
        int[] system = Enumerable.Range(0, 40).Select(_ => rng.Next(2, Vocab)).ToArray();
        int[] p1 = [.. system, 5, 6], p2 = [.. system, 7];
        var reference = new FakeCausalLM();
        var model = new FakeCausalLM();
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 200, MaxTotalTokens = 400, KvBlockSize = 8 });
        var a = await Collect(g, new GenerationRequest { PromptIds = p1, MaxNewTokens = 6, IgnoreEos = true });
        int seenAfterFirst = model.TotalTokensSeen;
        var b = await Collect(g, new GenerationRequest { PromptIds = p2, MaxNewTokens = 6, IgnoreEos = true });
        Assert.Equal(reference.GreedyReference(p1, 6, null), a.Ids);
        Assert.Equal(reference.GreedyReference(p2, 6, null), b.Ids);
        Assert.Equal(40, g.Statistics.PrefixCacheHitTokens); // 5 full blocks of 8
        // Only the last prompt token is computed, then 5 decode steps (the first new token comes from the prompt pass).
        Assert.Equal(1 + 5, model.TotalTokensSeen - seenAfterFirst);
        await WaitIdle(g);
    }

    [Fact]
    public async Task Shared_prefixes_under_a_tight_budget_with_preemption_and_eviction_still_match_the_reference()
    {
        var rng = new Random(77);
        var systems = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, rng.Next(6, 20)).Select(_ => rng.Next(2, Vocab)).ToArray()).ToArray();
        var requests = Enumerable.Range(0, 30).Select(_ =>
        {
            var sys = systems[rng.Next(systems.Length)];
            int[] prompt = [.. sys.Take(rng.Next(1, sys.Length + 1)), .. Enumerable.Range(0, rng.Next(0, 4)).Select(_ => rng.Next(2, Vocab))];
            return (Prompt: prompt, MaxNew: rng.Next(1, 25));
        }).ToList();
        var reference = new FakeCausalLM();
        var model = new FakeCausalLM();
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 24, MaxTotalTokens = 50, KvBlockSize = 3, MaxBatchTotalTokens = 120, MaxBatchPrefillTokens = 10 });
        var tasks = new List<Task<Result>>();
        foreach (var r in requests)
        {
            tasks.Add(Collect(g, new GenerationRequest { PromptIds = r.Prompt, MaxNewTokens = r.MaxNew, IgnoreEos = true }));
            await Task.Delay(rng.Next(3));
        }
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < requests.Count; i++)
            Assert.Equal(reference.GreedyReference(requests[i].Prompt, requests[i].MaxNew, null), results[i].Ids);
        Assert.True(g.Statistics.PrefixCacheHitTokens > 0);
        await WaitIdle(g);
    }

    [Fact]
    public async Task Cancellation_and_abandoned_streams_free_their_blocks_at_once()
    {
        // The model runs one step per permit the test releases: one per token the consumer has seen, so at the
        // cancellation the model is at most one step ahead, whatever the scheduling. Then 200 permits are released:
        // an ignored cancellation would compute them; a heeded one computes at most the step already under way.
        var model = new FakeCausalLM { Steps = new SemaphoreSlim(1) };
        await using var g = Make(model, new GeneratorOptions { MaxInputTokens = 200, MaxTotalTokens = 2000, MaxBatchTotalTokens = 4000 });
        var request = new GenerationRequest { PromptIds = [4, 5, 6], MaxNewTokens = 1900, IgnoreEos = true };
        using var cts = new CancellationTokenSource();
        int seen = 0, seenAtCancel = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var e in g.GenerateAsync(request, cts.Token))
            {
                if (++seen == 3) { seenAtCancel = model.TotalTokensSeen; cts.Cancel(); }
                else model.Steps.Release();
            }
        });
        model.Steps.Release(200);
        await WaitIdle(g);
        Assert.Equal(3, seen);
        // A decode step sees one token; the step the model was allowed before the cancellation may still complete.
        const int stepUnderWay = 1;
        Assert.True(model.TotalTokensSeen <= seenAtCancel + stepUnderWay, $"{model.TotalTokensSeen - seenAtCancel} tokens were computed after the cancellation");

        int before = 0;
        model.Steps = new SemaphoreSlim(1);
        await foreach (var e in g.GenerateAsync(request))
        {
            if (e.GeneratedTokens == 5) { before = model.TotalTokensSeen; break; } // abandons the enumerator
            model.Steps.Release();
        }
        model.Steps.Release(200);
        await WaitIdle(g);
        Assert.True(model.TotalTokensSeen <= before + stepUnderWay, $"{model.TotalTokensSeen - before} tokens were computed after the stream was abandoned");
    }

    [Fact]
    public async Task Invalid_requests_are_refused_with_a_validation_error_naming_the_field()
    {
        await using var g = Make(new FakeCausalLM(), new GeneratorOptions { MaxInputTokens = 10, MaxTotalTokens = 20 });
        void Refused(GenerationRequest r, string field)
        {
            var ex = Assert.Throws<GenerationValidationException>(() => g.GenerateAsync(r));
            Assert.Contains(field, ex.Message);
        }
        var ok = new GenerationRequest { PromptIds = [1, 2, 3], MaxNewTokens = 5 };
        Refused(ok with { PromptIds = [] }, "inputs");
        Refused(ok with { PromptIds = [1, Vocab] }, "inputs");
        Refused(ok with { PromptIds = Enumerable.Repeat(2, 11).ToArray() }, "inputs");
        Refused(ok with { MaxNewTokens = 18 }, "max_new_tokens");
        Refused(ok with { MaxNewTokens = 0 }, "max_new_tokens");
        Refused(ok with { Sampling = new() { Temperature = 0 } }, "temperature");
        Refused(ok with { Sampling = new() { Temperature = float.NaN } }, "temperature");
        Refused(ok with { Sampling = new() { TopK = -1 } }, "top_k");
        Refused(ok with { Sampling = new() { TopP = 0 } }, "top_p");
        Refused(ok with { Sampling = new() { TopP = 1.1f } }, "top_p");
        Refused(ok with { Sampling = new() { TypicalP = 0 } }, "typical_p");
        Refused(ok with { Sampling = new() { RepetitionPenalty = 0 } }, "repetition_penalty");
        Refused(ok with { Sampling = new() { FrequencyPenalty = 3 } }, "frequency_penalty");
        Refused(ok with { Sampling = new() { PresencePenalty = -2.5f } }, "presence_penalty");
        Refused(ok with { TopNTokens = 6 }, "top_n_tokens");
        Refused(ok with { StopSequences = ["a", "b", "c", "d", "e"] }, "stop");
        Refused(ok with { StopSequences = [""] }, "stop");
        Assert.IsAssignableFrom<HarpiaException>(new GenerationValidationException("x"));
        Assert.Equal(2, (await Collect(g, ok with { MaxNewTokens = 2, IgnoreEos = true })).Ids.Count);
    }

    [Fact]
    public void Options_that_can_never_serve_a_request_are_rejected()
    {
        var model = new FakeCausalLM(maxPositions: 100);
        Assert.Throws<HarpiaException>(() => Make(model, new GeneratorOptions { MaxInputTokens = 10, MaxTotalTokens = 200 }));
        Assert.Throws<HarpiaException>(() => Make(model, new GeneratorOptions { MaxInputTokens = 20, MaxTotalTokens = 10 }));
        Assert.Throws<HarpiaException>(() => Make(model, new GeneratorOptions { MaxInputTokens = 10, MaxTotalTokens = 90, MaxBatchTotalTokens = 50 }));
    }

    [Fact]
    public async Task Over_max_concurrent_requests_is_refused_until_one_finishes()
    {
        await using var g = Make(new FakeCausalLM(), new GeneratorOptions { MaxInputTokens = 10, MaxTotalTokens = 3000, MaxConcurrentRequests = 2 });
        var req = new GenerationRequest { PromptIds = [3], MaxNewTokens = 2900, IgnoreEos = true };
        using var cts = new CancellationTokenSource();
        var e1 = g.GenerateAsync(req, cts.Token).GetAsyncEnumerator();
        var e2 = g.GenerateAsync(req, cts.Token).GetAsyncEnumerator();
        Assert.True(await e1.MoveNextAsync());
        Assert.True(await e2.MoveNextAsync());
        var e3 = g.GenerateAsync(req).GetAsyncEnumerator();
        await Assert.ThrowsAsync<GeneratorOverloadedException>(async () => await e3.MoveNextAsync());
        await e1.DisposeAsync();
        var ok = await Collect(g, req with { MaxNewTokens = 2 });
        Assert.Equal(2, ok.Ids.Count);
        await e2.DisposeAsync();
        await WaitIdle(g);
    }

    [Fact]
    public async Task A_model_failure_fails_only_the_affected_request_and_the_loop_goes_on()
    {
        const int poison = 63;
        var model = new FakeCausalLM { FailWhen = batch => batch.Any(c => c.StartPosition == 0 && c.Tokens.Length == 2 && c.Tokens.Span[1] == poison) };
        var reference = new FakeCausalLM();
        await using var g = Make(model);
        var good = Enumerable.Range(0, 6).Select(i => Collect(g, new GenerationRequest { PromptIds = [10 + i, 11], MaxNewTokens = 20, IgnoreEos = true })).ToArray();
        var bad = Collect(g, new GenerationRequest { PromptIds = [5, poison], MaxNewTokens = 20 });
        var ex = await Assert.ThrowsAsync<GenerationFailedException>(() => bad);
        Assert.Contains("fake model failure", ex.Message);
        for (int i = 0; i < good.Length; i++)
            Assert.Equal(reference.GreedyReference([10 + i, 11], 20, null), (await good[i]).Ids);
        var after = await Collect(g, new GenerationRequest { PromptIds = [7], MaxNewTokens = 3, IgnoreEos = true });
        Assert.Equal(3, after.Ids.Count);
        await WaitIdle(g);
    }

    [Fact]
    public async Task Disposing_the_generator_ends_streams_with_an_error()
    {
        var g = Make(new FakeCausalLM(), new GeneratorOptions { MaxInputTokens = 10, MaxTotalTokens = 3000 });
        var e = g.GenerateAsync(new GenerationRequest { PromptIds = [3], MaxNewTokens = 2900, IgnoreEos = true }).GetAsyncEnumerator();
        Assert.True(await e.MoveNextAsync());
        await g.DisposeAsync();
        await Assert.ThrowsAsync<GenerationFailedException>(async () => { while (await e.MoveNextAsync()) { } });
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await Collect(g, new GenerationRequest { PromptIds = [3], MaxNewTokens = 2 }));
    }

    /// <summary>Waits until no sequence is queued or running, then checks that every KV block is back in the pool.</summary>
    internal static async Task WaitIdle(Generator g)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            var s = g.Statistics;
            if (s.Running == 0 && s.Waiting == 0 && s.InFlightRequests == 0 && s.KvBlocksUsed == 0) break;
            await Task.Delay(5);
        }
        var st = g.Statistics;
        Assert.Equal(0, st.Running);
        Assert.Equal(0, st.Waiting);
        Assert.Equal(0, st.InFlightRequests);
        Assert.Equal(0, st.KvBlocksUsed);
        Assert.Equal(g.KvPool.TotalBlocks, g.KvPool.AvailableBlocks);
    }

    [Fact]
    public async Task A_grammar_shapes_sampled_and_greedy_text_and_ends_it()
    {
        var pattern = Harpia.Runtime.Grammar.Grammars.Regex("[a-f]{3}( [a-f]{2})?");
        await using var g = Make(new FakeCausalLM());
        for (ulong seed = 1; seed <= 12; seed++)
        {
            var r = await Collect(g, new GenerationRequest
            {
                PromptIds = [5, 6, 7], MaxNewTokens = 30, Grammar = pattern,
                Sampling = new SamplingParameters { DoSample = seed > 1, Temperature = 1.5f, Seed = seed },
            });
            Assert.Matches("^[a-f]{3}( [a-f]{2})?$", r.Text);
            Assert.Equal(FinishReason.EosToken, r.Finish);
            Assert.Equal(0, r.Ids[^1]); // EOS
        }

        // A model without EOS ends once the match is complete and nothing can extend it.
        await using var noEos = Make(new FakeCausalLM(), eos: null);
        var done = await Collect(noEos, new GenerationRequest { PromptIds = [5], MaxNewTokens = 30, Grammar = Harpia.Runtime.Grammar.Grammars.Regex("[a-c]{4}") });
        Assert.Matches("^[a-c]{4}$", done.Text);
        Assert.Equal(4, done.Ids.Count);
        Assert.Equal(FinishReason.EosToken, done.Finish);

        Assert.Throws<GenerationValidationException>(() => { g.GenerateAsync(new GenerationRequest { PromptIds = [5], IgnoreEos = true, Grammar = pattern }); });
    }
}

public class TextGeneratorExtensionsTests
{
    [Fact]
    public async Task CompleteAsync_collects_text_tokens_and_finish()
    {
        var model = new ScriptedCausalLM(64, [2, 3, 28, 4, 0]) { PromptLength = 3 };
        await using var g = new Generator(model, new FakeTokenizer(64), new ModelDescription("fake", 4096, 64, 0, null, null, "<eos>"));
        var r = await g.CompleteAsync(new GenerationRequest { PromptIds = [5, 6, 7], MaxNewTokens = 10 });
        Assert.Equal("ab c", r.Text);
        Assert.Equal([2, 3, 28, 4, 0], r.Tokens.Select(t => t.Id));
        Assert.Equal(FinishReason.EosToken, r.Finish);
        Assert.Equal(3, r.PromptTokens);
        Assert.Null(r.Seed);
        // Defaults resolve against the model: 4096 positions → 4096 total, 4095 input.
        Assert.Equal(4096, g.Options.MaxTotalTokens);
        Assert.Equal(4095, g.Options.MaxInputTokens);
    }
}

[Collection(SerialRuntimeCollection.Name)]
public class GeneratorSoakTests
{
    [Fact]
    public async Task Soak_thousands_of_short_requests_with_random_cancellations_leak_nothing()
    {
        var model = new FakeCausalLM(layers: 1, kvHeads: 1, headDim: 2);
        await using var g = GeneratorTests.Make(model, new GeneratorOptions
        {
            MaxInputTokens = 8, MaxTotalTokens = 24, KvBlockSize = 4, MaxBatchTotalTokens = 96, MaxBatchPrefillTokens = 16,
            MaxConcurrentRequests = 64,
        });
        for (int round = 0; round < 2; round++)
        {
            // Every request object of the round, weakly: a generator that keeps a finished or cancelled sequence
            // (which holds its request) keeps it alive, and the count below says how many leaked.
            var requests = new List<(int Index, int Mode, WeakReference Request)>();
            var rng = new Random(round);
            var throttle = new SemaphoreSlim(48);
            var tasks = new List<Task>();
            for (int i = 0; i < 1500; i++)
            {
                await throttle.WaitAsync();
                int promptLength = rng.Next(1, 9), maxNew = rng.Next(1, 16), mode = rng.Next(4), cancelAfter = rng.Next(0, 4);
                int seed = rng.Next(), index = i;
                tasks.Add(Task.Run(async () =>
                {
                    try
                    {
                        var r = new Random(seed);
                        var request = new GenerationRequest
                        {
                            PromptIds = Enumerable.Range(0, promptLength).Select(_ => r.Next(2, 64)).ToArray(),
                            MaxNewTokens = maxNew,
                            Sampling = new SamplingParameters { DoSample = mode == 3, Seed = (ulong)seed },
                        };
                        lock (requests) requests.Add((index, mode, new WeakReference(request)));
                        using var cts = new CancellationTokenSource();
                        int n = 0;
                        await foreach (var e in g.GenerateAsync(request, cts.Token))
                        {
                            n++;
                            if (mode == 0 && n > cancelAfter) cts.Cancel();
                            if (mode == 1 && n > cancelAfter) break;
                        }
                    }
                    catch (OperationCanceledException) { }
                    finally { throttle.Release(); }
                }));
            }
            await Task.WhenAll(tasks);
            tasks.Clear();
            await GeneratorTests.WaitIdle(g);
            Assert.True(g.KvPool.AllocatedBytes <= g.KvPool.TotalBlocks * g.KvPool.BytesPerBlock);
            // No block is still referenced by a sequence that ended, and storage was really handed out and is whole blocks.
            Assert.Equal(0, g.KvPool.UsedBlocks);
            Assert.Equal(g.KvPool.TotalBlocks, g.KvPool.AvailableBlocks);
            Assert.True(g.KvPool.AllocatedBytes > 0);
            Assert.Equal(0, g.KvPool.AllocatedBytes % g.KvPool.BytesPerBlock);
            Assert.Equal(1500, requests.Count);
            await StillAlive(requests.Select(r => r.Request).ToList());
            var alive = requests.Where(r => r.Request.IsAlive).Select(r => $"#{r.Index} mode {r.Mode}").ToList();
            Assert.True(alive.Count == 0, $"round {round}: still referenced after the generator went idle: {string.Join(", ", alive)}");
        }
        Assert.True(g.Statistics.Preemptions > 0);
    }

    /// <summary>How many of <paramref name="refs"/> survive full collections (a few rounds: finalizers and the
    /// thread pool's last work items may hold a reference for a moment after the requests complete).</summary>
    private static async Task<int> StillAlive(List<WeakReference> refs)
    {
        int alive = refs.Count;
        for (int attempt = 0; attempt < 20 && alive > 0; attempt++)
        {
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            alive = refs.Count(r => r.IsAlive);
            if (alive > 0) await Task.Yield();
        }
        return alive;
    }
}

using System.Net;
using System.Text.Json;
using Harpia.Server;

namespace Harpia.Tests.Server;

/// <summary>OpenAI's <c>n</c>: several choices per prompt, each its own generation, on both OpenAI routes.</summary>
public sealed class OpenAiChoicesTests
{
    static List<JsonElement> Chunks(List<string> events)
    {
        Assert.Equal("[DONE]", events[^1]);
        Assert.Equal(1, events.Count(e => e == "[DONE]"));
        return events[..^1].Select(e => JsonDocument.Parse(e).RootElement.Clone()).ToList();
    }

    [Fact]
    public async Task Chat_n_gives_n_choices_seeded_s_plus_k_with_usage_summed()
    {
        await using var server = await TestServer.StartAsync();
        const string request = """{"messages":[{"role":"user","content":"Hi"}],"n":3,"temperature":0.7,"seed":5}""";
        var (status, body) = await server.PostAsync("/v1/chat/completions", request);
        Assert.Equal(200, status);
        var choices = body.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        string[] texts = ["Hello from Harpia 5.", "Hello from Harpia 6.", "Hello from Harpia 7."];
        Assert.Equal(texts, choices.Select(c => c.GetProperty("message").GetProperty("content").GetString()));
        Assert.All(choices, c => Assert.Equal("stop", c.GetProperty("finish_reason").GetString()));
        Assert.Equal([5UL, 6UL, 7UL], server.Generator.Requests.Select(r => r.Sampling.Seed!.Value).Order());
        var usage = body.GetProperty("usage");
        int promptTokens = "User: Hi\nFalcon:".Length;
        Assert.Equal(promptTokens, usage.GetProperty("prompt_tokens").GetInt32()); // once, not per choice
        Assert.Equal(3 * 21, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(promptTokens + 63, usage.GetProperty("total_tokens").GetInt32());

        // Reproducible: the same request gives the same choices.
        (_, body) = await server.PostAsync("/v1/chat/completions", request);
        Assert.Equal(texts, body.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("message").GetProperty("content").GetString()));

        // Greedy with n > 1 is allowed: the choices are alike.
        (status, body) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"n":2,"temperature":0}""");
        Assert.Equal(200, status);
        Assert.Equal(["Hello from Harpia.", "Hello from Harpia."],
            body.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("message").GetProperty("content").GetString()));
    }

    [Fact]
    public async Task The_choices_run_at_once()
    {
        // No choice emits a token before all four have started: run one after another, the first would wait out the
        // minute-long guard alone and the most alive at once would be one; run at once, it is four. No timing window.
        var allStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var generator = new FakeGenerator { FirstTokenGate = allStarted.Task };
        int mostAlive = 0, starts = 0;
        generator.Script = (_, _) =>
        {
            InterlockedMax(ref mostAlive, generator.Active);
            if (Interlocked.Increment(ref starts) == 4) allStarted.TrySetResult();
            return "Hi.";
        };
        await using var server = await TestServer.StartAsync(generator);
        var (status, _) = await server.PostAsync("/v1/completions", """{"prompt":["a","b"],"n":2,"max_tokens":5}""");
        Assert.Equal(200, status);
        Assert.Equal(4, generator.Started);
        Assert.Equal(4, mostAlive);

        static void InterlockedMax(ref int target, int value)
        {
            int seen;
            while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen) { }
        }
    }

    [Fact]
    public async Task Chat_stream_with_n_tags_chunks_by_index_and_ends_once()
    {
        await using var server = await TestServer.StartAsync();
        var (response, events) = await server.PostSseAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"Hi"}],"n":2,"temperature":1,"seed":40,"stream":true,"stream_options":{"include_usage":true}}""");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var chunks = Chunks(events);
        var usage = chunks[^1];
        Assert.Equal(0, usage.GetProperty("choices").GetArrayLength());
        Assert.Equal(2 * 21, usage.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("User: Hi\nFalcon:".Length, usage.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var choices = chunks[..^1].Select(c => Assert.Single(c.GetProperty("choices").EnumerateArray())).ToList();
        for (int k = 0; k < 2; k++)
        {
            var mine = choices.Where(c => c.GetProperty("index").GetInt32() == k).ToList();
            Assert.Equal("assistant", mine[0].GetProperty("delta").GetProperty("role").GetString());
            Assert.Equal($"Hello from Harpia {k}.", string.Concat(mine.Select(c => c.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : "")));
            Assert.Equal("stop", mine[^1].GetProperty("finish_reason").GetString());
            Assert.Single(mine, c => c.GetProperty("finish_reason").ValueKind == JsonValueKind.String);
        }
        Assert.Equal(choices.Count, choices.Count(c => c.GetProperty("index").GetInt32() is 0 or 1));
    }

    [Fact]
    public async Task Completions_n_orders_choices_prompt_by_prompt()
    {
        var generator = new FakeGenerator { Script = (p, r) => $"{p}{r.Sampling.Seed}" };
        await using var server = await TestServer.StartAsync(generator);
        var (status, body) = await server.PostAsync("/v1/completions", """{"prompt":["a","b"],"n":2,"temperature":1,"seed":3,"max_tokens":10}""");
        Assert.Equal(200, status);
        var choices = body.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2, 3], choices.Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal(["a3", "a4", "b3", "b4"], choices.Select(c => c.GetProperty("text").GetString()));
        Assert.Equal(2, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32()); // one token per prompt, once each
        Assert.Equal(4 * 3, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // Streaming: several prompts × n, echoed, each choice's text under its own index.
        var (_, events) = await server.PostSseAsync("/v1/completions",
            """{"prompt":["a","b"],"n":2,"temperature":1,"seed":3,"max_tokens":10,"echo":true,"stream":true,"stream_options":{"include_usage":true}}""");
        var chunks = Chunks(events);
        Assert.Equal(12, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(2, chunks[^1].GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var choiceChunks = chunks[..^1].Select(c => Assert.Single(c.GetProperty("choices").EnumerateArray())).ToList();
        string[] expected = ["aa3", "aa4", "bb3", "bb4"];
        for (int j = 0; j < 4; j++)
        {
            var mine = choiceChunks.Where(c => c.GetProperty("index").GetInt32() == j).ToList();
            Assert.Equal(expected[j], string.Concat(mine.Select(c => c.GetProperty("text").GetString())));
            Assert.Equal("stop", mine[^1].GetProperty("finish_reason").GetString());
        }
    }

    [Fact]
    public async Task Completions_best_of_keeps_the_n_most_likely_per_prompt()
    {
        // The fake's sampled logprob of token i is -((seed + i) % 7) / 10 - 0.05: with these replies, seed 11 ("b",
        // then EOS) sums to -1.0, seed 12 ("cc") to -1.25, seed 10 ("aaaa") to -2.05.
        var generator = new FakeGenerator { Script = (_, r) => r.Sampling.Seed switch { 10 => "aaaa", 11 => "b", _ => "cc" } };
        await using var server = await TestServer.StartAsync(generator);
        var (status, body) = await server.PostAsync("/v1/completions",
            """{"prompt":["p","q"],"n":2,"best_of":3,"temperature":1,"seed":10,"max_tokens":10,"logprobs":0}""");
        Assert.Equal(200, status);
        Assert.Equal(6, generator.Started);
        var choices = body.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2, 3], choices.Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal(["b", "cc", "b", "cc"], choices.Select(c => c.GetProperty("text").GetString()));
        Assert.Equal(-1.0, choices[0].GetProperty("logprobs").GetProperty("token_logprobs").EnumerateArray().Sum(e => e.GetDouble()), 4);
        Assert.Equal(2 * (5 + 2 + 3), body.GetProperty("usage").GetProperty("completion_tokens").GetInt32()); // every run counts
        Assert.Equal(2, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        (status, body) = await server.PostAsync("/v1/completions", """{"prompt":"p","best_of":2,"temperature":1,"seed":10,"max_tokens":10}""");
        Assert.Equal("b", Assert.Single(body.GetProperty("choices").EnumerateArray()).GetProperty("text").GetString());

        foreach (var (json, message) in new[]
        {
            ("""{"prompt":"p","n":3,"best_of":2}""", "`best_of` must be >= `n` (3) and <= 8. Given: 2"),
            ("""{"prompt":"p","best_of":9}""", "`best_of` must be >= `n` (1) and <= 8. Given: 9"),
            ("""{"prompt":"p","best_of":2,"stream":true}""", "`best_of` > `n` is not allowed when streaming: the best are known only at the end"),
        })
        {
            (status, body) = await server.PostAsync("/v1/completions", json);
            Assert.Equal(422, status);
            Assert.Equal("Input validation error: " + message, body.GetProperty("error").GetString());
        }
    }

    [Fact]
    public async Task N_is_capped_and_holds_a_slot_per_choice()
    {
        await using var server = await TestServer.StartAsync(options: new ServerOptions { MaxConcurrentRequests = 3, MaxN = 4 });
        foreach (var (path, json) in new[]
        {
            ("/v1/completions", """{"prompt":"x","n":5}"""),
            ("/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"n":5}"""),
        })
        {
            var (status, body) = await server.PostAsync(path, json);
            Assert.Equal(422, status);
            Assert.Equal("Input validation error: `n` must be >= 1 and <= 4. Given: 5", body.GetProperty("error").GetString());
        }
        // Four generations do not fit in three slots: 429, and every slot is back.
        var (s, b) = await server.PostAsync("/v1/completions", """{"prompt":["x","y"],"n":2,"max_tokens":2}""");
        Assert.Equal(429, s);
        Assert.Equal("overloaded", b.GetProperty("error_type").GetString());
        Assert.Equal(0, server.Generator.Started);
        Assert.Equal(0, server.State.ActiveGenerations);
        (s, _) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"n":3,"max_tokens":2}""");
        Assert.Equal(200, s);
        Assert.Equal(0, server.State.ActiveGenerations);
    }

    [Fact]
    public async Task One_failing_choice_fails_the_request_and_stops_the_others()
    {
        var generator = new FakeGenerator { TokenDelay = TimeSpan.FromMilliseconds(5) };
        generator.Script = (_, r) => r.Sampling.Seed == 11 ? throw new InvalidOperationException("choice 1 broke") : new string('z', 200);
        await using var server = await TestServer.StartAsync(generator);
        var (status, body) = await server.PostAsync("/v1/completions", """{"prompt":"x","n":3,"temperature":1,"seed":10,"max_tokens":200}""");
        Assert.Equal(424, status);
        Assert.Contains("choice 1 broke", body.GetProperty("error").GetString());
        Assert.Equal(3, generator.Started);
        Assert.Equal(0, generator.Active);
        Assert.Equal(0, generator.Completed); // the other two were cancelled, not run to the end
        Assert.Equal(0, server.State.ActiveGenerations);
    }
}

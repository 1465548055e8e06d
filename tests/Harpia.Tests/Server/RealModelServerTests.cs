using System.ClientModel;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Harpia.Cli.Commands;
using Harpia.Models.Falcon;
using Harpia.Runtime;
using Harpia.Server;
using Microsoft.AspNetCore.Builder;
using OpenAI;
using OpenAI.Chat;

namespace Harpia.Tests.Server;

/// <summary>
/// The whole stack with nothing faked: the bundled tiny Falcon loaded through <see cref="ModelHost"/> (as
/// `harpia serve` with no --model-id does), the continuous-batching runtime, the real server on loopback, and real
/// clients. What the server returns must be what the model computes when run directly.
/// </summary>
public sealed class RealModelServerTests
{
    static readonly string ModelPath = Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon");

    sealed class Running : IAsyncDisposable
    {
        public required WebApplication App { get; init; }
        public required Generator Generator { get; init; }
        public required HttpClient Http { get; init; }
        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            await App.StopAsync();
            await App.DisposeAsync();
            Generator.Dispose();
        }
    }

    static async Task<Running> StartAsync(int maxConcurrentRequests = 32)
    {
        var generator = ModelHost.OpenGenerator(ModelPath, new GeneratorOptions { MaxConcurrentRequests = maxConcurrentRequests });
        var app = HarpiaServer.Build(new ServerOptions { Port = 0, Hostname = "127.0.0.1", MaxConcurrentRequests = maxConcurrentRequests }, generator);
        await app.StartAsync();
        return new Running
        {
            App = app, Generator = generator,
            Http = new HttpClient { BaseAddress = HarpiaServer.BoundAddress(app), Timeout = TimeSpan.FromSeconds(120) },
        };
    }

    /// <summary>Greedy continuation computed by the model alone (no runtime, no server).</summary>
    static int[] DirectGreedy(string prompt, int maxNewTokens)
    {
        using var model = FalconModel.Load(ModelPath);
        var tokenizer = ModelHost.LoadTokenizer(model.Source, ModelPath)!;
        var ids = tokenizer.Encode(prompt).ToArray();
        // A plain loop over a stand-alone cache (not the Generator the server runs, nor `harpia generate`, which uses it).
        using var cache = new Harpia.Models.DenseKvCache(model, ids.Length + maxNewTokens);
        var logits = new float[model.Shape.VocabSize];
        var output = new List<int>();
        model.Forward([new Harpia.Models.SequenceChunk(ids, 0, cache)], logits);
        while (true)
        {
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            output.Add(next);
            if (next == model.EosTokenId || output.Count == maxNewTokens) return output.ToArray();
            model.Forward([new Harpia.Models.SequenceChunk(new[] { next }, cache.Length, cache)], logits);
        }
    }

    [Fact]
    public async Task Tgi_tokenize_gives_the_input_slices_the_tokens_cover()
    {
        await using var server = await StartAsync();
        const string text = "Olá, mundo: ação 2026!";
        using var response = await server.Http.PostAsJsonAsync("/tokenize", new { inputs = text });
        Assert.Equal(200, (int)response.StatusCode);
        var tokens = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.EnumerateArray().ToList();
        Assert.Equal(server.Generator.Tokenizer.Encode(text), tokens.Select(t => t.GetProperty("id").GetInt32()));
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        foreach (var t in tokens)
        {
            int start = t.GetProperty("start").GetInt32(), stop = t.GetProperty("stop").GetInt32();
            Assert.Equal(Encoding.UTF8.GetString(bytes, start, stop - start), t.GetProperty("text").GetString());
        }
        Assert.Equal(bytes.Length, tokens[^1].GetProperty("stop").GetInt32());

        var info = JsonDocument.Parse(await server.Http.GetStringAsync("/info")).RootElement;
        Assert.Equal("torch.bfloat16", info.GetProperty("model_dtype").GetString()); // the bundled model is bf16 safetensors
        Assert.Equal("harpia-tiny-falcon", info.GetProperty("model_id").GetString());
    }

    [Theory]
    [InlineData("model-Q4_K_M.gguf", "Q4_K")]
    [InlineData("model-Q8_0.gguf", "Q8_0")]
    [InlineData("model-f32.gguf", "torch.float32")]
    public void Model_dtype_is_the_type_of_most_weights(string file, string dtype)
    {
        string path = Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), file);
        using var model = FalconModel.Load(path);
        Assert.Equal(dtype, ModelHost.Describe(model, path).Dtype);
    }

    [Fact]
    public async Task Tgi_generate_returns_what_the_model_computes()
    {
        const string prompt = "The river flows";
        var expected = DirectGreedy(prompt, 12);
        await using var server = await StartAsync();

        using var response = await server.Http.PostAsJsonAsync("/generate", new
        {
            inputs = prompt,
            parameters = new { max_new_tokens = 12, details = true, decoder_input_details = true },
        });
        Assert.Equal(200, (int)response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        var details = body.GetProperty("details");
        var ids = details.GetProperty("tokens").EnumerateArray().Select(t => t.GetProperty("id").GetInt32()).ToArray();
        Assert.Equal(expected, ids);
        Assert.Equal(expected.Length, details.GetProperty("generated_tokens").GetInt32());
        Assert.Equal(server.Generator.Tokenizer.Decode(expected, skipSpecialTokens: true), body.GetProperty("generated_text").GetString());
        Assert.Equal(server.Generator.Tokenizer.Encode(prompt).Count, details.GetProperty("prefill").GetArrayLength());
        foreach (var t in details.GetProperty("tokens").EnumerateArray())
            Assert.True(t.GetProperty("logprob").GetDouble() <= 0);

        // The stream carries the same tokens, and its final event the same text.
        using var stream = await server.Http.PostAsJsonAsync("/generate_stream", new { inputs = prompt, parameters = new { max_new_tokens = 12 } });
        var events = (await stream.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(e => JsonDocument.Parse(e["data:".Length..]).RootElement).ToArray();
        Assert.Equal(expected, events.Select(e => e.GetProperty("token").GetProperty("id").GetInt32()).ToArray());
        Assert.Equal(body.GetProperty("generated_text").GetString(), events[^1].GetProperty("generated_text").GetString());
        // Each event's token.text is that token decoded alone (as TGI does: a character split across byte-level
        // tokens shows as U+FFFD there); the final text is the decode of all streamed ids together.
        Assert.Equal(server.Generator.Tokenizer.Decode(StreamedIds(events), skipSpecialTokens: true), events[^1].GetProperty("generated_text").GetString());
    }

    [Fact]
    public async Task OpenAi_completions_echo_logprobs_score_the_prompt_as_tgi_prefill_does()
    {
        const string prompt = "The river flows";
        await using var server = await StartAsync();
        using var tgi = await server.Http.PostAsJsonAsync("/generate", new
        {
            inputs = prompt, parameters = new { max_new_tokens = 2, details = true, decoder_input_details = true },
        });
        var prefill = JsonDocument.Parse(await tgi.Content.ReadAsStringAsync()).RootElement.GetProperty("details").GetProperty("prefill")
            .EnumerateArray().ToList();
        using var openAi = await server.Http.PostAsJsonAsync("/v1/completions", new { prompt, max_tokens = 2, temperature = 0, echo = true, logprobs = 1 });
        Assert.Equal(200, (int)openAi.StatusCode);
        var choice = JsonDocument.Parse(await openAi.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0];
        var lp = choice.GetProperty("logprobs");
        var tokens = lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToList();
        Assert.Equal(prefill.Count + 2, tokens.Count);
        Assert.Equal(prompt, string.Concat(tokens.Take(prefill.Count)));
        Assert.Equal(choice.GetProperty("text").GetString(), string.Concat(tokens));
        var logprobs = lp.GetProperty("token_logprobs").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.Null, logprobs[0].ValueKind);
        for (int i = 1; i < prefill.Count; i++)
            Assert.Equal(prefill[i].GetProperty("logprob").GetSingle(), logprobs[i].GetSingle(), 3);
        var offsets = lp.GetProperty("text_offset").EnumerateArray().Select(e => e.GetInt32()).ToList();
        for (int i = 0; i < tokens.Count; i++) Assert.Equal(string.Concat(tokens.Take(i)).Length, offsets[i]);
    }

    [Fact]
    public async Task OpenAi_n_choices_are_the_runs_seeded_s_plus_k()
    {
        await using var server = await StartAsync();
        async Task<List<string>> Texts(int n, int seed)
        {
            using var r = await server.Http.PostAsJsonAsync("/v1/completions", new { prompt = "The river flows", n, temperature = 1.0, seed, max_tokens = 8 });
            Assert.Equal(200, (int)r.StatusCode);
            return JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("choices").EnumerateArray()
                .Select(c => c.GetProperty("text").GetString()!).ToList();
        }
        var together = await Texts(3, 7);
        Assert.Equal(3, together.Count);
        for (int k = 0; k < 3; k++) Assert.Equal((await Texts(1, 7 + k))[0], together[k]);
        Assert.Equal(together, await Texts(3, 7));
    }

    static int[] StreamedIds(JsonElement[] events) => events.Select(e => e.GetProperty("token").GetProperty("id").GetInt32()).ToArray();

    [Fact]
    public async Task Concurrent_requests_batch_together_and_each_gets_its_own_answer()
    {
        string[] prompts = ["The river flows", "A function returns", "In the beginning", "Python is", "The list of", "To install the package"];
        var expected = prompts.Select(p => DirectGreedy(p, 10)).ToArray();
        await using var server = await StartAsync();
        var answers = await Task.WhenAll(prompts.Select(async p =>
        {
            using var r = await server.Http.PostAsJsonAsync("/generate", new { inputs = p, parameters = new { max_new_tokens = 10, details = true } });
            var details = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("details");
            return details.GetProperty("tokens").EnumerateArray().Select(t => t.GetProperty("id").GetInt32()).ToArray();
        }));
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(expected[i], answers[i]);
        // Blocks go back to the pool when each sequence completes (prefix blocks may stay cached, but not in use).
        for (int i = 0; i < 100 && server.Generator.KvPool.UsedBlocks > 0; i++) await Task.Delay(50);
        Assert.Equal(0, server.Generator.KvPool.UsedBlocks);

        // /metrics carries the runtime's own state: steps taken (at least the 10 decode steps), the KV pool.
        var metrics = (await server.Http.GetStringAsync("/metrics")).Split('\n');
        double Read(string name) => double.Parse(metrics.Single(l => l.StartsWith(name + " ", StringComparison.Ordinal))[(name.Length + 1)..],
            System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(Read("harpia_runtime_steps_total"), 10, 6 * 10 + 6);
        Assert.Equal(server.Generator.Statistics.Steps, Read("harpia_runtime_steps_total"));
        Assert.Equal(0, Read("harpia_kv_blocks_used"));
        Assert.Equal(server.Generator.KvPool.TotalBlocks, Read("harpia_kv_blocks_total"));
        Assert.Equal(0, Read("harpia_runtime_running"));
    }

    [Fact]
    public async Task OpenAI_sdk_chats_with_the_real_model_streaming_and_not()
    {
        await using var server = await StartAsync();
        var client = new ChatClient("harpia-tiny-falcon", new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(HarpiaServer.BoundAddress(server.App), "v1") });
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 };
        ChatMessage[] messages = [new SystemChatMessage("You answer questions about Python."), new UserChatMessage("What is a list?")];

        ChatCompletion completion = await client.CompleteChatAsync(messages, options);
        string text = completion.Content[0].Text;
        Assert.False(string.IsNullOrEmpty(text));
        Assert.Equal("harpia-tiny-falcon", completion.Model);
        Assert.InRange(completion.Usage.OutputTokenCount, 1, 16);
        // The prompt is Falcon's chat format, tokenized by the model's own tokenizer.
        string prompt = "System: You answer questions about Python.\nUser: What is a list?\nFalcon:";
        Assert.Equal(server.Generator.Tokenizer.Encode(prompt).Count, completion.Usage.InputTokenCount);

        var streamed = new System.Text.StringBuilder();
        await foreach (var update in client.CompleteChatStreamingAsync(messages, options))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(text, streamed.ToString());
    }

    const string AnswerSchema = """{"type":"object","properties":{"answer":{"type":"string","maxLength":12},"count":{"type":"integer","minimum":0,"maximum":99},"ok":{"type":"boolean"}},"required":["answer","count"]}""";

    /// <summary>The document the answer schema allows, checked by hand (not by the grammar that produced it).</summary>
    static void AssertAnswerDocument(string text)
    {
        var doc = JsonDocument.Parse(text).RootElement;
        Assert.Equal(JsonValueKind.Object, doc.ValueKind);
        Assert.InRange(doc.GetProperty("answer").GetString()!.Length, 0, 12);
        Assert.InRange(doc.GetProperty("count").GetInt32(), 0, 99);
        foreach (var p in doc.EnumerateObject()) Assert.Contains(p.Name, new[] { "answer", "count", "ok" });
        if (doc.TryGetProperty("ok", out var ok)) Assert.True(ok.ValueKind is JsonValueKind.True or JsonValueKind.False);
    }

    [Fact]
    public async Task Tgi_grammar_constrains_the_real_model_to_a_regex_and_to_a_json_schema()
    {
        await using var server = await StartAsync();
        // Regex: greedy and sampled, streamed and not; the text is a full match and the model ends it with EOS.
        foreach (var parameters in new object[]
        {
            new { max_new_tokens = 40, details = true, grammar = new { type = "regex", value = "(yes|no|maybe), [0-9]{1,3} (apples|rivers)" } },
            new { max_new_tokens = 40, details = true, do_sample = true, seed = 7UL, temperature = 1.2, grammar = new { type = "regex", value = "(yes|no|maybe), [0-9]{1,3} (apples|rivers)" } },
        })
        {
            using var r = await server.Http.PostAsJsonAsync("/generate", new { inputs = "Is the river long?", parameters });
            var body = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(200, (int)r.StatusCode);
            Assert.Matches("^(yes|no|maybe), [0-9]{1,3} (apples|rivers)$", body.GetProperty("generated_text").GetString());
            Assert.Equal("eos_token", body.GetProperty("details").GetProperty("finish_reason").GetString());
        }

        // JSON schema through /generate_stream: the streamed text parses and satisfies the schema.
        var schema = JsonDocument.Parse(AnswerSchema).RootElement;
        using var stream = await server.Http.PostAsJsonAsync("/generate_stream", new
        {
            inputs = "Answer in JSON:",
            parameters = new { max_new_tokens = 160, grammar = new { type = "json", value = schema } },
        });
        var events = (await stream.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(e => JsonDocument.Parse(e["data:".Length..]).RootElement).ToArray();
        AssertAnswerDocument(events[^1].GetProperty("generated_text").GetString()!);
        Assert.Equal("eos_token", events[^1].GetProperty("details").GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task OpenAI_sdk_and_in_process_client_get_json_for_their_schema()
    {
        await using var server = await StartAsync();
        var client = new ChatClient("harpia-tiny-falcon", new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(server.Http.BaseAddress!, "v1") });
        var options = new ChatCompletionOptions
        {
            // Room for the longest document the schema allows even if every character were a \u escape.
            MaxOutputTokenCount = 160, Temperature = 0,
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("answer", BinaryData.FromString(AnswerSchema)),
        };
        ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("How many rivers?")], options);
        AssertAnswerDocument(completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);

        // json_object: any object.
        options.ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat();
        completion = await client.CompleteChatAsync([new UserChatMessage("Describe a river as JSON.")], options);
        // Any object may nest past the token limit; then the text must still be a live prefix of the grammar.
        string text = completion.Content[0].Text;
        if (completion.FinishReason == ChatFinishReason.Stop)
            Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text).RootElement.ValueKind);
        else
        {
            var dfa = Harpia.Runtime.Grammar.Grammars.AnyJsonObject();
            int state = dfa.Start;
            foreach (byte b in Encoding.UTF8.GetBytes(text)) { state = dfa.Next(state, b); Assert.True(state >= 0, $"'{text}' left the grammar"); }
        }

        // Microsoft.Extensions.AI in process: ChatResponseFormat.ForJsonSchema over the same runtime, no HTTP.
        using var chat = new Harpia.Chat.HarpiaChatClient(server.Generator);
        var response = await chat.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, "How many rivers?")], new Microsoft.Extensions.AI.ChatOptions
        {
            MaxOutputTokens = 160, Temperature = 0,
            ResponseFormat = Microsoft.Extensions.AI.ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(AnswerSchema).RootElement, "answer"),
        });
        AssertAnswerDocument(response.Text);
    }

    [Fact]
    public async Task Load_64_streaming_clients_on_the_real_model_complete_or_get_429_and_leave_nothing_behind()
    {
        // 64 clients at once against a limit of 16 in flight: every stream either completes well-formed (its final
        // text is the decode of its streamed tokens) or is refused with TGI's 429 body; afterwards no request, generation or KV
        // block is left.
        await using var server = await StartAsync(maxConcurrentRequests: 16);
        var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(async i =>
        {
            using var response = await server.Http.PostAsJsonAsync("/generate_stream",
                new { inputs = $"Item {i}: the", parameters = new { max_new_tokens = 8 } });
            string body = await response.Content.ReadAsStringAsync();
            if ((int)response.StatusCode == 429)
            {
                Assert.Equal("overloaded", JsonDocument.Parse(body).RootElement.GetProperty("error_type").GetString());
                return 429;
            }
            Assert.Equal(200, (int)response.StatusCode);
            var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
                .Select(e => JsonDocument.Parse(e["data:".Length..]).RootElement).ToArray();
            Assert.InRange(events.Length, 1, 8);
            Assert.Equal(server.Generator.Tokenizer.Decode(StreamedIds(events), skipSpecialTokens: true), events[^1].GetProperty("generated_text").GetString());
            return 200;
        }));
        int ok = results.Count(r => r == 200), refused = results.Count(r => r == 429);
        Assert.Equal(64, ok + refused);
        Assert.True(ok >= 16, $"only {ok} completed");
        Assert.True(refused > 0, "no 429 past --max-concurrent-requests");
        var state = HarpiaServer.State(server.App);
        for (int i = 0; i < 100 && (state.InFlight > 0 || server.Generator.KvPool.UsedBlocks > 0); i++) await Task.Delay(50);
        Assert.Equal(0, state.InFlight);
        Assert.Equal(0, server.Generator.KvPool.UsedBlocks);
        Assert.Equal(0, server.Generator.Statistics.Running + server.Generator.Statistics.Waiting);
    }
}

using System.ClientModel;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace Harpia.Tests.Server;

/// <summary>OpenAI's routes driven by the official OpenAI .NET SDK, Microsoft.Extensions.AI over it, and raw HTTP.</summary>
public sealed class OpenAiTests
{
    static ChatClient SdkClient(TestServer server, string key = "unused") =>
        new("fake/tiny-falcon", new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "v1") });

    [Fact]
    public async Task Sdk_chat_completion_uses_Falcons_chat_format()
    {
        await using var server = await TestServer.StartAsync();
        var client = SdkClient(server);
        ChatCompletion completion = await client.CompleteChatAsync(
            [new SystemChatMessage("Be brief."), new UserChatMessage("Hi!")],
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 50 });
        Assert.Equal("Hello from Harpia.", completion.Content[0].Text);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.StartsWith("chatcmpl-", completion.Id);
        Assert.Equal("fake/tiny-falcon", completion.Model);
        Assert.Equal("System: Be brief.\nUser: Hi!\nFalcon:", server.Generator.LastPrompt);
        Assert.Equal(server.Generator.LastPrompt.Length, completion.Usage.InputTokenCount);
        Assert.Equal(19, completion.Usage.OutputTokenCount);
        Assert.Equal(completion.Usage.InputTokenCount + 19, completion.Usage.TotalTokenCount);
        var request = server.Generator.Requests.Last();
        Assert.False(request.Sampling.DoSample); // temperature 0 = greedy
        Assert.Contains("\nUser:", request.StopSequences); // Falcon's format must not write the user's turn

        completion = await client.CompleteChatAsync([new UserChatMessage("Hi!")], new ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0.7f });
        Assert.Equal("Hel", completion.Content[0].Text);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Length, completion.FinishReason);
        Assert.True(server.Generator.Requests.Last().Sampling.DoSample);
    }

    [Fact]
    public async Task Sdk_chat_logprobs()
    {
        await using var server = await TestServer.StartAsync();
        ChatCompletion completion = await SdkClient(server).CompleteChatAsync([new UserChatMessage("Hi!")],
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 4, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 });
        var lps = completion.ContentTokenLogProbabilities;
        Assert.Equal(4, lps.Count);
        Assert.Equal("H", lps[0].Token);
        Assert.Equal(-0.1f, lps[0].LogProbability, 5);
        Assert.Equal(2, lps[0].TopLogProbabilities.Count);
        Assert.Equal((byte)'H', lps[0].Utf8Bytes!.Value.Span[0]);
    }

    [Fact]
    public async Task Sdk_chat_streaming_with_usage()
    {
        await using var server = await TestServer.StartAsync();
        var text = new System.Text.StringBuilder();
        OpenAI.Chat.ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        int updates = 0;
        await foreach (var update in SdkClient(server).CompleteChatStreamingAsync([new UserChatMessage("Hi!")], new ChatCompletionOptions { Temperature = 0 }))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            if (update.FinishReason is not null) finish = update.FinishReason;
            if (update.Usage is not null) usage = update.Usage;
        }
        Assert.Equal("Hello from Harpia.", text.ToString());
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, finish);
        Assert.True(updates >= 18);
        Assert.NotNull(usage); // the SDK asks for stream_options.include_usage
        Assert.Equal(19, usage!.OutputTokenCount);
    }

    [Fact]
    public async Task Raw_chat_stream_framing_and_usage_chunk()
    {
        await using var server = await TestServer.StartAsync();
        var (response, events) = await server.PostSseAsync("/v1/chat/completions",
            """{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}""");
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.All(chunks, c =>
        {
            Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString());
            Assert.StartsWith("chatcmpl-", c.GetProperty("id").GetString());
            Assert.Equal(JsonValueKind.Number, c.GetProperty("created").ValueKind);
            Assert.Equal(JsonValueKind.String, c.GetProperty("system_fingerprint").ValueKind);
        });
        Assert.Equal("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        var usageChunk = chunks[^1];
        Assert.Equal(0, usageChunk.GetProperty("choices").GetArrayLength());
        Assert.Equal(5, usageChunk.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("length", chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        string text = string.Concat(chunks.SelectMany(c => c.GetProperty("choices").EnumerateArray())
            .Select(ch => ch.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : ""));
        Assert.Equal("Hello", text);
        Assert.Equal("User: Hi\nFalcon:", server.Generator.LastPrompt);
    }

    [Fact]
    public async Task Chat_uses_the_models_chat_template_and_refuses_what_it_cannot_do()
    {
        const string chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        await using var server = await TestServer.StartAsync(new FakeGenerator(chatml));
        var (status, body) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"temperature":0}""");
        Assert.Equal(200, status);
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", server.Generator.LastPrompt);
        Assert.Empty(server.Generator.Requests.Last().StopSequences);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());

        (status, _) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"logit_bias":{"72":-100,"10":2.5}}""");
        Assert.Equal(200, status);
        Assert.Equal(new Dictionary<int, float> { [72] = -100, [10] = 2.5f }, server.Generator.Requests.Last().Sampling.LogitBias);
        (status, _) = await server.PostAsync("/v1/completions", """{"prompt":"Hi","logit_bias":{"72":-100}}""");
        Assert.Equal(200, status);
        Assert.Equal(new Dictionary<int, float> { [72] = -100 }, server.Generator.Requests.Last().Sampling.LogitBias);

        foreach (var (json, fragment) in new[]
        {
            ("""{"messages":[]}""", "`messages` cannot be empty"),
            ("""{"messages":[{"role":"robot","content":"x"}]}""", "is not supported"),
            ("""{"messages":[{"role":"tool","content":"x"}]}""", "`messages[0].tool_call_id` is required for role 'tool'"),
            ("""{"messages":[{"role":"user","content":"x"}],"n":9}""", "`n` must be >= 1 and <= 8. Given: 9"),
            ("""{"messages":[{"role":"user","content":"x"}],"n":0}""", "`n` must be >= 1 and <= 8. Given: 0"),
            ("""{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}""", "`tool_choice` names the function 'g', which is not in `tools` (f)"),
            ("""{"messages":[{"role":"user","content":"x"}],"temperature":3}""", "`temperature` must be >= 0.0 and <= 2.0"),
            ("""{"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}""", "`stop` supports up to 4 stop sequences. Given: 5"),
            ("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", "only text parts"),
            ("""{"messages":[{"role":"user","content":"x"}],"logit_bias":{"258":1}}""", "`logit_bias` key '258' is not a token id of this model (0 to 257)"),
            ("""{"messages":[{"role":"user","content":"x"}],"logit_bias":{"-1":1}}""", "`logit_bias` key '-1'"),
            ("""{"messages":[{"role":"user","content":"x"}],"logit_bias":{"5":101}}""", "`logit_bias` for token 5 must be a number >= -100 and <= 100"),
            ("""{"messages":[{"role":"user","content":"x"}],"logit_bias":{"5":"1"}}""", "`logit_bias` for token 5 must be a number"),
            ("""{"messages":[{"role":"user","content":"x"}],"logit_bias":[1]}""", "`logit_bias` must be an object"),
        })
        {
            (status, body) = await server.PostAsync("/v1/chat/completions", json);
            Assert.Equal(422, status);
            Assert.Contains(fragment, body.GetProperty("error").GetString());
        }
    }

    [Fact]
    public async Task Completions_plain_streaming_and_logprobs()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/v1/completions", """{"model":"m","prompt":"Once","max_tokens":5,"temperature":0,"logprobs":1,"echo":true}""");
        Assert.Equal(200, status);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("OnceHello", choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        // echo: the prompt's 4 tokens come first (see Completions_echo_with_logprobs_scores_the_prompt_too).
        Assert.Equal(4 + 5, choice.GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        Assert.Equal(4, choice.GetProperty("logprobs").GetProperty("text_offset")[4].GetInt32());
        Assert.Equal(4, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal("Once", server.Generator.LastPrompt);

        (status, body) = await server.PostAsync("/v1/completions", """{"prompt":["a","b"],"max_tokens":2}""");
        Assert.Equal(2, body.GetProperty("choices").GetArrayLength());
        Assert.Equal(1, body.GetProperty("choices")[1].GetProperty("index").GetInt32());

        var (_, events) = await server.PostSseAsync("/v1/completions", """{"prompt":"x","max_tokens":50,"stream":true,"stop":["Harpia"]}""");
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.Equal("Hello from ", string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.Equal("stop", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Completions_echo_with_logprobs_scores_the_prompt_too()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/v1/completions", """{"prompt":"Once","max_tokens":3,"temperature":0,"logprobs":2,"echo":true}""");
        Assert.Equal(200, status);
        Assert.True(server.Generator.Requests.Last().PromptLogprobs);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("OnceHel", choice.GetProperty("text").GetString());
        var lp = choice.GetProperty("logprobs");
        Assert.Equal(["O", "n", "c", "e", "H", "e", "l"], lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()));
        // The fake scores prompt token i (i > 0) with -1 - i % 3; the first has none.
        var logprobs = lp.GetProperty("token_logprobs").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.Null, logprobs[0].ValueKind);
        Assert.Equal([-2f, -3f, -1f, -0.1f, -0.2f, -0.3f], logprobs.Skip(1).Select(e => e.GetSingle()));
        var tops = lp.GetProperty("top_logprobs").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.Null, tops[0].ValueKind);
        Assert.Equal(-2f, tops[1].GetProperty("n").GetSingle());
        Assert.Equal(2, tops[4].EnumerateObject().Count()); // generated tokens: up to `logprobs` alternatives
        Assert.Equal([0, 1, 2, 3, 4, 5, 6], lp.GetProperty("text_offset").EnumerateArray().Select(e => e.GetInt32()));

        // Streaming: the prompt's logprobs come with the echoed prompt, in the first chunk.
        var (_, events) = await server.PostSseAsync("/v1/completions", """{"prompt":"Once","max_tokens":3,"temperature":0,"logprobs":0,"echo":true,"stream":true}""");
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal("Once", chunks[0].GetProperty("text").GetString());
        var first = chunks[0].GetProperty("logprobs");
        Assert.Equal(["O", "n", "c", "e"], first.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal(JsonValueKind.Null, first.GetProperty("token_logprobs")[0].ValueKind);
        Assert.Equal(-1f, first.GetProperty("token_logprobs")[3].GetSingle());
        Assert.Equal(JsonValueKind.Null, first.GetProperty("top_logprobs")[1].ValueKind); // logprobs 0: no alternatives
        Assert.Equal([0, 1, 2, 3], first.GetProperty("text_offset").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal("H", chunks[1].GetProperty("logprobs").GetProperty("tokens")[0].GetString());
        Assert.Equal(4, chunks[1].GetProperty("logprobs").GetProperty("text_offset")[0].GetInt32());

        // Without echo, or without logprobs, the prompt is not scored (its KV blocks stay shareable).
        (status, body) = await server.PostAsync("/v1/completions", """{"prompt":"Once","max_tokens":3,"logprobs":1}""");
        Assert.Equal(3, body.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        Assert.False(server.Generator.Requests.Last().PromptLogprobs);
        (status, _) = await server.PostAsync("/v1/completions", """{"prompt":"Once","max_tokens":3,"echo":true}""");
        Assert.False(server.Generator.Requests.Last().PromptLogprobs);
    }

    [Fact]
    public async Task Microsoft_Extensions_AI_over_the_OpenAI_SDK()
    {
        await using var server = await TestServer.StartAsync(options: new Harpia.Server.ServerOptions { ApiKey = "k3y" });
        IChatClient chat = SdkClient(server, "k3y").AsIChatClient();
        var response = await chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "Hi")], new ChatOptions { Temperature = 0, MaxOutputTokens = 50 });
        Assert.Equal("Hello from Harpia.", response.Text);
        Assert.Equal(Microsoft.Extensions.AI.ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(19, response.Usage?.OutputTokenCount);

        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync("Hi", new ChatOptions { Temperature = 0, MaxOutputTokens = 5 }))
            streamed.Append(update.Text);
        Assert.Equal("Hello", streamed.ToString());

        var wrongKey = SdkClient(server, "bad").AsIChatClient();
        var ex = await Assert.ThrowsAsync<ClientResultException>(() => wrongKey.GetResponseAsync("Hi"));
        Assert.Equal(401, ex.Status);
    }
}

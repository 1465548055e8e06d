using System.ClientModel;
using System.Text.Json;
using Harpia.Chat;
using Harpia.Runtime.Grammar;
using Harpia.Tests.Runtime;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace Harpia.Tests.Server;

/// <summary>
/// Tool calling on /v1/chat/completions (OpenAI's tools, tool_choice, tool_calls, tool turns) and through the
/// in-process IChatClient, over the <see cref="FakeGenerator"/>: the fake plays the model's reply, the grammar the
/// server hands the runtime is checked to accept exactly the calls the schemas allow.
/// </summary>
public sealed class ToolCallingTests
{
    const string WeatherParameters = """{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city"]}""";
    const string WeatherTool = """{"type":"function","function":{"name":"get_weather","description":"Weather forecast for a city","parameters":""" + WeatherParameters + "}}";
    const string TimeTool = """{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string","enum":["UTC","WET"]}},"required":["zone"]}}}""";
    const string WeatherCall = """<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon", "days": 2}}""";

    /// <summary>A model that calls get_weather until it sees the result, then answers.</summary>
    static FakeGenerator CallingModel() => new(contextLength: 4096)
    {
        Script = (prompt, _) => prompt.Contains("get_weather returned:", StringComparison.Ordinal) || prompt.Contains("18C", StringComparison.Ordinal)
            ? "It is 18C in Lisbon." : " " + WeatherCall,
    };

    static ChatClient SdkClient(TestServer server) =>
        new("fake/tiny-falcon", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "v1") });

    static string Chat(string tools, string toolChoice = "", string extra = "") =>
        $$"""{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather in Lisbon?"}],"temperature":0,"tools":[{{tools}}]{{(toolChoice.Length > 0 ? ",\"tool_choice\":" + toolChoice : "")}}{{extra}}}""";

    [Fact]
    public async Task Required_call_comes_back_as_tool_calls_under_a_grammar_of_the_schemas()
    {
        await using var server = await TestServer.StartAsync(CallingModel());
        var (status, body) = await server.PostAsync("/v1/chat/completions", Chat(WeatherTool + "," + TimeTool, "\"required\""));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        var message = choice.GetProperty("message");
        Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
        var call = Assert.Single(message.GetProperty("tool_calls").EnumerateArray());
        Assert.StartsWith("call_", call.GetProperty("id").GetString());
        Assert.Equal("function", call.GetProperty("type").GetString());
        Assert.Equal("get_weather", call.GetProperty("function").GetProperty("name").GetString());
        using (var args = JsonDocument.Parse(call.GetProperty("function").GetProperty("arguments").GetString()!))
        {
            Assert.Equal("Lisbon", args.RootElement.GetProperty("city").GetString());
            Assert.Equal(2, args.RootElement.GetProperty("days").GetInt32());
        }

        // The tools are offered in the system turn of Falcon's format, and the reply runs under a grammar that takes
        // a call of either function with valid arguments, and nothing else.
        Assert.StartsWith("System: Be brief.\n\nYou can call these functions:\n{\"name\":\"get_weather\",\"description\":\"Weather forecast for a city\"", server.Generator.LastPrompt);
        Assert.EndsWith("\nUser: Weather in Lisbon?\nFalcon:", server.Generator.LastPrompt);
        var grammar = server.Generator.Requests.Last().Grammar;
        Assert.NotNull(grammar);
        Assert.True(GrammarTestKit.Matches(grammar!, " " + WeatherCall));
        Assert.True(GrammarTestKit.Matches(grammar!, """<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}"""));
        Assert.True(GrammarTestKit.Matches(grammar!, WeatherCall + "\n" + """<tool_call>{"name":"get_time","arguments":{"zone":"WET"}}"""));
        Assert.False(GrammarTestKit.Matches(grammar!, """<tool_call>{"name": "get_weather", "arguments": {"city": 5}}"""));
        Assert.False(GrammarTestKit.Matches(grammar!, """<tool_call>{"name": "get_weather", "arguments": {"days": 2}}"""));
        Assert.False(GrammarTestKit.Matches(grammar!, """<tool_call>{"name": "get_weather", "arguments": {"city": "x", "days": 9}}"""));
        Assert.False(GrammarTestKit.Matches(grammar!, """<tool_call>{"name": "get_time", "arguments": {"zone": "PST"}}"""));
        Assert.False(GrammarTestKit.Matches(grammar!, """<tool_call>{"name": "rm_rf", "arguments": {}}"""));
        Assert.False(GrammarTestKit.Matches(grammar!, "It is sunny."));
    }

    [Fact]
    public async Task Auto_lets_the_model_answer_in_text_or_call_and_none_offers_nothing()
    {
        // A context long enough for the tool descriptions (the fake tokenizer makes one token per byte).
        var generator = new FakeGenerator(contextLength: 4096) { Script = (_, _) => " It is sunny." };
        await using var server = await TestServer.StartAsync(generator);
        var (status, body) = await server.PostAsync("/v1/chat/completions", Chat(WeatherTool));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(" It is sunny.", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.False(choice.GetProperty("message").TryGetProperty("tool_calls", out _));
        var grammar = generator.Requests.Last().Grammar!;
        Assert.True(GrammarTestKit.Matches(grammar, " It is sunny."));
        Assert.True(GrammarTestKit.Matches(grammar, "\n" + WeatherCall));
        Assert.False(GrammarTestKit.Matches(grammar, """<tool_call>{"name": "get_weather", "arguments": {}}"""));
        Assert.Contains("Answer in text when no function is needed.", generator.LastPrompt);

        // A named function: only that one is offered and allowed.
        generator.Script = (_, _) => WeatherCall;
        (status, body) = await server.PostAsync("/v1/chat/completions", Chat(WeatherTool + "," + TimeTool, """{"type":"function","function":{"name":"get_weather"}}""", ",\"parallel_tool_calls\":false"));
        Assert.Equal(200, status);
        Assert.Equal("get_weather", body.GetProperty("choices")[0].GetProperty("message").GetProperty("tool_calls")[0].GetProperty("function").GetProperty("name").GetString());
        grammar = generator.Requests.Last().Grammar!;
        Assert.True(GrammarTestKit.Matches(grammar, WeatherCall));
        Assert.False(GrammarTestKit.Matches(grammar, """<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}"""));
        Assert.False(GrammarTestKit.Matches(grammar, WeatherCall + "\n" + WeatherCall)); // parallel_tool_calls: false
        Assert.DoesNotContain("get_time", generator.LastPrompt);

        // none: no tools in the prompt, no grammar, and what the model writes is text.
        (status, body) = await server.PostAsync("/v1/chat/completions", Chat(WeatherTool, "\"none\""));
        Assert.Equal(200, status);
        Assert.Null(generator.Requests.Last().Grammar);
        Assert.DoesNotContain("get_weather", generator.LastPrompt);
        Assert.Equal(WeatherCall, body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Streamed_calls_arrive_as_tool_call_deltas_and_text_streams_as_content()
    {
        var generator = CallingModel();
        await using var server = await TestServer.StartAsync(generator);
        var (response, events) = await server.PostSseAsync("/v1/chat/completions", Chat(WeatherTool, "\"auto\"", ",\"stream\":true"));
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        // No content while the reply is a call: the opening "<tool_call>" is never shown as text.
        Assert.All(chunks, c => Assert.True(!c.GetProperty("delta").TryGetProperty("content", out var t) || t.GetString() == ""));
        var callDeltas = chunks.Where(c => c.GetProperty("delta").TryGetProperty("tool_calls", out _)).Select(c => c.GetProperty("delta").GetProperty("tool_calls")[0]).ToList();
        Assert.Equal(2, callDeltas.Count);
        Assert.Equal(0, callDeltas[0].GetProperty("index").GetInt32());
        Assert.StartsWith("call_", callDeltas[0].GetProperty("id").GetString());
        Assert.Equal("get_weather", callDeltas[0].GetProperty("function").GetProperty("name").GetString());
        Assert.Equal("", callDeltas[0].GetProperty("function").GetProperty("arguments").GetString());
        Assert.False(callDeltas[1].TryGetProperty("id", out _));
        Assert.Equal("""{"city": "Lisbon", "days": 2}""", callDeltas[1].GetProperty("function").GetProperty("arguments").GetString());
        Assert.Equal("tool_calls", chunks[^1].GetProperty("finish_reason").GetString());

        // A text reply streams as content, all of it, opening included.
        generator.Script = (_, _) => " Sunny.";
        (_, events) = await server.PostSseAsync("/v1/chat/completions", Chat(WeatherTool, "\"auto\"", ",\"stream\":true"));
        var text = string.Concat(events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var c) ? c.GetString() : ""));
        Assert.Equal(" Sunny.", text);
        Assert.Equal("stop", JsonDocument.Parse(events[^2]).RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());

        // A call cut short by max_tokens is no call: what was written comes out as text, with finish_reason length.
        generator.Script = (_, _) => WeatherCall;
        (_, events) = await server.PostSseAsync("/v1/chat/completions", Chat(WeatherTool, "\"required\"", ",\"stream\":true,\"max_tokens\":15"));
        text = string.Concat(events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var c) ? c.GetString() : ""));
        Assert.Equal(WeatherCall[..15], text);
        Assert.Equal("length", JsonDocument.Parse(events[^2]).RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Official_sdk_round_trip_feeds_the_tool_result_back_into_the_prompt()
    {
        var generator = CallingModel();
        await using var server = await TestServer.StartAsync(generator);
        var client = SdkClient(server);
        var weather = OpenAI.Chat.ChatTool.CreateFunctionTool("get_weather", "Weather forecast for a city", BinaryData.FromString(WeatherParameters));
        var options = new ChatCompletionOptions { Tools = { weather }, ToolChoice = ChatToolChoice.CreateRequiredChoice(), Temperature = 0 };
        List<OpenAI.Chat.ChatMessage> history = [new UserChatMessage("Weather in Lisbon?")];
        ChatCompletion first = await client.CompleteChatAsync(history, options);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, first.FinishReason);
        var call = Assert.Single(first.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("Lisbon", JsonDocument.Parse(call.FunctionArguments.ToString()).RootElement.GetProperty("city").GetString());

        history.Add(new AssistantChatMessage(first));
        history.Add(new ToolChatMessage(call.Id, "18C and sunny"));
        ChatCompletion second = await client.CompleteChatAsync(history, new ChatCompletionOptions { Tools = { weather }, Temperature = 0 });
        Assert.Equal("It is 18C in Lisbon.", second.Content[0].Text);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, second.FinishReason);
        // The call and its result are in the prompt, as the model is to write a call and as Falcon's format shows a result.
        Assert.Contains("\nFalcon: " + WeatherCall + "\nTool: get_weather returned: 18C and sunny\nFalcon:", generator.LastPrompt);

        // Streaming through the SDK: the call is rebuilt from the deltas.
        string? name = null, id = null;
        var arguments = new System.Text.StringBuilder();
        OpenAI.Chat.ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage("Weather in Lisbon?")], options))
        {
            foreach (var part in update.ToolCallUpdates)
            {
                name ??= part.FunctionName;
                id ??= part.ToolCallId;
                if (part.FunctionArgumentsUpdate is { } a && !a.ToMemory().IsEmpty) arguments.Append(a.ToString());
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal("get_weather", name);
        Assert.StartsWith("call_", id);
        Assert.Equal("""{"city": "Lisbon", "days": 2}""", arguments.ToString());
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, finish);
    }

    [Fact]
    public async Task Function_invoking_clients_complete_the_round_trip_over_the_sdk_and_in_process()
    {
        var generator = CallingModel();
        await using var server = await TestServer.StartAsync(generator);
        int invoked = 0;
        var function = AIFunctionFactory.Create((string city, int days) => { invoked++; return $"18C in {city} for {days} days"; }, "get_weather", "Weather forecast for a city");

        // Over HTTP with the official SDK, and in process with HarpiaChatClient: the same loop, the same answer.
        IChatClient[] clients = [SdkClient(server).AsIChatClient(), new HarpiaChatClient(generator)];
        foreach (var inner in clients)
        {
            using var client = new ChatClientBuilder(inner).UseFunctionInvocation().Build();
            var response = await client.GetResponseAsync([new AiChatMessage(ChatRole.User, "Weather in Lisbon?")],
                new ChatOptions { Tools = [function], Temperature = 0 });
            Assert.Equal("It is 18C in Lisbon.", response.Text);
            Assert.Contains("18C in Lisbon for 2 days", generator.LastPrompt);
        }
        Assert.Equal(2, invoked);

        // Streaming in process: the function-invoking loop sees the call (given whole) and streams the final answer.
        using (var streaming = new ChatClientBuilder(new HarpiaChatClient(generator)).UseFunctionInvocation().Build())
        {
            var text = new System.Text.StringBuilder();
            await foreach (var update in streaming.GetStreamingResponseAsync([new AiChatMessage(ChatRole.User, "Weather in Lisbon?")],
                new ChatOptions { Tools = [function], Temperature = 0 }))
                text.Append(update.Text);
            Assert.Equal("It is 18C in Lisbon.", text.ToString());
            Assert.Equal(3, invoked);
        }

        // In process, a forced call comes back as FunctionCallContent with ChatFinishReason.ToolCalls.
        var direct = await new HarpiaChatClient(generator).GetResponseAsync([new AiChatMessage(ChatRole.User, "Weather?")],
            new ChatOptions { Tools = [function], ToolMode = ChatToolMode.RequireSpecific("get_weather") });
        Assert.Equal(Microsoft.Extensions.AI.ChatFinishReason.ToolCalls, direct.FinishReason);
        var fc = Assert.IsType<FunctionCallContent>(Assert.Single(direct.Messages[0].Contents));
        Assert.Equal("get_weather", fc.Name);
        Assert.Equal("Lisbon", ((JsonElement)fc.Arguments!["city"]!).GetString());
        Assert.NotNull(generator.Requests.Last().Grammar);
        Assert.Throws<Harpia.Runtime.GenerationValidationException>(() => new HarpiaChatClient(generator).BuildRequest([new AiChatMessage(ChatRole.User, "x")],
            new ChatOptions { Tools = [function], ToolMode = ChatToolMode.RequireSpecific("nope") }));
    }

    [Fact]
    public async Task Bad_tools_are_422_naming_the_problem()
    {
        await using var server = await TestServer.StartAsync();
        foreach (var (json, fragment) in new[]
        {
            (Chat(WeatherTool, """{"type":"function","function":{"name":"get_time"}}"""), "`tool_choice` names the function 'get_time', which is not in `tools` (get_weather)"),
            (Chat(WeatherTool, "\"sometimes\""), "`tool_choice` 'sometimes' is not supported"),
            (Chat(WeatherTool, "42"), "`tool_choice` must be"),
            ("""{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}""", "`tool_choice` is only allowed when `tools` are given"),
            (Chat("""{"type":"function","function":{"name":"f","parameters":[1]}}"""), "`tools[0].function.parameters` must be a JSON schema object (got array)"),
            (Chat("""{"type":"function","function":{"name":"f","parameters":{"type":"string"}}}"""), "`tools[0].function.parameters` must describe an object"),
            (Chat("""{"type":"function","function":{"name":"bad name"}}"""), "`tools[0].function.name` 'bad name' must be 1 to 64 characters"),
            (Chat("""{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}"""), "`tools[1].function.name` 'f' is given twice"),
            (Chat("""{"type":"retrieval"}"""), "`tools[0].type` must be \"function\""),
            (Chat("""{"type":"function"}"""), "`tools[0].function` must be an object"),
            (Chat("""{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer","multipleOf":3}}}}}"""), "the parameters of function 'f' cannot be used"),
            (Chat(WeatherTool, "", ",\"response_format\":{\"type\":\"json_object\"}"), "`response_format` cannot be combined with `tools`"),
            ("""{"messages":[{"role":"user","content":"x","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}""", "`messages[0].tool_calls` is only allowed on an assistant message"),
            ("""{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":7}}]}]}""", "`messages[0].tool_calls[0].function.arguments` must be a string holding a JSON object"),
        })
        {
            var (status, body) = await server.PostAsync("/v1/chat/completions", json);
            Assert.True(status == 422, $"{json} → {status}");
            Assert.Equal("validation", body.GetProperty("error_type").GetString());
            Assert.Contains(fragment, body.GetProperty("error").GetString());
        }
        Assert.Equal(0, server.Generator.Started);
    }

#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental by the SDK
    [Fact]
    public async Task Bundled_model_makes_valid_calls_under_the_grammar_in_every_seeded_run()
    {
        // Every field bounded (enum, integer range, boolean, all required) so a call always completes within the
        // token budget, whatever the random weights prefer; the grammar alone makes it valid.
        const string parameters = """{"type":"object","properties":{"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7},"alerts":{"type":"boolean"}},"required":["unit","days","alerts"],"additionalProperties":false}""";
        using var generator = Harpia.Runtime.ModelHost.OpenGenerator(Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon"));
        var app = Harpia.Server.HarpiaServer.Build(new Harpia.Server.ServerOptions { Port = 0, Hostname = "127.0.0.1" }, generator);
        await app.StartAsync();
        try
        {
            var client = new ChatClient("m", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(Harpia.Server.HarpiaServer.BoundAddress(app), "v1") });
            var tool = OpenAI.Chat.ChatTool.CreateFunctionTool("forecast", "Weather forecast", BinaryData.FromString(parameters));
            using var schema = JsonDocument.Parse(parameters);
            for (int seed = 0; seed < 20; seed++)
            {
                var options = new ChatCompletionOptions
                {
                    Tools = { tool }, Temperature = 1, Seed = seed, MaxOutputTokenCount = 96, AllowParallelToolCalls = false,
                    ToolChoice = seed % 2 == 0 ? ChatToolChoice.CreateRequiredChoice() : ChatToolChoice.CreateFunctionChoice("forecast"),
                };
                ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("Forecast for Lisbon?")], options);
                Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, completion.FinishReason);
                var call = Assert.Single(completion.ToolCalls);
                Assert.Equal("forecast", call.FunctionName);
                using var args = JsonDocument.Parse(call.FunctionArguments.ToString());
                Assert.Null(GrammarTestKit.Check(args.RootElement, schema.RootElement, schema.RootElement));

                // The follow-up with the tool's result completes (as text or another call; either way it finishes).
                ChatCompletion followUp = await client.CompleteChatAsync(
                    [new UserChatMessage("Forecast for Lisbon?"), new AssistantChatMessage(completion), new ToolChatMessage(call.Id, "Sunny, 18C")],
                    new ChatCompletionOptions { Tools = { tool }, Temperature = 1, Seed = seed, MaxOutputTokenCount = 16 });
                Assert.Contains(followUp.FinishReason, new[] { OpenAI.Chat.ChatFinishReason.Stop, OpenAI.Chat.ChatFinishReason.Length, OpenAI.Chat.ChatFinishReason.ToolCalls });
            }
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

#pragma warning restore OPENAI001

    [Fact]
    public void Parse_keeps_text_and_drops_calls_cut_short_or_not_offered()
    {
        Harpia.Chat.ChatTool[] tools = [new("f", null, ToolCalling.NoParameters)];
        int n = 0;
        string Id() => $"c{n++}";
        var (content, calls) = ToolCalling.Parse("Plain <tool_call> in text", tools, Id);
        Assert.Equal("Plain <tool_call> in text", content);
        Assert.Empty(calls);
        (content, calls) = ToolCalling.Parse("""<tool_call>{"name": "f", "arguments": {"a": 1}}""" + "\n" + """<tool_call>{"name": "f", "argu""", tools, Id);
        Assert.Equal("", content);
        Assert.Equal([new Harpia.Chat.ChatToolCall("c0", "f", """{"a": 1}""")], calls);
        (content, calls) = ToolCalling.Parse("""<tool_call>{"name": "g", "arguments": {}}""", tools, Id);
        Assert.Empty(calls);
        Assert.Equal("""<tool_call>{"name": "g", "arguments": {}}""", content);
        (content, calls) = ToolCalling.Parse("""<tool_call>{"name": "f", "argu""", tools, Id);
        Assert.Empty(calls);
        Assert.Equal("""<tool_call>{"name": "f", "argu""", content);
    }
}

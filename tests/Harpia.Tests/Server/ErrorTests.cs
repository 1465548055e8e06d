using System.Net;
using System.Text;
using System.Text.Json;
using Harpia.Server;

namespace Harpia.Tests.Server;

/// <summary>Every refusal: status, <c>error_type</c> and TGI's message.</summary>
public sealed class ErrorTests
{
    [Theory]
    [InlineData("""{"inputs":"x","parameters":{"temperature":0}}""", "Input validation error: `temperature` must be strictly positive")]
    [InlineData("""{"inputs":"x","parameters":{"repetition_penalty":0}}""", "Input validation error: `repetition_penalty` must be strictly positive")]
    [InlineData("""{"inputs":"x","parameters":{"frequency_penalty":3}}""", "Input validation error: `frequency_penalty` must be >= -2.0 and <= 2.0")]
    [InlineData("""{"inputs":"x","parameters":{"top_p":1.5}}""", "Input validation error: `top_p` must be > 0.0 and <= 1.0")]
    [InlineData("""{"inputs":"x","parameters":{"typical_p":0}}""", "Input validation error: `typical_p` must be > 0.0 and <= 1.0")]
    [InlineData("""{"inputs":"x","parameters":{"top_k":0}}""", "Input validation error: `top_k` must be strictly positive")]
    [InlineData("""{"inputs":"x","parameters":{"max_new_tokens":0}}""", "Input validation error: `max_new_tokens` must be strictly positive")]
    [InlineData("""{"inputs":"x","parameters":{"stop":["a","b","c","d","e"]}}""", "Input validation error: `stop` supports up to 4 stop sequences. Given: 5")]
    [InlineData("""{"inputs":"x","parameters":{"top_n_tokens":6}}""", "Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 6")]
    [InlineData("""{"inputs":"","parameters":{}}""", "Input validation error: `inputs` cannot be empty")]
    [InlineData("""{"parameters":{}}""", "Input validation error: missing field `inputs`")]
    [InlineData("""{"inputs":"x","parameters":{"best_of":3,"do_sample":true}}""", "Input validation error: `best_of` must be > 0 and <= 2. Given: 3")]
    [InlineData("""{"inputs":"x","parameters":{"best_of":2}}""", "Input validation error: you must use sampling when `best_of` is > 1")]
    [InlineData("""{"inputs":"x","parameters":{"best_of":2,"do_sample":true,"seed":1}}""", "Input validation error: `seed` must not be set when `best_of` > 1")]
    [InlineData("""{"inputs":"x","parameters":{"truncate":0}}""", "Input validation error: `truncate` must be strictly positive and less than 100. Given: 0")]
    [InlineData("""{"inputs":"x","parameters":{"watermark":true}}""", "Input validation error: `watermark` is not supported by this server")]
    [InlineData("""{"inputs":"x","parameters":{"grammar":{"type":"xml","value":"a"}}}""", "Input validation error: `grammar` is not valid: unknown grammar type 'xml' (json or regex)")]
    [InlineData("""{"inputs":"x","parameters":{"grammar":{"type":"regex"}}}""", "Input validation error: `grammar` is not valid: missing `value`")]
    [InlineData("""{"inputs":"x","parameters":{"grammar":{"type":"regex","value":"a(?=b)"}}}""", "Input validation error: `grammar` is not valid: grammar regex: look-around groups ((?=, (?!, (?<=, (?<!) are not supported at position 1 of pattern \"a(?=b)\"")]
    [InlineData("""{"inputs":"x","parameters":{"grammar":{"type":"json","value":{"type":"object","patternProperties":{}}}}}""", "Input validation error: `grammar` is not valid: grammar JSON schema: keyword 'patternProperties' is not supported (at #)")]
    [InlineData("""{"inputs":"x","parameters":{"max_new_tokens":120}}""", "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 120. Given: 1 `inputs` tokens and 120 `max_new_tokens`")]
    [InlineData("""{"inputs":"x","parameters":{"temperature":"hot"}}""", "Failed to deserialize the JSON body into the target type: parameters.temperature: invalid type, expected a number")]
    [InlineData("""{"inputs":42}""", "Failed to deserialize the JSON body into the target type: inputs: invalid type, expected a string")]
    [InlineData("""[1,2]""", "Failed to deserialize the JSON body into the target type: expected an object, got array")]
    public async Task Bad_generate_requests_get_422_with_TGIs_message(string json, string message)
    {
        await using var server = await TestServer.StartAsync(options: new ServerOptions { MaxInputTokens = 100, MaxTotalTokens = 120 });
        var (status, body) = await server.PostAsync("/generate", json);
        Assert.Equal(422, status);
        Assert.Equal(message, body.GetProperty("error").GetString());
        Assert.Equal("validation", body.GetProperty("error_type").GetString());
        Assert.Equal(0, server.Generator.Started);
    }

    [Fact]
    public async Task Grammars_and_response_formats_reach_the_runtime_compiled()
    {
        await using var server = await TestServer.StartAsync();
        var (status, _) = await server.PostAsync("/generate", """{"inputs":"x","parameters":{"grammar":{"type":"regex","value":"[0-9]+"}}}""");
        Assert.Equal(200, status);
        var dfa = server.Generator.Requests.Last().Grammar!;
        Assert.True(Walk(dfa, "123"));
        Assert.False(Walk(dfa, "12a"));

        (status, _) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}}}}""");
        Assert.Equal(200, status);
        dfa = server.Generator.Requests.Last().Grammar!;
        Assert.True(Walk(dfa, "{\"a\": 5}"));
        Assert.False(Walk(dfa, "{}"));

        (status, _) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}""");
        Assert.Equal(200, status);
        Assert.True(Walk(server.Generator.Requests.Last().Grammar!, "{\"any\": [1, true]}"));
        (status, _) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}}""");
        Assert.Equal(200, status);
        Assert.Null(server.Generator.Requests.Last().Grammar);

        foreach (var (format, fragment) in new[]
        {
            ("""{"type":"yaml"}""", "`response_format` type 'yaml' is not supported"),
            ("""{"type":"json_schema"}""", "`response_format.json_schema` must be an object"),
            ("""{"type":"json_schema","json_schema":{"schema":{"type":"object","if":{}}}}""", "`response_format` is not valid: grammar JSON schema: keyword 'if' is not supported"),
            ("""[1]""", "`response_format` must be an object with a `type`"),
        })
        {
            var (s, body) = await server.PostAsync("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":" + format + "}");
            Assert.Equal(422, s);
            Assert.Contains(fragment, body.GetProperty("error").GetString());
        }

        static bool Walk(Harpia.Runtime.Grammar.ByteDfa dfa, string text)
        {
            int state = dfa.Start;
            foreach (byte b in Encoding.UTF8.GetBytes(text)) { state = dfa.Next(state, b); if (state < 0) return false; }
            return dfa.IsAccepting(state);
        }
    }

    [Fact]
    public async Task Too_long_input_and_stream_only_rules()
    {
        await using var server = await TestServer.StartAsync(options: new ServerOptions { MaxInputTokens = 10, MaxTotalTokens = 20 });
        var (status, body) = await server.PostAsync("/generate", """{"inputs":"this is longer than ten bytes"}""");
        Assert.Equal(422, status);
        Assert.Equal("Input validation error: `inputs` must have less than 10 tokens. Given: 29", body.GetProperty("error").GetString());
        (status, body) = await server.PostAsync("/generate_stream", """{"inputs":"x","parameters":{"decoder_input_details":true}}""");
        Assert.Equal(422, status);
        Assert.Equal("Input validation error: `decoder_input_details` == true is not supported when streaming tokens", body.GetProperty("error").GetString());
        (status, body) = await server.PostAsync("/generate_stream", """{"inputs":"x","parameters":{"best_of":2,"do_sample":true}}""");
        Assert.Equal("Input validation error: `best_of` != 1 is not allowed for this endpoint", body.GetProperty("error").GetString());
        // Without max_new_tokens the default is capped by what --max-total-tokens leaves.
        (status, _) = await server.PostAsync("/generate", """{"inputs":"0123456789"}""");
        Assert.Equal(200, status);
        Assert.Equal(10, server.Generator.Requests.Last().MaxNewTokens);
    }

    [Fact]
    public async Task Malformed_json_is_400_and_oversized_body_is_413()
    {
        await using var server = await TestServer.StartAsync(options: new ServerOptions { PayloadLimit = 1000 });
        var (status, body) = await server.PostAsync("/generate", """{"inputs": "x", """);
        Assert.Equal(400, status);
        Assert.StartsWith("Failed to parse the request body as JSON", body.GetProperty("error").GetString());
        (status, body) = await server.PostAsync("/v1/chat/completions", "not json");
        Assert.Equal(400, status);

        string big = "{\"inputs\":\"" + new string('a', 5000) + "\"}";
        (status, body) = await server.PostAsync("/generate", big);
        Assert.Equal(413, status);
        Assert.Contains("1000 bytes", body.GetProperty("error").GetString());

        // Chunked (no Content-Length): the limit applies while reading.
        using var chunked = new HttpRequestMessage(HttpMethod.Post, "/generate")
        {
            Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big))) { Headers = { ContentType = new("application/json") } },
        };
        chunked.Headers.TransferEncodingChunked = true;
        using var response = await server.Http.SendAsync(chunked);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal(0, server.Generator.Started);
    }

    [Fact]
    public async Task Unknown_paths_are_404_and_a_wrong_method_is_405_with_Allow()
    {
        await using var server = await TestServer.StartAsync();
        using (var r = await server.Http.GetAsync("/generate"))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, r.StatusCode);
            Assert.Equal("POST", string.Join(",", r.Content.Headers.Allow));
            Assert.Equal("method_not_allowed", JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error_type").GetString());
        }
        using (var r = await server.Http.PostAsync("/info", null))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, r.StatusCode);
            Assert.Equal("GET", string.Join(",", r.Content.Headers.Allow));
        }
        using (var r = await server.Http.GetAsync("/nothing/here"))
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        using (var r = await server.Http.GetAsync("/info"))
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    [Fact]
    public async Task Runtime_failures_map_to_424_429_and_500()
    {
        await using var server = await TestServer.StartAsync();
        server.Generator.FailAfterTokens = 3;
        var (status, body) = await server.PostAsync("/generate", """{"inputs":"x"}""");
        Assert.Equal(424, status);
        Assert.Equal("generation", body.GetProperty("error_type").GetString());
        Assert.Contains("the fake model failed on purpose", body.GetProperty("error").GetString());

        // After the headers, an error is an SSE event.
        var (response, events) = await server.PostSseAsync("/generate_stream", """{"inputs":"x"}""");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var last = JsonDocument.Parse(events[^1]).RootElement;
        Assert.Equal("generation", last.GetProperty("error_type").GetString());

        server.Generator.FailAfterTokens = null;
        server.Generator.StopWithoutFinishAfter = 2;
        (status, body) = await server.PostAsync("/generate", """{"inputs":"x"}""");
        Assert.Equal(500, status);
        Assert.Equal("incomplete_generation", body.GetProperty("error_type").GetString());
        (_, events) = await server.PostSseAsync("/generate_stream", """{"inputs":"x"}""");
        Assert.Equal("incomplete_generation", JsonDocument.Parse(events[^1]).RootElement.GetProperty("error_type").GetString());

        server.Generator.StopWithoutFinishAfter = null;
        server.Generator.Overloaded = true;
        (status, body) = await server.PostAsync("/generate", """{"inputs":"x"}""");
        Assert.Equal(429, status);
        Assert.Equal("overloaded", body.GetProperty("error_type").GetString());
        Assert.Equal(0, server.State.ActiveGenerations);
    }

    [Fact]
    public async Task Api_key_is_required_when_set_and_for_public_binds()
    {
        var e = Assert.Throws<HarpiaException>(() => HarpiaServer.Build(new ServerOptions { Hostname = "0.0.0.0" }, new FakeGenerator()));
        Assert.Contains("--api-key", e.Message);

        await using var server = await TestServer.StartAsync(options: new ServerOptions { ApiKey = "s3cret" });
        var (status, body) = await server.PostAsync("/generate", """{"inputs":"x"}""");
        Assert.Equal(401, status);
        Assert.Equal("authentication", body.GetProperty("error_type").GetString());
        using var wrong = new HttpRequestMessage(HttpMethod.Get, "/info") { Headers = { Authorization = TestServer.Bearer("nope") } };
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Http.SendAsync(wrong)).StatusCode);
        using var right = new HttpRequestMessage(HttpMethod.Get, "/info") { Headers = { Authorization = TestServer.Bearer("s3cret") } };
        Assert.Equal(HttpStatusCode.OK, (await server.Http.SendAsync(right)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("/health")).StatusCode); // probes need no key
    }

    [Fact]
    public async Task An_IPv4_mapped_IPv6_hostname_listens_on_the_IPv4_address_it_names()
    {
        // Was "SocketException: Invalid argument" at start (issue 18 #10).
        Assert.True(ServerOptions.IsLoopback("::ffff:127.0.0.1"));
        await using var server = await TestServer.StartAsync(options: new ServerOptions { Hostname = "::ffff:127.0.0.1" });
        Assert.Equal("127.0.0.1", server.BaseAddress.Host);
        using var health = await server.Http.GetAsync("/health");
        Assert.Equal(System.Net.HttpStatusCode.OK, health.StatusCode);
    }

    [Fact]
    public void Launcher_flags_are_checked_against_each_other()
    {
        Assert.Contains("--max-input-tokens", Assert.Throws<HarpiaException>(() => new ServerOptions { MaxInputTokens = 300, MaxTotalTokens = 200 }.Resolve(256)).Message);
        Assert.Contains("context length", Assert.Throws<HarpiaException>(() => new ServerOptions { MaxTotalTokens = 4096 }.Resolve(256)).Message);
        Assert.Contains("--max-batch-prefill-tokens", Assert.Throws<HarpiaException>(() => new ServerOptions { MaxInputTokens = 100, MaxBatchPrefillTokens = 50 }.Resolve(256)).Message);
        Assert.Equal((255, 256), new ServerOptions().Resolve(256));
        Assert.Contains("--max-n", Assert.Throws<HarpiaException>(() => new ServerOptions { MaxN = 0 }.Resolve(256)).Message);
        Assert.Equal(3, Harpia.Cli.Commands.ServeCommand.ToServerOptions(new Harpia.Cli.Commands.ServeCommand.Settings { MaxN = 3 }).MaxN);
        Assert.Contains("--hostname", Assert.Throws<HarpiaException>(() => HarpiaServer.Build(new ServerOptions { Hostname = "example.org", ApiKey = "k" }, new FakeGenerator())).Message);
    }
}

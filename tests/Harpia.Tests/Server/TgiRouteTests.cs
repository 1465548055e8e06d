using System.Net;
using System.Text.Json;

namespace Harpia.Tests.Server;

/// <summary>TGI's routes over raw HTTP, checked field by field against shared/specs/tgi-api.md.</summary>
public sealed class TgiRouteTests
{
    static void AssertToken(JsonElement t, bool allowNullLogprob = false)
    {
        Assert.Equal(JsonValueKind.Number, t.GetProperty("id").ValueKind);
        Assert.Equal(JsonValueKind.String, t.GetProperty("text").ValueKind);
        var lp = t.GetProperty("logprob");
        Assert.True(lp.ValueKind == JsonValueKind.Number || (allowNullLogprob && lp.ValueKind == JsonValueKind.Null));
        Assert.True(t.GetProperty("special").ValueKind is JsonValueKind.True or JsonValueKind.False);
    }

    [Fact]
    public async Task Generate_returns_text_and_full_details()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/generate",
            """{"inputs":"Say hi","parameters":{"max_new_tokens":50,"details":true,"decoder_input_details":true,"top_n_tokens":2}}""");
        Assert.Equal(200, status);
        Assert.Equal("Hello from Harpia.", body.GetProperty("generated_text").GetString());
        var d = body.GetProperty("details");
        Assert.Equal("eos_token", d.GetProperty("finish_reason").GetString());
        Assert.Equal(19, d.GetProperty("generated_tokens").GetInt32()); // 18 characters + EOS
        Assert.Equal(JsonValueKind.Null, d.GetProperty("seed").ValueKind); // greedy: no seed
        var prefill = d.GetProperty("prefill").EnumerateArray().ToList();
        Assert.Equal(6, prefill.Count);
        Assert.Equal(JsonValueKind.Null, prefill[0].GetProperty("logprob").ValueKind); // TGI: first prompt token has none
        Assert.Equal("S", prefill[0].GetProperty("text").GetString());
        Assert.Equal(-2f, prefill[1].GetProperty("logprob").GetSingle());
        var tokens = d.GetProperty("tokens").EnumerateArray().ToList();
        Assert.Equal(19, tokens.Count);
        foreach (var t in tokens) AssertToken(t);
        Assert.Equal("H", tokens[0].GetProperty("text").GetString());
        Assert.True(tokens[^1].GetProperty("special").GetBoolean());
        var top = d.GetProperty("top_tokens").EnumerateArray().ToList();
        Assert.Equal(19, top.Count);
        Assert.All(top, step => Assert.Equal(2, step.GetArrayLength()));
    }

    [Fact]
    public async Task Text_goes_out_as_utf8_not_escaped()
    {
        // TGI (serde) writes "Olá <b>" as it is; System.Text.Json's default would send "Ol\u00E1 \u003Cb\u003E".
        await using var server = await TestServer.StartAsync();
        using var response = await server.PostJsonAsync("/generate",
            """{"inputs":"Olá, 'mundo' <b> & ","parameters":{"return_full_text":true,"max_new_tokens":1}}""");
        string raw = await response.Content.ReadAsStringAsync();
        Assert.Equal("""{"generated_text":"Olá, 'mundo' <b> & H"}""", raw);
        using var stream = await server.PostJsonAsync("/generate_stream", """{"inputs":"é","parameters":{"return_full_text":true,"max_new_tokens":1}}""");
        Assert.Contains("\"generated_text\":\"éH\"", await stream.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Generate_without_details_has_no_details_and_honours_limits()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/generate", """{"inputs":"x","parameters":{"max_new_tokens":5}}""");
        Assert.Equal(200, status);
        Assert.Equal("Hello", body.GetProperty("generated_text").GetString());
        Assert.False(body.TryGetProperty("details", out _));
        Assert.Equal(5, server.Generator.Requests.Last().MaxNewTokens);

        // TGI keeps the stop sequence in generated_text (LangChain's client cuts it off itself).
        (status, body) = await server.PostAsync("/generate", """{"inputs":"x","parameters":{"stop":[" from"],"details":true}}""");
        Assert.Equal("Hello from", body.GetProperty("generated_text").GetString());
        Assert.Equal("stop_sequence", body.GetProperty("details").GetProperty("finish_reason").GetString());

        (_, body) = await server.PostAsync("/generate", """{"inputs":"Prompt: ","parameters":{"return_full_text":true,"max_new_tokens":5}}""");
        Assert.Equal("Prompt: Hello", body.GetProperty("generated_text").GetString());

        // The default max_new_tokens is 100, as in the spec; truncate keeps the last N prompt tokens.
        await server.PostAsync("/generate", """{"inputs":"abcdef","parameters":{"truncate":2}}""");
        var last = server.Generator.Requests.Last();
        Assert.Equal(100, last.MaxNewTokens);
        Assert.Equal(new[] { (int)'e', (int)'f' }, last.PromptIds);
    }

    [Fact]
    public async Task Sampling_knobs_turn_sampling_on_and_are_passed_through()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/generate",
            """{"inputs":"x","parameters":{"temperature":0.5,"top_k":10,"top_p":0.9,"typical_p":0.95,"repetition_penalty":1.2,"frequency_penalty":0.5,"seed":1234,"details":true}}""");
        Assert.Equal(200, status);
        var s = server.Generator.Requests.Last().Sampling;
        Assert.True(s.DoSample);
        Assert.Equal(0.5f, s.Temperature);
        Assert.Equal(10, s.TopK);
        Assert.Equal(0.9f, s.TopP);
        Assert.Equal(0.95f, s.TypicalP);
        Assert.Equal(1.2f, s.RepetitionPenalty);
        Assert.Equal(0.5f, s.FrequencyPenalty);
        Assert.Equal(1234UL, s.Seed);
        Assert.Equal(1234UL, body.GetProperty("details").GetProperty("seed").GetUInt64());
        Assert.Equal("Hello from Harpia 4.", body.GetProperty("generated_text").GetString());
    }

    [Fact]
    public async Task Best_of_runs_independent_samples_and_returns_the_others()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/generate", """{"inputs":"x","parameters":{"best_of":2,"do_sample":true,"details":true}}""");
        Assert.Equal(200, status);
        Assert.Equal(2, server.Generator.Requests.Count);
        var others = body.GetProperty("details").GetProperty("best_of_sequences").EnumerateArray().ToList();
        Assert.Single(others);
        foreach (var field in new[] { "generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens" })
            Assert.True(others[0].TryGetProperty(field, out _), field);
        static double Sum(JsonElement d) => d.GetProperty("tokens").EnumerateArray().Sum(t => (double)t.GetProperty("logprob").GetSingle());
        Assert.True(Sum(body.GetProperty("details")) >= Sum(others[0]) - 1e-4);
    }

    [Fact]
    public async Task Compat_route_answers_an_array_or_a_stream()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/", """{"inputs":"x","parameters":{"max_new_tokens":5},"stream":false}""");
        Assert.Equal(200, status);
        Assert.Equal(JsonValueKind.Array, body.ValueKind);
        Assert.Equal("Hello", body[0].GetProperty("generated_text").GetString());

        var (response, events) = await server.PostSseAsync("/", """{"inputs":"x","parameters":{"max_new_tokens":5},"stream":true}""");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(5, events.Count);
    }

    [Fact]
    public async Task Generate_stream_sends_one_StreamResponse_per_token_with_TGI_framing()
    {
        await using var server = await TestServer.StartAsync();
        using var raw = await server.PostJsonAsync("/generate_stream", """{"inputs":"x","parameters":{"max_new_tokens":50,"top_n_tokens":1}}""");
        Assert.Equal("text/event-stream", raw.Content.Headers.ContentType?.MediaType);
        string body = await raw.Content.ReadAsStringAsync();
        Assert.StartsWith("data:{", body); // TGI/axum: no space after the colon

        var (_, events) = await server.PostSseAsync("/generate_stream", """{"inputs":"x","parameters":{"max_new_tokens":50,"top_n_tokens":1}}""");
        Assert.Equal(19, events.Count);
        var text = new System.Text.StringBuilder();
        for (int i = 0; i < events.Count; i++)
        {
            var e = JsonDocument.Parse(events[i]).RootElement;
            Assert.Equal(i + 1, e.GetProperty("index").GetInt32());
            var token = e.GetProperty("token");
            AssertToken(token);
            Assert.Equal(1, e.GetProperty("top_tokens").GetArrayLength());
            bool last = i == events.Count - 1;
            if (!token.GetProperty("special").GetBoolean()) text.Append(token.GetProperty("text").GetString());
            Assert.Equal(last ? JsonValueKind.String : JsonValueKind.Null, e.GetProperty("generated_text").ValueKind);
            Assert.Equal(last ? JsonValueKind.Object : JsonValueKind.Null, e.GetProperty("details").ValueKind);
            if (last)
            {
                Assert.Equal("Hello from Harpia.", e.GetProperty("generated_text").GetString());
                var d = e.GetProperty("details");
                Assert.Equal("eos_token", d.GetProperty("finish_reason").GetString());
                Assert.Equal(19, d.GetProperty("generated_tokens").GetInt32());
                Assert.Equal(1, d.GetProperty("input_length").GetInt32());
                Assert.True(d.TryGetProperty("seed", out _));
            }
        }
        Assert.Equal("Hello from Harpia.", text.ToString()); // what LangChain concatenates from token.text
    }

    [Fact]
    public async Task Tokenize_info_health_models_and_metrics()
    {
        await using var server = await TestServer.StartAsync(options: new Harpia.Server.ServerOptions { MaxInputTokens = 200, MaxTotalTokens = 256 });
        var (status, body) = await server.PostAsync("/tokenize", """{"inputs":"hé"}""");
        Assert.Equal(200, status);
        var tokens = body.EnumerateArray().ToList();
        Assert.Equal(3, tokens.Count); // h + the two UTF-8 bytes of é
        Assert.Equal((int)'h', tokens[0].GetProperty("id").GetInt32());
        Assert.Equal(0, tokens[0].GetProperty("start").GetInt32());
        Assert.Equal(1, tokens[0].GetProperty("stop").GetInt32());
        Assert.Equal(3, tokens[2].GetProperty("stop").GetInt32());
        Assert.Equal("h", tokens[0].GetProperty("text").GetString());
        Assert.Equal("\uFFFD", tokens[1].GetProperty("text").GetString()); // half of é, decoded lossily as TGI does

        var info = JsonDocument.Parse(await server.Http.GetStringAsync("/info")).RootElement;
        Assert.Equal("fake/tiny-falcon", info.GetProperty("model_id").GetString());
        Assert.Equal(128, info.GetProperty("max_concurrent_requests").GetInt32());
        Assert.Equal(2, info.GetProperty("max_best_of").GetInt32());
        Assert.Equal(4, info.GetProperty("max_stop_sequences").GetInt32());
        Assert.Equal(200, info.GetProperty("max_input_tokens").GetInt32());
        Assert.Equal(256, info.GetProperty("max_total_tokens").GetInt32());
        Assert.Equal(JsonValueKind.Number, info.GetProperty("validation_workers").ValueKind);
        Assert.Equal(JsonValueKind.Number, info.GetProperty("max_client_batch_size").ValueKind);
        Assert.Equal(JsonValueKind.String, info.GetProperty("router").ValueKind);
        Assert.Equal(JsonValueKind.String, info.GetProperty("version").ValueKind);
        Assert.Equal("text-generation", info.GetProperty("model_pipeline_tag").GetString());

        using (var health = await server.Http.GetAsync("/health")) Assert.Equal(HttpStatusCode.OK, health.StatusCode);

        var models = JsonDocument.Parse(await server.Http.GetStringAsync("/v1/models")).RootElement;
        Assert.Equal("list", models.GetProperty("object").GetString());
        Assert.Equal("fake/tiny-falcon", models.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal("model", models.GetProperty("data")[0].GetProperty("object").GetString());

        await server.PostAsync("/generate", """{"inputs":"abc","parameters":{"max_new_tokens":4}}""");
        await server.PostAsync("/generate", """{"inputs":"abc","parameters":{"temperature":-1}}""");
        string metrics = await server.Http.GetStringAsync("/metrics");
        Assert.Contains("tgi_request_count 2", metrics);
        Assert.Contains("tgi_request_success 1", metrics);
        Assert.Contains("tgi_request_failure{err=\"validation\"} 1", metrics);
        Assert.Contains("tgi_request_generated_tokens_sum 4", metrics);
        Assert.Contains("tgi_request_input_length_sum 3", metrics);
        Assert.Contains("tgi_request_duration_count 1", metrics);
        Assert.Contains("tgi_request_mean_time_per_token_duration_count 1", metrics);
        Assert.Contains("tgi_request_queue_duration_count 1", metrics);
        Assert.Contains("tgi_queue_size 0", metrics);
        Assert.Contains("tgi_batch_current_size 0", metrics);
    }
}

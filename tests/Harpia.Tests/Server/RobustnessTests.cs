using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Harpia.Server;

namespace Harpia.Tests.Server;

/// <summary>Disconnects, graceful drain, and a bounded loopback load test.</summary>
public sealed class RobustnessTests
{
    static async Task WaitUntil(Func<bool> condition, string what, double seconds = 10)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed.TotalSeconds > seconds) Assert.Fail($"timed out waiting for {what}");
            await Task.Delay(10);
        }
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_cancels_its_generation()
    {
        var generator = new FakeGenerator { TokenDelay = TimeSpan.FromMilliseconds(20), Script = (_, _) => new string('z', 1000) };
        await using var server = await TestServer.StartAsync(generator);
        var request = new HttpRequestMessage(HttpMethod.Post, "/generate_stream")
        {
            Content = new StringContent("""{"inputs":"x","parameters":{"max_new_tokens":200}}""", System.Text.Encoding.UTF8, "application/json"),
        };
        var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        var reader = new StreamReader(stream);
        Assert.StartsWith("data:", await reader.ReadLineAsync());
        Assert.Equal(1, generator.Active);
        response.Dispose(); // the client goes away

        await WaitUntil(() => generator.Active == 0, "the generation to stop");
        Assert.Equal(1, generator.Cancelled);
        Assert.Equal(0, generator.Completed);
        await WaitUntil(() => server.State.InFlight == 0 && server.State.ActiveGenerations == 0, "the slot to be released");
        string metrics = await server.Http.GetStringAsync("/metrics");
        Assert.Contains("tgi_request_failure{err=\"cancelled\"} 1", metrics);
        Assert.Contains("tgi_batch_current_size 0", metrics);
    }

    [Fact]
    public async Task Stopping_drains_in_flight_requests_and_refuses_new_ones()
    {
        var generator = new FakeGenerator { TokenDelay = TimeSpan.FromMilliseconds(15), Script = (_, _) => new string('z', 40) };
        var server = await TestServer.StartAsync(generator);
        try
        {
            var inFlight = server.PostSseAsync("/generate_stream", """{"inputs":"x"}""");
            await WaitUntil(() => generator.Active == 1, "the generation to start");
            var stopping = server.App.StopAsync();
            await WaitUntil(() => server.State.Draining, "draining");

            using (var health = await server.Http.GetAsync("/health"))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
                var body = JsonDocument.Parse(await health.Content.ReadAsStringAsync()).RootElement;
                Assert.Equal("healthcheck", body.GetProperty("error_type").GetString());
            }
            var (status, refused) = await server.PostAsync("/generate", """{"inputs":"x"}""");
            Assert.Equal(503, status);
            Assert.Equal("Server is shutting down", refused.GetProperty("error").GetString());

            var (_, events) = await inFlight; // the request in flight completes
            var last = JsonDocument.Parse(events[^1]).RootElement;
            Assert.Equal(new string('z', 40), last.GetProperty("generated_text").GetString());
            await stopping;
            Assert.Equal(0, generator.Cancelled);
        }
        finally { await server.App.DisposeAsync(); }
    }

    [Fact]
    public async Task Stopping_cancels_what_outlives_the_grace_period()
    {
        // The generation streams three tokens, then cannot end unless cancelled: stopping the server returns only
        // if the grace period's end cancels it (the minute-long guard only keeps a broken drain from hanging the run).
        var generator = new FakeGenerator { HangAfterTokens = 3, Script = (_, _) => new string('z', 1000) };
        var server = await TestServer.StartAsync(generator, new ServerOptions { ShutdownGraceSeconds = 0.3 });
        try
        {
            var inFlight = server.PostSseAsync("/generate_stream", """{"inputs":"x","parameters":{"max_new_tokens":250}}""");
            await WaitUntil(() => generator.Active == 1, "the generation to start");
            await server.App.StopAsync().WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal(1, generator.Cancelled);
            Assert.Equal(0, generator.Active);
            // The cut-short stream is still well-framed SSE and says why it ended, as TGI's last error event does.
            var (_, events) = await inFlight;
            var last = JsonDocument.Parse(events[^1]).RootElement;
            Assert.Equal("incomplete_generation", last.GetProperty("error_type").GetString());   // issue 18 #9: as TGI
            Assert.Equal("Incomplete generation: the server is shutting down", last.GetProperty("error").GetString());
            Assert.All(events.SkipLast(1), e => Assert.True(JsonDocument.Parse(e).RootElement.TryGetProperty("token", out _)));
        }
        finally { await server.App.DisposeAsync(); }
    }

    static async Task<(int Status, int Events, bool Complete)> StreamOnce(TestServer server, int i)
    {
        using var response = await server.PostJsonAsync("/generate_stream", "{\"inputs\":\"client " + i + "\",\"parameters\":{\"max_new_tokens\":40}}");
        if (response.StatusCode != HttpStatusCode.OK)
        {
            var err = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal("overloaded", err.GetProperty("error_type").GetString());
            return ((int)response.StatusCode, 0, false);
        }
        string body = await response.Content.ReadAsStringAsync();
        var events = body.TrimEnd('\n').Split("\n\n");
        var texts = new System.Text.StringBuilder();
        JsonElement last = default;
        foreach (var e in events)
        {
            Assert.StartsWith("data:", e);
            last = JsonDocument.Parse(e["data:".Length..]).RootElement;
            var token = last.GetProperty("token");
            if (!token.GetProperty("special").GetBoolean()) texts.Append(token.GetProperty("text").GetString());
        }
        bool complete = last.GetProperty("generated_text").GetString() == "Hello from Harpia." && texts.ToString() == "Hello from Harpia.";
        return (200, events.Length, complete);
    }

    [Fact]
    public async Task Load_64_concurrent_streams_complete_and_the_limit_answers_429()
    {
        var generator = new FakeGenerator { TokenDelay = TimeSpan.FromMilliseconds(5) };
        await using (var server = await TestServer.StartAsync(generator, new ServerOptions { MaxConcurrentRequests = 64 }))
        {
            var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(i => StreamOnce(server, i)));
            Assert.All(results, r => { Assert.Equal(200, r.Status); Assert.Equal(19, r.Events); Assert.True(r.Complete); });
            await WaitUntil(() => server.State.InFlight == 0, "requests to end");
            Assert.Equal(0, server.State.ActiveGenerations);
            Assert.Equal(0, generator.Active);
            var metrics = HarpiaServer.Metrics(server.App);
            Assert.Equal(0, metrics.QueueSize);
            Assert.Equal(0, metrics.BatchSize);
        }

        var slow = new FakeGenerator { TokenDelay = TimeSpan.FromMilliseconds(25) };
        await using (var server = await TestServer.StartAsync(slow, new ServerOptions { MaxConcurrentRequests = 8 }))
        {
            var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(i => StreamOnce(server, i)));
            int ok = results.Count(r => r.Status == 200), overloaded = results.Count(r => r.Status == 429);
            Assert.Equal(64, ok + overloaded);
            Assert.True(ok >= 8, $"{ok} completed");
            Assert.True(overloaded > 0, "no 429 past --max-concurrent-requests");
            Assert.All(results.Where(r => r.Status == 200), r => Assert.True(r.Complete));
            Assert.True(slow.Started <= 64 - overloaded);
            await WaitUntil(() => server.State.InFlight == 0, "requests to end");
            Assert.Equal(0, server.State.ActiveGenerations);
            Assert.Equal(0, slow.Active);
            string m = await server.Http.GetStringAsync("/metrics");
            Assert.Contains($"tgi_request_failure{{err=\"overloaded\"}} {overloaded}", m);
        }
    }
}

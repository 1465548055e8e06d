using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Harpia.Server;
using Microsoft.AspNetCore.Builder;

namespace Harpia.Tests.Server;

/// <summary>The real server on 127.0.0.1 with a port Kestrel picks, over a <see cref="FakeGenerator"/>.</summary>
public sealed class TestServer : IAsyncDisposable
{
    public WebApplication App { get; }
    public FakeGenerator Generator { get; }
    public Uri BaseAddress { get; }
    public HttpClient Http { get; }

    TestServer(WebApplication app, FakeGenerator generator, Uri baseAddress)
    {
        App = app;
        Generator = generator;
        BaseAddress = baseAddress;
        Http = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(60) };
    }

    public static async Task<TestServer> StartAsync(FakeGenerator? generator = null, ServerOptions? options = null)
    {
        generator ??= new FakeGenerator();
        options = (options ?? new ServerOptions()) with { Port = 0, Hostname = options?.Hostname ?? "127.0.0.1" };
        var app = HarpiaServer.Build(options, generator);
        await app.StartAsync();
        return new TestServer(app, generator, HarpiaServer.BoundAddress(app));
    }

    public ServerState State => HarpiaServer.State(App);

    public Task<HttpResponseMessage> PostJsonAsync(string path, string json, CancellationToken ct = default) =>
        Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"), ct);

    public async Task<(int Status, JsonElement Body)> PostAsync(string path, string json)
    {
        using var response = await PostJsonAsync(path, json);
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>Posts and reads an SSE body, checking the framing: every event is "data:" lines ended by a blank line.</summary>
    public async Task<(HttpResponseMessage Response, List<string> Events)> PostSseAsync(string path, string json)
    {
        var response = await PostJsonAsync(path, json);
        string body = await response.Content.ReadAsStringAsync();
        var events = new List<string>();
        if (response.Content.Headers.ContentType?.MediaType != "text/event-stream") return (response, events);
        Assert.EndsWith("\n\n", body);
        foreach (var block in body[..^2].Split("\n\n"))
        {
            Assert.StartsWith("data:", block);
            Assert.DoesNotContain('\n', block);
            events.Add(block["data:".Length..].TrimStart(' '));
        }
        return (response, events);
    }

    public static AuthenticationHeaderValue Bearer(string key) => new("Bearer", key);

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}

using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Harpia.Server;

namespace Harpia.Tests.Server;

/// <summary>The built-in chat page: served to browsers at GET / and /chat, self-contained, same-origin only.</summary>
public sealed class ChatPageTests
{
    static async Task<HttpResponseMessage> GetAsync(TestServer server, string path, string accept)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.TryAddWithoutValidation("Accept", accept);
        return await server.Http.SendAsync(request);
    }

    const string BrowserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    [Fact]
    public async Task Browsers_get_the_page_with_a_same_origin_policy_and_api_clients_keep_the_json_405()
    {
        await using var server = await TestServer.StartAsync();
        foreach (var path in new[] { "/", "/chat" })
        {
            using var page = await GetAsync(server, path, BrowserAccept);
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
            Assert.Equal("utf-8", page.Content.Headers.ContentType?.CharSet);
            string csp = string.Join(";", page.Headers.GetValues("Content-Security-Policy"));
            Assert.Contains("default-src 'none'", csp);
            Assert.Contains("connect-src 'self'", csp);
            Assert.Contains("script-src 'self'", csp);
            Assert.DoesNotContain("unsafe-inline", csp);
            Assert.Equal("nosniff", page.Headers.GetValues("X-Content-Type-Options").Single());
            string html = await page.Content.ReadAsStringAsync();
            Assert.Contains("<script src=\"/chat.js\"", html);
            Assert.Contains("href=\"/chat.css\"", html);
            Assert.DoesNotContain("<script>", html);   // no inline script: the policy would block it
            Assert.DoesNotContain("style=", html);
        }

        using (var js = await GetAsync(server, "/chat.js", "*/*"))
        {
            Assert.Equal(HttpStatusCode.OK, js.StatusCode);
            Assert.Equal("text/javascript", js.Content.Headers.ContentType?.MediaType);
            string script = await js.Content.ReadAsStringAsync();
            // It streams from the server's own OpenAI route, and every fetch goes to a path of this origin.
            Assert.Contains("fetch(\"/v1/chat/completions\"", script);
            Assert.Contains("stream: true", script);
            var targets = Regex.Matches(script, @"fetch\(\s*([^,)]+)").Select(m => m.Groups[1].Value.Trim()).ToArray();
            Assert.NotEmpty(targets);
            Assert.All(targets, t => Assert.Matches("^\"/v1/[a-z/]+\"$", t));
            Assert.DoesNotContain("innerHTML", script);  // model output is shown as text, never parsed as HTML
        }
        using (var css = await GetAsync(server, "/chat.css", "text/css,*/*;q=0.1"))
        {
            Assert.Equal(HttpStatusCode.OK, css.StatusCode);
            Assert.Equal("text/css", css.Content.Headers.ContentType?.MediaType);
        }
        // Nothing the page loads names another host or scheme.
        foreach (var path in new[] { "/chat", "/chat.js", "/chat.css" })
        {
            using var r = await GetAsync(server, path, "*/*");
            string text = await r.Content.ReadAsStringAsync();
            Assert.DoesNotMatch(@"(src|href)\s*=\s*""//", text);   // protocol-relative: another host
            Assert.DoesNotMatch(@"https?://", text);
            Assert.DoesNotMatch(@"@import|url\(", text);
        }

        // API clients: GET / is still the JSON 405 naming POST.
        using (var api = await GetAsync(server, "/", "application/json"))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, api.StatusCode);
            Assert.Equal("POST", string.Join(",", api.Content.Headers.Allow));
            Assert.Equal("method_not_allowed", JsonDocument.Parse(await api.Content.ReadAsStringAsync()).RootElement.GetProperty("error_type").GetString());
        }
        Assert.Equal(0, server.Generator.Started);
    }

    static string? FindNode() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
            .Select(d => Path.Combine(d, "node")).FirstOrDefault(File.Exists);

    /// <summary>Runs the page's script against the server in Node with a minimal DOM (no browser on the test machines).</summary>
    static async Task<JsonElement> DriveAsync(string node, TestServer server, string mode)
    {
        string driver = Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Server", "chat-page-driver.mjs");
        var start = new System.Diagnostics.ProcessStartInfo(node) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { driver, server.BaseAddress.ToString().TrimEnd('/'), mode }) start.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(process.ExitCode == 0, $"driver exited {process.ExitCode}: {await stderr}");
        return JsonDocument.Parse(await stdout).RootElement.Clone();
    }

    [SkippableFact]
    public async Task Typing_a_message_streams_the_answer_and_stop_cuts_it_short()
    {
        string? node = FindNode();
        Skip.If(node is null, "node is not installed: the page's script cannot be run");
        await using var server = await TestServer.StartAsync();
        server.Generator.Script = (_, _) => "Hello from Harpia.";   // the page samples (temperature 0.7) without a seed
        var result = await DriveAsync(node!, server, "send");
        var bubbles = result.GetProperty("bubbles").EnumerateArray().ToArray();
        Assert.Equal(2, bubbles.Length);
        Assert.Equal("msg user", bubbles[0].GetProperty("cls").GetString());
        Assert.Equal("Hi", bubbles[0].GetProperty("text").GetString());
        Assert.Equal("msg assistant", bubbles[1].GetProperty("cls").GetString());
        Assert.Equal("Hello from Harpia.", bubbles[1].GetProperty("text").GetString());
        Assert.StartsWith("19 tokens", bubbles[1].GetProperty("meta").GetString());
        Assert.EndsWith("· stop", bubbles[1].GetProperty("meta").GetString());
        Assert.Equal("User: Hi\nFalcon:", server.Generator.LastPrompt);
        var request = server.Generator.Requests.Last();
        Assert.True(request.Sampling.DoSample);
        Assert.Equal(0.7f, request.Sampling.Temperature);
        Assert.Equal(256, request.PromptIds.Count + request.MaxNewTokens);   // max_tokens left to the server: what the context leaves
        // Only this origin's paths were fetched, and the conversation is kept in the browser.
        Assert.All(result.GetProperty("fetched").EnumerateArray(), f => Assert.StartsWith("/v1/", f.GetString()));
        Assert.Equal(2, result.GetProperty("stored").GetArrayLength());

        // Stop mid-stream: the answer keeps what had arrived, the generation is cancelled on the server.
        server.Generator.Script = (_, _) => new string('x', 200);
        server.Generator.TokenDelay = TimeSpan.FromMilliseconds(20);
        result = await DriveAsync(node!, server, "stop");
        var last = result.GetProperty("bubbles").EnumerateArray().Last();
        string partial = last.GetProperty("text").GetString()!;
        Assert.NotEmpty(partial);
        Assert.True(partial.Length < 200, $"stopped after {partial.Length} characters");
        Assert.EndsWith("· stopped", last.GetProperty("meta").GetString());
        for (int i = 0; i < 500 && server.Generator.Cancelled == 0; i++) await Task.Delay(10);
        Assert.Equal(1, server.Generator.Cancelled);
    }

    [Fact]
    public async Task The_page_is_served_without_the_api_key_but_the_api_still_wants_it_and_no_cors_is_granted()
    {
        await using var server = await TestServer.StartAsync(options: new ServerOptions { ApiKey = "s3cret" });
        using (var page = await GetAsync(server, "/", BrowserAccept))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.False(page.Headers.Contains("Access-Control-Allow-Origin"));
        }
        using (var js = await GetAsync(server, "/chat.js", "*/*")) Assert.Equal(HttpStatusCode.OK, js.StatusCode);
        using (var api = await GetAsync(server, "/", "application/json")) Assert.Equal(HttpStatusCode.Unauthorized, api.StatusCode);
        var (status, _) = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}]}""");
        Assert.Equal(401, status);
        using (var post = await server.PostJsonAsync("/chat", "{}")) Assert.Equal(HttpStatusCode.Unauthorized, post.StatusCode);
    }
}

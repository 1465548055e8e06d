using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Harpia.Cli.Commands;
using Harpia.Server;
using Harpia.Tests.Server;

namespace Harpia.Tests.Security;

/// <summary>Issue 18 #8: POST bodies must be declared JSON (as axum's Json extractor in TGI), CORS only when asked for.</summary>
public sealed class CorsAndContentTypeTests
{
    static HttpContent Body(string json, string? contentType)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(json));
        if (contentType is not null) content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        return content;
    }

    [Theory]
    [InlineData("/generate", null)]
    [InlineData("/generate", "text/plain")]
    [InlineData("/generate_stream", "application/x-www-form-urlencoded")]
    [InlineData("/v1/chat/completions", "multipart/form-data; boundary=x")]
    [InlineData("/v1/completions", "text/plain; charset=utf-8")]
    [InlineData("/tokenize", "text/plain")]
    public async Task A_body_not_declared_json_is_415_with_the_TGI_error_shape(string path, string? contentType)
    {
        await using var server = await TestServer.StartAsync();
        string json = path.StartsWith("/v1/chat") ? """{"messages":[{"role":"user","content":"Hi"}]}"""
            : path.StartsWith("/v1/") ? """{"prompt":"Hi"}""" : """{"inputs":"Hi"}""";
        using var response = await server.Http.PostAsync(path, Body(json, contentType));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Contains("application/json", body.GetProperty("error").GetString());
        Assert.Equal("validation", body.GetProperty("error_type").GetString());
        Assert.Equal(0, server.Generator.Started);
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("application/json; charset=utf-8")]
    [InlineData("Application/JSON;charset=UTF-8")]
    public async Task Json_with_or_without_charset_is_accepted(string contentType)
    {
        await using var server = await TestServer.StartAsync();
        using var response = await server.Http.PostAsync("/generate", Body("""{"inputs":"Hi","parameters":{"max_new_tokens":2}}""", contentType));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    static HttpRequestMessage Preflight(string origin) => new(HttpMethod.Options, "/generate")
    {
        Headers = { { "Origin", origin }, { "Access-Control-Request-Method", "POST" }, { "Access-Control-Request-Headers", "content-type" } },
    };

    static bool HasCorsHeaders(HttpResponseMessage r) => r.Headers.Any(h => h.Key.StartsWith("Access-Control-", StringComparison.OrdinalIgnoreCase));

    [Fact]
    public async Task Cors_is_off_by_default()
    {
        await using var server = await TestServer.StartAsync();
        using (var pre = await server.Http.SendAsync(Preflight("https://evil.example")))
        {
            Assert.NotEqual(HttpStatusCode.NoContent, pre.StatusCode);
            Assert.False(HasCorsHeaders(pre));
        }
        using var post = new HttpRequestMessage(HttpMethod.Post, "/generate") { Content = Body("""{"inputs":"Hi","parameters":{"max_new_tokens":1}}""", "application/json") };
        post.Headers.Add("Origin", "https://evil.example");
        using var answer = await server.Http.SendAsync(post);
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.False(HasCorsHeaders(answer));
    }

    [Fact]
    public async Task Cors_allow_origin_grants_only_the_named_origins_and_answers_their_preflight()
    {
        await using var server = await TestServer.StartAsync(options: new ServerOptions { ApiKey = "k", CorsAllowOrigins = ["https://app.example", "http://localhost:3000"] });
        using (var pre = await server.Http.SendAsync(Preflight("https://app.example")))   // no key: preflights carry none
        {
            Assert.Equal(HttpStatusCode.NoContent, pre.StatusCode);
            Assert.Equal("https://app.example", pre.Headers.GetValues("Access-Control-Allow-Origin").Single());
            Assert.Contains("POST", pre.Headers.GetValues("Access-Control-Allow-Methods").Single());
            Assert.Contains("content-type", pre.Headers.GetValues("Access-Control-Allow-Headers").Single());
        }
        using (var other = await server.Http.SendAsync(Preflight("https://evil.example")))
        {
            Assert.NotEqual(HttpStatusCode.NoContent, other.StatusCode);
            Assert.False(HasCorsHeaders(other));
        }
        using var post = new HttpRequestMessage(HttpMethod.Post, "/generate") { Content = Body("""{"inputs":"Hi","parameters":{"max_new_tokens":1}}""", "application/json") };
        post.Headers.Add("Origin", "http://localhost:3000");
        post.Headers.Authorization = TestServer.Bearer("k");
        using var answer = await server.Http.SendAsync(post);
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal("http://localhost:3000", answer.Headers.GetValues("Access-Control-Allow-Origin").Single());
    }

    [Fact]
    public void Cors_allow_origin_flag_is_repeatable_and_comma_separated_and_checked()
    {
        var options = ServeCommand.ToServerOptions(new ServeCommand.Settings { ApiKey = "k", CorsAllowOrigin = ["https://a.example, https://b.example", "http://c.example:8000"] });
        Assert.Equal(["https://a.example", "https://b.example", "http://c.example:8000"], options.CorsAllowOrigins);
        Assert.Empty(ServeCommand.ToServerOptions(new ServeCommand.Settings { ApiKey = "k" }).CorsAllowOrigins);
        var bad = Assert.Throws<HarpiaException>(() => new ServerOptions { CorsAllowOrigins = ["app.example/path"] }.Resolve(2048));
        Assert.Contains("--cors-allow-origin 'app.example/path'", bad.Message);
    }
}

using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace Harpia.Tests.Server;

/// <summary>Issue 18 #11: dotted unknown paths, null chat content, invalid UTF-8 bodies.</summary>
public sealed class PathAndBodyEdgeTests
{
    [Theory]
    [InlineData("/favicon.ico")]
    [InlineData("/robots.txt")]
    [InlineData("/v1/x.json")]
    public async Task Unknown_dotted_paths_get_the_same_json_404_as_other_unknown_paths(string path)
    {
        await using var server = await TestServer.StartAsync();
        using var r = await server.Http.GetAsync(path);
        Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        Assert.Equal("application/json", r.Content.Headers.ContentType?.MediaType);
        var body = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("not_found", body.GetProperty("error_type").GetString());
        Assert.Contains(path, body.GetProperty("error").GetString());
    }

    [Theory]
    [InlineData("/generate", """{"inputs":"\ud800"}""")]
    [InlineData("/generate", """{"inputs":"a\udc00b"}""")]
    [InlineData("/v1/chat/completions", """{"messages":[{"role":"user","content":"\ud83d"}]}""")]
    public async Task A_lone_surrogate_escape_is_400_as_for_a_body_that_is_not_json_text(string path, string json)
    {
        // serde_json (TGI) refuses a lone surrogate while parsing: the text is not a valid string (issue 18 #11).
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync(path, json);
        Assert.Equal(400, status);
        Assert.Contains("surrogate", body.GetProperty("error").GetString());
        Assert.Equal(0, server.Generator.Started);
    }

    [Theory]
    [InlineData("/generate", """{"inputs":"a","inputs":"b"}""", "inputs")]
    [InlineData("/generate", """{"inputs":"a","parameters":{"max_new_tokens":2,"max_new_tokens":3}}""", "max_new_tokens")]
    [InlineData("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"messages":[]}""", "messages")]
    public async Task Duplicate_keys_are_422_as_serde_refuses_them(string path, string json, string key)
    {
        // Which of two values would win is a guess a client should not rely on (issue 18 #11); TGI's serde refuses.
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync(path, json);
        Assert.Equal(422, status);
        Assert.Contains(key, body.GetProperty("error").GetString());
        Assert.Equal(0, server.Generator.Started);
    }

    [Theory]
    [InlineData("user")]
    [InlineData("system")]
    public async Task Null_content_for_a_user_or_system_message_is_422_naming_the_field(string role)
    {
        await using var server = await TestServer.StartAsync();
        string json = role == "system"
            ? """{"messages":[{"role":"system","content":null},{"role":"user","content":"Hi"}]}"""
            : """{"messages":[{"role":"user","content":null}]}""";
        var (status, body) = await server.PostAsync("/v1/chat/completions", json);
        Assert.Equal(422, status);
        Assert.Contains("messages[0].content", body.GetProperty("error").GetString());
        Assert.Equal(0, server.Generator.Started);
    }

    [Fact]
    public async Task Null_content_for_an_assistant_message_is_still_accepted()
    {
        await using var server = await TestServer.StartAsync();
        var (status, _) = await server.PostAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":null},{"role":"user","content":"again"}],"max_tokens":2}""");
        Assert.Equal(200, status);
    }

    [Theory]
    [InlineData("/generate", "{\"inputs\":\"a\xFF\xFE!\"}")]
    [InlineData("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xC3\x28\"}]}")]
    public async Task Invalid_utf8_in_the_body_is_400(string path, string latin1Body)
    {
        await using var server = await TestServer.StartAsync();
        var content = new ByteArrayContent(System.Text.Encoding.Latin1.GetBytes(latin1Body));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var r = await server.Http.PostAsync(path, content);
        Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        var body = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        Assert.Contains("UTF-8", body.GetProperty("error").GetString());
        Assert.Equal(0, server.Generator.Started);
    }
}

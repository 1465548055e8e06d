using Microsoft.AspNetCore.Http;

namespace Harpia.Server;

/// <summary>
/// The built-in chat page (GET / for browsers, and /chat): an HTML page, its script and its style, embedded in this
/// assembly and served from here, so the page works on an offline server and its Content-Security-Policy can allow
/// this origin alone. The script streams from /v1/chat/completions and asks for the API key when the server wants one.
/// </summary>
internal static class ChatPage
{
    public const string PagePath = "/chat", ScriptPath = "/chat.js", StylePath = "/chat.css";

    /// <summary>Same origin only: no inline script, no external fetch, no framing by other sites.</summary>
    public const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    static readonly Dictionary<string, (string ContentType, byte[] Body)> Assets = new(StringComparer.Ordinal)
    {
        [PagePath] = ("text/html; charset=utf-8", Load("chat.html")),
        [ScriptPath] = ("text/javascript; charset=utf-8", Load("chat.js")),
        [StylePath] = ("text/css; charset=utf-8", Load("chat.css")),
    };

    static byte[] Load(string name)
    {
        using var stream = typeof(ChatPage).Assembly.GetManifestResourceStream("Harpia.Server.ChatPage." + name)
            ?? throw new InvalidOperationException($"the chat page resource {name} is missing from the build");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>A browser navigating (Accept names text/html); API clients send application/json or */*.</summary>
    public static bool AcceptsHtml(HttpRequest request) =>
        request.Headers.Accept.ToString().Contains("text/html", StringComparison.OrdinalIgnoreCase);

    /// <summary>Requests for the page's files, which are served without the API key (they hold no secret).</summary>
    public static bool IsPublicAsset(HttpRequest request)
    {
        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method)) return false;
        string path = request.Path.Value ?? "";
        return Assets.ContainsKey(path) || (path == "/" && AcceptsHtml(request));
    }

    public static async Task Serve(HttpContext ctx)
    {
        string path = ctx.Request.Path.Value ?? "/";
        var (contentType, body) = Assets[path == "/" ? PagePath : path];
        var headers = ctx.Response.Headers;
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = contentType;
        headers.ContentSecurityPolicy = ContentSecurityPolicy;
        headers.XContentTypeOptions = "nosniff";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        headers.CacheControl = "no-cache";
        ctx.Response.ContentLength = body.Length;
        if (!HttpMethods.IsHead(ctx.Request.Method)) await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted).ConfigureAwait(false);
    }
}

using System.Net;
using System.Security.Cryptography;
using System.Text;
using Harpia.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Harpia.Server;

/// <summary>
/// Builds the HTTP server: TGI's routes and OpenAI's over one <see cref="ITextGenerator"/>, on Kestrel.
/// Shape of TGI's router: validation → concurrency limit (429) → runtime → JSON or SSE.
/// </summary>
public static class HarpiaServer
{
    /// <param name="embedder">What /v1/embeddings and /embed run; null: the generator itself when it can embed, or
    /// the model a <see cref="Generator"/> runs (a <see cref="Harpia.Models.DecoderModel"/>).</param>
    public static WebApplication Build(ServerOptions options, ITextGenerator generator, ITextEmbedder? embedder = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(generator);
        var (maxInput, maxTotal) = options.Resolve(generator.Model.MaxPositionEmbeddings);
        var address = ParseHostname(options.Hostname);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ApplicationName = "Harpia.Server" });
        builder.Logging.ClearProviders();
        if (options.LogToConsole) builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // A failed start (port in use, address not here) reaches the caller as an exception and the CLI prints it in
        // one line; the host's own log of it would add a stack trace first.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
        builder.WebHost.UseKestrel(k =>
        {
            k.Listen(address, options.Port);
            k.Limits.MaxRequestBodySize = options.PayloadLimit;
            k.AddServerHeader = false;
        });
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(options.ShutdownGraceSeconds + 10));

        var state = new ServerState(options.MaxConcurrentRequests);
        var metrics = new ServerMetrics();
        var grammars = new Harpia.Runtime.Grammar.GrammarCompiler(options.GrammarLimits);
        if (generator is Generator runtime) metrics.ObserveRuntime(() => runtime.Statistics);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(state);
        builder.Services.AddSingleton(metrics);
        builder.Services.AddSingleton(generator);
        builder.Services.AddSingleton(grammars);
        builder.Services.AddHostedService<DrainService>();

        var app = builder.Build();
        embedder ??= generator as ITextEmbedder
            ?? (generator is Generator { CausalModel: Harpia.Models.DecoderModel model } ? new ModelEmbedder(model, generator.Tokenizer) : null);
        var endpoints = new HarpiaEndpoints(generator, options, state, metrics, maxInput, maxTotal, grammars, embedder);

        app.Use(async (ctx, next) =>
        {
            try
            {
                if (Cors(ctx, options)) return;   // a granted preflight is answered here, before the API key
                await Pipeline(ctx, next, options, state).ConfigureAwait(false);
            }
            catch (BadHttpRequestException ex) when (!ctx.Response.HasStarted)
            {
                string message = ex.StatusCode == 413 ? $"Request body too large: the limit is {options.PayloadLimit} bytes" : ex.Message;
                await HttpIo.WriteErrorAsync(ctx, ex.StatusCode, "validation", message).ConfigureAwait(false);
            }
            catch (Exception ex) when (!ctx.Response.HasStarted && !ctx.RequestAborted.IsCancellationRequested)
            {
                app.Logger.LogError(ex, "unhandled error on {Path}", ctx.Request.Path);
                await HttpIo.WriteErrorAsync(ctx, 500, "internal", $"Internal server error: {ex.GetType().Name}").ConfigureAwait(false);
            }
        });

        (string Method, string Path, RequestDelegate Handler)[] routes =
        [
            ("POST", "/", endpoints.CompatGenerate),
            ("POST", "/generate", endpoints.Generate),
            ("POST", "/generate_stream", endpoints.GenerateStream),
            ("POST", "/tokenize", endpoints.Tokenize),
            ("GET", "/info", endpoints.Info),
            ("GET", "/health", endpoints.Health),
            ("GET", "/metrics", endpoints.Metrics),
            ("POST", "/v1/chat/completions", endpoints.ChatCompletions),
            ("POST", "/v1/completions", endpoints.Completions),
            ("GET", "/v1/models", endpoints.Models),
            ("POST", "/v1/embeddings", endpoints.Embeddings),
            ("POST", "/embed", endpoints.Embed),
            ("GET", ChatPage.PagePath, ChatPage.Serve),
            ("GET", ChatPage.ScriptPath, ChatPage.Serve),
            ("GET", ChatPage.StylePath, ChatPage.Serve),
        ];
        foreach (var (method, path, handler) in routes) app.MapMethods(path, [method], handler);
        // The chat page at GET / for browsers; API clients (no text/html in Accept) keep getting the 405 below.
        app.MapMethods("/", ["GET"], ctx => ChatPage.AcceptsHtml(ctx.Request) ? ChatPage.Serve(ctx) : MethodNotAllowed(ctx, "/", ["POST"]));
        // "{*path}" and not MapFallback's default "{*path:nonfile}", which leaves /favicon.ico and other dotted paths
        // to an empty 404 instead of the JSON one.
        app.MapFallback("{*path}", ctx =>
        {
            // A known path with the wrong method is 405 with Allow, as HTTP (and TGI's axum router) says.
            string path = ctx.Request.Path.Value ?? "/";
            var allowed = routes.Where(r => r.Path == path).Select(r => r.Method).ToArray();
            if (allowed.Length == 0) return HttpIo.WriteErrorAsync(ctx, 404, "not_found", $"No route for {ctx.Request.Method} {path}");
            return MethodNotAllowed(ctx, path, allowed);
        });
        return app;
    }

    static Task MethodNotAllowed(HttpContext ctx, string path, string[] allowed)
    {
        ctx.Response.Headers.Allow = string.Join(", ", allowed);
        return HttpIo.WriteErrorAsync(ctx, 405, "method_not_allowed", $"{ctx.Request.Method} is not allowed on {path}: use {string.Join(" or ", allowed)}");
    }

    /// <summary>API key, then drain state and in-flight counting around every request but /health and /metrics.</summary>
    static async Task Pipeline(HttpContext ctx, RequestDelegate next, ServerOptions options, ServerState state)
    {
        var path = ctx.Request.Path;
        bool probe = path.Equals("/health", StringComparison.Ordinal);
        // The chat page holds no secret and asks for the key itself (a browser cannot send it on navigation).
        bool page = ChatPage.IsPublicAsset(ctx.Request);
        if (page) { await next(ctx).ConfigureAwait(false); return; }
        if (!probe && !string.IsNullOrEmpty(options.ApiKey) && !Authorized(ctx, options.ApiKey))
        {
            ctx.Response.Headers.WWWAuthenticate = "Bearer";
            await HttpIo.WriteErrorAsync(ctx, 401, "authentication", "Unauthorized: missing or invalid API key (send 'Authorization: Bearer <key>')").ConfigureAwait(false);
            return;
        }
        if (probe || path.Equals("/metrics", StringComparison.Ordinal)) { await next(ctx).ConfigureAwait(false); return; }
        state.EnterRequest();
        try
        {
            if (state.Draining)
            {
                ctx.Response.Headers.Connection = "close";
                await HttpIo.WriteErrorAsync(ctx, 503, "unhealthy", "Server is shutting down").ConfigureAwait(false);
                return;
            }
            await next(ctx).ConfigureAwait(false);
        }
        finally { state.LeaveRequest(); }
    }

    /// <summary>
    /// CORS only for the origins --cors-allow-origin names (none by default: no Access-Control-* headers at all, so
    /// browsers keep other origins from reading answers or sending JSON). Returns true when it answered a preflight.
    /// </summary>
    static bool Cors(HttpContext ctx, ServerOptions options)
    {
        if (options.CorsAllowOrigins.Count == 0) return false;
        string origin = ctx.Request.Headers.Origin.ToString();
        if (origin.Length == 0) return false;
        bool any = options.CorsAllowOrigins.Contains("*");
        if (!any && !options.CorsAllowOrigins.Contains(origin, StringComparer.OrdinalIgnoreCase)) return false;
        var headers = ctx.Response.Headers;
        headers.AccessControlAllowOrigin = any ? "*" : origin;
        if (!any) headers.Vary = "Origin";
        if (!HttpMethods.IsOptions(ctx.Request.Method) || ctx.Request.Headers.AccessControlRequestMethod.Count == 0) return false;
        headers.AccessControlAllowMethods = "GET, POST";
        headers.AccessControlAllowHeaders = "authorization, content-type";
        headers.AccessControlMaxAge = "600";
        ctx.Response.StatusCode = StatusCodes.Status204NoContent;
        return true;
    }

    static bool Authorized(HttpContext ctx, string apiKey)
    {
        string header = ctx.Request.Headers.Authorization.ToString();
        const string prefix = "Bearer ";
        if (!header.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)) return false;
        var given = Encoding.UTF8.GetBytes(header[prefix.Length..].Trim());
        var expected = Encoding.UTF8.GetBytes(apiKey);
        return CryptographicOperations.FixedTimeEquals(given, expected);
    }

    static IPAddress ParseHostname(string hostname)
    {
        if (hostname.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        // An IPv4-mapped IPv6 address (::ffff:127.0.0.1) names an IPv4 address; sockets refuse to bind it as IPv6
        // ("Invalid argument"), so listen on the IPv4 address it stands for.
        if (IPAddress.TryParse(hostname.Trim('[', ']'), out var ip)) return ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip;
        throw new HarpiaException($"--hostname must be an IP address (127.0.0.1, 0.0.0.0, ::) or localhost, got '{hostname}'");
    }

    /// <summary>The address Kestrel bound (with port 0, the port it picked), e.g. http://127.0.0.1:41234.</summary>
    public static Uri BoundAddress(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        var first = addresses?.FirstOrDefault() ?? throw new InvalidOperationException("the server is not started");
        return new Uri(first);
    }

    public static ServerState State(WebApplication app) => app.Services.GetRequiredService<ServerState>();
    public static ServerMetrics Metrics(WebApplication app) => app.Services.GetRequiredService<ServerMetrics>();
    public static Harpia.Runtime.Grammar.GrammarCompiler Grammars(WebApplication app) => app.Services.GetRequiredService<Harpia.Runtime.Grammar.GrammarCompiler>();
}

using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Http;

namespace Harpia.Server;

/// <summary>An error with its HTTP status and TGI <c>error_type</c>, turned into <c>{error, error_type}</c>.</summary>
public sealed class HttpProblemException(int status, string errorType, string message) : Exception(message)
{
    public int Status { get; } = status;
    public string ErrorType { get; } = errorType;
}

/// <summary>Request body parsing and JSON/SSE writing shared by the endpoints.</summary>
internal static class HttpIo
{
    public static async Task<T> ReadJsonAsync<T>(HttpContext ctx, JsonTypeInfo<T> typeInfo) where T : class
    {
        // Like axum's Json extractor (TGI): the body must be declared JSON, which also makes a browser page's
        // cross-origin POST a non-"simple" request that needs a CORS preflight the server does not grant by default.
        if (!IsJsonContentType(ctx.Request.ContentType))
            throw new HttpProblemException(415, "validation",
                $"Expected request with 'Content-Type: application/json', got {(string.IsNullOrEmpty(ctx.Request.ContentType) ? "none" : $"'{ctx.Request.ContentType}'")}");
        JsonDocument doc;
        try
        {
            // Buffered first (Kestrel's body limit bounds it) so the bytes can be checked as UTF-8: the JSON reader
            // only decodes strings when they are read, so a bad byte inside one would surface as 422 "expected a
            // string" instead of the 400 a body that is not JSON text gets (axum/serde reject it while parsing).
            var buffer = new MemoryStream();   // not disposed: the document below keeps reading its array
            await ctx.Request.Body.CopyToAsync(buffer, ctx.RequestAborted).ConfigureAwait(false);
            var bytes = buffer.GetBuffer().AsMemory(0, (int)buffer.Length);
            if (!System.Text.Unicode.Utf8.IsValid(bytes.Span))
                throw new HttpProblemException(400, "validation", "Failed to parse the request body as JSON: the body is not valid UTF-8");
            doc = JsonDocument.Parse(bytes);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw new HttpProblemException(413, "validation", $"Request body too large: the limit is {ctx.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>()?.MaxRequestBodySize} bytes");
        }
        catch (JsonException ex)
        {
            throw new HttpProblemException(400, "validation", $"Failed to parse the request body as JSON: {FirstSentence(ex.Message)}");
        }
        using (doc)
        {
            RefuseLoneSurrogates(doc.RootElement);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new HttpProblemException(422, "validation", $"Failed to deserialize the JSON body into the target type: expected an object, got {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}");
            try
            {
                return doc.RootElement.Deserialize(typeInfo)
                    ?? throw new HttpProblemException(422, "validation", "Failed to deserialize the JSON body into the target type: null body");
            }
            catch (JsonException ex)
            {
                string path = ex.Path is { Length: > 2 } p ? p[2..] : "body";
                throw new HttpProblemException(422, "validation", $"Failed to deserialize the JSON body into the target type: {path}: {Describe(ex)}");
            }
        }
    }

    /// <summary>
    /// A string escape naming half a surrogate pair (\ud800 alone) is valid JSON syntax but no text: serde_json (TGI)
    /// refuses it while parsing, so it is a 400 here too, not a 422 about the field's type. Depth is bounded by the
    /// parser (64).
    /// </summary>
    static void RefuseLoneSurrogates(JsonElement e)
    {
        try
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.String: _ = e.GetString(); break;
                case JsonValueKind.Array: foreach (var item in e.EnumerateArray()) RefuseLoneSurrogates(item); break;
                case JsonValueKind.Object:
                    foreach (var p in e.EnumerateObject()) { _ = p.Name; RefuseLoneSurrogates(p.Value); }
                    break;
            }
        }
        catch (InvalidOperationException)
        {
            throw new HttpProblemException(400, "validation", "Failed to parse the request body as JSON: a string holds a lone surrogate (a \\uD800-\\uDFFF escape without its pair)");
        }
    }

    /// <summary>application/json or application/*+json, any parameters (charset) allowed, as axum accepts.</summary>
    internal static bool IsJsonContentType(string? contentType)
    {
        if (!Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out var media)) return false;
        var type = media.Type;
        var subtype = media.SubType;
        return type.Equals("application", StringComparison.OrdinalIgnoreCase)
            && (subtype.Equals("json", StringComparison.OrdinalIgnoreCase) || subtype.EndsWith("+json", StringComparison.OrdinalIgnoreCase));
    }

    static string Describe(JsonException ex)
    {
        // System.Text.Json says "The JSON value could not be converted to System.Single"; say it as a JSON type.
        string m = ex.Message;
        string? type = m.Contains("System.Single") || m.Contains("System.Double") ? "a number"
            : m.Contains("System.Int32") || m.Contains("System.Int64") ? "an integer"
            : m.Contains("System.UInt64") ? "a non-negative integer"
            : m.Contains("System.Boolean") ? "a boolean"
            : m.Contains("System.String") ? "a string"
            : m.Contains("System.Collections.Generic.List") ? "an array"
            : m.Contains("Dto") ? "an object" : null;
        return type is null ? FirstSentence(m) : $"invalid type, expected {type}";
    }

    static string FirstSentence(string m)
    {
        int i = m.IndexOf(". ", StringComparison.Ordinal);
        return i > 0 ? m[..(i + 1)] : m;
    }

    /// <summary>
    /// UTF-8 text as it is, like TGI's serde: "Olá" and "a > b" go out as written, not as \u00E1 and \u003E (the
    /// default encoder's HTML-safe escaping is for JSON inlined in web pages, which these bodies never are).
    /// </summary>
    static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static async Task WriteJsonAsync<T>(HttpContext ctx, int status, T value, JsonTypeInfo<T> typeInfo)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        var pipe = ctx.Response.BodyWriter;
        using (var json = new Utf8JsonWriter(pipe, WriterOptions)) JsonSerializer.Serialize(json, value, typeInfo);
        await pipe.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
    }

    public static Task WriteErrorAsync(HttpContext ctx, int status, string errorType, string message) =>
        WriteJsonAsync(ctx, status, new ErrorResponse(message, errorType), ServerJsonContext.Default.ErrorResponse);

    public static void StartEventStream(HttpContext ctx)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers["X-Accel-Buffering"] = "no";
    }

    static readonly byte[] TgiDataPrefix = "data:"u8.ToArray();
    static readonly byte[] OpenAiDataPrefix = "data: "u8.ToArray();
    static readonly byte[] EventEnd = "\n\n"u8.ToArray();

    /// <summary>
    /// One SSE event. TGI (axum) writes <c>data:{json}</c> with no space; OpenAI writes <c>data: {json}</c>. SSE
    /// readers treat both alike, but each route speaks its own dialect. The whole event goes into the response pipe
    /// before one flush, so a cancellation (client gone, drain over) never leaves half an event on the wire.
    /// </summary>
    public static async Task WriteEventAsync<T>(HttpContext ctx, T value, JsonTypeInfo<T> typeInfo, bool openAiStyle, CancellationToken ct)
    {
        var pipe = ctx.Response.BodyWriter;
        pipe.Write(openAiStyle ? OpenAiDataPrefix : TgiDataPrefix);
        using (var json = new Utf8JsonWriter(pipe, WriterOptions)) JsonSerializer.Serialize(json, value, typeInfo);
        pipe.Write(EventEnd);
        await pipe.FlushAsync(ct).ConfigureAwait(false);
    }

    static readonly byte[] DoneEvent = "data: [DONE]\n\n"u8.ToArray();

    public static async Task WriteDoneAsync(HttpContext ctx, CancellationToken ct)
    {
        ctx.Response.BodyWriter.Write(DoneEvent);
        await ctx.Response.BodyWriter.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>TGI sends a null logprob where there is none (the first prompt token); JSON has no NaN.</summary>
    public static float? Logprob(float value) => float.IsFinite(value) ? value : null;
}

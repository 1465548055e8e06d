using System.Runtime.InteropServices;
using System.Text.Json;
using Harpia.Runtime;
using Microsoft.AspNetCore.Http;

namespace Harpia.Server;

/// <summary>
/// OpenAI's /v1/embeddings and TGI's /embed: inputs onto token ids, the library's <see cref="ITextEmbedder"/>
/// (mean-pooled, L2-normalized final hidden states), vectors back in the wire shapes. No model logic.
/// </summary>
internal sealed partial class HarpiaEndpoints
{
    /// <summary>Inputs per embeddings request, OpenAI's own limit.</summary>
    const int MaxEmbeddingInputs = 2048;

    ITextEmbedder Embedder => _embedder ?? throw new HttpProblemException(501, "not_implemented",
        "Embeddings are not available: this server's runtime cannot return the model's hidden states");

    /// <summary>
    /// OpenAI <c>input</c>: a string, an array of strings, an array of token ids, or an array of token-id arrays;
    /// each becomes token ids, checked against the vocabulary and --max-input-tokens (or truncated to it).
    /// </summary>
    List<IReadOnlyList<int>> ReadEmbeddingInputs(JsonElement? input, string field, bool truncate)
    {
        if (input is not { } e || e.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined) throw Invalid($"`{field}` is required");
        var items = new List<(string Where, JsonElement Value)>();
        if (e.ValueKind == JsonValueKind.String) items.Add(($"`{field}`", e));
        else if (e.ValueKind == JsonValueKind.Array)
        {
            if (e.GetArrayLength() == 0) throw Invalid($"`{field}` cannot be empty");
            if (e.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number)) items.Add(($"`{field}`", e));   // one token array
            else items.AddRange(e.EnumerateArray().Select((x, i) => ($"`{field}[{i}]`", x)));
        }
        else throw Invalid($"`{field}` must be a string, an array of strings, an array of token ids or an array of token-id arrays");
        if (items.Count > MaxEmbeddingInputs) throw Invalid($"`{field}` holds {items.Count} inputs; at most {MaxEmbeddingInputs} per request");
        int vocab = _generator.Model.VocabSize, limit = Math.Min(_validator.MaxInputTokens, Embedder.MaxInputTokens);
        var result = new List<IReadOnlyList<int>>(items.Count);
        foreach (var (where, value) in items)
        {
            IReadOnlyList<int> ids;
            if (value.ValueKind == JsonValueKind.String)
            {
                string text = value.GetString()!;
                if (text.Length == 0) throw Invalid($"{where} cannot be empty");
                if (!truncate && text.Length > (long)limit * 64) throw Invalid($"{where} must have at most {limit} tokens. Given: more than {limit} ({text.Length} characters)");
                ids = Embedder.Tokenizer.Encode(text, addSpecialTokens: false);
            }
            else if (value.ValueKind == JsonValueKind.Array)
            {
                var list = new List<int>(value.GetArrayLength());
                foreach (var t in value.EnumerateArray())
                {
                    if (t.ValueKind != JsonValueKind.Number || !t.TryGetInt32(out int id) || id < 0 || id >= vocab)
                        throw Invalid($"{where} must hold token ids of this model (integers 0 to {vocab - 1}); got {t.GetRawText()}");
                    list.Add(id);
                }
                ids = list;
            }
            else throw Invalid($"{where} must be a string or an array of token ids");
            if (ids.Count == 0) throw Invalid($"{where} cannot be empty");
            if (ids.Count > limit)
            {
                if (!truncate) throw Invalid($"{where} must have at most {limit} tokens. Given: {ids.Count}");
                ids = ids.Take(limit).ToArray();
            }
            result.Add(ids);
        }
        return result;
    }

    static EmbeddingPooling ReadPooling(string? pooling) => pooling switch
    {
        null or "mean" => EmbeddingPooling.Mean,
        "last" or "last_token" => EmbeddingPooling.LastToken,
        _ => throw Invalid($"`pooling` '{pooling}' is not supported (mean, last)"),
    };

    // ------------------------------------------------------------------ /v1/embeddings

    public async Task Embeddings(HttpContext ctx)
    {
        EmbeddingRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.EmbeddingRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        await HandleGenerationAsync(ctx, async ct =>
        {
            var embedder = Embedder;
            bool base64 = dto.EncodingFormat switch
            {
                null or "float" => false,
                "base64" => true,
                var other => throw Invalid($"`encoding_format` '{other}' is not supported (float, base64)"),
            };
            if (dto.Dimensions is { } d && d != embedder.Dimensions)
                throw Invalid($"`dimensions` {d} is not supported: this model's embeddings have {embedder.Dimensions} dimensions (leave it out, or send {embedder.Dimensions})");
            var pooling = ReadPooling(dto.Pooling);
            var inputs = ReadEmbeddingInputs(dto.Input, "input", truncate: false);
            var vectors = await embedder.EmbedAsync(inputs, pooling, ct).ConfigureAwait(false);
            int tokens = inputs.Sum(i => i.Count);

            ctx.Response.StatusCode = 200;
            ctx.Response.ContentType = "application/json";
            var pipe = ctx.Response.BodyWriter;
            using (var w = new Utf8JsonWriter(pipe))
            {
                w.WriteStartObject();
                w.WriteString("object", "list");
                w.WriteStartArray("data");
                for (int i = 0; i < vectors.Length; i++)
                {
                    w.WriteStartObject();
                    w.WriteString("object", "embedding");
                    w.WriteNumber("index", i);
                    if (base64) w.WriteBase64String("embedding", MemoryMarshal.AsBytes(vectors[i].AsSpan())); // little-endian float32, as OpenAI's
                    else
                    {
                        w.WriteStartArray("embedding");
                        foreach (float x in vectors[i]) w.WriteNumberValue(x);
                        w.WriteEndArray();
                    }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteString("model", _modelId);
                w.WriteStartObject("usage");
                w.WriteNumber("prompt_tokens", tokens);
                w.WriteNumber("total_tokens", tokens);
                w.WriteEndObject();
                w.WriteEndObject();
            }
            await pipe.FlushAsync(ct).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    // ------------------------------------------------------------------ TGI /embed

    /// <summary>TGI (text-embeddings-inference) <c>/embed</c>: <c>{inputs, normalize?, truncate?}</c> → <c>[[float]]</c>.</summary>
    public async Task Embed(HttpContext ctx)
    {
        EmbedRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.EmbedRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        await HandleGenerationAsync(ctx, async ct =>
        {
            var embedder = Embedder;
            if (dto.Normalize == false) throw Invalid("`normalize` false is not supported: this server returns L2-normalized embeddings");
            var inputs = ReadEmbeddingInputs(dto.Inputs, "inputs", truncate: dto.Truncate == true);
            var vectors = await embedder.EmbedAsync(inputs, ReadPooling(dto.Pooling), ct).ConfigureAwait(false);
            await HttpIo.WriteJsonAsync(ctx, 200, vectors.ToList(), ServerJsonContext.Default.ListSingleArray).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }
}

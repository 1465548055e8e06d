using System.Collections.Concurrent;
using System.Text.Json;

namespace Harpia.Runtime.Grammar;

/// <summary>
/// The front ends' way to a compiled grammar: TGI's <c>grammar</c> parameter, OpenAI's <c>response_format</c> and
/// Microsoft.Extensions.AI's <c>ChatResponseFormat</c> all end here. Compiled automata are kept by their source
/// (a client sends the same schema again and again), so a repeat request reuses both the automaton and the token
/// masks built on it; the cache is bounded.
/// </summary>
public static class Grammars
{
    const int MaxCached = 64;
    static readonly ConcurrentDictionary<string, ByteDfa> Cache = new(StringComparer.Ordinal);

    /// <summary>Generated text must fully match <paramref name="pattern"/>.</summary>
    public static ByteDfa Regex(string pattern) => Cached(RegexSource(pattern, null).Key, ct => ByteDfa.FromRegex(pattern, ct), default);

    /// <summary>Generated text must be a JSON document valid for <paramref name="schema"/> (a schema object or a JSON string holding one).</summary>
    public static ByteDfa JsonSchema(JsonElement schema)
    {
        var (key, compile) = SchemaSource(schema, null);
        return Cached(key, compile, default);
    }

    /// <summary>A pattern built from JSON schemas (tool calling's union of function schemas; see <see cref="JsonSchemaRegex"/>).</summary>
    public static ByteDfa SchemaPattern(string pattern) => Cached("schema-pattern\n" + pattern, ct => ByteDfa.FromSchemaPattern(pattern, ct), default);

    /// <summary>Any JSON object (OpenAI's <c>json_object</c> mode).</summary>
    public static ByteDfa AnyJsonObject() => JsonSchema(JsonDocument.Parse("""{"type":"object"}""").RootElement);

    /// <summary>
    /// TGI's <c>grammar</c>: <c>{"type": "json" (alias "json_object"), "value": schema}</c> or
    /// <c>{"type": "regex", "value": pattern}</c>. Null for a JSON null.
    /// </summary>
    /// <exception cref="HarpiaException">the grammar is malformed or uses what the compiler does not support.</exception>
    public static ByteDfa? FromTgi(JsonElement grammar) =>
        Describe(grammar, null) is { } g ? Cached(g.Key, g.Compile, default) : null;

    /// <summary>
    /// What a grammar is, checked against <paramref name="limits"/> without compiling anything: its cache key and how
    /// to compile it. Null for a JSON null.
    /// </summary>
    internal static (string Key, Func<CancellationToken, ByteDfa> Compile)? Describe(JsonElement grammar, GrammarLimits? limits)
    {
        if (grammar.ValueKind == JsonValueKind.Null) return null;
        if (grammar.ValueKind != JsonValueKind.Object || !grammar.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw new HarpiaException("expected {\"type\": \"json\" | \"regex\", \"value\": …}");
        if (!grammar.TryGetProperty("value", out var value)) throw new HarpiaException("missing `value`");
        return type.GetString() switch
        {
            "json" or "json_object" => value.ValueKind is JsonValueKind.Object or JsonValueKind.String or JsonValueKind.True
                ? SchemaSource(value, limits) : throw new HarpiaException("a json grammar's `value` must be a JSON schema object"),
            "regex" => value.ValueKind == JsonValueKind.String
                ? RegexSource(value.GetString()!, limits) : throw new HarpiaException("a regex grammar's `value` must be a string"),
            var other => throw new HarpiaException($"unknown grammar type '{other}' (json or regex)"),
        };
    }

    internal static (string Key, Func<CancellationToken, ByteDfa> Compile) SchemaSource(JsonElement schema, GrammarLimits? limits)
    {
        string text = schema.GetRawText();
        if (limits is { } l && (schema.ValueKind == JsonValueKind.String ? schema.GetString()!.Length : text.Length) > l.MaxSourceChars)
            throw new HarpiaException($"grammar JSON schema: {text.Length:N0} characters is more than the server's limit of {l.MaxSourceChars:N0}");
        if (limits is null) return ("json\n" + text, ct => ByteDfa.FromJsonSchema(schema, null, ct));
        // Limited (an untrusted source): the schema becomes its pattern now, checking the enum and expansion limits,
        // so a grammar over them is refused before it waits for, or takes, a turn to compile.
        string key = "json\n" + text;
        if (TryCached(key, out var cached)) return (key, _ => cached);
        string pattern = JsonSchemaRegex.FromSchema(schema, limits);
        return (key, ct => ByteDfa.FromSchemaPattern(pattern, ct));
    }

    static (string Key, Func<CancellationToken, ByteDfa> Compile) RegexSource(string pattern, GrammarLimits? limits)
    {
        if (limits is { } l && pattern.Length > l.MaxSourceChars)
            throw new HarpiaException($"grammar regex: {pattern.Length:N0} characters is more than the server's limit of {l.MaxSourceChars:N0}");
        return ("regex\n" + pattern, ct => ByteDfa.FromRegex(pattern, ct));
    }

    internal static bool TryCached(string key, out ByteDfa dfa) => Cache.TryGetValue(key, out dfa!);

    internal static ByteDfa Cached(string key, Func<CancellationToken, ByteDfa> compile, CancellationToken ct)
    {
        if (Cache.TryGetValue(key, out var dfa)) return dfa;
        dfa = compile(ct);
        if (Cache.Count >= MaxCached) Cache.Clear(); // crude but bounded: a burst of distinct grammars recompiles
        return Cache.GetOrAdd(key, dfa);
    }
}

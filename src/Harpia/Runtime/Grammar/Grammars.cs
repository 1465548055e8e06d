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
    public static ByteDfa Regex(string pattern) => Cached("regex\n" + pattern, () => ByteDfa.FromRegex(pattern));

    /// <summary>Generated text must be a JSON document valid for <paramref name="schema"/> (a schema object or a JSON string holding one).</summary>
    public static ByteDfa JsonSchema(JsonElement schema) => Cached("json\n" + schema.GetRawText(), () => ByteDfa.FromJsonSchema(schema));

    /// <summary>Any JSON object (OpenAI's <c>json_object</c> mode).</summary>
    public static ByteDfa AnyJsonObject() => JsonSchema(JsonDocument.Parse("""{"type":"object"}""").RootElement);

    /// <summary>
    /// TGI's <c>grammar</c>: <c>{"type": "json" (alias "json_object"), "value": schema}</c> or
    /// <c>{"type": "regex", "value": pattern}</c>. Null for a JSON null.
    /// </summary>
    /// <exception cref="HarpiaException">the grammar is malformed or uses what the compiler does not support.</exception>
    public static ByteDfa? FromTgi(JsonElement grammar)
    {
        if (grammar.ValueKind == JsonValueKind.Null) return null;
        if (grammar.ValueKind != JsonValueKind.Object || !grammar.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw new HarpiaException("expected {\"type\": \"json\" | \"regex\", \"value\": …}");
        if (!grammar.TryGetProperty("value", out var value)) throw new HarpiaException("missing `value`");
        return type.GetString() switch
        {
            "json" or "json_object" => value.ValueKind is JsonValueKind.Object or JsonValueKind.String or JsonValueKind.True
                ? JsonSchema(value) : throw new HarpiaException("a json grammar's `value` must be a JSON schema object"),
            "regex" => value.ValueKind == JsonValueKind.String ? Regex(value.GetString()!) : throw new HarpiaException("a regex grammar's `value` must be a string"),
            var other => throw new HarpiaException($"unknown grammar type '{other}' (json or regex)"),
        };
    }

    static ByteDfa Cached(string key, Func<ByteDfa> compile)
    {
        if (Cache.TryGetValue(key, out var dfa)) return dfa;
        dfa = compile();
        if (Cache.Count >= MaxCached) Cache.Clear(); // crude but bounded: a burst of distinct grammars recompiles
        return Cache.GetOrAdd(key, dfa);
    }
}

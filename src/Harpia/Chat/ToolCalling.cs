using System.Text;
using System.Text.Json;
using Harpia.Runtime.Grammar;

namespace Harpia.Chat;

/// <summary>A function the model may call: its name, what it does, and its arguments' JSON schema (an object schema).</summary>
public sealed record ChatTool(string Name, string? Description, JsonElement Parameters);

/// <summary>A call the model made (or made in an earlier turn): <paramref name="Arguments"/> is the arguments' JSON text.</summary>
public sealed record ChatToolCall(string Id, string Name, string Arguments);

public enum ToolChoiceMode
{
    /// <summary>The model chooses between a text reply and calls.</summary>
    Auto,
    /// <summary>No calls: the tools are not offered.</summary>
    None,
    /// <summary>The reply is one or more calls.</summary>
    Required,
    /// <summary>The reply is a call of <see cref="ToolChoice.FunctionName"/>.</summary>
    Function,
}

public sealed record ToolChoice(ToolChoiceMode Mode, string? FunctionName = null)
{
    public static readonly ToolChoice Auto = new(ToolChoiceMode.Auto);
    public static readonly ToolChoice None = new(ToolChoiceMode.None);
    public static readonly ToolChoice Required = new(ToolChoiceMode.Required);
}

/// <summary>
/// Tool calling over any model, with Harpia's convention for models whose chat template knows no tools (Falcon's
/// format among them). The tools are described in the system turn; a call is written as
/// <c>&lt;tool_call&gt;{"name": "f", "arguments": {…}}</c>, several calls one per line. Tool results come back as
/// <c>tool</c> turns. Generation runs under a grammar (<see cref="GrammarPattern"/>): a call's JSON is generated
/// under the union of the functions' schemas, so its name is one of the tools and its arguments validate against
/// that function's parameters; with <see cref="ToolChoiceMode.Auto"/> the reply is either free text (not starting
/// with '&lt;') or calls, so a call the model chooses to make is constrained the same way.
/// </summary>
public static class ToolCalling
{
    public const string CallTag = "<tool_call>";

    /// <summary>Checks a tool the way OpenAI does: a function name of [a-zA-Z0-9_-]{1,64} and an object parameters schema.</summary>
    /// <exception cref="HarpiaException">the name or the schema is not acceptable, naming the tool.</exception>
    public static void Validate(IReadOnlyList<ChatTool> tools)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < tools.Count; i++)
        {
            var t = tools[i];
            if (string.IsNullOrEmpty(t.Name) || t.Name.Length > 64 || !t.Name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                throw new HarpiaException($"`tools[{i}].function.name` '{t.Name}' must be 1 to 64 characters of a-z, A-Z, 0-9, '_' and '-'");
            if (!seen.Add(t.Name)) throw new HarpiaException($"`tools[{i}].function.name` '{t.Name}' is given twice");
            if (t.Parameters.ValueKind != JsonValueKind.Object)
                throw new HarpiaException($"`tools[{i}].function.parameters` must be a JSON schema object (got {t.Parameters.ValueKind.ToString().ToLowerInvariant()})");
            if (t.Parameters.TryGetProperty("type", out var type) && !(type.ValueKind == JsonValueKind.String && type.GetString() == "object"))
                throw new HarpiaException($"`tools[{i}].function.parameters` must describe an object (\"type\": \"object\"), got \"type\": {type.GetRawText()}");
        }
    }

    /// <summary>The schema OpenAI gives a function without parameters: an object with no properties.</summary>
    public static readonly JsonElement NoParameters = JsonDocument.Parse("""{"type":"object","properties":{}}""").RootElement.Clone();

    /// <summary>The tools <paramref name="choice"/> leaves the model (the named one alone; none for None).</summary>
    public static IReadOnlyList<ChatTool> Offered(IReadOnlyList<ChatTool> tools, ToolChoice choice) => choice.Mode switch
    {
        ToolChoiceMode.None => [],
        ToolChoiceMode.Function => tools.Where(t => t.Name == choice.FunctionName).ToArray() is { Length: 1 } one ? one
            : throw new HarpiaException($"tool_choice names the function '{choice.FunctionName}', which is not among `tools` ({string.Join(", ", tools.Select(t => t.Name))})"),
        _ => tools,
    };

    /// <summary>The system text that offers <paramref name="tools"/> in Harpia's convention (empty when none are offered).</summary>
    /// <param name="listTools">false when the chat template lists the tools itself: only the call format is stated.</param>
    public static string Instructions(IReadOnlyList<ChatTool> tools, ToolChoice choice, bool parallel, bool listTools = true)
    {
        var offered = Offered(tools, choice);
        if (offered.Count == 0) return "";
        var sb = new StringBuilder();
        if (listTools) sb.Append("You can call these functions:\n");
        foreach (var t in listTools ? offered : [])
        {
            using var buffer = new MemoryStream();
            // Text as written (no \u escapes of accents or '<'): this is prompt text, not JSON for a web page.
            using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            {
                w.WriteStartObject();
                w.WriteString("name", t.Name);
                if (!string.IsNullOrEmpty(t.Description)) w.WriteString("description", t.Description);
                w.WritePropertyName("parameters");
                t.Parameters.WriteTo(w);
                w.WriteEndObject();
            }
            sb.Append(Encoding.UTF8.GetString(buffer.ToArray())).Append('\n');
        }
        sb.Append("To call a function, answer with ").Append(CallTag)
          .Append(" followed by {\"name\": <function name>, \"arguments\": <arguments object>}");
        sb.Append(parallel ? "; for several calls, one per line." : ".");
        sb.Append(choice.Mode switch
        {
            ToolChoiceMode.Required => " You must call a function.",
            ToolChoiceMode.Function => $" You must call {choice.FunctionName}.",
            _ => " Answer in text when no function is needed.",
        });
        return sb.ToString();
    }

    /// <summary>An assistant turn's calls as the model is to write them (after any text of the turn).</summary>
    public static string RenderCalls(string content, IReadOnlyList<ChatToolCall> calls)
    {
        var sb = new StringBuilder(content);
        foreach (var c in calls)
        {
            if (sb.Length > 0) sb.Append('\n');
            sb.Append(CallTag).Append("{\"name\": ").Append(JsonString(c.Name))
              .Append(", \"arguments\": ").Append(string.IsNullOrWhiteSpace(c.Arguments) ? "{}" : c.Arguments).Append('}');
        }
        return sb.ToString();
    }

    /// <summary>
    /// The regex (full match) a reply must be, or null when it is free (<see cref="ToolChoiceMode.None"/>, or no tools).
    /// A call is <c>&lt;tool_call&gt;</c> and a JSON object valid for one offered function; with
    /// <paramref name="parallel"/> several calls may follow, one per line.
    /// </summary>
    /// <exception cref="HarpiaException">a parameters schema the grammar compiler cannot express (or over <paramref name="limits"/>).</exception>
    public static string? GrammarPattern(IReadOnlyList<ChatTool> tools, ToolChoice choice, bool parallel, GrammarLimits? limits)
    {
        var offered = Offered(tools, choice);
        if (offered.Count == 0) return null;
        var alternatives = new List<string>(offered.Count);
        foreach (var t in offered)
        {
            // {"name": "<const>", "arguments": <parameters>}, in that order, both required.
            string schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":" + JsonString(t.Name)
                + "},\"arguments\":" + t.Parameters.GetRawText() + "},\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false}";
            using var doc = JsonDocument.Parse(schema);
            try { alternatives.Add(JsonSchemaRegex.FromSchema(doc.RootElement, limits)); }
            catch (HarpiaException ex) { throw new HarpiaException($"the parameters of function '{t.Name}' cannot be used: {ex.Message}", ex); }
        }
        string call = EscapeLiteral(CallTag) + "(?:" + string.Join("|", alternatives) + ")";
        string calls = parallel ? call + "(?:\n" + call + ")*" : call;
        // Leading spaces or newlines: Falcon's "Falcon:" prompt is usually answered with a space first.
        return choice.Mode == ToolChoiceMode.Auto
            ? "[ \n]*(?:" + calls + @"|[^<\s][\s\S]*)?"
            : "[ \n]*" + calls;
    }

    static string JsonString(string s) => "\"" + JsonEncodedText.Encode(s, System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping) + "\"";

    static string EscapeLiteral(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s) { if ("\\^$.|?*+()[]{}".Contains(c)) sb.Append('\\'); sb.Append(c); }
        return sb.ToString();
    }

    /// <summary>
    /// Splits a reply into its text and its calls. A reply that opens with <see cref="CallTag"/> (after whitespace)
    /// is calls: each complete one becomes a <see cref="ChatToolCall"/> with an id from <paramref name="newId"/>; a
    /// call cut short (the length limit) or naming no offered tool is dropped. Any other reply, or one without a
    /// single complete call, is text.
    /// </summary>
    public static (string Content, List<ChatToolCall> Calls) Parse(string reply, IReadOnlyList<ChatTool> offered, Func<string> newId)
    {
        var calls = new List<ChatToolCall>();
        string trimmed = reply.TrimStart(' ', '\n', '\r', '\t');
        if (offered.Count == 0 || !trimmed.StartsWith(CallTag, StringComparison.Ordinal)) return (reply, calls);
        foreach (var part in trimmed.Split(CallTag, StringSplitOptions.RemoveEmptyEntries))
        {
            try
            {
                using var doc = JsonDocument.Parse(part.Trim());
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
                    || !root.TryGetProperty("arguments", out var args) || args.ValueKind != JsonValueKind.Object) continue;
                string fn = name.GetString()!;
                if (!offered.Any(t => t.Name == fn)) continue;
                calls.Add(new ChatToolCall(newId(), fn, args.GetRawText()));
            }
            catch (JsonException) { }   // cut short by max_tokens
        }
        // Not one complete call (cut short by the length limit): the text is all there is.
        return calls.Count == 0 ? (reply, calls) : ("", calls);
    }

    /// <summary>A JSON value as the chat template interpreter's values (dictionaries, lists, long, double, string, bool, null).</summary>
    public static object? ToTemplateValue(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().ToDictionary(p => p.Name, p => ToTemplateValue(p.Value), StringComparer.Ordinal),
        JsonValueKind.Array => e.EnumerateArray().Select(ToTemplateValue).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };
}

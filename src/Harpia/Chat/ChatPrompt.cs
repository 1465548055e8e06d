using System.Text;

namespace Harpia.Chat;

/// <summary>
/// One turn of a conversation: role ("system", "user", "assistant", "tool") and its text; an assistant turn may carry
/// the tool calls it made, a tool turn the id (and function name) of the call it answers.
/// </summary>
public sealed record ChatTurn(string Role, string Content, IReadOnlyList<ChatToolCall>? ToolCalls = null, string? ToolCallId = null,
    string? Name = null);

/// <summary>The tools offered with a conversation (see <see cref="ToolCalling"/>).</summary>
public sealed record ChatToolOptions(IReadOnlyList<ChatTool> Tools, ToolChoice Choice, bool ParallelToolCalls = true);

/// <summary>
/// Turns a conversation into the prompt text the model was trained on: the model's Hugging Face
/// <c>chat_template</c> when it has one, else Falcon's chat format, in which Falcon-180B-chat was tuned:
/// <code>
/// System: {system}
/// User: {user}
/// Falcon: {assistant}
/// User: {user}
/// Falcon:
/// </code>
/// </summary>
public sealed class ChatPromptFormatter
{
    /// <summary>Falcon's fallback format stops when the model starts the next user turn on its own.</summary>
    public static readonly IReadOnlyList<string> FalconStopSequences = ["\nUser:"];

    readonly JinjaTemplate? _template;
    readonly string? _bosToken, _eosToken;
    /// <summary>The template reads a <c>tools</c> variable (Hugging Face's convention for tool-aware templates).</summary>
    readonly bool _templateTakesTools;

    public ChatPromptFormatter(string? chatTemplate, string? bosToken = null, string? eosToken = null)
    {
        _template = string.IsNullOrWhiteSpace(chatTemplate) ? null : JinjaTemplate.Parse(chatTemplate);
        _bosToken = bosToken;
        _eosToken = eosToken;
        _templateTakesTools = _template is not null && chatTemplate!.Contains("tools", StringComparison.Ordinal);
    }

    /// <summary>True when the model's own template is used, false for Falcon's built-in format.</summary>
    public bool UsesModelTemplate => _template is not null;

    /// <summary>Stop sequences the format needs so the model does not write the user's next turn.</summary>
    public IReadOnlyList<string> ImplicitStopSequences => _template is null ? FalconStopSequences : [];

    /// <summary>Renders the prompt; <paramref name="addGenerationPrompt"/> opens the assistant's turn.</summary>
    public string Format(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true) => Format(messages, addGenerationPrompt, null);

    /// <summary>
    /// Renders the prompt with <paramref name="tools"/> offered. A template that takes <c>tools</c> gets them (and the
    /// turns' tool calls and call ids) as Hugging Face's tool-aware templates expect, plus a line stating the call
    /// format; otherwise the tools are described in the system turn, calls are written in the assistant turns as the
    /// model is to write them, and tool results are "Tool:" turns (Falcon's format) or user turns (templates).
    /// </summary>
    public string Format(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt, ChatToolOptions? tools)
    {
        if (messages.Count == 0) throw new HarpiaException("chat: `messages` must contain at least one message");
        bool native = _template is not null && _templateTakesTools;
        string instructions = tools is null ? "" : ToolCalling.Instructions(tools.Tools, tools.Choice, tools.ParallelToolCalls, listTools: !native);
        if (!native) messages = Flatten(messages, instructions, _template is null);
        else if (instructions.Length > 0) messages = WithSystemText(messages, instructions);
        if (_template is null) return FormatFalcon(messages, addGenerationPrompt);
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = messages.Select(TemplateMessage).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = _bosToken ?? "",
            ["eos_token"] = _eosToken ?? "",
        };
        if (native && tools is not null && ToolCalling.Offered(tools.Tools, tools.Choice) is { Count: > 0 } offered)
        {
            variables["tools"] = offered.Select(t => (object?)new Dictionary<string, object?>
            {
                ["type"] = "function",
                ["function"] = new Dictionary<string, object?>
                {
                    ["name"] = t.Name, ["description"] = t.Description ?? "", ["parameters"] = ToolCalling.ToTemplateValue(t.Parameters),
                },
            }).ToList();
        }
        return _template.Render(variables);
    }

    static Dictionary<string, object?> TemplateMessage(ChatTurn m)
    {
        var d = new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content };
        if (m.ToolCalls is { Count: > 0 } calls)
            d["tool_calls"] = calls.Select(c => (object?)new Dictionary<string, object?>
            {
                ["id"] = c.Id, ["type"] = "function",
                ["function"] = new Dictionary<string, object?> { ["name"] = c.Name, ["arguments"] = ArgumentsValue(c.Arguments) },
            }).ToList();
        if (m.ToolCallId is not null) d["tool_call_id"] = m.ToolCallId;
        if (m.Name is not null) d["name"] = m.Name;
        return d;
    }

    /// <summary>Templates format arguments with <c>tojson</c>, expecting an object; text that is not JSON stays text.</summary>
    static object? ArgumentsValue(string arguments)
    {
        try { using var doc = System.Text.Json.JsonDocument.Parse(arguments); return ToolCalling.ToTemplateValue(doc.RootElement); }
        catch (System.Text.Json.JsonException) { return arguments; }
    }

    static List<ChatTurn> WithSystemText(IReadOnlyList<ChatTurn> messages, string text)
    {
        var list = messages.ToList();
        if (list[0].Role == "system") list[0] = list[0] with { Content = list[0].Content.Length == 0 ? text : list[0].Content + "\n\n" + text };
        else list.Insert(0, new ChatTurn("system", text));
        return list;
    }

    /// <summary>Tool calls and results as plain turns, for formats that know nothing of tools.</summary>
    static IReadOnlyList<ChatTurn> Flatten(IReadOnlyList<ChatTurn> messages, string instructions, bool falcon)
    {
        if (instructions.Length == 0 && messages.All(m => m.ToolCalls is not { Count: > 0 } && m.Role != "tool")) return messages;
        // A result names the function it answers; OpenAI's tool turns carry only the call's id.
        var names = messages.SelectMany(m => m.ToolCalls ?? []).GroupBy(c => c.Id).ToDictionary(g => g.Key, g => g.First().Name);
        var flat = new List<ChatTurn>(messages.Count + 1);
        foreach (var m in messages)
        {
            if (m.ToolCalls is { Count: > 0 } calls) flat.Add(new ChatTurn(m.Role, ToolCalling.RenderCalls(m.Content, calls)));
            else if (m.Role == "tool")
            {
                string? name = m.Name ?? (m.ToolCallId is { } id && names.TryGetValue(id, out var n) ? n : null);
                string text = name is null ? m.Content : $"{name} returned: {m.Content}";
                flat.Add(new ChatTurn(falcon ? "tool" : "user", text));
            }
            else flat.Add(new ChatTurn(m.Role, m.Content));
        }
        return instructions.Length > 0 ? WithSystemText(flat, instructions) : flat;
    }

    /// <summary>Falcon-180B-chat's format: one "Role: text" line per turn, "Falcon:" opens the reply.</summary>
    public static string FormatFalcon(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt)
    {
        var sb = new StringBuilder();
        foreach (var m in messages)
        {
            if (sb.Length > 0) sb.Append('\n');
            sb.Append(m.Role switch
            {
                "system" => "System: ",
                "user" => "User: ",
                "assistant" => "Falcon: ",
                "tool" => "Tool: ",
                _ => throw new HarpiaException($"chat: unknown role '{m.Role}' (expected system, user, assistant or tool)"),
            });
            sb.Append(m.Content.Trim());
        }
        if (addGenerationPrompt) sb.Append(sb.Length > 0 ? "\nFalcon:" : "Falcon:");
        return sb.ToString();
    }
}

using System.Text;

namespace Harpia.Chat;

/// <summary>One turn of a conversation: role ("system", "user", "assistant", …) and its text.</summary>
public sealed record ChatTurn(string Role, string Content);

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

    public ChatPromptFormatter(string? chatTemplate, string? bosToken = null, string? eosToken = null)
    {
        _template = string.IsNullOrWhiteSpace(chatTemplate) ? null : JinjaTemplate.Parse(chatTemplate);
        _bosToken = bosToken;
        _eosToken = eosToken;
    }

    /// <summary>True when the model's own template is used, false for Falcon's built-in format.</summary>
    public bool UsesModelTemplate => _template is not null;

    /// <summary>Stop sequences the format needs so the model does not write the user's next turn.</summary>
    public IReadOnlyList<string> ImplicitStopSequences => _template is null ? FalconStopSequences : [];

    /// <summary>Renders the prompt; <paramref name="addGenerationPrompt"/> opens the assistant's turn.</summary>
    public string Format(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true)
    {
        if (messages.Count == 0) throw new HarpiaException("chat: `messages` must contain at least one message");
        if (_template is null) return FormatFalcon(messages, addGenerationPrompt);
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = messages.Select(m => new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = _bosToken ?? "",
            ["eos_token"] = _eosToken ?? "",
        };
        return _template.Render(variables);
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
                _ => throw new HarpiaException($"chat: unknown role '{m.Role}' (expected system, user or assistant)"),
            });
            sb.Append(m.Content.Trim());
        }
        if (addGenerationPrompt) sb.Append(sb.Length > 0 ? "\nFalcon:" : "Falcon:");
        return sb.ToString();
    }
}

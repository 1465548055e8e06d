using System.Runtime.CompilerServices;
using System.Text.Json;
using Harpia.Runtime;
using Microsoft.Extensions.AI;

namespace Harpia.Chat;

/// <summary>
/// <see cref="IChatClient"/> over an in-process <see cref="ITextGenerator"/>: Semantic Kernel and any
/// Microsoft.Extensions.AI code can run the model without HTTP (the C# counterpart of LangChain's
/// <c>HuggingFacePipeline</c>). Prompts go through the model's chat template, or Falcon's chat format.
/// </summary>
public sealed class HarpiaChatClient : IChatClient
{
    readonly ITextGenerator _generator;
    readonly ChatPromptFormatter _formatter;
    readonly ChatClientMetadata _metadata;

    /// <summary>Reply length when <see cref="ChatOptions.MaxOutputTokens"/> is not set (capped by the context left).</summary>
    public int DefaultMaxOutputTokens { get; init; } = 512;

    public HarpiaChatClient(ITextGenerator generator)
    {
        _generator = generator ?? throw new ArgumentNullException(nameof(generator));
        var model = generator.Model;
        _formatter = new ChatPromptFormatter(model.ChatTemplate, model.BosToken, model.EosToken);
        _metadata = new ChatClientMetadata("harpia", null, model.ModelId);
    }

    public ChatPromptFormatter Formatter => _formatter;

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var (request, promptTokens) = BuildRequest(messages, options);
        var offered = OfferedTools(options);
        var text = new System.Text.StringBuilder();
        FinishReason? finish = null;
        int generated = 0;
        await foreach (var ev in _generator.GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            text.Append(ev.TextDelta);
            generated = Math.Max(generated, ev.GeneratedTokens);
            if (ev.Finish is { } f) finish = f;
        }
        if (finish is null) throw new GenerationFailedException("the generation ended before it finished");
        var (message, called) = ReplyMessage(text.ToString(), offered);
        return new ChatResponse(message)
        {
            FinishReason = called && finish != FinishReason.Length ? ChatFinishReason.ToolCalls : MapFinish(finish.Value),
            ModelId = _generator.Model.ModelId,
            ResponseId = NewId(),
            CreatedAt = DateTimeOffset.UtcNow,
            Usage = new UsageDetails { InputTokenCount = promptTokens, OutputTokenCount = generated, TotalTokenCount = promptTokens + generated },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var offered = OfferedTools(options);
        if (offered.Count > 0)
        {
            // A reply that may be calls is given whole: calls are only useful once they parse.
            var response = await GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
            foreach (var update in response.ToChatResponseUpdates()) yield return update;
            yield break;
        }
        var (request, promptTokens) = BuildRequest(messages, options);
        string responseId = NewId(), messageId = NewId();
        var created = DateTimeOffset.UtcNow;
        bool finished = false;
        await foreach (var ev in _generator.GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            var update = new ChatResponseUpdate(ChatRole.Assistant, ev.TextDelta)
            {
                ResponseId = responseId, MessageId = messageId, ModelId = _generator.Model.ModelId, CreatedAt = created,
            };
            if (ev.Finish is { } f)
            {
                finished = true;
                update.FinishReason = MapFinish(f);
                update.Contents.Add(new UsageContent(new UsageDetails
                {
                    InputTokenCount = promptTokens, OutputTokenCount = ev.GeneratedTokens, TotalTokenCount = promptTokens + ev.GeneratedTokens,
                }));
            }
            if (ev.TextDelta.Length > 0 || ev.Finish is not null) yield return update;
        }
        if (!finished) throw new GenerationFailedException("the generation ended before it finished");
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType == typeof(ITextGenerator)) return _generator;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    public void Dispose() { }

    /// <summary>Maps M.E.AI messages and options onto a runtime request; the second value is the prompt length.</summary>
    public (GenerationRequest Request, int PromptTokens) BuildRequest(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var tools = ToolOptions(options);
        var turns = new List<ChatTurn>();
        foreach (var m in messages)
        {
            if (m.Contents.Any(c => c is not TextContent and not TextReasoningContent and not FunctionCallContent and not FunctionResultContent))
                throw new NotSupportedException($"HarpiaChatClient: only text, function calls and function results are supported (message from '{m.Role.Value}')");
            var calls = m.Contents.OfType<FunctionCallContent>()
                .Select(c => new ChatToolCall(c.CallId, c.Name, JsonSerializer.Serialize(c.Arguments ?? new Dictionary<string, object?>(), AIJsonUtilities.DefaultOptions)))
                .ToList();
            var results = m.Contents.OfType<FunctionResultContent>().ToList();
            if (results.Count > 0)
            {
                // One tool turn per result, as OpenAI's history has them.
                foreach (var r in results) turns.Add(new ChatTurn("tool", ResultText(r.Result), null, r.CallId));
                continue;
            }
            turns.Add(new ChatTurn(m.Role.Value.ToLowerInvariant(), m.Text, calls.Count > 0 ? calls : null));
        }
        string prompt = _formatter.Format(turns, addGenerationPrompt: true, tools);
        var ids = _generator.Tokenizer.Encode(prompt, addSpecialTokens: false);
        int context = _generator.Model.MaxPositionEmbeddings;
        if (ids.Count >= context)
            throw new GenerationValidationException($"the conversation is {ids.Count} tokens long, which fills the model's {context}-token context");
        int maxNew = options?.MaxOutputTokens ?? DefaultMaxOutputTokens;
        if (maxNew <= 0) throw new GenerationValidationException("MaxOutputTokens must be strictly positive");
        maxNew = Math.Min(maxNew, context - ids.Count);

        float? temperature = options?.Temperature;
        bool sample = temperature is > 0 || options?.TopP is not null || options?.TopK is not null;
        if (temperature is 0) sample = false;
        if (temperature is < 0) throw new GenerationValidationException("Temperature must not be negative");
        if (options?.TopP is <= 0 or > 1) throw new GenerationValidationException("TopP must be > 0 and <= 1");
        if (options?.TopK is <= 0) throw new GenerationValidationException("TopK must be strictly positive");
        var sampling = new SamplingParameters
        {
            DoSample = sample,
            Temperature = temperature is > 0 ? temperature.Value : 1f,
            TopP = options?.TopP ?? 1f,
            TopK = options?.TopK ?? 0,
            FrequencyPenalty = options?.FrequencyPenalty ?? 0f,
            PresencePenalty = options?.PresencePenalty ?? 0f,
            Seed = options?.Seed is { } seed ? unchecked((ulong)seed) : null,
        };
        var stops = new List<string>(_formatter.ImplicitStopSequences);
        if (options?.StopSequences is { } userStops) stops.AddRange(userStops.Where(s => !string.IsNullOrEmpty(s)));
        // Structured output: JSON for the given schema (or any object) through the runtime's grammar constraint.
        Harpia.Runtime.Grammar.ByteDfa? grammar = null;
        if (tools is not null && ToolCalling.GrammarPattern(tools.Tools, tools.Choice, tools.ParallelToolCalls, null) is { } pattern)
        {
            if (options?.ResponseFormat is ChatResponseFormatJson) throw new GenerationValidationException("ResponseFormat JSON cannot be combined with tools");
            grammar = Harpia.Runtime.Grammar.Grammars.SchemaPattern(pattern);
        }
        else if (options?.ResponseFormat is ChatResponseFormatJson json)
        {
            try { grammar = json.Schema is { } schema ? Harpia.Runtime.Grammar.Grammars.JsonSchema(schema) : Harpia.Runtime.Grammar.Grammars.AnyJsonObject(); }
            catch (HarpiaException ex) { throw new GenerationValidationException($"ResponseFormat: {ex.Message}"); }
        }
        return (new GenerationRequest { PromptIds = ids, Sampling = sampling, MaxNewTokens = maxNew, StopSequences = stops, Grammar = grammar }, ids.Count);
    }

    /// <summary>The tools of <paramref name="options"/> (function declarations) and their mode, checked; null when none.</summary>
    static ChatToolOptions? ToolOptions(ChatOptions? options)
    {
        if (options?.Tools is not { Count: > 0 } aiTools) return null;
        var tools = new List<ChatTool>();
        foreach (var t in aiTools)
        {
            if (t is not AIFunctionDeclaration f) throw new NotSupportedException($"HarpiaChatClient: only function tools are supported ('{t.Name}' is a {t.GetType().Name})");
            tools.Add(new ChatTool(f.Name, f.Description, f.JsonSchema.ValueKind == JsonValueKind.Object ? f.JsonSchema : ToolCalling.NoParameters));
        }
        try { ToolCalling.Validate(tools); }
        catch (HarpiaException ex) { throw new GenerationValidationException(ex.Message); }
        var choice = options.ToolMode switch
        {
            NoneChatToolMode => ToolChoice.None,
            RequiredChatToolMode { RequiredFunctionName: { } name } => new ToolChoice(ToolChoiceMode.Function, name),
            RequiredChatToolMode => ToolChoice.Required,
            _ => ToolChoice.Auto,
        };
        if (choice.Mode == ToolChoiceMode.Function && !tools.Any(t => t.Name == choice.FunctionName))
            throw new GenerationValidationException($"ToolMode requires the function '{choice.FunctionName}', which is not among the tools");
        return new ChatToolOptions(tools, choice, options.AllowMultipleToolCalls ?? true);
    }

    static IReadOnlyList<ChatTool> OfferedTools(ChatOptions? options) =>
        ToolOptions(options) is { } t ? ToolCalling.Offered(t.Tools, t.Choice) : [];

    static string ResultText(object? result) => result switch
    {
        null => "",
        string s => s,
        JsonElement e when e.ValueKind == JsonValueKind.String => e.GetString()!,
        _ => JsonSerializer.Serialize(result, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(object))),
    };

    /// <summary>A reply as an M.E.AI message: its text, or the calls it makes (arguments as JSON values).</summary>
    static (ChatMessage Message, bool Called) ReplyMessage(string text, IReadOnlyList<ChatTool> offered)
    {
        var (content, calls) = ToolCalling.Parse(text, offered, () => "call_" + Guid.NewGuid().ToString("N")[..24]);
        if (calls.Count == 0) return (new ChatMessage(ChatRole.Assistant, content), false);
        var contents = new List<AIContent>();
        foreach (var c in calls)
        {
            using var doc = JsonDocument.Parse(c.Arguments);
            var arguments = doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone());
            contents.Add(new FunctionCallContent(c.Id, c.Name, arguments));
        }
        return (new ChatMessage(ChatRole.Assistant, contents), true);
    }

    static ChatFinishReason MapFinish(FinishReason reason) => reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    static string NewId() => "chatcmpl-" + Guid.NewGuid().ToString("N");
}

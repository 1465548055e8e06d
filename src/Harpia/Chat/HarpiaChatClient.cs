using System.Runtime.CompilerServices;
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
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()))
        {
            FinishReason = MapFinish(finish.Value),
            ModelId = _generator.Model.ModelId,
            ResponseId = NewId(),
            CreatedAt = DateTimeOffset.UtcNow,
            Usage = new UsageDetails { InputTokenCount = promptTokens, OutputTokenCount = generated, TotalTokenCount = promptTokens + generated },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
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
        if (options?.Tools is { Count: > 0 } && options.ToolMode is not NoneChatToolMode)
            throw new NotSupportedException("HarpiaChatClient: tool calling is not supported");
        var turns = new List<ChatTurn>();
        foreach (var m in messages)
        {
            if (m.Contents.Any(c => c is not TextContent and not TextReasoningContent))
                throw new NotSupportedException($"HarpiaChatClient: only text content is supported (message from '{m.Role.Value}')");
            turns.Add(new ChatTurn(m.Role.Value.ToLowerInvariant(), m.Text));
        }
        string prompt = _formatter.Format(turns, addGenerationPrompt: true);
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
        if (options?.ResponseFormat is ChatResponseFormatJson json)
        {
            try { grammar = json.Schema is { } schema ? Harpia.Runtime.Grammar.Grammars.JsonSchema(schema) : Harpia.Runtime.Grammar.Grammars.AnyJsonObject(); }
            catch (HarpiaException ex) { throw new GenerationValidationException($"ResponseFormat: {ex.Message}"); }
        }
        return (new GenerationRequest { PromptIds = ids, Sampling = sampling, MaxNewTokens = maxNew, StopSequences = stops, Grammar = grammar }, ids.Count);
    }

    static ChatFinishReason MapFinish(FinishReason reason) => reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    static string NewId() => "chatcmpl-" + Guid.NewGuid().ToString("N");
}

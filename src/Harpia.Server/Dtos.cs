using System.Text.Json;
using System.Text.Json.Serialization;

namespace Harpia.Server;

// Wire types of the TGI API (summarised in shared/specs/tgi-api.md) and the OpenAI API, with snake_case names.
// Request types are permissive (nullable, JsonElement where the wire allows several shapes); Validation turns
// them into a GenerationRequest or a 422 with TGI's message.

// ------------------------------------------------------------------ TGI requests

public sealed class GenerateParametersDto
{
    public int? BestOf { get; set; }
    public bool? DecoderInputDetails { get; set; }
    public bool? Details { get; set; }
    public bool? DoSample { get; set; }
    public float? FrequencyPenalty { get; set; }
    public JsonElement? Grammar { get; set; }
    public int? MaxNewTokens { get; set; }
    public float? RepetitionPenalty { get; set; }
    public bool? ReturnFullText { get; set; }
    public ulong? Seed { get; set; }
    public List<string>? Stop { get; set; }
    public float? Temperature { get; set; }
    public int? TopK { get; set; }
    public int? TopNTokens { get; set; }
    public float? TopP { get; set; }
    public int? Truncate { get; set; }
    public float? TypicalP { get; set; }
    public bool? Watermark { get; set; }
    public string? AdapterId { get; set; }
}

/// <summary><c>GenerateRequest</c> and <c>CompatGenerateRequest</c> (the latter adds <c>stream</c>).</summary>
public sealed class GenerateRequestDto
{
    public string? Inputs { get; set; }
    public GenerateParametersDto? Parameters { get; set; }
    public bool? Stream { get; set; }
}

// ------------------------------------------------------------------ TGI responses

public sealed record ErrorResponse(string Error, string ErrorType);

public sealed record PrefillTokenDto(int Id, string Text, float? Logprob);

public sealed record TokenDto(int Id, string Text, float? Logprob, bool Special);

public sealed record BestOfSequenceDto(string GeneratedText, string FinishReason, int GeneratedTokens, ulong? Seed,
    List<PrefillTokenDto> Prefill, List<TokenDto> Tokens, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<List<TokenDto>>? TopTokens);

public sealed record DetailsDto(string FinishReason, int GeneratedTokens, ulong? Seed, List<PrefillTokenDto> Prefill, List<TokenDto> Tokens,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<List<TokenDto>>? TopTokens,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<BestOfSequenceDto>? BestOfSequences);

public sealed record GenerateResponseDto(string GeneratedText,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] DetailsDto? Details);

public sealed record StreamDetailsDto(string FinishReason, int GeneratedTokens, int InputLength, ulong? Seed);

public sealed record StreamResponseDto(int Index, TokenDto Token,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<TokenDto>? TopTokens,
    string? GeneratedText, StreamDetailsDto? Details);

public sealed record SimpleTokenDto(int Id, string Text, int Start, int Stop);

public sealed record InfoDto(string ModelId, string? ModelSha, string? ModelDtype, string? ModelDeviceType, string? ModelPipelineTag,
    int MaxConcurrentRequests, int MaxBestOf, int MaxStopSequences, int MaxInputTokens, int MaxTotalTokens,
    int ValidationWorkers, int MaxClientBatchSize, string Router, string Version, string? Sha, string? DockerLabel,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] System.Text.Json.JsonElement? DeviceMap = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Device = null);

// ------------------------------------------------------------------ OpenAI requests

public sealed class StreamOptionsDto
{
    public bool? IncludeUsage { get; set; }
}

public sealed class ChatMessageDto
{
    public string? Role { get; set; }
    /// <summary>A string, or an array of parts <c>{type:"text", text}</c>.</summary>
    public JsonElement? Content { get; set; }
    public string? Name { get; set; }
    /// <summary>An assistant turn's calls: <c>[{id, type: "function", function: {name, arguments}}]</c>.</summary>
    public JsonElement? ToolCalls { get; set; }
    /// <summary>A tool turn: the id of the call it answers.</summary>
    public string? ToolCallId { get; set; }
}

public sealed class ChatRequestDto
{
    public string? Model { get; set; }
    public List<ChatMessageDto>? Messages { get; set; }
    public int? MaxTokens { get; set; }
    public int? MaxCompletionTokens { get; set; }
    public float? Temperature { get; set; }
    public float? TopP { get; set; }
    public long? Seed { get; set; }
    /// <summary>A string or an array of strings.</summary>
    public JsonElement? Stop { get; set; }
    public bool? Stream { get; set; }
    public StreamOptionsDto? StreamOptions { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
    public float? FrequencyPenalty { get; set; }
    public float? PresencePenalty { get; set; }
    public int? N { get; set; }
    public JsonElement? Tools { get; set; }
    public JsonElement? ToolChoice { get; set; }
    public bool? ParallelToolCalls { get; set; }
    public JsonElement? ResponseFormat { get; set; }
    public JsonElement? LogitBias { get; set; }
    public string? User { get; set; }
}

public sealed class CompletionRequestDto
{
    public string? Model { get; set; }
    /// <summary>A string or an array of strings.</summary>
    public JsonElement? Prompt { get; set; }
    public int? MaxTokens { get; set; }
    public float? Temperature { get; set; }
    public float? TopP { get; set; }
    public long? Seed { get; set; }
    public JsonElement? Stop { get; set; }
    public bool? Stream { get; set; }
    public StreamOptionsDto? StreamOptions { get; set; }
    public int? Logprobs { get; set; }
    public bool? Echo { get; set; }
    public float? FrequencyPenalty { get; set; }
    public float? PresencePenalty { get; set; }
    public int? N { get; set; }
    public int? BestOf { get; set; }
    public string? Suffix { get; set; }
    public JsonElement? LogitBias { get; set; }
    public string? User { get; set; }
}

/// <summary>OpenAI's embeddings request; <c>pooling</c> ("mean" or "last") is Harpia's own.</summary>
public sealed class EmbeddingRequestDto
{
    public string? Model { get; set; }
    /// <summary>A string, an array of strings, an array of token ids, or an array of token-id arrays.</summary>
    public JsonElement? Input { get; set; }
    public string? EncodingFormat { get; set; }
    public int? Dimensions { get; set; }
    public string? User { get; set; }
    public string? Pooling { get; set; }
}

/// <summary>TGI's (text-embeddings-inference) <c>/embed</c> request.</summary>
public sealed class EmbedRequestDto
{
    /// <summary>A string or an array of strings (token ids accepted too).</summary>
    public JsonElement? Inputs { get; set; }
    public bool? Normalize { get; set; }
    public bool? Truncate { get; set; }
    public string? Pooling { get; set; }
}

// ------------------------------------------------------------------ OpenAI responses

public sealed record UsageDto(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>An assistant reply: its text, or (content null) the calls it makes.</summary>
public sealed record ChatResponseMessageDto(string Role, string? Content,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<ToolCallDto>? ToolCalls = null);

public sealed record ToolCallFunctionDto(string Name, string Arguments);

public sealed record ToolCallDto(string Id, string Type, ToolCallFunctionDto Function);

/// <summary>A streamed piece of a call, as OpenAI streams them: id, type and name first, then the arguments' text.</summary>
public sealed record ToolCallDeltaFunctionDto(
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Name,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Arguments);

public sealed record ToolCallDeltaDto(int Index,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Id,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Type,
    ToolCallDeltaFunctionDto Function);

public sealed record TopLogprobDto(string Token, float Logprob, List<int> Bytes);

public sealed record ChatTokenLogprobDto(string Token, float Logprob, List<int> Bytes, List<TopLogprobDto> TopLogprobs);

public sealed record ChatLogprobsDto(List<ChatTokenLogprobDto> Content);

public sealed record ChatChoiceDto(int Index, ChatResponseMessageDto Message, ChatLogprobsDto? Logprobs, string FinishReason);

public sealed record ChatCompletionDto(string Id, string Object, long Created, string Model, string SystemFingerprint,
    List<ChatChoiceDto> Choices, UsageDto Usage);

public sealed record ChatDeltaDto(
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Role,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Content,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<ToolCallDeltaDto>? ToolCalls = null);

public sealed record ChatChunkChoiceDto(int Index, ChatDeltaDto Delta, ChatLogprobsDto? Logprobs, string? FinishReason);

public sealed record ChatCompletionChunkDto(string Id, string Object, long Created, string Model, string SystemFingerprint,
    List<ChatChunkChoiceDto> Choices, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] UsageDto? Usage);

/// <summary>
/// Legacy completions' logprobs. With <c>echo</c> the prompt's tokens come first, the first with a null logprob and
/// null top_logprobs (nothing precedes it), as OpenAI and vLLM answer.
/// </summary>
public sealed record CompletionLogprobsDto(List<string> Tokens, List<float?> TokenLogprobs, List<Dictionary<string, float>?> TopLogprobs, List<int> TextOffset);

public sealed record CompletionChoiceDto(int Index, string Text, CompletionLogprobsDto? Logprobs, string? FinishReason);

public sealed record CompletionDto(string Id, string Object, long Created, string Model, string SystemFingerprint,
    List<CompletionChoiceDto> Choices, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] UsageDto? Usage);

public sealed record ModelDto(string Id, string Object, long Created, string OwnedBy);

public sealed record ModelListDto(string Object, List<ModelDto> Data);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, AllowDuplicateProperties = false)]
[JsonSerializable(typeof(GenerateRequestDto))]
[JsonSerializable(typeof(ChatRequestDto))]
[JsonSerializable(typeof(CompletionRequestDto))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(GenerateResponseDto))]
[JsonSerializable(typeof(List<GenerateResponseDto>))]
[JsonSerializable(typeof(StreamResponseDto))]
[JsonSerializable(typeof(List<SimpleTokenDto>))]
[JsonSerializable(typeof(InfoDto))]
[JsonSerializable(typeof(ChatCompletionDto))]
[JsonSerializable(typeof(ChatCompletionChunkDto))]
[JsonSerializable(typeof(CompletionDto))]
[JsonSerializable(typeof(ModelListDto))]
[JsonSerializable(typeof(EmbeddingRequestDto))]
[JsonSerializable(typeof(EmbedRequestDto))]
[JsonSerializable(typeof(List<float[]>), TypeInfoPropertyName = "ListSingleArray")]
public sealed partial class ServerJsonContext : JsonSerializerContext;

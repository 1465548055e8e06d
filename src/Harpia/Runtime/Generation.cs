using Harpia.Tokenization;

namespace Harpia.Runtime;

// The contract between the runtime (which owns the model, the KV cache and the scheduler) and its front ends
// (HTTP server, CLI, IChatClient). Front ends build a GenerationRequest, the runtime streams GenerationEvents.

/// <summary>Sampling as Hugging Face <c>generate</c> / TGI define it. Defaults mean "off".</summary>
public sealed record SamplingParameters
{
    /// <summary>False = greedy (argmax), whatever the other knobs say.</summary>
    public bool DoSample { get; init; }
    public float Temperature { get; init; } = 1f;
    /// <summary>0 = no top-k filtering.</summary>
    public int TopK { get; init; }
    public float TopP { get; init; } = 1f;
    public float TypicalP { get; init; } = 1f;
    /// <summary>CTRL-style: 1 = none; &gt;1 divides positive logits of seen tokens, multiplies negative ones.</summary>
    public float RepetitionPenalty { get; init; } = 1f;
    public float FrequencyPenalty { get; init; }
    public float PresencePenalty { get; init; }
    /// <summary>Null: the runtime picks a seed and reports it.</summary>
    public ulong? Seed { get; init; }
    /// <summary>
    /// OpenAI <c>logit_bias</c>: added to a token's logit before everything else, greedy included (−100 bans a
    /// token in practice, +100 all but forces it). Ids must be inside the vocabulary.
    /// </summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }
}

public sealed record GenerationRequest
{
    public required IReadOnlyList<int> PromptIds { get; init; }
    public SamplingParameters Sampling { get; init; } = new();
    public int MaxNewTokens { get; init; } = 100;
    /// <summary>Stop texts, matched on the decoded text across token boundaries.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];
    /// <summary>
    /// Whether the text ends with the stop string that ended it: TGI's <c>generated_text</c> does (its clients, such
    /// as LangChain's, cut it off themselves); OpenAI's and vLLM's leave it out. Text after it is never emitted.
    /// </summary>
    public bool KeepStopSequence { get; init; }
    /// <summary>Alternatives to report per generated token (TGI <c>top_n_tokens</c>, OpenAI <c>top_logprobs</c>).</summary>
    public int TopNTokens { get; init; }
    /// <summary>Also compute log-probabilities of the prompt tokens (TGI <c>decoder_input_details</c>).</summary>
    public bool PromptLogprobs { get; init; }
    /// <summary>Keep generating past EOS (benchmarks).</summary>
    public bool IgnoreEos { get; init; }
    /// <summary>
    /// Constrained decoding (TGI's <c>grammar</c>, OpenAI's <c>response_format</c>): only tokens that keep the text a
    /// prefix of a full match may be chosen, and EOS only once it is one. Compile with <see cref="Grammar.Grammars"/>.
    /// </summary>
    public Grammar.ByteDfa? Grammar { get; init; }
}

public enum FinishReason { Length, EosToken, StopSequence }

/// <summary>A token with its log-probability (natural log) under the sampling distribution's logits.</summary>
public readonly record struct TokenLogprob(int Id, string Text, float Logprob, bool Special);

public sealed record GeneratedToken(int Id, string Text, float Logprob, bool Special, IReadOnlyList<TokenLogprob> TopTokens);

/// <summary>
/// One step of a generation stream. Every event but possibly the last carries a <see cref="Token"/>; the last one
/// carries <see cref="Finish"/>. <see cref="TextDelta"/> is the text safe to show now: it holds back partial
/// UTF-8 sequences and any tail that could still become a stop sequence, so concatenating the deltas gives the
/// final generated text exactly.
/// </summary>
public sealed record GenerationEvent
{
    public GeneratedToken? Token { get; init; }
    public string TextDelta { get; init; } = "";
    public FinishReason? Finish { get; init; }
    /// <summary>Prompt tokens with log-probs, on the first event, when requested (the first has NaN logprob).</summary>
    public IReadOnlyList<TokenLogprob>? Prefill { get; init; }
    public int PromptTokens { get; init; }
    public int GeneratedTokens { get; init; }
    public ulong? Seed { get; init; }
}

/// <summary>
/// What a front end needs to know about the loaded model. <paramref name="Dtype"/>: the weights' dominant type as
/// TGI's /info names it ("torch.bfloat16", …), or the llama.cpp type name of quantized weights ("Q4_K").
/// </summary>
public sealed record ModelDescription(string ModelId, int MaxPositionEmbeddings, int VocabSize, int? EosTokenId,
    string? ChatTemplate, string? BosToken, string? EosToken, string? Dtype = null)
{
    /// <summary>Where the model's parts run (shown by /info), when the runtime built a device map.</summary>
    public Placement.DeviceMap? DeviceMap { get; init; }
    /// <summary>The backends the model runs on ("cpu", "cuda:0 NVIDIA H100 …"), when known.</summary>
    public string? Device { get; init; }
}

/// <summary>
/// Generates text for many concurrent callers. Implementations batch the callers' decode steps together.
/// Cancelling the token stops the generation and frees its memory at once.
/// </summary>
public interface ITextGenerator
{
    ModelDescription Model { get; }
    ITokenizer Tokenizer { get; }
    IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default);
}

using Harpia.Models;

namespace Harpia.Runtime;

/// <summary>
/// The router's validation stage (TGI's <c>validation.rs</c>): checks the generator's options once against the model,
/// and each request before it is queued, with TGI's messages. Nothing here touches the loop's state.
/// </summary>
internal sealed class RequestValidator
{
    private readonly GeneratorOptions _options;
    private readonly int _vocab, _maxInputTokens, _maxTotalTokens;

    /// <param name="options">Options with their defaults resolved (<see cref="GeneratorOptions.ResolveFor"/>).</param>
    public RequestValidator(GeneratorOptions options, ModelShape shape)
    {
        CheckOptions(options, shape);
        _options = options;
        _vocab = shape.VocabSize;
        _maxInputTokens = options.MaxInputTokens!.Value;
        _maxTotalTokens = options.MaxTotalTokens!.Value;
    }

    /// <summary>Refuses options under which the generator could not serve (a clear <see cref="HarpiaException"/>).</summary>
    private static void CheckOptions(GeneratorOptions o, ModelShape shape)
    {
        int maxInput = o.MaxInputTokens!.Value, maxTotal = o.MaxTotalTokens!.Value;
        if (o.MaxConcurrentRequests < 1) throw new HarpiaException($"max concurrent requests must be at least 1, got {o.MaxConcurrentRequests}");
        if (maxInput < 1) throw new HarpiaException($"max input tokens must be at least 1, got {maxInput}");
        if (maxTotal <= maxInput)
            throw new HarpiaException($"max total tokens ({maxTotal}) must be greater than max input tokens ({maxInput})");
        if (maxTotal > shape.MaxPositions)
            throw new HarpiaException($"max total tokens ({maxTotal}) exceeds the model's {shape.MaxPositions} positions");
        if (o.MaxBatchPrefillTokens < 1) throw new HarpiaException($"max batch prefill tokens must be at least 1, got {o.MaxBatchPrefillTokens}");
        if (o.MaxBatchSize is < 1) throw new HarpiaException($"max batch size must be at least 1, got {o.MaxBatchSize}");
        if (o.MaxTopNTokens < 0 || o.MaxStopSequences < 0) throw new HarpiaException("max top-n tokens and max stop sequences must not be negative");
    }

    /// <summary>Throws <see cref="GenerationValidationException"/> for a request the generator must refuse.</summary>
    public void Validate(GenerationRequest r)
    {
        static GenerationValidationException Bad(string m) => new(m);
        var o = _options;
        if (r.PromptIds is null || r.PromptIds.Count == 0) throw Bad("`inputs` must not be empty");
        for (int i = 0; i < r.PromptIds.Count; i++)
            if ((uint)r.PromptIds[i] >= (uint)_vocab) throw Bad($"`inputs` token {i} has id {r.PromptIds[i]}, outside the vocabulary of {_vocab}");
        if (r.PromptIds.Count > _maxInputTokens)
            throw Bad($"`inputs` must have less than {_maxInputTokens} tokens. Given: {r.PromptIds.Count}");
        if (r.MaxNewTokens < 1) throw Bad($"`max_new_tokens` must be strictly positive. Given: {r.MaxNewTokens}");
        if ((long)r.PromptIds.Count + r.MaxNewTokens > _maxTotalTokens)
            throw Bad($"`inputs` tokens + `max_new_tokens` must be <= {_maxTotalTokens}. Given: {r.PromptIds.Count} `inputs` tokens and {r.MaxNewTokens} `max_new_tokens`");
        var s = r.Sampling ?? throw Bad("`parameters` must not be null");
        if (!(s.Temperature > 0) || float.IsInfinity(s.Temperature)) throw Bad($"`temperature` must be strictly positive. Given: {s.Temperature}");
        if (s.TopK < 0) throw Bad($"`top_k` must be strictly positive. Given: {s.TopK}");
        if (!(s.TopP > 0 && s.TopP <= 1)) throw Bad($"`top_p` must be > 0.0 and <= 1.0. Given: {s.TopP}");
        if (!(s.TypicalP > 0 && s.TypicalP <= 1)) throw Bad($"`typical_p` must be > 0.0 and <= 1.0. Given: {s.TypicalP}");
        if (!(s.RepetitionPenalty > 0) || float.IsInfinity(s.RepetitionPenalty)) throw Bad($"`repetition_penalty` must be strictly positive. Given: {s.RepetitionPenalty}");
        if (!(s.FrequencyPenalty >= -2 && s.FrequencyPenalty <= 2)) throw Bad($"`frequency_penalty` must be >= -2.0 and <= 2.0. Given: {s.FrequencyPenalty}");
        if (!(s.PresencePenalty >= -2 && s.PresencePenalty <= 2)) throw Bad($"`presence_penalty` must be >= -2.0 and <= 2.0. Given: {s.PresencePenalty}");
        if (r.TopNTokens < 0 || r.TopNTokens > o.MaxTopNTokens) throw Bad($"`top_n_tokens` must be >= 0 and <= {o.MaxTopNTokens}. Given: {r.TopNTokens}");
        if (r.StopSequences is null) throw Bad("`stop` must not be null");
        if (r.Grammar is not null && r.IgnoreEos) throw Bad("a grammar ends generation with EOS once matched; it cannot be combined with ignoring EOS");
        if (r.StopSequences.Count > o.MaxStopSequences) throw Bad($"`stop` supports up to {o.MaxStopSequences} stop sequences. Given: {r.StopSequences.Count}");
        foreach (var stop in r.StopSequences)
            if (string.IsNullOrEmpty(stop)) throw Bad("`stop` sequences must not be empty");
    }
}

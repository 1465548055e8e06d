using Harpia.Runtime;
using Harpia.Tokenization;

namespace Harpia.Server;

/// <summary>A request that passed validation: what to run and how to present it.</summary>
public sealed record ValidatedRequest(
    string Inputs,
    GenerationRequest Generation,
    int InputLength,
    bool Details,
    bool DecoderInputDetails,
    bool ReturnFullText,
    int BestOf);

/// <summary>
/// TGI's router validation: every parameter rule and message of TGI's <c>validation.rs</c>, applied in its order,
/// then tokenization and the length limits. Failures throw <see cref="GenerationValidationException"/>, which the
/// endpoints answer with 422 <c>{"error": "Input validation error: …", "error_type": "validation"}</c>.
/// </summary>
public sealed class RequestValidator(ServerOptions options, ITokenizer tokenizer, int maxInputTokens, int maxTotalTokens,
    Harpia.Runtime.Grammar.GrammarCompiler grammars)
{
    public int MaxInputTokens => maxInputTokens;
    public int MaxTotalTokens => maxTotalTokens;

    static GenerationValidationException Fail(string message) => new(message);

    /// <param name="defaultMaxNewTokens">Used when the request has none (capped by what the total-token limit leaves).</param>
    /// <param name="implicitStops">Stop sequences the endpoint adds (chat formats); they do not count against the limit.</param>
    /// <param name="ct">The request's token: a grammar compiles on the request's time and stops when it is cancelled.</param>
    public async ValueTask<ValidatedRequest> ValidateAsync(string? inputs, GenerateParametersDto? p, bool stream, CancellationToken ct,
        int? defaultMaxNewTokens = 100, IReadOnlyList<string>? implicitStops = null)
    {
        p ??= new GenerateParametersDto();
        if (inputs is null) throw Fail("missing field `inputs`");

        bool doSample = p.DoSample ?? false;
        // Setting any sampling knob turns sampling on, as in TGI.
        if (p.Temperature is not null || p.TopK is not null || p.TopP is not null || p.TypicalP is not null) doSample = true;
        int bestOf = p.BestOf ?? 1;
        if (p.BestOf is not null)
        {
            if (bestOf <= 0 || bestOf > options.MaxBestOf) throw Fail($"`best_of` must be > 0 and <= {options.MaxBestOf}. Given: {bestOf}");
            if (bestOf > 1 && !doSample) throw Fail("you must use sampling when `best_of` is > 1");
            if (bestOf > 1 && p.Seed is not null) throw Fail("`seed` must not be set when `best_of` > 1");
            if (bestOf > 1 && stream) throw Fail("`best_of` != 1 is not allowed for this endpoint");
        }
        if (p.Temperature is { } t && !(t > 0)) throw Fail("`temperature` must be strictly positive");
        if (p.RepetitionPenalty is { } rp && !(rp > 0)) throw Fail("`repetition_penalty` must be strictly positive");
        if (p.FrequencyPenalty is { } fp && !(fp >= -2 && fp <= 2)) throw Fail("`frequency_penalty` must be >= -2.0 and <= 2.0");
        if (p.TopP is { } tp && !(tp > 0 && tp <= 1)) throw Fail("`top_p` must be > 0.0 and <= 1.0");
        if (p.TypicalP is { } typ && !(typ > 0 && typ <= 1)) throw Fail("`typical_p` must be > 0.0 and <= 1.0");
        if (p.TopK is { } k && k <= 0) throw Fail("`top_k` must be strictly positive");
        if (p.MaxNewTokens is { } mnt && mnt <= 0) throw Fail("`max_new_tokens` must be strictly positive");
        var stops = p.Stop ?? [];
        if (stops.Count > options.MaxStopSequences)
            throw Fail($"`stop` supports up to {options.MaxStopSequences} stop sequences. Given: {stops.Count}");
        if (stops.Any(string.IsNullOrEmpty)) throw Fail("`stop` sequences must not be empty");
        int topN = p.TopNTokens ?? 0;
        if (topN < 0 || topN > options.MaxTopNTokens)
            throw Fail($"`top_n_tokens` must be >= 0 and <= {options.MaxTopNTokens}. Given: {topN}");
        // Accepted by TGI's schema but not implemented here: refuse rather than silently ignore.
        if (p.Watermark == true) throw Fail("`watermark` is not supported by this server");
        Harpia.Runtime.Grammar.ByteDfa? grammar = null;
        if (p.Grammar is { } g)
        {
            try { grammar = await grammars.FromTgiAsync(g, ct).ConfigureAwait(false); }
            catch (HarpiaException ex) { throw Fail($"`grammar` is not valid: {ex.Message}"); }
        }
        if (!string.IsNullOrEmpty(p.AdapterId)) throw Fail($"`adapter_id` is not supported: this server serves one model without adapters. Given: {p.AdapterId}");
        if (p.DecoderInputDetails == true && stream)
            throw Fail("`decoder_input_details` == true is not supported when streaming tokens");

        if (inputs.Length == 0) throw Fail("`inputs` cannot be empty");
        if (p.Truncate is { } trunc && (trunc <= 0 || trunc > maxInputTokens))
            throw Fail($"`truncate` must be strictly positive and less than {maxInputTokens}. Given: {trunc}");

        // Cheap bound first: a byte-level BPE never makes more tokens than UTF-8 bytes, and no tokenizer makes more
        // than a few per character, so a giant input fails before it is tokenized.
        if (inputs.Length > (long)maxInputTokens * 64 && p.Truncate is null)
            throw Fail($"`inputs` must have less than {maxInputTokens} tokens. Given: more than {maxInputTokens} ({inputs.Length} characters)");
        IReadOnlyList<int> ids = tokenizer.Encode(inputs, addSpecialTokens: false);
        if (ids.Count == 0) throw Fail("`inputs` cannot be empty");
        if (p.Truncate is { } keep && ids.Count > keep) ids = ids.Skip(ids.Count - keep).ToArray();
        int inputLength = ids.Count;
        if (inputLength > maxInputTokens)
            throw Fail($"`inputs` must have less than {maxInputTokens} tokens. Given: {inputLength}");
        int maxNew;
        if (p.MaxNewTokens is { } requested)
        {
            maxNew = requested;
            if ((long)inputLength + maxNew > maxTotalTokens)
                throw Fail($"`inputs` tokens + `max_new_tokens` must be <= {maxTotalTokens}. Given: {inputLength} `inputs` tokens and {maxNew} `max_new_tokens`");
        }
        else
        {
            maxNew = maxTotalTokens - inputLength;
            if (defaultMaxNewTokens is { } d) maxNew = Math.Min(maxNew, d);
            if (maxNew <= 0)
                throw Fail($"`inputs` tokens + `max_new_tokens` must be <= {maxTotalTokens}. Given: {inputLength} `inputs` tokens and 1 `max_new_tokens`");
        }

        var sampling = new SamplingParameters
        {
            DoSample = doSample,
            Temperature = p.Temperature ?? 1f,
            TopK = p.TopK ?? 0,
            TopP = p.TopP ?? 1f,
            TypicalP = p.TypicalP ?? 1f,
            RepetitionPenalty = p.RepetitionPenalty ?? 1f,
            FrequencyPenalty = p.FrequencyPenalty ?? 0f,
            Seed = p.Seed,
        };
        var allStops = implicitStops is { Count: > 0 } ? [.. stops, .. implicitStops] : stops;
        var generation = new GenerationRequest
        {
            PromptIds = ids,
            Sampling = sampling,
            MaxNewTokens = maxNew,
            StopSequences = allStops,
            TopNTokens = topN,
            PromptLogprobs = p.DecoderInputDetails == true,
            Grammar = grammar,
        };
        return new ValidatedRequest(inputs, generation, inputLength, p.Details == true, p.DecoderInputDetails == true,
            p.ReturnFullText == true, bestOf);
    }
}

namespace Harpia.Runtime;

/// <summary>A whole generation, collected (TGI's non-streaming <c>/generate</c>, the CLI's one-shot run).</summary>
public sealed record GenerationResult(string Text, IReadOnlyList<GeneratedToken> Tokens, FinishReason Finish,
    int PromptTokens, IReadOnlyList<TokenLogprob>? Prefill, ulong? Seed);

public static class TextGeneratorExtensions
{
    /// <summary>Runs a request to the end and returns its text (the concatenated deltas) and tokens.</summary>
    public static async Task<GenerationResult> CompleteAsync(this ITextGenerator generator, GenerationRequest request, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        var tokens = new List<GeneratedToken>();
        IReadOnlyList<TokenLogprob>? prefill = null;
        FinishReason? finish = null;
        int promptTokens = request.PromptIds.Count;
        ulong? seed = null;
        await foreach (var e in generator.GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            text.Append(e.TextDelta);
            if (e.Token is not null) tokens.Add(e.Token);
            prefill ??= e.Prefill;
            seed ??= e.Seed;
            promptTokens = e.PromptTokens;
            finish = e.Finish ?? finish;
        }
        return new GenerationResult(text.ToString(), tokens,
            finish ?? throw new HarpiaException("the generation stream ended without a finish reason"), promptTokens, prefill, seed);
    }

    /// <summary>A request for a text prompt, encoded with the generator's tokenizer.</summary>
    public static GenerationRequest CreateRequest(this ITextGenerator generator, string prompt, int maxNewTokens = 100, bool addSpecialTokens = false)
        => new() { PromptIds = generator.Tokenizer.Encode(prompt, addSpecialTokens), MaxNewTokens = maxNewTokens };
}

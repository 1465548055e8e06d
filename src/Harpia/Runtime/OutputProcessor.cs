using Harpia.Runtime.Sampling;
using Harpia.Tokenization;

namespace Harpia.Runtime;

/// <summary>
/// The output stage (vLLM's output processor, TGI's streaming side): from one sequence's logits after a step, the
/// prompt log-probs, the sampled token, its detokenized text through the stop-sequence matcher, the finish reason,
/// and the streamed <see cref="GenerationEvent"/>.
/// </summary>
internal sealed class OutputProcessor(ModelDescription model, ITokenizer tokenizer, int vocab, bool prefixCaching)
{
    private readonly SamplerScratch _scratch = new(vocab);

    /// <summary>
    /// Handles the logits of one work item (its <see cref="WorkItem.LogitRows"/> rows); returns true when the
    /// sequence has finished (its final event written), so the caller completes it.
    /// </summary>
    public bool Process(GenerationSequence s, WorkItem w, ReadOnlySpan<float> logits)
    {
        int end = w.Start + w.Count;
        if (s.Cache.Length != end)
            throw new GenerationFailedException($"the model left the KV cache at {s.Cache.Length} positions after a chunk ending at {end}");
        if (prefixCaching) s.Cache.PublishFullBlocks(s.Tokens.AsSpan(0, end));
        if (w.AllLogits)
        {
            for (int r = 0; r < w.Count; r++)
            {
                int next = w.Start + r + 1;
                if (next >= s.PromptLength) break;
                var rowLogits = logits.Slice(r * vocab, vocab);
                int id = s.Tokens[next];
                float lp = (float)(rowLogits[id] - LogitsProcessors.LogSumExp(rowLogits));
                s.PromptLogprobs!.Add(new TokenLogprob(id, tokenizer.Decode([id]), lp, tokenizer.IsSpecial(id)));
            }
            if (end >= s.PromptLength) s.WantsPromptLogprobs = false;
        }
        if (end < s.Count) return false; // more prompt to prefill

        var last = logits.Slice(logits.Length - vocab, vocab);
        var sampled = s.Sampler.Sample(last, s.Request.TopNTokens, _scratch);
        s.Sampler.Accept(sampled.Id);
        s.Tokens[s.Count++] = sampled.Id;
        int generated = s.Count - s.PromptLength;

        FinishReason? finish = null;
        string piece = s.Decoder.Push(sampled.Id);
        string delta = s.Stop.Push(piece);
        if (s.Stop.Stopped) finish = FinishReason.StopSequence;
        else if (!s.Request.IgnoreEos && model.EosTokenId == sampled.Id) finish = FinishReason.EosToken;
        // A model without an EOS token cannot say "done": end once the grammar is matched and nothing can extend it.
        else if (model.EosTokenId is null && s.Sampler.GrammarComplete) finish = FinishReason.EosToken;
        else if (generated >= s.Request.MaxNewTokens) finish = FinishReason.Length;
        if (finish is not null && finish != FinishReason.StopSequence)
        {
            delta += s.Stop.Push(s.Decoder.Flush());
            if (s.Stop.Stopped) finish = FinishReason.StopSequence;
            else delta += s.Stop.Flush();
        }

        var top = new TokenLogprob[sampled.TopTokens.Length];
        for (int i = 0; i < top.Length; i++)
        {
            int id = sampled.TopTokens[i].Id;
            top[i] = new TokenLogprob(id, tokenizer.Decode([id]), sampled.TopTokens[i].Logprob, tokenizer.IsSpecial(id));
        }
        var token = new GeneratedToken(sampled.Id, tokenizer.Decode([sampled.Id]), sampled.Logprob, tokenizer.IsSpecial(sampled.Id), top);
        var e = new GenerationEvent
        {
            Token = token,
            TextDelta = delta,
            Finish = finish,
            Prefill = generated == 1 ? s.PromptLogprobs : null,
            PromptTokens = s.PromptLength,
            GeneratedTokens = generated,
            Seed = s.Request.Sampling.DoSample ? s.Sampler.Seed : null,
        };
        s.Events.Writer.TryWrite(e);
        return finish is not null;
    }
}

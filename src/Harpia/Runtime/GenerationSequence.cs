using System.Threading.Channels;
using Harpia.Models;
using Harpia.Runtime.KvCache;
using Harpia.Runtime.Sampling;
using Harpia.Tokenization;

namespace Harpia.Runtime;

/// <summary>
/// One request's state inside the <see cref="Generator"/>: its tokens so far, KV cache, sampler, stop matcher,
/// streaming decoder and event channel. Touched by the loop thread only, except <see cref="Cancelled"/> (set by the
/// caller's side) and <see cref="Completed"/> (read by it).
/// </summary>
internal sealed class GenerationSequence
{
    public readonly long Id;
    public readonly GenerationRequest Request;
    public readonly int[] Tokens;   // prompt, then generated tokens
    public int Count;
    public readonly int PromptLength;
    public readonly PagedKvCache Cache;
    public readonly TokenSampler Sampler;
    public readonly StopSequenceMatcher Stop;
    public readonly IStreamingDecoder Decoder;
    public readonly Channel<GenerationEvent> Events = Channel.CreateUnbounded<GenerationEvent>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    public readonly List<TokenLogprob>? PromptLogprobs;
    public bool WantsPromptLogprobs;
    public bool Preempted;
    /// <summary>Its node in the scheduler's waiting queue, or null while it runs.</summary>
    public LinkedListNode<GenerationSequence>? Node;
    public volatile bool Cancelled;
    public volatile bool Completed;

    public GenerationSequence(long id, GenerationRequest request, KvBlockPool pool, KvStorage storage, int vocab, ITokenizer tokenizer, Grammar.TokenConstraint? constraint)
    {
        Id = id;
        Request = request;
        PromptLength = request.PromptIds.Count;
        Tokens = new int[PromptLength + request.MaxNewTokens];
        for (int i = 0; i < PromptLength; i++) Tokens[i] = request.PromptIds[i];
        Count = PromptLength;
        Cache = new PagedKvCache(pool, storage);
        ulong seed = request.Sampling.Seed ?? (ulong)Random.Shared.NextInt64(long.MinValue, long.MaxValue);
        Sampler = new TokenSampler(request.Sampling, request.PromptIds, vocab, seed, constraint);
        Stop = new StopSequenceMatcher(request.StopSequences, request.KeepStopSequence);
        Decoder = tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
        if (request.PromptLogprobs)
        {
            WantsPromptLogprobs = true;
            PromptLogprobs = [new TokenLogprob(Tokens[0], tokenizer.Decode([Tokens[0]]), float.NaN, tokenizer.IsSpecial(Tokens[0]))];
        }
    }
}

/// <summary>One sequence's share of a step: <paramref name="Count"/> tokens from position <paramref name="Start"/>.</summary>
/// <param name="AllLogits">Every position returns a logits row (prompt log-probs), not just the last.</param>
internal readonly record struct WorkItem(GenerationSequence Sequence, int Start, int Count, bool AllLogits)
{
    public int LogitRows => AllLogits ? Count : 1;
}

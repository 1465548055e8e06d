using Harpia.Models;
using Harpia.Runtime;
using Harpia.Tokenization;

namespace Harpia.Tests.Runtime;

/// <summary>
/// A deterministic stand-in for a real model whose logits depend on exactly what its KV cache holds, the way
/// attention does: for each new token it writes features of (token, position) into the keys and values of every
/// layer, and the logits of a position are a hash of all keys and values at positions 0…p read back from the
/// cache. A paging, batching or chunking bug (a wrong block, a stale position, a skipped write) changes the output.
/// </summary>
internal sealed class FakeCausalLM(int vocabSize = 64, int layers = 2, int kvHeads = 2, int headDim = 3, int maxPositions = 4096) : ICausalLM
{
    public ModelShape Shape { get; } = new(layers, kvHeads, headDim, vocabSize, maxPositions, 16);
    public int ForwardCalls;
    public int MaxChunksInOneCall;
    public int TotalTokensSeen;
    /// <summary>The most tokens of multi-token (prefill) chunks in one call.</summary>
    public int MaxPrefillTokensInOneCall;
    /// <summary>Throws from Forward when it returns true for the batch.</summary>
    public Func<IReadOnlyList<SequenceChunk>, bool>? FailWhen;
    /// <summary>Fixed cost per Forward call whatever the batch (a weight-read-bound model).</summary>
    public TimeSpan DelayPerCall;

    public void Forward(IReadOnlyList<SequenceChunk> batch, Span<float> logits)
    {
        Interlocked.Increment(ref ForwardCalls);
        MaxChunksInOneCall = Math.Max(MaxChunksInOneCall, batch.Count);
        MaxPrefillTokensInOneCall = Math.Max(MaxPrefillTokensInOneCall, batch.Where(c => c.Tokens.Length > 1).Sum(c => c.Tokens.Length));
        if (FailWhen?.Invoke(batch) == true) throw new InvalidOperationException("fake model failure");
        if (DelayPerCall > TimeSpan.Zero) Thread.Sleep(DelayPerCall);
        int vocab = Shape.VocabSize, row = 0;
        foreach (var chunk in batch)
        {
            var cache = chunk.Cache;
            if (chunk.StartPosition != cache.Length)
                throw new InvalidOperationException($"chunk starts at {chunk.StartPosition} but the cache holds {cache.Length}");
            var tokens = chunk.Tokens.Span;
            cache.EnsureCapacity(chunk.StartPosition + tokens.Length);
            for (int j = 0; j < tokens.Length; j++)
            {
                int p = chunk.StartPosition + j;
                for (int l = 0; l < Shape.Layers; l++)
                {
                    var k = cache.HostKeys(l, p);
                    var v = cache.HostValues(l, p);
                    for (int e = 0; e < k.Length; e++)
                    {
                        k[e] = Feature(tokens[j], p, l, e, 1);
                        v[e] = Feature(tokens[j], p, l, e, 2);
                    }
                }
                if (chunk.AllLogits || j == tokens.Length - 1)
                    LogitsAt(cache, p, logits.Slice(row++ * vocab, vocab));
            }
            cache.SetLength(chunk.StartPosition + tokens.Length);
            Interlocked.Add(ref TotalTokensSeen, tokens.Length);
        }
    }

    private static float Feature(int token, int position, int layer, int element, int kind)
    {
        ulong x = (ulong)token * 0x9E3779B97F4A7C15UL ^ (ulong)position * 0xC2B2AE3D27D4EB4FUL ^ (ulong)(layer * 64 + element * 4 + kind);
        x = Harpia.Runtime.Sampling.Xoshiro256StarStar.SplitMix64(ref x);
        return (float)(x % 1000); // exact in float
    }

    private void LogitsAt(IKvCache cache, int p, Span<float> logits)
    {
        ulong h = 1469598103934665603UL;
        for (int q = 0; q <= p; q++)
            for (int l = 0; l < Shape.Layers; l++)
            {
                foreach (float f in cache.HostKeys(l, q)) h = (h ^ (ulong)f) * 1099511628211UL;
                foreach (float f in cache.HostValues(l, q)) h = (h ^ (ulong)f) * 1099511628211UL;
            }
        for (int v = 0; v < logits.Length; v++)
        {
            ulong x = h ^ (ulong)v * 0x9E3779B97F4A7C15UL;
            logits[v] = (float)(Harpia.Runtime.Sampling.Xoshiro256StarStar.SplitMix64(ref x) % 4096) / 512f - 4f;
        }
    }

    /// <summary>Greedy continuation computed the slow way: a fresh cache per step, full recompute (no paging).</summary>
    public List<int> GreedyReference(IReadOnlyList<int> prompt, int maxNew, int? eos)
    {
        var tokens = prompt.ToList();
        var output = new List<int>();
        var logits = new float[Shape.VocabSize];
        for (int i = 0; i < maxNew; i++)
        {
            using var cache = new DenseKvCache(this, Shape.MaxPositions);
            Forward([new SequenceChunk(tokens.ToArray(), 0, cache)], logits);
            int best = 0;
            for (int v = 1; v < logits.Length; v++) if (logits[v] > logits[best]) best = v;
            output.Add(best);
            tokens.Add(best);
            if (best == eos) break;
        }
        return output;
    }
}

/// <summary>A model that ignores its input and emits a fixed script of tokens after the prompt (for stop/EOS tests).</summary>
internal sealed class ScriptedCausalLM(int vocabSize, int[] script) : ICausalLM
{
    public ModelShape Shape { get; } = new(1, 1, 1, vocabSize, 4096, 4);
    public int PromptLength = 1;

    public void Forward(IReadOnlyList<SequenceChunk> batch, Span<float> logits)
    {
        int row = 0;
        foreach (var chunk in batch)
        {
            int n = chunk.Tokens.Length;
            chunk.Cache.EnsureCapacity(chunk.StartPosition + n);
            for (int j = 0; j < n; j++)
            {
                chunk.Cache.HostKeys(0, chunk.StartPosition + j)[0] = chunk.Tokens.Span[j];
                if (!chunk.AllLogits && j < n - 1) continue;
                var r = logits.Slice(row++ * vocabSize, vocabSize);
                r.Fill(-10f);
                int generatedIndex = chunk.StartPosition + j + 1 - PromptLength;
                r[script[Math.Clamp(generatedIndex, 0, script.Length - 1)]] = 10f;
            }
            chunk.Cache.SetLength(chunk.StartPosition + n);
        }
    }
}

/// <summary>
/// A tiny tokenizer: id 0 = "&lt;eos&gt;" (special), id 1 = "&lt;pad&gt;" (special), ids 2–27 = "a"…"z",
/// 28 = " ", 29 = "STOP", 30 = "ST", 31 = "OP", 32 = "S", and the rest "w&lt;id&gt;".
/// </summary>
internal sealed class FakeTokenizer(int vocabSize = 64) : ITokenizer
{
    public int VocabSize => vocabSize;

    public static string Piece(int id) => id switch
    {
        0 => "<eos>",
        1 => "<pad>",
        < 28 => ((char)('a' + id - 2)).ToString(),
        28 => " ",
        29 => "STOP",
        30 => "ST",
        31 => "OP",
        32 => "S",
        _ => "w" + id,
    };

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false) => throw new NotSupportedException();
    public IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false) => throw new NotSupportedException();
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new System.Text.StringBuilder();
        foreach (int id in ids) if (!(skipSpecialTokens && IsSpecial(id))) sb.Append(Piece(id));
        return sb.ToString();
    }
    public string? IdToToken(int id) => id >= 0 && id < vocabSize ? Piece(id) : null;
    public int? TokenToId(string token) => null;
    public bool IsSpecial(int id) => id is 0 or 1;
    public byte[]? TokenBytes(int id) => id >= 0 && id < vocabSize ? System.Text.Encoding.UTF8.GetBytes(Piece(id)) : null;
    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new Decoder(this, skipSpecialTokens);

    private sealed class Decoder(FakeTokenizer tokenizer, bool skip) : IStreamingDecoder
    {
        public string Push(int id) => tokenizer.Decode([id], skip);
        public string Flush() => "";
    }
}

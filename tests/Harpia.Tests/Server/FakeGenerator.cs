using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text;
using Harpia.Runtime;
using Harpia.Tokenization;

namespace Harpia.Tests.Server;

/// <summary>Byte-level tokenizer: one token per UTF-8 byte (id = byte value), plus &lt;/s&gt; (256) and &lt;s&gt; (257).</summary>
public sealed class FakeTokenizer : ITokenizer
{
    public const int Eos = 256, Bos = 257;
    public int VocabSize => 258;

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false) =>
        Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();

    public IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        return bytes.Select((b, i) => new TokenSpan(b, TokenText(b), i, i + 1)).ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (id < 256) { bytes.Add((byte)id); continue; }
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear();
            if (!skipSpecialTokens) sb.Append(id == Eos ? "</s>" : "<s>");
        }
        return sb.Append(Encoding.UTF8.GetString(bytes.ToArray())).ToString();
    }

    public static string TokenText(int id) => id switch { Eos => "</s>", Bos => "<s>", < 128 => ((char)id).ToString(), _ => $"<0x{id:X2}>" };
    public string? IdToToken(int id) => id is >= 0 and < 258 ? TokenText(id) : null;
    public int? TokenToId(string token) => token == "</s>" ? Eos : token == "<s>" ? Bos : token.Length == 1 && token[0] < 128 ? token[0] : null;
    public bool IsSpecial(int id) => id >= 256;
    public byte[]? TokenBytes(int id) => id switch { < 0 or >= 258 => null, < 256 => [(byte)id], _ => Encoding.UTF8.GetBytes(TokenText(id)) };
    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => throw new NotSupportedException();
}

/// <summary>
/// A deterministic <see cref="ITextGenerator"/> that honours the runtime contract: it "generates" a scripted reply
/// one ASCII character per token, then EOS; applies max_new_tokens and stop sequences (holding back text that could
/// still become a stop sequence); reports log-probs, alternatives, prefill and seed; and records what it saw
/// (requests, cancellations, how many generations are alive).
/// </summary>
public sealed class FakeGenerator : ITextGenerator, ITextEmbedder
{
    readonly FakeTokenizer _tokenizer = new();
    int _active, _cancelled, _started, _completed;

    public FakeGenerator(string? chatTemplate = null, int contextLength = 256)
    {
        Model = new ModelDescription("fake/tiny-falcon", contextLength, _tokenizer.VocabSize, FakeTokenizer.Eos, chatTemplate, "<s>", "</s>");
    }

    public ModelDescription Model { get; }
    public ITokenizer Tokenizer => _tokenizer;

    // ITextEmbedder: an 8-dimensional vector from the token ids alone (so it cannot depend on the batch), normalized.
    public int Dimensions => 8;
    public int MaxInputTokens => Model.MaxPositionEmbeddings;
    public List<(int Inputs, EmbeddingPooling Pooling)> EmbedCalls { get; } = [];

    public Task<float[][]> EmbedAsync(IReadOnlyList<IReadOnlyList<int>> inputs, EmbeddingPooling pooling, CancellationToken cancellationToken = default)
    {
        lock (EmbedCalls) EmbedCalls.Add((inputs.Count, pooling));
        return Task.FromResult(inputs.Select(ids =>
        {
            var used = pooling == EmbeddingPooling.LastToken ? ids.Skip(ids.Count - 1).ToArray() : ids.ToArray();
            var v = Enumerable.Range(0, Dimensions).Select(j => (float)used.Sum(id => Math.Sin(id * (j + 1) * 0.37) + 0.1)).ToArray();
            float norm = MathF.Sqrt(v.Sum(x => x * x));
            return v.Select(x => x / norm).ToArray();
        }).ToArray());
    }

    /// <summary>The reply for a prompt; default: "Hello from Harpia." (sampling with a seed appends the seed's last digit).</summary>
    public Func<string, GenerationRequest, string> Script { get; set; } =
        (_, r) => r.Sampling.DoSample && r.Sampling.Seed is { } s ? $"Hello from Harpia {s % 10}." : "Hello from Harpia.";
    public TimeSpan TokenDelay { get; set; } = TimeSpan.Zero;
    /// <summary>Throw <see cref="GenerationFailedException"/> after this many tokens.</summary>
    public int? FailAfterTokens { get; set; }
    /// <summary>End the stream after this many tokens without a finish reason.</summary>
    public int? StopWithoutFinishAfter { get; set; }
    public bool Overloaded { get; set; }
    /// <summary>After this many tokens, wait for cancellation (a generation that cannot end on its own).</summary>
    public int? HangAfterTokens { get; set; }
    /// <summary>Each generation waits for this before its first token (a minute at most, then it goes on).</summary>
    public Task? FirstTokenGate { get; set; }

    public int Active => Volatile.Read(ref _active);
    public int Cancelled => Volatile.Read(ref _cancelled);
    public int Started => Volatile.Read(ref _started);
    public int Completed => Volatile.Read(ref _completed);
    public ConcurrentQueue<GenerationRequest> Requests { get; } = new();
    public string LastPrompt { get; private set; } = "";

    public async IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken ct = default)
    {
        if (Overloaded) throw new GeneratorOverloadedException("the fake runtime is full");
        Requests.Enqueue(request);
        string prompt = _tokenizer.Decode(request.PromptIds.ToArray());
        LastPrompt = prompt;
        Interlocked.Increment(ref _started);
        Interlocked.Increment(ref _active);
        try
        {
            ulong? seed = request.Sampling.Seed ?? (request.Sampling.DoSample ? (ulong)Random.Shared.NextInt64() : null);
            var effective = request with { Sampling = request.Sampling with { Seed = seed } };
            string reply = Script(prompt, effective);
            var prefill = request.PromptLogprobs
                ? request.PromptIds.Select((id, i) => new TokenLogprob(id, FakeTokenizer.TokenText(id), i == 0 ? float.NaN : -1f - i % 3, false)).ToArray()
                : null;
            var text = new StringBuilder();
            int emitted = 0; // characters of text already sent as TextDelta
            for (int i = 0; ; i++)
            {
                if (i == 0 && FirstTokenGate is { } gate)
                    await Task.WhenAny(gate, Task.Delay(TimeSpan.FromMinutes(1), ct)).ConfigureAwait(false);
                if (HangAfterTokens is { } hang && i >= hang) await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
                if (TokenDelay > TimeSpan.Zero) await Task.Delay(TokenDelay, ct).ConfigureAwait(false);
                else await Task.Yield();
                ct.ThrowIfCancellationRequested();
                if (FailAfterTokens is { } f && i >= f) throw new GenerationFailedException("the fake model failed on purpose");
                if (StopWithoutFinishAfter is { } s && i >= s) yield break;
                float logprob = request.Sampling.DoSample ? -(float)((seed!.Value + (ulong)i) % 7) / 10f - 0.05f : -0.1f * (i % 5 + 1);
                bool eos = i >= reply.Length;
                int id = eos ? FakeTokenizer.Eos : reply[i];
                var top = Enumerable.Range(0, request.TopNTokens)
                    .Select(k => k == 0 ? new TokenLogprob(id, FakeTokenizer.TokenText(id), logprob, eos) : new TokenLogprob('a' + k, ((char)('a' + k)).ToString(), logprob - k, false))
                    .ToArray();
                var token = new GeneratedToken(id, FakeTokenizer.TokenText(id), logprob, eos, top);
                FinishReason? finish = null;
                string delta;
                if (eos) { finish = FinishReason.EosToken; delta = text.ToString(emitted, text.Length - emitted); }
                else
                {
                    text.Append(reply[i]);
                    string all = text.ToString();
                    var hit = request.StopSequences.FirstOrDefault(stop => all.EndsWith(stop, StringComparison.Ordinal));
                    if (hit is not null)
                    {
                        finish = FinishReason.StopSequence;
                        if (!request.KeepStopSequence) text.Length -= hit.Length;
                        delta = emitted < text.Length ? text.ToString(emitted, text.Length - emitted) : "";
                    }
                    else
                    {
                        // Hold back the longest tail that is a prefix of some stop sequence.
                        int hold = 0;
                        foreach (var stop in request.StopSequences)
                            for (int n = Math.Min(stop.Length - 1, all.Length); n > hold; n--)
                                if (all.EndsWith(stop[..n], StringComparison.Ordinal)) { hold = n; break; }
                        int safe = all.Length - hold;
                        delta = safe > emitted ? all[emitted..safe] : "";
                        if (i + 1 >= request.MaxNewTokens) { finish = FinishReason.Length; delta = all[emitted..]; }
                    }
                }
                emitted += delta.Length;
                yield return new GenerationEvent
                {
                    Token = token, TextDelta = delta, Finish = finish, Prefill = i == 0 ? prefill : null,
                    PromptTokens = request.PromptIds.Count, GeneratedTokens = i + 1, Seed = seed,
                };
                if (finish is not null) { Interlocked.Increment(ref _completed); yield break; }
            }
        }
        finally
        {
            if (ct.IsCancellationRequested) Interlocked.Increment(ref _cancelled);
            Interlocked.Decrement(ref _active);
        }
    }
}

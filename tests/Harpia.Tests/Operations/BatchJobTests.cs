using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Harpia.Operations;
using Harpia.Runtime;
using Harpia.Tokenization;

namespace Harpia.Tests.Operations;

public sealed class BatchJobTests : IDisposable
{
    private readonly Fixtures.TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private string Input(params string[] lines) { string p = _dir.File("in.jsonl"); File.WriteAllLines(p, lines); return p; }
    private static List<JsonObject> Output(string path) =>
        File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();

    [Fact]
    public async Task AnswersEveryItemOnce()
    {
        string input = Input("""{"id":"a","inputs":"hello"}""", """{"id":"b","prompt":"world","parameters":{"max_new_tokens":3}}""", "", """{"inputs":"third"}""");
        string output = _dir.File("out.jsonl");
        var gen = new EchoGenerator();
        var result = await new BatchJob(gen).RunAsync(input, output, CancellationToken.None);
        Assert.Equal((3, 0, 3, 0, false), (result.Total, result.AlreadyDone, result.Completed, result.Failed, result.Interrupted));
        var lines = Output(output).ToDictionary(o => (string)o["id"]!);
        Assert.Equal("olleh", (string)lines["a"]["generated_text"]!);
        Assert.Equal("dlr", (string)lines["b"]["generated_text"]!); // max_new_tokens 3
        Assert.Equal("length", (string)lines["b"]["finish_reason"]!);
        Assert.True(lines.ContainsKey("4")); // id from the line number
    }

    [Fact]
    public async Task ResumeSkipsFinishedIdsAndRepairsATornLine()
    {
        string input = Input("""{"id":"a","inputs":"one"}""", """{"id":"b","inputs":"two"}""", """{"id":"c","inputs":"three"}""");
        string output = _dir.File("out.jsonl");
        // A previous run finished "a" and was killed while writing "b".
        File.WriteAllText(output, "{\"id\":\"a\",\"generated_text\":\"eno\"}\n{\"id\":\"b\",\"gener");
        var gen = new EchoGenerator();
        var result = await new BatchJob(gen).RunAsync(input, output, CancellationToken.None);
        Assert.Equal(1, result.AlreadyDone);
        Assert.Equal(2, result.Completed);
        Assert.Equal(2, gen.Calls);
        Assert.Equal(["a", "b", "c"], Output(output).Select(o => (string)o["id"]!).Order());
    }

    [Fact]
    public async Task StoppingAdmissionLetsInFlightItemsFinishAndTheRestResume()
    {
        string input = Input(Enumerable.Range(0, 20).Select(i => $$"""{"id":"q{{i}}","inputs":"item {{i}}"}""").ToArray());
        string output = _dir.File("out.jsonl");
        using var stop = new CancellationTokenSource();
        var gen = new EchoGenerator { OnCall = n => { if (n == 3) stop.Cancel(); } };
        var first = await new BatchJob(gen, new BatchJobOptions { Concurrency = 2 }).RunAsync(input, output, stop.Token);
        Assert.True(first.Interrupted);
        Assert.InRange(first.Completed, 3, 5);
        Assert.Equal(first.Completed, Output(output).Count); // every admitted item was written whole

        var second = await new BatchJob(new EchoGenerator()).RunAsync(input, output, CancellationToken.None);
        Assert.Equal(first.Completed, second.AlreadyDone);
        Assert.Equal(20, Output(output).Select(o => (string)o["id"]!).Distinct().Count());
        Assert.Equal(20, Output(output).Count);
    }

    [Fact]
    public async Task SampledItemsGetAStableSeedFromTheirId()
    {
        string input = Input("""{"id":"x","inputs":"hi","parameters":{"temperature":0.7}}""");
        var gen = new EchoGenerator();
        await new BatchJob(gen).RunAsync(input, _dir.File("o1.jsonl"), CancellationToken.None);
        await new BatchJob(gen).RunAsync(input, _dir.File("o2.jsonl"), CancellationToken.None);
        Assert.Equal(2, gen.Seeds.Count);
        Assert.NotNull(gen.Seeds[0]);
        Assert.Equal(gen.Seeds[0], gen.Seeds[1]);
    }

    [Theory]
    [InlineData("not json", "in.jsonl:2")]
    [InlineData("""{"id":"a"}""", "needs a string `inputs`")]
    [InlineData("""[1,2]""", "not a JSON object")]
    public async Task BadInputLinesAreNamed(string line, string expected)
    {
        string input = Input("""{"id":"ok","inputs":"fine"}""", line);
        var ex = await Assert.ThrowsAsync<HarpiaException>(() => new BatchJob(new EchoGenerator()).RunAsync(input, _dir.File("o.jsonl"), CancellationToken.None));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public async Task DuplicateIdsAndInvalidItemsAreReported()
    {
        var dup = await Assert.ThrowsAsync<HarpiaException>(() => new BatchJob(new EchoGenerator())
            .RunAsync(Input("""{"id":"a","inputs":"x"}""", """{"id":"a","inputs":"y"}"""), _dir.File("o.jsonl"), CancellationToken.None));
        Assert.Contains("duplicate id 'a'", dup.Message);
        string output = _dir.File("o2.jsonl");
        var result = await new BatchJob(new EchoGenerator()).RunAsync(Input("""{"id":"z","inputs":"x","parameters":{"max_new_tokens":0}}"""), output, CancellationToken.None);
        Assert.Equal(1, result.Failed);
        Assert.Contains("max_new_tokens", (string)Output(output)[0]["error"]!);
    }

    /// <summary>A char-level tokenizer: id = UTF-16 code unit.</summary>
    internal sealed class CharTokenizer : ITokenizer
    {
        public int VocabSize => 65536;
        public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false) => text.Select(c => (int)c).ToArray();
        public IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false) =>
            text.Select((c, i) => new TokenSpan(c, c.ToString(), i, i + 1)).ToArray();
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false) { var s = new char[ids.Length]; for (int i = 0; i < ids.Length; i++) s[i] = (char)ids[i]; return new string(s); }
        public string? IdToToken(int id) => ((char)id).ToString();
        public int? TokenToId(string token) => token.Length == 1 ? token[0] : null;
        public bool IsSpecial(int id) => false;
        public byte[]? TokenBytes(int id) => id is >= 0 and < 65536 ? System.Text.Encoding.UTF8.GetBytes(((char)id).ToString()) : null;
        public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new Stream();
        private sealed class Stream : IStreamingDecoder { public string Push(int id) => ((char)id).ToString(); public string Flush() => ""; }
    }

    /// <summary>Generates the prompt reversed, one character per token, up to MaxNewTokens.</summary>
    private sealed class EchoGenerator : ITextGenerator
    {
        private int _calls;
        public int Calls => _calls;
        public List<ulong?> Seeds { get; } = [];
        public Action<int>? OnCall { get; init; }
        public ModelDescription Model { get; } = new("echo", 2048, 65536, null, null, null, null);
        public ITokenizer Tokenizer { get; } = new CharTokenizer();

        public async IAsyncEnumerable<GenerationEvent> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            int n = Interlocked.Increment(ref _calls);
            lock (Seeds) Seeds.Add(request.Sampling.Seed);
            OnCall?.Invoke(n);
            var ids = request.PromptIds.Reverse().ToArray();
            int count = Math.Min(ids.Length, request.MaxNewTokens);
            for (int i = 0; i < count; i++)
            {
                await Task.Yield();
                cancellationToken.ThrowIfCancellationRequested();
                bool last = i == count - 1;
                yield return new GenerationEvent
                {
                    Token = new GeneratedToken(ids[i], ((char)ids[i]).ToString(), -0.5f, false, []),
                    TextDelta = ((char)ids[i]).ToString(),
                    Finish = last ? (count < ids.Length ? FinishReason.Length : FinishReason.EosToken) : null,
                    PromptTokens = request.PromptIds.Count,
                    GeneratedTokens = i + 1,
                };
            }
        }
    }
}

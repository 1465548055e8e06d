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
        // A bad line is answered with an error record that names it; the good lines still run.
        string input = Input("""{"id":"ok","inputs":"fine"}""", line);
        string output = _dir.File("o.jsonl");
        var result = await new BatchJob(new EchoGenerator()).RunAsync(input, output, CancellationToken.None);
        Assert.Equal((2, 1, 1), (result.Total, result.Completed, result.Failed));
        var error = Output(output).Single(o => o.ContainsKey("error"));
        Assert.Contains(expected, (string)error["error"]!);
        Assert.Contains("in.jsonl:2", (string)error["error"]!);
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

    // ---- OpenAI's Batch API lines

    private static string Reverse(string s) { var a = s.ToCharArray(); Array.Reverse(a); return new string(a); }

    [Fact]
    public async Task OpenAiBatchLinesAreAnsweredInTheBatchOutputFormat()
    {
        string input = Input(
            """{"custom_id":"chat-1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"max_tokens":50}}""",
            """{"custom_id":"cmpl-1","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"abcdef","temperature":0,"max_tokens":4}}""");
        string output = _dir.File("out.jsonl");
        var gen = new EchoGenerator();
        var result = await new BatchJob(gen).RunAsync(input, output, CancellationToken.None);
        Assert.Equal((2, 2, 0), (result.Total, result.Completed, result.Failed));
        var lines = Output(output).ToDictionary(o => (string)o["custom_id"]!);

        var chat = lines["chat-1"];
        Assert.StartsWith("batch_req_", (string)chat["id"]!);
        Assert.Null(chat["error"]);
        Assert.Equal(200, (int)chat["response"]!["status_code"]!);
        var body = chat["response"]!["body"]!;
        Assert.Equal("chat.completion", (string)body["object"]!);
        Assert.Equal("echo", (string)body["model"]!);
        // The prompt is the model's chat format (Falcon's: no template in the fake model); the fake answers it reversed.
        Assert.Equal(Reverse("User: hi\nFalcon:"), (string)body["choices"]![0]!["message"]!["content"]!);
        Assert.Equal("stop", (string)body["choices"]![0]!["finish_reason"]!);
        Assert.Equal(16, (int)body["usage"]!["prompt_tokens"]!);
        Assert.Equal(16, (int)body["usage"]!["completion_tokens"]!);
        Assert.Equal(32, (int)body["usage"]!["total_tokens"]!);

        var cmpl = lines["cmpl-1"]["response"]!["body"]!;
        Assert.Equal("text_completion", (string)cmpl["object"]!);
        Assert.Equal("fedc", (string)cmpl["choices"]![0]!["text"]!);
        Assert.Equal("length", (string)cmpl["choices"]![0]!["finish_reason"]!);
        Assert.All(gen.Seeds, s => Assert.Null(s)); // temperature 0 is greedy
    }

    [Fact]
    public async Task OpenAiLinesWithoutTemperatureSampleWithASeedFromTheirCustomId()
    {
        string input = Input("""{"custom_id":"s","method":"POST","url":"/v1/completions","body":{"prompt":"x"}}""");
        var gen = new EchoGenerator();
        await new BatchJob(gen).RunAsync(input, _dir.File("o.jsonl"), CancellationToken.None);
        Assert.Equal(BatchJob.StableSeed("s"), gen.Seeds.Single());
    }

    [Fact]
    public async Task BadOpenAiLinesGetErrorRecordsAndAreNotRunAgain()
    {
        string input = Input(
            """{"custom_id":"ok","method":"POST","url":"/v1/completions","body":{"prompt":"fine","temperature":0}}""",
            """{"custom_id":"url","method":"POST","url":"/v1/embeddings","body":{}}""",
            """{"custom_id":"get","method":"GET","url":"/v1/completions","body":{}}""",
            """{"custom_id":"temp","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"x"}],"temperature":7}}""",
            """{"custom_id":"msgs","method":"POST","url":"/v1/chat/completions","body":{"messages":[]}}""",
            """{"custom_id":"n","method":"POST","url":"/v1/completions","body":{"prompt":"x","n":2}}""",
            """{"custom_id":"stop","method":"POST","url":"/v1/completions","body":{"prompt":"x","stop":[1]}}""",
            "{not json",
            """{"custom_id":7,"method":"POST","url":"/v1/completions","body":{}}""");
        string output = _dir.File("out.jsonl");
        var gen = new EchoGenerator();
        var result = await new BatchJob(gen).RunAsync(input, output, CancellationToken.None);
        Assert.Equal((9, 1, 8), (result.Total, result.Completed, result.Failed));
        Assert.Equal(1, gen.Calls);
        var records = Output(output);
        string Message(string customId)
        {
            var r = records.Single(o => o["custom_id"] is JsonValue v && (string)v! == customId);
            Assert.Equal(400, (int)r["response"]!["status_code"]!);
            return (string)r["response"]!["body"]!["error"]!["message"]!;
        }
        Assert.Contains("`url` '/v1/embeddings' is not supported", Message("url"));
        Assert.Contains("`method` must be \"POST\"", Message("get"));
        Assert.Contains("`temperature` must be >= 0.0 and <= 2.0", Message("temp"));
        Assert.Contains("`messages` must be a non-empty array", Message("msgs"));
        Assert.Contains("`n` must be 1", Message("n"));
        Assert.Contains("`stop` must be a string or an array of strings", Message("stop"));
        // Lines with no usable custom_id: OpenAI's batch-level error, keyed by the line.
        var noKey = records.Where(o => o["custom_id"] is null).ToList();
        Assert.Equal(["line-8", "line-9"], noKey.Select(o => (string)o["id"]!).Order());
        Assert.Contains("in.jsonl:8: not a JSON object", (string)noKey.Single(o => (string)o["id"]! == "line-8")["error"]!["message"]!);
        Assert.Contains("`custom_id` must be a non-empty string", (string)noKey.Single(o => (string)o["id"]! == "line-9")["error"]!["message"]!);

        // A re-run finds every line answered, bad ones included, and adds nothing.
        var again = await new BatchJob(gen).RunAsync(input, output, CancellationToken.None);
        Assert.Equal((9, 0, 0), (again.AlreadyDone, again.Completed, again.Failed));
        Assert.Equal(9, Output(output).Count);
    }

    [Fact]
    public async Task ResumeKeysOpenAiRecordsByCustomId()
    {
        string input = Input(Enumerable.Range(0, 6).Select(i =>
            $$$"""{"custom_id":"r{{{i}}}","method":"POST","url":"/v1/completions","body":{"prompt":"item {{{i}}}","temperature":0}}""").ToArray());
        string output = _dir.File("out.jsonl");
        using var stop = new CancellationTokenSource();
        var first = await new BatchJob(new EchoGenerator { OnCall = n => { if (n == 2) stop.Cancel(); } }, new BatchJobOptions { Concurrency = 1 })
            .RunAsync(input, output, stop.Token);
        Assert.True(first.Interrupted);
        var gen = new EchoGenerator();
        var second = await new BatchJob(gen).RunAsync(input, output, CancellationToken.None);
        Assert.Equal(first.Completed, second.AlreadyDone);
        Assert.Equal(6 - first.Completed, gen.Calls);
        Assert.Equal(Enumerable.Range(0, 6).Select(i => $"r{i}"), Output(output).Select(o => (string)o["custom_id"]!).Order());
    }

    [Fact]
    public async Task BadTgiParametersAreErrorRecordsNotCrashes()
    {
        string input = Input("""{"id":"p","inputs":"x","parameters":[1]}""", """{"id":"s","inputs":"x","parameters":{"stop":[3]}}""",
            """{"id":"m","inputs":"x","parameters":{"max_new_tokens":2.5}}""", """{"id":{"x":1},"inputs":"x"}""");
        string output = _dir.File("out.jsonl");
        var result = await new BatchJob(new EchoGenerator()).RunAsync(input, output, CancellationToken.None);
        Assert.Equal(4, result.Failed);
        var errors = Output(output).ToDictionary(o => (string)o["id"]!, o => (string)o["error"]!);
        Assert.Contains("`parameters` must be an object", errors["p"]);
        Assert.Contains("`stop` must be a string or an array of strings", errors["s"]);
        Assert.Contains("`max_new_tokens` must be a whole number", errors["m"]);
        Assert.Contains("in.jsonl:4: `id` must be a string or number", errors["line-4"]);
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

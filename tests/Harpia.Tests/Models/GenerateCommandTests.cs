using Harpia.Cli.Commands;
using Harpia.Models.Falcon;
using Harpia.Tokenization;

namespace Harpia.Tests.Models;

public class GenerateCommandTests
{
    /// <summary>A stand-in tokenizer: token id n is the text "⟨n⟩".</summary>
    private sealed class IdTokenizer : ITokenizer
    {
        public int VocabSize => 65024;
        public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false) => throw new NotSupportedException();
        public IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false) => throw new NotSupportedException();
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
        {
            var s = "";
            foreach (int id in ids) if (!(skipSpecialTokens && IsSpecial(id))) s += $"⟨{id}⟩";
            return s;
        }
        public string? IdToToken(int id) => $"⟨{id}⟩";
        public int? TokenToId(string token) => null;
        public bool IsSpecial(int id) => id == 11;
        public byte[]? TokenBytes(int id) => id is >= 0 and < 65024 ? System.Text.Encoding.UTF8.GetBytes($"⟨{id}⟩") : null;
        public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => throw new NotSupportedException();
    }

    [Theory]
    [InlineData("tiny-falcon-7b")]
    [InlineData("tiny-falcon-180b")]
    public void GreedyGenerationReproducesTheGoldenContinuation(string name)
    {
        using var model = FalconModel.Load(Fixtures.Model(name));
        var prompt = FalconGoldenTests.Golden(name)[1];
        var streamed = new List<int>();
        var result = GenerateCommand.Run(model, prompt.Ids, new GenerateCommand.Options(8, 0f, null, true), default, t => streamed.Add(t.Id));
        Assert.Equal(prompt.GreedyNext8, result.Tokens.Select(t => t.Id));
        Assert.Equal(prompt.GreedyNext8, streamed);
        Assert.Equal("length", result.FinishReason);
        Assert.All(result.Tokens, t => Assert.InRange(t.Logprob, -20f, 0f));
    }

    [Fact]
    public async Task SamplingFlagsRunThroughTheServingRuntime()
    {
        string path = Fixtures.Model("tiny-falcon-180b");
        using var model = FalconModel.Load(path);
        var tokenizer = GenerateCommand.LoadTokenizer(model, path, null)!;
        var prompt = FalconGoldenTests.Golden("tiny-falcon-180b")[1];
        // top_k = 1 samples the argmax: the golden greedy continuation, whatever the seed.
        var settings = new GenerateCommand.Settings { Model = path, Ids = "1", MaxNewTokens = 8, TopK = 1, Temperature = 0.7f, Seed = 3, IgnoreEos = true };
        Assert.True(settings.UsesRuntime);
        var text = new System.Text.StringBuilder();
        var topK1 = await GenerateCommand.RunWithRuntime(model, tokenizer, settings, prompt.Ids, default, t => text.Append(t));
        Assert.Equal(prompt.GreedyNext8, topK1.Tokens.Select(t => t.Id));
        Assert.Equal("length", topK1.FinishReason);
        Assert.Equal(tokenizer.Decode(prompt.GreedyNext8.ToArray()), text.ToString());

        // A stop sequence made of the third token's text ends generation there, and is not printed.
        string stop = tokenizer.Decode([prompt.GreedyNext8[2]]);
        var withStop = new GenerateCommand.Settings { Model = path, Ids = "1", MaxNewTokens = 8, TopK = 1, Temperature = 0.7f, Seed = 3, IgnoreEos = true, Stop = [stop] };
        var stopped = await GenerateCommand.RunWithRuntime(model, tokenizer, withStop, prompt.Ids, default, _ => { });
        Assert.Equal("stop_sequence", stopped.FinishReason);
        Assert.InRange(stopped.Tokens.Count, 1, 3);

        // Seeded sampling through the runtime is reproducible.
        var free = new GenerateCommand.Settings { Model = path, Ids = "1", MaxNewTokens = 8, TopP = 0.95f, Temperature = 1.5f, Seed = 3, IgnoreEos = true };
        var a = await GenerateCommand.RunWithRuntime(model, tokenizer, free, prompt.Ids, default, _ => { });
        var b = await GenerateCommand.RunWithRuntime(model, tokenizer, free, prompt.Ids, default, _ => { });
        Assert.Equal(a.Tokens.Select(t => t.Id), b.Tokens.Select(t => t.Id));
    }

    [Fact]
    public void SamplingIsSeededAndJsonHasTheTgiShape()
    {
        using var model = FalconModel.Load(Fixtures.Model("tiny-falcon-7b"));
        int[] ids = [15963, 1446, 264];
        var a = GenerateCommand.Run(model, ids, new GenerateCommand.Options(5, 1.5f, 7, true), default, _ => { });
        var b = GenerateCommand.Run(model, ids, new GenerateCommand.Options(5, 1.5f, 7, true), default, _ => { });
        Assert.Equal(a.Tokens.Select(t => t.Id), b.Tokens.Select(t => t.Id));

        var json = GenerateCommand.ToTgiJson(a, new IdTokenizer(), 12.5);
        var details = json["details"]!;
        Assert.Equal("length", (string)details["finish_reason"]!);
        Assert.Equal(5, (int)details["generated_tokens"]!);
        var tokens = details["tokens"]!.AsArray();
        Assert.Equal(5, tokens.Count);
        Assert.Equal(a.Tokens[0].Id, (int)tokens[0]!["id"]!);
        Assert.Equal($"⟨{a.Tokens[0].Id}⟩", (string)tokens[0]!["text"]!);
        Assert.False((bool)tokens[0]!["special"]!);
        Assert.Equal(string.Concat(a.Tokens.Select(t => $"⟨{t.Id}⟩")), (string)json["generated_text"]!);
        Assert.Equal(3, (int)json["timings"]!["prompt_tokens"]!);
        Assert.Equal(12.5, (double)json["timings"]!["load_ms"]!);
    }

    [Fact]
    public async Task GenerationStopsAtTheModelsContextAndAPromptThatFillsItIsRefused()
    {
        // tiny-falcon-7b with its context cut to 12 positions (weights linked, config rewritten).
        using var dir = new Fixtures.TempDir();
        string source = Fixtures.Model("tiny-falcon-7b");
        foreach (var f in new[] { "model.safetensors", "tokenizer.json" }) File.CreateSymbolicLink(dir.File(f), Path.Combine(source, f));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!;
        config["max_position_embeddings"] = 12;
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        using var model = FalconModel.Load(dir.Path);
        int[] prompt = [5, 6, 7, 8, 9];

        var direct = GenerateCommand.Run(model, prompt, new GenerateCommand.Options(50, 0f, null, StopAtEos: false), default, _ => { });
        Assert.Equal(7, direct.Tokens.Count);
        Assert.Equal("length", direct.FinishReason);
        var tokenizer = GenerateCommand.LoadTokenizer(model, dir.Path, null)!;
        var settings = new GenerateCommand.Settings { Model = dir.Path, MaxNewTokens = 50, TopK = 1, Temperature = 0, IgnoreEos = true };
        var runtime = await GenerateCommand.RunWithRuntime(model, tokenizer, settings, prompt, default, null);
        Assert.Equal(direct.Tokens.Select(t => t.Id), runtime.Tokens.Select(t => t.Id));
        Assert.Equal("length", runtime.FinishReason);

        var ex = Assert.Throws<HarpiaException>(() => GenerateCommand.Run(model, [.. Enumerable.Range(1, 12)], new GenerateCommand.Options(1, 0f, null, true), default, _ => { }));
        Assert.Contains("context is 12 positions", ex.Message);
    }

    [Fact]
    public void InspectDescribesArchitectureParametersAndTensors()
    {
        using var model = FalconModel.Load(Fixtures.Model("tiny-falcon-7b"));
        string text = InspectCommand.Describe(model, tensors: true);
        Assert.Contains("2 layers, hidden 64, 4 heads × 16, 1 KV heads (multi-query)", text);
        Assert.Contains("one layer norm", text);
        long parameters = 65024 * 64 + 2 * (64 * 2 + 96 * 64 + 64 * 64 + 256 * 64 * 2) + 2 * 64;
        Assert.Contains($"parameters:   {parameters:N0}", text);
        Assert.Contains("transformer.h.1.self_attention.query_key_value.weight", text);
        Assert.Contains("BF16", text);
    }

    [Theory]
    [InlineData("tiny-falcon-7b", "tiny-falcon-7b")]
    [InlineData("tiny-falcon-180b", "tiny-falcon-180b")]
    public void TextPromptsGoThroughTheModelsTokenizerEndToEnd(string modelPath, string golden)
    {
        string path = Fixtures.Model(modelPath);
        using var model = FalconModel.Load(path);
        var tokenizer = GenerateCommand.LoadTokenizer(model, path, null);
        Assert.NotNull(tokenizer);
        foreach (var prompt in FalconGoldenTests.Golden(golden))
        {
            var ids = tokenizer.Encode(prompt.Text).ToArray();
            Assert.Equal(prompt.Ids, ids);
            var result = GenerateCommand.Run(model, ids, new GenerateCommand.Options(8, 0f, null, true), default, _ => { });
            Assert.Equal(prompt.GreedyNext8, result.Tokens.Select(t => t.Id));
            var json = GenerateCommand.ToTgiJson(result, tokenizer, 0);
            Assert.Equal(tokenizer.Decode(prompt.GreedyNext8, skipSpecialTokens: true), (string)json["generated_text"]!);
        }
    }

    [Fact]
    public void GgufCarriesItsOwnTokenizer()
    {
        // The h256 GGUF's tokenizer is Falcon's cut to 4,096 tokens and its first 3,856 merges (its golden ids are
        // Falcon's modulo 4,096, not an encoding, so compare with the full tokenizer only where no late merge applies).
        string path = Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-f32.gguf");
        using var model = FalconModel.Load(path);
        var tokenizer = GenerateCommand.LoadTokenizer(model, path, null)!;
        Assert.Equal(4096, tokenizer.VocabSize);
        var full = HfTokenizer.Parse(File.ReadAllBytes(Fixtures.Path_("falcon", "tokenizer.json")), "falcon");
        const string common = "the man is in the house and on the car";
        Assert.All(full.Encode(common), id => Assert.InRange(id, 0, 4095)); // precondition: all in the cut vocabulary
        Assert.Equal(full.Encode(common), tokenizer.Encode(common));
        foreach (var prompt in FalconGoldenTests.Golden("tiny-falcon-7b"))
        {
            var ids = tokenizer.Encode(prompt.Text);
            Assert.All(ids, id => Assert.InRange(id, 0, 4095));
            Assert.Equal(prompt.Text, tokenizer.Decode(ids.ToArray()));
        }
        Assert.Equal(11, tokenizer.Encode("<|endoftext|>").Single());
    }
}

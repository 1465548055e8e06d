using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Chat;
using Harpia.Cli.Commands;
using Harpia.Formats;
using Harpia.Models;
using Harpia.Models.Llama;
using Harpia.Runtime;
using Harpia.Server;

namespace Harpia.Tests.Models;

/// <summary>
/// The Llama fixtures (safetensors and GGUF) through the code paths the commands and the server use: loading through
/// <see cref="ModelHost"/>, `harpia generate` (direct and through the serving runtime), `inspect`, `perplexity`,
/// `bench`, and `serve`'s /generate and /v1/chat/completions, with greedy output checked against the golden tokens.
/// The fixtures carry no tokenizer.json; their GGUFs carry Falcon's vocabulary cut to 4,096 tokens under llama.cpp's
/// "default" pre-tokenizer, and the safetensors tests use that tokenizer written out as tokenizer.json.
/// </summary>
public class LlamaEndToEndTests
{
    public static TheoryData<string> Models => LlamaGoldenTests.Models;

    static string GgufOf(string name) => Path.Combine(Fixtures.Model(LlamaGoldenTests.GoldenModel(name)), "model-f32.gguf");

    /// <summary>The GGUF's embedded tokenizer as a tokenizer.json in <paramref name="dir"/>.</summary>
    static string WriteTokenizerJson(string name, Fixtures.TempDir dir)
    {
        using var gguf = GgufFile.Open(GgufOf(name));
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, GgufTokenizerJson.Build(gguf).ToJsonString());
        return path;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public async Task Generate_reproduces_the_golden_continuation_directly_and_through_the_runtime(string name)
    {
        string path = LlamaGoldenTests.ModelPath(name);
        using var model = ModelHost.LoadModel(path);
        Assert.IsType<LlamaModel>(model);
        using var dir = new Fixtures.TempDir();
        var tokenizer = GenerateCommand.LoadTokenizer(model, path, name.EndsWith(".gguf") ? null : WriteTokenizerJson(name, dir));
        Assert.NotNull(tokenizer);
        foreach (var prompt in LlamaGoldenTests.Golden(LlamaGoldenTests.GoldenModel(name)))
        {
            var direct = GenerateCommand.Run(model, prompt.Ids, new GenerateCommand.Options(8, 0f, null, StopAtEos: false), default, _ => { });
            Assert.Equal(prompt.GreedyNext8, direct.Tokens.Select(t => t.Id));
            var settings = new GenerateCommand.Settings { Model = path, MaxNewTokens = 8, TopK = 1, Temperature = 0.7f, Seed = 5, IgnoreEos = true };
            var runtime = await GenerateCommand.RunWithRuntime(model, tokenizer, settings, prompt.Ids, default, null);
            Assert.Equal(prompt.GreedyNext8, runtime.Tokens.Select(t => t.Id));
        }
    }

    [Theory]
    [InlineData("tiny-llama3", "llama: 2 layers, hidden 256, 8 heads × 32, 2 KV heads, FFN 688 (SwiGLU), vocab 4096", 3_482_880)]
    [InlineData("tiny-falcon3/model-f32.gguf", "llama: 3 layers, hidden 192, 6 heads × 64, 2 KV heads", -1)]
    public void Inspect_describes_the_architecture_and_counts_parameters_from_the_tensor_table(string name, string architecture, long parameters)
    {
        using var model = ModelHost.LoadModel(LlamaGoldenTests.ModelPath(name));
        string text = InspectCommand.Describe(model, tensors: true);
        Assert.Contains(architecture, text);
        // Parameters: every tensor's elements, except llama.cpp's rope_freqs (frequency factors, not weights).
        long expected = parameters >= 0 ? parameters
            : model.Source.Tensors.Values.Where(t => t.Name != "rope_freqs.weight").Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
        Assert.Contains($"parameters:   {expected:N0}", text);
        Assert.Contains(name.EndsWith(".gguf") ? "blk.1.attn_q.weight" : "model.layers.1.self_attn.q_proj.weight", text);
    }

    [Fact]
    public void Perplexity_is_the_mean_nll_of_the_scored_predictions_and_agrees_between_safetensors_and_gguf()
    {
        using var dir = new Fixtures.TempDir();
        string tokenizerJson = WriteTokenizerJson("tiny-llama3", dir);
        string text = Path.Combine(Fixtures.RepoRoot, "bench", "text", "harpia-docs.txt");
        JsonObject Run(string model, string? tokenizer)
        {
            var output = new StringWriter();
            var settings = new PerplexityCommand.Settings { Model = model, File = text, Context = 32, MaxWindows = 2, Tokenizer = tokenizer, Json = true };
            Assert.Equal(0, PerplexityCommand.Run(settings, new StringReader(""), output, interactive: false, default));
            return JsonNode.Parse(output.ToString())!.AsObject();
        }
        var gguf = Run(GgufOf("tiny-llama3"), null);
        var hf = Run(Fixtures.Model("tiny-llama3"), tokenizerJson);
        Assert.Equal(2 * 15, (int)gguf["tokens_scored"]!);
        Assert.InRange((double)hf["mean_nll"]! / (double)gguf["mean_nll"]!, 1 - 1e-4, 1 + 1e-4);

        // The same number computed here: windows of 32 tokens from an empty cache, rows 16…30 predict tokens 17…31.
        using var model = LlamaModel.Load(GgufOf("tiny-llama3"));
        var tokens = ModelHost.LoadTokenizer(model.Source, GgufOf("tiny-llama3"))!.Encode(File.ReadAllText(text)).ToArray();
        int vocab = model.Shape.VocabSize;
        double nll = 0;
        for (int w = 0; w < 2; w++)
        {
            var window = tokens.AsSpan(w * 32, 32).ToArray();
            var logits = LlamaGoldenTests.FullPass(model, window, allLogits: true);
            for (int r = 16; r <= 30; r++)
            {
                var row = logits.AsSpan(r * vocab, vocab);
                float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
                double sum = 0;
                foreach (float x in row) sum += Math.Exp(x - max);
                nll += max + Math.Log(sum) - row[window[r + 1]];
            }
        }
        Assert.Equal(nll / 30, (double)gguf["mean_nll"]!, 1e-4);
    }

    [Theory]
    [InlineData("tiny-falcon3")]
    [InlineData("tiny-llama3/model-f32.gguf")]
    public void Bench_runs_and_counts_the_weights_a_decoded_token_reads(string name)
    {
        using var model = ModelHost.LoadModel(LlamaGoldenTests.ModelPath(name));
        var r = ModelBenchmark.Run(model, promptTokens: 12, genTokens: 4, reps: 1, warmupSeconds: 0);
        Assert.Equal(12, r.PromptTokens);
        Assert.All(r.PrefillSamples.Concat(r.DecodeSamples), v => Assert.True(double.IsFinite(v) && v > 0, $"rate {v}"));
        // Every matrix once, the lm_head (untied in both fixtures), and one embedding row; no norms or rope factors.
        var tensors = model.Source.Tensors.Values.Where(t => t.Shape.Length == 2).ToList();
        var embeddings = tensors.Single(t => t.Name is "model.embed_tokens.weight" or "token_embd.weight");
        long expected = tensors.Where(t => t != embeddings).Sum(t => t.ByteLength) + embeddings.ByteLength / model.Shape.VocabSize;
        Assert.Equal(expected, r.WeightBytesPerToken);
    }

    [Fact]
    public async Task Serve_generate_and_chat_completions_return_what_the_model_computes()
    {
        // tiny-falcon3's safetensors in a folder with a tokenizer.json and a tokenizer_config.json carrying
        // Falcon3-Instruct's chat template, as a downloaded Falcon3 checkpoint has them.
        using var dir = new Fixtures.TempDir();
        string source = Fixtures.Model("tiny-falcon3");
        foreach (var f in new[] { "model.safetensors", "config.json" }) File.CreateSymbolicLink(dir.File(f), Path.Combine(source, f));
        WriteTokenizerJson("tiny-falcon3", dir);
        File.WriteAllText(dir.File("tokenizer_config.json"), new JsonObject
        {
            ["chat_template"] = Harpia.Tests.Chat.LlamaFamilyTemplateTests.TemplateText("falcon3-instruct"),
            ["bos_token"] = ">>ABSTRACT<<", ["eos_token"] = "<|endoftext|>",
        }.ToJsonString());

        using var generator = ModelHost.OpenGenerator(dir.Path, new GeneratorOptions { MaxConcurrentRequests = 4 });
        var app = HarpiaServer.Build(new ServerOptions { Port = 0, Hostname = "127.0.0.1", MaxConcurrentRequests = 4 }, generator);
        await app.StartAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = HarpiaServer.BoundAddress(app), Timeout = TimeSpan.FromSeconds(120) };
            var tokenizer = generator.Tokenizer;
            using var model = LlamaModel.Load(dir.Path);

            const string prompt = "The river flows";
            var expected = DirectGreedy(model, tokenizer.Encode(prompt).ToArray(), 8);
            using (var response = await http.PostAsJsonAsync("/generate", new { inputs = prompt, parameters = new { max_new_tokens = 8, details = true } }))
            {
                Assert.Equal(200, (int)response.StatusCode);
                var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
                var ids = body.GetProperty("details").GetProperty("tokens").EnumerateArray().Select(t => t.GetProperty("id").GetInt32());
                Assert.Equal(expected, ids);
                Assert.Equal(tokenizer.Decode(expected, skipSpecialTokens: true), body.GetProperty("generated_text").GetString());
            }

            // Chat: the server renders Falcon3's template (as transformers does) and generates from its tokens.
            string rendered = new ChatPromptFormatter(Harpia.Tests.Chat.LlamaFamilyTemplateTests.TemplateText("falcon3-instruct"), ">>ABSTRACT<<", "<|endoftext|>")
                .Format([new ChatTurn("system", "Be brief."), new ChatTurn("user", "The river flows")]);
            Assert.Equal("<|system|>\nBe brief.\n<|user|>\nThe river flows\n<|assistant|>\n", rendered);
            var chatExpected = DirectGreedy(model, tokenizer.Encode(rendered).ToArray(), 6);
            using (var response = await http.PostAsJsonAsync("/v1/chat/completions", new
            {
                model = "tiny-falcon3", max_tokens = 6, temperature = 0, logprobs = true,
                messages = new object[] { new { role = "system", content = "Be brief." }, new { role = "user", content = "The river flows" } },
            }))
            {
                Assert.Equal(200, (int)response.StatusCode);
                var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
                Assert.Equal(tokenizer.Encode(rendered).Count, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
                var choice = body.GetProperty("choices")[0];
                int completionTokens = body.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
                Assert.Equal(tokenizer.Decode(chatExpected.Take(completionTokens).ToArray(), skipSpecialTokens: true), choice.GetProperty("message").GetProperty("content").GetString());
                Assert.Equal(chatExpected.Length, completionTokens);
            }
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    /// <summary>Greedy continuation by a plain loop over a stand-alone cache (not the runtime the server uses).</summary>
    static int[] DirectGreedy(DecoderModel model, int[] ids, int maxNewTokens)
    {
        using var cache = new DenseKvCache(model, ids.Length + maxNewTokens);
        var logits = new float[model.Shape.VocabSize];
        var output = new List<int>();
        model.Forward([new SequenceChunk(ids, 0, cache)], logits);
        while (true)
        {
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            output.Add(next);
            if (next == model.EosTokenId || output.Count == maxNewTokens) return output.ToArray();
            model.Forward([new SequenceChunk(new[] { next }, cache.Length, cache)], logits);
        }
    }

    [Fact]
    public void A_llama_gguf_gives_its_bos_and_eos_texts_to_the_chat_template()
    {
        // Llama 3's template writes bos_token itself; from a GGUF those texts are the tokens of its bos/eos ids.
        string path = GgufOf("tiny-llama3");
        using var model = ModelHost.LoadModel(path);
        var description = ModelHost.Describe(model, path);
        Assert.Equal("<|endoftext|>", description.BosToken);
        Assert.Equal("<|endoftext|>", description.EosToken);
    }

    [Fact]
    public void The_gguf_default_pre_tokenizer_splits_as_falcons_on_common_text()
    {
        // llama.cpp's "default" regexes isolate punctuation runs, GPT-2 words, digit runs and then groups of three
        // digits: on this text (all ids inside the cut vocabulary) that is what Falcon's own tokenizer does.
        string path = GgufOf("tiny-falcon3");
        using var model = ModelHost.LoadModel(path);
        var tokenizer = ModelHost.LoadTokenizer(model.Source, path)!;
        Assert.Equal(4096, tokenizer.VocabSize);
        var full = Harpia.Tokenization.HfTokenizer.Parse(File.ReadAllBytes(Fixtures.Path_("falcon", "tokenizer.json")), "falcon");
        const string common = "the man is in the house, and on the car: 20045 (it's here) and 12 more";
        var ids = full.Encode(common);
        Assert.All(ids, id => Assert.InRange(id, 0, 4095)); // precondition: all in the cut vocabulary
        Assert.Equal(ids, tokenizer.Encode(common));
        Assert.Equal(common, tokenizer.Decode(tokenizer.Encode(common).ToArray()));
    }
}

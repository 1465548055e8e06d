using System.Text.Json;
using Harpia.Models;
using Harpia.Models.Llama;
using Xunit.Abstractions;

namespace Harpia.Tests.Models;

/// <summary>
/// The Llama architecture against the float64 reference in ../shared/fixtures/models/tiny-llama3 and tiny-falcon3,
/// from both the Hugging Face safetensors and llama.cpp's GGUF (q/k rows permuted, rope_freqs.weight): last logits
/// within 2e-3 max-abs, top-1 equal at every prompt position, the greedy continuation exact with the KV cache.
/// </summary>
public class LlamaGoldenTests(ITestOutputHelper output)
{
    public const float Tolerance = 2e-3f;

    public sealed record GoldenPrompt(int[] Ids, int[] GreedyNext8, int[] ArgmaxPerPosition, float[] LastLogits);

    public static IReadOnlyList<GoldenPrompt> Golden(string model) => Golden(model, "last_logits_file");

    /// <summary>The golden prompts, with the logits of <paramref name="logitsKey"/> or of a file name pattern "llamacpp-f32".</summary>
    public static IReadOnlyList<GoldenPrompt> Golden(string model, string logitsKey)
    {
        string dir = Fixtures.Model(model);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "golden.json")));
        var result = new List<GoldenPrompt>();
        int index = 0;
        foreach (var p in doc.RootElement.GetProperty("prompts").EnumerateArray())
        {
            int[] Ints(string key) => p.GetProperty(key).EnumerateArray().Select(e => e.GetInt32()).ToArray();
            string file = logitsKey == "last_logits_file" ? p.GetProperty(logitsKey).GetString()! : $"{logitsKey}-p{index}-last-logits.f32";
            result.Add(new GoldenPrompt(Ints("ids"), Ints("greedy_next_8"), Ints("argmax_per_position"), ReadF32(Path.Combine(dir, file))));
            index++;
        }
        return result;
    }

    public static float[] ReadF32(string path) => GoldenChecks.ReadF32(path);

    public static double[] GoldenInverseFrequencies(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Fixtures.Model(model), "golden.json")));
        return doc.RootElement.GetProperty("rope_inv_freq").EnumerateArray().Select(e => e.GetDouble()).ToArray();
    }

    /// <summary>"tiny-llama3" (the safetensors folder) or "tiny-llama3/model-f32.gguf".</summary>
    public static string ModelPath(string name) => Fixtures.Model(name);
    public static string GoldenModel(string name) => name.Split('/')[0];

    public static TheoryData<string> Models => new() { "tiny-llama3", "tiny-llama3/model-f32.gguf", "tiny-falcon3", "tiny-falcon3/model-f32.gguf" };

    public static float[] FullPass(ICausalLM model, int[] ids, bool allLogits = false) => GoldenChecks.FullPass(model, ids, allLogits);

    static IEnumerable<GoldenChecks.Prompt> Checks(string name) =>
        Golden(GoldenModel(name)).Select(p => new GoldenChecks.Prompt(p.Ids, p.GreedyNext8, p.ArgmaxPerPosition, p.LastLogits));

    [Theory]
    [MemberData(nameof(Models))]
    public void LastLogitsMatchGoldenOnEveryPrompt(string name)
    {
        // Through the registry, as every command and the server load models.
        using var model = ModelRegistry.Load(ModelPath(name));
        Assert.IsType<LlamaModel>(model);
        GoldenChecks.LastLogitsMatch(model, Checks(name), name, Tolerance, output);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void ArgmaxAtEveryPromptPositionMatchesGolden(string name)
    {
        using var model = LlamaModel.Load(ModelPath(name));
        GoldenChecks.ArgmaxAtEveryPositionMatches(model, Checks(name));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyNext8IsExactWithTheKvCache(string name)
    {
        using var model = LlamaModel.Load(ModelPath(name));
        GoldenChecks.GreedyNext8IsExactWithTheKvCache(model, Checks(name));
    }

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-falcon3")]
    public void BatchedSequencesEqualSeparatePasses(string name)
    {
        // Two prompts of different lengths in one forward: each row must equal its own single-sequence pass.
        using var model = LlamaModel.Load(ModelPath(name));
        var prompts = Golden(name);
        int vocab = model.Shape.VocabSize;
        var a = new DenseKvCache(model, 64);
        var b = new DenseKvCache(model, 64);
        var logits = new float[2 * vocab];
        model.Forward([new SequenceChunk(prompts[0].Ids, 0, a), new SequenceChunk(prompts[1].Ids, 0, b)], logits);
        Assert.True(FalconGoldenTests.MaxAbs(logits.AsSpan(0, vocab), prompts[0].LastLogits) < Tolerance);
        Assert.True(FalconGoldenTests.MaxAbs(logits.AsSpan(vocab, vocab), prompts[1].LastLogits) < Tolerance);
    }

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-falcon3")]
    public void RotaryInverseFrequenciesMatchGoldenFromConfig(string name)
    {
        var golden = GoldenInverseFrequencies(name);
        var ours = LlamaConfig.FromJsonFile(Fixtures.Model(name)).RotaryInverseFrequencies();
        Assert.Equal(golden.Length, ours.Length);
        for (int i = 0; i < golden.Length; i++)
            Assert.True(Math.Abs(ours[i] - golden[i]) <= 1e-12 * Math.Abs(golden[i]), $"{name}: inv_freq[{i}] = {ours[i]:R}, golden {golden[i]:R}");
    }

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-falcon3")]
    public void RotaryInverseFrequenciesFromGgufMatchGoldenToF32(string name)
    {
        // The GGUF carries llama3 scaling as f32 divisors (rope_freqs.weight), so agreement is to f32 precision.
        var golden = GoldenInverseFrequencies(name);
        using var gguf = Harpia.Formats.GgufFile.Open(Path.Combine(Fixtures.Model(name), "model-f32.gguf"));
        var config = LlamaConfig.FromGguf(gguf);
        Assert.Equal(name == "tiny-llama3", config.RopeFreqFactors is not null);
        Assert.True(config.RotaryInterleaved);
        var ours = config.RotaryInverseFrequencies();
        for (int i = 0; i < golden.Length; i++)
            Assert.True(Math.Abs(ours[i] - golden[i]) <= 1e-6 * Math.Abs(golden[i]), $"{name}: inv_freq[{i}] = {ours[i]:R}, golden {golden[i]:R}");
    }

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-falcon3")]
    public void GgufQkRowsAreTheSafetensorsRowsPermutedAsLlamaCppDoes(string name)
    {
        // llama.cpp's converter permutes q/k rows for interleaved rotary; the f32 GGUF holds the bf16 values exactly,
        // so the documented row order must map every row bit for bit.
        using var hf = LlamaModel.Load(Fixtures.Model(name));
        using var gg = LlamaModel.Load(Path.Combine(Fixtures.Model(name), "model-f32.gguf"));
        var c = hf.Config;
        var qOrder = LlamaWeights.InterleavedRowOrder(c.NumHeads, c.HeadDim);
        var kOrder = LlamaWeights.InterleavedRowOrder(c.NumKvHeads, c.HeadDim);
        var a = new float[c.HiddenSize];
        var b = new float[c.HiddenSize];
        for (int layer = 0; layer < c.NumLayers; layer++)
            foreach (var (hfW, ggW, order) in new[]
            {
                (hf.Weights.Layers[layer].QProj.Weight, gg.Weights.Layers[layer].QProj.Weight, qOrder),
                (hf.Weights.Layers[layer].KProj.Weight, gg.Weights.Layers[layer].KProj.Weight, kOrder),
            })
                for (int r = 0; r < order.Length; r++)
                {
                    Harpia.Tensors.MatMul.DequantizeRow(ggW, r, a);
                    Harpia.Tensors.MatMul.DequantizeRow(hfW, order[r], b);
                    Assert.Equal(b, a);
                }
    }
}

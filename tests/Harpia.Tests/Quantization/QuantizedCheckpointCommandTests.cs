using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Cli.Commands;
using Harpia.Formats;
using Harpia.Models;
using Harpia.Planning;
using Harpia.Tests.Evaluation;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary><c>harpia inspect</c>, <c>plan --model</c> and <c>perplexity</c> on the GPTQ and bitsandbytes NF4 fixtures.</summary>
public class QuantizedCheckpointCommandTests(ITestOutputHelper output)
{
    private const string Gptq3 = "tiny-falcon-180b-gptq-3bit-128g-actorder_True", Gptq4 = "tiny-falcon-180b-gptq-4bit-128g-actorder_True",
        Gptq4NoGroups = "tiny-falcon-180b-gptq-4bit--1g-actorder_True", Nf4 = "tiny-falcon-180b-bnb-nf4-dq", Bf16 = "tiny-falcon-180b-h256";

    private static readonly string[] LinearStems = ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"];

    /// <summary>The parameters of the bf16 model the quantized fixtures were made from: every stored element.</summary>
    private static long Bf16Parameters()
    {
        using var source = SafetensorsCheckpoint.Open(Fixtures.Model(Bf16));
        return source.Tensors.Values.Sum(t => t.ElementCount);
    }

    [Fact]
    public void InspectShowsTheGptqMethodBitsGroupsActOrderAndEveryQuantizedWeight()
    {
        using var model = ModelRegistry.Load(Fixtures.Model(Gptq3));
        string text = InspectCommand.Describe(model, tensors: true);
        output.WriteLine(text);
        Assert.Contains("quantization: gptq (bits 3, group_size 128, desc_act true, sym true;", text);
        Assert.Contains("GPTQ 3-bit, group 128, act-order: 8 matrices, 1,376,256 weights", text);
        // Parameters are the model's (rows × cols of each linear), not the int32 words that store them.
        Assert.Contains($"parameters:   {Bf16Parameters():N0} ", text);
        Assert.Contains("in 8 matrices repacked at load", text);
        var line = text.Split('\n').Single(l => l.TrimStart().StartsWith("transformer.h.1.mlp.dense_4h_to_h ", StringComparison.Ordinal));
        Assert.Contains("[256, 1024]", line);
        Assert.Contains("group 128", line);
        double bpw = double.Parse(line.Split("bpw")[0].Split(' ', StringSplitOptions.RemoveEmptyEntries)[^1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(bpw, 3.0, 4.0); // 3-bit codes plus fp16 scales, 3-bit zeros per 128 inputs and the g_idx
        // The stored tensors are still listed with their own dtypes and shapes.
        Assert.Contains("transformer.h.1.mlp.dense_4h_to_h.qweight", text);

        using var noGroups = ModelRegistry.Load(Fixtures.Model(Gptq4NoGroups));
        string noGroupsText = InspectCommand.Describe(noGroups, tensors: false);
        // With one group per row act-order changes no scale, so the kernels need no activation gather: the config says it, the format does not.
        Assert.Contains("desc_act true", noGroupsText);
        Assert.Contains("GPTQ 4-bit, one group per row: 8 matrices", noGroupsText);
    }

    [Fact]
    public void InspectShowsTheBitsandbytesFormatAndBlock()
    {
        using var model = ModelRegistry.Load(Fixtures.Model(Nf4));
        string text = InspectCommand.Describe(model, tensors: true);
        output.WriteLine(text);
        Assert.Contains("quantization: bitsandbytes", text);
        Assert.Contains("bitsandbytes NF4, block 64, double-quantized absmax: 8 matrices, 1,376,256 weights", text);
        Assert.Contains($"parameters:   {Bf16Parameters():N0} ", text);
        var line = text.Split('\n').Single(l => l.TrimStart().StartsWith("transformer.h.0.self_attention.query_key_value ", StringComparison.Ordinal));
        Assert.Contains("[384, 256]", line);
        Assert.Contains("group 64", line);
    }

    [Fact]
    public void PlanOfAGptqFolderUsesTheBytesItStores()
    {
        var spec = ModelSpec.Resolve(Fixtures.Model(Gptq3));
        Assert.True(spec.IsStoredQuantized);
        Assert.Equal("GPTQ 3-bit g128 act-order", spec.StoredFormat);
        var precision = Assert.Single(Precision.For(spec));
        var size = precision.Weights(spec);

        // Independently: each linear's qweight + qzeros + scales + g_idx as the file's header gives them.
        using var file = SafetensorsFile.Open(Path.Combine(Fixtures.Model(Gptq3), "model.safetensors"));
        long linearBytes = file.Tensors.Values.Where(t => LinearStems.Any(s => t.Name.Contains(s + "."))).Sum(t => t.ByteLength);
        Assert.Equal(linearBytes, size.BytesByType["GPTQ"]);
        double linearBits = 8.0 * linearBytes / (2 * 688_128L);
        output.WriteLine($"{Gptq3}: linears {linearBits:F3} bits/weight; whole model {size.BitsPerWeight(spec.ParameterCount):F2}");
        Assert.InRange(linearBits, 3.0, 3.6);
        Assert.Equal(Bf16Parameters(), spec.ParameterCount);

        // 4-bit stores more than 3-bit; the no-group 4-bit file less than the 128-group one (fewer scales).
        long Linears(string name) { var s = ModelSpec.Resolve(Fixtures.Model(name)); return Precision.AsStored(s).Weights(s).BytesByType["GPTQ"]; }
        Assert.True(Linears(Gptq4) > linearBytes);
        Assert.True(Linears(Gptq4NoGroups) < Linears(Gptq4));

        var nf4 = ModelSpec.Resolve(Fixtures.Model(Nf4));
        Assert.Equal("bitsandbytes NF4 (double quant)", nf4.StoredFormat);
        double nf4Bits = 8.0 * Precision.AsStored(nf4).Weights(nf4).BytesByType["BNB_4BIT"] / (2 * 688_128L);
        Assert.InRange(nf4Bits, 4.1, 4.3); // 4-bit codes + an 8-bit absmax per 64 + fp32 per 256 absmax + the maps and quant state
    }

    [Fact]
    public void CliPlanOfAQuantizedFolderPlansItAsStored()
    {
        var (code, json, err) = Harpia("plan", "--model", Fixtures.Model(Gptq4NoGroups), "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(json);
        Assert.Contains("GPTQ 4-bit no groups act-order (as stored)", json);
        Assert.Equal(Bf16Parameters(), doc.RootElement.GetProperty("parameters").GetInt64());
        (code, _, err) = Harpia("plan", "--model", Fixtures.Model(Nf4), "--precision", "q4_k_m");
        Assert.NotEqual(0, code);
        Assert.Contains("a bitsandbytes checkpoint already quantized to bitsandbytes NF4 (double quant)", err);
    }

    [Fact]
    public void PerplexityReportsEachFormatsKlDivergenceFromTheOriginalWeights()
    {
        using var dir = new Fixtures.TempDir();
        // The quantized fixtures carry no tokenizer; the original's GGUF does (its 4,096-token vocabulary).
        string tokenizer = dir.File("tokenizer.json");
        using (var gguf = GgufFile.Open(EvaluationFixtures.Gguf("f32")))
            File.WriteAllText(tokenizer, GgufTokenizerJson.Build(gguf).ToJsonString());
        JsonObject Run(string model, string? reference)
        {
            var report = new StringWriter();
            Assert.Equal(0, PerplexityCommand.Run(new()
            {
                Model = model, Tokenizer = tokenizer, Reference = reference,
                File = EvaluationFixtures.TextPath, Context = 32, MaxWindows = 3, Json = true,
            }, new StringReader(""), report, interactive: false, default));
            var json = JsonNode.Parse(report.ToString())!.AsObject();
            output.WriteLine($"{model}: {json["weights_format"]} PPL {(double)json["perplexity"]!:F1}" +
                             (reference is null ? "" : $" KL {(double)json["kl_divergence_mean"]!:E3} same top {(double)json["same_top_percent"]!:F1}%"));
            Assert.True(double.IsFinite((double)json["perplexity"]!));
            return json;
        }

        // The GPTQ fixtures were made from other random weights than the bf16 model (their fp16 embeddings differ), so
        // they are scored on their own; the KL divergence needs a quantization of the original itself.
        foreach (var name in new[] { Gptq4, Gptq3, Gptq4NoGroups })
            Assert.StartsWith("GPTQ", (string)Run(Fixtures.Model(name), null)["weights_format"]!);

        // The NF4 fixture is exactly the bf16 model in NF4; GPTQ checkpoints of the bf16 model are written here at 4 and 3 bits.
        string original = EvaluationFixtures.Gguf("f32");
        var nf4 = Run(Fixtures.Model(Nf4), original);
        Assert.StartsWith("bitsandbytes NF4", (string)nf4["weights_format"]!);
        var (gptq4, _) = PackedCheckpoints.WriteGptq(Path.Combine(dir.Path, "g4"), 4, 128, sym: true, actOrder: true, seed: 4);
        var (gptq3, _) = PackedCheckpoints.WriteGptq(Path.Combine(dir.Path, "g3"), 3, 128, sym: true, actOrder: true, seed: 3);
        var four = Run(gptq4, original);
        var three = Run(gptq3, original);
        Assert.Equal("GPTQ 3-bit, group 128, act-order", (string)three["weights_format"]!);
        double klNf4 = (double)nf4["kl_divergence_mean"]!, kl4 = (double)four["kl_divergence_mean"]!, kl3 = (double)three["kl_divergence_mean"]!;
        Assert.True(klNf4 > 0 && kl4 > 0);
        // Fewer bits cost more: the 3-bit checkpoint is further from the original than the 4-bit one of the same groups.
        Assert.True(kl3 > kl4, $"3-bit KL {kl3} vs 4-bit {kl4}");
        Assert.True((double)four["same_top_percent"]! > 50, "a 4-bit quantization of the original mostly keeps its top token");
    }

    private static (int Code, string Out, string Err) Harpia(params string[] args) => HarpiaProcess.Run(args);
}

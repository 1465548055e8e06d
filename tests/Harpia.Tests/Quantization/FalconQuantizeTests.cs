using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Quantization;
using Harpia.Tests.Models;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>
/// <c>harpia quantize</c>'s library code on tiny-falcon-180b-h256 (bf16 safetensors): the files it writes run the
/// golden prompts as well as llama.cpp runs its own files of the same type, carry llama.cpp's metadata and
/// tokenizer, and quantizing on load gives the same model bit for bit.
/// </summary>
public unsafe class FalconQuantizeTests(ITestOutputHelper output)
{
    /// <summary>
    /// Top-1 equals golden's at the last position of every prompt. Error vs golden: per prompt no worse than 1.1 × the
    /// error Harpia gets on llama.cpp's file of the same type (same engine, so this compares the files), and over the
    /// prompts no worse than 1.1 × llama.cpp's own error on its own file. (Per prompt against llama.cpp-in-llama.cpp the
    /// bound does not hold for Q8_0 p2, 0.342 vs 0.298, although Harpia's Q8_0 file is byte-identical to llama.cpp's:
    /// that gap is the engines', not the file's.)
    /// </summary>
    [Theory]
    [InlineData("Q8_0")]
    [InlineData("Q4_K_M")]
    public void WrittenFileRunsTheGoldenPromptsAsWellAsLlamaCppsOwnFile(string type)
    {
        using var model = FalconModel.Load(QuantizedFiles.Gguf(type));
        using var theirFile = FalconModel.Load(Path.Combine(QuantizedFiles.Fixture, $"model-{type}.gguf"));
        var prompts = FalconGoldenTests.Golden("tiny-falcon-180b-h256");
        double oursSum = 0, llamaSum = 0;
        for (int p = 0; p < prompts.Count; p++)
        {
            byte[] raw = File.ReadAllBytes(Path.Combine(QuantizedFiles.Fixture, $"llamacpp-{type}-p{p}-last-logits.f32"));
            var llama = new float[raw.Length / 4];
            Buffer.BlockCopy(raw, 0, llama, 0, raw.Length);
            var ours = FalconGoldenTests.FullPass(model, prompts[p].Ids);
            float oursErr = FalconGoldenTests.MaxAbs(ours, prompts[p].LastLogits);
            float llamaErr = FalconGoldenTests.MaxAbs(llama, prompts[p].LastLogits);
            float theirFileErr = FalconGoldenTests.MaxAbs(FalconGoldenTests.FullPass(theirFile, prompts[p].Ids), prompts[p].LastLogits);
            output.WriteLine($"{type} p{p}: max-abs vs golden: Harpia on Harpia's file {oursErr:F4}, Harpia on llama.cpp's file {theirFileErr:F4}, llama.cpp on its file {llamaErr:F4}");
            Assert.Equal(prompts[p].ArgmaxPerPosition[^1], FalconGoldenTests.ArgMax(ours));
            Assert.True(oursErr <= 1.1f * theirFileErr, $"{type} p{p}: error {oursErr} vs {theirFileErr} on llama.cpp's file");
            oursSum += oursErr;
            llamaSum += llamaErr;
        }
        Assert.True(oursSum <= 1.1 * llamaSum, $"{type}: mean error {oursSum / prompts.Count} vs llama.cpp's {llamaSum / prompts.Count}");
    }

    [Theory]
    [InlineData("Q8_0")]
    [InlineData("Q4_K_M")]
    public void WrittenFileHasLlamaCppsMetadataTokenizerAndLayout(string type)
    {
        using var ours = GgufFile.Open(QuantizedFiles.Gguf(type));
        using var theirs = GgufFile.Open(Path.Combine(QuantizedFiles.Fixture, $"model-{type}.gguf"));
        Assert.Equal(3u, ours.Version);
        Assert.Equal(32u, ours.Metadata["general.alignment"]);
        foreach (var (key, value) in theirs.Metadata)
        {
            if (key == "general.name") continue;
            Assert.True(ours.Metadata.TryGetValue(key, out var mine), $"missing {key}");
            Assert.Equal(value.GetType(), mine.GetType());
            Assert.Equal(value, mine);
        }
        Assert.Equal(theirs.TensorOrder, ours.TensorOrder);
        foreach (var name in theirs.TensorOrder)
        {
            var a = theirs.Tensors[name];
            var b = ours.Tensors[name];
            Assert.Equal(a.Type, b.Type);
            Assert.Equal(a.Shape, b.Shape);
            // Q8_0 quantization is deterministic and Harpia's matches llama.cpp's bit for bit, so every byte — the
            // reordered fused QKV included — must equal llama.cpp's file; F32 norms are exact either way.
            if (type == "Q8_0" || a.Type == Harpia.Tensors.GgmlType.F32)
                Assert.True(new ReadOnlySpan<byte>(a.Data, (int)a.ByteLength).SequenceEqual(new ReadOnlySpan<byte>(b.Data, (int)b.ByteLength)), $"{name}: bytes differ from llama.cpp's");
        }
    }

    [Fact]
    public void QuantizeOnLoadGivesTheSameWeightsAndLogitsAsTheWrittenFile()
    {
        using var fromFile = FalconModel.Load(QuantizedFiles.Gguf("Q4_K_M"));
        using var onLoad = FalconModel.Load(QuantizedFiles.HfFolder, QuantizationScheme.Parse("q4_k_m"));
        static ReadOnlySpan<byte> Bytes(Harpia.Tensors.WeightMatrix w) => new(w.Data, (int)w.ByteLength);
        Assert.True(Bytes(fromFile.Weights.WordEmbeddings).SequenceEqual(Bytes(onLoad.Weights.WordEmbeddings)));
        Assert.Same(onLoad.Weights.WordEmbeddings, onLoad.Weights.LmHead);
        for (int i = 0; i < onLoad.Config.NumLayers; i++)
        {
            var a = fromFile.Weights.Layers[i];
            var b = onLoad.Weights.Layers[i];
            Assert.Equal(a.Dense4HToH.Weight.Type, b.Dense4HToH.Weight.Type);
            Assert.True(Bytes(a.Dense.Weight).SequenceEqual(Bytes(b.Dense.Weight)));
            Assert.True(Bytes(a.DenseHTo4H.Weight).SequenceEqual(Bytes(b.DenseHTo4H.Weight)));
            Assert.True(Bytes(a.Dense4HToH.Weight).SequenceEqual(Bytes(b.Dense4HToH.Weight)));
            // The file's fused QKV is reordered to [all q, all k, all v]; in memory it keeps the per-KV-group rows.
            var order = FalconQuantizer.GroupedQkvRowOrder(onLoad.Config);
            for (int r = 0; r < order.Length; r++)
                Assert.True(a.QueryKeyValue.Weight.Row(r).SequenceEqual(b.QueryKeyValue.Weight.Row(order[r])), $"layer {i} qkv row {r}");
        }
        Assert.Contains("on load", onLoad.Source.Tensors["transformer.h.0.mlp.dense_4h_to_h.weight"].FilePath);
        foreach (var prompt in FalconGoldenTests.Golden("tiny-falcon-180b-h256"))
            Assert.Equal(FalconGoldenTests.FullPass(fromFile, prompt.Ids), FalconGoldenTests.FullPass(onLoad, prompt.Ids));
    }

    [Fact]
    public void QuantizeOnLoadLeavesAlreadyQuantizedTensorsAlone()
    {
        string path = Path.Combine(QuantizedFiles.Fixture, "model-Q4_K_M.gguf");
        using var plain = FalconModel.Load(path);
        using var requantized = FalconModel.Load(path, QuantizationScheme.Q8_0);
        Assert.Equal(Harpia.Tensors.GgmlType.Q4_K, requantized.Weights.Layers[0].DenseHTo4H.Weight.Type);
        Assert.DoesNotContain(requantized.Source.Tensors.Values, t => t.FilePath.Contains("on load"));
    }

    // ---- bad inputs -----------------------------------------------------------------------------------------

    private static QuantizeRequest Request(string input, string output, bool force = false) =>
        new(input, output, QuantizationScheme.Q8_0) { Force = force, Threads = 1 };

    [Fact]
    public void MissingInputIsNamed()
    {
        var e = Assert.Throws<HarpiaException>(() => FalconQuantizer.WriteGguf(Request("/nonexistent/model", Path.Combine(QuantizedFiles.Root, "x.gguf"))));
        Assert.Contains("/nonexistent/model", e.Message);
        Assert.Contains("no such model", e.Message);
    }

    [Fact]
    public void OutputEqualToInputIsRefusedEvenWithForce()
    {
        string gguf = QuantizedFiles.Gguf("Q8_0");
        var e = Assert.Throws<HarpiaException>(() => FalconQuantizer.WriteGguf(Request(gguf, gguf, force: true)));
        Assert.Contains("same path as IN", e.Message);
        string shard = Path.Combine(QuantizedFiles.HfFolder, "model.safetensors");
        e = Assert.Throws<HarpiaException>(() => FalconQuantizer.WriteGguf(Request(QuantizedFiles.HfFolder, shard, force: true)));
        Assert.Contains("IN's own files", e.Message);
        Assert.True(File.Exists(Path.Combine(QuantizedFiles.Fixture, "model.safetensors")));
    }

    [Fact]
    public void ExistingOutputIsRefusedWithoutForce()
    {
        string existing = Path.Combine(QuantizedFiles.Root, "existing.gguf");
        File.WriteAllText(existing, "do not touch");
        var e = Assert.Throws<HarpiaException>(() => FalconQuantizer.WriteGguf(Request(QuantizedFiles.HfFolder, existing)));
        Assert.Contains(existing, e.Message);
        Assert.Contains("--force", e.Message);
        Assert.Equal("do not touch", File.ReadAllText(existing));
    }

    [Fact]
    public void FolderWithoutTokenizerIsRefusedWithAHint()
    {
        var e = Assert.Throws<HarpiaException>(() => FalconQuantizer.WriteGguf(Request(QuantizedFiles.Fixture, Path.Combine(QuantizedFiles.Root, "no-tok.gguf"))));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("--tokenizer", e.Message);
        Assert.False(File.Exists(Path.Combine(QuantizedFiles.Root, "no-tok.gguf")));
        Assert.False(File.Exists(Path.Combine(QuantizedFiles.Root, "no-tok.gguf.partial")));
    }
}

/// <summary>The quantize CLI's errors, read from a swapped Console.Error: process-wide, so run alone.</summary>
[Collection(ProcessWideStateCollection.Name)]
public class FalconQuantizeCliTests
{
    [Fact]
    public void CliReportsBadTypesAndMissingInputsWithOneLineAndNonZeroExit()
    {
        var stderr = new StringWriter();
        var saved = Console.Error;
        Console.SetError(stderr);
        int unknown, tgi, missing;
        try
        {
            unknown = Harpia.Cli.Program.Main(["quantize", QuantizedFiles.HfFolder, Path.Combine(QuantizedFiles.Root, "cli.gguf"), "--type", "Q9_K"]);
            tgi = Harpia.Cli.Program.Main(["quantize", QuantizedFiles.HfFolder, Path.Combine(QuantizedFiles.Root, "cli.gguf"), "--type", "awq"]);
            missing = Harpia.Cli.Program.Main(["quantize", "/nonexistent/in", Path.Combine(QuantizedFiles.Root, "cli.gguf"), "--type", "Q8_0"]);
        }
        finally { Console.SetError(saved); }
        string text = stderr.ToString();
        Assert.NotEqual(0, unknown);
        Assert.NotEqual(0, tgi);
        Assert.NotEqual(0, missing);
        Assert.Contains("error: --type Q9_K: unknown quantization type", text);
        Assert.Contains("error: --type awq: TGI's 'awq'", text);
        Assert.Contains("error: /nonexistent/in: no such model folder or GGUF file", text);
    }
}

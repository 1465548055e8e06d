using System.Text.Json.Nodes;
using Harpia.Formats;
using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Tensors;

namespace Harpia.Tests.Models;

/// <summary>Resident-memory measurements must not share the process with tests running in parallel.</summary>
[CollectionDefinition("Resident memory", DisableParallelization = true)]
public sealed class ResidentMemoryCollection;

[Collection("Resident memory")]
public class FalconLoadTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>Resident set size of this process, from /proc (Linux), or null elsewhere.</summary>
    private static long? ResidentBytes()
    {
        if (!File.Exists("/proc/self/status")) return null;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:"))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return null;
    }

    [Fact]
    public void SynthCheckpointIsMappedNotCopied()
    {
        // Falcon-40B's layout (new architecture, grouped KV, two norms, tied head) at a width whose files are
        // a few hundred MB: 65024 × 1024 embeddings plus 10 layers.
        var config = FalconConfig.Preset("falcon-40b") with { HiddenSize = 1024, NumHeads = 16, NumKvHeads = 2, FfnHiddenSize = 4096, NumLayers = 10 };
        using var dir = new Fixtures.TempDir();
        var written = FalconSynth.Write(config, dir.Path, seed: 42);
        Assert.True(written.TotalBytes > 300_000_000, $"{written.TotalBytes}");
        Assert.True(File.Exists(Path.Combine(dir.Path, "tokenizer.json")));
        Assert.Equal(written.Shards, Directory.GetFiles(dir.Path, "*.safetensors").Length);

        GC.Collect();
        long? before = ResidentBytes();
        using var model = FalconModel.Load(dir.Path);
        long? after = ResidentBytes();
        Assert.Equal(config, model.Config);
        Assert.All(model.Weights.Layers, l => Assert.Equal(GgmlType.BF16, l.DenseHTo4H.Weight.Type));
        if (before is long b && after is long a)
        {
            output.WriteLine($"resident memory grew by {(a - b) / 1e6:F1} MB loading {written.TotalBytes / 1e6:F0} MB of files");
            Assert.True(a - b < written.TotalBytes / 8, $"resident memory grew by {(a - b) / 1e6:F1} MB loading {written.TotalBytes / 1e6:F0} MB of files");
        }

        // It runs, and the random weights give finite logits.
        var logits = new float[config.VocabSize];
        model.Forward([new SequenceChunk(new[] { 11, 500, 64000 }, 0, new DenseKvCache(model, 8))], logits);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        Assert.True(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(logits) > 0);
    }

    [Fact]
    public void SynthIsDeterministicPerSeedAndRoughlyNormal()
    {
        var config = FalconConfig.Preset("falcon-7b") with { HiddenSize = 64, NumHeads = 4, NumLayers = 1, VocabSize = 300, FfnHiddenSize = 256 };
        using var d1 = new Fixtures.TempDir();
        using var d2 = new Fixtures.TempDir();
        FalconSynth.Write(config, d1.Path, seed: 1);
        FalconSynth.Write(config, d2.Path, seed: 1);
        foreach (var f in Directory.GetFiles(d1.Path, "*.safetensors"))
            Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(Path.Combine(d2.Path, Path.GetFileName(f))));
        using var model = FalconModel.Load(d1.Path);
        Assert.Equal(QkvLayout.PerKvGroup, model.Config.QkvLayout);
        Assert.Equal(1, model.Config.NumKvHeads);
        var w = model.Weights.Layers[0].DenseHTo4H.Weight;
        var row = new float[w.Cols];
        double sum = 0, sumSq = 0;
        for (int r = 0; r < w.Rows; r++)
        {
            MatMul.DequantizeRow(w, r, row);
            foreach (float v in row) { sum += v; sumSq += v * v; }
        }
        double n = (double)w.Rows * w.Cols, mean = sum / n, std = Math.Sqrt(sumSq / n - mean * mean);
        Assert.InRange(mean, -0.002, 0.002);
        Assert.InRange(std, 0.018, 0.022);
        Assert.All(model.Weights.Layers[0].InputLayernorm!.Weight, v => Assert.InRange(v, 0.8f, 1.2f));
    }

    [Fact]
    public void QuantizedGgufLoadsWithItsBlockTypesUntouched()
    {
        using var model = FalconModel.Load(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q8_0.gguf"));
        Assert.Equal(QkvLayout.Grouped, model.Config.QkvLayout);
        Assert.Equal(GgmlType.Q8_0, model.Weights.Layers[0].QueryKeyValue.Weight.Type);
        var entry = model.Source.Tensors["blk.0.attn_qkv.weight"];
        unsafe { Assert.True(model.Weights.Layers[0].QueryKeyValue.Weight.Data == entry.Data); } // the mapped bytes, not a copy
    }

    [Fact]
    public void MissingOrMisshapenTensorsAreNamed()
    {
        using var dir = new Fixtures.TempDir();
        var config = FalconConfig.Preset("falcon-40b") with { HiddenSize = 64, NumHeads = 8, NumKvHeads = 2, NumLayers = 1, VocabSize = 50, FfnHiddenSize = 128 };
        FalconSynth.Write(config, dir.Path);
        string configPath = Path.Combine(dir.Path, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        json["num_hidden_layers"] = 2;
        File.WriteAllText(configPath, json.ToJsonString());
        Assert.Contains("transformer.h.1.", Assert.Throws<InvalidModelFileException>(() => FalconModel.Load(dir.Path)).Message);
        json["num_hidden_layers"] = 1;
        json["ffn_hidden_size"] = 100;
        File.WriteAllText(configPath, json.ToJsonString());
        var e = Assert.Throws<InvalidModelFileException>(() => FalconModel.Load(dir.Path));
        Assert.Contains("dense_h_to_4h", e.Message);
        Assert.Contains("expected [100, 64]", e.Message);
    }

    [Fact]
    public void NonFalconInputsAreRefusedClearly()
    {
        using var dir = new Fixtures.TempDir();
        Assert.Contains("config.json", Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(dir.Path)).Message);
        Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(dir.File("nope")));
        var gguf = new Formats.GgufTestWriter().Add("general.architecture", GgufValueType.String, "llama").Build();
        File.WriteAllBytes(dir.File("m.gguf"), gguf);
        Assert.Contains("'llama' is not Falcon", Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(dir.File("m.gguf"))).Message);
    }
}

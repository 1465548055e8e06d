using System.Text.Json;
using Harpia.Models.Falcon;
using Harpia.Placement;
using Harpia.Runtime;
using Harpia.Server;

namespace Harpia.Tests.Placement;

/// <summary>The runtime builds its device map from the loaded model's real tensors, prints it, refuses bad maps, and /info shows it.</summary>
public class RuntimePlacementTests
{
    private static readonly string Tiny = Fixtures.Model("tiny-falcon-180b");
    private static readonly DeviceCapacity BigCpu = new(DeviceId.Cpu, 64L << 30, 0, "test");

    [Fact]
    public void The_footprint_of_a_loaded_model_is_its_tensors_bytes()
    {
        using var model = FalconModel.Load(Tiny);
        var f = ModelFootprint.FromFalcon("tiny", model.Config, model.Weights, sizeof(float));
        var w = model.Weights;
        var layer0 = w.Layers[0];
        long expected0 = layer0.QueryKeyValue.Weight.ByteLength + layer0.Dense.Weight.ByteLength + layer0.DenseHTo4H.Weight.ByteLength
            + layer0.Dense4HToH.Weight.ByteLength + 4L * (layer0.LnAttn!.Weight.Length * 2 + layer0.LnMlp!.Weight.Length * 2)
            + 4L * ((layer0.QueryKeyValue.Bias?.Length ?? 0) + (layer0.Dense.Bias?.Length ?? 0) + (layer0.DenseHTo4H.Bias?.Length ?? 0) + (layer0.Dense4HToH.Bias?.Length ?? 0));
        Assert.Equal(expected0, f.LayerBytes[0]);
        Assert.Equal(model.Config.NumLayers, f.Layers);
        Assert.Equal(w.WordEmbeddings.ByteLength, f.EmbeddingBytes);
        Assert.Equal(2.0 * model.Config.NumKvHeads * model.Config.HeadDim * 4, f.KvBytesPerTokenPerLayer);
    }

    [Fact]
    public void The_runtime_prints_the_map_it_built()
    {
        using var model = FalconModel.Load(Tiny);
        var log = new StringWriter();
        var map = ModelPlacement.Place(model, "tiny", null, 1024, 256, log, [BigCpu])!;
        Assert.Equal([DeviceId.Cpu], map.Devices);
        Assert.Contains("device map (auto; KV for 1,024 tokens, activations for 256 prefill tokens):", log.ToString());
        Assert.Contains($"CPU    embedding, layers 0–{model.Config.NumLayers - 1}, ln_f/lm_head", log.ToString());
    }

    [Fact]
    public void Layers_that_fit_nowhere_stay_on_disk_with_a_speed_warning()
    {
        using var model = FalconModel.Load(Tiny);
        var f = ModelFootprint.FromFalcon("tiny", model.Config, model.Weights, sizeof(float));
        // A CPU budget for the embedding, one layer, every layer's KV and both activation buffers: the rest goes to disk.
        long cpu = f.EmbeddingBytes + f.LayerBytes[0] + f.Layers * f.KvBytesPerLayer(64)
            + (f.LayerActivationBytesPerToken + f.HeadActivationBytesPerToken) * 16;
        var log = new StringWriter();
        var map = ModelPlacement.Place(model, "tiny", new PlacementRequest(MaxMemory: $"cpu={cpu}"), 64, 16, log, [BigCpu])!;
        Assert.Equal([(0, 0)], map.LayerRanges(DeviceId.Cpu));
        Assert.Equal([(1, f.Layers - 1)], map.LayerRanges(DeviceId.Disk));
        Assert.Equal(DeviceId.Disk, map.Head);
        Assert.Contains($"warning: {f.Layers - 1} layer(s)", log.ToString());
        Assert.Contains("stay on disk and are read from the checkpoint on every forward pass", log.ToString());
    }

    [Fact]
    public void Bad_placements_are_refused_before_anything_runs()
    {
        using var model = FalconModel.Load(Tiny);
        var e = Assert.Throws<HarpiaException>(() => ModelPlacement.Place(model, "tiny", new PlacementRequest(NumShard: 2), 64, 16, null, [BigCpu]));
        Assert.StartsWith("--num-shard 2: this machine has no GPU; Harpia runs on the CPU as one device", e.Message);
        // --num-shard 1 (TGI's default) on a CPU-only machine is the CPU.
        Assert.Equal([DeviceId.Cpu], ModelPlacement.Place(model, "tiny", new PlacementRequest(NumShard: 1), 64, 16, null, [BigCpu])!.Devices);

        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("map.json"), """{ "": "cpu", "transformer.h.0.mlp": "cpu" }""");
        e = Assert.Throws<HarpiaException>(() => ModelPlacement.Place(model, "tiny", new PlacementRequest(DeviceMap: dir.File("map.json")), 64, 16, null, [BigCpu]));
        Assert.Equal($"{dir.File("map.json")}: module 'transformer.h.0.mlp' is part of a layer; Harpia places whole modules (transformer.h.0)", e.Message);

        File.WriteAllText(dir.File("gpu.json"), """{ "": 0 }""");
        e = Assert.Throws<HarpiaException>(() => ModelPlacement.Place(model, "tiny", new PlacementRequest(DeviceMap: dir.File("gpu.json")), 64, 16, null, [BigCpu]));
        Assert.Equal($"{dir.File("gpu.json")}: module 'transformer.word_embeddings' is mapped to device 0, which does not exist (no GPU on this machine)", e.Message);

        e = Assert.Throws<HarpiaException>(() => ModelPlacement.Place(model, "tiny", new PlacementRequest(MaxMemory: "cpu=1KiB,disk=0"), 64, 16, null, [BigCpu]));
        Assert.Contains("does not fit", e.Message);
    }

    [Fact]
    public void Cpu_stand_ins_split_a_model_like_GPUs()
    {
        using var model = FalconModel.Load(Tiny);
        DeviceCapacity[] devices = [new(DeviceId.Gpu(0), 1L << 30, 0, "stand-in"), new(DeviceId.Gpu(1), 1L << 30, 0, "stand-in"), BigCpu];
        var map = ModelPlacement.Place(model, "tiny", new PlacementRequest(Sharded: true), 64, 16, null, devices)!;
        Assert.Equal([DeviceId.Gpu(0), DeviceId.Gpu(1)], map.Devices);
        Assert.Equal(DeviceId.Gpu(0), map.Embedding);
        Assert.Equal(DeviceId.Gpu(1), map.Head);
    }

    [Fact]
    public async Task Info_exposes_the_device_map()
    {
        var generator = ModelHost.OpenGenerator(Fixtures.Model("tiny-falcon-7b"), new GeneratorOptions { MaxBatchTotalTokens = 4096 });
        await using var app = HarpiaServer.Build(new ServerOptions { Port = 0, Hostname = "127.0.0.1" }, generator);
        try
        {
            await app.StartAsync();
            using var http = new HttpClient { BaseAddress = HarpiaServer.BoundAddress(app) };
            var info = JsonDocument.Parse(await http.GetStringAsync("/info")).RootElement;
            var map = info.GetProperty("device_map");
            Assert.Equal("auto", map.GetProperty("strategy").GetString());
            Assert.Equal(4096, map.GetProperty("max_batch_total_tokens").GetInt64());
            var devices = map.GetProperty("devices");
            Assert.Equal("cpu", devices[0].GetProperty("device").GetString());
            Assert.Equal("cpu", map.GetProperty("modules").GetProperty("lm_head").GetString());
            Assert.Equal("cpu", info.GetProperty("model_device_type").GetString());
            Assert.Equal(generator.Model.DeviceMap!.Usage[0].WeightBytes, devices[0].GetProperty("weights_bytes").GetInt64());
        }
        finally
        {
            await app.StopAsync();
            generator.Dispose();
        }
    }
}

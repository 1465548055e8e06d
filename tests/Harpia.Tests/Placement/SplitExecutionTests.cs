using System.Text.Json;
using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Models;
using Harpia.Placement;
using Harpia.Runtime;

namespace Harpia.Tests.Placement;

/// <summary>
/// Device maps executed: each part of the model runs on the backend of its device (CPU backends standing in for GPUs,
/// each with its own memory account; the CPU; the disk-offload backend), the residual stream is copied at every
/// device boundary, and the result is the single-device run bit for bit. Each device then holds exactly what its map
/// counts for it.
/// </summary>
public class SplitExecutionTests
{
    private static readonly DeviceCapacity[] Devices =
    [
        new(DeviceId.Gpu(0), 1L << 30, 0, "stand-in"), new(DeviceId.Gpu(1), 1L << 30, 0, "stand-in"),
        new(DeviceId.Gpu(2), 1L << 30, 0, "stand-in"), new(DeviceId.Cpu, 8L << 30, 0, "test"),
    ];
    private const int KvTokens = 256, PrefillTokens = 64;

    public static string ModelPath(string name) =>
        name == "harpia-tiny-falcon" ? Path.Combine(Fixtures.RepoRoot, "models", name) : Fixtures.Model(name);

    /// <summary>harpia-tiny-falcon: Falcon, 6 layers, tied head; tiny-falcon-180b: Falcon 40B/180B layout, 3 layers; tiny-falcon3 and tiny-llama3: the Llama architecture, 3 and 2 layers.</summary>
    public static TheoryData<string, string> Splits()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in new[] { "harpia-tiny-falcon", "tiny-falcon-180b", "tiny-falcon3", "tiny-llama3" })
            foreach (var layout in new[] { "1-way", "2-way", "3-way", "cpu-offload", "disk-offload" })
                data.Add(model, layout);
        return data;
    }

    /// <summary>The device of the embedding, of each layer and of the head under a named layout.</summary>
    public static (string Embedding, string[] Layers, string Head) Layout(string layout, int layers)
    {
        string[] Each(Func<int, string> f) => Enumerable.Range(0, layers).Select(f).ToArray();
        return layout switch
        {
            "1-way" => ("cpu", Each(_ => "cpu"), "cpu"),
            "2-way" => ("0", Each(i => i < layers / 2 ? "0" : "1"), "1"),
            "3-way" => ("0", Each(i => (i * 3 / layers).ToString()), "2"),
            "cpu-offload" => ("0", Each(i => i < layers / 2 ? "0" : "cpu"), "cpu"),
            // A GPU, the CPU, and the last layer and the head (a tied one: a second copy of the embedding) left on disk.
            "disk-offload" => ("0", Each(i => i == 0 ? "0" : i == layers - 1 ? "disk" : "cpu"), "disk"),
            _ => throw new ArgumentException(layout),
        };
    }

    public static string WriteMap(Fixtures.TempDir dir, ModuleNaming naming, (string Embedding, string[] Layers, string Head) layout)
    {
        var modules = new Dictionary<string, string> { [naming.Embedding] = layout.Embedding, [naming.FinalNorm] = layout.Head, [naming.OutputHead] = layout.Head };
        for (int i = 0; i < layout.Layers.Length; i++) modules[naming.Layer(i)] = layout.Layers[i];
        string file = dir.File("map.json");
        File.WriteAllText(file, JsonSerializer.Serialize(modules));
        return file;
    }

    private static ModuleNaming NamingOf(string model) => model.Contains("llama") || model.Contains("falcon3") ? ModuleNaming.Llama : ModuleNaming.Falcon;

    private static DecoderModel LoadSplit(string model, string layout, CpuBackend cpu, Fixtures.TempDir dir, TextWriter? log = null)
    {
        int layers = ModelRegistry.Load(ModelPath(model)) is var probe ? probe.Shape.Layers : 0;
        probe.Dispose();
        string map = WriteMap(dir, NamingOf(model), Layout(layout, layers));
        return ModelPlacement.Load(ModelPath(model), null, new PlacementRequest(DeviceMap: map), _ => (KvTokens, PrefillTokens), KvCacheDtype.F32,
            log, Devices, ModelPlacement.DefaultBackends(cpu, standIns: 3));
    }

    /// <summary>The logits of every prompt position, then 8 greedy tokens decoded one at a time through the KV cache.</summary>
    private static (float[] PromptLogits, int[] Greedy) Run(DecoderModel model)
    {
        int vocab = model.Shape.VocabSize;
        int[] prompt = [1, 17, 42, 7, 99, 3, 250, 11, 5, 64, 128, 33];
        using var cache = new DenseKvCache(model, KvTokens);
        var all = new float[prompt.Length * vocab];
        model.Forward([new SequenceChunk(prompt, 0, cache, AllLogits: true)], all);
        var greedy = new int[8];
        var step = new float[vocab];
        int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax((ReadOnlySpan<float>)all.AsSpan((prompt.Length - 1) * vocab, vocab));
        for (int i = 0; i < greedy.Length; i++)
        {
            greedy[i] = next;
            model.Forward([new SequenceChunk(new[] { next }, cache.Length, cache)], step);
            next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax((ReadOnlySpan<float>)step);
        }
        return (all, greedy);
    }

    /// <summary>
    /// Embeddings read the final-normed hidden rows (<see cref="DecoderModel.ForwardHidden"/>): on a split model they are
    /// computed on the head's device, the only one whose workspace holds head rows, and equal the single-device run.
    /// </summary>
    [Theory]
    [InlineData("harpia-tiny-falcon", "2-way")]
    [InlineData("harpia-tiny-falcon", "cpu-offload")]
    [InlineData("tiny-llama3", "3-way")]
    [InlineData("tiny-falcon3", "disk-offload")]
    public void A_split_model_computes_the_hidden_states_one_device_computes(string model, string layout)
    {
        int[] first = [1, 17, 42, 7, 99], second = [3, 250, 11];
        float[] Hidden(DecoderModel m)
        {
            using var a = new DenseKvCache(m, KvTokens);
            using var b = new DenseKvCache(m, KvTokens);
            var hidden = new float[(first.Length + 1) * m.Shape.HiddenSize];
            m.ForwardHidden([new SequenceChunk(first, 0, a, AllLogits: true), new SequenceChunk(second, 0, b)], hidden);
            return hidden;
        }
        float[] expected;
        using (var single = ModelRegistry.Load(ModelPath(model), ModelLoadOptions.On(new CpuBackend())))
            expected = Hidden(single);
        Assert.Contains(expected, v => v != 0);

        using var dir = new Fixtures.TempDir();
        using var split = LoadSplit(model, layout, new CpuBackend(), dir);
        Assert.Equal(expected, Hidden(split));
    }

    [Theory]
    [MemberData(nameof(Splits))]
    public void A_split_model_computes_what_one_device_computes(string model, string layout)
    {
        (float[] PromptLogits, int[] Greedy) expected;
        using (var single = ModelRegistry.Load(ModelPath(model), ModelLoadOptions.On(new CpuBackend())))
            expected = Run(single);

        using var dir = new Fixtures.TempDir();
        var cpu = new CpuBackend();
        var log = new StringWriter();
        using var split = LoadSplit(model, layout, cpu, dir, log);
        var plan = split.Devices.Plan!;
        var want = Layout(layout, split.Shape.Layers);
        Assert.Equal(want.Layers, plan.Layers.Select(d => d.ToString()));
        // Each device of the map is its own backend (the disk's shares the CPU's memory but streams its weights).
        Assert.Equal(plan.Devices.Count, split.Devices.Backends.Count);
        for (int i = 0; i < split.Shape.Layers; i++)
            Assert.Equal(want.Layers[i] switch { "cpu" => "cpu", "disk" => "disk", var g => $"cpu-standin:{g}" }, split.Devices.Layers[i].Name);
        Assert.Contains("device map (file;", log.ToString());

        var actual = Run(split);
        Assert.Equal(expected.Greedy, actual.Greedy);
        Assert.Equal(expected.PromptLogits, actual.PromptLogits);
    }

    [Theory]
    [InlineData("harpia-tiny-falcon", 2)]
    [InlineData("tiny-falcon3", 3)]
    public void Num_shard_splits_the_layers_over_that_many_devices_and_runs(string model, int shards)
    {
        (float[] PromptLogits, int[] Greedy) expected;
        using (var single = ModelRegistry.Load(ModelPath(model), ModelLoadOptions.On(new CpuBackend())))
            expected = Run(single);
        using var split = ModelPlacement.Load(ModelPath(model), null, new PlacementRequest(NumShard: shards), _ => (KvTokens, PrefillTokens),
            KvCacheDtype.F32, null, Devices, ModelPlacement.DefaultBackends(new CpuBackend(), standIns: 3));
        // TGI's --num-shard N: GPUs 0…N−1 only, balanced (each takes a contiguous share of the layers).
        Assert.Equal(Enumerable.Range(0, shards).Select(DeviceId.Gpu), split.Devices.Plan!.Devices);
        Assert.Equal(Enumerable.Range(0, shards).Select(i => $"cpu-standin:{i}"), split.Devices.Backends.Select(b => b.Name));
        var actual = Run(split);
        Assert.Equal(expected.Greedy, actual.Greedy);
        Assert.Equal(expected.PromptLogits, actual.PromptLogits);
    }

    [Theory]
    [InlineData("harpia-tiny-falcon", "3-way")]
    [InlineData("harpia-tiny-falcon", "disk-offload")]
    [InlineData("tiny-falcon3", "cpu-offload")]
    [InlineData("tiny-llama3", "3-way")]
    public void Each_device_holds_what_its_map_counts(string model, string layout)
    {
        using var dir = new Fixtures.TempDir();
        var cpu = new CpuBackend();
        using var split = LoadSplit(model, layout, cpu, dir);
        var plan = split.Devices.Plan!;
        int vocab = split.Shape.VocabSize;
        // A full prefill with every row's logits (the estimate's worst case) and KV for the map's token budget.
        using var cache = new DenseKvCache(split, KvTokens);
        var prompt = Enumerable.Range(1, PrefillTokens).ToArray();
        split.Forward([new SequenceChunk(prompt, 0, cache, AllLogits: true)], new float[PrefillTokens * vocab]);

        var memories = split.Devices.Backends.OfType<CpuBackend>().Select(b => b.Memory).Distinct().ToList();
        Assert.Equal(plan.Usage.Count(u => u.Device != DeviceId.Disk), memories.Count);
        foreach (var usage in plan.Usage.Where(u => u.Device != DeviceId.Disk))
        {
            var backend = usage.Device == DeviceId.Cpu ? cpu : split.Devices.Backends.OfType<CpuBackend>().Single(b => b.Name == $"cpu-standin:{usage.Device.Index}");
            var held = backend.Memory;
            Assert.Equal(usage.WeightBytes, held.WeightBytes);
            Assert.Equal(usage.KvBytes, held.KvBytes);
            // The logits rows the head device produces go to the caller's host buffer on the CPU (a GPU would hold them).
            long logits = plan.Head.MemoryDevice == usage.Device ? 4L * vocab * PrefillTokens : 0;
            Assert.Equal(usage.ActivationBytes - logits, held.ActivationBytes);
            Assert.True(held.TotalBytes <= usage.BudgetBytes, $"{usage.Device.Label} holds {held.TotalBytes} of a budget of {usage.BudgetBytes}");
        }
    }

    [Fact]
    public void Disk_layers_keep_no_weight_resident_and_read_it_from_the_file()
    {
        using var dir = new Fixtures.TempDir();
        var cpu = new CpuBackend();
        using var split = LoadSplit("harpia-tiny-falcon", "disk-offload", cpu, dir);
        var disk = split.Devices.Layers[^1];
        Assert.Equal("disk", disk.Name);
        Assert.True(((CpuBackend)disk).StreamsWeights);
        Assert.Same(cpu.Memory, ((CpuBackend)disk).Memory);
        var plan = split.Devices.Plan!;
        Assert.Equal(plan.Footprint.LayerBytes[^1] + plan.Footprint.FinalNormBytes + plan.Footprint.EmbeddingBytes,
            plan.Usage.Single(u => u.Device == DeviceId.Disk).WeightBytes);
        // The CPU's account holds the CPU layers' weights only; the disk layer's KV is in CPU memory.
        Assert.Equal(plan.Usage.Single(u => u.Device == DeviceId.Cpu).WeightBytes, cpu.Memory.WeightBytes);
    }

    [Fact]
    public void A_map_over_a_devices_max_memory_is_refused_naming_the_device_and_bytes()
    {
        using var dir = new Fixtures.TempDir();
        string map = WriteMap(dir, ModuleNaming.Falcon, Layout("2-way", 6));
        var e = Assert.Throws<HarpiaException>(() => ModelPlacement.Load(ModelPath("harpia-tiny-falcon"), null,
            new PlacementRequest(DeviceMap: map, MaxMemory: "1=1MiB"), _ => (KvTokens, PrefillTokens), KvCacheDtype.F32, null, Devices,
            ModelPlacement.DefaultBackends(new CpuBackend(), standIns: 3)));
        Assert.StartsWith($"{map}: GPU 1 is over its budget: it needs ", e.Message);
        Assert.Matches(@"\(weights [\d.]+ MB \+ KV [\d.]+ [KM]B \+ activations [\d.]+ [KM]B \+ reserve 0 B\) but has 1\.0 MB, short by [\d.]+ MB$", e.Message);
    }

    [Fact]
    public void A_map_naming_an_unknown_device_is_refused()
    {
        using var dir = new Fixtures.TempDir();
        var layout = Layout("2-way", 6);
        string map = WriteMap(dir, ModuleNaming.Falcon, layout with { Head = "5" });
        var e = Assert.Throws<HarpiaException>(() => ModelPlacement.Load(ModelPath("harpia-tiny-falcon"), null, new PlacementRequest(DeviceMap: map),
            _ => (KvTokens, PrefillTokens), KvCacheDtype.F32, null, Devices, ModelPlacement.DefaultBackends(new CpuBackend(), standIns: 3)));
        Assert.Equal($"{map}: module 'transformer.ln_f' is mapped to device 5, which does not exist (GPUs: 0, 1, 2)", e.Message);

        // A GPU the map may name but no backend runs (no GPU backend, no stand-in for it).
        map = WriteMap(dir, ModuleNaming.Falcon, layout);
        e = Assert.Throws<HarpiaException>(() => ModelPlacement.Load(ModelPath("harpia-tiny-falcon"), null, new PlacementRequest(DeviceMap: map),
            _ => (KvTokens, PrefillTokens), KvCacheDtype.F32, null, Devices, ModelPlacement.DefaultBackends(new CpuBackend(), standIns: 1)));
        Assert.Equal("the device map puts modules on GPU 1, but no GPU backend runs here (HARPIA_CPU_DEVICES=N stands N CPU devices in for GPUs)", e.Message);
    }

    [Fact]
    public void A_stand_in_refuses_an_allocation_past_its_budget()
    {
        var device = CpuBackend.StandIn(0, budgetBytes: 64 * 1024);
        var e = Assert.Throws<HarpiaException>(() => ModelRegistry.Load(ModelPath("harpia-tiny-falcon"), ModelLoadOptions.On(device)));
        Assert.Matches(@"^GPU 0 \(CPU stand-in\): a weight of [\d,]+ bytes would take it past its budget of 65,536 bytes \([\d,]+ in use: weights [\d,]+, KV 0, activations 0\)$", e.Message);
    }

    [Fact]
    public void The_llama_footprint_is_its_tensors_bytes_and_the_runtime_places_it()
    {
        using var model = (Harpia.Models.Llama.LlamaModel)ModelRegistry.Load(Fixtures.Model("tiny-falcon3"));
        var w = model.Weights;
        var f = ModelPlacement.Footprint(model, "tiny", KvCacheDtype.F16)!;
        var l0 = w.Layers[0];
        long expected0 = new[] { l0.QProj, l0.KProj, l0.VProj, l0.OProj, l0.GateProj, l0.UpProj, l0.DownProj }.Sum(l => l.Weight.ByteLength + 4L * (l.Bias?.Length ?? 0))
            + 4L * (l0.InputLayernorm.Length + l0.PostAttentionLayernorm.Length);
        Assert.Equal(expected0, f.LayerBytes[0]);
        Assert.Equal(w.TokenEmbeddings.ByteLength, f.EmbeddingBytes);
        Assert.Equal(w.LmHead.ByteLength, f.OutputHeadBytes);
        Assert.Equal(4L * w.FinalNorm.Length, f.FinalNormBytes);
        Assert.Equal(ModuleNaming.Llama, f.Naming);
        Assert.Equal(2.0 * model.Config.NumKvHeads * model.Config.HeadDim * 2, f.KvBytesPerTokenPerLayer);
        var map = ModelPlacement.Place(model, "tiny", null, 64, 16, null, [new(DeviceId.Cpu, 1L << 30, 0, "test")]);
        Assert.NotNull(map);
        Assert.Equal("cpu", map!.ToModuleDictionary()["model.layers.2"]);
    }
}

public class KvTokenBudgetTests
{
    [Theory]
    [InlineData(KvCacheDtype.F32)]
    [InlineData(KvCacheDtype.F16)]
    public void The_token_budget_is_what_the_generators_pool_holds_at_its_kv_dtype(KvCacheDtype dtype)
    {
        var shape = new ModelShape(Layers: 6, KvHeads: 2, HeadDim: 32, VocabSize: 8192, MaxPositions: 2048, HiddenSize: 256);
        long bytes = 10_000_000;
        var options = new GeneratorOptions { MaxKvCacheBytes = bytes, KvCacheDtype = dtype };
        var pool = Harpia.Runtime.KvCache.KvBlockPool.ForByteBudget(shape, options.KvBlockSize, bytes, dtype);
        Assert.Equal(pool.TokenCapacity, ModelHost.KvTokenBudget(shape, options));
        // Per token: 2 (K, V) × 6 layers × 2 KV heads × 32 × element size; whole 16-position blocks.
        long perBlock = 2L * 6 * 2 * 32 * KvCacheDtypes.BytesPerElement(dtype) * 16;
        Assert.Equal(bytes / perBlock * 16, ModelHost.KvTokenBudget(shape, options));
    }
}

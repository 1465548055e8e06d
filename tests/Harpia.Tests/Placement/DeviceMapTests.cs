using Harpia.Placement;
using Harpia.Planning;

namespace Harpia.Tests.Placement;

/// <summary>
/// Device maps for the real Falcon-180B config at Q4_K_M, checked against sizes computed here from llama.cpp's recipe
/// (not from the code under test), with the runtime's defaults: KV for 16,384 positions, activations for 4,096 prefill
/// tokens.
/// </summary>
public class DeviceMapTests
{
    private const long GiB = 1L << 30;

    // ---- Falcon-180B Q4_K_M, by hand ---------------------------------------------------------------------------
    // H = 14,848, F = 4H = 59,392, fused QKV width (232 + 2·8)·64 = 15,872, vocabulary 65,024, 80 layers, no biases,
    // two LayerNorms per layer (weight + bias, f32). Block bytes per 256 weights: Q4_K 144, Q5_K 176, Q6_K 210.
    // use_more_bits(i, 80): i < 10, i ≥ 70, or (i − 10) % 3 == 2.  attn_qkv Q6_K there, else Q4_K; ffn_down Q6_K for
    // i < 5, Q5_K where use_more_bits, else Q4_K; attn_output and ffn_up Q4_K. The tied embedding is Q8_0 (34 B / 32).
    private const long H = 14_848, F = 59_392, Qkv = 15_872 * H, Dense = H * H, Up = F * H, Down = F * H;
    private static long K(long elements, long blockBytes) => elements / 256 * blockBytes;
    private static readonly long Norms = 2 * 2 * H * 4;                                               //     237,568
    private static readonly long BaseLayer = K(Qkv, 144) + K(Dense, 144) + K(Up, 144) + K(Down, 144) + Norms; // 1,248,894,976
    private static readonly long MoreBitsLayer = BaseLayer + K(Qkv, 210) - K(Qkv, 144) + K(Down, 176) - K(Down, 144); // 1,419,884,544
    private static readonly long FirstLayers = BaseLayer + K(Qkv, 210) - K(Qkv, 144) + K(Down, 210) - K(Down, 144);   // 1,537,005,568
    private static bool MoreBits(int i) => i < 10 || i >= 70 || (i - 10) % 3 == 2;
    private static long Layer(int i) => i < 5 ? FirstLayers : MoreBits(i) ? MoreBitsLayer : BaseLayer;
    private const long Embedding = 65_024 * H / 32 * 34;                                               // 1,025,818,624
    private const long LnF = 2 * H * 4;                                                                 //       118,784
    // KV: K and V, 8 KV heads × 64, f16 = 2,048 bytes per position per layer; × 16,384 positions = 32 MiB a layer.
    private const long Kv = 2 * 8 * 64 * 2 * 16_384;                                                   //    33,554,432
    // Activations for 4,096 prefill tokens, f32, as the runner's workspace holds them: on a layers' device the residual
    // H and Falcon's scratch (normed H, output H, QKV, q = heads·d, k and v = 8·64 each, F) = 135,680 floats a token;
    // on the head's device the gathered rows H and the logits V.
    private const long LayerAct = 4 * (H + 2 * H + 15_872 + 232 * 64 + 2 * 8 * 64 + F) * 4_096;       // 2,222,981,120
    private const long HeadAct = 4 * (H + 65_024) * 4_096;                                             // 1,308,622,848

    private static long Layers(int first, int last) => Enumerable.Range(first, last - first + 1).Sum(i => Layer(i) + Kv);

    private static readonly ModelFootprint Falcon180B = ModelFootprint.FromSpec(
        ModelSpec.FromConfigFile(Fixtures.Path_("falcon", "config-falcon-180b.json")), Precision.Parse("q4_k_m"), kvBytesPerElement: 2);

    private static DeviceCapacity Gpu(int i, long bytes, long reserve = GiB) => new(DeviceId.Gpu(i), bytes, reserve, "CUDA context");
    private static DeviceCapacity Cpu(long bytes) => new(DeviceId.Cpu, bytes, 0, "none");

    private static DeviceMap Map(IEnumerable<DeviceCapacity> devices, string strategy = "auto", string? maxMemory = null, int? numShard = null,
        ModelFootprint? model = null) =>
        DeviceMapper.Build(model ?? Falcon180B, new DeviceMapSettings
        {
            Devices = devices.ToList(), Strategy = DeviceMapSettings.ParseStrategy(strategy).Strategy,
            MaxMemory = MaxMemory.Parse(maxMemory), NumShard = numShard, MaxBatchTotalTokens = 16_384, MaxBatchPrefillTokens = 4_096,
        });

    private static DeviceUsage On(DeviceMap map, DeviceId d) => map.Usage.Single(u => u.Device == d);

    private static void AssertLayers(DeviceMap map, DeviceId device, int first, int last)
    {
        Assert.Equal([(first, last)], map.LayerRanges(device));
    }

    [Fact]
    public void Layer_sizes_come_from_the_recipe()
    {
        Assert.Equal(80, Falcon180B.Layers);
        Assert.Equal(Enumerable.Range(0, 80).Select(Layer), Falcon180B.LayerBytes);
        Assert.Equal(Embedding, Falcon180B.EmbeddingBytes);
        Assert.Equal(LnF, Falcon180B.FinalNormBytes);
        Assert.Equal(0, Falcon180B.OutputHeadBytes);
        Assert.True(Falcon180B.TiedHead);
        Assert.Equal(108_362_723_328, Falcon180B.WeightBytes);   // the planner's 108.36 GB
        Assert.Equal(Kv, Falcon180B.KvBytesPerLayer(16_384));
    }

    // 4× A100 80 GiB, 1 GiB reserve each: everything fits on the GPUs, so "auto" balances. The best contiguous split
    // (checked over all C(79,3) = 79,079 splits below) is 19 / 21 / 21 / 19 layers:
    //   GPU 0: reserve + embedding + activations + layers 0–18   = 31,497,549,824
    //   GPU 1: reserve + activations + layers 19–39              = 31,425,087,488
    //   GPU 2: reserve + activations + layers 40–60              = 31,425,087,488
    //   GPU 3: reserve + activations + layers 61–79 + ln_f + a copy of the tied embedding for lm_head + head activations
    //                                                            = 32,220,686,336 (the largest)
    [Fact]
    public void Four_80GiB_GPUs_auto_balances_19_21_21_19()
    {
        var map = Map(Enumerable.Range(0, 4).Select(i => Gpu(i, 80 * GiB)));
        Assert.Equal(DeviceId.Gpu(0), map.Embedding);
        Assert.Equal(DeviceId.Gpu(3), map.Head);
        AssertLayers(map, DeviceId.Gpu(0), 0, 18);
        AssertLayers(map, DeviceId.Gpu(1), 19, 39);
        AssertLayers(map, DeviceId.Gpu(2), 40, 60);
        AssertLayers(map, DeviceId.Gpu(3), 61, 79);
        long[] expected =
        [
            GiB + Embedding + LayerAct + Layers(0, 18),
            GiB + LayerAct + Layers(19, 39),
            GiB + LayerAct + Layers(40, 60),
            GiB + LayerAct + Layers(61, 79) + LnF + Embedding + HeadAct,
        ];
        Assert.Equal([31_497_549_824, 31_425_087_488, 31_425_087_488, 32_220_686_336], expected);
        Assert.Equal(expected, map.Usage.Select(u => u.TotalBytes));
        Assert.Equal(Enumerable.Repeat(80 * GiB, 4), map.Usage.Select(u => u.BudgetBytes));
        Assert.True(map.FitsInMemory);

        // No other contiguous split has a smaller largest device.
        long best = long.MaxValue;
        var prefix = new long[81];
        for (int i = 0; i < 80; i++) prefix[i + 1] = prefix[i] + Layer(i) + Kv;
        for (int a = 1; a < 80; a++)
            for (int b = a + 1; b < 80; b++)
                for (int c = b + 1; c < 80; c++)
                {
                    long m = Math.Max(Math.Max(GiB + Embedding + LayerAct + prefix[a], GiB + LayerAct + prefix[b] - prefix[a]),
                        Math.Max(GiB + LayerAct + prefix[c] - prefix[b], GiB + LayerAct + prefix[80] - prefix[c] + LnF + Embedding + HeadAct));
                    best = Math.Min(best, m);
                }
        Assert.Equal(best, expected.Max());
    }

    // "sequential" fills GPU 0 first: 80 GiB = 85,899,345,920; reserve + embedding + activations = 4,322,541,568 leave
    // 81,576,804,352 for layers at 1.28–1.57 GB with their KV: layers 0–58 take 80,695,848,960, leaving 880,955,392,
    // less than layer 59 needs (1,282,449,408), so GPU 1 gets layers 59–79 and the head; GPUs 2 and 3 stay empty.
    [Fact]
    public void Sequential_fills_GPU_0_first()
    {
        var map = Map(Enumerable.Range(0, 4).Select(i => Gpu(i, 80 * GiB)), "sequential");
        AssertLayers(map, DeviceId.Gpu(0), 0, 58);
        AssertLayers(map, DeviceId.Gpu(1), 59, 79);
        Assert.Equal(DeviceId.Gpu(1), map.Head);
        Assert.Equal(80_695_848_960, Layers(0, 58));
        Assert.Equal(GiB + Embedding + LayerAct + Layers(0, 58), On(map, DeviceId.Gpu(0)).TotalBytes);
        Assert.Equal(1_282_449_408, Layer(59) + Kv);
        Assert.True(GiB + Embedding + LayerAct + Layers(0, 59) > 80 * GiB);
        Assert.Equal([DeviceId.Gpu(0), DeviceId.Gpu(1)], map.Devices);
    }

    // The guide's accelerate example: max_memory={0: "40GiB", 1: "40GiB", "cpu": "200GiB"} on 2× A100 80 GB.
    // 108 GB of weights do not fit in 2 × 40 GiB, so the GPUs fill in turn and the CPU takes the rest:
    //   GPU 0: 40 GiB = 42,949,672,960 ≥ reserve + embedding + activations + layers 0–26 = 42,099,124,224
    //          (+ layer 27 with its KV, 1,453,438,976, would be 43,552,563,200: too much)
    //   GPU 1: reserve + activations + layers 27–55 = 42,197,651,456 (+ layer 56, 1,282,449,408, would be 43,480,100,864)
    //   CPU:   layers 56–79 with their KV, activations, ln_f and its own copy of the tied embedding for lm_head
    //          = 37,901,170,688 ≤ 200 GiB
    [Fact]
    public void Two_GPUs_at_40GiB_and_the_CPU_as_in_the_guide()
    {
        var map = Map([Gpu(0, 80 * GiB), Gpu(1, 80 * GiB), Cpu(256 * GiB)], maxMemory: "0=40GiB,1=40GiB,cpu=200GiB");
        AssertLayers(map, DeviceId.Gpu(0), 0, 26);
        AssertLayers(map, DeviceId.Gpu(1), 27, 55);
        AssertLayers(map, DeviceId.Cpu, 56, 79);
        Assert.Equal(DeviceId.Gpu(0), map.Embedding);
        Assert.Equal(DeviceId.Cpu, map.Head);
        Assert.Equal(42_099_124_224, GiB + Embedding + LayerAct + Layers(0, 26));
        Assert.True(GiB + Embedding + LayerAct + Layers(0, 27) > 40 * GiB);
        Assert.Equal(42_197_651_456, GiB + LayerAct + Layers(27, 55));
        Assert.True(GiB + LayerAct + Layers(27, 56) > 40 * GiB);
        Assert.Equal(37_901_170_688, LayerAct + Layers(56, 79) + LnF + Embedding + HeadAct);
        Assert.Equal([42_099_124_224, 42_197_651_456, 37_901_170_688], map.Usage.Select(u => u.TotalBytes));
        Assert.Equal([40 * GiB, 40 * GiB, 200 * GiB], map.Usage.Select(u => u.BudgetBytes));
        Assert.Contains("GPU 0: embedding, layers 0–26", map.Summary());
        Assert.Contains("CPU: layers 56–79, ln_f/lm_head", map.Summary());
    }

    // One 24 GiB GPU (an RTX 4090) and 192 GB of RAM, llama.cpp's -ngl way: GPU 0 holds reserve + embedding +
    // activations + layers 0–13 = 24,743,323,648 of 25,769,803,776 (layer 14, 1,282,449,408, does not fit);
    // the CPU runs layers 14–79 and the head: 94,157,899,776.
    [Fact]
    public void One_24GiB_GPU_offloads_66_layers_to_the_CPU()
    {
        var map = Map([Gpu(0, 24 * GiB), Cpu(192_000_000_000)]);
        AssertLayers(map, DeviceId.Gpu(0), 0, 13);
        AssertLayers(map, DeviceId.Cpu, 14, 79);
        Assert.Equal(24_743_323_648, GiB + Embedding + LayerAct + Layers(0, 13));
        Assert.True(GiB + Embedding + LayerAct + Layers(0, 14) > 24 * GiB);
        Assert.Equal(94_157_899_776, LayerAct + Layers(14, 79) + LnF + Embedding + HeadAct);
        Assert.Equal([24_743_323_648, 94_157_899_776], map.Usage.Select(u => u.TotalBytes));
        Assert.Equal(66, map.LayerCountOn(DeviceId.Cpu));
    }

    // One DGX Spark: 128 GB of unified memory is one device; the planner's reserves are 1 GiB of CUDA context and
    // 6 GB for DGX OS. Everything lands on it: reserve 7,073,741,824 + weights 108,362,723,328 (the tied embedding
    // once) + KV 80 × 32 MiB = 2,684,354,560 + activations 2,222,981,120 + 1,308,622,848 = 121,652,423,680 ≤ 128e9.
    [Fact]
    public void One_DGX_Spark_holds_everything()
    {
        var map = Map([new DeviceCapacity(DeviceId.Gpu(0), 128_000_000_000, GiB + 6_000_000_000, "CUDA context + DGX OS")]);
        Assert.Equal([DeviceId.Gpu(0)], map.Devices);
        var u = On(map, DeviceId.Gpu(0));
        Assert.Equal(108_362_723_328, u.WeightBytes);
        Assert.Equal(80 * Kv, u.KvBytes);
        Assert.Equal(LayerAct + HeadAct, u.ActivationBytes);
        Assert.Equal(121_652_423_680, GiB + 6_000_000_000 + 108_362_723_328 + 80 * Kv + LayerAct + HeadAct);
        Assert.Equal(121_652_423_680, u.TotalBytes);
    }

    // With the CPU capped at 40 GiB and no GPU, what does not fit stays on disk: the CPU holds layers 0–k and keeps
    // the KV and activations of the disk layers too (they run on the CPU).
    [Fact]
    public void What_fits_nowhere_goes_to_disk_with_its_KV_on_the_CPU()
    {
        var map = Map([Cpu(256 * GiB)], maxMemory: "cpu=40GiB");
        Assert.True(map.UsesDisk);
        var cpu = On(map, DeviceId.Cpu);
        var disk = On(map, DeviceId.Disk);
        int onCpu = map.LayerCountOn(DeviceId.Cpu), onDisk = map.LayerCountOn(DeviceId.Disk);
        Assert.Equal(80, onCpu + onDisk);
        AssertLayers(map, DeviceId.Cpu, 0, onCpu - 1);
        Assert.Equal(80 * Kv, cpu.KvBytes);   // every layer's KV, the disk layers' too
        Assert.Equal(Embedding + Layers(0, onCpu - 1) - onCpu * Kv, cpu.WeightBytes);
        Assert.True(cpu.TotalBytes <= 40 * GiB);
        Assert.Equal(DeviceId.Disk, map.Head);
        Assert.Equal(Enumerable.Range(onCpu, onDisk).Sum(Layer) + LnF + Embedding, disk.WeightBytes);
        // One more layer on the CPU would have exceeded its budget (its KV is counted already).
        Assert.True(cpu.TotalBytes + Layer(onCpu) > 40 * GiB);
    }

    [Fact]
    public void Num_shard_uses_the_first_N_GPUs_and_refuses_more_than_exist()
    {
        var gpus = Enumerable.Range(0, 4).Select(i => Gpu(i, 80 * GiB)).ToList();
        var map = Map(gpus, numShard: 2);
        Assert.Equal([DeviceId.Gpu(0), DeviceId.Gpu(1)], map.Devices);
        Assert.Equal(80, map.LayerCountOn(DeviceId.Gpu(0)) + map.LayerCountOn(DeviceId.Gpu(1)));
        var e = Assert.Throws<HarpiaException>(() => Map(gpus, numShard: 5));
        Assert.Equal("--num-shard 5: this machine has 4 GPUs (0, 1, 2, 3)", e.Message);
    }

    [Fact]
    public void A_budget_that_cannot_hold_one_layer_is_refused_with_the_shortfall()
    {
        // GPU 1 at 3 GiB: reserve 1 GiB + activations 2.22 GB already exceed it before its first layer (27, 1.45 GB with KV).
        var e = Assert.Throws<HarpiaException>(() => Map([Gpu(0, 80 * GiB), Gpu(1, 80 * GiB), Cpu(256 * GiB)], maxMemory: "0=40GiB,1=3GiB"));
        Assert.StartsWith("GPU 1's budget of 3.22 GB cannot hold one decoder layer: transformer.h.27 needs 4.75 GB", e.Message);
        Assert.Contains("short by 1.53 GB", e.Message);
        Assert.Contains("--max-memory 1=", e.Message);
    }

    [Fact]
    public void A_model_that_fits_nowhere_names_what_is_left()
    {
        var e = Assert.Throws<HarpiaException>(() => Map([Gpu(0, 80 * GiB), Cpu(256 * GiB)], maxMemory: "0=80GiB,cpu=20GiB,disk=0"));
        Assert.Contains("does not fit: layers", e.Message);
        Assert.Contains("fit on no device", e.Message);
    }

    [Fact]
    public void Max_memory_names_devices_that_exist()
    {
        var e = Assert.Throws<HarpiaException>(() => Map([Gpu(0, 80 * GiB), Cpu(256 * GiB)], maxMemory: "0=40GiB,2=40GiB"));
        Assert.Equal("--max-memory: device 2 does not exist: this machine has 1 GPU (0)", e.Message);
        e = Assert.Throws<HarpiaException>(() => Map([Gpu(0, 80 * GiB)], maxMemory: "0=100GiB"));
        Assert.Contains("GPU 0 has only", e.Message);
    }

    // ---- map files ----

    private static DeviceMap FromFile(string json, IEnumerable<DeviceCapacity>? devices = null) =>
        DeviceMapper.Build(Falcon180B, new DeviceMapSettings
        {
            Devices = (devices ?? [Gpu(0, 80 * GiB), Gpu(1, 80 * GiB), Cpu(256 * GiB)]).ToList(),
            Strategy = DeviceMapStrategy.File, FileAssignments = DeviceMap.ParseFile(json, "map.json"), FileName = "map.json",
            MaxBatchTotalTokens = 16_384, MaxBatchPrefillTokens = 4_096,
        });

    [Fact]
    public void A_map_file_assigns_modules_and_prefixes_longest_first()
    {
        var map = FromFile("""{ "": 0, "transformer.h": 1, "transformer.h.79": "cpu", "lm_head": "cuda:0", "transformer.ln_f": "0" }""",
            [Gpu(0, 80 * GiB), Gpu(1, 160 * GiB), Cpu(256 * GiB)]);
        Assert.Equal(DeviceId.Gpu(0), map.Embedding);
        AssertLayers(map, DeviceId.Gpu(1), 0, 78);
        AssertLayers(map, DeviceId.Cpu, 79, 79);
        Assert.Equal(DeviceId.Gpu(0), map.Head);
        // The tied embedding is on GPU 0 with the head: stored once.
        Assert.Equal(Embedding + LnF, On(map, DeviceId.Gpu(0)).WeightBytes);
        Assert.Equal("0", map.ToModuleDictionary()["lm_head"]);
        Assert.Equal("cpu", map.ToModuleDictionary()["transformer.h.79"]);
    }

    [Theory]
    [InlineData("""{ "": 0, "transformer.h.80": 1 }""", "map.json: unknown module 'transformer.h.80' (this model has transformer.word_embeddings, transformer.h.0–79, transformer.ln_f, lm_head)")]
    [InlineData("""{ "": 0, "transformer.h.3.mlp": 1 }""", "map.json: module 'transformer.h.3.mlp' is part of a layer; Harpia places whole modules (transformer.h.3)")]
    [InlineData("""{ "transformer.h": 0, "lm_head": 0, "transformer.ln_f": 0 }""", "map.json: module 'transformer.word_embeddings' has no device")]
    [InlineData("""{ "": 0, "transformer.h.5": 3 }""", "map.json: module 'transformer.h.5' is mapped to device 3, which does not exist (GPUs: 0, 1)")]
    [InlineData("""{ "": 0, "lm_head": 1 }""", "map.json: transformer.ln_f and lm_head must be on one device (got 0 and 1)")]
    [InlineData("""{ "": "tpu" }""", "map.json: module '': 'tpu' is not a device (use a GPU index such as 0 or cuda:0, cpu or disk)")]
    [InlineData("""[0]""", "map.json: expected a JSON object of module name → device")]
    public void Bad_map_files_are_refused_by_name(string json, string message)
    {
        var e = Assert.Throws<HarpiaException>(() => FromFile(json));
        Assert.StartsWith(message, e.Message);
    }

    [Fact]
    public void A_map_file_over_a_budget_names_the_device_and_the_shortfall()
    {
        // Everything on GPU 0 (80 GiB): weights 108.4 GB alone are more.
        var e = Assert.Throws<HarpiaException>(() => FromFile("""{ "": 0 }"""));
        Assert.StartsWith("map.json: GPU 0 is over its budget: it needs 115.7 GB (weights 108.4 GB + KV 2.68 GB + activations 3.53 GB + reserve 1.07 GB) but has 85.90 GB, short by 29.75 GB", e.Message);
    }

    // ---- --max-memory and sizes ----

    [Theory]
    [InlineData("75GiB", 75L << 30)]
    [InlineData("80GB", 80_000_000_000)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("64KiB", 64L << 10)]
    [InlineData("300MB", 300_000_000)]
    [InlineData("10KB", 10_000)]
    [InlineData("8Gb", 1_000_000_000)]      // accelerate: a lower-case b after a decimal unit is bits
    [InlineData("1.5gib", 3L << 29)]
    [InlineData("1000", 1000)]
    public void Sizes_use_accelerates_units(string text, long bytes) => Assert.Equal(bytes, ByteSize.Parse(text, "--max-memory"));

    [Fact]
    public void Max_memory_parses_devices_and_refuses_bad_entries()
    {
        var m = MaxMemory.Parse("0=75GiB, 1=75GiB,cpu=200GiB,disk=1TB");
        Assert.Equal(75L << 30, m[DeviceId.Gpu(0)]);
        Assert.Equal(75L << 30, m[DeviceId.Gpu(1)]);
        Assert.Equal(200L << 30, m[DeviceId.Cpu]);
        Assert.Equal(1_000_000_000_000, m[DeviceId.Disk]);
        Assert.Equal("--max-memory: '0' is not DEVICE=SIZE (write e.g. 0=75GiB,1=75GiB,cpu=200GiB)", Assert.Throws<HarpiaException>(() => MaxMemory.Parse("0")).Message);
        Assert.Equal("--max-memory 0: 'lots' is not a memory size (write e.g. 75GiB, 80GB, 512MiB or a number of bytes)", Assert.Throws<HarpiaException>(() => MaxMemory.Parse("0=lots")).Message);
        Assert.Equal("--max-memory: device 0 is given twice", Assert.Throws<HarpiaException>(() => MaxMemory.Parse("0=1GB,cuda:0=2GB")).Message);
        Assert.Equal("--max-memory: 'gpu' is not a device (use a GPU index such as 0 or cuda:0, cpu or disk)", Assert.Throws<HarpiaException>(() => MaxMemory.Parse("gpu=1GB")).Message);
    }

    [Fact]
    public void Device_map_flag_values()
    {
        Assert.Equal(DeviceMapStrategy.Auto, DeviceMapSettings.ParseStrategy(null).Strategy);
        Assert.Equal(DeviceMapStrategy.Balanced, DeviceMapSettings.ParseStrategy("balanced").Strategy);
        Assert.Equal(DeviceMapStrategy.Sequential, DeviceMapSettings.ParseStrategy("Sequential").Strategy);
        Assert.Equal((DeviceMapStrategy.File, "my-map.json"), DeviceMapSettings.ParseStrategy("my-map.json"));
        Assert.StartsWith("--device-map: 'fastest' is not auto, balanced, sequential", Assert.Throws<HarpiaException>(() => DeviceMapSettings.ParseStrategy("fastest")).Message);
    }
}

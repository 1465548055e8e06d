using Harpia.Planning;

namespace Harpia.Tests.Planning;

public class ModelSpecTests
{
    private static ModelSpec Fixture(string name) =>
        ModelSpec.FromConfigJson(File.ReadAllText(Fixtures.Path_("falcon", $"config-{name}.json")), name);

    // Falcon-180B: H = 14,848, 232 heads of 64, 8 KV heads, 80 layers, vocab 65,024, F = 4H = 59,392, tied head, no bias.
    //   embedding            V·H             = 65,024 · 14,848          =     965,476,352
    //   per layer: qkv       H·(232+2·8)·64  = 14,848 · 15,872          =     235,667,456
    //              dense     H·H                                          =     220,463,104
    //              mlp       2·H·4H = 8·H²                                =   1,763,704,832
    //              ln_attn + ln_mlp (weight + bias) 4·H                   =          59,392
    //              layer total                                            =   2,219,894,784   × 80 = 177,591,582,720
    //   ln_f (weight + bias) 2·H                                          =          29,696
    //   total                                                             = 178,557,088,768
    [Fact]
    public void Falcon180B_parameter_count_matches_hand_arithmetic()
    {
        var m = Fixture("falcon-180b");
        long layer = 14_848L * 15_872 + 14_848L * 14_848 + 8L * 14_848 * 14_848 + 4 * 14_848;
        Assert.Equal(2_219_894_784L, layer);
        Assert.Equal(65_024L * 14_848 + 80 * layer + 2 * 14_848, m.ParameterCount);
        Assert.Equal(178_557_088_768L, m.ParameterCount);
        Assert.Equal((8, 64, 59_392, true), (m.KvHeads, m.HeadDim, m.FfnHidden, m.TiedHead));
    }

    // Falcon-40B: H = 8,192, 128 heads, 8 KV heads, 60 layers.
    //   embedding 65,024·8,192 = 532,676,608; qkv 8,192·(128+16)·64 = 75,497,472; dense 67,108,864;
    //   mlp 8·8,192² = 536,870,912; norms 4·8,192 = 32,768 → layer 679,510,016 × 60 = 40,770,600,960; ln_f 16,384.
    [Fact]
    public void Falcon40B_parameter_count_matches_hand_arithmetic()
    {
        var m = Fixture("falcon-40b");
        Assert.Equal(532_676_608L + 60 * 679_510_016L + 16_384, m.ParameterCount);
        Assert.Equal(41_303_293_952L, m.ParameterCount);
    }

    // Falcon-7B: H = 4,544, 71 heads of 64, multi_query (ONE KV head although num_kv_heads says 71), 32 layers,
    // one input_layernorm per layer (old architecture, parallel attention).
    //   embedding 65,024·4,544 = 295,469,056; qkv 4,544·(71+2)·64 = 21,229,568; dense 20,647,936;
    //   mlp 8·4,544² = 165,183,488; norm 2·4,544 = 9,088 → layer 207,070,080 × 32 = 6,626,242,560; ln_f 9,088.
    [Fact]
    public void Falcon7B_parameter_count_uses_one_kv_head_and_one_norm()
    {
        var m = Fixture("falcon-7b");
        Assert.Equal(1, m.KvHeads);
        Assert.Equal(1, m.NormsPerLayer);
        Assert.Equal(295_469_056L + 32 * 207_070_080L + 9_088, m.ParameterCount);
        Assert.Equal(6_921_720_704L, m.ParameterCount);
    }

    [Fact]
    public void Untied_head_adds_vocab_times_hidden()
    {
        string json = File.ReadAllText(Fixtures.Path_("falcon", "config-falcon-180b.json")).Replace("\"vocab_size\"", "\"tie_word_embeddings\": false, \"vocab_size\"");
        var m = ModelSpec.FromConfigJson(json);
        Assert.False(m.TiedHead);
        Assert.Equal(178_557_088_768L + 965_476_352L, m.ParameterCount);
    }

    [Fact]
    public void Old_key_names_n_head_n_layer_are_understood()
    {
        const string json = """{"model_type":"RefinedWebModel","n_embed":4544,"n_head":71,"n_layer":32,"vocab_size":65024,"multi_query":true,"parallel_attn":true,"bias":false}""";
        Assert.Equal(6_921_720_704L, ModelSpec.FromConfigJson(json).ParameterCount);
    }

    // KV cache = 2 · layers · kv heads · head dim · tokens · sequences · bytes.
    [Fact]
    public void Kv_cache_bytes_match_hand_arithmetic()
    {
        var m180 = Fixture("falcon-180b");
        Assert.Equal(81_920L, m180.KvElementsPerToken);                         // 2·80·8·64
        Assert.Equal(160L * 1024, m180.KvCacheBytes(1, 1, 2));                   // 160 KiB per token at f16
        Assert.Equal(320L * 1024 * 1024, m180.KvCacheBytes(2048, 1, 2));         // 2,048 tokens = 320 MiB
        Assert.Equal(4 * 320L * 1024 * 1024, m180.KvCacheBytes(2048, 4, 2));
        Assert.Equal(2L * 60 * 8 * 64 * 2048 * 2, Fixture("falcon-40b").KvCacheBytes(2048, 1, 2));
        Assert.Equal(2L * 32 * 1 * 64 * 2048 * 2, Fixture("falcon-7b").KvCacheBytes(2048, 1, 2));   // multi-query: 1 KV head
    }

    [Fact]
    public void Presets_are_the_embedded_real_configs()
    {
        Assert.Equal(178_557_088_768L, ModelSpec.FromPreset("falcon-180b").ParameterCount);
        Assert.Equal(41_303_293_952L, ModelSpec.FromPreset("FALCON-40B").ParameterCount);
        Assert.Equal(6_921_720_704L, ModelSpec.FromPreset("falcon-7b").ParameterCount);
        var e = Assert.Throws<HarpiaException>(() => ModelSpec.FromPreset("falcon-1t"));
        Assert.Contains("unknown model preset 'falcon-1t'", e.Message);
    }

    [Fact]
    public void Resolve_reads_a_model_folder_and_a_config_path()
    {
        var folder = Fixtures.Model("tiny-falcon-180b-h256");
        var fromFolder = ModelSpec.Resolve(folder);
        var fromFile = ModelSpec.Resolve(Path.Combine(folder, "config.json"));
        Assert.Equal(fromFolder.ParameterCount, fromFile.ParameterCount);
        // 4,096·256 + 2·(4·256 + 256·(8+4)·32 + 256² + 8·256²) + 2·256
        Assert.Equal(4_096L * 256 + 2 * (4 * 256 + 256L * 384 + 65_536 + 8 * 65_536) + 512, fromFolder.ParameterCount);
    }

    [Fact]
    public void From_gguf_metadata_dictionary()
    {
        var md = new Dictionary<string, object>
        {
            ["general.architecture"] = "falcon",
            ["falcon.embedding_length"] = 14_848u,
            ["falcon.block_count"] = 80u,
            ["falcon.attention.head_count"] = 232u,
            ["falcon.attention.head_count_kv"] = 8u,
            ["falcon.feed_forward_length"] = 59_392u,
            ["falcon.context_length"] = 2048u,
            ["tokenizer.ggml.tokens"] = Enumerable.Range(0, 65_024).Select(i => $"t{i}").ToArray(),
        };
        var m = ModelSpec.FromGgufMetadata(md, "falcon-180b.gguf");
        Assert.Equal(178_557_088_768L, m.ParameterCount);
        Assert.Equal(81_920L, m.KvElementsPerToken);

        md["falcon.attention.head_count_kv"] = 1u;
        md["falcon.embedding_length"] = 4_544u; md["falcon.block_count"] = 32u; md["falcon.attention.head_count"] = 71u;
        md["falcon.feed_forward_length"] = 18_176u;
        Assert.Equal(6_921_720_704L, ModelSpec.FromGgufMetadata(md).ParameterCount);   // 7B layout: one norm, MQA

        md.Remove("falcon.block_count");
        Assert.Contains("falcon.block_count", Assert.Throws<HarpiaException>(() => ModelSpec.FromGgufMetadata(md)).Message);
        md["falcon.block_count"] = "eighty";
        Assert.Contains("not an integer", Assert.Throws<HarpiaException>(() => ModelSpec.FromGgufMetadata(md)).Message);
        md["general.architecture"] = "mamba";
        Assert.Contains("mamba", Assert.Throws<HarpiaException>(() => ModelSpec.FromGgufMetadata(md)).Message);
    }

    [Fact]
    public void Gguf_file_gives_the_same_spec_as_its_config()
    {
        string dir = Fixtures.Model("tiny-falcon-180b-h256");
        var fromGguf = ModelSpec.Resolve(Path.Combine(dir, "model-Q4_K_M.gguf"));
        var fromConfig = ModelSpec.Resolve(Path.Combine(dir, "config.json"));
        Assert.Equal(fromConfig.ParameterCount, fromGguf.ParameterCount);
        Assert.Equal(fromConfig.Layers, fromGguf.Layers);
        Assert.Equal(fromConfig.KvHeads, fromGguf.KvHeads);
    }

    [Theory]
    [InlineData("fixtures/falcon/config-falcon-40b.json", "falcon-40b")]   // was "falcon" (the folder)
    [InlineData("models/falcon-40b/config.json", "falcon-40b")]
    [InlineData("models/falcon-40b/CONFIG.JSON", "falcon-40b")]
    [InlineData("somewhere/my-llama.json", "my-llama")]
    [InlineData("somewhere/config-.json", "config-")]
    public void A_config_file_is_named_by_its_folder_or_its_own_name(string path, string expected) =>
        Assert.Equal(expected, ModelSpec.NameForConfigFile(path));

    [Fact]
    public void Resolved_models_carry_a_useful_name()
    {
        Assert.Equal("falcon-40b", ModelSpec.Resolve(Fixtures.Path_("falcon", "config-falcon-40b.json")).Name);
        string dir = Fixtures.Model("tiny-falcon-180b-h256");
        Assert.Equal("tiny-falcon-180b-h256", ModelSpec.Resolve(dir).Name);
        Assert.Equal("tiny-falcon-180b-h256", ModelSpec.Resolve(Path.Combine(dir, "config.json")).Name);
        // GGUF: general.name (the file stem, "model-Q4_K_M", said nothing about the model).
        Assert.Equal("tiny-falcon-180b-h256", ModelSpec.Resolve(Path.Combine(dir, "model-Q4_K_M.gguf")).Name);
    }

    [Fact]
    public void A_quantized_gguf_is_planned_as_stored_and_a_float_one_at_every_precision()
    {
        string dir = Fixtures.Model("tiny-falcon-180b-h256");
        var q4 = ModelSpec.Resolve(Path.Combine(dir, "model-Q4_K_M.gguf"));
        Assert.True(q4.IsStoredQuantized);
        Assert.Equal("Q4_K_M", q4.StoredFormat);
        var only = Assert.Single(Precision.For(q4));
        Assert.Equal("as-stored", only.Id);
        Assert.Equal("Q4_K_M (as stored)", only.Label);
        // Sized from the file itself: every tensor's stored bytes.
        Assert.Equal(q4.Stored!.Values.Sum(t => t.Bytes), only.Weights(q4).Bytes);
        Assert.Equal("Q8_0", Assert.Single(Precision.For(ModelSpec.Resolve(Path.Combine(dir, "model-Q8_0.gguf")))).Label.Split(' ')[0]);

        var f32 = ModelSpec.Resolve(Path.Combine(dir, "model-f32.gguf"));
        Assert.False(f32.IsStoredQuantized);
        Assert.Equal("F32", f32.StoredFormat);
        Assert.Same(Precision.All, Precision.For(f32));
        Assert.Same(Precision.All, Precision.For(ModelSpec.FromPreset("falcon-7b")));
    }

    [Fact]
    public void Stored_format_falls_back_to_the_file_name_then_the_dominant_type()
    {
        var stored = new Dictionary<string, StoredTensor>
        {
            ["token_embd.weight"] = new(Harpia.Tensors.GgmlType.Q8_0, 100, 2),
            ["blk.0.ffn_up.weight"] = new(Harpia.Tensors.GgmlType.Q4_K, 300, 2),
            ["blk.0.attn_norm.weight"] = new(Harpia.Tensors.GgmlType.F32, 1000, 1),
        };
        Assert.Equal("Q4_K_M", ModelSpec.StoredFormatOf(15, "whatever", stored));
        Assert.Equal("Q5_K_M", ModelSpec.StoredFormatOf(null, "falcon-7b.q5_k_m", stored));
        Assert.Equal("Q8_0", ModelSpec.StoredFormatOf(null, "model-Q8_0-final", stored));
        Assert.Equal("BF16", ModelSpec.StoredFormatOf(null, "model-bf16", stored));   // not F16
        Assert.Equal("Q4_K", ModelSpec.StoredFormatOf(null, "weights", stored));
    }

    [Fact]
    public void Corrupt_gguf_is_a_clear_error()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("bad.gguf");
        File.WriteAllBytes(path, "GGUF\u0003\0\0\0garbage"u8.ToArray());
        var ex = Assert.ThrowsAny<HarpiaException>(() => ModelSpec.Resolve(path));
        Assert.Contains("bad.gguf", ex.Message);
    }

    [Theory]
    [InlineData("{", "not valid JSON")]
    [InlineData("[1,2]", "expected a JSON object")]
    [InlineData("""{"model_type":"falcon","num_attention_heads":8,"num_hidden_layers":2,"vocab_size":10}""", "missing field 'hidden_size'")]
    [InlineData("""{"model_type":"falcon","hidden_size":-256,"num_attention_heads":8,"num_hidden_layers":2,"vocab_size":10}""", "out of range")]
    [InlineData("""{"model_type":"falcon","hidden_size":250,"num_attention_heads":8,"num_hidden_layers":2,"vocab_size":10}""", "not a multiple")]
    [InlineData("""{"model_type":"falcon","hidden_size":"big","num_attention_heads":8,"num_hidden_layers":2,"vocab_size":10}""", "whole number")]
    [InlineData("""{"model_type":"gpt2","n_embd":768}""", "model_type 'gpt2' is not supported")]
    [InlineData("""{"model_type":"falcon","hidden_size":2000000000,"num_attention_heads":8,"num_hidden_layers":2,"vocab_size":10}""", "hidden size 2000000000 is out of range")]
    [InlineData("""{"model_type":"falcon","hidden_size":256,"num_attention_heads":8,"num_hidden_layers":2000000,"vocab_size":10}""", "layer count 2000000 is out of range")]
    public void Bad_configs_give_clear_errors(string json, string expected)
    {
        var e = Assert.Throws<HarpiaException>(() => ModelSpec.FromConfigJson(json, "my/config.json"));
        Assert.Contains("my/config.json", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Llama_style_config_counts_gated_mlp_and_untied_head()
    {
        // A Llama-2-7B-shaped config: 32 layers, H 4,096, F 11,008, vocab 32,000, untied.
        const string json = """{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_attention_heads":32,"num_key_value_heads":32,"num_hidden_layers":32,"vocab_size":32000}""";
        long layer = 4L * 4096 * 4096 + 3L * 4096 * 11008 + 2 * 4096;
        Assert.Equal(2L * 32000 * 4096 + 32 * layer + 4096, ModelSpec.FromConfigJson(json).ParameterCount);
        Assert.Equal(6_738_415_616L, ModelSpec.FromConfigJson(json).ParameterCount);
    }
}

using System.Text.Json.Nodes;
using Harpia.Models.Llama;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Tests.Models;

/// <summary>config.json of each model type, rope_scaling by transformers' definitions, refusals, and llama.cpp's type choices.</summary>
public class LlamaConfigTests
{
    private static JsonObject Base(string modelType = "llama") => new()
    {
        ["model_type"] = modelType, ["hidden_size"] = 256, ["num_attention_heads"] = 8, ["num_key_value_heads"] = 2,
        ["num_hidden_layers"] = 2, ["vocab_size"] = 4096, ["intermediate_size"] = 688,
    };

    private static LlamaConfig Parse(JsonObject c) => LlamaConfig.FromJson(c, "config.json");

    [Fact]
    public void TransformersDefaultsApplyWhereKeysAreOptional()
    {
        var c = Parse(Base());
        Assert.Equal(32, c.HeadDim);
        Assert.Equal(1e-6f, c.RmsNormEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Equal(2048, c.MaxPositions);
        Assert.False(c.TieWordEmbeddings);
        Assert.False(c.HasQkvBias);
        Assert.Equal((1, 2), (c.BosTokenId, c.EosTokenId));
        var noKv = Base();
        noKv.Remove("num_key_value_heads");
        Assert.Equal(8, Parse(noKv).NumKvHeads);
    }

    [Fact]
    public void Falcon3FixtureHasExplicitHeadDimWiderThanHidden()
    {
        var c = LlamaConfig.FromJsonFile(Fixtures.Model("tiny-falcon3"));
        Assert.Equal((192, 6, 64, 2), (c.HiddenSize, c.NumHeads, c.HeadDim, c.NumKvHeads));
        Assert.Equal(384, c.QueryWidth);
        Assert.Equal(1e-6f, c.RmsNormEps);
        Assert.Equal(1000042.0, c.RopeTheta);
    }

    [Fact]
    public void Qwen2HasQkvBiasesButNoOutputBias()
    {
        var j = Base("qwen2");
        j["tie_word_embeddings"] = true;
        var c = Parse(j);
        Assert.True(c.QkvBias);
        Assert.False(c.AttentionBias);
        Assert.True(c.HasQkvBias);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal("qwen2", c.GgufArchitecture);
    }

    [Fact]
    public void MistralIsLimitedToItsSlidingWindowAndWritesAsLlama()
    {
        var j = Base("mistral");
        j["max_position_embeddings"] = 32768;
        j["sliding_window"] = 4096;
        var c = Parse(j);
        Assert.Equal(4096, c.MaxPositions);
        Assert.Equal("llama", c.GgufArchitecture);
        j["sliding_window"] = null;
        Assert.Equal(32768, Parse(j).MaxPositions);
    }

    [Fact]
    public void Llama31ListsSeveralEosIds()
    {
        var j = Base();
        j["vocab_size"] = 128256;
        j["eos_token_id"] = new JsonArray(128001, 128008, 128009);
        var c = Parse(j);
        Assert.Equal(128001, c.EosTokenId);
        Assert.Equal([128001, 128008, 128009], c.EosTokenIds);
    }

    [Fact]
    public void LinearScalingDividesEveryFrequency()
    {
        var j = Base();
        j["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 4.0 };
        var c = Parse(j);
        var plain = LlamaConfig.DefaultInverseFrequencies(32, 10000);
        var scaled = c.RotaryInverseFrequencies();
        for (int i = 0; i < plain.Length; i++) Assert.Equal(plain[i] / 4, scaled[i], 15);
    }

    [Fact]
    public void DynamicNtkGrowsTheBaseOnlyPastTheTrainedContext()
    {
        var j = Base();
        j["max_position_embeddings"] = 1024;
        j["rope_scaling"] = new JsonObject { ["rope_type"] = "dynamic", ["factor"] = 2.0 };
        var c = Parse(j);
        Assert.True(c.RopeDependsOnLength);
        Assert.Equal(LlamaConfig.DefaultInverseFrequencies(32, 10000), c.RotaryInverseFrequencies(1024));
        // transformers: base · (factor · L / max − (factor − 1))^(d / (d − 2)), at L = 2048: base · 3^(32/30)
        var expected = LlamaConfig.DefaultInverseFrequencies(32, 10000 * Math.Pow(3, 32.0 / 30));
        var actual = c.RotaryInverseFrequencies(2048);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 15);
        Assert.True(actual[1] < LlamaConfig.DefaultInverseFrequencies(32, 10000)[1]);
    }

    [Fact]
    public void Llama3ScalingLeavesHighFrequenciesAndDividesLowOnes()
    {
        var c = LlamaConfig.FromJsonFile(Fixtures.Model("tiny-llama3"));
        Assert.Equal(RopeScalingType.Llama3, c.RopeScaling.Type);
        var plain = LlamaConfig.DefaultInverseFrequencies(32, 500000);
        var scaled = c.RotaryInverseFrequencies();
        Assert.Equal(plain[0], scaled[0]);                 // wavelength 2π < 8192/4: unchanged
        Assert.Equal(plain[^1] / 8, scaled[^1]);           // wavelength > 8192: divided by the factor
        var factors = c.GgufRopeFreqFactors()!;
        Assert.Equal(1f, factors[0]);
        Assert.Equal(8f, factors[^1]);
    }

    [Theory]
    [InlineData("hidden_act", "\"gelu\"", "hidden_act 'gelu'")]
    [InlineData("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "rope_scaling type 'yarn'")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "low_freq_factor")]
    [InlineData("rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 0.5}", "factor 0.5")]
    [InlineData("num_key_value_heads", "3", "grouped over 3")]
    [InlineData("model_type", "\"gpt2\"", "model_type 'gpt2'")]
    [InlineData("hidden_size", "\"big\"", "'hidden_size' is not a number")]
    [InlineData("partial_rotary_factor", "0.5", "partial_rotary_factor")]
    public void BadConfigsAreRefusedNamingTheKey(string key, string json, string expected)
    {
        var j = Base();
        j[key] = JsonNode.Parse(json);
        var e = Assert.ThrowsAny<HarpiaException>(() => Parse(j));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("config.json", e.Message);
    }

    [Fact]
    public void MissingShapeKeyIsNamed()
    {
        var j = Base();
        j.Remove("intermediate_size");
        Assert.Contains("'intermediate_size' is missing", Assert.ThrowsAny<HarpiaException>(() => Parse(j)).Message);
    }

    // ---- llama.cpp's per-tensor choices for the llama architecture -------------------------------------------

    private static GgmlType Type(QuantizationScheme s, string name, int layer, int layers = 32, long rowLength = 4096, int heads = 32, int kv = 8, bool tied = false) =>
        s.TypeForLlama(name, 2, rowLength, layer, layers, heads, kv, tied);

    [Fact]
    public void Q4KMOnLlama3_8BShapesFollowsLlamaCpp()
    {
        var s = QuantizationScheme.Q4_K_M;
        // use_more_bits over 32 layers: 0–3, 28–31 and every third from 6.
        int[] moreBits = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];
        for (int l = 0; l < 32; l++)
        {
            var expected = moreBits.Contains(l) ? GgmlType.Q6_K : GgmlType.Q4_K;
            Assert.Equal(expected, Type(s, $"blk.{l}.attn_v.weight", l));
            Assert.Equal(expected, Type(s, $"blk.{l}.ffn_down.weight", l, rowLength: 14336));
            Assert.Equal(GgmlType.Q4_K, Type(s, $"blk.{l}.attn_q.weight", l));
            Assert.Equal(GgmlType.Q4_K, Type(s, $"blk.{l}.ffn_gate.weight", l));
            Assert.Equal(GgmlType.Q4_K, Type(s, $"blk.{l}.attn_output.weight", l));
        }
        Assert.Equal(GgmlType.Q6_K, Type(s, "output.weight", 0));
        Assert.Equal(GgmlType.Q4_K, Type(s, "token_embd.weight", 0));
        Assert.Equal(GgmlType.Q6_K, Type(s, "token_embd.weight", 0, tied: true));
        Assert.Equal(GgmlType.F32, s.TypeForLlama("blk.0.attn_norm.weight", 1, 4096, 0, 32, 32, 8, false));
        Assert.Equal(GgmlType.F32, s.TypeForLlama("rope_freqs.weight", 1, 64, 0, 32, 32, 8, false));
    }

    [Fact]
    public void SeventyBLiftsAttnVAndOtherSchemesFollowLlamaCpp()
    {
        // 80 layers with grouped KV is llama.cpp's LLM_TYPE_70B: attn_v Q4_K → Q5_K.
        Assert.Equal(GgmlType.Q5_K, Type(QuantizationScheme.Q4_K_M, "blk.40.attn_v.weight", 40, layers: 80, rowLength: 8192, heads: 64));
        Assert.Equal(GgmlType.Q6_K, Type(QuantizationScheme.Q4_K_M, "blk.0.attn_v.weight", 0, layers: 80, rowLength: 8192, heads: 64));
        Assert.Equal(GgmlType.Q6_K, Type(QuantizationScheme.Q4_0, "output.weight", 0));
        Assert.Equal(GgmlType.Q8_0, Type(QuantizationScheme.Q8_0, "output.weight", 0));
        Assert.Equal(GgmlType.Q8_0, Type(QuantizationScheme.Q4_K_M, "output.weight", 0, rowLength: 4000)); // rows not whole 256-blocks
        Assert.Equal(GgmlType.Q4_K, Type(QuantizationScheme.Q2_K, "blk.5.attn_v.weight", 5));   // 4 queries per KV head
        Assert.Equal(GgmlType.Q3_K, Type(QuantizationScheme.Q2_K, "blk.5.attn_v.weight", 5, kv: 32));
        Assert.Equal(GgmlType.Q3_K, Type(QuantizationScheme.Q2_K, "blk.5.attn_output.weight", 5));
        Assert.Equal(GgmlType.Q5_K, Type(QuantizationScheme.Q3_K_M, "blk.1.ffn_down.weight", 1));
        Assert.Equal(GgmlType.Q4_K, Type(QuantizationScheme.Q3_K_M, "blk.2.ffn_down.weight", 2));
        Assert.Equal(GgmlType.Q4_K, Type(QuantizationScheme.Q3_K_M, "blk.2.attn_output.weight", 2));
        Assert.Equal(GgmlType.Q5_K, Type(QuantizationScheme.Q4_K_S, "blk.3.attn_v.weight", 3));
        Assert.Equal(GgmlType.Q5_K, Type(QuantizationScheme.Q4_K_S, "blk.3.ffn_down.weight", 3));
        Assert.Equal(GgmlType.Q4_K, Type(QuantizationScheme.Q4_K_S, "blk.4.ffn_down.weight", 4));
    }
}

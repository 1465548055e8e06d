using System.Text.Json.Nodes;
using Harpia.Models.Falcon;

namespace Harpia.Tests.Models;

public class FalconConfigTests
{
    private static FalconConfig Real(string name) => FalconConfig.FromJsonFile(Fixtures.Path_("falcon", $"config-{name}.json"));

    [Fact]
    public void Falcon7BIsMultiQueryWithOneLayerNorm()
    {
        var c = Real("falcon-7b");
        Assert.Equal((4544, 71, 1, 32, 64), (c.HiddenSize, c.NumHeads, c.NumKvHeads, c.NumLayers, c.HeadDim));
        Assert.False(c.NewDecoderArchitecture);
        Assert.Equal(1, c.NumLayerNormsInParallelAttn);
        Assert.True(c.AttentionAndMlpInParallel);
        Assert.Equal(4 * 4544, c.FfnHiddenSize);
        Assert.Equal(QkvLayout.PerKvGroup, c.QkvLayout);
        Assert.Equal((71 + 2) * 64, c.QkvSize);
        Assert.Equal(FalconConfig.Preset("falcon-7b") with { }, c with { });
    }

    [Theory]
    [InlineData("falcon-40b", 8192, 128, 8, 60)]
    [InlineData("falcon-180b", 14848, 232, 8, 80)]
    public void NewArchitectureModelsHaveGroupedKvAndTwoNorms(string name, int hidden, int heads, int kv, int layers)
    {
        var c = Real(name);
        Assert.Equal((hidden, heads, kv, layers, 64), (c.HiddenSize, c.NumHeads, c.NumKvHeads, c.NumLayers, c.HeadDim));
        Assert.True(c.NewDecoderArchitecture);
        Assert.Equal(2, c.NumLayerNormsInParallelAttn);
        Assert.False(c.Bias);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Equal(65024, c.VocabSize);
        Assert.Equal(FalconConfig.Preset(name), c);
    }

    private static JsonObject Base() => new()
    {
        ["model_type"] = "falcon", ["hidden_size"] = 64, ["num_attention_heads"] = 4, ["num_hidden_layers"] = 2, ["vocab_size"] = 100,
    };

    [Fact]
    public void OldRefinedWebKeysAndOptionalFieldsAreRead()
    {
        var rw = new JsonObject
        {
            ["model_type"] = "RefinedWeb", ["hidden_size"] = 64, ["n_head"] = 8, ["n_head_kv"] = 2, ["n_layer"] = 3, ["vocab_size"] = 100,
            ["bias"] = true, ["rope_theta"] = 500000.0, ["ffn_hidden_size"] = 96, ["layer_norm_epsilon"] = 1e-6, ["tie_word_embeddings"] = false,
        };
        var c = FalconConfig.FromJson(rw, "rw.json");
        Assert.True(c.NewDecoderArchitecture);
        Assert.Equal((8, 2, 3, 96), (c.NumHeads, c.NumKvHeads, c.NumLayers, c.FfnHiddenSize));
        Assert.True(c.Bias);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(1e-6f, c.LayerNormEpsilon);

        var classic = Base();
        classic["multi_query"] = false;
        classic["parallel_attn"] = false;
        var m = FalconConfig.FromJson(classic, "c.json");
        Assert.Equal((4, QkvLayout.PerHeadTriplet, false), (m.NumKvHeads, m.QkvLayout, m.AttentionAndMlpInParallel));
    }

    [Theory]
    [InlineData("alibi", "true", "ALiBi")]
    [InlineData("model_type", "\"llama\"", "not Falcon")]
    [InlineData("rope_scaling", "{\"type\":\"linear\",\"factor\":2}", "rope_scaling")]
    [InlineData("activation", "\"relu\"", "activation")]
    [InlineData("num_attention_heads", "5", "divisible")]
    [InlineData("hidden_size", "\"big\"", "not a number")]
    [InlineData("num_hidden_layers", "2.5", "not an integer")]
    public void UnsupportedOrInvalidConfigsAreRefusedByName(string key, string json, string expected)
    {
        var c = Base();
        c[key] = JsonNode.Parse(json);
        var e = Assert.ThrowsAny<HarpiaException>(() => FalconConfig.FromJson(c, "cfg.json"));
        Assert.Contains(expected, e.Message);
        Assert.Contains("cfg.json", e.Message);
    }

    [Fact]
    public void MissingKeysAreNamed()
    {
        var c = Base();
        c.Remove("vocab_size");
        Assert.Contains("vocab_size", Assert.ThrowsAny<HarpiaException>(() => FalconConfig.FromJson(c, "cfg.json")).Message);
    }

    [Fact]
    public void HuggingFaceJsonRoundTrips()
    {
        foreach (var name in new[] { "falcon-7b", "falcon-40b", "falcon-180b" })
        {
            var c = FalconConfig.Preset(name);
            Assert.Equal(c, FalconConfig.FromJson(c.ToHuggingFaceJson(), name));
        }
    }
}

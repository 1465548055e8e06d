using Harpia.Models;
using Harpia.Models.Falcon;

namespace Harpia.Tests.Models;

/// <summary>
/// Layouts no fixture covers (bias, sequential attention→MLP with post_attention_layernorm, per-head [q,k,v],
/// one norm with the new architecture, untied head): synth checkpoints of each must load, give finite logits that
/// depend on the context, and decode token by token exactly as one full pass.
/// </summary>
public class FalconVariantTests
{
    private static readonly FalconConfig Small = new()
    {
        HiddenSize = 32, NumHeads = 4, NumKvHeads = 1, NumLayers = 2, VocabSize = 40, FfnHiddenSize = 48,
        NewDecoderArchitecture = false, ParallelAttn = true, NumLayerNormsInParallelAttn = 1,
    };

    public static TheoryData<string> Variants => new() { "7b-bias", "classic-sequential", "classic-mha-parallel", "new-one-norm", "new-untied-bias" };

    private static FalconConfig Variant(string name) => name switch
    {
        "7b-bias" => Small with { Bias = true },
        "classic-sequential" => Small with { ParallelAttn = false },
        "classic-mha-parallel" => Small with { NumKvHeads = 4, QkvLayout = QkvLayout.PerHeadTriplet },
        "new-one-norm" => Small with { NewDecoderArchitecture = true, NumKvHeads = 2 },
        "new-untied-bias" => Small with { NewDecoderArchitecture = true, NumKvHeads = 2, NumLayerNormsInParallelAttn = 2, TieWordEmbeddings = false, Bias = true },
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void VariantLoadsAndDecodesIncrementallyLikeAFullPass(string name)
    {
        var config = Variant(name);
        using var dir = new Fixtures.TempDir();
        FalconSynth.Write(config, dir.Path, seed: 3);
        using var model = FalconModel.Load(dir.Path);
        Assert.Equal(config, model.Config);
        int[] ids = [1, 7, 3, 30, 12, 5];
        int vocab = config.VocabSize;
        var full = FalconGoldenTests.FullPass(model, ids, allLogits: true);
        Assert.All(full, v => Assert.True(float.IsFinite(v)));
        // Attention reads the context: the same last token after a different first token gives different logits.
        var a = FalconGoldenTests.FullPass(model, [5, 9]);
        var b = FalconGoldenTests.FullPass(model, [6, 9]);
        Assert.True(FalconGoldenTests.MaxAbs(a, b) > 1e-6f);

        var cache = new DenseKvCache(model, 16, initialCapacity: 1);
        var step = new float[vocab];
        for (int i = 0; i < ids.Length; i++)
        {
            model.Forward([new SequenceChunk(new[] { ids[i] }, i, cache)], step);
            Assert.True(FalconGoldenTests.MaxAbs(step, full.AsSpan(i * vocab, vocab)) < 1e-5f, $"{name}: position {i}");
        }

        // And the logits are those of a plain float64 transcription of modeling_falcon.py.
        var reference = FalconReference.LastLogits(model.Source, config, ids);
        var last = full.AsSpan((ids.Length - 1) * vocab, vocab);
        for (int i = 0; i < vocab; i++) Assert.True(Math.Abs(reference[i] - last[i]) < 1e-4, $"{name}: logit {i}: {last[i]} vs {reference[i]}");

        if (config.Bias) Assert.NotNull(model.Weights.Layers[0].QueryKeyValue.Bias);
        if (!config.TieWordEmbeddings) Assert.NotSame(model.Weights.WordEmbeddings, model.Weights.LmHead);
    }

    [Theory]
    [InlineData("tiny-falcon-7b")]
    [InlineData("tiny-falcon-180b")]
    public void TheReferenceItselfMatchesTheGoldenLogits(string name)
    {
        var config = FalconConfig.FromJsonFile(Fixtures.Model(name));
        using var source = Harpia.Formats.SafetensorsCheckpoint.Open(Fixtures.Model(name));
        var prompt = FalconGoldenTests.Golden(name)[0];
        var reference = FalconReference.LastLogits(source, config, prompt.Ids);
        for (int i = 0; i < reference.Length; i++) Assert.True(Math.Abs(reference[i] - prompt.LastLogits[i]) < 1e-4, $"logit {i}");
    }
}

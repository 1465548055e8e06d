using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Quantization;

namespace Harpia.Tests.Models;

/// <summary>
/// Load-time repacking of a real model (<see cref="FalconModel"/> with <see cref="RepackedWeights"/>, the source pages
/// of the mapped GGUF released as each matrix is packed) on every x86 CPU with AVX2: where AVX-VNNI is missing the
/// tiled kernels run on its exact emulation. Prefill and decode of the repacked model give the logits of the same
/// file loaded without repacking.
/// </summary>
[Trait("Category", "Simd")]
public class FalconRepackTests
{
    [SkippableTheory]
    [InlineData("Q8_0")]
    [InlineData("Q4_K_M")]
    public void RepackedModelGivesTheLogitsOfTheRowMajorOne(string type)
    {
        Skip.IfNot(Q8_0Tiled.IsSupported, "the tiled kernels need AVX2 and FMA, which this CPU lacks");
        Skip.If(SimdPaths.Active is SimdPath.Scalar or SimdPath.Vector128, $"HARPIA_SIMD={SimdPaths.Active}: the tiled kernels run on the 256/512-bit paths only");
        string path = Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), $"model-{type}.gguf");
        var prompt = FalconGoldenTests.Golden("tiny-falcon-180b-h256")[1];
        using var plain = FalconModel.Load(path, repack: false);
        using var packed = FalconModel.Load(path, repack: true);
        Assert.Equal(0, plain.RepackedMatrices);
        // Every lm_head or layer matrix of a type with a load-time layout (Q4_K_M mixes in Q5_0/Q8_0-family rows too).
        var matrices = plain.Weights.Layers.SelectMany(l => new[] { l.QueryKeyValue.Weight, l.Dense.Weight, l.DenseHTo4H.Weight, l.Dense4HToH.Weight })
            .Append(plain.Weights.LmHead);
        int expectedRepacked = matrices.Count(w => RepackedWeights.RepacksAtLoad(w.Type));
        Assert.True(expectedRepacked > 0, "the file has no matrix of a repacked type");
        Assert.Equal(expectedRepacked, packed.RepackedMatrices);

        float[] expected = FalconGoldenTests.FullPass(plain, prompt.Ids);
        float[] actual = FalconGoldenTests.FullPass(packed, prompt.Ids);
        AssertClose(expected, actual, "prefill");

        // Decode: one more token through the repacked single-row kernels.
        int vocab = plain.Config.VocabSize;
        int next = FalconGoldenTests.ArgMax(expected);
        var stepPlain = new float[vocab];
        var stepPacked = new float[vocab];
        var cachePlain = new DenseKvCache(plain.Shape, 256);
        plain.Forward([new SequenceChunk(prompt.Ids, 0, cachePlain)], new float[vocab]);
        plain.Forward([new SequenceChunk(new[] { next }, prompt.Ids.Length, cachePlain)], stepPlain);
        var cachePacked = new DenseKvCache(packed.Shape, 256);
        packed.Forward([new SequenceChunk(prompt.Ids, 0, cachePacked)], new float[vocab]);
        packed.Forward([new SequenceChunk(new[] { next }, prompt.Ids.Length, cachePacked)], stepPacked);
        AssertClose(stepPlain, stepPacked, "decode");
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        // Integer sums are exact in both layouts; only the f32 accumulation order differs.
        float scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4f * scale, $"{what} [{i}]: {actual[i]} vs {expected[i]} ({Vnni.Describe()})");
        Assert.Equal(FalconGoldenTests.ArgMax(expected), FalconGoldenTests.ArgMax(actual));
    }
}

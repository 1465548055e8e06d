using Harpia.Models.Falcon;
using Xunit.Abstractions;

namespace Harpia.Tests.Models;

/// <summary>
/// llama.cpp's own quantized files of the h256 fixture, through Harpia's GGUF loader and the quantized kernels:
/// the same top-1 token as llama.cpp on every prompt, and logits about as close to the float64 golden as
/// llama.cpp's own (its error is the quantization's, not the engine's).
/// </summary>
[Trait("Category", "Simd")]
public class QuantizedGgufTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("Q8_0")]
    [InlineData("Q4_K_M")]
    public void QuantizedGgufMatchesLlamaCpp(string type)
    {
        string dir = Fixtures.Model("tiny-falcon-180b-h256");
        using var model = FalconModel.Load(Path.Combine(dir, $"model-{type}.gguf"));
        var prompts = FalconGoldenTests.Golden("tiny-falcon-180b-h256");
        for (int p = 0; p < prompts.Count; p++)
        {
            byte[] raw = File.ReadAllBytes(Path.Combine(dir, $"llamacpp-{type}-p{p}-last-logits.f32"));
            var llama = new float[raw.Length / 4];
            Buffer.BlockCopy(raw, 0, llama, 0, raw.Length);
            var ours = FalconGoldenTests.FullPass(model, prompts[p].Ids);
            float oursErr = FalconGoldenTests.MaxAbs(ours, prompts[p].LastLogits);
            float llamaErr = FalconGoldenTests.MaxAbs(llama, prompts[p].LastLogits);
            output.WriteLine($"{type} p{p}: max-abs vs golden: Harpia {oursErr:F4}, llama.cpp {llamaErr:F4}; vs llama.cpp {FalconGoldenTests.MaxAbs(ours, llama):F4}");
            Assert.Equal(FalconGoldenTests.ArgMax(llama), FalconGoldenTests.ArgMax(ours));
            Assert.True(oursErr <= llamaErr * 1.25f, $"{type} p{p}: {oursErr} vs llama.cpp {llamaErr}");
        }
    }
}

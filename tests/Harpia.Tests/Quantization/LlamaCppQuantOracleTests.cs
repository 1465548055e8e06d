using Harpia.Models.Falcon;
using Harpia.Tests.Models;
using LLama;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>
/// llama.cpp as the oracle for every GGUF quantization Harpia reads: llama.cpp's own quantizer (in-process, through
/// LLamaSharp) turns the f32 h256 fixture into each type, then both engines run the golden prompts on that same file.
/// <para>
/// Criteria: the same top-1 token as llama.cpp on every prompt, and Harpia's max-abs error against the float64 golden
/// no worse than llama.cpp's own plus <see cref="Slack"/> (logits here have std ≈ 4.8; the largest excess measured over all twelve types and three prompts is 0.09, Q4_K_M and Q3_K_L). The slack is the
/// engine-to-engine gap that is not quantization: each engine rounds activations to 8 bits its own way and llama.cpp's
/// GELU is the tanh form while Falcon's (and the golden's) is exact erf — on the f32 file llama.cpp already sits
/// ~0.01 from golden and Harpia ~2e-3. A wrong dequantization moves logits by whole units and fails both checks.
/// </para>
/// </summary>
[Collection(nameof(LlamaCppOracleTests))]
public class LlamaCppQuantOracleTests(LlamaCppQuantOracleTests.QuantizedFiles files, ITestOutputHelper output)
    : IClassFixture<LlamaCppQuantOracleTests.QuantizedFiles>
{
    private const float Slack = 0.15f;

    public static TheoryData<string> Types => new()
    {
        "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q5_0", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_K_S", "Q4_K_M",
    };

    [SkippableTheory]
    [MemberData(nameof(Types))]
    public void HarpiaMatchesLlamaCppOnLlamaCppsOwnQuantization(string type)
    {
        LlamaCppOracleTests.SkipUnlessLlamaCppLoads();
        string path = files.Get(type);
        using var model = FalconModel.Load(path);
        var prompts = FalconGoldenTests.Golden("tiny-falcon-180b-h256");
        for (int p = 0; p < prompts.Count; p++)
        {
            float[] theirs = LlamaCppOracleTests.LlamaCppLastLogits(path, prompts[p].Ids);
            float[] ours = FalconGoldenTests.FullPass(model, prompts[p].Ids);
            float oursErr = FalconGoldenTests.MaxAbs(ours, prompts[p].LastLogits);
            float theirErr = FalconGoldenTests.MaxAbs(theirs, prompts[p].LastLogits);
            output.WriteLine($"{type} p{p}: max-abs vs golden: Harpia {oursErr:F4}, llama.cpp {theirErr:F4}; Harpia vs llama.cpp {FalconGoldenTests.MaxAbs(ours, theirs):F4}");
            Assert.Equal(FalconGoldenTests.ArgMax(theirs), FalconGoldenTests.ArgMax(ours));
            Assert.True(oursErr <= theirErr + Slack, $"{type} p{p}: Harpia is {oursErr} from golden, llama.cpp {theirErr}");
        }
    }

    /// <summary>The f32 fixture quantized by llama.cpp, once per type per run, in a temporary folder deleted afterwards.</summary>
    public sealed class QuantizedFiles : IDisposable
    {
        private readonly Fixtures.TempDir _dir = new();
        private readonly Dictionary<string, string> _done = [];

        public string Get(string type)
        {
            lock (_done)
            {
                if (_done.TryGetValue(type, out var path)) return path;
                path = _dir.File($"model-{type}.gguf");
                LlamaCppOracleTests.EnsureConfigured();
                LLama.Native.NativeApi.llama_empty_call();   // loads the native library (the quantizer's own imports do not)
                string source = Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-f32.gguf");
                var ftype = Enum.Parse<LLama.Native.LLamaFtype>("MOSTLY_" + type);   // exact: "Q2_K" alone also matches Q2_K_S
                if (!LLamaQuantizer.Quantize(source, path, ftype, nthread: 2, allowRequantize: false, quantizeOutputTensor: true))
                    throw new InvalidOperationException($"llama.cpp could not quantize {source} to {type}");
                _done[type] = path;
                return path;
            }
        }

        public void Dispose() => _dir.Dispose();
    }
}

using Harpia.Models.Falcon;
using Harpia.Tests.Models;
using LLama;
using LLama.Common;
using LLama.Native;
using System.Runtime.InteropServices;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>
/// llama.cpp itself (in-process through LLamaSharp's CPU backend) loads the GGUF files Harpia writes and runs a golden
/// prompt; its last-position logits must agree with Harpia's on the same file.
/// <para>
/// Tolerance: top-1 equal and max-abs ≤ 0.35 (logits here have std ≈ 4.8, so about 7%). The two engines differ by
/// 0.17–0.25 max-abs on llama.cpp's *own* Q8_0 / Q4_K_M files (Harpia vs the fixture's llamacpp-*-logits), because
/// each rounds activations to 8 bits its own way and llama.cpp's GELU is the tanh form while Falcon's is exact erf;
/// 0.35 is that engine-to-engine gap with margin. A layout mistake (QKV order, swapped norms, a wrong key) moves
/// logits by whole units and flips the top-1, so the bound still catches what this test is for.
/// </para>
/// </summary>
[Collection(nameof(LlamaCppOracleTests))]
public class LlamaCppOracleTests(ITestOutputHelper output)
{
    private const float Tolerance = 0.35f;

    // LLamaSharp accepts its native-library configuration only before the library loads: once per process.
    private static readonly Lazy<bool> Configured = new(() =>
    {
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (level == LLamaLogLevel.Error) Console.Error.Write(message); });
        return true;
    });

    [SkippableTheory]
    [InlineData("Q8_0")]
    [InlineData("Q4_K_M")]
    public void LlamaCppLoadsOurFileAndAgreesWithHarpia(string type)
    {
        SkipUnlessLlamaCppLoads();
        string path = QuantizedFiles.Gguf(type);
        var prompt = FalconGoldenTests.Golden("tiny-falcon-180b-h256")[0];
        float[] theirs = LlamaCppLastLogits(path, prompt.Ids);
        using var model = FalconModel.Load(path);
        float[] ours = FalconGoldenTests.FullPass(model, prompt.Ids);
        float diff = FalconGoldenTests.MaxAbs(ours, theirs);
        output.WriteLine($"{type}: llama.cpp vs Harpia on Harpia's file: max-abs {diff:F4}; vs golden: llama.cpp {FalconGoldenTests.MaxAbs(theirs, prompt.LastLogits):F4}, Harpia {FalconGoldenTests.MaxAbs(ours, prompt.LastLogits):F4}");
        Assert.Equal(FalconGoldenTests.ArgMax(ours), FalconGoldenTests.ArgMax(theirs));
        Assert.True(diff <= Tolerance, $"{type}: llama.cpp and Harpia differ by {diff} on the same file");
    }

    /// <summary>
    /// Skips the calling test where llama.cpp's native library does not load: LLamaSharp.Backend.Cpu ships it for
    /// x64 only, so under the Arm64 runner (qemu) the oracle is absent. On x64 a library that fails to load is a
    /// failure, not a skip: there the oracle must run.
    /// </summary>
    internal static void SkipUnlessLlamaCppLoads() =>
        Skip.If(RuntimeInformation.ProcessArchitecture != Architecture.X64 && Unavailable.Value is not null, Unavailable.Value);

    private static readonly Lazy<string?> Unavailable = new(() =>
    {
        try
        {
            EnsureConfigured();
            NativeApi.llama_empty_call();
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return $"llama.cpp's native library does not load on {RuntimeInformation.ProcessArchitecture}: {(e.InnerException ?? e).Message}";
        }
    });

    /// <summary>Applies the native-library configuration (before anything else loads llama.cpp).</summary>
    internal static void EnsureConfigured() => _ = Configured.Value;

    internal static float[] LlamaCppLastLogits(string path, int[] ids)
    {
        _ = Configured.Value;
        var p = new ModelParams(path)
        {
            ContextSize = 64, BatchSize = 64, UBatchSize = 64, Threads = 2, BatchThreads = 2, GpuLayerCount = 0,
            // f32 KV cache: llama.cpp's default f16 cache would add its own rounding to the comparison.
            TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32,
        };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var ctx = weights.CreateContext(p);
        var batch = new LLamaBatch();
        for (int i = 0; i < ids.Length; i++) batch.Add(ids[i], i, (LLamaSeqId)0, i == ids.Length - 1);
        var result = ctx.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
        return ctx.NativeHandle.GetLogitsIth(batch.TokenCount - 1).ToArray();
    }
}

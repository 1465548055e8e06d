using System.Collections.Concurrent;
using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Models.Llama;
using Harpia.Quantization;
using Harpia.Tensors;
using Harpia.Tests.Models;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>
/// <c>harpia quantize</c> for the Llama architecture on tiny-llama3 (bf16 safetensors; the tokenizer comes from the
/// fixture's GGUF): llama.cpp itself (LLamaSharp) loads the file Harpia writes and agrees with Harpia on the top-1
/// token, Harpia is no further from golden than llama.cpp on the same file, and the per-tensor types are llama.cpp's.
/// </summary>
[Collection(nameof(LlamaCppOracleTests))]
public class LlamaQuantizeTests(ITestOutputHelper output)
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> Written = new();

    public static string Fixture => Fixtures.Model("tiny-llama3");

    /// <summary>tiny-llama3 written by Harpia as <paramref name="type"/>, once per test run.</summary>
    public static string Gguf(string type) => Written.GetOrAdd(type.ToUpperInvariant(), t => new Lazy<string>(() =>
    {
        string path = Path.Combine(QuantizedFiles.Root, $"harpia-tiny-llama3-{t}.gguf");
        LlamaQuantizer.WriteGguf(new QuantizeRequest(Fixture, path, QuantizationScheme.Parse(t))
        {
            Force = true, Threads = 2, Tokenizer = Path.Combine(Fixture, "model-f32.gguf"),
        });
        return path;
    })).Value;

    /// <summary>
    /// llama.cpp loads Harpia's file; on every golden prompt both engines pick the same top-1 and differ by at most
    /// 0.35 max-abs (the engine-to-engine gap <see cref="LlamaCppOracleTests"/> allows). Against golden, over the three
    /// prompts, Harpia's rms error is within 2% and its max-abs error within 5% of llama.cpp's on the same file: measured
    /// (Q4_K_M) rms 0.6632 vs 0.6629 and max-abs 2.685 vs 2.656 — the two engines round activations to 8 bits each its
    /// own way, so per-prompt max-abs goes either way (Harpia is closer on p1, llama.cpp on p0 and p2); a real defect
    /// (a wrong row order, a wrong type) moves these by whole units. Q8_0 (not in the criterion, checked for
    /// the loading): Harpia's rms is the smaller (0.0685 vs 0.0691) but its max-abs is 10% larger (0.263 vs 0.238), so
    /// its max-abs bound is 15%.
    /// </summary>
    [SkippableTheory]
    [InlineData("Q4_K_M", 1.05)]
    [InlineData("Q8_0", 1.15)]
    public void LlamaCppLoadsOurFileAgreesOnTop1AndHarpiaIsAsCloseToGolden(string type, double maxAbsBound)
    {
        LlamaCppOracleTests.SkipUnlessLlamaCppLoads();
        string path = Gguf(type);
        using var model = LlamaModel.Load(path);
        double oursMax = 0, theirsMax = 0, oursRms = 0, theirsRms = 0;
        var prompts = LlamaGoldenTests.Golden("tiny-llama3");
        for (int p = 0; p < prompts.Count; p++)
        {
            var prompt = prompts[p];
            float[] theirs = LlamaCppOracleTests.LlamaCppLastLogits(path, prompt.Ids);
            float[] ours = LlamaGoldenTests.FullPass(model, prompt.Ids);
            float oursErr = FalconGoldenTests.MaxAbs(ours, prompt.LastLogits), theirsErr = FalconGoldenTests.MaxAbs(theirs, prompt.LastLogits);
            double oursR = Rms(ours, prompt.LastLogits), theirsR = Rms(theirs, prompt.LastLogits);
            float gap = FalconGoldenTests.MaxAbs(ours, theirs);
            output.WriteLine($"{type} p{p}: vs golden max-abs / rms: Harpia {oursErr:F4} / {oursR:F4}, llama.cpp {theirsErr:F4} / {theirsR:F4}; Harpia vs llama.cpp {gap:F4}");
            Assert.Equal(FalconGoldenTests.ArgMax(theirs), FalconGoldenTests.ArgMax(ours));
            Assert.True(gap <= 0.35f, $"{type} p{p}: Harpia and llama.cpp differ by {gap} on the same file");
            oursMax += oursErr; theirsMax += theirsErr; oursRms += oursR; theirsRms += theirsR;
        }
        output.WriteLine($"{type} mean over prompts: max-abs Harpia {oursMax / prompts.Count:F4}, llama.cpp {theirsMax / prompts.Count:F4}; rms Harpia {oursRms / prompts.Count:F4}, llama.cpp {theirsRms / prompts.Count:F4}");
        Assert.True(oursRms <= 1.02 * theirsRms, $"{type}: Harpia's mean rms error vs golden {oursRms / prompts.Count} exceeds llama.cpp's {theirsRms / prompts.Count} by more than 2%");
        Assert.True(oursMax <= maxAbsBound * theirsMax, $"{type}: Harpia's mean max-abs error vs golden {oursMax / prompts.Count} exceeds {maxAbsBound} × llama.cpp's {theirsMax / prompts.Count}");
    }

    /// <summary>
    /// The quantizer itself is llama.cpp's: llama.cpp (in-process, LLamaSharp) and Harpia each quantize the fixture's
    /// f32 GGUF to Q4_K_M, and every tensor comes out with the same type and the same bytes. So any gap between the two
    /// engines' errors on one file (see above) is in how they compute, not in what was written.
    /// </summary>
    [SkippableFact]
    public void HarpiasQ4_K_MOfTheF32GgufIsByteIdenticalToLlamaCpps()
    {
        LlamaCppOracleTests.SkipUnlessLlamaCppLoads();
        using var dir = new Fixtures.TempDir();
        string source = Path.Combine(Fixture, "model-f32.gguf");
        string theirsPath = dir.File("llamacpp-Q4_K_M.gguf"), oursPath = dir.File("harpia-Q4_K_M.gguf");
        LlamaCppOracleTests.EnsureConfigured();
        LLama.Native.NativeApi.llama_empty_call();
        Assert.True(LLama.LLamaQuantizer.Quantize(source, theirsPath, LLama.Native.LLamaFtype.MOSTLY_Q4_K_M, nthread: 2, allowRequantize: false, quantizeOutputTensor: true));
        LlamaQuantizer.WriteGguf(new QuantizeRequest(source, oursPath, QuantizationScheme.Q4_K_M) { Threads = 2 });
        using var theirs = GgufFile.Open(theirsPath);
        using var ours = GgufFile.Open(oursPath);
        Assert.Equal(theirs.Tensors.Keys.Order(), ours.Tensors.Keys.Order());
        foreach (var (name, t) in theirs.Tensors)
        {
            var o = ours.Tensors[name];
            Assert.Equal((name, t.Type), (name, o.Type));
            unsafe
            {
                Assert.True(new ReadOnlySpan<byte>(t.Data, (int)t.ByteLength).SequenceEqual(new ReadOnlySpan<byte>(o.Data, (int)o.ByteLength)), $"{name} ({t.Type}): bytes differ from llama.cpp's");
            }
        }
    }

    private static double Rms(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)(a[i] - b[i]) * (a[i] - b[i]);
        return Math.Sqrt(s / a.Length);
    }

    [Fact]
    public void FileCarriesLlamaCppsMetadataTypesAndRopeFactors()
    {
        using var gguf = GgufFile.Open(Gguf("Q4_K_M"));
        Assert.Equal("llama", gguf.GetString("general.architecture"));
        Assert.Equal((long)LlamaFileType.MostlyQ4_K_M, gguf.GetInteger("general.file_type"));
        Assert.Equal(8, gguf.GetInteger("llama.attention.head_count"));
        Assert.Equal(2, gguf.GetInteger("llama.attention.head_count_kv"));
        Assert.Equal(500000.0, gguf.GetFloat("llama.rope.freq_base"));
        Assert.True(GgufTokenizerJson.HasTokenizer(gguf));
        var types = gguf.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Type);
        Assert.Equal(GgmlType.Q6_K, types["output.weight"]);
        Assert.Equal(GgmlType.Q4_K, types["token_embd.weight"]);
        // Two layers: use_more_bits picks layer 1 (≥ 7·2/8) only.
        Assert.Equal(GgmlType.Q4_K, types["blk.0.attn_v.weight"]);
        Assert.Equal(GgmlType.Q6_K, types["blk.1.attn_v.weight"]);
        Assert.Equal(GgmlType.Q4_K, types["blk.0.attn_q.weight"]);
        // ffn_down rows are 688 long: neither Q4_K/Q6_K (256) nor Q5_0/Q8_0 (32) blocks fit, so F16 as llama.cpp.
        Assert.Equal(GgmlType.F16, types["blk.0.ffn_down.weight"]);
        Assert.Equal(GgmlType.F32, types["blk.0.attn_norm.weight"]);
        // rope_freqs.weight as convert_hf_to_gguf.py computes it for llama3 scaling, equal to the fixture's own.
        using var fixture = GgufFile.Open(Path.Combine(Fixture, "model-f32.gguf"));
        Assert.Equal(fixture.Tensors["rope_freqs.weight"].ToFloatVector(), gguf.Tensors["rope_freqs.weight"].ToFloatVector());
    }

    [Fact]
    public void QuantizingOnLoadGivesTheSameLogitsAsTheWrittenFile()
    {
        // Same rows, same encoder: only the q/k row order (and so the rotary pairing) differs, which is float rounding.
        using var onLoad = LlamaModel.Load(Fixture, QuantizationScheme.Q4_K_M);
        using var file = LlamaModel.Load(Gguf("Q4_K_M"));
        Assert.False(onLoad.Config.RotaryInterleaved);
        Assert.True(file.Config.RotaryInterleaved);
        var prompt = LlamaGoldenTests.Golden("tiny-llama3")[2];
        float diff = FalconGoldenTests.MaxAbs(LlamaGoldenTests.FullPass(onLoad, prompt.Ids), LlamaGoldenTests.FullPass(file, prompt.Ids));
        output.WriteLine($"on load vs file: max-abs {diff:E2}");
        Assert.True(diff < 1e-3f, $"on-load and written Q4_K_M differ by {diff}");
        Assert.Equal(GgmlType.Q6_K, onLoad.Weights.Layers[1].VProj.Weight.Type);
        Assert.Equal(GgmlType.Q6_K, onLoad.Weights.LmHead.Type);
    }

    [Fact]
    public void HarpiaQuantizeCommandDispatchesALlamaFolderToTheLlamaWriter()
    {
        string output = Path.Combine(QuantizedFiles.Root, "cli-tiny-llama3-q8_0.gguf");
        int code = Harpia.Cli.Program.Main(["quantize", Fixture, output, "--type", "q8_0", "--tokenizer", Path.Combine(Fixture, "model-f32.gguf"), "--force", "--threads", "2"]);
        Assert.Equal(0, code);
        using var gguf = GgufFile.Open(output);
        Assert.Equal("llama", gguf.GetString("general.architecture"));
        Assert.Equal(GgmlType.Q8_0, gguf.Tensors["blk.0.attn_q.weight"].Type);
    }

    [Fact]
    public void DynamicNtkScalingIsRefusedForGgufBecauseLlamaCppHasNone()
    {
        var c = LlamaConfig.FromJsonFile(Fixture) with { RopeScaling = new RopeScaling(RopeScalingType.Dynamic, 2) };
        var e = Assert.Throws<HarpiaException>(() => LlamaQuantizer.Metadata(c, "x", QuantizationScheme.Q8_0, []));
        Assert.Contains("dynamic", e.Message);
    }
}

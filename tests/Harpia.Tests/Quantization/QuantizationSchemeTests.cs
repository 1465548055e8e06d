using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Tests.Quantization;

public class QuantizationSchemeTests
{
    [Theory]
    [InlineData("q4_k_m", "Q4_K_M")]
    [InlineData("Q4_K_M", "Q4_K_M")]
    [InlineData("q4-k-m", "Q4_K_M")]
    [InlineData(" q8_0 ", "Q8_0")]
    [InlineData("Q6_k", "Q6_K")]
    [InlineData("fp16", "F16")]
    [InlineData("bfloat16", "BF16")]
    [InlineData("f32", "F32")]
    [InlineData("q3_k_m", "Q3_K_M")]
    public void UserSpellingsParseCaseInsensitively(string text, string name) =>
        Assert.Equal(name, QuantizationScheme.Parse(text).Name);

    [Theory]
    [InlineData("bitsandbytes")]
    [InlineData("bitsandbytes-nf4")]
    [InlineData("gptq")]
    [InlineData("awq")]
    [InlineData("eetq")]
    [InlineData("fp8")]
    public void TgiQuantizeKindsAreRefusedWithTheSupportedList(string kind)
    {
        var e = Assert.Throws<HarpiaException>(() => QuantizationScheme.Parse(kind, "--quantize"));
        Assert.Contains($"--quantize {kind}", e.Message);
        Assert.Contains("not implemented", e.Message);
        Assert.Contains("Q4_K_M", e.Message);
        Assert.Contains("Q8_0", e.Message);
    }

    [Fact]
    public void AnUnknownTypeNamesItselfAndTheSupportedList()
    {
        var e = Assert.Throws<HarpiaException>(() => QuantizationScheme.Parse("Q7_K", "--type"));
        Assert.Contains("--type Q7_K", e.Message);
        Assert.Contains("unknown", e.Message);
        Assert.Contains(QuantizationScheme.SupportedList, e.Message);
    }

    /// <summary>The per-tensor mix (and the tensor order) of llama-quantize's own files for the h256 fixture.</summary>
    [Theory]
    [InlineData("Q4_K_M")]
    [InlineData("Q8_0")]
    public void PlanReproducesLlamaCppsPerTensorTypes(string type)
    {
        using var reference = GgufFile.Open(Path.Combine(QuantizedFiles.Fixture, $"model-{type}.gguf"));
        using var model = FalconModel.Load(QuantizedFiles.Fixture);
        var plan = FalconQuantizer.Plan(model, QuantizationScheme.Parse(type), groupedQkv: true);
        Assert.Equal(reference.TensorOrder, plan.Select(t => t.Name));
        foreach (var t in plan)
        {
            Assert.True(reference.Tensors[t.Name].Type == t.Type, $"{t.Name}: llama.cpp {reference.Tensors[t.Name].Type}, ours {t.Type}");
            Assert.Equal(reference.Tensors[t.Name].Shape, t.Shape);
        }
    }

    [Fact]
    public void FalconRulesOverManyLayersAndFallbacks()
    {
        var s = QuantizationScheme.Q4_K_M;
        GgmlType T(string name, int layer, long cols = 14848, bool tied = false) => s.TypeFor(name, 2, cols, layer, 80, 232, 8, tied);
        Assert.Equal(GgmlType.Q8_0, T("output.weight", 0));
        Assert.Equal(GgmlType.Q4_K, T("token_embd.weight", 0));           // not tied: the default type
        Assert.Equal(GgmlType.Q8_0, T("token_embd.weight", 0, tied: true));
        // Falcon's ffn_down for Q4_K_M: the first n/16 layers Q6_K, use_more_bits layers Q5_K, the rest Q4_K.
        Assert.Equal(GgmlType.Q6_K, T("blk.4.ffn_down.weight", 4));
        Assert.Equal(GgmlType.Q5_K, T("blk.5.ffn_down.weight", 5));       // 5 < 80/8
        Assert.Equal(GgmlType.Q4_K, T("blk.10.ffn_down.weight", 10));
        Assert.Equal(GgmlType.Q5_K, T("blk.12.ffn_down.weight", 12));     // (12 - 10) % 3 == 2
        Assert.Equal(GgmlType.Q6_K, T("blk.70.attn_qkv.weight", 70));     // last eighth
        Assert.Equal(GgmlType.Q4_K, T("blk.11.attn_qkv.weight", 11));
        Assert.Equal(GgmlType.F32, T("blk.0.attn_norm.weight", 0));
        Assert.Equal(GgmlType.F32, s.TypeFor("blk.0.attn_qkv.bias", 1, 14848, 0, 80, 232, 8, false));
        // Falcon-7B's 4544-wide rows are not whole 256-blocks: Q4_K falls back to Q5_0, Q6_K to Q8_0.
        Assert.Equal(GgmlType.Q5_0, T("blk.11.attn_output.weight", 11, cols: 4544));
        Assert.Equal(GgmlType.Q8_0, T("blk.70.attn_qkv.weight", 70, cols: 4544));
        Assert.Equal(GgmlType.Q4_0, QuantizationScheme.Q2_K.TypeFor("blk.11.attn_output.weight", 2, 4544, 11, 32, 71, 1, false));
        Assert.Equal(GgmlType.F16, QuantizationScheme.F16.TypeFor("output.weight", 2, 4544, 0, 32, 71, 1, false));
    }
}

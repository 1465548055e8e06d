using Harpia.Planning;

namespace Harpia.Tests.Planning;

public class PrecisionTests
{
    private static readonly ModelSpec F180 = ModelSpec.FromPreset("falcon-180b");
    private static long Bytes(string precision, ModelSpec m) => Precision.Parse(precision).Weights(m).Bytes;

    [Fact]
    public void Bf16_is_two_bytes_per_parameter()
    {
        Assert.Equal(2 * F180.ParameterCount, Bytes("bf16", F180));
        Assert.Equal(357.114, Bytes("bf16", F180) / 1e9, 3);   // the guide's "~640 GB" is 8×80 GB of GPUs, not the need
    }

    // llama.cpp's Q4_K_M for Falcon-180B (80 layers), from llama_tensor_get_type:
    //   attn_qkv (attention-V-like): Q6_K where use_more_bits(i, 80) (40 layers), else Q4_K (40 layers)
    //   ffn_down (Falcon rule):      Q6_K for i < 80/16 = 5; Q5_K where use_more_bits (35 more); else Q4_K (40)
    //   attn_output, ffn_up:         Q4_K (the base type);  tied token_embd = output: Q8_0 for Falcon
    //   norms: f32.   Block bytes per 256 weights: Q4_K 144, Q5_K 176, Q6_K 210; Q8_0 34 per 32.
    [Fact]
    public void Q4_K_M_for_Falcon180B_matches_the_hand_computed_recipe()
    {
        const long H = 14_848, F = 59_392, qkv = H * 15_872, dense = H * H, up = H * F, down = F * H;
        static long K(long elements, long blockBytes) => elements / 256 * blockBytes;
        long expected =
              40 * K(qkv, 210) + 40 * K(qkv, 144)
            + 80 * K(dense, 144) + 80 * K(up, 144)
            + 5 * K(down, 210) + 35 * K(down, 176) + 40 * K(down, 144)
            + 65_024 * H / 32 * 34
            + (80 * 4 * H + 2 * H) * 4;
        Assert.Equal(expected, Bytes("q4_k_m", F180));
        double gb = expected / 1e9, bpw = expected * 8.0 / F180.ParameterCount;
        Assert.InRange(gb, 108, 109);          // "~109 GB", not the guide's ~160 GB
        Assert.InRange(bpw, 4.8, 4.9);
    }

    // The tiny h256 fixture was quantized by llama.cpp itself (model-Q4_K_M.gguf). Its tensor types, as stored in
    // that file: token_embd Q8_0; blk.0 attn_qkv Q4_K, blk.1 attn_qkv Q6_K; blk.0 ffn_down Q4_K, blk.1 ffn_down Q5_K;
    // attn_output and ffn_up Q4_K in both blocks. The recipe must pick the same.
    [Fact]
    public void Q4_K_M_recipe_reproduces_llama_cpp_types_on_the_tiny_fixture()
    {
        var m = ModelSpec.Resolve(Fixtures.Model("tiny-falcon-180b-h256"));
        var q4km = Precision.Parse("q4_k_m");
        string TypeOf(TensorRole role, int layer) => q4km.Store(m, m.Tensors().First(t => t.Role == role && t.Layer == layer)).Single().Type;
        Assert.Equal("Q8_0", TypeOf(TensorRole.TokenEmbedding, -1));
        Assert.Equal(("Q4_K", "Q6_K"), (TypeOf(TensorRole.AttnQkv, 0), TypeOf(TensorRole.AttnQkv, 1)));
        Assert.Equal(("Q4_K", "Q5_K"), (TypeOf(TensorRole.FfnDown, 0), TypeOf(TensorRole.FfnDown, 1)));
        Assert.Equal(("Q4_K", "Q4_K"), (TypeOf(TensorRole.AttnOutput, 0), TypeOf(TensorRole.FfnUp, 1)));
        Assert.Equal("F32", TypeOf(TensorRole.Norm, 0));
        // and the Q8_0 file is Q8_0 throughout
        var q8 = Precision.Parse("q8_0");
        Assert.All(m.Tensors().Where(t => t.Role != TensorRole.Norm), t => Assert.Equal("Q8_0", q8.Store(m, t).Single().Type));
    }

    // Falcon-7B's hidden size 4,544 is not a multiple of 256: llama.cpp falls back (Q4_K → Q5_0, Q6_K → Q8_0)
    // for tensors whose rows are 4,544 long; ffn_down rows are 18,176 = 71·256 long and keep k-quants.
    [Fact]
    public void Falcon7B_k_quants_fall_back_where_rows_are_not_whole_blocks()
    {
        var m = ModelSpec.FromPreset("falcon-7b");
        var q4km = Precision.Parse("q4_k_m");
        var types = q4km.Weights(m).BytesByType.Keys.ToHashSet();
        Assert.Contains("Q5_0", types);
        Assert.Contains("Q8_0", types);
        var up = m.Tensors().First(t => t.Role == TensorRole.FfnUp);
        Assert.Equal("Q5_0", q4km.Store(m, up).Single().Type);
        var down = m.Tensors().First(t => t.Role == TensorRole.FfnDown && t.Layer == 10);
        Assert.Equal("Q4_K", q4km.Store(m, down).Single().Type);
    }

    [Theory]
    [InlineData("q8_0", 8.50, 8.51)]
    [InlineData("q6_k", 6.56, 6.60)]
    [InlineData("q5_k_m", 5.6, 5.9)]
    [InlineData("q3_k_m", 3.7, 3.95)]
    [InlineData("q2_k", 2.9, 3.3)]
    [InlineData("int8", 8.0, 8.1)]
    public void Bits_per_weight_of_each_format_is_in_its_known_range(string id, double lo, double hi) =>
        Assert.InRange(Bytes(id, F180) * 8.0 / F180.ParameterCount, lo, hi);

    // Over the quantized Linear weights only (embedding and norms stay 16-bit), the formats' own overheads:
    //   NF4 + double quant: 4 + 8/64 + 32/(64·256) = 4.127 bits;  GPTQ g128: 4 + (16 + 4)/128 = 4.156 (+ g_idx);
    //   GPTQ without groups: 4 + (16 + 4)/in_features + g_idx ≈ 4.00.
    [Theory]
    [InlineData("nf4", 4.1269, 4.1271)]
    [InlineData("gptq-4bit-128g", 4.156, 4.160)]
    [InlineData("gptq-4bit", 4.000, 4.004)]
    public void Linear_weight_overheads_of_gptq_and_nf4(string id, double lo, double hi)
    {
        var p = Precision.Parse(id);
        var linear = F180.Tensors().Where(t => t.Role is TensorRole.AttnQkv or TensorRole.AttnOutput or TensorRole.FfnUp or TensorRole.FfnDown).ToList();
        double bits = linear.Sum(t => (double)p.Store(F180, t).Sum(x => x.Bytes)) * 8 / linear.Sum(t => t.Elements);
        Assert.InRange(bits, lo, hi);
    }

    [Fact]
    public void Precision_names_and_aliases_parse_and_unknown_is_an_error()
    {
        Assert.Equal("gptq-4bit", Precision.Parse("gptq-4bit--1g-actorder_True").Id);
        Assert.Equal("q4_k_m", Precision.Parse("Q4_K_M").Id);
        Assert.Equal("nf4", Precision.Parse("qlora").Id);
        Assert.Contains("unknown precision 'q1'", Assert.Throws<HarpiaException>(() => Precision.Parse("q1")).Message);
    }

    [Fact]
    public void Decode_reads_every_weight_but_an_untied_embedding()
    {
        var bf16 = Precision.Parse("bf16");
        Assert.Equal(bf16.Weights(F180).Bytes, bf16.DecodeReadBytes(F180));       // tied: the embedding is the head
        var untied = F180 with { TiedHead = false };
        Assert.Equal(bf16.Weights(untied).Bytes - 2L * 65_024 * 14_848, bf16.DecodeReadBytes(untied));
    }
}

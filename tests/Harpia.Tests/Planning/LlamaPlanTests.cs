using System.Diagnostics;
using System.Text.Json;
using Harpia.Cli.Commands;
using Harpia.Planning;

namespace Harpia.Tests.Planning;

/// <summary>The planner on Llama-architecture configs: the published parameter counts and KV sizes, and <c>harpia plan --model folder</c>.</summary>
public class LlamaPlanTests
{
    // meta-llama/Meta-Llama-3-70B's config.json.
    public const string Llama3_70B = """
        {"architectures":["LlamaForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":128000,"eos_token_id":128001,
         "hidden_act":"silu","hidden_size":8192,"initializer_range":0.02,"intermediate_size":28672,"max_position_embeddings":8192,
         "model_type":"llama","num_attention_heads":64,"num_hidden_layers":80,"num_key_value_heads":8,"pretraining_tp":1,"rms_norm_eps":1e-05,
         "rope_scaling":null,"rope_theta":500000.0,"tie_word_embeddings":false,"torch_dtype":"bfloat16","use_cache":true,"vocab_size":128256}
        """;

    // tiiuae/Falcon3-10B-Base's config.json: explicit head_dim 256 (12 heads × 256 = hidden 3,072).
    public const string Falcon3_10B = """
        {"architectures":["LlamaForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":11,"eos_token_id":11,
         "head_dim":256,"hidden_act":"silu","hidden_size":3072,"initializer_range":0.02,"intermediate_size":23040,
         "max_position_embeddings":32768,"mlp_bias":false,"model_type":"llama","num_attention_heads":12,"num_hidden_layers":40,
         "num_key_value_heads":4,"pretraining_tp":1,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":1000042,
         "tie_word_embeddings":false,"torch_dtype":"bfloat16","use_cache":true,"vocab_size":131072}
        """;

    [Fact]
    public void Llama3_70BHasItsPublishedParameterCountAndKvSize()
    {
        var spec = ModelSpec.FromConfigJson(Llama3_70B);
        Assert.Equal(70_553_706_496L, spec.ParameterCount);       // the count transformers reports for Meta-Llama-3-70B
        Assert.Equal(128, spec.HeadDim);
        Assert.Equal(2L * 80 * 8 * 128, spec.KvElementsPerToken);  // 160 Ki elements: 320 KiB per token in bf16
        Assert.Equal(327_680L, spec.KvCacheBytes(1, 1, 2));
        Assert.Equal(8192, spec.MaxPositions);
    }

    [Fact]
    public void Falcon3_10BUsesItsExplicitHeadDim()
    {
        var spec = ModelSpec.FromConfigJson(Falcon3_10B);
        Assert.Equal(256, spec.HeadDim);
        // 2 × 131,072 × 3,072 (embeddings, untied head) + 40 × (q 3,072² + k, v 1,024 × 3,072 + o + 3 × 23,040 × 3,072 + 2 norms) + norm
        long layer = 2L * 3072 * 3072 + 2L * 1024 * 3072 + 3L * 23040 * 3072 + 2 * 3072;
        Assert.Equal(2L * 131072 * 3072 + 40 * layer + 3072, spec.ParameterCount);
        Assert.Equal(10_305_653_760L, spec.ParameterCount);       // "10.3B"
        Assert.Equal(2L * 40 * 4 * 256, spec.KvElementsPerToken);
    }

    [Fact]
    public void Qwen2CountsItsQkvBiasesAndTiedHead()
    {
        // Qwen2-0.5B's shape: q/k/v carry biases, o_proj does not; embeddings tied.
        const string json = """{"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,"num_attention_heads":14,"num_key_value_heads":2,"num_hidden_layers":24,"vocab_size":151936,"tie_word_embeddings":true}""";
        var spec = ModelSpec.FromConfigJson(json);
        long layer = 896L * 896 + 2L * 128 * 896 + 896L * 896 + 3L * 4864 * 896 + 2 * 896 + (896 + 2 * 128);
        Assert.Equal(151936L * 896 + 24 * layer + 896, spec.ParameterCount);
        Assert.Equal(494_032_768L, spec.ParameterCount);          // Qwen2-0.5B's published 494M
    }

    [Fact]
    public void CliPlansAModelFolderHoldingALlamaConfig()
    {
        using var dir = new Fixtures.TempDir();
        string folder = Path.Combine(dir.Path, "Meta-Llama-3-70B");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), Llama3_70B);
        var (code, output, err) = Harpia("plan", "--model", folder, "--format", "json", "--precision", "q4_k_m");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(70_553_706_496L, doc.RootElement.GetProperty("parameters").GetInt64());
        Assert.Equal("Meta-Llama-3-70B", doc.RootElement.GetProperty("model").GetString());
    }

    private static (int Code, string Out, string Err) Harpia(params string[] args) => HarpiaProcess.Run(args);
}

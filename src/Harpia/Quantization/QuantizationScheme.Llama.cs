using Harpia.Tensors;

namespace Harpia.Quantization;

public sealed partial class QuantizationScheme
{
    /// <summary>
    /// The type this scheme gives a tensor of a Llama-architecture model (GGUF <c>llama</c> / <c>qwen2</c>), following
    /// llama.cpp's <c>llama_tensor_get_type</c> for architectures other than Falcon:
    /// <list type="bullet">
    /// <item>output.weight — and token_embd.weight when the file has no output.weight — is Q6_K for every quantized type
    /// except Q8_0 (which keeps Q8_0), or Q8_0 when its rows are not whole k-quant blocks;</item>
    /// <item>attn_v: Q2_K → Q4_K with ≥ 4 queries per KV head (else Q3_K); Q3_K_M → Q5_K in its first two layers, else
    /// Q4_K; Q4_K_M and Q5_K_M → Q6_K in the <see cref="UseMoreBits"/> layers; Q4_K_S → Q5_K in the first four; a 70B
    /// (80 layers with grouped KV) lifts Q3_K/Q4_K to Q5_K;</item>
    /// <item>ffn_down: Q2_K → Q3_K; Q3_K_M → Q5_K in the first sixteenth, else Q4_K; Q4_K_M and Q5_K_M → Q6_K in the
    /// <see cref="UseMoreBits"/> layers; Q4_K_S → Q5_K in the first eighth;</item>
    /// <item>attn_output: Q2_K → Q3_K, Q3_K_M → Q4_K; attn_q, attn_k, ffn_gate and ffn_up keep the default;</item>
    /// <item>the same row-length fallbacks as for Falcon.</item>
    /// </list>
    /// <paramref name="layer"/> is the tensor's decoder layer (llama.cpp's i_attention_wv / i_ffn_down counters: one
    /// such tensor per layer, in layer order); <paramref name="rowLength"/> is ne[0].
    /// </summary>
    public GgmlType TypeForLlama(string ggufName, int rank, long rowLength, int layer, int layers, int heads, int kvHeads, bool tiedEmbeddings)
    {
        if (!IsQuantizable(ggufName, rank)) return GgmlType.F32;
        if (!IsQuantized) return DefaultType;
        var type = DefaultType;
        var f = FileType;
        int gqa = heads / Math.Max(1, kvHeads);
        if (ggufName == "output.weight" || (tiedEmbeddings && ggufName == "token_embd.weight"))
        {
            if (rowLength % GgmlTypes.Geometry(type).BlockSize != 0) type = GgmlType.Q8_0;
            else if (type != GgmlType.Q8_0) type = GgmlType.Q6_K;
        }
        else if (ggufName.Contains("attn_v.weight", StringComparison.Ordinal))
        {
            if (f == LlamaFileType.MostlyQ2_K) type = gqa >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K;
            else if (f == LlamaFileType.MostlyQ3_K_M) type = layer < 2 ? GgmlType.Q5_K : GgmlType.Q4_K;
            else if ((f is LlamaFileType.MostlyQ4_K_M or LlamaFileType.MostlyQ5_K_M) && UseMoreBits(layer, layers)) type = GgmlType.Q6_K;
            else if (f == LlamaFileType.MostlyQ4_K_S && layer < 4) type = GgmlType.Q5_K;
            // llama.cpp's LLM_TYPE_70B: 80 layers with grouped KV heads, whose attn_v is 8× smaller than attn_q.
            if (layers == 80 && gqa > 1 && type is GgmlType.Q3_K or GgmlType.Q4_K) type = GgmlType.Q5_K;
        }
        else if (ggufName.Contains("ffn_down", StringComparison.Ordinal))
        {
            if (f == LlamaFileType.MostlyQ2_K) type = GgmlType.Q3_K;
            else if (f == LlamaFileType.MostlyQ3_K_M) type = layer < layers / 16 ? GgmlType.Q5_K : GgmlType.Q4_K;
            else if (f is LlamaFileType.MostlyQ4_K_M or LlamaFileType.MostlyQ5_K_M) { if (UseMoreBits(layer, layers)) type = GgmlType.Q6_K; }
            else if (f == LlamaFileType.MostlyQ4_K_S && layer < layers / 8) type = GgmlType.Q5_K;
        }
        else if (ggufName.Contains("attn_output.weight", StringComparison.Ordinal))
        {
            if (f == LlamaFileType.MostlyQ2_K) type = GgmlType.Q3_K;
            else if (f == LlamaFileType.MostlyQ3_K_M) type = GgmlType.Q4_K;
        }
        return Fallback(type, rowLength);
    }
}

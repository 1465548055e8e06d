using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Tensors;

namespace Harpia.Tests.Models;

/// <summary>
/// A deliberately plain float64 transcription of Hugging Face's FalconForCausalLM forward (modeling_falcon.py),
/// reading a Hugging Face checkpoint by its own tensor names and splitting the fused QKV with the same
/// <c>view</c>s the Python code uses. Slow and allocation-heavy on purpose; used to check layouts the golden
/// fixtures do not cover.
/// </summary>
public static class FalconReference
{
    public static double[] LastLogits(ITensorSource source, FalconConfig c, int[] ids)
    {
        int T = ids.Length, H = c.HiddenSize, D = c.HeadDim, nh = c.NumHeads, kv = c.NumKvHeads;
        double[][] Mat(string name)
        {
            var w = source.Tensors[name].AsMatrix();
            var rows = new double[w.Rows][];
            var buf = new float[w.Cols];
            for (int r = 0; r < w.Rows; r++) { MatMul.DequantizeRow(w, r, buf); rows[r] = buf.Select(x => (double)x).ToArray(); }
            return rows;
        }
        double[]? Vec(string name) => source.Tensors.TryGetValue(name, out var t) ? t.ToFloatVector().Select(x => (double)x).ToArray() : null;
        double[][] Linear(double[][] x, string stem)
        {
            var w = Mat(stem + ".weight");
            var b = Vec(stem + ".bias");
            return x.Select(row => w.Select((wr, o) => wr.Zip(row, (p, q) => p * q).Sum() + (b?[o] ?? 0)).ToArray()).ToArray();
        }
        double[][] LayerNorm(double[][] x, string stem)
        {
            var g = Vec(stem + ".weight")!;
            var b = Vec(stem + ".bias")!;
            return x.Select(row =>
            {
                double mean = row.Average(), var = row.Select(v => (v - mean) * (v - mean)).Average();
                return row.Select((v, i) => (v - mean) / Math.Sqrt(var + c.LayerNormEpsilon) * g[i] + b[i]).ToArray();
            }).ToArray();
        }
        double[] Rotate(double[] v, int pos)
        {
            var o = new double[D];
            for (int i = 0; i < D / 2; i++)
            {
                double a = pos * Math.Pow(c.RopeTheta, -2.0 * i / D);
                o[i] = v[i] * Math.Cos(a) - v[i + D / 2] * Math.Sin(a);
                o[i + D / 2] = v[i + D / 2] * Math.Cos(a) + v[i] * Math.Sin(a);
            }
            return o;
        }
        double[][] Add(double[][] a, double[][] b) => a.Select((r, t) => r.Zip(b[t], (p, q) => p + q).ToArray()).ToArray();

        var emb = Mat("transformer.word_embeddings.weight");
        var h = ids.Select(id => (double[])emb[id].Clone()).ToArray();
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"transformer.h.{l}.";
            var residual = h;
            double[][] attnIn, mlpIn = [];
            if (c.NewDecoderArchitecture && c.NumLayerNormsInParallelAttn == 2) { attnIn = LayerNorm(h, p + "ln_attn"); mlpIn = LayerNorm(h, p + "ln_mlp"); }
            else attnIn = LayerNorm(h, p + "input_layernorm");

            var fused = Linear(attnIn, p + "self_attention.query_key_value");
            var q = new double[T][][]; var k = new double[T][][]; var v = new double[T][][];
            for (int t = 0; t < T; t++)
            {
                double[] Slice(int headSlot) => fused[t].Skip(headSlot * D).Take(D).ToArray();
                q[t] = new double[nh][]; k[t] = new double[kv][]; v[t] = new double[kv][];
                if (c.NewDecoderArchitecture)          // view(T, kv, nh/kv + 2, D)
                {
                    int g2 = nh / kv + 2;
                    for (int g = 0; g < kv; g++)
                    {
                        for (int j = 0; j < nh / kv; j++) q[t][g * (nh / kv) + j] = Slice(g * g2 + j);
                        k[t][g] = Slice(g * g2 + nh / kv); v[t][g] = Slice(g * g2 + nh / kv + 1);
                    }
                }
                else if (kv == 1)                      // multi_query: view(T, nh + 2, D)
                {
                    for (int j = 0; j < nh; j++) q[t][j] = Slice(j);
                    k[t][0] = Slice(nh); v[t][0] = Slice(nh + 1);
                }
                else                                   // view(T, nh, 3, D)
                    for (int j = 0; j < nh; j++) { q[t][j] = Slice(3 * j); k[t][j] = Slice(3 * j + 1); v[t][j] = Slice(3 * j + 2); }
                q[t] = q[t].Select(x => Rotate(x, t)).ToArray();
                k[t] = k[t].Select(x => Rotate(x, t)).ToArray();
            }
            var context = new double[T][];
            for (int t = 0; t < T; t++)
            {
                context[t] = new double[nh * D];
                for (int j = 0; j < nh; j++)
                {
                    int g = j / (nh / kv);
                    var s = Enumerable.Range(0, t + 1).Select(u => q[t][j].Zip(k[u][g], (a, b) => a * b).Sum() / Math.Sqrt(D)).ToArray();
                    double m = s.Max(), z = s.Sum(x => Math.Exp(x - m));
                    for (int u = 0; u <= t; u++)
                        for (int d = 0; d < D; d++) context[t][j * D + d] += Math.Exp(s[u] - m) / z * v[u][g][d];
                }
            }
            var attnOut = Linear(context, p + "self_attention.dense");
            if (!c.NewDecoderArchitecture)
            {
                if (c.ParallelAttn) mlpIn = attnIn;
                else { residual = Add(residual, attnOut); mlpIn = LayerNorm(residual, p + "post_attention_layernorm"); }
            }
            if (c.NewDecoderArchitecture && c.ParallelAttn && c.NumLayerNormsInParallelAttn == 1) mlpIn = attnIn;
            var up = Linear(mlpIn, p + "mlp.dense_h_to_4h").Select(r => r.Select(x => 0.5 * x * (1 + Activations.Erf(x / Math.Sqrt(2)))).ToArray()).ToArray();
            var mlp = Linear(up, p + "mlp.dense_4h_to_h");
            if (c.NewDecoderArchitecture || c.ParallelAttn) mlp = Add(mlp, attnOut);
            h = Add(mlp, residual);
        }
        var last = LayerNorm([h[^1]], "transformer.ln_f")[0];
        var head = source.Tensors.ContainsKey("lm_head.weight") ? Mat("lm_head.weight") : emb;
        return head.Select(row => row.Zip(last, (a, b) => a * b).Sum()).ToArray();
    }
}

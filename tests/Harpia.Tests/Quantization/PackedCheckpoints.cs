using System.Text.Json.Nodes;
using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Quantization;
using Harpia.Tensors;
using Harpia.Models;
using Harpia.Tests.Models;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>
/// Writes small quantized checkpoints for tests from <c>tiny-falcon-180b-h256</c>'s weights: each linear replaced by
/// its GPTQ encoding (any bits, groups, order, symmetry), and beside it the same model with those linears as the f32
/// values the encoding stands for — the exact reference a GPTQ reader must reproduce.
/// </summary>
public static class PackedCheckpoints
{
    public const string Source = "tiny-falcon-180b-h256";

    public static readonly string[] LinearStems = ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"];

    /// <summary>Writes &lt;dir&gt;/gptq and &lt;dir&gt;/reference; returns (gptq folder, reference folder).</summary>
    public static (string Gptq, string Reference) WriteGptq(string dir, int bits, int groupSize, bool sym, bool actOrder, int seed,
        Action<string, Dictionary<string, (GgmlType Type, long[] Shape, byte[] Bytes)>>? tamper = null, bool bias = false)
    {
        string src = Fixtures.Model(Source);
        using var model = FalconModel.Load(src);
        using var file = SafetensorsFile.Open(Path.Combine(src, "model.safetensors"));
        var gptq = new Dictionary<string, (GgmlType, long[], byte[])>(StringComparer.Ordinal);
        var reference = new Dictionary<string, (GgmlType, long[], byte[])>(StringComparer.Ordinal);
        var random = new Random(seed);
        foreach (var (name, t) in file.Tensors)
        {
            string? stem = LinearStems.Select(s => name.EndsWith(s + ".weight") ? name[..^".weight".Length] : null).FirstOrDefault(x => x is not null);
            if (stem is null)
            {
                var bytes = Bytes(t);
                gptq[name] = (t.Type, t.Shape, bytes);
                reference[name] = (t.Type, t.Shape, bytes);
                continue;
            }
            var m = t.AsMatrix();
            int N = m.Rows, K = m.Cols;
            var w = new float[N * K];
            for (int r = 0; r < N; r++) MatMul.DequantizeRow(m, r, w.AsSpan(r * K, K));
            int[]? order = actOrder ? Enumerable.Range(0, K).OrderBy(_ => random.Next()).ToArray() : null;
            var e = GptqEncoder.Encode(w, N, K, bits, groupSize, sym, order);
            gptq[stem + ".qweight"] = (GgmlType.I32, [K * bits / 32, N], ToBytes<int>(e.QWeight));
            gptq[stem + ".qzeros"] = (GgmlType.I32, [e.Groups, N * bits / 32], ToBytes<int>(e.QZeros));
            gptq[stem + ".scales"] = (GgmlType.F16, [e.Groups, N], ToBytes<Half>(e.Scales));
            gptq[stem + ".g_idx"] = (GgmlType.I32, [K], ToBytes<int>(e.GIdx));
            reference[name] = (GgmlType.F32, [N, K], ToBytes<float>(e.Dequantized));
            if (bias)
            {
                var b = Enumerable.Range(0, N).Select(_ => (Half)(random.NextSingle() - 0.5f)).ToArray();
                gptq[stem + ".bias"] = (GgmlType.F16, [N], ToBytes<Half>(b));
                reference[stem + ".bias"] = (GgmlType.F16, [N], ToBytes<Half>(b));
            }
        }
        tamper?.Invoke("gptq", gptq);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
        string refDir = Path.Combine(dir, "reference"), gptqDir = Path.Combine(dir, "gptq");
        if (bias) config["bias"] = true;
        Write(refDir, config.ToJsonString(), reference);
        config["quantization_config"] = new JsonObject
        {
            ["bits"] = bits, ["group_size"] = groupSize, ["desc_act"] = actOrder, ["sym"] = sym, ["quant_method"] = "gptq",
        };
        if (bias) config["bias"] = false; // GPTQ's bias is optional per linear: read when stored
        Write(gptqDir, config.ToJsonString(), gptq);
        return (gptqDir, refDir);
    }

    /// <summary>Runs <paramref name="body"/> with f32 (or 8-bit) activations for packed weights on this thread.</summary>
    public static void WithActivations(bool f32, Action body)
    {
        bool before = PackedActivations.Float;
        PackedActivations.Float = f32;
        try { body(); }
        finally { PackedActivations.Float = before; }
    }

    public static void CheckAgainstGolden(ITestOutputHelper output, string name, bool f32, float tolerance)
    {
        using var model = FalconModel.Load(Fixtures.Model(name));
        int vocab = model.Shape.VocabSize;
        WithActivations(f32, () =>
        {
            foreach (var prompt in FalconGoldenTests.Golden(name))
            {
                var logits = FalconGoldenTests.FullPass(model, prompt.Ids, allLogits: true);
                for (int i = 0; i < prompt.Ids.Length; i++)
                    Assert.Equal(prompt.ArgmaxPerPosition[i], FalconGoldenTests.ArgMax(logits.AsSpan(i * vocab, vocab)));
                float err = FalconGoldenTests.MaxAbs(logits.AsSpan((prompt.Ids.Length - 1) * vocab, vocab), prompt.LastLogits);
                output.WriteLine($"{name} ({(f32 ? "f32" : "8-bit")} activations): last-logits max-abs {err:E2}");
                Assert.True(err < tolerance, $"{name}: max-abs {err} ≥ {tolerance}");

                var cache = new DenseKvCache(model.Shape, 64);
                var step = new float[vocab];
                model.Forward([new SequenceChunk(prompt.Ids, 0, cache)], step);
                var generated = new List<int>();
                for (int s = 0; s < 8; s++)
                {
                    int next = FalconGoldenTests.ArgMax(step);
                    generated.Add(next);
                    model.Forward([new SequenceChunk(new[] { next }, cache.Length, cache)], step);
                }
                Assert.Equal(prompt.GreedyNext8, generated);
            }
        });
    }

    public static void Write(string folder, string configJson, Dictionary<string, (GgmlType Type, long[] Shape, byte[] Bytes)> tensors)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), configJson);
        var list = tensors.OrderBy(p => p.Key, StringComparer.Ordinal).ToList();
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), list.Select(p => new SafetensorsTensorSpec(p.Key, p.Value.Type, p.Value.Shape)).ToList(),
            null, (i, s) => s.Write(list[i].Value.Bytes));
    }

    public static unsafe byte[] Bytes(TensorEntry t) => new ReadOnlySpan<byte>(t.Data, checked((int)t.ByteLength)).ToArray();

    public static byte[] ToBytes<T>(T[] values) where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}

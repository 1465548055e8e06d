using System.IO.Compression;
using System.Text.Json.Nodes;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Models.Falcon;

/// <summary>
/// Writes a random-weight Falcon checkpoint in Hugging Face layout (config.json, sharded bf16 safetensors with
/// model.safetensors.index.json, Falcon's tokenizer.json): real layer shapes for benchmarks and load tests
/// without downloading hundreds of gigabytes. Weights are N(0, 0.02)-like, from a seeded counter-based PRNG
/// so the output is the same for a given seed however many threads write it. Data is streamed to disk.
/// </summary>
public static class FalconSynth
{
    public const float WeightStd = 0.02f;
    private const int BlockElements = 1 << 16;

    public sealed record Result(string Folder, long TotalBytes, int Shards, long Parameters);

    public static Result Write(FalconConfig config, string folder, ulong seed = 0, Action<string>? progress = null)
    {
        Directory.CreateDirectory(folder);
        int h = config.HiddenSize;
        // Shard 1: embeddings and the final norm; then one shard per decoder layer.
        var shards = new List<List<SafetensorsTensorSpec>>
        {
            new()
            {
                new("transformer.word_embeddings.weight", GgmlType.BF16, [config.VocabSize, h]),
                new("transformer.ln_f.weight", GgmlType.BF16, [h]),
                new("transformer.ln_f.bias", GgmlType.BF16, [h]),
            },
        };
        if (!config.TieWordEmbeddings) shards[0].Add(new("lm_head.weight", GgmlType.BF16, [config.VocabSize, h]));
        for (int i = 0; i < config.NumLayers; i++)
        {
            string p = $"transformer.h.{i}.";
            var layer = new List<SafetensorsTensorSpec>();
            void Norm(string name) { layer.Add(new(p + name + ".weight", GgmlType.BF16, [h])); layer.Add(new(p + name + ".bias", GgmlType.BF16, [h])); }
            void Lin(string name, long rows, long cols)
            {
                layer.Add(new(p + name + ".weight", GgmlType.BF16, [rows, cols]));
                if (config.Bias) layer.Add(new(p + name + ".bias", GgmlType.BF16, [rows]));
            }
            if (config.NumLayerNormsInParallelAttn == 2) { Norm("ln_attn"); Norm("ln_mlp"); }
            else
            {
                Norm("input_layernorm");
                if (!config.AttentionAndMlpInParallel) Norm("post_attention_layernorm");
            }
            Lin("self_attention.query_key_value", config.QkvSize, h);
            Lin("self_attention.dense", h, (long)config.NumHeads * config.HeadDim);
            Lin("mlp.dense_h_to_4h", config.FfnHiddenSize, h);
            Lin("mlp.dense_4h_to_h", h, config.FfnHiddenSize);
            shards.Add(layer);
        }

        var weightMap = new JsonObject();
        long total = 0, parameters = 0;
        int tensorIndex = 0;
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            progress?.Invoke($"writing {file}");
            var specs = shards[s];
            int firstIndex = tensorIndex;
            SafetensorsWriter.Write(Path.Combine(folder, file), specs, new Dictionary<string, string> { ["format"] = "pt" },
                (i, stream) => WriteRandomBf16(stream, specs[i], seed, (ulong)(firstIndex + i)));
            foreach (var spec in specs)
            {
                weightMap[spec.Name] = file;
                total += spec.ByteLength;
                parameters += spec.ByteLength / 2;
            }
            tensorIndex += specs.Count;
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = weightMap };
        File.WriteAllText(Path.Combine(folder, SafetensorsCheckpoint.IndexFileName), index.ToJsonString(new() { WriteIndented = true }));
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToHuggingFaceJson().ToJsonString(new() { WriteIndented = true }));
        WriteTokenizer(Path.Combine(folder, "tokenizer.json"));
        return new Result(folder, total, shards.Count, parameters);
    }

    /// <summary>Falcon's tokenizer.json (shared by 7B/40B/180B), embedded gzip-compressed.</summary>
    public static void WriteTokenizer(string path)
    {
        using var resource = typeof(FalconSynth).Assembly.GetManifestResourceStream("Harpia.Models.Falcon.falcon-tokenizer.json.gz")
            ?? throw new InvalidOperationException("embedded Falcon tokenizer is missing");
        using var gzip = new GZipStream(resource, CompressionMode.Decompress);
        using var output = File.Create(path);
        gzip.CopyTo(output);
    }

    private static void WriteRandomBf16(Stream stream, SafetensorsTensorSpec spec, ulong seed, ulong tensorIndex)
    {
        long elements = spec.ByteLength / 2;
        // LayerNorm weights near 1 (as trained models have); everything else centred on 0.
        bool isNormWeight = spec.Shape.Length == 1 && spec.Name.EndsWith(".weight") && !spec.Name.Contains("lm_head");
        float mean = isNormWeight ? 1f : 0f;
        const int blocksPerBatch = 64;
        var buffer = new byte[(long)BlockElements * blocksPerBatch * 2];
        long blocks = (elements + BlockElements - 1) / BlockElements;
        for (long b0 = 0; b0 < blocks; b0 += blocksPerBatch)
        {
            int count = (int)Math.Min(blocksPerBatch, blocks - b0);
            ComputePool.For(count, (i0, i1) =>
            {
                for (int i = i0; i < i1; i++)
                {
                    long block = b0 + i;
                    int n = (int)Math.Min(BlockElements, elements - block * BlockElements);
                    FillBlock(buffer.AsSpan(i * BlockElements * 2, n * 2), seed, tensorIndex, (ulong)block, mean);
                }
            });
            long bytes = Math.Min((long)count * BlockElements, elements - b0 * BlockElements) * 2;
            stream.Write(buffer, 0, (int)bytes);
        }
    }

    /// <summary>
    /// One block of approximately normal bf16 values: each 64-bit draw gives four 16-bit uniforms whose sum
    /// (Irwin–Hall, n = 4) is bell-shaped with variance 4·(2¹⁶)²/12; scaled to <see cref="WeightStd"/>.
    /// </summary>
    private static void FillBlock(Span<byte> dst, ulong seed, ulong tensor, ulong block, float mean)
    {
        ulong state = SplitMix(seed ^ SplitMix(tensor * 0x9E3779B97F4A7C15UL ^ SplitMix(block + 0x632BE59BD9B4E019UL)));
        const float scale = WeightStd / 37837.23f; // sqrt(4 · 65536² / 12)
        var u16 = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(dst);
        for (int i = 0; i < u16.Length; i++)
        {
            ulong r = SplitMix(state + (ulong)i);
            long sum = (long)(r & 0xFFFF) + (long)((r >> 16) & 0xFFFF) + (long)((r >> 32) & 0xFFFF) + (long)(r >> 48) - 2 * 65535;
            float v = mean + sum * scale;
            uint bits = BitConverter.SingleToUInt32Bits(v);
            bits += 0x7FFF + ((bits >> 16) & 1); // round to nearest even
            u16[i] = (ushort)(bits >> 16);
        }
    }

    private static ulong SplitMix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }
}

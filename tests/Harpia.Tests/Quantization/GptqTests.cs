using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Quantization;
using Harpia.Tensors;
using Harpia.Tests.Models;
using Xunit.Abstractions;

namespace Harpia.Tests.Quantization;

/// <summary>GPTQ checkpoints: the shared fixtures against their float64 golden, synthetic ones against their exact f32 values.</summary>
public class GptqTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fixtures_ => new()
    {
        "tiny-falcon-180b-gptq-4bit--1g-actorder_True", "tiny-falcon-180b-gptq-4bit-128g-actorder_True", "tiny-falcon-180b-gptq-3bit-128g-actorder_True",
    };

    [Theory]
    [MemberData(nameof(Fixtures_))]
    public void FixtureMatchesGoldenByDefault(string name)
    {
        Assert.True(PackedActivations.Float, "f32 activations are the default for packed formats");
        PackedCheckpoints.CheckAgainstGolden(output, name, f32: PackedActivations.Float, 0.02f);
    }

    [Theory]
    [MemberData(nameof(Fixtures_))]
    public void EightBitActivationsStayNearGolden(string name)
    {
        // The opt-in integer path (HARPIA_ACTIVATIONS=q8): its error is the activation rounding alone.
        using var model = FalconModel.Load(Fixtures.Model(name));
        PackedCheckpoints.WithActivations(false, () =>
        {
            foreach (var prompt in FalconGoldenTests.Golden(name))
            {
                float err = FalconGoldenTests.MaxAbs(FalconGoldenTests.FullPass(model, prompt.Ids), prompt.LastLogits);
                output.WriteLine($"{name} (8-bit activations): last-logits max-abs {err:E2}");
                Assert.True(err < 0.5f, $"{name}: max-abs {err}");
            }
        });
    }

    [Theory]
    [InlineData(SimdPath.Scalar)]
    [InlineData(SimdPath.Vector256)]
    [InlineData(SimdPath.Vector512)]
    public unsafe void FloatActivationKernelsEqualTheirScalarReference(SimdPath path)
    {
        if (!SimdPaths.IsSupported(path)) return;
        var random = new Random(7);
        const int nb = 37;
        var q4 = new BlockQ4_0[nb];
        var q8 = new BlockQ8_0[nb];
        var x = new float[nb * 32];
        for (int b = 0; b < nb; b++)
        {
            q4[b].D = BitConverter.HalfToUInt16Bits((Half)(random.NextSingle() * 0.1f));
            q8[b].D = q4[b].D;
            for (int j = 0; j < 16; j++) q4[b].Qs[j] = (byte)random.Next(256);
            for (int j = 0; j < 32; j++) q8[b].Qs[j] = (sbyte)random.Next(-128, 128);
        }
        for (int i = 0; i < x.Length; i++) x[i] = random.NextSingle() * 4 - 2;
        fixed (BlockQ4_0* p4 = q4)
        fixed (BlockQ8_0* p8 = q8)
        fixed (float* px = x)
        {
            // Independent of the kernels: decode with the GGUF reference and dot in double.
            var w4 = new float[nb * 32];
            var w8 = new float[nb * 32];
            Q4_0.Dequantize(new ReadOnlySpan<byte>(p4, nb * BlockQ4_0.Bytes), w4);
            Harpia.Quantization.Q8_0.Dequantize(new ReadOnlySpan<byte>(p8, nb * BlockQ8_0.Bytes), w8);
            double e4 = 0, e8 = 0;
            for (int i = 0; i < x.Length; i++) { e4 += (double)w4[i] * x[i]; e8 += (double)w8[i] * x[i]; }
            Assert.Equal(e4, FloatActivationDot.Q4_0(p4, px, nb, path), 1e-3);
            Assert.Equal(e8, FloatActivationDot.Q8_0(p8, px, nb, path), 1e-2);
        }
    }

    [Theory]
    [InlineData(2, 64, true, true)]
    [InlineData(8, -1, false, false)]
    [InlineData(8, 128, true, true)]
    [InlineData(4, 32, false, false)]
    [InlineData(3, 128, false, true)]
    [InlineData(4, 128, false, true)]
    public void SyntheticCheckpointEqualsTheValuesItEncodes(int bits, int groupSize, bool sym, bool actOrder)
    {
        using var dir = new Fixtures.TempDir();
        var (gptq, reference) = PackedCheckpoints.WriteGptq(dir.Path, bits, groupSize, sym, actOrder, seed: bits * 1000 + groupSize, bias: bits == 8 && sym);
        using var q = FalconModel.Load(gptq);
        using var r = FalconModel.Load(reference);
        var ids = FalconGoldenTests.Golden(PackedCheckpoints.Source)[0].Ids;
        var expected = FalconGoldenTests.FullPass(r, ids, allLogits: true);
        int vocab = r.Shape.VocabSize;
        PackedCheckpoints.WithActivations(true, () =>
        {
            float err = FalconGoldenTests.MaxAbs(FalconGoldenTests.FullPass(q, ids, allLogits: true), expected);
            output.WriteLine($"{bits}-bit group {groupSize} sym {sym} act-order {actOrder}: f32 activations max-abs {err:E2}");
            Assert.True(err < 2e-3f, $"f32 activations: {err}");
        });
        PackedCheckpoints.WithActivations(false, () =>
        {
            // Rounding activations to 8 bits costs about what llama.cpp's Q8_0 activations cost (its Q8_0 file: 0.33 max-abs).
            var logits = FalconGoldenTests.FullPass(q, ids, allLogits: true);
            float err = FalconGoldenTests.MaxAbs(logits.AsSpan((ids.Length - 1) * vocab, vocab), expected.AsSpan((ids.Length - 1) * vocab, vocab));
            output.WriteLine($"  8-bit activations: last-logits max-abs {err:E2}");
            Assert.True(err < 0.3f, $"8-bit activations: {err}");
        });
        // Decoding a row gives the encoded values (embedding lookups and quantize-on-load use it).
        var w = q.Weights.Layers[1].DenseHTo4H.Weight;
        var wr = r.Weights.Layers[1].DenseHTo4H.Weight;
        var a = new float[w.Cols];
        var b = new float[w.Cols];
        for (int row = 0; row < w.Rows; row += 97)
        {
            MatMul.DequantizeRow(w, row, a);
            MatMul.DequantizeRow(wr, row, b);
            Assert.True(FalconGoldenTests.MaxAbs(a, b) < 1e-6f, $"row {row}");
        }
    }

    [Fact]
    public void ThreeBitStreamSplitsChannelsTenAndTwentyOneAcrossWords()
    {
        // AutoGPTQ's layout: channel 10's low 2 bits at bits 30–31 of word 0 and its top bit at bit 0 of word 1; channel 21's
        // low bit at bit 31 of word 1 and its top 2 bits at bits 0–1 of word 2.
        var words = new int[3];
        GptqPacking.Pack(words, 1, 0, 10, 3, 0b101);
        Assert.Equal(unchecked((int)0x4000_0000), words[0]);
        Assert.Equal(1, words[1]);
        words = new int[3];
        GptqPacking.Pack(words, 1, 0, 21, 3, 0b110);
        Assert.Equal(0, words[1]);
        Assert.Equal(0b11, words[2]);
        words = new int[3];
        GptqPacking.Pack(words, 1, 0, 21, 3, 0b011);
        Assert.Equal(unchecked((int)0x8000_0000), words[1]);
        Assert.Equal(0b01, words[2]);
        Assert.Equal(0b011, GptqPacking.Unpack(words, 1, 0, 21, 3));
        words = [0, 0, 0];
        GptqPacking.Pack(words, 1, 0, 22, 3, 0b111);
        Assert.Equal(0b111 << 2, words[2]);
        var all = new int[3];
        for (int c = 0; c < 32; c++) GptqPacking.Pack(all, 1, 0, c, 3, (c * 5) & 7);
        for (int c = 0; c < 32; c++) Assert.Equal((c * 5) & 7, GptqPacking.Unpack(all, 1, 0, c, 3));
    }

    private static HarpiaException LoadError(Action<string, Dictionary<string, (GgmlType Type, long[] Shape, byte[] Bytes)>> tamper, int bits = 4)
    {
        using var dir = new Fixtures.TempDir();
        var (gptq, _) = PackedCheckpoints.WriteGptq(dir.Path, bits, 128, true, true, seed: 1, tamper: tamper);
        return Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(gptq).Dispose());
    }

    [Fact]
    public void AQweightWhoseShapeDisagreesWithTheConfigIsNamed()
    {
        var e = LoadError((_, t) =>
        {
            const string name = "transformer.h.1.mlp.dense_4h_to_h.qweight";
            var (type, shape, bytes) = t[name];
            t[name] = (type, [shape[0] / 2, shape[1] * 2], bytes);
        });
        Assert.Contains("transformer.h.1.mlp.dense_4h_to_h.qweight", e.Message);
        Assert.Contains("expected [128, 256]", e.Message);
    }

    [Fact]
    public void AGroupIndexOutOfRangeIsNamed()
    {
        var e = LoadError((_, t) =>
        {
            const string name = "transformer.h.0.self_attention.dense.g_idx";
            var bytes = (byte[])t[name].Bytes.Clone();
            BitConverter.GetBytes(7).CopyTo(bytes, 4 * 5);
            t[name] = (t[name].Type, t[name].Shape, bytes);
        });
        Assert.Contains("transformer.h.0.self_attention.dense.g_idx", e.Message);
        Assert.Contains("g_idx[5] = 7", e.Message);
    }

    [Fact]
    public void MissingScalesAreNamed()
    {
        var e = LoadError((_, t) => t.Remove("transformer.h.0.mlp.dense_h_to_4h.scales"));
        Assert.Contains("tensor 'transformer.h.0.mlp.dense_h_to_4h.scales' is missing", e.Message);
    }

    [Fact]
    public void AGroupIndexOfTheWrongLengthIsNamed()
    {
        var e = LoadError((_, t) =>
        {
            const string name = "transformer.h.1.self_attention.query_key_value.g_idx";
            var (type, _, bytes) = t[name];
            t[name] = (type, [255], bytes[..(255 * 4)]);
        });
        Assert.Contains("transformer.h.1.self_attention.query_key_value.g_idx", e.Message);
        Assert.Contains("shape [255], expected [256]", e.Message);
    }

    [Fact]
    public void ScalesOfTheWrongGroupCountAreNamed()
    {
        // 128-groups over 1,024 inputs are 8 groups; a file with the scales of 4 disagrees with the config's group_size.
        var e = LoadError((_, t) =>
        {
            const string name = "transformer.h.0.mlp.dense_4h_to_h.scales";
            var (type, shape, bytes) = t[name];
            t[name] = (type, [shape[0] / 2, shape[1]], bytes[..(bytes.Length / 2)]);
        });
        Assert.Contains("transformer.h.0.mlp.dense_4h_to_h.scales", e.Message);
        Assert.Contains("expected [8, 256]", e.Message);
    }

    [Theory]
    [InlineData(100)]      // inside the JSON header
    [InlineData(200_000)]  // inside the tensor data
    public void ATruncatedSafetensorsFileIsAClearError(int keep)
    {
        using var dir = new Fixtures.TempDir();
        const string name = "tiny-falcon-180b-gptq-4bit-128g-actorder_True";
        foreach (var f in new[] { "config.json", "quantize_config.json" }) File.Copy(Path.Combine(Fixtures.Model(name), f), dir.File(f));
        File.WriteAllBytes(dir.File("model.safetensors"), File.ReadAllBytes(Path.Combine(Fixtures.Model(name), "model.safetensors"))[..keep]);
        var e = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(dir.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void TgisQuantizeGptqFlagLoadsAGptqCheckpointAsStoredAndRefusesAnythingElse()
    {
        // The guide's TGI command passes --quantize gptq with the GPTQ repository: the flag names the checkpoint's format.
        const string name = "tiny-falcon-180b-gptq-4bit--1g-actorder_True";
        using (var model = Harpia.Runtime.ModelHost.LoadModel(Fixtures.Model(name), "gptq"))
        {
            var weight = model.Architecture.LayerMatrices.First();
            Assert.Equal(GgmlType.GPTQ, weight.Type);
            var prompt = FalconGoldenTests.Golden(name)[0];
            var logits = new float[model.Shape.VocabSize];
            model.Forward([new SequenceChunk(prompt.Ids, 0, new DenseKvCache(model.Shape, 64))], logits);
            Assert.Equal(prompt.ArgmaxPerPosition[^1], FalconGoldenTests.ArgMax(logits));
        }
        Assert.True(CheckpointQuantization.IsCheckpointFlag(Fixtures.Model(name), "GPTQ"));
        Assert.True(CheckpointQuantization.IsCheckpointFlag(Fixtures.Model("tiny-falcon-180b-bnb-nf4-dq"), "bitsandbytes-nf4"));
        Assert.False(CheckpointQuantization.IsCheckpointFlag(Fixtures.Model("tiny-falcon-180b-h256"), "bitsandbytes-nf4")); // quantized on load instead
        Assert.False(CheckpointQuantization.IsCheckpointFlag(Fixtures.Model(name), "q4_k_m"));
        var e = Assert.Throws<HarpiaException>(() => Harpia.Runtime.ModelHost.LoadModel(Fixtures.Model("tiny-falcon-180b-h256"), "gptq").Dispose());
        Assert.Contains("--quantize gptq", e.Message);
        Assert.Contains("is not a GPTQ checkpoint", e.Message);
        var gguf = Assert.Throws<HarpiaException>(() => Harpia.Runtime.ModelHost.LoadModel(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q8_0.gguf"), "gptq").Dispose());
        Assert.Contains("is not a GPTQ checkpoint", gguf.Message);
    }

    [Fact]
    public void BitsTheFormatDoesNotHaveAreRefused()
    {
        using var dir = new Fixtures.TempDir();
        var (gptq, _) = PackedCheckpoints.WriteGptq(dir.Path, 4, 128, true, true, seed: 1);
        string config = Path.Combine(gptq, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"bits\":4", "\"bits\":5"));
        var e = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(gptq).Dispose());
        Assert.Contains("bits 5", e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void QuantizeConfigJsonAloneIsEnough()
    {
        using var dir = new Fixtures.TempDir();
        var (gptq, reference) = PackedCheckpoints.WriteGptq(dir.Path, 4, 64, true, true, seed: 3);
        string config = Path.Combine(gptq, "config.json");
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        var qc = node["quantization_config"]!.ToJsonString();
        node.Remove("quantization_config");
        File.WriteAllText(config, node.ToJsonString());
        File.WriteAllText(Path.Combine(gptq, "quantize_config.json"), qc);
        using var q = FalconModel.Load(gptq);
        using var r = FalconModel.Load(reference);
        var ids = new[] { 5, 17, 300 };
        PackedCheckpoints.WithActivations(true, () => Assert.True(FalconGoldenTests.MaxAbs(FalconGoldenTests.FullPass(q, ids), FalconGoldenTests.FullPass(r, ids)) < 2e-3f));
        Assert.Equal(GgmlType.GPTQ, q.Weights.Layers[0].Dense.Weight.Type);
        Assert.Equal("GPTQ 4-bit, group 64, act-order", q.Weights.Layers[0].Dense.Weight.Packed!.Format);
    }
}

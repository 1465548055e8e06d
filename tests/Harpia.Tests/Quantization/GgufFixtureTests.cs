using Harpia.Quantization;
using Harpia.Tensors;
using Xunit.Abstractions;
using static Harpia.Tests.Quantization.QuantTestData;

namespace Harpia.Tests.Quantization;

/// <summary>
/// Checks the block decoders and quantizers against llama.cpp's own files for tiny-falcon-180b-h256:
/// model-Q8_0.gguf / model-Q4_K_M.gguf (written by llama.cpp) against model-f32.gguf.
/// </summary>
public class GgufFixtureTests(ITestOutputHelper output)
{
    private static string Dir => Fixtures.Model("tiny-falcon-180b-h256");

    private static readonly Lazy<TestGguf> F32 = new(() => new TestGguf(Path.Combine(Dir, "model-f32.gguf")));

    [Theory]
    [InlineData("model-Q8_0.gguf")]
    [InlineData("model-Q4_K_M.gguf")]
    public void LlamaCppTensorsDecodeCloseToF32AndOurQuantizerIsAsGood(string file)
    {
        var q = new TestGguf(Path.Combine(Dir, file));
        int checkedTensors = 0;
        var seenTypes = new HashSet<GgmlType>();
        foreach (var t in q.Tensors.Values.OrderBy(t => t.Name))
        {
            if (!QuantFormats.IsSupported(t.Type)) continue;
            var reference = F32.Value.Tensors[t.Name];
            Assert.Equal(GgmlType.F32, reference.Type);
            Assert.Equal(reference.Dims, t.Dims);
            float[] exact = F32.Value.Dequantize(reference);
            float[] theirs = q.Dequantize(t);
            double rms = Rms(exact);
            double theirErr = RmsDiff(exact, theirs) / rms;

            // Our reference quantizer on the same f32 data, decoded by our dequantizer.
            var ours = new byte[t.Bytes];
            int cols = (int)t.Dims[0];
            long rowBytes = GgmlTypes.ByteSize(t.Type, cols)!.Value;
            for (int r = 0; r < exact.Length / cols; r++)
                QuantFormats.Quantize(t.Type, exact.AsSpan(r * cols, cols), ours.AsSpan((int)(r * rowBytes), (int)rowBytes));
            var oursDecoded = new float[exact.Length];
            for (int r = 0; r < exact.Length / cols; r++)
                QuantFormats.Dequantize(t.Type, ours.AsSpan((int)(r * rowBytes), (int)rowBytes), oursDecoded.AsSpan(r * cols, cols));
            double ourErr = RmsDiff(exact, oursDecoded) / rms;
            var theirBytes = q.Data(t);
            int same = 0;
            for (int i = 0; i < ours.Length; i++) if (ours[i] == theirBytes[i]) same++;
            output.WriteLine($"{t.Name,-28} {t.Type,-5} llama.cpp rel-rms {theirErr:F5}  ours {ourErr:F5}  bytes identical {100.0 * same / ours.Length:F2}%");

            Assert.True(theirErr < RelRmsBound(t.Type), $"{t.Name}: decoding llama.cpp's {t.Type} gives rel rms {theirErr}");
            Assert.True(ourErr <= theirErr * 1.10 + 1e-7, $"{t.Name}: our {t.Type} rel rms {ourErr} vs llama.cpp {theirErr}");
            if (t.Type == GgmlType.Q8_0) Assert.Equal(ours.Length, same);
            checkedTensors++;
            seenTypes.Add(t.Type);
        }
        output.WriteLine($"{checkedTensors} quantized tensors, types {string.Join(",", seenTypes)}");
        Assert.True(checkedTensors >= 4);
        if (file.Contains("Q4_K_M")) Assert.Contains(GgmlType.Q4_K, seenTypes);
    }
}

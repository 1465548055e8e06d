using Harpia.Backends.Cuda;
using Harpia.Backends.Cuda.Kernels;
using Harpia.Tensors;
using ILGPU;
using ILGPU.Runtime;
using Half = System.Half;

namespace Harpia.Tests.Backends.Cuda;

/// <summary>
/// Every CUDA kernel run on ILGPU's CPU accelerator against Harpia's CPU kernels and scalar references. Shapes are
/// small (the simulator costs ~60 µs per thread) but odd: rows that leave partial warps and tiles, several groups
/// so grid-stride loops wrap, and columns spanning more than one quant block.
/// </summary>
[Collection(CudaSimulatorCollection.Name)]
public sealed class CudaKernelTests(CudaSimulatorFixture fixture)
{
    private readonly GpuDevice _gpu = fixture.Device;
    private Accelerator Acc => _gpu.Accelerator;
    private GpuKernels K => _gpu.Kernels;

    private static readonly GgmlType[] WeightTypes =
    [
        GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.Q2_K, GgmlType.Q3_K,
        GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.F16, GgmlType.BF16, GgmlType.F32,
    ];

    /// <summary>
    /// Decode matvec for every weight type: 13 rows (3 one-warp groups on the simulator: the grid-stride loop wraps), 512 columns
    /// (two k-quant super-blocks, 16 lanes' chunks per warp pass), 5 tokens (a full tile of 4 and a partial one).
    /// Reference: the scalar dequantizer's row dotted in f64. Tolerance: f32 rounding of a 512-term sum.
    /// </summary>
    [Fact]
    public void MatVec_matches_scalar_dequantized_reference_for_every_type()
    {
        const int rows = 13, cols = 512, n = 5;
        var x = TestData.Random(n * cols, 2);
        using var dx = Acc.Allocate1D(x);
        using var dy = Acc.Allocate1D<float>(n * rows);
        foreach (var type in WeightTypes)
        {
            using var host = new HostWeight(type, rows, cols, TestData.Random(rows * cols, 1, 0.5f));
            using var w = new GpuWeight(_gpu, host.Matrix);
            K.MatMul(w, dx.View, n, dy.View, tiled: false);
            var y = dy.GetAsArray1D();
            for (int r = 0; r < rows; r++)
            {
                var row = host.Row(r);
                for (int t = 0; t < n; t++)
                {
                    double want = 0, mag = 0;
                    for (int c = 0; c < cols; c++) { want += (double)row[c] * x[t * cols + c]; mag += Math.Abs((double)row[c] * x[t * cols + c]); }
                    Assert.True(Math.Abs(y[t * rows + r] - want) <= 1e-5 * mag + 1e-6, $"{type} row {r} token {t}: {y[t * rows + r]} vs {want}");
                }
            }
        }
    }

    /// <summary>
    /// The tiled product (the tensor-core path's C# twin on the simulator): 70 rows (a full 64-row tile and a partial
    /// one), 33 tokens (a full 32-token tile and one token), 256 columns (8 K steps). Weights and activations are
    /// rounded to f16 for the tiles, as on tensor cores, so the reference rounds them too; sums in f32.
    /// </summary>
    [Fact]
    public void Tiled_matmul_twin_matches_f16_rounded_reference()
    {
        const int rows = 70, cols = 256, n = 33;
        var x = TestData.Random(n * cols, 4);
        using var dx = Acc.Allocate1D(x);
        using var dy = Acc.Allocate1D<float>(n * rows);
        foreach (var type in new[] { GgmlType.Q4_K, GgmlType.Q8_0, GgmlType.BF16 })
        {
            using var host = new HostWeight(type, rows, cols, TestData.Random(rows * cols, 3, 0.5f));
            using var w = new GpuWeight(_gpu, host.Matrix);
            K.MatMul(w, dx.View, n, dy.View, tiled: true);
            var y = dy.GetAsArray1D();
            for (int r = 0; r < rows; r++)
            {
                var row = host.Row(r);
                for (int t = 0; t < n; t++)
                {
                    double want = 0, mag = 0;
                    for (int c = 0; c < cols; c++)
                    {
                        double p = (double)(float)(Half)row[c] * (float)(Half)x[t * cols + c];
                        want += p; mag += Math.Abs(p);
                    }
                    Assert.True(Math.Abs(y[t * rows + r] - want) <= 1e-5 * mag + 1e-6, $"{type} row {r} token {t}: {y[t * rows + r]} vs {want}");
                }
            }
        }
    }

    [Fact]
    public void Half_conversions_match_System_Half_bit_for_bit()
    {
        var values = new List<float> { 0f, -0f, 1f, -1f, 65504f, 65519.99f, 65520f, 70000f, float.PositiveInfinity, float.NegativeInfinity,
            6.1035156e-5f, 6.1e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.98023259e-8f, 8.9406967e-8f, 1e-10f, 0.1f, 1.0009766f, 1.00048828125f, 1.00146484375f };
        var rng = new Random(5);
        for (int i = 0; i < 200; i++) values.Add((float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-26, 17))));
        var x = values.ToArray();
        using var dx = Acc.Allocate1D(x);
        using var bits = Acc.Allocate1D<ushort>(x.Length);
        using var back = Acc.Allocate1D<float>(x.Length);
        K.HalfRoundTrip(dx.View, bits.View, back.View, x.Length);
        var b = bits.GetAsArray1D();
        var f = back.GetAsArray1D();
        for (int i = 0; i < x.Length; i++)
        {
            Assert.True(BitConverter.HalfToUInt16Bits((Half)x[i]) == b[i], $"{x[i]:R}: {b[i]:x4} vs {BitConverter.HalfToUInt16Bits((Half)x[i]):x4}");
            Assert.Equal((float)(Half)x[i], f[i]);
        }
    }

    /// <summary>LayerNorm (with and without bias) and RMSNorm: 5 rows over 3 groups, 300 values (partial warp in each pass).</summary>
    [Fact]
    public void Norms_match_cpu()
    {
        const int rows = 5, dim = 300;
        var x = TestData.Random(rows * dim, 6, 3f);
        for (int i = 0; i < x.Length; i++) x[i] += 0.7f;   // a mean to subtract
        var weight = TestData.Random(dim, 7);
        var bias = TestData.Random(dim, 8);
        using var dx = Acc.Allocate1D(x);
        using var dw = Acc.Allocate1D(weight);
        using var db = Acc.Allocate1D(bias);
        using var dy = Acc.Allocate1D<float>(x.Length);
        var want = new float[x.Length];

        K.LayerNorm(dx.View, dy.View, rows, dim, dw.View, db.View, 1e-5f);
        Norms.LayerNorm(x, want, rows, dim, weight, bias, 1e-5f);
        AssertClose(want, dy.GetAsArray1D(), 2e-5f, "LayerNorm");

        K.LayerNorm(dx.View, dy.View, rows, dim, dw.View, null, 1e-5f);
        Norms.LayerNorm(x, want, rows, dim, weight, new float[dim], 1e-5f);
        AssertClose(want, dy.GetAsArray1D(), 2e-5f, "LayerNorm without bias");

        K.RmsNorm(dx.View, dy.View, rows, dim, dw.View, 1e-6f);
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            double rstd = 1 / Math.Sqrt(ss / dim + 1e-6);
            for (int i = 0; i < dim; i++) want[r * dim + i] = (float)(x[r * dim + i] * rstd * weight[i]);
        }
        AssertClose(want, dy.GetAsArray1D(), 2e-5f, "RmsNorm");
    }

    [Fact]
    public void Activations_and_adds_match_cpu()
    {
        const int n = 3, cols = 333;
        var x = TestData.Random(n * cols, 9, 6f);
        var other = TestData.Random(n * cols, 10);
        var bias = TestData.Random(cols, 11);
        using var dx = Acc.Allocate1D(x);
        using var dother = Acc.Allocate1D(other);
        using var dbias = Acc.Allocate1D(bias);

        K.Gelu(dx.View, x.Length);
        AssertClose(x.Select(Activations.GeluScalar).ToArray(), dx.GetAsArray1D(), 1e-6f, "GELU");
        // GELU against the f64 erf too: the kernel is "exact" GELU, not the tanh form.
        var gelu = dx.GetAsArray1D();
        for (int i = 0; i < x.Length; i++)
            Assert.True(Math.Abs(gelu[i] - 0.5 * x[i] * (1 + Activations.Erf(x[i] / Math.Sqrt(2)))) < 2e-6 * (1 + Math.Abs(x[i])), $"GELU({x[i]})");

        dx.CopyFromCPU(x);
        K.Silu(dx.View, x.Length);
        AssertClose(x.Select(v => (float)(v / (1 + Math.Exp(-v)))).ToArray(), dx.GetAsArray1D(), 2e-6f, "SiLU");

        dx.CopyFromCPU(x);
        K.SiluMul(dx.View, dother.View, x.Length);
        AssertClose(x.Select((v, i) => (float)(v / (1 + Math.Exp(-v)) * other[i])).ToArray(), dx.GetAsArray1D(), 2e-6f, "SiLU·up");

        dx.CopyFromCPU(x);
        K.Add(dx.View, dother.View, x.Length);
        Assert.Equal(x.Select((v, i) => v + other[i]).ToArray(), dx.GetAsArray1D());

        dx.CopyFromCPU(x);
        K.AddBias(dx.View, dbias.View, cols, n);
        Assert.Equal(x.Select((v, i) => v + bias[i % cols]).ToArray(), dx.GetAsArray1D());
    }

    /// <summary>Rotary: rotate-half over full heads (Falcon) against Tensors.Rope, and interleaved partial rotary.</summary>
    [Fact]
    public void Rope_matches_cpu_in_both_styles()
    {
        const int n = 3, qHeads = 4, kHeads = 2, headDim = 16;
        int[] positions = [0, 7, 300];
        foreach (var (pairs, interleaved) in new[] { (headDim / 2, false), (headDim / 4, true) })
        {
            var q = TestData.Random(n * qHeads * headDim, 12);
            var k = TestData.Random(n * kHeads * headDim, 13);
            var invFreq = new double[pairs];
            for (int i = 0; i < pairs; i++) invFreq[i] = Math.Pow(10000, -2.0 * i / (2 * pairs));
            var cos = new float[n * pairs];
            var sin = new float[n * pairs];
            for (int t = 0; t < n; t++) Rope.Table(positions[t], invFreq, cos.AsSpan(t * pairs, pairs), sin.AsSpan(t * pairs, pairs));
            using var dq = Acc.Allocate1D(q);
            using var dk = Acc.Allocate1D(k);
            using var dcos = Acc.Allocate1D(cos);
            using var dsin = Acc.Allocate1D(sin);
            K.Rope(dq.View, qHeads, dk.View, kHeads, headDim, n, dcos.View, dsin.View, pairs, interleaved);
            for (int t = 0; t < n; t++)
            {
                var c = cos.AsSpan(t * pairs, pairs);
                var s = sin.AsSpan(t * pairs, pairs);
                if (!interleaved)
                {
                    Rope.Apply(q.AsSpan(t * qHeads * headDim, qHeads * headDim), qHeads, headDim, c, s);
                    Rope.Apply(k.AsSpan(t * kHeads * headDim, kHeads * headDim), kHeads, headDim, c, s);
                }
                else
                {
                    RotateInterleaved(q.AsSpan(t * qHeads * headDim, qHeads * headDim), qHeads, headDim, c, s);
                    RotateInterleaved(k.AsSpan(t * kHeads * headDim, kHeads * headDim), kHeads, headDim, c, s);
                }
            }
            AssertClose(q, dq.GetAsArray1D(), 1e-6f, $"rope q interleaved={interleaved}");
            AssertClose(k, dk.GetAsArray1D(), 1e-6f, $"rope k interleaved={interleaved}");
        }
    }

    private static void RotateInterleaved(Span<float> x, int heads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < cos.Length; i++)
            {
                int a = h * headDim + 2 * i, b = a + 1;
                float x1 = x[a], x2 = x[b];
                x[a] = x1 * cos[i] - x2 * sin[i];
                x[b] = x2 * cos[i] + x1 * sin[i];
            }
    }

    /// <summary>Embedding rows decoded from a Q4_K and a bf16 table equal the scalar dequantizer's rows exactly; gather and column copy move the right values.</summary>
    [Fact]
    public void Embedding_gather_and_column_copy_match_cpu()
    {
        const int vocab = 9, cols = 256;
        int[] tokens = [3, 0, 8, 3];
        using var dtokens = Acc.Allocate1D(tokens);
        using var dy = Acc.Allocate1D<float>(tokens.Length * cols);
        foreach (var type in new[] { GgmlType.Q4_K, GgmlType.BF16 })
        {
            using var host = new HostWeight(type, vocab, cols, TestData.Random(vocab * cols, 14));
            using var table = new GpuWeight(_gpu, host.Matrix);
            K.Embed(table, dtokens.View, tokens.Length, dy.View);
            var y = dy.GetAsArray1D();
            for (int t = 0; t < tokens.Length; t++) Assert.Equal(host.Row(tokens[t]), y.AsSpan(t * cols, cols).ToArray());
        }

        const int n = 3, srcCols = 20;
        var src = Enumerable.Range(0, 5 * srcCols).Select(i => (float)i).ToArray();
        using var dsrc = Acc.Allocate1D(src);
        int[] rows = [4, 1, 4];
        using var drows = Acc.Allocate1D(rows);
        using var dst = Acc.Allocate1D<float>(n * srcCols);
        K.GatherRows(dsrc.View, drows.View, n, srcCols, dst.View);
        Assert.Equal(rows.SelectMany(r => src.Skip(r * srcCols).Take(srcCols)).ToArray(), dst.GetAsArray1D());

        // Falcon's per-group fused QKV: 2 groups of [q q k v] × width 3 → keys at offset 6, stride 12.
        const int groups = 2, width = 3, groupStride = 12, offset = 6;
        using var cols2 = Acc.Allocate1D<float>(n * groups * width);
        K.CopyColumns(dsrc.View.SubView(0, n * 2 * groupStride).AsContiguous(), 2 * groupStride, n, offset, groups, groupStride, width, cols2.View);
        var want = new List<float>();
        for (int t = 0; t < n; t++)
            for (int g = 0; g < groups; g++)
                for (int j = 0; j < width; j++) want.Add(src[t * 2 * groupStride + offset + g * groupStride + j]);
        Assert.Equal(want.ToArray(), cols2.GetAsArray1D());
    }

    [Fact]
    public void Argmax_takes_the_first_of_equal_maxima()
    {
        const int rows = 3, vocab = 1000;
        var logits = TestData.Random(rows * vocab, 15);
        logits[0 * vocab + 999] = 5f;                             // last element
        logits[1 * vocab + 17] = 4f; logits[1 * vocab + 900] = 4f;  // a tie: the lower index wins
        logits[2 * vocab + 0] = 3f;                               // first element
        using var dl = Acc.Allocate1D(logits);
        using var ids = Acc.Allocate1D<int>(rows);
        K.Argmax(dl.View, rows, vocab, ids.View);
        Assert.Equal([999, 17, 0], ids.GetAsArray1D());
    }

    /// <summary>
    /// Paged attention: two sequences with scattered block tables (block size 16). Sequence A decodes one token at
    /// position 299 (three splits of 128 positions), sequence B prefills positions 2..4 (causal inside the chunk).
    /// 4 query heads share 2 KV heads. Keys and values are stored by the StoreKv kernel (f16 and f32 storage), and the
    /// result compared with Tensors.Attention over the same (f16-rounded) vectors.
    /// </summary>
    [Fact]
    public void Paged_split_attention_matches_cpu_attention()
    {
        const int heads = 4, kvHeads = 2, headDim = 64, blockSize = 16, blocks = 24;
        int rowElems = kvHeads * headDim;
        int[][] tables = [[5, 0, 17, 3, 9, 11, 2, 20, 7, 13, 1, 22, 6, 15, 4, 19, 8, 12, 10], [14, 21]];
        int[] lengths = [300, 5];
        // Rows: A's token at 299, then B's tokens at 2, 3, 4.
        int[] rowSeq = [0, 1, 1, 1], rowPos = [299, 2, 3, 4];
        int rows = rowSeq.Length;
        float scale = 1f / MathF.Sqrt(headDim);
        foreach (bool half in new[] { true, false })
        {
            // Every position of both sequences gets a K and V row, written through StoreKv in one launch.
            var slots = new List<int>();
            var allK = new List<float>();
            var allV = new List<float>();
            var keys = new float[2][][];
            var values = new float[2][][];
            for (int s = 0; s < 2; s++)
            {
                keys[s] = new float[lengths[s]][];
                values[s] = new float[lengths[s]][];
                for (int p = 0; p < lengths[s]; p++)
                {
                    keys[s][p] = TestData.Random(rowElems, 1000 * s + 2 * p, 2f);
                    values[s][p] = TestData.Random(rowElems, 1000 * s + 2 * p + 1);
                    slots.Add(tables[s][p / blockSize] * blockSize + p % blockSize);
                    allK.AddRange(keys[s][p]);
                    allV.AddRange(values[s][p]);
                    if (half)
                    {
                        keys[s][p] = keys[s][p].Select(v => (float)(Half)v).ToArray();
                        values[s][p] = values[s][p].Select(v => (float)(Half)v).ToArray();
                    }
                }
            }
            long storage = (long)blocks * 2 * blockSize * rowElems;
            using var kvHalf = Acc.Allocate1D<ushort>(half ? storage : 1);
            using var kvFull = Acc.Allocate1D<float>(half ? 1 : storage);
            using var dk = Acc.Allocate1D(allK.ToArray());
            using var dv = Acc.Allocate1D(allV.ToArray());
            using var dslots = Acc.Allocate1D(slots.ToArray());
            K.StoreKv(dk.View, dv.View, dslots.View, slots.Count, rowElems, blockSize, kvHalf.View, kvFull.View, half);

            var q = TestData.Random(rows * heads * headDim, 77);
            using var dq = Acc.Allocate1D(q);
            using var dseq = Acc.Allocate1D(rowSeq);
            using var dpos = Acc.Allocate1D(rowPos);
            using var dstart = Acc.Allocate1D(new[] { 0, tables[0].Length, tables[0].Length + tables[1].Length });
            using var dtables = Acc.Allocate1D(tables.SelectMany(t => t).ToArray());
            int maxContext = 300;
            using var partial = Acc.Allocate1D<float>(GpuKernels.PartialFloats(rows, heads, headDim, maxContext));
            using var output = Acc.Allocate1D<float>(rows * heads * headDim);
            K.Attention(dq.View, kvHalf.View, kvFull.View, half, blockSize, dseq.View, dpos.View, dstart.View, dtables.View,
                rows, heads, kvHeads, headDim, scale, maxContext, partial.View, output.View);
            var got = output.GetAsArray1D();

            var want = new float[rows * heads * headDim];
            var scores = new float[maxContext];
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < heads; h++)
                {
                    var head = new HostHead(keys[rowSeq[r]], values[rowSeq[r]], h / (heads / kvHeads), headDim);
                    Attention.AttendOneHead(q.AsSpan((r * heads + h) * headDim, headDim), rowPos[r] + 1, scale, head, scores,
                        want.AsSpan((r * heads + h) * headDim, headDim));
                }
            AssertClose(want, got, 2e-5f, $"attention (f16 KV: {half})");
        }
    }

    private readonly struct HostHead(float[][] keys, float[][] values, int kvHead, int headDim) : Attention.IHeadVectors
    {
        public ReadOnlySpan<float> Key(int position) => keys[position].AsSpan(kvHead * headDim, headDim);
        public ReadOnlySpan<float> Value(int position) => values[position].AsSpan(kvHead * headDim, headDim);
    }

    private static void AssertClose(float[] want, float[] got, float tolerance, string what)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= tolerance * (1 + Math.Abs(want[i])), $"{what}[{i}]: {got[i]} vs {want[i]}");
    }
}

using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Tests.Backends;

/// <summary>
/// The backend conformance suite (llama.cpp's test-backend-ops): every op of <see cref="IComputeBackend"/> on every
/// backend of <see cref="ConformanceBackends"/>, against plain f64 references written here (not the kernels under
/// test), for every weight type Harpia reads, on odd shapes (row counts that leave partial tiles, columns that leave
/// vector tails, n smaller than the tensor's rows). Each comparison states its tolerance and why.
/// </summary>
public sealed class BackendConformanceTests
{
    // ---- the weight types Harpia reads, and how far their quantization may move a product ------------------------

    /// <summary>Every weight type a checkpoint can hand the matmul: floats, each GGUF block type, GPTQ 4-bit.</summary>
    public static readonly GgmlType[] WeightTypes =
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16,
        GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
        GgmlType.GPTQ,
    ];

    /// <summary>
    /// Largest relative RMS error of x·Wᵀ (or of embedding rows) computed from the encoded weights against the f32
    /// weights they were encoded from (uniform in [−0.5, 0.5]): 2.5 × the format's own precision as measured over
    /// 1,280 embedding values (F16 1.8e-4, BF16 1.5e-3, Q8_0 3.8e-3, Q6_K 1.3e-2, Q5_0 3.1e-2, Q5_K 2.7e-2,
    /// Q4_0 6.3e-2, Q4_K 5.3e-2, GPTQ-4 6.4e-2, Q3_K 0.13, Q2_K 0.22), which covers a 13-output product's sampling
    /// spread; a decoder that mixes up scales, nibbles or sub-blocks (errors of order 1) fails.
    /// </summary>
    private static double QuantizationTolerance(GgmlType type) => type switch
    {
        GgmlType.F32 => 1e-6,
        GgmlType.F16 => 5e-4,
        GgmlType.BF16 => 4e-3,
        GgmlType.Q8_0 => 1.2e-2,
        GgmlType.Q6_K => 3.5e-2,
        GgmlType.Q5_0 or GgmlType.Q5_K => 8e-2,
        GgmlType.Q4_0 or GgmlType.Q4_K or GgmlType.GPTQ => 0.16,
        GgmlType.Q3_K => 0.32,
        GgmlType.Q2_K => 0.56,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>
    /// Block size over which the backend may round activations to int8 for this weight type (ggml's vec_dot_type:
    /// Q8_0 blocks of 32 for the 32-blocks, Q8_K blocks of 256 for k-quants), or 0 where activations stay f32.
    /// </summary>
    private static int ActivationBlock(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 0,
        GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.GPTQ => 32,
        _ => 256,
    };

    private static int BlockOf(GgmlType type) => type switch
    {
        GgmlType.GPTQ => 128,
        _ => GgmlTypes.Geometry(type).BlockSize,
    };

    // ---- memory ----------------------------------------------------------------------------------------------

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void Upload_download_view_and_copy_move_exact_values(string backendName)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        var values = Data(5 * 7, 1);
        using var t = b.Allocate(TensorType.F32, 5, 7);
        Assert.Equal((5, 7, TensorType.F32), (t.Rows, t.Cols, t.Type));
        b.Upload(values, t);
        AssertExact("download of an upload", Read(b, t, values.Length), values);

        // Partial upload writes only the first rows; partial download reads a prefix.
        var three = Data(3 * 7, 2);
        b.Upload(three, t);
        AssertExact("partial upload", Read(b, t, values.Length), [.. three, .. values.AsSpan(21)]);
        AssertExact("partial download", Read(b, t, 10), three.AsSpan(0, 10).ToArray());

        using var oneRow = b.Upload(values.AsSpan(0, 9));
        Assert.Equal((1, 9), (oneRow.Rows, oneRow.Cols));
        AssertExact("Upload(values)", Read(b, oneRow, 9), values.AsSpan(0, 9).ToArray());

        // A view shares memory: 35 elements seen as 5 columns are 7 rows of the same numbers.
        using var view = b.View(t, 5);
        Assert.Equal((7, 5), (view.Rows, view.Cols));
        var viaView = Data(35, 3);
        b.Upload(viaView, view);
        AssertExact("write through a view, read the original", Read(b, t, 35), viaView);

        // CopyFrom: the first rows, from this backend and from a host CPU tensor (a cross-device copy).
        using var dst = b.Allocate(TensorType.F32, 5, 7);
        b.Upload(values, dst);
        b.CopyFrom(t, 2, dst);
        AssertExact("CopyFrom 2 rows", Read(b, dst, 35), [.. viaView.AsSpan(0, 14), .. values.AsSpan(14)]);
        using var host = CpuBackend.Default.Upload(three);
        using var hostView = CpuBackend.Default.View(host, 7);
        b.CopyFrom(hostView, 3, dst);
        AssertExact("CopyFrom a CPU tensor", Read(b, dst, 21), three);
        b.Synchronize();

        using var half = b.Allocate(TensorType.F16, 3, 4);
        Assert.Equal((TensorType.F16, 12L), (half.Type, half.Elements));
    }

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.BackendsAndKvTypes), MemberType = typeof(ConformanceBackends))]
    public void Kv_storage_has_the_planned_size_and_refuses_bad_shapes(string backendName, KvCacheDtype dtype)
    {
        using var s = Session.Open(backendName);
        using var kv = s.Backend.AllocateKv(5, 3, 2, 8, dtype);
        Assert.Equal((5, 3, 2, 8, dtype, 16), (kv.Blocks, kv.BlockSize, kv.KvHeads, kv.HeadDim, kv.Dtype, kv.RowElements));
        Assert.Equal(5L * 3 * 2 * 2 * 8 * KvCacheDtypes.BytesPerElement(dtype), kv.Bytes);
        kv.Clear();
        Assert.Throws<HarpiaException>(() => s.Backend.AllocateKv(0, 3, 2, 8, dtype));
        Assert.Throws<HarpiaException>(() => s.Backend.AllocateKv(5, 0, 2, 8, dtype));
        Assert.Throws<HarpiaException>(() => s.Backend.AllocateKv(5, 3, 0, 8, dtype));
    }

    // ---- matmul, logits, embeddings: every weight type --------------------------------------------------------

    /// <summary>
    /// (tokens, rows, cols): decode, a prefill with a partial 8-row tile, a 37-row matrix, a larger one, and a long
    /// row (16 k-quant super-blocks, 128 Q8_0 blocks) over 131 rows so the row split leaves a ragged last chunk.
    /// </summary>
    private static readonly (int N, int Rows, int Cols)[] MatMulShapes = [(1, 13, 512), (5, 13, 512), (3, 37, 256), (9, 70, 1024), (2, 131, 4096)];

    /// <summary>Extra shapes for the 32-element block types: 3 blocks per row (not a whole 256 super-block).</summary>
    private static readonly (int N, int Rows, int Cols)[] SmallBlockShapes = [(1, 11, 96), (4, 11, 96)];

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void MatMul_matches_the_f64_reference_for_every_weight_type_and_shape(string backendName)
    {
        using var s = Session.Open(backendName);
        foreach (var type in WeightTypes)
        {
            var shapes = BlockOf(type) == 32 ? [.. MatMulShapes, .. SmallBlockShapes] : MatMulShapes;
            foreach (var (n, rows0, cols) in shapes)
            {
                int rows = RowsFor(type, rows0);
                using var w = TestWeight.Create(type, rows, cols, seed: rows * 31 + cols);
                using var dw = s.Backend.PrepareWeight(w.Matrix);
                Assert.Equal((type, rows, cols), (dw.Type, dw.Rows, dw.Cols));
                var x = Data(n * cols, cols + n);
                // Tensors with two spare rows: the op must use n rows and leave the rest alone.
                using var dx = Put(s.Backend, [.. x, .. Data(2 * cols, 9)], n + 2, cols);
                using var dy = s.Backend.Allocate(TensorType.F32, n + 2, rows);
                var sentinel = Data(2 * rows, 5);
                s.Backend.Upload([.. new float[n * rows], .. sentinel], dy);
                s.Backend.MatMul(dw, dx, n, dy);
                var y = Read(s.Backend, dy, (n + 2) * rows);
                string what = $"{backendName} MatMul {type} [{n}×{cols}]·[{rows}×{cols}]ᵀ";
                CheckProduct(what, type, w, x, n, y);
                AssertExact(what + " spare rows", y[(n * rows)..], sentinel);
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void Logits_match_the_f64_reference_for_every_weight_type(string backendName)
    {
        using var s = Session.Open(backendName);
        foreach (var type in WeightTypes)
        {
            const int n = 3, cols = 256;
            int rows = RowsFor(type, 37);
            using var w = TestWeight.Create(type, rows, cols, seed: 77);
            using var dw = s.Backend.PrepareWeight(w.Matrix);
            var x = Data(n * cols, 78);
            using var dx = Put(s.Backend, [.. x, .. Data(cols, 79)], n + 1, cols);
            var logits = new float[n * rows + 3];
            logits.AsSpan(n * rows).Fill(42f);
            s.Backend.Logits(dw, dx, n, logits.AsSpan(0, n * rows));
            CheckProduct($"{backendName} Logits {type}", type, w, x, n, logits[..(n * rows)]);
            AssertExact("logits past n rows", logits[(n * rows)..], [42f, 42f, 42f]);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void Embed_gathers_decoded_rows_for_every_weight_type(string backendName)
    {
        using var s = Session.Open(backendName);
        int[] tokens = [3, 0, 10, 3, 7];
        foreach (var type in WeightTypes)
        {
            int rows = RowsFor(type, 11), cols = 256;
            using var w = TestWeight.Create(type, rows, cols, seed: 5);
            using var table = s.Backend.PrepareWeight(w.Matrix, WeightRole.Embedding);
            using var y = s.Backend.Allocate(TensorType.F32, tokens.Length, cols);
            s.Backend.Embed(table, tokens, y);
            var got = Read(s.Backend, y, tokens.Length * cols);
            var want = new double[got.Length];
            var original = new double[got.Length];
            for (int t = 0; t < tokens.Length; t++)
                for (int c = 0; c < cols; c++)
                {
                    want[t * cols + c] = w.Decoded[tokens[t] * cols + c];
                    original[t * cols + c] = w.Original[tokens[t] * cols + c];
                }
            // The reference decoder's rows, up to one f32 rounding of d·q; and the f32 rows within the format's precision.
            AssertClose($"{backendName} Embed {type}", got, want, rel: 1e-6, abs: 1e-7);
            AssertRelativeRms($"{backendName} Embed {type} vs f32 rows", got, original, QuantizationTolerance(type));
        }
    }

    // ---- element-wise ops -------------------------------------------------------------------------------------

    /// <summary>Widths: one under a vector, a vector tail (37), and a wide row with a tail (1027).</summary>
    public static readonly int[] Widths = [3, 37, 1027];

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void AddBias_and_Add_are_exact_f32_sums_over_n_rows(string backendName)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        foreach (int cols in Widths)
        {
            const int n = 3, rows = 5;
            var y0 = Data(rows * cols, cols);
            var bias = Data(cols, cols + 1);
            using var y = Put(b, y0, rows, cols);
            using var db = b.Upload(bias);
            b.AddBias(y, n, db);
            var want = new double[rows * cols];
            for (int i = 0; i < want.Length; i++) want[i] = i < n * cols ? y0[i] + bias[i % cols] : y0[i];
            // An f32 add is one rounding of the exact sum: the f64 sum rounded to f32 equals it bit for bit.
            AssertClose($"{backendName} AddBias [{n}×{cols}]", Read(b, y, want.Length), want, rel: 0, abs: 0, roundToF32: true);

            var a0 = Data(rows * cols, cols + 2);
            var x = Data(rows * cols, cols + 3);
            using var da = Put(b, a0, rows, cols);
            using var dx = Put(b, x, rows, cols);
            b.Add(da, dx, n);
            for (int i = 0; i < want.Length; i++) want[i] = i < n * cols ? a0[i] + x[i] : a0[i];
            AssertClose($"{backendName} Add [{n}×{cols}]", Read(b, da, want.Length), want, rel: 0, abs: 0, roundToF32: true);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void LayerNorm_and_RmsNorm_match_the_f64_reference(string backendName)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        const float eps = 1e-5f;
        foreach (int cols in Widths)
        {
            const int n = 3, rows = 4;
            // An offset mean and a spread of scales, as hidden states have.
            var x = Data(rows * cols, cols).Select((v, i) => v * (1 + i % 7) + 3f).ToArray();
            var weight = Data(cols, cols + 1);
            var bias = Data(cols, cols + 2);
            using var dw = b.Upload(weight);
            using var dbias = b.Upload(bias);
            foreach (bool withBias in new[] { true, false })
                foreach (bool inPlace in new[] { false, true })
                {
                    using var dx = Put(b, x, rows, cols);
                    using var dy = inPlace ? null : Put(b, new float[rows * cols], rows, cols);
                    b.LayerNorm(dx, dy ?? dx, n, dw, withBias ? dbias : null, eps);
                    var want = new double[n * cols];
                    for (int r = 0; r < n; r++)
                    {
                        double mean = 0, var = 0;
                        for (int c = 0; c < cols; c++) mean += x[r * cols + c];
                        mean /= cols;
                        for (int c = 0; c < cols; c++) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
                        double rstd = 1 / Math.Sqrt(var / cols + eps);
                        for (int c = 0; c < cols; c++)
                            want[r * cols + c] = (x[r * cols + c] - mean) * rstd * weight[c] + (withBias ? bias[c] : 0);
                    }
                    // Centring an f32 row of mean ~3 loses a few ulps of 3; relative 1e-5 of the row's scale covers it.
                    AssertClose($"{backendName} LayerNorm [{n}×{cols}] bias {withBias} in place {inPlace}",
                        Read(b, dy ?? dx, n * cols), want, rel: 1e-5, abs: 1e-5);
                    if (inPlace) AssertExact("LayerNorm rows past n", Read(b, dx, rows * cols)[(n * cols)..], x[(n * cols)..]);
                }

            foreach (bool inPlace in new[] { false, true })
            {
                using var dx = Put(b, x, rows, cols);
                using var dy = inPlace ? null : Put(b, new float[rows * cols], rows, cols);
                b.RmsNorm(dx, dy ?? dx, n, dw, eps);
                var want = new double[n * cols];
                for (int r = 0; r < n; r++)
                {
                    double ms = 0;
                    for (int c = 0; c < cols; c++) ms += (double)x[r * cols + c] * x[r * cols + c];
                    double rstd = 1 / Math.Sqrt(ms / cols + eps);
                    for (int c = 0; c < cols; c++) want[r * cols + c] = x[r * cols + c] * rstd * weight[c];
                }
                AssertClose($"{backendName} RmsNorm [{n}×{cols}] in place {inPlace}", Read(b, dy ?? dx, n * cols), want, rel: 1e-5, abs: 1e-6);
                if (inPlace) AssertExact("RmsNorm rows past n", Read(b, dx, rows * cols)[(n * cols)..], x[(n * cols)..]);
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void Gelu_Silu_and_SiluMul_match_the_f64_reference(string backendName)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        foreach (int cols in Widths)
        {
            const int n = 3, rows = 4;
            // [−12, 12]: both saturated tails and the curved middle.
            var x = Data(rows * cols, cols).Select(v => v * 12f).ToArray();
            var up = Data(rows * cols, cols + 1);

            using (var dx = Put(b, x, rows, cols))
            {
                b.Gelu(dx, n);
                var got = Read(b, dx, rows * cols);
                var want = x.Select((v, i) => i < n * cols ? 0.5 * v * (1 + Erf(v / Math.Sqrt(2))) : v).ToArray();
                // erf in f32 vector code is good to a few ulps; the test's erf to 1.2e-7.
                AssertClose($"{backendName} Gelu [{n}×{cols}]", got, want, rel: 1e-5, abs: 1e-6);
            }
            using (var dx = Put(b, x, rows, cols))
            {
                b.Silu(dx, n);
                var want = x.Select((v, i) => i < n * cols ? v / (1 + Math.Exp(-v)) : v).ToArray();
                AssertClose($"{backendName} Silu [{n}×{cols}]", Read(b, dx, rows * cols), want, rel: 1e-5, abs: 1e-6);
            }
            using (var dg = Put(b, x, rows, cols))
            using (var du = Put(b, up, rows, cols))
            {
                b.SiluMul(dg, du, n);
                var want = x.Select((v, i) => i < n * cols ? v / (1 + Math.Exp(-v)) * up[i] : v).ToArray();
                AssertClose($"{backendName} SiluMul [{n}×{cols}]", Read(b, dg, rows * cols), want, rel: 1e-5, abs: 1e-6);
                AssertExact("SiluMul leaves up alone", Read(b, du, rows * cols), up);
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(ConformanceBackends.Backends), MemberType = typeof(ConformanceBackends))]
    public void GatherRows_and_CopyColumns_move_exact_values(string backendName)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        const int rows = 6, cols = 37;
        var src = Data(rows * cols, 1);
        using var dsrc = Put(b, src, rows, cols);
        int[] pick = [5, 0, 5, 2];
        using var gathered = b.Allocate(TensorType.F32, pick.Length, cols);
        b.GatherRows(dsrc, pick, gathered);
        AssertExact($"{backendName} GatherRows", Read(b, gathered, pick.Length * cols),
            pick.SelectMany(r => src.AsSpan(r * cols, cols).ToArray()).ToArray());

        // A fused QKV split: 3 groups of 5 columns, 11 apart, from column 4, for n = 4 of 6 rows.
        const int n = 4, offset = 4, groups = 3, stride = 11, width = 5;
        using var dst = Put(b, Data(rows * groups * width, 2), rows, groups * width);
        var before = Read(b, dst, rows * groups * width);
        b.CopyColumns(dsrc, n, offset, groups, stride, width, dst);
        var want = new float[rows * groups * width];
        before.CopyTo(want, 0);
        for (int t = 0; t < n; t++)
            for (int g = 0; g < groups; g++)
                for (int i = 0; i < width; i++)
                    want[t * groups * width + g * width + i] = src[t * cols + offset + g * stride + i];
        AssertExact($"{backendName} CopyColumns", Read(b, dst, want.Length), want);
    }

    // ---- rotary embedding -------------------------------------------------------------------------------------

    public static IEnumerable<object[]> RopeCases =>
        from backend in ConformanceBackends.All
        from ropeCase in new[] { "rotate-half", "rotate-half-partial", "interleaved", "interleaved-scaled", "rotate-half-scaled" }
        select new object[] { backend.Name, ropeCase };

    [SkippableTheory]
    [MemberData(nameof(RopeCases))]
    public void Rope_matches_the_f64_rotation(string backendName, string ropeCase)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        const int qHeads = 3, kHeads = 1, headDim = 24;
        var rope = ropeCase switch
        {
            "rotate-half" => RotaryEmbedding.Standard(headDim, 10000, RopeStyle.RotateHalf),
            "rotate-half-partial" => new RotaryEmbedding(Harpia.Tensors.Rope.InverseFrequencies(16, 10000), RopeStyle.RotateHalf),
            "interleaved" => RotaryEmbedding.Standard(headDim, 500000, RopeStyle.Interleaved),
            "interleaved-scaled" => RotaryEmbedding.Standard(headDim, 10000, RopeStyle.Interleaved) with { AttentionFactor = 1.25f },
            _ => RotaryEmbedding.Standard(headDim, 10000, RopeStyle.RotateHalf) with { AttentionFactor = 0.8f },
        };
        int[] positions = [0, 1, 7, 31, 4095];
        int n = positions.Length;
        var q = Data(n * qHeads * headDim, 1);
        var k = Data(n * kHeads * headDim, 2);
        using var dq = Put(b, q, n, qHeads * headDim);
        using var dk = Put(b, k, n, kHeads * headDim);
        b.Rope(dq, qHeads, dk, kHeads, headDim, positions, rope);
        AssertClose($"{backendName} Rope {ropeCase} q", Read(b, dq, q.Length), RotateReference(q, qHeads, headDim, positions, rope), rel: 1e-5, abs: 1e-5);
        AssertClose($"{backendName} Rope {ropeCase} k", Read(b, dk, k.Length), RotateReference(k, kHeads, headDim, positions, rope), rel: 1e-5, abs: 1e-5);
    }

    private static double[] RotateReference(float[] x, int heads, int headDim, int[] positions, RotaryEmbedding rope)
    {
        var y = x.Select(v => (double)v).ToArray();
        int pairs = rope.InverseFrequencies.Length;
        for (int t = 0; t < positions.Length; t++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < pairs; i++)
                {
                    double angle = positions[t] * rope.InverseFrequencies[i];
                    double cos = Math.Cos(angle) * rope.AttentionFactor, sin = Math.Sin(angle) * rope.AttentionFactor;
                    int baseIndex = (t * heads + h) * headDim;
                    int a = baseIndex + (rope.Style == RopeStyle.RotateHalf ? i : 2 * i);
                    int c = baseIndex + (rope.Style == RopeStyle.RotateHalf ? i + pairs : 2 * i + 1);
                    double x1 = x[a], x2 = x[c];
                    y[a] = x1 * cos - x2 * sin;
                    y[c] = x2 * cos + x1 * sin;
                }
        return y;
    }

    // ---- paged attention --------------------------------------------------------------------------------------

    public static IEnumerable<object[]> AttentionCases =>
        from backend in ConformanceBackends.All
        from dtype in new[] { KvCacheDtype.F32, KvCacheDtype.F16 }
        from geometry in new[] { "gqa-6x2-d16", "mqa-4x1-d64", "mha-3x3-d20", "gqa-29x1-d8" }
        select new object[] { backend.Name, dtype, geometry };

    /// <summary>
    /// Four sequences of different lengths in one storage, through block tables of scattered block ids with an odd
    /// block size: a first pass prefills three of them from position 0, a second pass adds a 7-token prefill from 0,
    /// a decode token, a 3-token chunk after 9 cached positions and a decode after 2. Both passes' outputs are
    /// checked against softmax(q·kᵀ·scale)·v in f64 over each token's causal window, query heads mapped to their KV
    /// head (GQA/MQA), with keys and values rounded to f16 in the reference when the storage is f16.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(AttentionCases))]
    public void Paged_attention_matches_the_f64_reference(string backendName, KvCacheDtype dtype, string geometry)
    {
        using var s = Session.Open(backendName);
        var b = s.Backend;
        var parts = geometry.Split('-');
        var hk = parts[1].Split('x');
        int heads = int.Parse(hk[0]), kvHeads = int.Parse(hk[1]), D = int.Parse(parts[2][1..]);
        var shape = new AttentionShape(heads, kvHeads, D, 1f / MathF.Sqrt(D));
        const int blockSize = 3, blocks = 24;
        int[] cached = [0, 5, 9, 2], fresh = [7, 1, 3, 1];
        int sequences = cached.Length;
        // Scattered block ids: sequence s's block i is a fixed permutation's next entry.
        var permutation = Enumerable.Range(0, blocks).OrderBy(i => (i * 7919) % 101).ToArray();
        var tables = new int[sequences][];
        int next = 0;
        for (int q = 0; q < sequences; q++)
        {
            int need = (cached[q] + fresh[q] + blockSize - 1) / blockSize;
            tables[q] = permutation[next..(next + need)];
            next += need;
        }
        int kvWidth = kvHeads * D, qWidth = heads * D;
        // The logical keys/values of every position of every sequence (as the storage will round them).
        var keys = new float[sequences][];
        var values = new float[sequences][];
        for (int q = 0; q < sequences; q++)
        {
            int length = cached[q] + fresh[q];
            keys[q] = Data(length * kvWidth, 100 + q);
            values[q] = Data(length * kvWidth, 200 + q);
        }
        using var kv = b.AllocateKv(blocks, blockSize, kvHeads, D, dtype);
        kv.Clear();

        // Pass 1: the sequences with history, prefilled from 0. Pass 2: every sequence's new tokens.
        int[] first = Enumerable.Range(0, sequences).Where(q => cached[q] > 0).ToArray();
        RunPass(first, q => 0, q => cached[q]);
        RunPass(Enumerable.Range(0, sequences).ToArray(), q => cached[q], q => fresh[q]);

        void RunPass(int[] members, Func<int, int> start, Func<int, int> length)
        {
            int rows = members.Sum(length);
            var qStart = new int[members.Length];
            for (int m = 1; m < members.Length; m++) qStart[m] = qStart[m - 1] + length(members[m - 1]);
            var tableStart = new int[members.Length + 1];
            var flat = new List<int>();
            for (int m = 0; m < members.Length; m++) { flat.AddRange(tables[members[m]]); tableStart[m + 1] = flat.Count; }
            var batch = new AttentionBatch
            {
                BlockSize = blockSize,
                QueryStart = qStart,
                QueryLength = members.Select(length).ToArray(),
                StartPosition = members.Select(start).ToArray(),
                BlockTableStart = tableStart,
                BlockTables = flat.ToArray(),
                MaxContext = members.Max(q => start(q) + length(q)),
            };
            var k = new float[rows * kvWidth];
            var v = new float[rows * kvWidth];
            for (int m = 0; m < members.Length; m++)
            {
                int q = members[m];
                keys[q].AsSpan(start(q) * kvWidth, length(q) * kvWidth).CopyTo(k.AsSpan(qStart[m] * kvWidth));
                values[q].AsSpan(start(q) * kvWidth, length(q) * kvWidth).CopyTo(v.AsSpan(qStart[m] * kvWidth));
            }
            var query = Data(rows * qWidth, 300 + rows).Select(x => x * 3f).ToArray(); // peaked and flat softmaxes
            using var dk = Put(b, k, rows, kvWidth);
            using var dv = Put(b, v, rows, kvWidth);
            using var dq = Put(b, query, rows, qWidth);
            using var output = b.Allocate(TensorType.F32, rows, qWidth);
            b.StoreKv(dk, dv, kv, batch);
            b.Attention(dq, kv, batch, shape, output);
            var got = Read(b, output, rows * qWidth);

            var want = new double[rows * qWidth];
            for (int m = 0; m < members.Length; m++)
            {
                int q = members[m];
                for (int i = 0; i < length(q); i++)
                {
                    int t = qStart[m] + i, position = start(q) + i;
                    for (int h = 0; h < heads; h++)
                    {
                        int g = h / (heads / kvHeads);
                        var scores = new double[position + 1];
                        double max = double.NegativeInfinity;
                        for (int p = 0; p <= position; p++)
                        {
                            double dot = 0;
                            for (int d = 0; d < D; d++) dot += query[t * qWidth + h * D + d] * (double)Stored(keys[q][p * kvWidth + g * D + d], dtype);
                            scores[p] = dot * shape.Scale;
                            max = Math.Max(max, scores[p]);
                        }
                        double sum = 0;
                        for (int p = 0; p <= position; p++) sum += scores[p] = Math.Exp(scores[p] - max);
                        for (int d = 0; d < D; d++)
                        {
                            double acc = 0;
                            for (int p = 0; p <= position; p++) acc += scores[p] / sum * Stored(values[q][p * kvWidth + g * D + d], dtype);
                            want[t * qWidth + h * D + d] = acc;
                        }
                    }
                }
            }
            // Values in [−1, 1]; f32 exp/dot/accumulation over ≤ 12 positions of ≤ 64 dims.
            AssertClose($"{backendName} attention {geometry} {dtype} pass of {members.Length} sequences", got, want, rel: 1e-5, abs: 2e-6);
        }
    }

    private static float Stored(float value, KvCacheDtype dtype) => dtype == KvCacheDtype.F16 ? (float)(Half)value : value;

    // ---- the references' helpers ------------------------------------------------------------------------------

    /// <summary>GPTQ packs 8 rows of 4 bits per word: its row counts are rounded up to a multiple of 8.</summary>
    private static int RowsFor(GgmlType type, int rows) => type == GgmlType.GPTQ ? (rows + 7) / 8 * 8 : rows;

    /// <summary>
    /// Checks y[n, rows] against x·Wᵀ twice: (1) against the decoded weights in f64, within the bound that rounding
    /// the activations to int8 per block allows (Σ|w|·amax/254 for each block, where the type's kernels do that) plus
    /// f32 accumulation; (2) against the f32 weights the matrix was encoded from, within the format's precision.
    /// </summary>
    private static void CheckProduct(string what, GgmlType type, TestWeight w, float[] x, int n, float[] y)
    {
        int rows = w.Matrix.Rows, cols = w.Matrix.Cols, block = ActivationBlock(type);
        var want = new double[n * rows];
        var fromF32 = new double[n * rows];
        var bound = new double[n * rows];
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++)
            {
                double dot = 0, dotF32 = 0, magnitude = 0, rounding = 0;
                int step = block > 0 ? block : cols;
                for (int c0 = 0; c0 < cols; c0 += step)
                {
                    int c1 = Math.Min(cols, c0 + step);
                    double amax = 0, wsum = 0;
                    for (int c = c0; c < c1; c++)
                    {
                        double wc = w.Decoded[r * cols + c], xc = x[t * cols + c];
                        dot += wc * xc;
                        dotF32 += w.Original[r * cols + c] * xc;
                        magnitude += Math.Abs(wc * xc);
                        amax = Math.Max(amax, Math.Abs(xc));
                        wsum += Math.Abs(wc);
                    }
                    if (block > 0) rounding += wsum * amax / 254;
                }
                want[t * rows + r] = dot;
                fromF32[t * rows + r] = dotF32;
                bound[t * rows + r] = rounding * 1.001 + 2e-6 * magnitude + 1e-6;
            }
        AssertWithin(what, y, want, bound);
        AssertRelativeRms(what + " vs the f32 weights", y, fromF32, QuantizationTolerance(type));
    }

    private static void AssertWithin(string what, ReadOnlySpan<float> actual, double[] expected, double[] bound)
    {
        for (int i = 0; i < expected.Length; i++)
            if (!(Math.Abs(actual[i] - expected[i]) <= bound[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {expected[i]:R} ± {bound[i]:E2}");
    }

    private static void AssertClose(string what, ReadOnlySpan<float> actual, double[] expected, double rel, double abs, bool roundToF32 = false)
    {
        Assert.True(actual.Length >= expected.Length, $"{what}: {actual.Length} values for {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            double e = roundToF32 ? (float)expected[i] : expected[i];
            double tolerance = abs + rel * Math.Abs(e);
            if (!(Math.Abs(actual[i] - e) <= tolerance))
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {e:R} ± {tolerance:E2}");
        }
    }

    private static void AssertExact(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        Assert.True(actual.Length == expected.Length, $"{what}: {actual.Length} values for {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected exactly {expected[i]:R}");
    }

    private static void AssertRelativeRms(string what, ReadOnlySpan<float> actual, double[] expected, double tolerance)
    {
        double err = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++) { err += (actual[i] - expected[i]) * (actual[i] - expected[i]); norm += expected[i] * expected[i]; }
        double relative = Math.Sqrt(err / Math.Max(norm, 1e-30));
        Assert.True(relative <= tolerance, $"{what}: relative RMS error {relative:E2} exceeds the format's {tolerance:E2}");
    }

    /// <summary>erf to 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), independent of Harpia's.</summary>
    private static double Erf(double x)
    {
        double z = Math.Abs(x), t = 1 / (1 + 0.5 * z);
        double erfc = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
            + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? 1 - erfc : erfc - 1;
    }

    private static float[] Data(int count, int seed)
    {
        var rng = new Random(seed);
        var a = new float[count];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    private static DeviceTensor Put(IComputeBackend b, float[] values, int rows, int cols)
    {
        var t = b.Allocate(TensorType.F32, rows, cols);
        b.Upload(values, t);
        return t;
    }

    private static float[] Read(IComputeBackend b, DeviceTensor t, int count)
    {
        var a = new float[count];
        b.Synchronize();
        b.Download(t, a);
        return a;
    }

    /// <summary>A backend of the registry, opened for one test with its SIMD path forced on this thread.</summary>
    private sealed class Session : IDisposable
    {
        private readonly SimdPath _previous;
        public IComputeBackend Backend { get; }

        private Session(IComputeBackend backend, SimdPath previous) { Backend = backend; _previous = previous; }

        public static Session Open(string name)
        {
            var entry = ConformanceBackends.Get(name);
            Skip.IfNot(SimdPaths.IsSupported(entry.Simd), $"{entry.Simd} kernels cannot run on this CPU");
            var previous = SimdPaths.Forced;
            SimdPaths.Forced = entry.Simd;
            return new Session(entry.Create(), previous);
        }

        public void Dispose()
        {
            Backend.Dispose();
            SimdPaths.Forced = _previous;
        }
    }

    /// <summary>
    /// A weight matrix of one type encoded from uniform f32 values in [−0.5, 0.5], in native memory of its own (a
    /// backend may repack or release it), with <see cref="Decoded"/>: the values the encoding stands for, decoded by
    /// this test's scalar decoders (floats, Q8_0, Q4_0, Q5_0), GPTQ's encoder, or Harpia's reference block decoder
    /// for the k-quants (itself checked against llama.cpp's in Quantization/).
    /// </summary>
    private sealed unsafe class TestWeight : IDisposable
    {
        private static readonly ConcurrentDictionary<(GgmlType, int, int, int), (byte[] Bytes, float[] Original, float[] Decoded, GptqEncoder.Encoded? Gptq)> Encoded = new();

        public required WeightMatrix Matrix { get; init; }
        public required float[] Original { get; init; }
        public required float[] Decoded { get; init; }
        private byte* _data;
        private IDisposable? _packed;

        public static TestWeight Create(GgmlType type, int rows, int cols, int seed)
        {
            var e = Encoded.GetOrAdd((type, rows, cols, seed), key => Encode(type, rows, cols, seed));
            if (e.Gptq is { } g)
            {
                var packed = new GptqMatrix("w", rows, cols, 4, 128, g.Groups, g.QWeight, g.QZeros, g.Scales, g.GIdx, 4.25);
                return new TestWeight { Matrix = new WeightMatrix("w", packed), Original = e.Original, Decoded = e.Decoded, _packed = packed };
            }
            byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, e.Bytes.Length), 64);
            e.Bytes.CopyTo(new Span<byte>(data, e.Bytes.Length));
            return new TestWeight { Matrix = new WeightMatrix("w", type, rows, cols, data, null), Original = e.Original, Decoded = e.Decoded, _data = data };
        }

        private static (byte[], float[], float[], GptqEncoder.Encoded?) Encode(GgmlType type, int rows, int cols, int seed)
        {
            var original = Data(rows * cols, seed).Select(v => v * 0.5f).ToArray();
            if (type == GgmlType.GPTQ)
            {
                var g = GptqEncoder.Encode(original, rows, cols, 4, 128, sym: false);
                return ([], original, g.Dequantized, g);
            }
            int rowBytes = checked((int)GgmlTypes.ByteSize(type, cols)!.Value);
            var bytes = new byte[rowBytes * rows];
            var decoded = new float[rows * cols];
            for (int r = 0; r < rows; r++)
            {
                var row = bytes.AsSpan(r * rowBytes, rowBytes);
                RowEncoder.Encode(type, original.AsSpan(r * cols, cols), row);
                Decode(type, row, decoded.AsSpan(r * cols, cols));
            }
            return (bytes, original, decoded, null);
        }

        private static void Decode(GgmlType type, ReadOnlySpan<byte> row, Span<float> dst)
        {
            static float F16(ReadOnlySpan<byte> b, int at) => (float)BitConverter.UInt16BitsToHalf((ushort)(b[at] | b[at + 1] << 8));
            switch (type)
            {
                case GgmlType.F32: for (int i = 0; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle(row[4 * i] | row[4 * i + 1] << 8 | row[4 * i + 2] << 16 | row[4 * i + 3] << 24); break;
                case GgmlType.F16: for (int i = 0; i < dst.Length; i++) dst[i] = F16(row, 2 * i); break;
                case GgmlType.BF16: for (int i = 0; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle((row[2 * i] | row[2 * i + 1] << 8) << 16); break;
                case GgmlType.Q8_0: // d (f16), 32 × int8
                    for (int b = 0; b < dst.Length / 32; b++)
                    {
                        var block = row.Slice(b * 34, 34);
                        float d = F16(block, 0);
                        for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (sbyte)block[2 + j];
                    }
                    break;
                case GgmlType.Q4_0: // d (f16), 16 bytes: element j in byte j's low nibble, j + 16 in its high nibble, offset 8
                    for (int b = 0; b < dst.Length / 32; b++)
                    {
                        var block = row.Slice(b * 18, 18);
                        float d = F16(block, 0);
                        for (int j = 0; j < 16; j++)
                        {
                            dst[b * 32 + j] = d * ((block[2 + j] & 15) - 8);
                            dst[b * 32 + j + 16] = d * ((block[2 + j] >> 4) - 8);
                        }
                    }
                    break;
                case GgmlType.Q5_0: // d (f16), qh (32 fifth bits), 16 bytes of nibbles as Q4_0, offset 16
                    for (int b = 0; b < dst.Length / 32; b++)
                    {
                        var block = row.Slice(b * 22, 22);
                        float d = F16(block, 0);
                        uint qh = (uint)(block[2] | block[3] << 8 | block[4] << 16 | block[5] << 24);
                        for (int j = 0; j < 16; j++)
                        {
                            dst[b * 32 + j] = d * (((block[6 + j] & 15) | (int)((qh >> j) & 1) << 4) - 16);
                            dst[b * 32 + j + 16] = d * (((block[6 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16);
                        }
                    }
                    break;
                default: QuantFormats.Dequantize(type, row, dst); break;
            }
        }

        public void Dispose()
        {
            if (_data != null) { NativeMemory.AlignedFree(_data); _data = null; }
            _packed?.Dispose();
        }
    }
}

/// <summary>
/// The suite can fail: run against a backend with one op slightly wrong (<see cref="PerturbedBackend"/>), the test
/// that covers that op fails. Without this, a comparison with a tolerance too wide (or never reached) would pass
/// every backend unnoticed.
/// </summary>
public sealed class BackendConformanceSuiteCatchesWrongOps
{
    [Theory]
    [InlineData("Upload")]
    [InlineData("Download")]
    [InlineData("CopyFrom")]
    [InlineData("AllocateKv")]
    [InlineData("MatMul")]
    [InlineData("Logits")]
    [InlineData("Embed")]
    [InlineData("AddBias")]
    [InlineData("Add")]
    [InlineData("LayerNorm")]
    [InlineData("RmsNorm")]
    [InlineData("Gelu")]
    [InlineData("Silu")]
    [InlineData("SiluMul")]
    [InlineData("GatherRows")]
    [InlineData("CopyColumns")]
    [InlineData("Rope")]
    [InlineData("StoreKv")]
    [InlineData("Attention")]
    public void The_test_of_an_op_fails_a_backend_that_gets_it_wrong(string op)
    {
        var suite = new BackendConformanceTests();
        string name = PerturbedBackend.Prefix + op;
        Action test = op switch
        {
            "Upload" or "Download" or "CopyFrom" => () => suite.Upload_download_view_and_copy_move_exact_values(name),
            "AllocateKv" => () => suite.Kv_storage_has_the_planned_size_and_refuses_bad_shapes(name, KvCacheDtype.F16),
            "MatMul" => () => suite.MatMul_matches_the_f64_reference_for_every_weight_type_and_shape(name),
            "Logits" => () => suite.Logits_match_the_f64_reference_for_every_weight_type(name),
            "Embed" => () => suite.Embed_gathers_decoded_rows_for_every_weight_type(name),
            "AddBias" or "Add" => () => suite.AddBias_and_Add_are_exact_f32_sums_over_n_rows(name),
            "LayerNorm" or "RmsNorm" => () => suite.LayerNorm_and_RmsNorm_match_the_f64_reference(name),
            "Gelu" or "Silu" or "SiluMul" => () => suite.Gelu_Silu_and_SiluMul_match_the_f64_reference(name),
            "GatherRows" or "CopyColumns" => () => suite.GatherRows_and_CopyColumns_move_exact_values(name),
            "Rope" => () => suite.Rope_matches_the_f64_rotation(name, "interleaved"),
            _ => () => suite.Paged_attention_matches_the_f64_reference(name, KvCacheDtype.F16, "gqa-6x2-d16"),
        };
        var failure = Assert.ThrowsAny<Xunit.Sdk.XunitException>(test);
        // The failure names the op (or the comparison) that caught it, not some unrelated assertion.
        string expected = op switch
        {
            "Upload" => "upload", "Download" => "download", "CopyFrom" => "CopyFrom", "AllocateKv" => "Equal",
            "StoreKv" => "attention", _ => op,
        };
        Assert.Contains(expected, failure.Message, StringComparison.OrdinalIgnoreCase);
    }
}

/// <summary>
/// The thread splits: MatMul and attention with 7 compute threads (an odd count above the cores, so row chunks and
/// tiles end ragged, and attention cuts a KV head's query group into slices: 4 sequences × 1 KV head &lt; 7 threads).
/// </summary>
[Collection(ProcessWideStateCollection.Name)] // changes ComputePool.Threads
public sealed class BackendConformanceWithManyThreads
{
    [Theory]
    [InlineData("cpu")]
    [InlineData("cpu-mapped")]
    public void MatMul_and_attention_agree_with_the_references_when_split_over_7_threads(string backend)
    {
        int before = ComputePool.Threads;
        ComputePool.Threads = 7;
        try
        {
            var suite = new BackendConformanceTests();
            suite.MatMul_matches_the_f64_reference_for_every_weight_type_and_shape(backend);
            foreach (var geometry in new[] { "mqa-4x1-d64", "gqa-29x1-d8", "gqa-6x2-d16" })
                foreach (var dtype in new[] { KvCacheDtype.F32, KvCacheDtype.F16 })
                    suite.Paged_attention_matches_the_f64_reference(backend, dtype, geometry);
        }
        finally { ComputePool.Threads = before; }
    }
}

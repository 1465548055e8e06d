using System.Runtime.InteropServices;
using Harpia.Backends.Cpu;
using Harpia.Models;
using Harpia.Tensors;

namespace Harpia.Backends.Cuda;

/// <summary>One op's comparison: the largest error (normalized by the reference's largest magnitude) and its bound.</summary>
public sealed record ConformanceResult(string Op, double Error, double Tolerance, string Detail = "")
{
    public bool Passed => Error <= Tolerance && !double.IsNaN(Error);
    public override string ToString() => $"{(Passed ? "PASS" : "FAIL")}  {Op,-34} error {Error:E2} (bound {Tolerance:E1}){(Detail.Length > 0 ? "  " + Detail : "")}";
}

/// <summary>
/// The backend conformance suite: every op of the seam run on a candidate backend and on the CPU reference with the
/// same inputs, tiny but odd shapes (partial warps and blocks, several groups, GQA, scattered block tables, f16 and
/// f32 KV). The tests run it on ILGPU's CPU accelerator; <c>harpia gpu-selftest</c> runs the same cases on a real GPU.
/// Errors are max |candidate − reference| / max(|reference|, 1e-6 … ) so one bound reads the same for every op.
/// </summary>
public static class BackendConformance
{
    /// <summary>The weight types the decode and prefill products are checked for.</summary>
    public static readonly GgmlType[] WeightTypes =
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    ];

    /// <summary>Names of the cases, for one test per case.</summary>
    public static IReadOnlyList<string> Cases { get; } =
    [
        "memory", "matmul-decode", "matmul-prefill", "bias-add", "activations", "norms", "embed", "gather-columns",
        "rope", "attention-f32", "attention-f16", "logits",
    ];

    public static IEnumerable<ConformanceResult> RunAll(IComputeBackend candidate) => Cases.SelectMany(c => Run(c, candidate));

    /// <summary>Runs one case; each yields one or more results (one per weight type, per variant).</summary>
    public static IReadOnlyList<ConformanceResult> Run(string name, IComputeBackend candidate)
    {
        var cpu = new CpuBackend(repackAtLoad: false);
        return name switch
        {
            "memory" => Memory(candidate, cpu),
            "matmul-decode" => MatMuls(candidate, cpu, tokens: 3),
            "matmul-prefill" => MatMuls(candidate, cpu, tokens: 9),
            "bias-add" => BiasAdd(candidate, cpu),
            "activations" => Activations(candidate, cpu),
            "norms" => Norms(candidate, cpu),
            "embed" => Embed(candidate, cpu),
            "gather-columns" => GatherColumns(candidate, cpu),
            "rope" => Rope(candidate, cpu),
            "attention-f32" => Attention(candidate, cpu, KvCacheDtype.F32),
            "attention-f16" => Attention(candidate, cpu, KvCacheDtype.F16),
            "logits" => Logits(candidate, cpu),
            _ => throw new ArgumentException($"unknown conformance case '{name}'; known: {string.Join(", ", Cases)}"),
        };
    }

    // ---- cases ---------------------------------------------------------------------------------------------------

    private static List<ConformanceResult> Memory(IComputeBackend b, CpuBackend cpu)
    {
        var values = Random(5 * 12, 1);
        using var t = Put(b, values, 5, 12);
        var view = b.View(t, 20);
        var back = Get(b, view, 60);
        using var host = Put(cpu, values, 5, 12);
        using var copy = b.Allocate(TensorType.F32, 5, 12);
        b.CopyFrom(host, 4, copy);              // from the CPU backend, 4 rows
        using var copy2 = b.Allocate(TensorType.F32, 5, 12);
        b.CopyFrom(copy, 4, copy2);             // on the device
        var toHost = cpu.Allocate(TensorType.F32, 5, 12);
        cpu.CopyFrom(copy2, 4, toHost);         // back to the CPU through the source backend's Download
        var got = Get(cpu, toHost, 48);
        return
        [
            Compare("upload/view/download", values, back, 0),
            Compare("copy cpu→device→device→cpu", values.AsSpan(0, 48).ToArray(), got, 0),
            new("kv bytes", KvBytes(b) == KvLayerStorage.BytesFor(3, 4, 2, 16, KvCacheDtype.F16) ? 0 : 1, 0, "AllocateKv(3, 4, 2, 16, f16).Bytes"),
        ];
    }

    private static long KvBytes(IComputeBackend b)
    {
        using var kv = b.AllocateKv(3, 4, 2, 16, KvCacheDtype.F16);
        kv.Clear();
        return kv.Bytes;
    }

    /// <summary>
    /// 13 output rows (partial warps), 256 inputs (one k-quant super-block, 8 tiles of 32), 3 tokens (the per-row
    /// decode kernel) or 9 (the tiled prefill product: f16 tiles on tensor cores, so a looser bound). The CPU
    /// reference quantizes activations to 8 bits for quantized weights (as llama.cpp), hence 3e-2 there.
    /// </summary>
    private static List<ConformanceResult> MatMuls(IComputeBackend b, CpuBackend cpu, int tokens)
    {
        const int rows = 13, cols = 256;
        var results = new List<ConformanceResult>();
        var x = Random(tokens * cols, 2);
        using var xb = Put(b, x, tokens, cols);
        using var xc = Put(cpu, x, tokens, cols);
        using var yb = b.Allocate(TensorType.F32, tokens, rows);
        using var yc = cpu.Allocate(TensorType.F32, tokens, rows);
        foreach (var type in WeightTypes)
        {
            using var host = new HostMatrix(type, rows, cols, Random(rows * cols, 3 + (int)type, 0.5f));
            using var wb = b.PrepareWeight(host.Matrix);
            using var wc = cpu.PrepareWeight(host.Matrix);
            b.MatMul(wb, xb, tokens, yb);
            cpu.MatMul(wc, xc, tokens, yc);
            bool isFloat = type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16;
            double bound = tokens >= 8 ? 2e-2 : isFloat ? 1e-5 : 3e-2;
            results.Add(Compare($"matmul {type} n={tokens}", Get(cpu, yc, tokens * rows), Get(b, yb, tokens * rows), bound));
        }
        return results;
    }

    private static List<ConformanceResult> BiasAdd(IComputeBackend b, CpuBackend cpu)
    {
        const int n = 5, cols = 40;
        var y = Random(n * cols, 4);
        var bias = Random(cols, 5);
        var other = Random(n * cols, 6);
        float[] Run(IComputeBackend k)
        {
            using var ty = Put(k, y, n, cols);
            using var tb = k.Upload(bias);
            using var to = Put(k, other, n, cols);
            k.AddBias(ty, 4, tb);   // the fifth row keeps its values
            k.Add(ty, to, n);
            return Get(k, ty, n * cols);
        }
        return [Compare("add-bias + add", Run(cpu), Run(b), 1e-6)];
    }

    private static List<ConformanceResult> Activations(IComputeBackend b, CpuBackend cpu)
    {
        const int n = 5, cols = 40;
        var x = Random(n * cols, 7, 6f);
        var up = Random(n * cols, 8, 3f);
        var results = new List<ConformanceResult>();
        foreach (var op in new[] { "gelu", "silu", "silu-mul" })
        {
            float[] Run(IComputeBackend k)
            {
                using var tx = Put(k, x, n, cols);
                using var tu = Put(k, up, n, cols);
                if (op == "gelu") k.Gelu(tx, 4);
                else if (op == "silu") k.Silu(tx, 4);
                else k.SiluMul(tx, tu, 4);
                return Get(k, tx, n * cols);
            }
            results.Add(Compare(op, Run(cpu), Run(b), 2e-6));
        }
        return results;
    }

    private static List<ConformanceResult> Norms(IComputeBackend b, CpuBackend cpu)
    {
        const int n = 5, dim = 72;
        var x = Random(n * dim, 9, 3f);
        for (int i = 0; i < x.Length; i++) x[i] += 0.7f;   // a mean the norm must take out
        var weight = Random(dim, 10);
        var bias = Random(dim, 11);
        var results = new List<ConformanceResult>();
        foreach (var variant in new[] { "layernorm+bias", "layernorm in place", "rmsnorm" })
        {
            float[] Run(IComputeBackend k)
            {
                using var tx = Put(k, x, n, dim);
                using var ty = k.Allocate(TensorType.F32, n, dim);
                using var tw = k.Upload(weight);
                using var tb = k.Upload(bias);
                if (variant == "layernorm+bias") { k.LayerNorm(tx, ty, n, tw, tb, 1e-5f); return Get(k, ty, n * dim); }
                if (variant == "layernorm in place") { k.LayerNorm(tx, tx, n, tw, null, 1e-5f); return Get(k, tx, n * dim); }
                k.RmsNorm(tx, ty, n, tw, 1e-6f);
                return Get(k, ty, n * dim);
            }
            results.Add(Compare(variant, Run(cpu), Run(b), 1e-5));
        }
        return results;
    }

    private static List<ConformanceResult> Embed(IComputeBackend b, CpuBackend cpu)
    {
        const int vocab = 11, cols = 256;
        int[] tokens = [3, 0, 10, 3];
        var results = new List<ConformanceResult>();
        foreach (var type in new[] { GgmlType.F32, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q6_K })
        {
            using var host = new HostMatrix(type, vocab, cols, Random(vocab * cols, 12));
            float[] Run(IComputeBackend k)
            {
                using var w = k.PrepareWeight(host.Matrix, WeightRole.Embedding);
                using var y = k.Allocate(TensorType.F32, tokens.Length, cols);
                k.Embed(w, tokens, y);
                return Get(k, y, tokens.Length * cols);
            }
            results.Add(Compare($"embed {type}", Run(cpu), Run(b), 1e-6));
        }
        return results;
    }

    private static List<ConformanceResult> GatherColumns(IComputeBackend b, CpuBackend cpu)
    {
        var src = Random(6 * 48, 13);
        float[] Gather(IComputeBackend k)
        {
            using var ts = Put(k, src, 6, 48);
            using var td = k.Allocate(TensorType.F32, 3, 48);
            k.GatherRows(ts, [5, 0, 5], td);
            return Get(k, td, 3 * 48);
        }
        float[] Columns(IComputeBackend k)
        {
            // Falcon's per-KV-group split: 2 groups of 24 columns, 16 of each copied from offset 4.
            using var ts = Put(k, src, 6, 48);
            using var td = k.Allocate(TensorType.F32, 6, 32);
            k.CopyColumns(ts, 5, 4, 2, 24, 16, td);
            return Get(k, td, 5 * 32);
        }
        return [Compare("gather-rows", Gather(cpu), Gather(b), 0), Compare("copy-columns", Columns(cpu), Columns(b), 0)];
    }

    private static List<ConformanceResult> Rope(IComputeBackend b, CpuBackend cpu)
    {
        const int qHeads = 4, kHeads = 2, headDim = 16;
        int[] positions = [0, 7, 300];
        var q = Random(positions.Length * qHeads * headDim, 14);
        var k = Random(positions.Length * kHeads * headDim, 15);
        var results = new List<ConformanceResult>();
        var variants = new (string Name, RotaryEmbedding Rope)[]
        {
            ("rope rotate-half", RotaryEmbedding.Standard(headDim, 10000, RopeStyle.RotateHalf)),
            ("rope interleaved", RotaryEmbedding.Standard(headDim, 500000, RopeStyle.Interleaved)),
            ("rope partial ×0.9", RotaryEmbedding.Standard(8, 10000, RopeStyle.RotateHalf) with { AttentionFactor = 0.9f }),
        };
        foreach (var (name, rope) in variants)
        {
            float[] Run(IComputeBackend be)
            {
                using var tq = Put(be, q, positions.Length, qHeads * headDim);
                using var tk = Put(be, k, positions.Length, kHeads * headDim);
                be.Rope(tq, qHeads, tk, kHeads, headDim, positions, rope);
                return [.. Get(be, tq, q.Length), .. Get(be, tk, k.Length)];
            }
            results.Add(Compare(name, Run(cpu), Run(b), 1e-6));
        }
        return results;
    }

    /// <summary>
    /// Paged attention with GQA (4 query heads over 2 KV heads, head 32), block size 4 and scattered block tables. Pass 1
    /// fills both sequences' history (A: 139 positions, B: 2); pass 2 decodes A at position 139 (two 128-position
    /// splits) and prefills B at 2..4, their rows placed at 1 and 3..5 of 6 (rows 0 and 2 belong to another storage,
    /// so the rows are not one run and do not start at 0).
    /// </summary>
    private static List<ConformanceResult> Attention(IComputeBackend b, CpuBackend cpu, KvCacheDtype dtype)
    {
        const int heads = 4, kvHeads = 2, headDim = 32, blockSize = 4, blocks = 40, rows = 6;
        int kvWidth = kvHeads * headDim, qWidth = heads * headDim;
        int[] tableA = Enumerable.Range(0, 35).Select(i => (i * 7 + 3) % 37).ToArray();   // 35 distinct blocks of 0..36
        int[] tableB = [39, 37];
        var shape = new AttentionShape(heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim));
        var history = new AttentionBatch
        {
            BlockSize = blockSize, QueryStart = [0, 139], QueryLength = [139, 2], StartPosition = [0, 0],
            BlockTableStart = [0, tableA.Length, tableA.Length + 2], BlockTables = [.. tableA, .. tableB], MaxContext = 139,
        };
        var current = new AttentionBatch
        {
            BlockSize = blockSize, QueryStart = [1, 3], QueryLength = [1, 3], StartPosition = [139, 2],
            BlockTableStart = [0, tableA.Length, tableA.Length + 2], BlockTables = [.. tableA, .. tableB], MaxContext = 140,
        };
        var histK = Random(141 * kvWidth, 16, 2f);
        var histV = Random(141 * kvWidth, 17);
        var k = Random(rows * kvWidth, 18, 2f);
        var v = Random(rows * kvWidth, 19);
        var q = Random(rows * qWidth, 20);
        var untouched = Random(rows * qWidth, 21);
        float[] Run(IComputeBackend be)
        {
            using var kv = be.AllocateKv(blocks, blockSize, kvHeads, headDim, dtype);
            kv.Clear();
            using (var hk = Put(be, histK, 141, kvWidth))
            using (var hv = Put(be, histV, 141, kvWidth))
                be.StoreKv(hk, hv, kv, history);
            using var tk = Put(be, k, rows, kvWidth);
            using var tv = Put(be, v, rows, kvWidth);
            using var tq = Put(be, q, rows, qWidth);
            using var output = Put(be, untouched, rows, qWidth);
            be.StoreKv(tk, tv, kv, current);
            be.Attention(tq, kv, current, shape, output);
            return Get(be, output, rows * qWidth);
        }
        return [Compare($"store-kv + attention {KvCacheDtypes.Name(dtype)}", Run(cpu), Run(b), 2e-5)];
    }

    private static List<ConformanceResult> Logits(IComputeBackend b, CpuBackend cpu)
    {
        const int vocab = 37, cols = 256, n = 2;
        using var host = new HostMatrix(GgmlType.F16, vocab, cols, Random(vocab * cols, 22));
        var x = Random(n * cols, 23);
        float[] Run(IComputeBackend k)
        {
            using var w = k.PrepareWeight(host.Matrix);
            using var tx = Put(k, x, 3, cols);
            var logits = new float[n * vocab];
            k.Logits(w, tx, n, logits);
            return logits;
        }
        return [Compare("logits f16", Run(cpu), Run(b), 1e-5)];
    }

    // ---- end to end ----------------------------------------------------------------------------------------------

    /// <summary>Greedy generation of one model on two backends, with the largest logit difference seen.</summary>
    public sealed record EndToEndResult(int[] ReferenceTokens, int[] CandidateTokens, double MaxLogitError, double LogitScale)
    {
        public bool SameTokens => ReferenceTokens.SequenceEqual(CandidateTokens);
        /// <summary>Largest difference relative to the largest reference logit.</summary>
        public double RelativeError => MaxLogitError / Math.Max(LogitScale, 1e-6);
    }

    /// <summary>
    /// Loads <paramref name="modelPath"/> on the CPU and on <paramref name="candidate"/>, prefills <paramref name="prompt"/>
    /// and decodes <paramref name="newTokens"/> tokens greedily on each (each from its own previous token), comparing
    /// every step's logits. KV storage is the models' own (f32 or f16, on their backends). Prompt ids are taken modulo
    /// the model's vocabulary, so one prompt serves models of any vocabulary size.
    /// </summary>
    public static EndToEndResult EndToEnd(string modelPath, IComputeBackend candidate, int[] prompt, int newTokens, KvCacheDtype kvDtype = KvCacheDtype.F32)
    {
        using var reference = ModelRegistry.Load(modelPath, ModelLoadOptions.On(new CpuBackend(repackAtLoad: false)));
        using var model = ModelRegistry.Load(modelPath, ModelLoadOptions.On(candidate));
        prompt = prompt.Select(t => t % model.Shape.VocabSize).ToArray();
        var (wantTokens, wantLogits) = Greedy(reference, prompt, newTokens, kvDtype);
        var (gotTokens, gotLogits) = Greedy(model, prompt, newTokens, kvDtype);
        double error = 0, scale = 0;
        for (int s = 0; s < Math.Min(wantLogits.Count, gotLogits.Count); s++)
            for (int i = 0; i < wantLogits[s].Length; i++)
            {
                error = Math.Max(error, Math.Abs(wantLogits[s][i] - gotLogits[s][i]));
                scale = Math.Max(scale, Math.Abs(wantLogits[s][i]));
            }
        return new EndToEndResult(wantTokens, gotTokens, error, scale);
    }

    private static (int[] Tokens, List<float[]> Logits) Greedy(DecoderModel model, int[] prompt, int newTokens, KvCacheDtype kvDtype)
    {
        using var cache = new DenseKvCache(model, prompt.Length + newTokens + 1, dtype: kvDtype);
        var tokens = new List<int>();
        var steps = new List<float[]>();
        int[] chunk = prompt;
        int position = 0;
        for (int step = 0; step < newTokens; step++)
        {
            var logits = new float[model.Shape.VocabSize];
            model.Forward([new SequenceChunk(chunk, position, cache)], logits);
            steps.Add(logits);
            position += chunk.Length;
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            tokens.Add(next);
            chunk = [next];
        }
        return (tokens.ToArray(), steps);
    }

    // ---- helpers -------------------------------------------------------------------------------------------------

    private static ConformanceResult Compare(string op, float[] want, float[] got, double tolerance)
    {
        if (want.Length != got.Length) return new(op, double.PositiveInfinity, tolerance, $"lengths {got.Length} vs {want.Length}");
        double error = 0, scale = 1e-6;
        int worst = -1;
        for (int i = 0; i < want.Length; i++)
        {
            scale = Math.Max(scale, Math.Abs(want[i]));
            double d = Math.Abs((double)want[i] - got[i]);
            if (double.IsNaN(d)) d = double.PositiveInfinity;
            if (d > error) { error = d; worst = i; }
        }
        return new(op, error / scale, tolerance, worst >= 0 ? $"worst [{worst}] {got[worst]} vs {want[worst]}" : "");
    }

    private static DeviceTensor Put(IComputeBackend b, float[] values, int rows, int cols)
    {
        var t = b.Allocate(TensorType.F32, rows, cols);
        b.Upload(values.AsSpan(0, Math.Min(values.Length, rows * cols)), t);
        return t;
    }

    private static float[] Get(IComputeBackend b, DeviceTensor t, int count)
    {
        var values = new float[count];
        b.Download(t, values);
        return values;
    }

    private static float[] Random(int count, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var a = new float[count];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>A weight matrix in native memory, encoded from f32 values by the quantizers of Quantization/.</summary>
    private sealed unsafe class HostMatrix : IDisposable
    {
        private byte* _data;
        public WeightMatrix Matrix { get; }

        public HostMatrix(GgmlType type, int rows, int cols, float[] values)
        {
            long rowBytes = GgmlTypes.ByteSize(type, cols)!.Value;
            _data = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * rows), 64);
            for (int r = 0; r < rows; r++)
                Quantization.RowEncoder.Encode(type, values.AsSpan(r * cols, cols), new Span<byte>(_data + r * rowBytes, (int)rowBytes));
            Matrix = new WeightMatrix($"conformance {type}", type, rows, cols, _data, this);
        }

        public void Dispose()
        {
            if (_data == null) return;
            NativeMemory.AlignedFree(_data);
            _data = null;
        }
    }
}

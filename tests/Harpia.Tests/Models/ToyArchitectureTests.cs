using System.Runtime.InteropServices;
using System.Text.Json;
using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Formats;
using Harpia.Models;
using Harpia.Runtime;
using Harpia.Tensors;
using Harpia.Tests.Runtime;

namespace Harpia.Tests.Models;

/// <summary>
/// A second architecture defined only here: its layer math over the op set, a registration, and a loader. It goes
/// through <see cref="ModelRegistry"/>, the generic <see cref="DecoderModel"/> runner and the <see cref="Generator"/>
/// unchanged, and its logits and greedy tokens equal a hand-written f64 forward pass.
/// </summary>
[Collection(ProcessWideStateCollection.Name)] // registers an architecture in the process-wide registry
public sealed class ToyArchitectureTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("harpia-toy-").FullName;

    public ToyArchitectureTests()
    {
        ModelRegistry.Register(ToyModel.Registration);
        File.WriteAllText(Path.Combine(_folder, "config.json"), """{ "model_type": "toy-decoder", "seed": 11 }""");
    }

    public void Dispose()
    {
        ModelRegistry.Unregister(ToyModel.Registration.Name);
        Directory.Delete(_folder, recursive: true);
    }

    [Fact]
    public void Registry_resolves_the_toy_config_and_an_unknown_type_lists_it()
    {
        Assert.Equal("toy", ModelRegistry.Resolve(_folder).Name);
        string other = Directory.CreateTempSubdirectory("harpia-unknown-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(other, "config.json"), """{ "model_type": "mamba" }""");
            var e = Assert.Throws<HarpiaException>(() => ModelRegistry.Resolve(other));
            Assert.Contains("toy", e.Message);
            Assert.Contains("mamba", e.Message);
        }
        finally { Directory.Delete(other, recursive: true); }
    }

    [Fact]
    public void The_generic_runner_gives_the_hand_written_forward_logits_at_every_position()
    {
        using var model = ModelRegistry.Load(_folder);
        var toy = Assert.IsType<ToyArchitecture>(model.Architecture);
        int[] ids = [3, 17, 0, 9, 9, 21, 4];
        var want = toy.Weights.ReferenceLogits(ids);
        int vocab = model.Shape.VocabSize;
        using var cache = new DenseKvCache(model, 64);
        // A 4-token prefill with every row's logits, then one token at a time: prefill and decode paths both.
        var logits = new float[ids.Length * vocab];
        model.Forward([new SequenceChunk(ids[..4], 0, cache, AllLogits: true)], logits.AsSpan(0, 4 * vocab));
        for (int p = 4; p < ids.Length; p++)
            model.Forward([new SequenceChunk(ids[p..(p + 1)], p, cache)], logits.AsSpan(p * vocab, vocab));
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(logits[i] - want[i]) <= 1e-4 * (1 + Math.Abs(want[i])), $"logit {i}: {logits[i]} vs {want[i]}");
    }

    [Fact]
    public async Task The_generator_decodes_the_toy_model_greedily_as_the_hand_written_forward_does()
    {
        var model = ModelRegistry.Load(_folder);
        var toy = (ToyArchitecture)model.Architecture;
        int[] prompt = [5, 1, 12];
        const int newTokens = 9;
        var expected = new List<int>();
        var context = prompt.ToList();
        for (int i = 0; i < newTokens; i++)
        {
            var all = toy.Weights.ReferenceLogits(context.ToArray());
            var last = all.AsSpan(all.Length - ToyWeights.Vocab);
            int best = 0;
            for (int v = 1; v < last.Length; v++) if (last[v] > last[best]) best = v;
            expected.Add(best);
            context.Add(best);
        }
        // A peaked distribution would make greedy trivially constant; this one moves (the test would be blind otherwise).
        Assert.True(expected.Distinct().Count() > 2, $"the reference continuation [{string.Join(", ", expected)}] barely changes");

        await using var generator = new Generator(model, new FakeTokenizer(ToyWeights.Vocab),
            new ModelDescription("toy", ToyWeights.MaxPositions, ToyWeights.Vocab, null, null, null, null),
            new GeneratorOptions { MaxInputTokens = 16, MaxTotalTokens = 32, KvBlockSize = 4 }, ownsModel: true);
        var result = await GeneratorTests.Collect(generator, new GenerationRequest { PromptIds = prompt, MaxNewTokens = newTokens });
        Assert.Equal(expected, result.Ids);
    }
}

/// <summary>
/// The toy architecture: RMSNorm → q (with bias), k, v → rotary (interleaved) → grouped-query attention → o, and in
/// parallel a SiLU MLP on the same normed input; both added to the residual; a final LayerNorm. Nothing but layer
/// math over <see cref="ForwardContext"/>.
/// </summary>
internal sealed class ToyArchitecture(ToyWeights w, IComputeBackend b) : IDecoderArchitecture
{
    private const int X = 0, Q = 1, K = 2, V = 3, Attn = 4, Out = 5, Ffn = 6;
    private readonly DeviceWeight _embeddings = b.PrepareWeight(w.Embeddings, WeightRole.Embedding);
    private readonly (DeviceNorm Norm, DeviceLinear Q, DeviceLinear K, DeviceLinear V, DeviceLinear O, DeviceLinear Up, DeviceLinear Down)[] _layers =
        w.Layers.Select(l => (DeviceNorm.Prepare(b, l.Norm, null, ToyWeights.Eps), DeviceLinear.Prepare(b, l.Q, l.QBias), DeviceLinear.Prepare(b, l.K, null),
            DeviceLinear.Prepare(b, l.V, null), DeviceLinear.Prepare(b, l.O, null), DeviceLinear.Prepare(b, l.Up, null), DeviceLinear.Prepare(b, l.Down, null))).ToArray();
    private readonly DeviceNorm _final = DeviceNorm.Prepare(b, w.FinalNorm, w.FinalBias, ToyWeights.Eps);
    private readonly RotaryEmbedding _rope = RotaryEmbedding.Standard(ToyWeights.HeadDim, ToyWeights.Theta, RopeStyle.Interleaved);
    private readonly AttentionShape _attention = new(ToyWeights.Heads, ToyWeights.KvHeads, ToyWeights.HeadDim, 1f / MathF.Sqrt(ToyWeights.HeadDim));

    public ToyWeights Weights { get; } = w;
    public string Name => "toy";
    public ModelShape Shape { get; } = new(ToyWeights.LayerCount, ToyWeights.KvHeads, ToyWeights.HeadDim, ToyWeights.Vocab, ToyWeights.MaxPositions, ToyWeights.Hidden);
    public IReadOnlyList<int> Scratch { get; } = [ToyWeights.Hidden, ToyWeights.QWidth, ToyWeights.KvWidth, ToyWeights.KvWidth, ToyWeights.QWidth, ToyWeights.Hidden, ToyWeights.Ffn];
    public DeviceWeight LmHead { get; } = b.PrepareWeight(w.LmHead);
    public IEnumerable<WeightMatrix> LayerMatrices => Weights.Layers.SelectMany(l => new[] { l.Q, l.K, l.V, l.O, l.Up, l.Down });
    public WeightMatrix Embeddings => Weights.Embeddings;
    public IReadOnlyList<(string Label, string Text)> Describe() => [("architecture", "toy")];

    public void Embed(ForwardContext ctx, DeviceTensor hidden) => ctx.Backend.Embed(_embeddings, ctx.TokenIds, hidden);

    public void Layer(int layer, ForwardContext ctx, DeviceTensor hidden)
    {
        var l = _layers[layer];
        var s = ctx.Scratch;
        ctx.RmsNorm(l.Norm, hidden, s[X]);
        ctx.Linear(l.Q, s[X], s[Q]);
        ctx.Linear(l.K, s[X], s[K]);
        ctx.Linear(l.V, s[X], s[V]);
        ctx.Rotary(_rope, s[Q], ToyWeights.Heads, s[K], ToyWeights.KvHeads, ToyWeights.HeadDim);
        ctx.Attention(layer, _attention, s[Q], s[K], s[V], s[Attn]);
        ctx.Linear(l.O, s[Attn], s[Out]);
        ctx.Add(hidden, s[Out]);
        ctx.Linear(l.Up, s[X], s[Ffn]);
        ctx.Silu(s[Ffn]);
        ctx.Linear(l.Down, s[Ffn], s[Out]);
        ctx.Add(hidden, s[Out]);
    }

    public void FinalNorm(ForwardContext ctx, DeviceTensor x, int rows) =>
        ctx.Backend.LayerNorm(x, x, rows, _final.Weight, _final.Bias, _final.Eps);

    public void Dispose()
    {
        _embeddings.Dispose();
        foreach (var l in _layers) { l.Norm.Dispose(); l.Q.Dispose(); l.K.Dispose(); l.V.Dispose(); l.O.Dispose(); l.Up.Dispose(); l.Down.Dispose(); }
        _final.Dispose();
        LmHead.Dispose();
    }
}

/// <summary>The toy's loader and registration: config.json names <c>model_type: toy-decoder</c> and a seed for its weights.</summary>
internal static class ToyModel
{
    public static ArchitectureRegistration Registration { get; } = new("toy", ["toy-decoder"], ["ToyForCausalLM"], ["toy"], Load);

    private static DecoderModel Load(string path, ModelLoadOptions options)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(path, "config.json")));
        var weights = new ToyWeights(path, config.RootElement.GetProperty("seed").GetInt32());
        var backend = CpuBackend.Default;
        var devices = options.Devices?.Invoke(new ModelShape(ToyWeights.LayerCount, ToyWeights.KvHeads, ToyWeights.HeadDim, ToyWeights.Vocab, ToyWeights.MaxPositions, ToyWeights.Hidden))
            ?? BackendMap.Single(backend, ToyWeights.LayerCount);
        return new DecoderModel(new ToyArchitecture(weights, devices.Embedding), devices, weights, eosTokenId: null);
    }
}

/// <summary>The toy's f32 weights (seeded), in native memory it owns as the model's tensor source, and its f64 forward.</summary>
internal sealed unsafe class ToyWeights : ITensorSource
{
    public const int Vocab = 23, Hidden = 16, Heads = 4, KvHeads = 2, HeadDim = 4, Ffn = 24, LayerCount = 2, MaxPositions = 64;
    public const int QWidth = Heads * HeadDim, KvWidth = KvHeads * HeadDim;
    public const float Eps = 1e-5f;
    public const double Theta = 10000;

    public sealed record Layer(float[] Norm, WeightMatrix Q, float[] QBias, WeightMatrix K, WeightMatrix V, WeightMatrix O, WeightMatrix Up, WeightMatrix Down);

    private readonly List<nint> _memory = [];
    private readonly Dictionary<WeightMatrix, float[]> _values = [];
    private readonly Random _rng;
    public WeightMatrix Embeddings { get; }
    public Layer[] Layers { get; }
    public float[] FinalNorm { get; }
    public float[] FinalBias { get; }
    public WeightMatrix LmHead { get; }

    public ToyWeights(string path, int seed)
    {
        Path = path;
        _rng = new Random(seed);
        Embeddings = Matrix("embed", Vocab, Hidden, 1f);
        Layers = Enumerable.Range(0, LayerCount).Select(i => new Layer(Vector(Hidden, 1f, 0.3f), Matrix("q", QWidth, Hidden), Vector(QWidth, 0f, 0.2f),
            Matrix("k", KvWidth, Hidden), Matrix("v", KvWidth, Hidden), Matrix("o", Hidden, QWidth), Matrix("up", Ffn, Hidden), Matrix("down", Hidden, Ffn))).ToArray();
        FinalNorm = Vector(Hidden, 1f, 0.3f);
        FinalBias = Vector(Hidden, 0f, 0.1f);
        LmHead = Matrix("lm_head", Vocab, Hidden, 1f);
    }

    public string Path { get; }
    public IReadOnlyDictionary<string, TensorEntry> Tensors { get; } = new Dictionary<string, TensorEntry>();
    public long FileBytes => 0;

    private float[] Vector(int n, float centre, float spread) => Enumerable.Range(0, n).Select(_ => centre + (float)(_rng.NextDouble() * 2 - 1) * spread).ToArray();

    private WeightMatrix Matrix(string name, int rows, int cols, float scale = 0.5f)
    {
        var values = Vector(rows * cols, 0, scale);
        var data = (float*)NativeMemory.Alloc((nuint)(values.Length * sizeof(float)));
        _memory.Add((nint)data);
        values.CopyTo(new Span<float>(data, values.Length));
        var m = new WeightMatrix(name, GgmlType.F32, rows, cols, (byte*)data, this);
        _values[m] = values;
        return m;
    }

    public void Dispose()
    {
        foreach (var p in _memory) NativeMemory.Free((void*)p);
        _memory.Clear();
    }

    // ---- the hand-written forward: whole sequence, no cache, f64 ------------------------------------------------

    /// <summary>Logits [ids.Length, Vocab] of every position.</summary>
    public double[] ReferenceLogits(int[] ids)
    {
        int T = ids.Length;
        var h = new double[T][];
        for (int t = 0; t < T; t++) h[t] = _values[Embeddings].AsSpan(ids[t] * Hidden, Hidden).ToArray().Select(v => (double)v).ToArray();
        foreach (var l in Layers)
        {
            var x = h.Select(r => RmsNorm(r, l.Norm)).ToArray();
            var q = x.Select((r, t) => Rotate(Add(MatVec(l.Q, r), l.QBias), Heads, t)).ToArray();
            var k = x.Select((r, t) => Rotate(MatVec(l.K, r), KvHeads, t)).ToArray();
            var v = x.Select(r => MatVec(l.V, r)).ToArray();
            for (int t = 0; t < T; t++)
            {
                var attn = new double[QWidth];
                for (int head = 0; head < Heads; head++)
                {
                    int g = head / (Heads / KvHeads);
                    var scores = new double[t + 1];
                    for (int p = 0; p <= t; p++)
                    {
                        for (int d = 0; d < HeadDim; d++) scores[p] += q[t][head * HeadDim + d] * k[p][g * HeadDim + d];
                        scores[p] /= Math.Sqrt(HeadDim);
                    }
                    double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
                    for (int p = 0; p <= t; p++)
                        for (int d = 0; d < HeadDim; d++) attn[head * HeadDim + d] += Math.Exp(scores[p] - max) / sum * v[p][g * HeadDim + d];
                }
                var mlp = MatVec(l.Up, x[t]).Select(a => a / (1 + Math.Exp(-a))).ToArray();
                h[t] = Add(Add(h[t], MatVec(l.O, attn)), MatVec(l.Down, mlp));
            }
        }
        var logits = new double[T * Vocab];
        for (int t = 0; t < T; t++)
        {
            double mean = h[t].Average(), var = h[t].Select(a => (a - mean) * (a - mean)).Average();
            var y = h[t].Select((a, i) => (a - mean) / Math.Sqrt(var + Eps) * FinalNorm[i] + FinalBias[i]).ToArray();
            MatVec(LmHead, y).CopyTo(logits, t * Vocab);
        }
        return logits;
    }

    private double[] MatVec(WeightMatrix w, double[] x)
    {
        var values = _values[w];
        var y = new double[w.Rows];
        for (int r = 0; r < w.Rows; r++)
            for (int c = 0; c < w.Cols; c++) y[r] += values[r * w.Cols + c] * x[c];
        return y;
    }

    private static double[] Add(double[] a, IReadOnlyList<double> b) => a.Select((v, i) => v + b[i]).ToArray();
    private static double[] Add(double[] a, float[] b) => a.Select((v, i) => v + b[i]).ToArray();

    private static double[] RmsNorm(double[] x, float[] weight)
    {
        double rms = Math.Sqrt(x.Sum(v => v * v) / x.Length + Eps);
        return x.Select((v, i) => v / rms * weight[i]).ToArray();
    }

    /// <summary>Interleaved rotary: pairs (2i, 2i + 1) of each head turned by position · θ^(−2i/d).</summary>
    private static double[] Rotate(double[] x, int heads, int position)
    {
        var y = (double[])x.Clone();
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < HeadDim / 2; i++)
            {
                double angle = position * Math.Pow(Theta, -2.0 * i / HeadDim);
                int a = h * HeadDim + 2 * i;
                y[a] = x[a] * Math.Cos(angle) - x[a + 1] * Math.Sin(angle);
                y[a + 1] = x[a + 1] * Math.Cos(angle) + x[a] * Math.Sin(angle);
            }
        return y;
    }
}

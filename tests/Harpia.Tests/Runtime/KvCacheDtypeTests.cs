using Harpia.Backends;
using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Planning;
using Harpia.Runtime;
using Harpia.Tests.Models;

namespace Harpia.Tests.Runtime;

/// <summary>--kv-cache-dtype: f16 storage halves the KV memory, matches the planner's arithmetic, and keeps greedy tokens.</summary>
public sealed class KvCacheDtypeTests
{
    [Theory]
    [InlineData("tiny-falcon-7b")]
    [InlineData("tiny-falcon-180b")]
    public void F16_kv_gives_the_same_greedy_tokens_as_f32(string name)
    {
        using var model = FalconModel.Load(Fixtures.Model(name));
        foreach (var prompt in FalconGoldenTests.Golden(name))
        {
            var f32 = Greedy(model, prompt.Ids, 8, KvCacheDtype.F32);
            var f16 = Greedy(model, prompt.Ids, 8, KvCacheDtype.F16);
            Assert.Equal(prompt.GreedyNext8, f32);
            Assert.Equal(f32, f16);
        }
    }

    [Fact]
    public void F16_kv_through_the_generator_streams_the_golden_tokens()
    {
        string path = Fixtures.Model("tiny-falcon-7b");
        using var model = FalconModel.Load(path);
        var prompt = FalconGoldenTests.Golden("tiny-falcon-7b")[0];
        using var g = new Generator(model, new FakeTokenizer(model.Shape.VocabSize), ModelHost.Describe(model, path),
            new GeneratorOptions { KvCacheDtype = KvCacheDtype.F16, MaxTotalTokens = 64, MaxBatchTotalTokens = 256 });
        var ids = g.GenerateAsync(new GenerationRequest { PromptIds = prompt.Ids, MaxNewTokens = 8, IgnoreEos = true, Sampling = new SamplingParameters() })
            .ToBlockingEnumerable().Where(e => e.Token is not null).Select(e => e.Token!.Id).ToArray();
        Assert.Equal(prompt.GreedyNext8, ids);
    }

    private static int[] Greedy(ICausalLM model, int[] prompt, int count, KvCacheDtype dtype)
    {
        using var cache = new DenseKvCache(model, prompt.Length + count, dtype: dtype);
        Assert.Equal(dtype, cache.Storage.Dtype);
        var logits = new float[model.Shape.VocabSize];
        var output = new List<int>();
        model.Forward([new SequenceChunk(prompt, 0, cache)], logits);
        for (int i = 0; i < count; i++)
        {
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            output.Add(next);
            if (i < count - 1) model.Forward([new SequenceChunk(new[] { next }, cache.Length, cache)], logits);
        }
        return output.ToArray();
    }

    [Theory]
    [InlineData("f32", KvCacheDtype.F32)]
    [InlineData("f16", KvCacheDtype.F16)]
    public void Allocated_kv_bytes_equal_what_harpia_plan_counts(string planDtype, KvCacheDtype dtype)
    {
        // The same model and settings both ways: the planner's spec from the fixture's config.json, and the runtime
        // serving that model with a KV budget of `tokens` positions.
        string path = Fixtures.Model("tiny-falcon-180b");
        var spec = ModelSpec.FromConfigFile(Path.Combine(path, "config.json"));
        const int tokens = 4096;
        long planned = spec.KvCacheBytes(tokens, 1, Planner.KvBytesPerElement(planDtype));
        using var model = FalconModel.Load(path);
        using var g = new Generator(model, new FakeTokenizer(model.Shape.VocabSize), ModelHost.Describe(model, path),
            new GeneratorOptions { KvCacheDtype = dtype, MaxTotalTokens = 64, MaxBatchTotalTokens = tokens });
        Assert.Equal(planned, g.KvStorage.Bytes);
        Assert.Equal(planned, g.Statistics.KvCacheBytes);

        // And at Falcon-40B's shape (60 layers, 8 KV heads of 64), from the planner's preset.
        var forty = ModelSpec.FromPreset("falcon-40b");
        var shape = new ModelShape(forty.Layers, forty.KvHeads, forty.HeadDim, forty.Vocab, forty.MaxPositions, forty.Hidden);
        Assert.Equal(forty.KvCacheBytes(tokens, 1, Planner.KvBytesPerElement(planDtype)), KvStorage.BytesFor(shape, tokens / 16, 16, dtype));
    }

    [Fact]
    public async Task Metrics_report_the_kv_bytes_and_f16_halves_them()
    {
        string path = Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon");
        async Task<double> KvBytes(KvCacheDtype dtype)
        {
            var generator = ModelHost.OpenGenerator(path, new GeneratorOptions { KvCacheDtype = dtype, MaxBatchTotalTokens = 8192 });
            var app = Harpia.Server.HarpiaServer.Build(new Harpia.Server.ServerOptions { Port = 0, Hostname = "127.0.0.1" }, generator);
            await app.StartAsync();
            try
            {
                using var http = new HttpClient { BaseAddress = Harpia.Server.HarpiaServer.BoundAddress(app) };
                var line = (await http.GetStringAsync("/metrics")).Split('\n').Single(l => l.StartsWith("harpia_kv_cache_bytes ", StringComparison.Ordinal));
                double bytes = double.Parse(line["harpia_kv_cache_bytes ".Length..], System.Globalization.CultureInfo.InvariantCulture);
                Assert.Equal(generator.KvStorage.Bytes, bytes);
                return bytes;
            }
            finally
            {
                await app.StopAsync();
                await app.DisposeAsync();
                generator.Dispose();
            }
        }
        double f32 = await KvBytes(KvCacheDtype.F32);
        Assert.True(f32 > 0);
        Assert.Equal(f32 / 2, await KvBytes(KvCacheDtype.F16));
    }

    [Fact]
    public void The_generator_allocates_exactly_the_pool_and_f16_halves_it()
    {
        var model = new FakeCausalLM(layers: 3, kvHeads: 2, headDim: 8);
        long Bytes(KvCacheDtype dtype)
        {
            using var g = new Generator(model, new FakeTokenizer(), Describe(), new GeneratorOptions { KvCacheDtype = dtype, MaxTotalTokens = 64, MaxBatchTotalTokens = 1024 });
            Assert.Equal(g.KvPool.TotalBlocks * g.KvPool.BytesPerBlock, g.KvStorage.Bytes);
            Assert.Equal(g.KvStorage.Bytes, g.Statistics.KvCacheBytes);
            return g.KvStorage.Bytes;
        }
        long f32 = Bytes(KvCacheDtype.F32);
        Assert.Equal(1024L * 3 * 2 * 2 * 8 * 4, f32);
        Assert.Equal(f32 / 2, Bytes(KvCacheDtype.F16));
    }

    private static ModelDescription Describe() => new("fake", 4096, 64, 0, null, null, null, "float32");

    [Theory]
    [InlineData("f16", KvCacheDtype.F16)]
    [InlineData("FP16", KvCacheDtype.F16)]
    [InlineData("float32", KvCacheDtype.F32)]
    public void Kv_cache_dtype_names_parse(string text, KvCacheDtype expected) => Assert.Equal(expected, KvCacheDtypes.Parse(text));

    [Fact]
    public void An_unknown_kv_cache_dtype_is_a_clear_error()
    {
        var e = Assert.Throws<HarpiaException>(() => KvCacheDtypes.Parse("fp8"));
        Assert.Equal("--kv-cache-dtype: unknown KV-cache dtype 'fp8'; use f32 or f16", e.Message);
    }
}

using System.Text.Json;
using Harpia.Cli.Commands;
using Harpia.Models.Falcon;
using Harpia.Runtime;
using Harpia.Tensors;

namespace Harpia.Tests.Runtime;

/// <summary>
/// Structure, not speed: the benchmark runs a tiny model for a few steps and every figure must be present and sane.
/// No assertion depends on how fast this machine is.
/// </summary>
[Collection(ProcessWideStateCollection.Name)]   // asserts on ComputePool.Threads, which ComputePoolTests changes
public class ModelBenchmarkTests
{
    private static string Q4Gguf => Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q4_K_M.gguf");

    /// <summary>Weight bytes per token computed from the file's tensor table, not from the bound weights.</summary>
    private static long ExpectedWeightBytesPerToken(FalconModel model, string embeddings, string lmHead)
    {
        var tensors = model.Source.Tensors;
        long matrices = tensors.Values.Where(t => t.Shape.Length == 2 && t.Name != embeddings && t.Name != lmHead).Sum(t => t.ByteLength);
        var embd = tensors[embeddings];
        long oneRow = embd.ByteLength / model.Config.VocabSize;
        long head = tensors.TryGetValue(lmHead, out var h) ? h.ByteLength : embd.ByteLength; // tied: the embeddings again
        return matrices + head + oneRow;
    }

    [Theory]
    [InlineData("gguf")]
    [InlineData("safetensors")]
    public void Runs_on_a_tiny_model_and_reports_every_figure(string format)
    {
        using var model = format == "gguf" ? FalconModel.Load(Q4Gguf) : FalconModel.Load(Fixtures.Model("tiny-falcon-180b"));
        var r = ModelBenchmark.Run(model, promptTokens: 12, genTokens: 5, reps: 2, warmupSeconds: 0);

        Assert.Equal(12, r.PromptTokens);
        Assert.Equal(5, r.GenTokens);
        Assert.Equal(2, r.Reps);
        Assert.Equal(ComputePool.Threads, r.Threads);
        Assert.Equal(2, r.PrefillSamples.Count);
        Assert.Equal(2, r.DecodeSamples.Count);
        Assert.All(r.PrefillSamples.Concat(r.DecodeSamples), v => Assert.True(double.IsFinite(v) && v > 0, $"rate {v}"));
        Assert.Equal(r.PrefillSamples.Average(), r.PrefillTokensPerSecond, 6);
        Assert.Equal(r.DecodeSamples.Average(), r.DecodeTokensPerSecond, 6);
        Assert.True(r.PrefillTokensPerSecondSd >= 0 && r.DecodeTokensPerSecondSd >= 0);

        long expected = format == "gguf"
            ? ExpectedWeightBytesPerToken(model, "token_embd.weight", "output.weight")
            : ExpectedWeightBytesPerToken(model, "transformer.word_embeddings.weight", "lm_head.weight");
        Assert.Equal(expected, r.WeightBytesPerToken);
        Assert.Equal(expected, model.WeightBytesPerToken);

        if (OperatingSystem.IsLinux())
        {
            Assert.NotNull(r.PeakRssBytes);
            Assert.NotNull(r.CurrentRssBytes);
            Assert.True(r.CurrentRssBytes > 0);
            Assert.True(r.PeakRssBytes >= r.CurrentRssBytes, $"peak {r.PeakRssBytes} < current {r.CurrentRssBytes}");
        }
    }

    [Fact]
    public void A_single_repetition_has_zero_spread()
    {
        using var model = FalconModel.Load(Q4Gguf);
        var r = ModelBenchmark.Run(model, promptTokens: 4, genTokens: 2, reps: 1, warmupSeconds: 0);
        Assert.Equal(0, r.PrefillTokensPerSecondSd);
        Assert.Equal(0, r.DecodeTokensPerSecondSd);
        Assert.Equal(0, ModelBenchmark.StandardDeviation([]));
        Assert.Equal(Math.Sqrt(2), ModelBenchmark.StandardDeviation(new double[] { 1, 2, 3, 4, 5 }) * Math.Sqrt(0.8), 9);
    }

    [Fact]
    public void Proc_status_fields_are_read_in_bytes()
    {
        string[] lines = ["Name:\tdotnet", "VmPeak:\t 9999 kB", "VmHWM:\t    2048 kB", "VmRSS:\t  1024 kB"];
        Assert.Equal(2048 * 1024L, ModelBenchmark.Field(lines, "VmHWM:"));
        Assert.Equal(1024 * 1024L, ModelBenchmark.Field(lines, "VmRSS:"));
        Assert.Null(ModelBenchmark.Field(lines, "VmSwap:"));
    }

    [Theory]
    [InlineData(0, 4, 1, "prompt tokens must be at least 1")]
    [InlineData(4, 0, 1, "generated tokens must be at least 1")]
    [InlineData(4, 4, 0, "repetitions must be at least 1")]
    [InlineData(5000, 4, 1, "prompt tokens (5000) exceed the model's 2048 positions")]
    [InlineData(4, 2048, 1, "generated tokens (2048) plus the start token exceed the model's 2048 positions")]
    public void Arguments_the_model_cannot_run_are_refused(int pp, int tg, int reps, string message)
    {
        using var model = FalconModel.Load(Q4Gguf);
        var e = Assert.Throws<HarpiaException>(() => ModelBenchmark.Run(model, pp, tg, reps, warmupSeconds: 0));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Bench_json_has_the_required_fields_and_one_row_per_concurrency_level()
    {
        var settings = new BenchCommand.Settings
        {
            Model = Q4Gguf, PromptTokens = 16, GenTokens = 4, Reps = 2, Concurrency = "1,3", ConcurrencyPromptTokens = 8, Json = true, Warmup = 0,
        };
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, BenchCommand.Run(settings, stdout, stderr, CancellationToken.None));

        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        using var doc = JsonDocument.Parse(lines[0]);
        var root = doc.RootElement;
        Assert.Equal(Q4Gguf, root.GetProperty("model").GetString());
        Assert.Equal(ComputePool.Threads, root.GetProperty("threads").GetInt32());
        Assert.Equal(16, root.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(4, root.GetProperty("gen_tokens").GetInt32());
        foreach (var name in new[] { "prefill_tokens_per_s", "decode_tokens_per_s" })
            Assert.True(root.GetProperty(name).GetDouble() > 0, name);
        foreach (var name in new[] { "prefill_tokens_per_s_sd", "decode_tokens_per_s_sd" })
            Assert.True(root.GetProperty(name).GetDouble() >= 0, name);
        Assert.True(root.GetProperty("weight_bytes_per_token").GetInt64() > 0);
        var peak = root.GetProperty("peak_rss_bytes");
        if (OperatingSystem.IsLinux()) Assert.True(peak.GetInt64() > 0);
        else Assert.Equal(JsonValueKind.Null, peak.ValueKind);

        var levels = root.GetProperty("concurrency").EnumerateArray().ToArray();
        Assert.Equal([1, 3], levels.Select(l => l.GetProperty("streams").GetInt32()));
        foreach (var l in levels)
        {
            Assert.True(l.GetProperty("decode_tokens_per_s").GetDouble() > 0);
            double p50 = l.GetProperty("ttft_p50_ms").GetDouble(), p95 = l.GetProperty("ttft_p95_ms").GetDouble();
            Assert.True(p50 > 0 && p50 <= p95, $"ttft p50 {p50} p95 {p95}");
            Assert.Equal(l.GetProperty("streams").GetInt32() * 4L, l.GetProperty("generated_tokens").GetInt64());
        }
    }

    [Fact]
    public void Bench_table_shows_the_tests_and_memory()
    {
        var settings = new BenchCommand.Settings { Model = Q4Gguf, PromptTokens = 8, GenTokens = 3, Reps = 1, Warmup = 0 };
        var stdout = new StringWriter();
        Assert.Equal(0, BenchCommand.Run(settings, stdout, new StringWriter(), CancellationToken.None));
        string text = stdout.ToString();
        Assert.Contains("pp8", text);
        Assert.Contains("tg3", text);
        Assert.Contains("peak RSS:", text);
        Assert.Contains("weights read per decoded token:", text);
        Assert.DoesNotContain("concurrent streams", text);
    }

    private static readonly (BenchCommand.Settings Settings, string Message)[] BadSettings =
    [
        (new() { Model = "m", KvCacheDtype = "q4" }, "--kv-cache-dtype: unknown KV-cache dtype 'q4'; use f32 or f16"),
        (new() { Model = "m", PromptTokens = 0 }, "--prompt-tokens must be at least 1, got 0"),
        (new() { Model = "m", GenTokens = -3 }, "--gen-tokens must be at least 1, got -3"),
        (new() { Model = "m", Reps = 0 }, "--reps must be at least 1, got 0"),
        (new() { Model = "m", Threads = 0 }, "--threads must be at least 1, got 0"),
        (new() { Model = "m", Warmup = -1 }, "--warmup must be a number of seconds ≥ 0, got -1"),
        (new() { Model = "m", Concurrency = "1,,4" }, "--concurrency 1,,4: '' is not a stream count"),
        (new() { Model = "m", Concurrency = "1,0" }, "'0' is not a stream count"),
        (new() { Model = "m", Concurrency = "-2" }, "'-2' is not a stream count"),
        (new() { Model = "m", Concurrency = "four" }, "'four' is not a stream count"),
        (new() { Model = "m", Concurrency = "1", ConcurrencyPromptTokens = 0 }, "--concurrency-prompt-tokens must be at least 1, got 0"),
        (new() { Model = "m", Concurrency = "1", GenTokens = 1 }, "--concurrency needs --gen-tokens of at least 2"),
    ];

    [Fact]
    public void Bad_arguments_give_one_clear_message()
    {
        foreach (var (settings, message) in BadSettings)
        {
            var e = Assert.Throws<HarpiaException>(() => BenchCommand.Run(settings, new StringWriter(), new StringWriter(), CancellationToken.None));
            Assert.Contains(message, e.Message);
            var v = settings.Validate();
            Assert.False(v.Successful, message);
            Assert.Contains(message, v.Message);
        }
    }

    [Fact]
    public void A_missing_model_and_too_long_streams_are_named()
    {
        var missing = new BenchCommand.Settings { Model = "/no/such/model.gguf" };
        Assert.True(missing.Validate().Successful);
        var e = Assert.Throws<HarpiaException>(() => BenchCommand.Run(missing, new StringWriter(), new StringWriter(), CancellationToken.None));
        Assert.Equal("/no/such/model.gguf: no such model folder or GGUF file", e.Message);

        var tooLong = new BenchCommand.Settings { Model = Q4Gguf, Concurrency = "2", ConcurrencyPromptTokens = 2000, GenTokens = 100, Warmup = 0 };
        e = Assert.Throws<HarpiaException>(() => BenchCommand.Run(tooLong, new StringWriter(), new StringWriter(), CancellationToken.None));
        Assert.Contains("exceed the model's 2048 positions", e.Message);
    }

    [Fact]
    public void Concurrency_options_admit_every_stream_at_once()
    {
        var o = BenchCommand.ConcurrencyOptions(maxStreams: 16, promptTokens: 128, genTokens: 100);
        int perRequest = (128 + 100 + 15) / 16 * 16;
        Assert.True(o.MaxBatchTotalTokens >= 16L * perRequest);
        Assert.True(o.MaxBatchPrefillTokens >= 16 * 128);
        Assert.True(o.MaxConcurrentRequests >= 16);
        Assert.Equal(128, o.MaxInputTokens);
        Assert.Equal(228, o.MaxTotalTokens);
    }
}

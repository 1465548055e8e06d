using System.Text.Json;
using Harpia.Runtime;

namespace Harpia.Tests.Runtime;

[Collection(SerialRuntimeCollection.Name)]
public class ThroughputBenchmarkTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public async Task Batching_multiplies_decode_throughput_on_a_weight_bound_model()
    {
        // Every forward costs the same 15 ms whatever the batch, like a model that reads all its weights per step
        // (long enough that the runtime's own CPU work stays small on a loaded 2-core CI machine).
        var model = new FakeCausalLM { DelayPerCall = TimeSpan.FromMilliseconds(15) };
        await using var g = new Generator(model, new FakeTokenizer(64), new ModelDescription("fake", 4096, 64, 0, null, null, null),
            new GeneratorOptions { MaxInputTokens = 64, MaxTotalTokens = 128 });
        var bench = new ThroughputBenchmark(g, promptTokens: 8, generatedTokens: 20);
        var results = await bench.RunAsync([1, 4]);
        foreach (var r in results) output.WriteLine(r.ToString());
        Assert.Equal([1, 4], results.Select(r => r.Streams));
        Assert.Equal(20, results[0].GeneratedTokens);
        Assert.Equal(80, results[1].GeneratedTokens);
        foreach (var r in results)
        {
            Assert.True(r.TtftP50Ms > 0 && r.TtftP50Ms <= r.TtftP95Ms, $"ttft p50 {r.TtftP50Ms} p95 {r.TtftP95Ms}");
            Assert.True(r.DecodeTokensPerSecond > 0);
        }
        // Ideal is 4×; the figure counts the staggered admissions against the streams, so ask for 2×.
        Assert.True(results[1].DecodeTokensPerSecond > 2 * results[0].DecodeTokensPerSecond,
            $"4 streams: {results[1].DecodeTokensPerSecond:F0} tok/s, 1 stream: {results[0].DecodeTokensPerSecond:F0} tok/s");
        var json = JsonSerializer.Serialize(new { concurrency = results });
        using var doc = JsonDocument.Parse(json);
        var level = doc.RootElement.GetProperty("concurrency")[1];
        Assert.Equal(4, level.GetProperty("streams").GetInt32());
        foreach (var name in new[] { "decode_tokens_per_s", "ttft_p50_ms", "ttft_p95_ms" }) Assert.True(level.TryGetProperty(name, out _), name);
        await GeneratorTests.WaitIdle(g);
    }

    [Fact]
    public void Percentiles_interpolate_between_ranks()
    {
        Assert.Equal(2.5, ThroughputBenchmark.Percentile([4, 1, 3, 2], 50), 9);
        Assert.Equal(3.85, ThroughputBenchmark.Percentile([1, 2, 3, 4], 95), 9);
        Assert.Equal(7, ThroughputBenchmark.Percentile([7], 95));
    }
}

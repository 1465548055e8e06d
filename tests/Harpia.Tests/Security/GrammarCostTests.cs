using System.Net;
using System.Text;
using System.Text.Json;
using Harpia.Runtime.Grammar;
using Harpia.Server;
using Harpia.Tests.Server;

namespace Harpia.Tests.Security;

/// <summary>Tests that measure the process (heap, threads) run alone, so no other test's allocations count.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HostileLoadCollection { public const string Name = "Hostile load"; }

/// <summary>
/// Issue 18, case 1: a grammar is the one request field whose cost is superlinear in its size. Its limits are checked
/// before compiling, compiling is cancellable and queued per process, and a burst of hostile grammars leaves the
/// server's memory and /health alone.
/// </summary>
[Collection(HostileLoadCollection.Name)]
public sealed class GrammarCostTests
{
    static string EnumSchema(int values, string prefix = "value") =>
        "{\"enum\":[" + string.Join(',', Enumerable.Range(0, values).Select(i => $"\"{prefix}{i}\"")) + "]}";

    static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    [Fact]
    public async Task OversizedSourcesAndEnumsAreRefusedBeforeCompiling()
    {
        var compiler = new GrammarCompiler();
        var huge = await Assert.ThrowsAsync<HarpiaException>(() =>
            compiler.FromTgiAsync(Json("{\"type\":\"json\",\"value\":" + EnumSchema(100_000) + "}"), default).AsTask());
        Assert.Contains("limit of 65,536", huge.Message);
        // Under the size limit but over the enum count (all enums of the schema together).
        string twoEnums = "{\"type\":\"object\",\"properties\":{\"a\":" + EnumSchema(600, "a") + ",\"b\":" + EnumSchema(600, "b") + "}}";
        var many = await Assert.ThrowsAsync<HarpiaException>(() => compiler.JsonSchemaAsync(Json(twoEnums), default).AsTask());
        Assert.Contains("more than 1,024 'enum'/'const' values", many.Message);
        var regex = await Assert.ThrowsAsync<HarpiaException>(() =>
            compiler.FromTgiAsync(Json($$"""{"type":"regex","value":"{{new string('a', 70_000)}}"}"""), default).AsTask());
        Assert.Contains("grammar regex", regex.Message);
        Assert.Equal(0, compiler.CompilationsStarted);
        // The same schema is fine without the server's limits (the CLI's user is trusted with their own machine).
        Assert.NotNull(Grammars.JsonSchema(Json(twoEnums)));
    }

    [Fact]
    public void SchemaExpansionThroughRefsIsBoundedWhileItIsBuilt()
    {
        // Each definition uses the previous one four times: 4^12 copies of the leaf if written out.
        var defs = new StringBuilder("\"d0\":{\"type\":\"string\",\"maxLength\":8}");
        for (int i = 1; i <= 12; i++)
        {
            string r = $"{{\"$ref\":\"#/$defs/d{i - 1}\"}}";
            defs.Append($",\"d{i}\":{{\"type\":\"object\",\"properties\":{{\"a\":{r},\"b\":{r},\"c\":{r},\"d\":{r}}},\"required\":[\"a\",\"b\",\"c\",\"d\"]}}");
        }
        string schema = "{\"$defs\":{" + defs + "},\"$ref\":\"#/$defs/d12\"}";
        var ex = Assert.Throws<HarpiaException>(() => JsonSchemaRegex.FromSchema(Json(schema), GrammarLimits.Default));
        Assert.Contains("expands to a pattern of more than", ex.Message);
    }

    [Fact]
    public void CompilationStopsWhenTheRequestIsCancelled()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ByteDfa.FromRegex("([a-z]{1,3}x){1,2000}", cts.Token));
    }

    [Fact]
    public void AStringThatIsNotJsonIsDescribedWithoutTheReadersInternals()
    {
        var ex = Assert.Throws<HarpiaException>(() => Grammars.FromTgi(Json("""{"type":"json","value":"notaschema"}""")));
        Assert.DoesNotContain("LineNumber", ex.Message);
        Assert.DoesNotContain("BytePosition", ex.Message);
        Assert.Contains("does not hold JSON", ex.Message);
    }

    [Fact]
    public async Task EightHugeEnumGrammarsAtOnceKeepMemoryBoundedAndHealthUp()
    {
        await using var server = await TestServer.StartAsync();
        var compiler = HarpiaServer.Grammars(server.App);
        string body = "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":" + EnumSchema(100_000) + "}}}";
        Assert.True(body.Length is > 1_000_000 and < 2_000_000); // the probe's case: under the body limit

        long baseline = GC.GetTotalMemory(forceFullCollection: true);
        long peak = baseline;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(false));
                await Task.Delay(2);
            }
        });
        var requests = Enumerable.Range(0, 8).Select(_ => server.PostAsync("/generate", body)).ToArray();
        var health = Enumerable.Range(0, 8).Select(_ => server.Http.GetAsync("/health")).ToArray();
        var answers = await Task.WhenAll(requests);
        var healths = await Task.WhenAll(health);
        sampling.Cancel();
        await sampler;

        Assert.All(answers, a =>
        {
            Assert.Equal(422, a.Status);
            Assert.Contains("limit", a.Body.GetProperty("error").GetString());
        });
        Assert.All(healths, h => Assert.Equal(HttpStatusCode.OK, h.StatusCode));
        Assert.Equal(0, compiler.CompilationsStarted);
        // Stated bound: the burst's bodies are parsed (8 x 1.3 MB of JSON) and nothing else; before the limits each
        // request held ~370 MB while its schema compiled (~3 GB for eight).
        Assert.True(peak - baseline < 400_000_000, $"managed heap grew by {(peak - baseline) / 1e6:N0} MB during the burst");
        long after = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(after - baseline < 64_000_000, $"managed heap kept {(after - baseline) / 1e6:N0} MB after the burst");
    }

    [Fact]
    public async Task CompilationsQueueBehindALimitWithoutHoldingThreadsAndHealthStaysUp()
    {
        var options = new ServerOptions { GrammarLimits = new GrammarLimits { MaxConcurrentCompilations = 2 } };
        await using var server = await TestServer.StartAsync(options: options);
        var compiler = HarpiaServer.Grammars(server.App);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        compiler.OnCompiling = ct => release.Task.WaitAsync(ct);

        // Distinct schemas, so none is a cache hit.
        var requests = Enumerable.Range(0, 8).Select(i => server.PostAsync("/generate",
            "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":2,\"grammar\":{\"type\":\"regex\",\"value\":\"[a-z]{1," + (i + 2) + "}q" + i + "\"}}}")).ToArray();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while ((compiler.Running < 2 || compiler.Waiting < 6) && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.Equal(2, compiler.Running);
        Assert.Equal(6, compiler.Waiting);

        // Eight heavy requests in flight, two compiling and six queued: the probe still answers.
        using var health = await server.Http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);

        release.SetResult();
        var answers = await Task.WhenAll(requests);
        Assert.All(answers, a => Assert.Equal(200, a.Status));
        Assert.Equal(2, compiler.PeakRunning);
        Assert.Equal(8, compiler.CompilationsStarted);
    }
}

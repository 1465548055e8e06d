using System.Text.Json;
using Harpia.Tests.Server;

namespace Harpia.Tests.Security;

/// <summary>Issue 18, HTTP cases (the grammar cases are in GrammarCostTests).</summary>
public sealed class HostileHttpTests
{
    [Fact]
    public async Task InfoAdvertisesTheLimitsTheRuntimeEnforcesNotAHugeModelContext()
    {
        // A GGUF may claim a context of 2^30; the runtime enforces min(context, 4096), and /info must say that.
        await using var server = await TestServer.StartAsync(new FakeGenerator(contextLength: 1 << 30));
        using var doc = JsonDocument.Parse(await server.Http.GetStringAsync("/info"));
        Assert.Equal(4096, doc.RootElement.GetProperty("max_total_tokens").GetInt32());
        Assert.Equal(4095, doc.RootElement.GetProperty("max_input_tokens").GetInt32());
    }
}

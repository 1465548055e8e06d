using Harpia.Chat;
using Harpia.Cli.Commands;
using Harpia.Runtime;
using Harpia.Tests.Server;
using Microsoft.Extensions.AI;

namespace Harpia.Tests.Chat;

/// <summary>The in-process IChatClient over the runtime, and the `harpia chat` loop over it.</summary>
public sealed class HarpiaChatClientTests
{
    [Fact]
    public async Task Response_streaming_and_options_map_onto_the_runtime()
    {
        var generator = new FakeGenerator();
        IChatClient client = new HarpiaChatClient(generator);
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.System, "Be brief."), new ChatMessage(ChatRole.User, "Hi")],
            new ChatOptions { Temperature = 0, MaxOutputTokens = 40, StopSequences = ["zzz"] });
        Assert.Equal("Hello from Harpia.", response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(19, response.Usage!.OutputTokenCount);
        Assert.Equal("System: Be brief.\nUser: Hi\nFalcon:".Length, response.Usage.InputTokenCount);
        Assert.Equal("fake/tiny-falcon", response.ModelId);
        var request = generator.Requests.Last();
        Assert.False(request.Sampling.DoSample);
        Assert.Equal(40, request.MaxNewTokens);
        Assert.Equal(["\nUser:", "zzz"], request.StopSequences);

        var text = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in client.GetStreamingResponseAsync("Hi", new ChatOptions { MaxOutputTokens = 5, Temperature = 0.8f, Seed = 3, TopK = 4 }))
        {
            text.Append(update.Text);
            finish ??= update.FinishReason;
        }
        Assert.Equal("Hello", text.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        var sampled = generator.Requests.Last().Sampling;
        Assert.True(sampled.DoSample);
        Assert.Equal(0.8f, sampled.Temperature);
        Assert.Equal(3UL, sampled.Seed);
        Assert.Equal(4, sampled.TopK);

        Assert.Equal("fake/tiny-falcon", client.GetService<ChatClientMetadata>()?.DefaultModelId);
        await Assert.ThrowsAsync<GenerationValidationException>(() => client.GetResponseAsync("Hi", new ChatOptions { MaxOutputTokens = 0 }));
        await Assert.ThrowsAsync<GenerationValidationException>(() => client.GetResponseAsync(new string('x', 300)));
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1 }, "image/png")])]));
    }

    [Fact]
    public async Task Cancelling_stops_the_generation()
    {
        var generator = new FakeGenerator { TokenDelay = TimeSpan.FromMilliseconds(20), Script = (_, _) => new string('z', 500) };
        var client = new HarpiaChatClient(generator);
        using var cts = new CancellationTokenSource();
        int updates = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in client.GetStreamingResponseAsync("Hi", new ChatOptions { MaxOutputTokens = 200 }, cts.Token))
                if (++updates == 3) cts.Cancel();
        });
        Assert.Equal(1, generator.Cancelled);
        Assert.Equal(0, generator.Active);
    }

    [Fact]
    public async Task Chat_session_keeps_history_and_handles_reset_and_system()
    {
        var generator = new FakeGenerator { Script = (prompt, _) => $"reply{prompt.Split('\n').Length}" };
        var client = new HarpiaChatClient(generator);
        var input = new StringReader("hi\n/system Be brief\nhello\n/history\n/reset\nagain\n/bogus\n/exit\nnever read\n");
        var output = new StringWriter();
        var session = new ChatSession(client, input, output, new ChatOptions { Temperature = 0 });
        int replies = await session.RunAsync(CancellationToken.None);

        Assert.Equal(3, replies);
        var prompts = generator.Requests.Select(r => generator.Tokenizer.Decode(r.PromptIds.ToArray())).ToList();
        Assert.Equal("User: hi\nFalcon:", prompts[0]);
        Assert.Equal("System: Be brief\nUser: hi\nFalcon: reply2\nUser: hello\nFalcon:", prompts[1]);
        Assert.Equal("System: Be brief\nUser: again\nFalcon:", prompts[2]); // /reset keeps the system prompt, drops the turns
        string shown = output.ToString();
        Assert.Contains("reply2", shown);
        Assert.Contains("(history cleared)", shown);
        Assert.Contains("unknown command /bogus", shown);
        Assert.Contains("user: hello", shown);
        Assert.Equal(2, session.History.Count);
        Assert.Equal("Be brief", session.SystemPrompt);
    }
}

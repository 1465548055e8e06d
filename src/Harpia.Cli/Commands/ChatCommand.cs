using System.ComponentModel;
using Harpia.Chat;
using Harpia.Runtime;
using Microsoft.Extensions.AI;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// The conversation loop of <c>harpia chat</c>, over any <see cref="IChatClient"/>: reads lines, streams replies,
/// keeps the history; <c>/reset</c> clears it, <c>/system TEXT</c> sets the system prompt, <c>/exit</c> ends.
/// </summary>
public sealed class ChatSession(IChatClient client, TextReader input, TextWriter output, ChatOptions? options = null)
{
    readonly List<ChatMessage> _history = [];

    public string? SystemPrompt { get; private set; }
    public IReadOnlyList<ChatMessage> History => _history;

    /// <summary>Runs until end of input or /exit; returns how many replies were generated.</summary>
    public async Task<int> RunAsync(CancellationToken cancellationToken)
    {
        int replies = 0;
        output.WriteLine("Type a message; /system TEXT sets the system prompt, /reset clears the history, /exit quits.");
        while (!cancellationToken.IsCancellationRequested)
        {
            output.Write("> ");
            output.Flush();
            string? line = await input.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            if (line is null) break;
            line = line.Trim();
            if (line.Length == 0) continue;
            if (line.StartsWith('/'))
            {
                if (!HandleCommand(line)) break;
                continue;
            }
            _history.Add(new ChatMessage(ChatRole.User, line));
            var reply = new System.Text.StringBuilder();
            try
            {
                await foreach (var update in client.GetStreamingResponseAsync(Conversation(), options, cancellationToken).ConfigureAwait(false))
                {
                    output.Write(update.Text);
                    output.Flush();
                    reply.Append(update.Text);
                }
            }
            catch (HarpiaException ex)
            {
                // Keep the session alive: the user can /reset a conversation that no longer fits.
                _history.RemoveAt(_history.Count - 1);
                output.WriteLine($"error: {ex.Message}");
                continue;
            }
            output.WriteLine();
            _history.Add(new ChatMessage(ChatRole.Assistant, reply.ToString().Trim()));
            replies++;
        }
        return replies;
    }

    public void SetSystemPrompt(string? text) => SystemPrompt = string.IsNullOrWhiteSpace(text) ? null : text.Trim();

    /// <summary>The messages sent to the model: the system prompt, then the turns so far.</summary>
    public List<ChatMessage> Conversation()
    {
        var messages = new List<ChatMessage>(_history.Count + 1);
        if (SystemPrompt is not null) messages.Add(new ChatMessage(ChatRole.System, SystemPrompt));
        messages.AddRange(_history);
        return messages;
    }

    /// <summary>Handles a /command; false means quit.</summary>
    bool HandleCommand(string line)
    {
        int space = line.IndexOf(' ');
        string command = space < 0 ? line : line[..space];
        string argument = space < 0 ? "" : line[(space + 1)..].Trim();
        switch (command)
        {
            case "/exit" or "/quit":
                return false;
            case "/reset":
                _history.Clear();
                output.WriteLine("(history cleared)");
                return true;
            case "/system":
                SystemPrompt = argument.Length == 0 ? null : argument;
                output.WriteLine(SystemPrompt is null ? "(system prompt cleared)" : "(system prompt set)");
                return true;
            case "/history":
                foreach (var m in Conversation()) output.WriteLine($"{m.Role.Value}: {m.Text}");
                return true;
            case "/help":
                output.WriteLine("/system TEXT  set the system prompt (empty clears it)\n/reset        clear the history\n/history      show the conversation\n/exit         quit");
                return true;
            default:
                output.WriteLine($"unknown command {command} (try /help)");
                return true;
        }
    }
}

public sealed class ChatCommand : AsyncCommand<ChatCommand.Settings>
{
    public sealed class Settings : PlacementSettings
    {
        [CommandOption("-m|--model <PATH>"), Description("Model folder or .gguf file; default: the bundled tiny Falcon")]
        public string? Model { get; init; }

        [CommandOption("--system <TEXT>"), Description("Initial system prompt")]
        public string? System { get; init; }

        [CommandOption("--max-new-tokens <N>"), DefaultValue(512)]
        public int MaxNewTokens { get; init; } = 512;

        [CommandOption("--temperature <T>"), Description("0 = greedy"), DefaultValue(0.7f)]
        public float Temperature { get; init; } = 0.7f;

        [CommandOption("--top-p <P>")]
        public float? TopP { get; init; }

        [CommandOption("--seed <N>")]
        public long? Seed { get; init; }

        [CommandOption("--quantize <KIND>")]
        public string? Quantize { get; init; }

        [CommandOption("--kv-cache-dtype <TYPE>"), Description("KV cache element type: f32 (default) or f16")]
        public string? KvCacheDtype { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.MaxNewTokens <= 0) throw new HarpiaException($"--max-new-tokens must be positive, got {settings.MaxNewTokens}");
        if (settings.Temperature < 0) throw new HarpiaException($"--temperature must not be negative, got {settings.Temperature}");
        string modelPath = await TextGeneratorFactory.ResolveModelAsync(settings.Model, ct: cancellationToken).ConfigureAwait(false);
        ITextGenerator generator = TextGeneratorFactory.Open(new TextGeneratorFactory.Request(modelPath, settings.Quantize, 1, null, null, KvCacheDtype: settings.KvCacheDtype, Placement: settings.Placement));
        try
        {
            using var client = new HarpiaChatClient(generator);
            var options = new ChatOptions
            {
                MaxOutputTokens = settings.MaxNewTokens, Temperature = settings.Temperature, TopP = settings.TopP, Seed = settings.Seed,
            };
            if (!Console.IsOutputRedirected) AnsiConsole.MarkupLine($"[green]harpia chat[/] with [bold]{Markup.Escape(generator.Model.ModelId)}[/]");
            var session = new ChatSession(client, Console.In, Console.Out, options);
            if (!string.IsNullOrWhiteSpace(settings.System)) session.SetSystemPrompt(settings.System);
            await session.RunAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            (generator as IDisposable)?.Dispose();
        }
        return 0;
    }
}

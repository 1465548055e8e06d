using System.ComponentModel;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Harpia.Tokenization;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia tokenize --model &lt;folder|tokenizer.json&gt; [TEXT]</c>: ids and tokens of a text (argument or stdin);
/// <c>--json-lines</c> turns <c>{"text": …}</c> lines on stdin into <c>{"ids", "tokens", "offsets"}</c> lines.
/// </summary>
public sealed class TokenizeCommand : Command<TokenizeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("-m|--model <PATH>")]
        [Description("A model folder (with tokenizer.json) or a tokenizer.json file; default: the bundled tiny Falcon.")]
        public string Model { get; init; } = "";

        [CommandArgument(0, "[TEXT]")]
        [Description("The text to tokenize; read from stdin when absent.")]
        public string? Text { get; init; }

        [CommandOption("--json-lines")]
        // Help text is Spectre markup: a literal bracket is written twice.
        [Description("Read {\"text\": …} lines from stdin; write {\"ids\", \"tokens\", \"offsets\": [[{\"start\", \"stop\"}]]} lines (UTF-8 byte offsets).")]
        public bool JsonLines { get; init; }

        [CommandOption("--add-special-tokens")]
        [Description("Apply the tokenizer's post-processor (e.g. a leading <s>).")]
        public bool AddSpecialTokens { get; init; }

        [CommandOption("--ids-only")]
        [Description("Print only the ids, space-separated, on one line.")]
        public bool IdsOnly { get; init; }

        [CommandOption("--decode")]
        [Description("The reverse: read space- or comma-separated ids (argument or stdin) and print their text.")]
        public bool Decode { get; init; }

        [CommandOption("--skip-special-tokens")]
        [Description("With --decode: leave special tokens out.")]
        public bool SkipSpecialTokens { get; init; }

        public override Spectre.Console.ValidationResult Validate() =>
            JsonLines && Text is not null ? Spectre.Console.ValidationResult.Error("--json-lines reads stdin; do not also give TEXT")
            : Spectre.Console.ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var tokenizer = HfTokenizer.Load(TextGeneratorFactory.LocalModelOrBundled(settings.Model));
        using var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false)) { AutoFlush = false };
        if (settings.JsonLines)
        {
            using var stdin = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false));
            RunJsonLines(tokenizer, settings.AddSpecialTokens, stdin, stdout, cancellationToken);
            return 0;
        }

        string text = settings.Text ?? ReadStdin();
        if (settings.Decode)
        {
            var ids = text.Split([' ', ',', '\n', '\r', '\t', '[', ']'], StringSplitOptions.RemoveEmptyEntries)
                .Select(s => int.TryParse(s, out int id) && tokenizer.IdToToken(id) is not null ? id
                    : throw new HarpiaException($"--decode: '{s}' is not a token id of {settings.Model} (0 to {tokenizer.VocabSize - 1})")).ToArray();
            stdout.Write(tokenizer.Decode(ids, settings.SkipSpecialTokens));
            stdout.WriteLine();
            return 0;
        }
        var spans = tokenizer.EncodeWithOffsets(text, settings.AddSpecialTokens);
        if (settings.IdsOnly) stdout.WriteLine(string.Join(' ', spans.Select(s => s.Id)));
        else
        {
            foreach (var s in spans)
                stdout.WriteLine($"{s.Id,7}  {JsonSerializer.Serialize(s.Text, JsonOptions)}  [{s.Start}, {s.Stop})");
            stdout.WriteLine($"{spans.Count} tokens");
        }
        return 0;
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static string ReadStdin()
    {
        using var reader = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false));
        return reader.ReadToEnd();
    }

    /// <summary>The --json-lines loop: one {"text"} object per input line, one result object per output line.</summary>
    internal static void RunJsonLines(ITokenizer tokenizer, bool addSpecialTokens, TextReader reader, TextWriter stdout, CancellationToken cancel)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        int lineNumber = 0;
        for (string? line; (line = reader.ReadLine()) is not null;)
        {
            cancel.ThrowIfCancellationRequested();
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string text;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("text", out var t)
                    || t.ValueKind != JsonValueKind.String)
                    throw new HarpiaException($"stdin line {lineNumber}: expected an object with a string \"text\"");
                text = t.GetString()!;
            }
            catch (JsonException e) { throw new HarpiaException($"stdin line {lineNumber}: not valid JSON: {e.Message}"); }

            var spans = tokenizer.EncodeWithOffsets(text, addSpecialTokens);
            buffer.ResetWrittenCount();
            json.Reset(buffer);
            json.WriteStartObject();
            json.WriteStartArray("ids");
            foreach (var s in spans) json.WriteNumberValue(s.Id);
            json.WriteEndArray();
            json.WriteStartArray("tokens");
            foreach (var s in spans) json.WriteStringValue(s.Text);
            json.WriteEndArray();
            json.WriteStartArray("offsets");
            foreach (var s in spans)
            {
                json.WriteStartObject();
                json.WriteNumber("start", s.Start);
                json.WriteNumber("stop", s.Stop);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
            json.Flush();
            stdout.WriteLine(Encoding.UTF8.GetString(buffer.WrittenSpan));
            stdout.Flush();
        }
    }
}

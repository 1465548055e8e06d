using System.Text.Json;
using Harpia.Cli.Commands;

namespace Harpia.Tests.Tokenization;

public class TokenizeCommandTests
{
    [Fact]
    public void JsonLinesGivesIdsTokensAndByteOffsets()
    {
        var falcon = FalconConformanceTests.Falcon.Value;
        var c = FalconConformanceTests.Cases.Value[0];
        var input = new StringReader(JsonSerializer.Serialize(new { text = c.Text }) + "\n\n" + "{\"text\": \"é>>TITLE<<\"}\n");
        var output = new StringWriter();
        TokenizeCommand.RunJsonLines(falcon, false, input, output, CancellationToken.None);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length); // the blank line is skipped
        using var first = JsonDocument.Parse(lines[0]);
        Assert.Equal(c.Ids, first.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()));
        Assert.Equal(c.Ids.Select(id => falcon.IdToToken(id)), first.RootElement.GetProperty("tokens").EnumerateArray().Select(x => x.GetString()));
        using var second = JsonDocument.Parse(lines[1]);
        var offsets = second.RootElement.GetProperty("offsets").EnumerateArray()
            .Select(o => (o.GetProperty("start").GetInt32(), o.GetProperty("stop").GetInt32())).ToArray();
        Assert.Equal([(0, 2), (2, 11)], offsets); // "é" is two UTF-8 bytes, then the special token
        Assert.Equal([465, 0], second.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()));
    }

    [Theory]
    [InlineData("{bad json", "stdin line 1: not valid JSON")]
    [InlineData("{\"txt\": \"a\"}", "stdin line 1: expected an object with a string \"text\"")]
    [InlineData("[1]", "stdin line 1: expected an object")]
    public void BadLinesAreReportedWithTheirNumber(string line, string message)
    {
        var e = Assert.Throws<HarpiaException>(() => TokenizeCommand.RunJsonLines(
            FalconConformanceTests.Falcon.Value, false, new StringReader(line), new StringWriter(), CancellationToken.None));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void DecodingAnIdOutsideTheVocabularyIsAnError()
    {
        string falcon = Fixtures.Path_("falcon", "tokenizer.json");
        Assert.Equal(1, Harpia.Cli.Program.Run(["tokenize", "--model", falcon, "--decode", "99999999"]));
        Assert.Equal(1, Harpia.Cli.Program.Run(["tokenize", "--model", falcon, "--decode", "-3"]));
        Assert.Equal(0, Harpia.Cli.Program.Run(["tokenize", "--model", falcon, "--decode", "9856 1079"]));
    }
}

using Spectre.Console;

namespace Harpia.Tests;

/// <summary>Every command's --help renders (help text is Spectre markup: a stray bracket breaks it at run time).</summary>
public sealed class CliHelpTests
{
    [Theory]
    [InlineData("generate", "--max-new-tokens")] [InlineData("inspect", "MODEL")] [InlineData("quantize", "--type")]
    [InlineData("synth", "--shape")] [InlineData("download", "--include")] [InlineData("serve", "--max-input-tokens")]
    [InlineData("chat", "--model")] [InlineData("version", "--help")] [InlineData("plan", "--budget")]
    [InlineData("perplexity", "--reference")] [InlineData("tokenize", "--json-lines")] [InlineData("bench", "--concurrency")]
    public void Help_renders_and_exits_zero(string command, string mentions)
    {
        var output = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
        int rc = Harpia.Cli.Program.Run([command, "--help"], console);
        Assert.Equal(0, rc);
        Assert.Contains("OPTIONS", output.ToString());
        Assert.Contains(mentions, output.ToString());
    }
}

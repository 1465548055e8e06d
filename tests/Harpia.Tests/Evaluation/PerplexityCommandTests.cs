using System.Text.Json.Nodes;
using Harpia.Cli.Commands;

namespace Harpia.Tests.Evaluation;

public class PerplexityCommandTests
{
    private static JsonObject RunJson(PerplexityCommand.Settings settings, string stdin = "")
    {
        var output = new StringWriter();
        Assert.Equal(0, PerplexityCommand.Run(settings, new StringReader(stdin), output, interactive: false, default));
        return JsonNode.Parse(output.ToString())!.AsObject();
    }

    private static string Error(PerplexityCommand.Settings settings, string stdin = "") =>
        Assert.ThrowsAny<HarpiaException>(() => PerplexityCommand.Run(settings, new StringReader(stdin), new StringWriter(), false, default)).Message;

    [Fact]
    public void JsonReportsPerplexityOfTheBundledModel()
    {
        var json = RunJson(new() { Model = EvaluationFixtures.TinyModel, File = EvaluationFixtures.TextPath, Context = 32, MaxWindows = 2, Json = true });
        Assert.Equal(32, (int)json["context"]!);
        Assert.Equal(2, (int)json["windows"]!);
        Assert.Equal(2 * 15, (int)json["tokens_scored"]!);
        double ppl = (double)json["perplexity"]!;
        Assert.Equal(Math.Exp((double)json["mean_nll"]!), ppl, 1e-9);
        Assert.InRange(ppl, 1, 8192); // a trained model beats the uniform guess
        Assert.True((double)json["perplexity_stderr"]! > 0);
        Assert.Null(json["kl_divergence_mean"]);

        // stdin gives the same numbers; the text summary says the same
        var fromStdin = RunJson(new() { Model = EvaluationFixtures.TinyModel, File = "-", Context = 32, MaxWindows = 2, Json = true },
                                File.ReadAllText(EvaluationFixtures.TextPath));
        Assert.Equal(ppl, (double)fromStdin["perplexity"]!);
        Assert.Equal("stdin", (string)fromStdin["file"]!);
        var text = new StringWriter();
        PerplexityCommand.Run(new() { Model = EvaluationFixtures.TinyModel, File = EvaluationFixtures.TextPath, Context = 32, MaxWindows = 2 },
                              new StringReader(""), text, false, default);
        Assert.Contains($"perplexity   {ppl:F4} ± ", text.ToString());
        Assert.Contains("2 windows of 32, scoring 15 per window (30 tokens)", text.ToString());
    }

    [Fact]
    public void KlAgainstAReferenceModelEqualsKlAgainstItsSavedLogProbs()
    {
        using var dir = new Fixtures.TempDir();
        string saved = dir.File("f32.hlp");
        var save = RunJson(new() { Model = EvaluationFixtures.Gguf("f32"), File = EvaluationFixtures.TextPath, Context = 32, MaxWindows = 3, SaveReference = saved, Json = true });
        Assert.Equal(saved, (string)save["saved_reference"]!);
        var live = RunJson(new() { Model = EvaluationFixtures.Gguf("Q8_0"), File = EvaluationFixtures.TextPath, Context = 32, MaxWindows = 3, Reference = EvaluationFixtures.Gguf("f32"), Json = true });
        var file = RunJson(new() { Model = EvaluationFixtures.Gguf("Q8_0"), File = EvaluationFixtures.TextPath, Context = 32, MaxWindows = 3, ReferenceLogits = saved, Json = true });
        foreach (var key in new[] { "kl_divergence_mean", "kl_divergence_stderr", "kl_divergence_median", "kl_divergence_p99", "kl_divergence_max",
                                    "same_top_percent", "rms_delta_p_percent", "reference_perplexity", "perplexity" })
            Assert.Equal((double)live[key]!, (double)file[key]!);
        Assert.True((double)live["kl_divergence_mean"]! > 0);
        // The same model scored live or from its float-rounded log-probs (random weights: a huge perplexity, so compare relatively).
        Assert.InRange((double)live["reference_perplexity"]! / (double)save["perplexity"]!, 1 - 1e-6, 1 + 1e-6);
        Assert.InRange((double)live["same_top_percent"]!, 90, 100);
    }

    [Fact]
    public void ADashAfterAnOptionMeansStdin()
    {
        Assert.Equal(["perplexity", "--file=-", "--json"], Harpia.Cli.Program.JoinStdinDash(["perplexity", "--file", "-", "--json"]));
        Assert.Equal(["-f=-"], Harpia.Cli.Program.JoinStdinDash(["-f", "-"]));
        Assert.Equal(["--file=a", "-"], Harpia.Cli.Program.JoinStdinDash(["--file=a", "-"]));
    }

    [Fact]
    public void BadInputGivesOneClearMessage()
    {
        using var dir = new Fixtures.TempDir();
        string tiny = EvaluationFixtures.TinyModel, text = EvaluationFixtures.TextPath;
        File.WriteAllText(dir.File("empty.txt"), " \n");
        File.WriteAllText(dir.File("short.txt"), "The license is short.");

        Assert.Contains("--file nope.txt: not found", Error(new() { Model = tiny, File = "nope.txt" }));
        Assert.Contains("empty.txt: the text is empty", Error(new() { Model = tiny, File = dir.File("empty.txt") }));
        Assert.Contains("stdin: the text is empty", Error(new() { Model = tiny, File = "-" }, ""));
        var shortError = Error(new() { Model = tiny, File = dir.File("short.txt") });
        Assert.Matches(@"short\.txt: \d+ tokens; perplexity with --context 512 needs at least 1024 \(two windows of 512\)", shortError);
        Assert.Contains("--context 1: a window needs at least 2 tokens", Error(new() { Model = tiny, File = text, Context = 1 }));
        Assert.Contains("--context 4096 is more than the model's 2048 positions", Error(new() { Model = tiny, File = text, Context = 4096 }));
        Assert.Contains($"--reference {EvaluationFixtures.Gguf("f32")} has a vocabulary of 4096 tokens, --model {tiny} 8192",
                        Error(new() { Model = tiny, File = text, Context = 32, Reference = EvaluationFixtures.Gguf("f32") }));
        Assert.Contains("give --reference or --reference-logits, not both", Error(new() { Model = tiny, File = text, Reference = "a", ReferenceLogits = "b" }));
        Assert.Contains("--save-reference records --model's log-probs", Error(new() { Model = tiny, File = text, Reference = "a", SaveReference = "b" }));
        Assert.Contains("--max-windows 0: must be at least 1", Error(new() { Model = tiny, File = text, MaxWindows = 0 }));
        Assert.Contains("reference log-probs file not found", Error(new() { Model = tiny, File = text, Context = 32, ReferenceLogits = dir.File("none.hlp") }));
    }
}

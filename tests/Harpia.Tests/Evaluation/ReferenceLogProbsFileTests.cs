using Harpia.Evaluation;
using Harpia.Models.Falcon;

namespace Harpia.Tests.Evaluation;

public class ReferenceLogProbsFileTests
{
    private const int Context = 32, Windows = 3;

    /// <summary>Saves f32's log-probs over 3 windows of 32 tokens; returns the path and the plan.</summary>
    private static (EvaluationWindows Windows, PerplexityResult Saved) Save(string path)
    {
        using var f32 = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        var tokens = EvaluationFixtures.Tokens.Value;
        var windows = EvaluationWindows.Plan(tokens.Length, Context, f32.Shape, Windows, false, "text");
        using var writer = new ReferenceLogProbsFile.Writer(path, f32.Shape.VocabSize, tokens, windows);
        var result = Perplexity.Evaluate(f32, tokens, windows, save: writer);
        writer.Complete();
        return (windows, result);
    }

    [Fact]
    public void ComparingAgainstASavedReferenceEqualsTheLiveComparison()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("f32.hlp");
        var (windows, saved) = Save(path);
        Assert.Equal(ReferenceLogProbsFile.FileBytes(windows, 4096), new FileInfo(path).Length);
        Assert.False(File.Exists(path + ".partial"));

        var tokens = EvaluationFixtures.Tokens.Value;
        using var f32 = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        using var q8 = FalconModel.Load(EvaluationFixtures.Gguf("Q8_0"));
        Assert.Equal(saved.MeanNll, Perplexity.Evaluate(f32, tokens, windows).MeanNll); // saving changes nothing
        var live = Perplexity.Evaluate(q8, tokens, windows, new ModelReference(f32, tokens, windows, "f32")).Kl!;
        using (var file = ReferenceLogProbsFile.Open(path, 4096, tokens, windows))
        {
            var fromFile = Perplexity.Evaluate(q8, tokens, windows, file).Kl!;
            Assert.Equal(live, fromFile); // exactly: both paths round the reference's log-probs to float the same way
        }
        Assert.Equal(saved.MeanNll, live.ReferenceMeanNll, 1e-5);

        // A file with more windows serves a shorter run.
        var two = windows with { Count = 2 };
        using var prefix = ReferenceLogProbsFile.Open(path, 4096, tokens, two);
        Assert.True(Perplexity.Evaluate(q8, tokens, two, prefix).Kl!.Mean > 0);
    }

    private static string OpenError(string path, int vocab = 4096, int[]? tokens = null, EvaluationWindows? windows = null) =>
        Assert.ThrowsAny<HarpiaException>(() =>
            ReferenceLogProbsFile.Open(path, vocab, tokens ?? EvaluationFixtures.Tokens.Value, windows ?? new EvaluationWindows(Context, Windows, Context / 2)).Dispose()).Message;

    [Fact]
    public void BrokenOrMismatchedFilesGiveClearErrors()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("f32.hlp");
        var (windows, _) = Save(path);
        byte[] good = File.ReadAllBytes(path);
        string Variant(string name, Action<byte[]> change, int? length = null)
        {
            var bytes = good.AsSpan(0, length ?? good.Length).ToArray();
            change(bytes);
            string p = dir.File(name);
            File.WriteAllBytes(p, bytes);
            return p;
        }

        Assert.Contains("reference log-probs file not found", OpenError(dir.File("missing.hlp")));
        Assert.Contains("truncated: 1,000 bytes, the header promises", OpenError(Variant("cut.hlp", _ => { }, 1000)));
        Assert.Contains("shorter than the 32-byte header", OpenError(Variant("tiny.hlp", _ => { }, 10)));
        Assert.Contains("not a Harpia reference log-probs file", OpenError(Variant("magic.hlp", b => b[0] = (byte)'X')));
        Assert.Contains("format version 2; this Harpia reads version 1", OpenError(Variant("version.hlp", b => b[8] = 2)));
        Assert.Contains("corrupt header", OpenError(Variant("header.hlp", b => b[20] = 200)));
        Assert.Contains("saved with a vocabulary of 4096 tokens; the model has 8192", OpenError(path, vocab: 8192));
        Assert.Contains("saved with --context 32; this run uses --context 64", OpenError(path, windows: new EvaluationWindows(64, 2, 32)));
        Assert.Contains("saved with --context 32; this run uses --context 32 --score-all", OpenError(path, windows: windows with { FirstScored = 0 }));
        Assert.Contains("holds 3 windows; this run evaluates 4 (pass --max-windows 3", OpenError(path, windows: windows with { Count = 4 }));

        var other = EvaluationFixtures.Tokens.Value.ToArray();
        other[40]++;
        Assert.Contains($"token sequence differs from this text's at token 40 (saved id {other[40] - 1}, this text {other[40]})", OpenError(path, tokens: other));

        // A payload that is no longer a distribution is caught while comparing.
        string payload = Variant("payload.hlp", b => BitConverter.GetBytes(5f).CopyTo(b, b.Length - 400));
        using var q8 = FalconModel.Load(EvaluationFixtures.Gguf("Q8_0"));
        using var file = ReferenceLogProbsFile.Open(payload, 4096, EvaluationFixtures.Tokens.Value, windows);
        var e = Assert.Throws<HarpiaException>(() => Perplexity.Evaluate(q8, EvaluationFixtures.Tokens.Value, windows, file));
        Assert.Contains("window 2, row 14 is not a probability distribution", e.Message);
    }

    [Fact]
    public void AnUnfinishedSaveLeavesNoFile()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("partial.hlp");
        var windows = new EvaluationWindows(Context, Windows, Context / 2);
        using (var writer = new ReferenceLogProbsFile.Writer(path, 4096, EvaluationFixtures.Tokens.Value, windows))
            writer.Write(new float[windows.ScoredPerWindow * 4096]);
        Assert.False(File.Exists(path));
        Assert.False(File.Exists(path + ".partial"));
    }
}

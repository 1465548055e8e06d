using Harpia.Evaluation;
using Harpia.Models;
using Harpia.Models.Falcon;

namespace Harpia.Tests.Evaluation;

public class PerplexityTests
{
    /// <summary>The textbook computation, written out separately: one full pass per window, log-softmax in double.</summary>
    private static (double MeanNll, long Count) Straightforward(ICausalLM model, int[] tokens, int context, int windows, int firstScored)
    {
        int vocab = model.Shape.VocabSize;
        double sum = 0;
        long count = 0;
        for (int w = 0; w < windows; w++)
        {
            var window = tokens.AsMemory(w * context, context);
            var logits = new float[context * vocab];
            model.Forward([new SequenceChunk(window, 0, new DenseKvCache(model, context), AllLogits: true)], logits);
            for (int pos = firstScored; pos < context - 1; pos++)
            {
                var row = logits.AsSpan(pos * vocab, vocab);
                double max = double.NegativeInfinity;
                foreach (float l in row) max = Math.Max(max, l);
                double z = 0;
                foreach (float l in row) z += Math.Exp(l - max);
                sum += -(row[window.Span[pos + 1]] - max - Math.Log(z));
                count++;
            }
        }
        return (sum / count, count);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PerplexityEqualsTheStraightforwardComputation(bool scoreAll)
    {
        using var model = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        var tokens = EvaluationFixtures.Tokens.Value;
        var windows = EvaluationWindows.Plan(tokens.Length, 48, model.Shape, maxWindows: 3, scoreAll, "text");
        Assert.Equal(new EvaluationWindows(48, 3, scoreAll ? 0 : 24), windows);

        var result = Perplexity.Evaluate(model, tokens, windows);
        var (expected, count) = Straightforward(model, tokens, 48, 3, scoreAll ? 0 : 24);
        Assert.Equal(count, result.TokensScored);
        Assert.Equal(3 * (scoreAll ? 47 : 23), result.TokensScored);
        Assert.Equal(expected, result.MeanNll, 1e-9);
        // Relative: perplexity is exp(mean NLL), about 5e8 for this random model, where 1e-6 absolute is below one ulp
        // and the last bits depend on the order the SIMD width sums in.
        Assert.Equal(1.0, result.Perplexity / Math.Exp(expected), 1e-9);
        Assert.InRange(result.PerplexityStdErr, 1e-6, result.Perplexity);
        Assert.True(result.TokensPerSecond > 0);
        Assert.Null(result.Kl);
    }

    [Fact]
    public void WindowsBatchedInOneForwardGiveTheSameResult()
    {
        using var model = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        var tokens = EvaluationFixtures.Tokens.Value;
        var windows = EvaluationWindows.Plan(tokens.Length, 32, model.Shape, maxWindows: 5, false, "text");
        var one = Perplexity.Evaluate(model, tokens, windows);
        var three = Perplexity.Evaluate(model, tokens, windows, windowsPerBatch: 3); // batches of 3 and 2
        Assert.Equal(one.MeanNll, three.MeanNll, 1e-5);
    }

    [Fact]
    public void KlDivergenceOfAModelAgainstItselfIsZero()
    {
        using var model = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        var tokens = EvaluationFixtures.Tokens.Value;
        var windows = EvaluationWindows.Plan(tokens.Length, 32, model.Shape, maxWindows: 3, false, "text");
        var result = Perplexity.Evaluate(model, tokens, windows, new ModelReference(model, tokens, windows, "self"));
        var kl = result.Kl!;
        Assert.InRange(kl.Mean, -1e-6, 1e-6); // the reference's log-probs are rounded to float
        Assert.InRange(kl.Max, -1e-6, 1e-6);
        Assert.Equal(1.0, kl.SameTopFraction);
        Assert.InRange(kl.RmsDeltaP, 0, 1e-6);
        Assert.Equal(result.MeanNll, kl.ReferenceMeanNll, 1e-5);
    }

    [Fact]
    public void Q8_0CostsLessThanQ4_K_M()
    {
        using var f32 = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        using var q8 = FalconModel.Load(EvaluationFixtures.Gguf("Q8_0"));
        using var q4 = FalconModel.Load(EvaluationFixtures.Gguf("Q4_K_M"));
        var tokens = EvaluationFixtures.Tokens.Value;
        var windows = EvaluationWindows.Plan(tokens.Length, 64, f32.Shape, maxWindows: 4, false, "text");
        var klQ8 = Perplexity.Evaluate(q8, tokens, windows, new ModelReference(f32, tokens, windows, "f32")).Kl!;
        var klQ4 = Perplexity.Evaluate(q4, tokens, windows, new ModelReference(f32, tokens, windows, "f32")).Kl!;
        Assert.True(klQ8.Mean > 0, $"KL(f32‖Q8_0) = {klQ8.Mean}");
        Assert.True(klQ8.Mean < klQ4.Mean, $"KL(f32‖Q8_0) = {klQ8.Mean}, KL(f32‖Q4_K_M) = {klQ4.Mean}");
        Assert.True(klQ8.SameTopFraction >= klQ4.SameTopFraction);
        Assert.True(klQ8.RmsDeltaP < klQ4.RmsDeltaP);
        Assert.True(klQ8.Median <= klQ8.P99 && klQ8.P99 <= klQ8.Max);
    }

    [Theory]
    [InlineData(1, "--context 1: a window needs at least 2 tokens")]
    [InlineData(4096, "--context 4096 is more than the model's 2048 positions")]
    [InlineData(600, "text: 1000 tokens; perplexity with --context 600 needs at least 1200 (two windows of 600)")]
    public void BadPlansSayWhatIsWrong(int context, string message)
    {
        var shape = new ModelShape(2, 2, 32, 4096, 2048, 256);
        var e = Assert.Throws<HarpiaException>(() => EvaluationWindows.Plan(1000, context, shape, null, false, "text"));
        Assert.Contains(message, e.Message);
        Assert.Equal(new EvaluationWindows(100, 10, 50), EvaluationWindows.Plan(1000, 100, shape, null, false, "text"));
        Assert.Equal(4, EvaluationWindows.Plan(1000, 100, shape, 4, false, "text").Count);
    }

    [Fact]
    public void TokensOutsideTheVocabularyAndReferencesOfAnotherVocabularyAreRejected()
    {
        using var model = FalconModel.Load(EvaluationFixtures.Gguf("f32"));
        var tokens = EvaluationFixtures.Tokens.Value.ToArray();
        var windows = EvaluationWindows.Plan(tokens.Length, 32, model.Shape, 2, false, "text");
        tokens[5] = 5000;
        var e = Assert.Throws<HarpiaException>(() => Perplexity.Evaluate(model, tokens, windows));
        Assert.Contains("token 5 of the text is id 5000, outside the model's vocabulary of 4096", e.Message);

        using var tiny = FalconModel.Load(EvaluationFixtures.TinyModel);
        e = Assert.Throws<HarpiaException>(() => Perplexity.Evaluate(model, EvaluationFixtures.Tokens.Value, windows,
            new ModelReference(tiny, EvaluationFixtures.Tokens.Value, windows, "tiny")));
        Assert.Contains("tiny: the reference has a vocabulary of 8192 tokens, the model 4096", e.Message);
    }
}

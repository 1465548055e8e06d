using System.Diagnostics;
using System.Numerics.Tensors;
using Harpia.Models;

namespace Harpia.Evaluation;

/// <summary>Progress after each window: how far, and the perplexity so far (llama.cpp prints the same per chunk).</summary>
public readonly record struct PerplexityProgress(int WindowsDone, int Windows, double Perplexity);

/// <summary>What a perplexity run measured. Perplexity = exp(mean NLL); its ± is propagated from the NLL's.</summary>
public sealed record PerplexityResult(EvaluationWindows Windows, double MeanNll, double MeanNllStdErr, TimeSpan ForwardTime,
                                      KlDivergenceResult? Kl)
{
    public double Perplexity => Math.Exp(MeanNll);
    public double PerplexityStdErr => Perplexity * MeanNllStdErr;
    public long TokensScored => Windows.TokensScored;
    /// <summary>Tokens through the model under test per second of its forward passes (every token of every window).</summary>
    public double TokensPerSecond => ForwardTime > TimeSpan.Zero ? Windows.TokensEvaluated / ForwardTime.TotalSeconds : 0;
}

/// <summary>
/// The model under test against a reference, over the same scored tokens, in llama.cpp's <c>--kl-divergence</c>
/// terms. KL is KL(reference ‖ model) = Σ p_ref (log p_ref − log p_model) in nats per token; Δp is the change of the
/// probability of the actual next token (model − reference); "same top" is how often both rank the same token first.
/// Tiny negative KLs are float rounding of the reference's log-probs.
/// </summary>
public sealed record KlDivergenceResult(
    double Mean, double StdErr, double Median, double P99, double Max, double Min,
    double SameTopFraction, double SameTopStdErr,
    double RmsDeltaP, double RmsDeltaPStdErr, double MeanDeltaP, double MeanDeltaPStdErr,
    double ReferenceMeanNll, double ReferenceMeanNllStdErr)
{
    public double ReferencePerplexity => Math.Exp(ReferenceMeanNll);
    public double ReferencePerplexityStdErr => ReferencePerplexity * ReferenceMeanNllStdErr;
}

/// <summary>
/// llama.cpp-compatible perplexity and KL divergence over <see cref="ICausalLM"/>: each window is one sequence chunk
/// with <c>AllLogits</c> from an empty cache, so several windows can share a forward pass (<paramref name="windowsPerBatch"/>).
/// </summary>
public static class Perplexity
{
    public static PerplexityResult Evaluate(ICausalLM model, ReadOnlyMemory<int> tokens, EvaluationWindows windows,
                                            IReferenceLogProbs? reference = null, ReferenceLogProbsFile.Writer? save = null,
                                            int windowsPerBatch = 1, IProgress<PerplexityProgress>? progress = null,
                                            CancellationToken cancel = default)
    {
        int vocab = model.Shape.VocabSize, context = windows.Context, rows = windows.ScoredPerWindow;
        if (tokens.Length < windows.TokensEvaluated) throw new ArgumentException("fewer tokens than the windows cover", nameof(tokens));
        if (context > model.Shape.MaxPositions) throw new HarpiaException($"--context {context} is more than the model's {model.Shape.MaxPositions} positions");
        if (windowsPerBatch < 1) throw new ArgumentOutOfRangeException(nameof(windowsPerBatch));
        if (reference is not null && reference.VocabSize != vocab)
            throw new HarpiaException($"{reference.Name}: the reference has a vocabulary of {reference.VocabSize} tokens, the model {vocab}; " +
                                      "KL divergence compares models with the same tokenizer");
        var span = tokens.Span[..checked((int)windows.TokensEvaluated)];
        for (int i = 0; i < span.Length; i++)
            if ((uint)span[i] >= (uint)vocab)
                throw new HarpiaException($"token {i} of the text is id {span[i]}, outside the model's vocabulary of {vocab}: the tokenizer does not belong to this model");

        int batch = Math.Min(windowsPerBatch, windows.Count);
        var caches = new DenseKvCache[batch];
        for (int b = 0; b < batch; b++) caches[b] = new DenseKvCache(model, context, initialCapacity: context);
        var logits = new float[(long)batch * context * vocab];
        var refLogProbs = reference is null ? null : new float[rows * vocab];
        var ownLogProbs = save is null ? null : new float[rows * vocab];
        var kl = reference is null ? null : new KlAccumulator(windows.TokensScored);
        var nll = new MeanAccumulator();
        var forward = new Stopwatch();
        var chunks = new List<SequenceChunk>(batch);

        for (int w0 = 0; w0 < windows.Count; w0 += batch)
        {
            cancel.ThrowIfCancellationRequested();
            int n = Math.Min(batch, windows.Count - w0);
            chunks.Clear();
            for (int b = 0; b < n; b++)
            {
                caches[b].SetLength(0);
                chunks.Add(new SequenceChunk(tokens.Slice((w0 + b) * context, context), 0, caches[b], AllLogits: true));
            }
            forward.Start();
            model.Forward(chunks, logits.AsSpan(0, n * context * vocab));
            forward.Stop();

            for (int b = 0; b < n; b++)
            {
                int w = w0 + b;
                reference?.Read(w, refLogProbs);
                var windowTokens = span.Slice(w * context, context);
                for (int r = 0; r < rows; r++)
                {
                    int row = windows.FirstScored + r, target = windowTokens[row + 1];
                    var rowLogits = logits.AsSpan((b * context + row) * vocab, vocab);
                    double lse = LogSoftmax.LogSumExp(rowLogits);
                    nll.Add(lse - rowLogits[target]);
                    if (ownLogProbs is not null) LogSoftmax.Compute(rowLogits, ownLogProbs.AsSpan(r * vocab, vocab));
                    kl?.Add(refLogProbs.AsSpan(r * vocab, vocab), rowLogits, lse, target, reference!.Name, w, r);
                }
                save?.Write(ownLogProbs);
            }
            progress?.Report(new PerplexityProgress(w0 + n, windows.Count, Math.Exp(nll.Mean)));
        }
        return new PerplexityResult(windows, nll.Mean, nll.StdErr, forward.Elapsed, kl?.Result());
    }

    /// <summary>Per-token KL, Δp and top-1 agreement; keeps every KL for the median and tail percentiles.</summary>
    private sealed class KlAccumulator(long tokens)
    {
        private readonly double[] _kl = new double[tokens];
        private MeanAccumulator _klMean, _deltaP, _deltaPSquared, _sameTop, _referenceNll;

        public void Add(ReadOnlySpan<float> refLogProbs, ReadOnlySpan<float> logits, double lse, int target, string name, int window, int row)
        {
            double kl = 0, sumP = 0, refBest = double.NegativeInfinity;
            int refTop = 0;
            for (int i = 0; i < logits.Length; i++)
            {
                double lr = refLogProbs[i], p = Math.Exp(lr);
                sumP += p;
                kl += p * (lr - (logits[i] - lse));
                if (lr > refBest) { refBest = lr; refTop = i; }
            }
            // A reference row must be a distribution; checking it here is free and catches a corrupt file's payload.
            if (!(Math.Abs(sumP - 1) < 1e-3))
                throw new HarpiaException($"{name}: window {window}, row {row} is not a probability distribution (Σp = {sumP:G6}): the reference is corrupt");
            _kl[_klMean.Count] = kl;
            _klMean.Add(kl);
            double deltaP = Math.Exp(logits[target] - lse) - Math.Exp(refLogProbs[target]);
            _deltaP.Add(deltaP);
            _deltaPSquared.Add(deltaP * deltaP);
            _sameTop.Add(TensorPrimitives.IndexOfMax(logits) == refTop ? 1 : 0);
            _referenceNll.Add(-refLogProbs[target]);
        }

        public KlDivergenceResult Result()
        {
            Array.Sort(_kl);
            double msq = _deltaPSquared.Mean, rms = Math.Sqrt(msq);
            // RMS = sqrt(mean Δp²): propagate the error of mean Δp² through the square root.
            double rmsErr = rms > 0 ? _deltaPSquared.StdErr / (2 * rms) : 0;
            return new KlDivergenceResult(
                _klMean.Mean, _klMean.StdErr, Percentiles.Of(_kl, 0.5), Percentiles.Of(_kl, 0.99), _kl[^1], _kl[0],
                _sameTop.Mean, _sameTop.StdErr, rms, rmsErr, _deltaP.Mean, _deltaP.StdErr,
                _referenceNll.Mean, _referenceNll.StdErr);
        }
    }
}

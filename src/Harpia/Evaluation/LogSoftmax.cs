using System.Numerics.Tensors;

namespace Harpia.Evaluation;

/// <summary>
/// Log-softmax of one logit row, accumulated in double: a 65k-entry sum of exponentials in float loses digits that
/// matter when the mean KL divergence of a good quantization is 1e-4 nats.
/// </summary>
public static class LogSoftmax
{
    /// <summary>log Σ exp(logits), shifted by the maximum so no exponential overflows.</summary>
    public static double LogSumExp(ReadOnlySpan<float> logits)
    {
        double max = TensorPrimitives.Max(logits);
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp(l - max);
        return max + Math.Log(sum);
    }

    /// <summary>Writes log p_i = logits_i − log Σ exp(logits), computed in double and rounded once to float.</summary>
    public static void Compute(ReadOnlySpan<float> logits, Span<float> logProbs)
    {
        if (logProbs.Length != logits.Length) throw new ArgumentException("logProbs must be as long as logits", nameof(logProbs));
        double lse = LogSumExp(logits);
        for (int i = 0; i < logits.Length; i++) logProbs[i] = (float)(logits[i] - lse);
    }
}

namespace Harpia.Evaluation;

/// <summary>Running mean and standard error of the mean of a stream of values (sums in double).</summary>
internal struct MeanAccumulator
{
    private double _sum, _sumSquares;
    public long Count { get; private set; }

    public void Add(double x)
    {
        _sum += x;
        _sumSquares += x * x;
        Count++;
    }

    public readonly double Mean => Count == 0 ? double.NaN : _sum / Count;

    /// <summary>sqrt(var / (n − 1)), as llama.cpp reports its ± uncertainties.</summary>
    public readonly double StdErr
    {
        get
        {
            if (Count < 2) return double.NaN;
            double mean = Mean;
            return Math.Sqrt(Math.Max(0, _sumSquares / Count - mean * mean) / (Count - 1));
        }
    }
}

internal static class Percentiles
{
    /// <summary>The q-quantile of sorted values, linearly interpolated between ranks.</summary>
    public static double Of(ReadOnlySpan<double> sorted, double q)
    {
        if (sorted.IsEmpty) return double.NaN;
        double rank = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank), hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (rank - lo) * (sorted[hi] - sorted[lo]);
    }
}

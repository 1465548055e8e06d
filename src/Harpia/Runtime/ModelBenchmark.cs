using System.Diagnostics;
using System.Globalization;
using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Runtime.Sampling;
using Harpia.Tensors;

namespace Harpia.Runtime;

/// <summary>What <see cref="ModelBenchmark"/> measured (the shape of <c>harpia bench --json</c>, less the concurrency runs).</summary>
/// <param name="PrefillSamples">tokens/s of each timed prefill, in order.</param>
/// <param name="DecodeSamples">tokens/s of each timed decode run, in order.</param>
/// <param name="PeakRssBytes">VmHWM of this process after the runs (Linux); null where /proc is not available.</param>
/// <param name="CurrentRssBytes">VmRSS of this process after the runs (Linux); null elsewhere.</param>
/// <param name="WeightBytesPerToken">Weight bytes one decode step reads (see <see cref="ModelBenchmark.WeightBytesPerToken"/>).</param>
public sealed record ModelBenchmarkResult(
    int Threads, int PromptTokens, int GenTokens, int Reps,
    double PrefillTokensPerSecond, double PrefillTokensPerSecondSd,
    double DecodeTokensPerSecond, double DecodeTokensPerSecondSd,
    IReadOnlyList<double> PrefillSamples, IReadOnlyList<double> DecodeSamples,
    long? PeakRssBytes, long? CurrentRssBytes, long WeightBytesPerToken);

/// <summary>
/// Prefill and decode speed of a model with llama-bench's semantics, on the model alone (no scheduler, no sampler):
/// <list type="bullet">
/// <item>pp P: one <see cref="ICausalLM.Forward"/> of P random token ids on an empty cache;</item>
/// <item>tg G: a fresh cache, one untimed 1-token start, then G single-token forward steps (random ids), timed together;</item>
/// </list>
/// first warmed up (a prefill and a decode run of at most 16 steps, repeated until <c>warmupSeconds</c> have passed,
/// at least once: allocates the model's workspace and lets .NET's tiered JIT replace tier-0 and instrumented code with
/// optimized code; on a small model one round is far too short for that), then each run <c>reps</c> times; the result
/// is the mean ± sample standard deviation of tokens/s.
/// Caches are allocated at full size before the clock starts. Token ids are drawn from a seeded PRNG, above the
/// special tokens at the start of the vocabulary.
/// </summary>
public static class ModelBenchmark
{
    /// <summary>Runs the benchmark on a loaded Falcon model; weight bytes per token come from its weights.</summary>
    public static ModelBenchmarkResult Run(FalconModel model, int promptTokens, int genTokens, int reps, double warmupSeconds = DefaultWarmupSeconds,
        ulong seed = 42, CancellationToken cancellationToken = default) =>
        Run(model, WeightBytesPerToken(model.Weights), promptTokens, genTokens, reps, warmupSeconds, seed, cancellationToken);

    /// <summary>Warm-up time before the timed runs (tiered compilation settles within about a second).</summary>
    public const double DefaultWarmupSeconds = 1.5;

    /// <summary>Runs the benchmark on any causal LM, given the weight bytes it reads per decoded token.</summary>
    public static ModelBenchmarkResult Run(ICausalLM model, long weightBytesPerToken, int promptTokens, int genTokens, int reps,
        double warmupSeconds = DefaultWarmupSeconds, ulong seed = 42, CancellationToken cancellationToken = default)
    {
        Validate(model.Shape, promptTokens, genTokens, reps);
        var shape = model.Shape;
        var rng = new Xoshiro256StarStar(seed);
        var logits = new float[shape.VocabSize];
        int low = Math.Min(256, shape.VocabSize / 2);
        int RandomId() => low + (int)(rng.NextUInt64() % (ulong)(shape.VocabSize - low));

        double Prefill()
        {
            var ids = new int[promptTokens];
            for (int i = 0; i < ids.Length; i++) ids[i] = RandomId();
            using var cache = new DenseKvCache(model, promptTokens, initialCapacity: promptTokens);
            long t0 = Stopwatch.GetTimestamp();
            model.Forward([new SequenceChunk(ids, 0, cache)], logits);
            return promptTokens / Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }

        double Decode(int steps)
        {
            var ids = new int[steps + 1];
            for (int i = 0; i < ids.Length; i++) ids[i] = RandomId();
            using var cache = new DenseKvCache(model, steps + 1, initialCapacity: steps + 1);
            model.Forward([new SequenceChunk(new[] { ids[0] }, 0, cache)], logits);
            var token = new int[1];
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 1; i <= steps; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                token[0] = ids[i];
                model.Forward([new SequenceChunk(token, i, cache)], logits);
            }
            return steps / Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }

        var warmup = Stopwatch.StartNew();
        do
        {
            cancellationToken.ThrowIfCancellationRequested();
            Prefill();
            Decode(Math.Min(genTokens, 16));
        } while (warmup.Elapsed.TotalSeconds < warmupSeconds);
        var pp = new double[reps];
        var tg = new double[reps];
        for (int r = 0; r < reps; r++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            pp[r] = Prefill();
        }
        for (int r = 0; r < reps; r++) tg[r] = Decode(genTokens);
        var (peak, current) = ResidentMemory();
        return new ModelBenchmarkResult(ComputePool.Threads, promptTokens, genTokens, reps,
            pp.Average(), StandardDeviation(pp), tg.Average(), StandardDeviation(tg), pp, tg, peak, current, weightBytesPerToken);
    }

    /// <summary>Throws a <see cref="HarpiaException"/> naming the first argument the model cannot run.</summary>
    public static void Validate(ModelShape shape, int promptTokens, int genTokens, int reps)
    {
        if (promptTokens < 1) throw new HarpiaException($"prompt tokens must be at least 1, got {promptTokens}");
        if (genTokens < 1) throw new HarpiaException($"generated tokens must be at least 1, got {genTokens}");
        if (reps < 1) throw new HarpiaException($"repetitions must be at least 1, got {reps}");
        if (promptTokens > shape.MaxPositions)
            throw new HarpiaException($"prompt tokens ({promptTokens}) exceed the model's {shape.MaxPositions} positions");
        if (genTokens + 1 > shape.MaxPositions)
            throw new HarpiaException($"generated tokens ({genTokens}) plus the start token exceed the model's {shape.MaxPositions} positions");
    }

    /// <summary>
    /// Weight bytes one decode step reads: every linear layer's weight (QKV, dense, h→4h, 4h→h of every layer) and
    /// the lm_head in full, plus one row of the word embeddings. Norms and biases are left out (a few KB per layer).
    /// Divided by the machine's read bandwidth, it is the roofline upper bound on single-stream decode tokens/s.
    /// </summary>
    public static long WeightBytesPerToken(FalconWeights weights)
    {
        long bytes = weights.LmHead.ByteLength + weights.WordEmbeddings.RowBytes;
        foreach (var layer in weights.Layers)
            bytes += layer.QueryKeyValue.Weight.ByteLength + layer.Dense.Weight.ByteLength
                   + layer.DenseHTo4H.Weight.ByteLength + layer.Dense4HToH.Weight.ByteLength;
        return bytes;
    }

    /// <summary>
    /// This process's peak (VmHWM) and current (VmRSS) resident set in bytes from /proc/self/status; nulls where that
    /// file does not exist or lacks the field (not Linux).
    /// </summary>
    public static (long? PeakBytes, long? CurrentBytes) ResidentMemory()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return (null, null);
        try
        {
            string[] lines = File.ReadAllLines(status);
            return (Field(lines, "VmHWM:"), Field(lines, "VmRSS:"));
        }
        catch (IOException) { return (null, null); }
        catch (UnauthorizedAccessException) { return (null, null); }
    }

    // "VmHWM:\t  123456 kB"
    internal static long? Field(IEnumerable<string> lines, string name)
    {
        foreach (var line in lines)
        {
            if (!line.StartsWith(name, StringComparison.Ordinal)) continue;
            var parts = line[name.Length..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 1 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                return parts.Length >= 2 && parts[1] == "kB" ? kb * 1024 : kb;
        }
        return null;
    }

    /// <summary>Sample standard deviation (n − 1); 0 for fewer than two values.</summary>
    public static double StandardDeviation(IReadOnlyList<double> values)
    {
        if (values.Count < 2) return 0;
        double mean = values.Average();
        return Math.Sqrt(values.Sum(x => (x - mean) * (x - mean)) / (values.Count - 1));
    }
}

using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Native;

namespace Harpia.Bench;

/// <summary>
/// `llamacpp MODEL.gguf`: llama.cpp's side of the end-to-end comparison, run in this process through LLamaSharp
/// (LLamaSharp.Backend.Cpu). Measures like llama-bench: pp = one decode of N random prompt tokens on an empty
/// cache; tg = M single-token decodes from an empty cache; each repeated, mean ± sd of tokens/s after a warm-up.
/// Phase 2 puts Harpia's numbers for the same file next to these.
/// </summary>
public static class LlamaCppBench
{
    public sealed record Result(double PromptTokS, double PromptSd, double GenTokS, double GenSd, long PeakRssBytes, string Library);

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0].StartsWith("--"))
        {
            Console.Error.WriteLine("usage: llamacpp <model.gguf> [--prompt-tokens 512] [--gen-tokens 128] [--threads 2] [--reps 3] [--verbose]");
            return 2;
        }
        string model = args[0];
        int pp = 512, tg = 128, threads = 2, reps = 3;
        bool verbose = false;
        for (int i = 1; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--prompt-tokens": pp = int.Parse(Next()); break;
                case "--gen-tokens": tg = int.Parse(Next()); break;
                case "--threads": threads = int.Parse(Next()); break;
                case "--reps": reps = int.Parse(Next()); break;
                case "--verbose": verbose = true; break;
                default: Console.Error.WriteLine($"llamacpp: unknown option {args[i]}"); return 2;
            }
        }
        if (!File.Exists(model)) { Console.Error.WriteLine($"error: {model}: no such file"); return 1; }
        var r = Measure(model, pp, tg, threads, reps, verbose);
        Console.WriteLine($"llama.cpp ({r.Library}) {Path.GetFileName(model)}, threads {threads}, reps {reps}");
        Console.WriteLine($"  pp{pp}: {r.PromptTokS,9:F1} ± {r.PromptSd:F1} tok/s");
        Console.WriteLine($"  tg{tg}: {r.GenTokS,9:F1} ± {r.GenSd:F1} tok/s");
        Console.WriteLine($"  peak RSS: {r.PeakRssBytes / 1e6:F0} MB");
        return 0;
    }

    public static Result Measure(string model, int pp, int tg, int threads, int reps, bool verbose)
    {
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (verbose || level == LLamaLogLevel.Error) Console.Error.Write(message);
        });
        var p = new ModelParams(model)
        {
            ContextSize = (uint)(pp + tg + 8),
            BatchSize = (uint)Math.Max(pp, 1),
            UBatchSize = (uint)Math.Max(pp, 1),
            Threads = threads,
            BatchThreads = threads,
            GpuLayerCount = 0,
        };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var ctx = weights.CreateContext(p);
        int vocab = weights.Vocab.Count;
        var rng = new Random(42);
        var batch = new LLamaBatch();
        var seq = (LLamaSeqId)0;

        double Prompt()
        {
            ctx.NativeHandle.MemoryClear(true);
            batch.Clear();
            for (int i = 0; i < pp; i++) batch.Add(rng.Next(vocab), i, seq, i == pp - 1);
            var sw = Stopwatch.StartNew();
            Check(ctx.Decode(batch));
            ctx.NativeHandle.Synchronize();
            return pp / sw.Elapsed.TotalSeconds;
        }

        double Generate()
        {
            ctx.NativeHandle.MemoryClear(true);
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < tg; i++)
            {
                batch.Clear();
                batch.Add(rng.Next(vocab), i, seq, true);
                Check(ctx.Decode(batch));
            }
            ctx.NativeHandle.Synchronize();
            return tg / sw.Elapsed.TotalSeconds;
        }

        if (pp > 0) Prompt();      // warm-up, as llama-bench does
        if (tg > 0) { int saved = tg; tg = Math.Min(tg, 4); Generate(); tg = saved; }
        var pps = Enumerable.Range(0, pp > 0 ? reps : 0).Select(_ => Prompt()).ToArray();
        var tgs = Enumerable.Range(0, tg > 0 ? reps : 0).Select(_ => Generate()).ToArray();
        long rss = Process.GetCurrentProcess().PeakWorkingSet64;
        return new Result(Mean(pps), Sd(pps), Mean(tgs), Sd(tgs), rss, NativeLibraryConfig.LLama.LibraryHasLoaded ? "LLamaSharp 0.30 CPU" : "?");
    }

    private static void Check(DecodeResult r)
    {
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {r}");
    }

    private static double Mean(double[] v) => v.Length == 0 ? double.NaN : v.Average();

    private static double Sd(double[] v)
    {
        if (v.Length < 2) return 0;
        double m = v.Average();
        return Math.Sqrt(v.Sum(x => (x - m) * (x - m)) / (v.Length - 1));
    }
}

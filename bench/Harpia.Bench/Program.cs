// Console benchmark harness: each benchmark runs Harpia and its peer (llama.cpp via LLamaSharp, Hugging Face
// tokenizers via node) side by side in one run and prints both. See docs/BENCHMARKS.md for the commands.
namespace Harpia.Bench;

public static class Program
{
    /// <summary>One line per benchmark: name → entry point taking the remaining arguments.</summary>
    private static readonly Dictionary<string, Func<string[], int>> Benchmarks = new(StringComparer.OrdinalIgnoreCase)
    {
        ["tokenizer"] = TokenizerBenchmark.Run,
        ["matvec"] = MatVecBench.Run,
        ["llamacpp"] = LlamaCppBench.Run,
        ["compare"] = CompareBench.Run,
        ["llamacpp-json"] = CompareBench.RunLlamaCppJson, // child of compare: one engine per process
        ["harpia-json"] = CompareBench.RunHarpiaJson,
    };

    public static int Main(string[] args)
    {
        if (args.Length > 0 && Benchmarks.TryGetValue(args[0], out var run)) return run(args[1..]);
        Console.Error.WriteLine("usage: dotnet run -c Release --project bench/Harpia.Bench -- <benchmark> [options]");
        Console.Error.WriteLine("benchmarks: " + string.Join(", ", Benchmarks.Keys));
        return 2;
    }
}

// Console benchmark harness: each benchmark runs Harpia and its peer (llama.cpp via LLamaSharp, Hugging Face
// tokenizers via node) side by side in one run and prints both. See docs/BENCHMARKS.md for the commands.
namespace Harpia.Bench;

public static class Program
{
    public static int Main(string[] args)
    {
        switch (args.FirstOrDefault())
        {
            case "matvec": return MatVecBench.Run(args[1..]);
            case "llamacpp": return LlamaCppBench.Run(args[1..]);
            default:
                Console.Error.WriteLine("usage: dotnet run -c Release --project bench/Harpia.Bench -- <benchmark> [options]");
                Console.Error.WriteLine("benchmarks:");
                Console.Error.WriteLine("  llamacpp <model.gguf> [--prompt-tokens 512] [--gen-tokens 128] [--threads 2] [--reps 3]");
                Console.Error.WriteLine("  matvec [--rows 8192] [--cols 8192] [--threads N] [--prefill N] [--types Q4_K,Q8_0] [--simd Vector256] [--bw-mb 1024]");
                return 2;
        }
    }
}

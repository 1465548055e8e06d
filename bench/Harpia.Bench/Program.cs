// Console benchmark harness: each benchmark runs Harpia and its peer (llama.cpp via LLamaSharp, Hugging Face
// tokenizers via node) side by side in one run and prints both. See docs/BENCHMARKS.md for the commands.
namespace Harpia.Bench;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("usage: dotnet run -c Release --project bench/Harpia.Bench -- <benchmark> [options]");
        Console.Error.WriteLine("benchmarks: (none yet)");
        return args.Length == 0 ? 2 : 2;
    }
}

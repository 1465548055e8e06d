using Harpia;
using Harpia.Cli.Commands;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli;

public static class Program
{
    public static int Main(string[] args) => Run(args);

    /// <param name="console">Where help and parse errors go (tests capture them); the terminal when null.</param>
    internal static int Run(string[] args, IAnsiConsole? console = null)
    {
        var app = new CommandApp();
        app.Configure(config =>
        {
            config.SetApplicationName("harpia");
            if (console is not null) config.ConfigureConsole(console);
            config.UseStrictParsing(); // an unknown flag is an error, never silently ignored
            config.SetExceptionHandler((ex, _) => ReportError(ex));
            // One line per command; each command lives in Commands/<Name>Command.cs.
            config.AddCommand<GenerateCommand>("generate").WithDescription("Generate text from a prompt with a Falcon model (greedy or sampled; --json for a TGI response).");
            config.AddCommand<InspectCommand>("inspect").WithDescription("Show a model's architecture, parameters, dtypes, tensors and memory needs.");
            config.AddCommand<QuantizeCommand>("quantize").WithDescription("Quantize a Falcon checkpoint (Hugging Face folder or f32/f16/bf16 GGUF) to a llama.cpp GGUF: Q8_0, Q4_K_M, ….");
            config.AddCommand<SynthCommand>("synth").WithDescription("Write a random-weight Falcon checkpoint of real shapes (benchmarks, load tests).");
            config.AddCommand<DownloadCommand>("download").WithDescription("Fetch a model from the Hugging Face Hub into its cache (resumable, every file hash-verified).");
            config.AddCommand<ServeCommand>("serve").WithDescription("Serve a model over HTTP: Hugging Face TGI's API and OpenAI's.");
            config.AddCommand<BatchCommand>("batch").WithDescription("Run a JSONL file of requests (OpenAI Batch API or TGI lines) offline; resumable after a kill, drains on SIGTERM.");
            config.AddBranch("deploy", deploy =>
            {
                deploy.SetDescription("Write the commands and scripts that deploy Harpia: `deploy gce` for Google Cloud.");
                deploy.AddCommand<DeployGceCommand>("gce").WithDescription("Write gcloud commands and a startup script for a GCE VM that serves a model (or runs a resumable batch).");
            });
            config.AddCommand<ChatCommand>("chat").WithDescription("Chat with a model in the terminal (streaming; /system, /reset, /exit).");
            config.AddCommand<VersionCommand>("version").WithDescription("Print Harpia's version and the machine's SIMD support.");
            config.AddCommand<PlanCommand>("plan").WithDescription("Plan a deployment: what hardware runs a model, how fast, at what cost, within a budget.");
            config.AddCommand<PerplexityCommand>("perplexity").WithDescription("Score a text: perplexity, and KL divergence against a reference model (what a quantization costs).");
            config.AddCommand<TokenizeCommand>("tokenize").WithDescription("Tokenize text with a model's tokenizer.json (ids, tokens, byte offsets).");
            config.AddCommand<BenchCommand>("bench").WithDescription("Benchmark a model like llama-bench: prefill/decode tokens/s, peak RSS, bytes per token, concurrent streams.");
            config.AddCommand<GpuSelfTestCommand>("gpu-selftest").IsHidden().WithDescription("Check the CUDA backend on a GPU against the CPU backend (scripts/gpu-check.sh).");
        });
        return app.Run(JoinStdinDash(args));
    }

    /// <summary>
    /// Spectre.Console.Cli reads a lone "-" as an option without a name, so <c>--file -</c> (stdin, the usual Unix
    /// spelling) would fail to parse; <c>--file=-</c> parses, so join an option and a following "-" into that form.
    /// </summary>
    internal static string[] JoinStdinDash(string[] args)
    {
        var joined = new List<string>(args.Length);
        foreach (string arg in args)
        {
            if (arg == "-" && joined.Count > 0 && joined[^1].StartsWith('-') && !joined[^1].Contains('='))
                joined[^1] += "=-";
            else joined.Add(arg);
        }
        return [.. joined];
    }

    /// <summary>One clear message and a non-zero exit; a stack trace only with HARPIA_DEBUG=1.</summary>
    internal static int ReportError(Exception ex)
    {
        while (ex is CommandRuntimeException or System.Reflection.TargetInvocationException or AggregateException
               && ex.InnerException is not null && ex is not HarpiaException)
            ex = ex.InnerException!;
        string message = ex switch
        {
            HarpiaException or CommandParseException or CommandRuntimeException => ex.Message,
            FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException => ex.Message,
            _ => $"{ex.GetType().Name}: {ex.Message}",
        };
        Console.Error.WriteLine($"error: {message}");
        if (Environment.GetEnvironmentVariable("HARPIA_DEBUG") == "1") Console.Error.WriteLine(ex);
        return ex is CommandParseException ? 2 : 1;
    }
}

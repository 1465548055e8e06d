using System.ComponentModel;
using System.Globalization;
using System.Runtime.InteropServices;
using Harpia.Operations;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia batch IN.jsonl --output OUT.jsonl</c>: <see cref="BatchJob"/> from the command line. SIGTERM (a spot VM's
/// preemption notice reaches the process as SIGTERM) and Ctrl+C stop admitting and let the requests in flight finish;
/// a second Ctrl+C abandons them. The exit code says whether to run again: 0 done, <see cref="ExitInterrupted"/>
/// stopped early (the same command resumes).
/// </summary>
public sealed class BatchCommand : AsyncCommand<BatchCommand.Settings>
{
    /// <summary>EX_TEMPFAIL from sysexits.h: not finished, run the same command again.</summary>
    public const int ExitInterrupted = 75;

    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<INPUT>"), Description("JSONL requests: OpenAI Batch API lines (custom_id, method, url, body) or TGI lines (id, inputs, parameters)")]
        public string Input { get; init; } = "";

        [CommandOption("-o|--output <PATH>"), Description("JSONL results, appended and fsynced one line per request; re-running resumes from it")]
        public string? Output { get; init; }

        [CommandOption("-m|--model|--model-id <MODEL>"), Description("Model folder, .gguf file or Hugging Face repository id (fetched into the cache); default: the bundled tiny Falcon")]
        public string? Model { get; init; }

        [CommandOption("--revision <REV>"), Description("With a repository id: branch, tag or commit"), DefaultValue("main")]
        public string Revision { get; init; } = "main";

        [CommandOption("--quantize <KIND>"), Description("Quantize float weights on load: q8_0, q4_k_m, …")]
        public string? Quantize { get; init; }

        [CommandOption("-c|--max-concurrency <N>"), Description("Requests in flight at once (their decode steps run as one batch)"), DefaultValue(8)]
        public int MaxConcurrency { get; init; } = 8;

        [CommandOption("--max-new-tokens <N>"), Description("Tokens to generate when a request names no limit"), DefaultValue(256)]
        public int MaxNewTokens { get; init; } = 256;

        [CommandOption("--no-progress"), Description("No progress line on stderr")]
        public bool NoProgress { get; init; }

        public override Spectre.Console.ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Output)) return Spectre.Console.ValidationResult.Error("--output <PATH> is required (the results file; re-running with it resumes)");
            if (MaxConcurrency < 1) return Spectre.Console.ValidationResult.Error($"--max-concurrency must be at least 1, got {MaxConcurrency}");
            if (MaxNewTokens < 1) return Spectre.Console.ValidationResult.Error($"--max-new-tokens must be at least 1, got {MaxNewTokens}");
            if (Path.GetFullPath(Input) == Path.GetFullPath(Output!)) return Spectre.Console.ValidationResult.Error("--output must not be the input file");
            return Spectre.Console.ValidationResult.Success();
        }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (!File.Exists(settings.Input)) throw new HarpiaException($"{settings.Input}: input file not found");
        using var stopAdmitting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var abort = new CancellationTokenSource();
        int interrupts = 0;
        void OnSignal(PosixSignalContext signal)
        {
            signal.Cancel = true; // handled here: drain, then exit with ExitInterrupted
            if (Interlocked.Increment(ref interrupts) == 1)
            {
                Console.Error.WriteLine($"\nharpia batch: {signal.Signal}: admitting no more requests; finishing those in flight (again to abandon them)");
                stopAdmitting.Cancel();
            }
            else abort.Cancel();
        }
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);

        string modelPath = await TextGeneratorFactory.ResolveModelAsync(settings.Model, settings.Revision, stopAdmitting.Token).ConfigureAwait(false);
        var generator = TextGeneratorFactory.Open(new TextGeneratorFactory.Request(modelPath, settings.Quantize,
            settings.MaxConcurrency, null, null));
        try
        {
            var bar = settings.NoProgress ? null : new ProgressLine(Console.Error, !Console.IsErrorRedirected);
            var job = new BatchJob(generator, new BatchJobOptions { Concurrency = settings.MaxConcurrency, DefaultMaxNewTokens = settings.MaxNewTokens });
            BatchJobResult result;
            try
            {
                result = await job.RunAsync(settings.Input, settings.Output!, stopAdmitting.Token, bar, abort.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (abort.IsCancellationRequested)
            {
                Console.Error.WriteLine("harpia batch: abandoned the requests in flight; the same command resumes");
                return ExitInterrupted;
            }
            bar?.Finish();
            Console.Error.WriteLine($"harpia batch: {result.Completed} answered, {result.Failed} failed, {result.AlreadyDone} already done, " +
                $"{result.Total - result.AlreadyDone - result.Completed - result.Failed} left of {result.Total} → {settings.Output}");
            if (result.Interrupted)
            {
                Console.Error.WriteLine("harpia batch: stopped early; run the same command again to resume");
                return ExitInterrupted;
            }
            return 0;
        }
        finally
        {
            (generator as IDisposable)?.Dispose();
        }
    }
}

/// <summary>
/// A progress bar with rate and ETA on stderr: redrawn in place on a terminal, a plain line every few seconds
/// otherwise (journald, a log file). The rate counts this run's requests only, so a resumed job's ETA is honest.
/// </summary>
public sealed class ProgressLine(TextWriter writer, bool interactive) : IProgress<BatchProgress>
{
    private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    private readonly object _lock = new();
    private TimeSpan? _lastPrinted;
    private BatchProgress _last;
    private bool _drawn;

    public void Report(BatchProgress value)
    {
        lock (_lock)
        {
            _last = value;
            var now = _clock.Elapsed;
            bool complete = value.Done >= value.Total;
            if (!complete && _lastPrinted is { } last && now - last < (interactive ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromSeconds(5))) return;
            _lastPrinted = now;
            Draw(value, now);
        }
    }

    public void Finish()
    {
        lock (_lock)
        {
            if (!_drawn || _last.Done < _last.Total) Draw(_last, _clock.Elapsed);
            if (interactive) writer.WriteLine();
        }
    }

    private void Draw(BatchProgress value, TimeSpan elapsed)
    {
        string line = Format(value, elapsed);
        if (interactive) writer.Write("\r" + line + "\u001b[K"); else writer.WriteLine(line);
        writer.Flush();
        _drawn = true;
    }

    /// <summary><c>[#######.............]  35/100  35%  2.50 req/s  ETA 0:26  (3 failed)</c>.</summary>
    public static string Format(BatchProgress p, TimeSpan elapsed, int width = 20)
    {
        double fraction = p.Total == 0 ? 1 : (double)p.Done / p.Total;
        int filled = (int)Math.Round(fraction * width);
        int thisRun = p.Completed + p.Failed;
        double rate = elapsed.TotalSeconds > 0 ? thisRun / elapsed.TotalSeconds : 0;
        int remaining = p.Total - p.Done;
        string eta = remaining == 0 ? "done" : rate > 0 ? "ETA " + Clock(TimeSpan.FromSeconds(remaining / rate)) : "ETA --:--";
        string failed = p.Failed > 0 ? $"  ({p.Failed} failed)" : "";
        return string.Create(CultureInfo.InvariantCulture,
            $"[{new string('#', filled)}{new string('.', width - filled)}] {p.Done,5}/{p.Total}  {fraction * 100,3:0}%  {rate:0.00} req/s  {eta}{failed}");
    }

    private static string Clock(TimeSpan t) => t.TotalHours >= 1
        ? string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}")
        : string.Create(CultureInfo.InvariantCulture, $"{t.Minutes}:{t.Seconds:00}");
}

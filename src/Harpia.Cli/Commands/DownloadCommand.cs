using System.ComponentModel;
using Harpia.Hub;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary><c>harpia download owner/name</c>: fetch a model repository from the Hugging Face Hub, resumably.</summary>
public sealed class DownloadCommand : AsyncCommand<DownloadCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<REPO_ID>")]
        [Description("Hugging Face repository id, e.g. tiiuae/falcon-7b or TheBloke/Falcon-180B-GGUF; owner/name:Q4_K_M fetches one GGUF quantization.")]
        public string RepoId { get; init; } = "";

        [CommandOption("--revision")]
        [Description("Branch, tag or commit (the guide's GPTQ branches: gptq-4bit--1g-actorder_True). Default: main.")]
        public string Revision { get; init; } = "main";

        [CommandOption("--include")]
        [Description("Glob of files to fetch; repeatable (e.g. --include '*Q4_K_M*.gguf'). Default: configs, tokenizer, safetensors, GGUF.")]
        public string[] Include { get; init; } = [];

        [CommandOption("--quant <QUANT>")]
        [Description("Only the GGUF file of this quantization (e.g. Q4_K_M), every part of it when it is split; the same as REPO_ID:Q4_K_M.")]
        public string? Quant { get; init; }

        [CommandOption("--out")]
        [Description("Destination folder (plain files). Default: the Hugging Face cache, $HF_HUB_CACHE or $HF_HOME/hub (~/.cache/huggingface/hub), shared with huggingface_hub.")]
        public string? Out { get; init; }

        [CommandOption("--endpoint")]
        [Description("Hub base URL (default: $HF_ENDPOINT or https://huggingface.co).")]
        public string? Endpoint { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var (repo, tagged) = GgufFileChoice.SplitModelId(settings.RepoId);
        if (tagged is not null && settings.Quant is not null && !string.Equals(tagged, settings.Quant, StringComparison.OrdinalIgnoreCase))
            throw new HarpiaException($"two quantizations given: '{tagged}' ({settings.RepoId}) and '{settings.Quant}' (--quant); give one");
        string? quant = settings.Quant ?? tagged;
        using var hub = new HubClient(settings.Endpoint);
        var files = await WithProgressAsync(progress => quant is null
            ? hub.DownloadAsync(repo, settings.Out, settings.Revision, settings.Include, progress, cancellationToken)
            : hub.DownloadGgufAsync(repo, quant, settings.Out, settings.Revision, settings.Include, progress, cancellationToken));
        string dest = settings.Out ?? Path.GetDirectoryName(files[0])!;
        AnsiConsole.MarkupLine($"[green]{files.Count} file(s)[/] verified in {Markup.Escape(dest)}");
        return 0;
    }

    /// <summary>Runs a hub fetch under a Spectre progress bar per file (size, speed, time left).</summary>
    internal static async Task<T> WithProgressAsync<T>(Func<IProgress<DownloadProgress>, Task<T>> fetch)
    {
        T result = default!;
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                var progress = new Progress<DownloadProgress>(p =>
                {
                    if (!tasks.TryGetValue(p.Path, out var t))
                        tasks[p.Path] = t = ctx.AddTask(Markup.Escape(p.Path), maxValue: Math.Max(1, p.Total ?? 1));
                    if (p.Total is long total) t.MaxValue = Math.Max(1, total);
                    t.Value = p.Done;
                });
                result = await fetch(progress);
            });
        return result;
    }
}

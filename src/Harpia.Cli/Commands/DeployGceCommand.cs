using System.ComponentModel;
using Harpia.Operations;
using Harpia.Planning;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary><c>harpia deploy gce --machine a2-ultragpu-4g --zone us-central1-a [--spot] --model-id …</c>.</summary>
public sealed class DeployGceCommand : Command<DeployGceCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--machine <TYPE>"), Description("GCE machine type from the planner's catalog (a2-ultragpu-2g, a2-ultragpu-4g, a2-ultragpu-8g, a3-highgpu-8g)")]
        public string? Machine { get; init; }

        [CommandOption("--zone <ZONE>"), Description("GCE zone, e.g. us-central1-a")]
        public string? Zone { get; init; }

        [CommandOption("--spot"), Description("A spot VM (60–91% cheaper, preempted with 30 s notice: the server drains, a batch resumes on the next VM)")]
        public bool Spot { get; init; }

        [CommandOption("--model-id <ID>"), Description("Hugging Face repository id the VM downloads (to local SSD, through the Hub cache) and serves")]
        public string? ModelId { get; init; }

        [CommandOption("--name <NAME>"), Description("VM name (default harpia-<machine>)")]
        public string? Name { get; init; }

        [CommandOption("--bundle-url <URL>"), Description("gs:// or https:// URL of harpia-linux-x64.tar.gz (default: $HARPIA_BUNDLE_URL when create-vm.sh runs)")]
        public string? BundleUrl { get; init; }

        [CommandOption("--serve-args <FLAGS>"), Description("Extra `harpia serve` flags, TGI's (default: --max-concurrent-requests 128)")]
        public string? ServeArgs { get; init; }

        [CommandOption("--batch-input <URL>"), Description("Batch mode: JSONL requests (gs:// or a path on the VM)")]
        public string? BatchInput { get; init; }

        [CommandOption("--batch-output <URL>"), Description("Batch mode: results, kept between VMs (gs:// or a path on a persistent disk)")]
        public string? BatchOutput { get; init; }

        [CommandOption("--catalog <PATH>"), Description("Hardware catalog JSON (default: the planner's built-in catalog)")]
        public string? Catalog { get; init; }

        [CommandOption("-o|--out <DIR>"), Description("Folder to write create-vm.sh and startup.sh into (default: harpia-gce-<machine>)")]
        public string? Out { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string machine = settings.Machine ?? throw new HarpiaException("--machine is required (a GCE machine type such as a2-ultragpu-4g)");
        string zone = settings.Zone ?? throw new HarpiaException("--zone is required (a GCE zone such as us-central1-a)");
        var catalog = settings.Catalog is null ? HardwareCatalog.Default() : HardwareCatalog.Load(settings.Catalog);
        var deployment = new GceDeployment
        {
            Machine = machine,
            Zone = zone,
            ModelId = settings.ModelId ?? "",
            Spot = settings.Spot,
            Name = settings.Name,
            BundleUrl = settings.BundleUrl,
            ServeArgs = settings.ServeArgs ?? new GceDeployment { Machine = "", Zone = "", ModelId = "" }.ServeArgs,
            BatchInput = settings.BatchInput,
            BatchOutput = settings.BatchOutput,
        };
        string folder = settings.Out ?? $"harpia-gce-{machine}";
        string version = VersionCommand.Describe().First()["harpia ".Length..];
        var written = GceRecipe.Write(deployment, catalog, folder, version);
        foreach (string path in written) Console.WriteLine($"wrote {path}");
        Console.WriteLine($"next: {(settings.BundleUrl is null ? "HARPIA_BUNDLE_URL=gs://… " : "")}{(settings.BatchInput is null ? "HARPIA_API_KEY=… " : "")}bash {Path.Combine(folder, GceRecipe.CreateScriptName)}");
        return 0;
    }
}

using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Harpia.Planning;

namespace Harpia.Operations;

/// <summary>What a GCE deployment needs to know; <see cref="GceRecipe.Write"/> turns it into scripts.</summary>
public sealed record GceDeployment
{
    /// <summary>GCE machine type, e.g. a2-ultragpu-4g: the planner's catalog entry gce-&lt;machine&gt;.</summary>
    public required string Machine { get; init; }
    public required string Zone { get; init; }
    public required string ModelId { get; init; }
    public bool Spot { get; init; }
    public string? Name { get; init; }
    /// <summary>Where the VM fetches the bundle (gs:// or https://); null: the script asks for $HARPIA_BUNDLE_URL.</summary>
    public string? BundleUrl { get; init; }
    /// <summary>Extra <c>harpia serve</c> flags (TGI's).</summary>
    public string ServeArgs { get; init; } = "--max-concurrent-requests 128";
    /// <summary>Batch mode when both are set: JSONL requests in, results out (gs:// or a path on a persistent disk).</summary>
    public string? BatchInput { get; init; }
    public string? BatchOutput { get; init; }
    public int BootDiskGb { get; init; } = 200;
}

/// <summary>
/// <c>harpia deploy gce</c>: the gcloud commands that create a VM of a catalog machine type (the planner's names and
/// prices, so the plan and the deployment agree) and the startup script that makes it serve, or run a resumable
/// batch. The startup script is one fixed file (deploy/gce/startup.sh, embedded) that reads its settings from the
/// instance metadata this command's create-vm.sh sets.
/// </summary>
public static partial class GceRecipe
{
    public const string StartupScriptName = "startup.sh";
    public const string CreateScriptName = "create-vm.sh";

    [GeneratedRegex("^[a-z]+-[a-z]+[0-9]+-[a-z]$")]
    private static partial Regex ZonePattern();

    [GeneratedRegex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")]
    private static partial Regex NamePattern();

    /// <summary>The catalog entry for a GCE machine type, or an error naming the ones the catalog has.</summary>
    public static HardwareEntry Machine(HardwareCatalog catalog, string machine)
    {
        var gce = catalog.Entries.Where(e => e.Kind == HardwareKind.Cloud && e.Id.StartsWith("gce-", StringComparison.Ordinal)).ToList();
        return gce.FirstOrDefault(e => e.Id == "gce-" + machine)
               ?? throw new HarpiaException($"--machine {machine}: not a GCE machine type in the planner's catalog ({string.Join(", ", gce.Select(e => e.Id[4..]))})");
    }

    /// <summary>The startup script every VM runs (the embedded copy of deploy/gce/startup.sh).</summary>
    public static string StartupScript()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Harpia.Operations.gce-startup.sh")
            ?? throw new InvalidOperationException("embedded resource Harpia.Operations.gce-startup.sh is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Checks the deployment and writes create-vm.sh and startup.sh into <paramref name="folder"/>.</summary>
    public static IReadOnlyList<string> Write(GceDeployment d, HardwareCatalog catalog, string folder, string harpiaVersion)
    {
        string create = CreateScript(d, catalog, harpiaVersion);
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        foreach (var (name, text) in new[] { (CreateScriptName, create), (StartupScriptName, StartupScript()) })
        {
            string path = Path.Combine(folder, name);
            File.WriteAllText(path, text.ReplaceLineEndings("\n"));
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                    | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            written.Add(path);
        }
        return written;
    }

    /// <summary>The gcloud commands: a firewall rule for the API port (serve mode) and the VM with its metadata.</summary>
    public static string CreateScript(GceDeployment d, HardwareCatalog catalog, string harpiaVersion)
    {
        var entry = Machine(catalog, d.Machine);
        if (!ZonePattern().IsMatch(d.Zone)) throw new HarpiaException($"--zone {d.Zone}: expected a GCE zone such as us-central1-a");
        string region = d.Zone[..d.Zone.LastIndexOf('-')];
        if (entry.UnavailableRegions.Contains(region))
            throw new HarpiaException($"--zone {d.Zone}: {entry.Name} is not offered in {region} (the catalog lists it as unavailable there)");
        if (string.IsNullOrWhiteSpace(d.ModelId)) throw new HarpiaException("--model-id is required (a Hugging Face repository id such as tiiuae/falcon-180B-chat)");
        bool batch = d.BatchInput is not null || d.BatchOutput is not null;
        if (batch && (d.BatchInput is null || d.BatchOutput is null))
            throw new HarpiaException("--batch-input and --batch-output go together (the requests, and where the results are kept between VMs)");
        string name = d.Name ?? $"harpia-{d.Machine}";
        if (!NamePattern().IsMatch(name)) throw new HarpiaException($"--name {name}: GCE names are lowercase letters, digits and '-', starting with a letter, at most 63");
        foreach (var (flag, value) in new[] { ("--model-id", d.ModelId), ("--bundle-url", d.BundleUrl), ("--serve-args", d.ServeArgs), ("--batch-input", d.BatchInput), ("--batch-output", d.BatchOutput) })
            if (value is not null && (value.Contains('|') || value.Contains('\'') || value.Contains('\n')))
                throw new HarpiaException($"{flag}: must not contain | ' or a newline (they delimit and quote the metadata)");

        var cloud = entry.Cloud!;
        string Usd(double v) => v.ToString("0.00", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.Append("#!/usr/bin/env bash\n");
        sb.Append($"# Written by `harpia deploy gce` (harpia {harpiaVersion}). Creates the VM; it then runs startup.sh (beside this file) at every boot.\n");
        sb.Append($"# Machine: {entry.Name}, from the planner's catalog ({entry.PriceSource}, {entry.PriceDate}):\n");
        sb.Append($"#   on demand ${Usd(cloud.OnDemandUsdPerHour)}/h in {entry.Region}; spot ${Usd(cloud.OnDemandUsdPerHour * (1 - cloud.SpotDiscountMax))}–${Usd(cloud.OnDemandUsdPerHour * (1 - cloud.SpotDiscountMin))}/h " +
                  $"({cloud.SpotDiscountMin * 100:0}–{cloud.SpotDiscountMax * 100:0}% off, can be preempted with 30 s notice).\n");
        if (region != entry.Region) sb.Append($"#   (prices are {entry.Region}'s; {region} may differ)\n");
        sb.Append("# Needs: gcloud, logged in, with a default project (gcloud config set project …).\n");
        sb.Append(batch
            ? "# Batch mode: the VM runs `harpia batch` as a service; a preempted VM's successor resumes from --batch-output.\n"
            : "# Serve mode: `harpia serve` on port 8080 as a systemd service; clients send the API key as a Bearer token.\n");
        sb.Append("set -euo pipefail\n");
        sb.Append("here=\"$(cd \"$(dirname \"${BASH_SOURCE[0]}\")\" && pwd)\"\n");
        sb.Append($"name=\"${{1:-{name}}}\"\n");
        sb.Append(d.BundleUrl is null
            ? "bundle_url=\"${HARPIA_BUNDLE_URL:?set HARPIA_BUNDLE_URL to the gs:// or https:// URL of harpia-linux-x64.tar.gz (scripts/build-bundle.sh makes it)}\"\n"
            : $"bundle_url='{d.BundleUrl}'\n");
        if (!batch)
        {
            sb.Append("api_key=\"${HARPIA_API_KEY:?set HARPIA_API_KEY: the token clients must send (it goes into the instance metadata, not into this file)}\"\n");
            sb.Append("allow_from=\"${HARPIA_ALLOW_FROM:-0.0.0.0/0}\" # who may reach port 8080\n");
            sb.Append("if ! gcloud compute firewall-rules describe harpia-8080 > /dev/null 2>&1; then\n");
            sb.Append("  gcloud compute firewall-rules create harpia-8080 --allow=tcp:8080 --target-tags=harpia --source-ranges=\"$allow_from\"\n");
            sb.Append("fi\n");
        }
        var metadata = new List<string> { "install-nvidia-driver=True", "harpia-bundle-url=$bundle_url", $"harpia-model-id={d.ModelId}" };
        if (batch) metadata.AddRange(["harpia-mode=batch", $"harpia-batch-input={d.BatchInput}", $"harpia-batch-output={d.BatchOutput}"]);
        else metadata.AddRange(["harpia-mode=serve", $"harpia-serve-args={d.ServeArgs}", "harpia-api-key=$api_key"]);
        sb.Append("gcloud compute instances create \"$name\" \\\n");
        sb.Append($"  --zone={d.Zone} \\\n");
        sb.Append($"  --machine-type={d.Machine} \\\n");
        if (d.Spot)
            sb.Append("  --provisioning-model=SPOT --instance-termination-action=STOP \\\n");
        sb.Append("  --maintenance-policy=TERMINATE \\\n"); // GPU VMs cannot live-migrate
        sb.Append("  --image-family=common-cu128-ubuntu-2204-nvidia-570 --image-project=deeplearning-platform-release \\\n");
        sb.Append($"  --boot-disk-size={d.BootDiskGb}GB \\\n");
        sb.Append("  --scopes=cloud-platform --tags=harpia \\\n");
        sb.Append("  --metadata-from-file=startup-script=\"$here/startup.sh\" \\\n");
        // ^|^ makes | the separator, so values may hold commas and spaces.
        sb.Append($"  --metadata=\"^|^{string.Join('|', metadata)}\"\n");
        sb.Append(batch
            ? "echo \"created $name: it runs the batch and copies the results to its --batch-output; 'gcloud compute instances start $name' after a preemption resumes it\"\n"
            : "echo \"created $name: 'gcloud compute ssh $name -- journalctl -u harpia -f' shows the server; it answers on port 8080 once the model is loaded\"\n");
        return sb.ToString();
    }
}

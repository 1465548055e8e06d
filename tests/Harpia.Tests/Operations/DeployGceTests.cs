using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using Harpia.Operations;
using Harpia.Planning;

namespace Harpia.Tests.Operations;

/// <summary>
/// <c>harpia deploy gce</c> and the project's shell scripts: the scripts parse (<c>bash -n</c>), pass shellcheck, and
/// the startup script, run for real against a fake metadata server on loopback and fake gcloud/systemctl/nvidia-smi,
/// installs the bundle, fetches the model and writes the service it should.
/// </summary>
public sealed class DeployGceTests : IDisposable
{
    readonly Fixtures.TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    static GceDeployment Serve => new() { Machine = "a2-ultragpu-4g", Zone = "us-central1-a", Spot = true, ModelId = "tiiuae/falcon-7b", BundleUrl = "gs://bucket/harpia-linux-x64.tar.gz" };

    static (int Code, string Output) Run(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, string? workDir = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workDir ?? "" };
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), $"{file} did not finish within 120 s");
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    static void AssertShellClean(string script)
    {
        var (code, output) = Run("bash", ["-n", script]);
        Assert.True(code == 0, $"bash -n {script}: {output}");
        // shellcheck is a Debian package that .ci/run installs; a missing one is an error, not a skipped check.
        (code, output) = Run("shellcheck", ["--severity=style", script]);
        Assert.True(code == 0, $"shellcheck {script}:\n{output}");
    }

    [Fact]
    public void Create_script_uses_the_catalogs_machine_zone_spot_and_prices()
    {
        var catalog = HardwareCatalog.Default();
        string script = GceRecipe.CreateScript(Serve, catalog, "test");
        var entry = catalog.Entries.Single(e => e.Id == "gce-a2-ultragpu-4g");
        Assert.Contains("--machine-type=a2-ultragpu-4g", script);
        Assert.Contains("--zone=us-central1-a", script);
        Assert.Contains("--provisioning-model=SPOT --instance-termination-action=STOP", script);
        Assert.Contains("--maintenance-policy=TERMINATE", script);
        Assert.Contains($"on demand ${entry.Cloud!.OnDemandUsdPerHour.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture)}/h", script);
        Assert.Contains("harpia-model-id=tiiuae/falcon-7b", script);
        Assert.Contains("harpia-mode=serve", script);
        Assert.Contains("HARPIA_API_KEY:?", script); // the secret comes from the environment, never the file
        Assert.DoesNotContain("--provisioning-model", GceRecipe.CreateScript(Serve with { Spot = false }, catalog, "test"));
        string batch = GceRecipe.CreateScript(Serve with { BatchInput = "gs://b/in.jsonl", BatchOutput = "gs://b/out.jsonl" }, catalog, "test");
        Assert.Contains("harpia-mode=batch|harpia-batch-input=gs://b/in.jsonl|harpia-batch-output=gs://b/out.jsonl", batch);
        Assert.DoesNotContain("firewall", batch);
    }

    [Theory]
    [InlineData("a2-megagpu-16g", "us-central1-a", "not a GCE machine type in the planner's catalog (a2-ultragpu-2g, a2-ultragpu-4g")]
    [InlineData("dgx-spark-x1", "us-central1-a", "not a GCE machine type")]
    [InlineData("a2-ultragpu-4g", "us-central1", "expected a GCE zone")]
    [InlineData("a2-ultragpu-4g", "southamerica-east1-a", "not offered in southamerica-east1")]
    public void Bad_machines_and_zones_are_named(string machine, string zone, string expected)
    {
        var ex = Assert.Throws<HarpiaException>(() => GceRecipe.CreateScript(Serve with { Machine = machine, Zone = zone }, HardwareCatalog.Default(), "test"));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void Batch_flags_go_together_and_a_model_is_required()
    {
        Assert.Contains("go together", Assert.Throws<HarpiaException>(() => GceRecipe.CreateScript(Serve with { BatchInput = "gs://b/in" }, HardwareCatalog.Default(), "t")).Message);
        Assert.Contains("--model-id is required", Assert.Throws<HarpiaException>(() => GceRecipe.CreateScript(Serve with { ModelId = " " }, HardwareCatalog.Default(), "t")).Message);
        Assert.Contains("must not contain", Assert.Throws<HarpiaException>(() => GceRecipe.CreateScript(Serve with { ServeArgs = "--x 'y'" }, HardwareCatalog.Default(), "t")).Message);
    }

    [Fact]
    public void Cli_writes_both_scripts_and_they_pass_bash_n_and_shellcheck()
    {
        string outDir = _dir.File("gce");
        int code = Harpia.Cli.Program.Run(["deploy", "gce", "--machine", "a2-ultragpu-4g", "--zone", "us-central1-a", "--spot", "--model-id", "tiiuae/falcon-180B-chat", "--out", outDir]);
        Assert.Equal(0, code);
        foreach (string name in new[] { GceRecipe.CreateScriptName, GceRecipe.StartupScriptName })
        {
            string path = Path.Combine(outDir, name);
            Assert.True(File.Exists(path), path);
            AssertShellClean(path);
        }
        // Batch mode's create script too.
        string batchDir = _dir.File("gce-batch");
        Assert.Equal(0, Harpia.Cli.Program.Run(["deploy", "gce", "--machine", "a2-ultragpu-8g", "--zone", "us-central1-c", "--model-id", "tiiuae/falcon-40b",
            "--batch-input", "gs://b/in.jsonl", "--batch-output", "gs://b/out.jsonl", "--bundle-url", "https://example.com/h.tar.gz", "--out", batchDir]));
        AssertShellClean(Path.Combine(batchDir, GceRecipe.CreateScriptName));
    }

    [Theory]
    [InlineData("scripts/install.sh")]
    [InlineData("scripts/build-bundle.sh")]
    [InlineData("scripts/test-bundle.sh")]
    [InlineData("scripts/test-arm64.sh")]
    [InlineData("deploy/gce/startup.sh")]
    [InlineData("deploy/dgx-spark/install-spark.sh")]
    public void Project_scripts_pass_bash_n_and_shellcheck(string script) => AssertShellClean(Path.Combine(Fixtures.RepoRoot, script));

    [Fact]
    public void The_embedded_startup_script_is_the_checked_in_one()
    {
        Assert.Equal(File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "deploy", "gce", "startup.sh")).ReplaceLineEndings("\n"), GceRecipe.StartupScript().ReplaceLineEndings("\n"));
    }

    // ---- the startup script, run against fakes

    /// <summary>The GCE metadata server's one route the script uses, on loopback; 404 for unset attributes.</summary>
    sealed class FakeMetadataServer : IDisposable
    {
        readonly HttpListener _listener = new();
        readonly Dictionary<string, string> _attributes;
        public string Url { get; }
        public List<string> Requests { get; } = [];

        public FakeMetadataServer(Dictionary<string, string> attributes)
        {
            _attributes = attributes;
            var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            int port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            Url = $"http://127.0.0.1:{port}";
            _listener.Prefixes.Add(Url + "/");
            _listener.Start();
            _ = Task.Run(Serve);
        }

        async Task Serve()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext ctx;
                try { ctx = await _listener.GetContextAsync(); } catch (Exception) { return; }
                string path = ctx.Request.Url!.AbsolutePath;
                lock (Requests) Requests.Add(path);
                const string prefix = "/computeMetadata/v1/instance/attributes/";
                byte[] body = [];
                if (ctx.Request.Headers["Metadata-Flavor"] != "Google") ctx.Response.StatusCode = 403; // as the real one
                else if (path.StartsWith(prefix) && _attributes.TryGetValue(path[prefix.Length..], out string? value)) body = Encoding.UTF8.GetBytes(value);
                else ctx.Response.StatusCode = 404;
                await ctx.Response.OutputStream.WriteAsync(body);
                ctx.Response.Close();
            }
        }

        public void Dispose() { _listener.Stop(); _listener.Close(); }
    }

    /// <summary>
    /// A bundle like build-bundle.sh's (the real install.sh) whose harpia is a script that logs its arguments, fake
    /// gcloud (a "bucket" folder for gs://), systemctl and nvidia-smi that log theirs, and the environment to run in.
    /// </summary>
    Dictionary<string, string> Fakes(string bucket, string log)
    {
        string rid = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        string stage = _dir.File("bundle/harpia-" + rid);
        Directory.CreateDirectory(Path.Combine(stage, "bin"));
        Directory.CreateDirectory(Path.Combine(stage, "models", "harpia-tiny-falcon"));
        File.Copy(Path.Combine(Fixtures.RepoRoot, "scripts", "install.sh"), Path.Combine(stage, "install.sh"));
        File.WriteAllText(Path.Combine(stage, "TARGET"), rid + "\n");
        WriteExecutable(Path.Combine(stage, "bin", "harpia"), $"#!/bin/sh\necho \"harpia $*\" >> '{log}'\n");
        Directory.CreateDirectory(bucket);
        Assert.Equal(0, Run("tar", ["-C", _dir.File("bundle"), "-czf", Path.Combine(bucket, "harpia.tar.gz"), "harpia-" + rid]).Code);

        string bin = _dir.File("fakebin");
        Directory.CreateDirectory(bin);
        // gcloud storage cp SRC DEST, with gs://bucket/x mapped to the bucket folder; anything else is logged.
        WriteExecutable(Path.Combine(bin, "gcloud"), $$"""
            #!/bin/sh
            echo "gcloud $*" >> '{{log}}'
            map() { case "$1" in gs://bucket/*) echo "{{bucket}}/${1#gs://bucket/}" ;; *) echo "$1" ;; esac; }
            if [ "$1 $2" = "storage cp" ]; then cp "$(map "$3")" "$(map "$4")"; fi
            """);
        WriteExecutable(Path.Combine(bin, "systemctl"), $"#!/bin/sh\necho \"systemctl $*\" >> '{log}'\n");
        WriteExecutable(Path.Combine(bin, "nvidia-smi"), "#!/bin/sh\necho 'NVIDIA A100-SXM4-80GB, 81920 MiB'\n");
        string root = _dir.File("root");
        Directory.CreateDirectory(Path.Combine(root, "tmp"));
        return new Dictionary<string, string>
        {
            ["PATH"] = bin + ":" + Environment.GetEnvironmentVariable("PATH"),
            ["HARPIA_ROOT"] = root,
            ["HARPIA_LOCAL_SSD"] = "none",
        };
    }

    static void WriteExecutable(string path, string text)
    {
        File.WriteAllText(path, text.ReplaceLineEndings("\n"));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    [Fact]
    public void Startup_script_dry_run_serves_the_model_as_a_systemd_service()
    {
        string bucket = _dir.File("bucket"), log = _dir.File("calls.log");
        var env = Fakes(bucket, log);
        using var metadata = new FakeMetadataServer(new()
        {
            ["harpia-bundle-url"] = "gs://bucket/harpia.tar.gz",
            ["harpia-model-id"] = "tiiuae/falcon-7b",
            ["harpia-mode"] = "serve",
            ["harpia-serve-args"] = "--max-concurrent-requests 64 --max-total-tokens 4096",
            ["harpia-api-key"] = "s3cret",
        });
        env["HARPIA_METADATA_URL"] = metadata.Url;
        string startup = _dir.File("startup.sh");
        File.WriteAllText(startup, GceRecipe.StartupScript());
        var (code, output) = Run("bash", [startup], env);
        Assert.True(code == 0, output);

        string root = env["HARPIA_ROOT"];
        string calls = File.ReadAllText(log);
        Assert.Contains("gcloud storage cp gs://bucket/harpia.tar.gz", calls);
        Assert.Contains("harpia download tiiuae/falcon-7b", calls); // into the Hub cache, before the service starts
        Assert.Contains("systemctl enable --now harpia.service", calls);
        Assert.Contains("GPUs: NVIDIA A100-SXM4-80GB", output);
        string unit = File.ReadAllText(Path.Combine(root, "etc", "systemd", "system", "harpia.service"));
        Assert.Contains($"ExecStart={root}/opt/harpia/bin/harpia serve --model-id tiiuae/falcon-7b --hostname 0.0.0.0 --port 8080 --max-concurrent-requests 64 --max-total-tokens 4096", unit);
        Assert.Contains("Restart=on-failure", unit);
        Assert.Contains("KillSignal=SIGTERM", unit);
        Assert.Contains($"EnvironmentFile={root}/etc/harpia/harpia.env", unit);
        string envFile = File.ReadAllText(Path.Combine(root, "etc", "harpia", "harpia.env"));
        Assert.Contains("HARPIA_API_KEY=s3cret", envFile);
        Assert.Contains($"HARPIA_HOME={root}/mnt/disks/harpia", envFile);
        Assert.True(Directory.Exists(Path.Combine(root, "opt", "harpia", "models", "harpia-tiny-falcon")));
        Assert.Contains("/computeMetadata/v1/instance/attributes/harpia-model-id", metadata.Requests);
    }

    [Fact]
    public void Startup_script_dry_run_resumes_a_batch_from_the_bucket()
    {
        string bucket = _dir.File("bucket"), log = _dir.File("calls.log");
        var env = Fakes(bucket, log);
        File.WriteAllText(Path.Combine(bucket, "in.jsonl"), "{\"id\":\"a\",\"inputs\":\"x\"}\n{\"id\":\"b\",\"inputs\":\"y\"}\n");
        File.WriteAllText(Path.Combine(bucket, "out.jsonl"), "{\"id\":\"a\",\"generated_text\":\"z\"}\n"); // a preempted VM's results
        using var metadata = new FakeMetadataServer(new()
        {
            ["harpia-bundle-url"] = "gs://bucket/harpia.tar.gz",
            ["harpia-model-id"] = "tiiuae/falcon-7b",
            ["harpia-mode"] = "batch",
            ["harpia-batch-input"] = "gs://bucket/in.jsonl",
            ["harpia-batch-output"] = "gs://bucket/out.jsonl",
        });
        env["HARPIA_METADATA_URL"] = metadata.Url;
        string startup = _dir.File("startup.sh");
        File.WriteAllText(startup, GceRecipe.StartupScript());
        var (code, output) = Run("bash", [startup], env);
        Assert.True(code == 0, output);
        Assert.Contains("resuming from gs://bucket/out.jsonl", output);

        string root = env["HARPIA_ROOT"], jobs = $"{root}/mnt/disks/harpia/batch";
        Assert.Equal(File.ReadAllText(Path.Combine(bucket, "out.jsonl")), File.ReadAllText(Path.Combine(jobs, "output.jsonl")));
        string unit = File.ReadAllText(Path.Combine(root, "etc", "systemd", "system", "harpia-batch.service"));
        Assert.Contains($"ExecStart={root}/opt/harpia/bin/harpia batch {jobs}/input.jsonl --output {jobs}/output.jsonl --model-id tiiuae/falcon-7b", unit);
        Assert.Contains($"ExecStopPost=gcloud storage cp {jobs}/output.jsonl gs://bucket/out.jsonl", unit);
        Assert.Contains("KillSignal=SIGTERM", unit);
        Assert.Contains("SuccessExitStatus=75", unit);
        Assert.Contains("systemctl enable --now harpia-batch.service", File.ReadAllText(log));
    }

    [Fact]
    public void Startup_script_without_its_metadata_says_what_is_missing()
    {
        string bucket = _dir.File("bucket"), log = _dir.File("calls.log");
        var env = Fakes(bucket, log);
        using var metadata = new FakeMetadataServer(new() { ["harpia-model-id"] = "m" });
        env["HARPIA_METADATA_URL"] = metadata.Url;
        string startup = _dir.File("startup.sh");
        File.WriteAllText(startup, GceRecipe.StartupScript());
        var (code, output) = Run("bash", [startup], env);
        Assert.NotEqual(0, code);
        Assert.Contains("harpia-bundle-url is not set", output);
    }
}

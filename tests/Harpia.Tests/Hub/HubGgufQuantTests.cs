using System.Text;
using Harpia.Hub;
using Harpia.Models.Falcon;
using Harpia.Tests.Formats;
using Harpia.Tests.Models;

namespace Harpia.Tests.Hub;

/// <summary>
/// <c>owner/repo:Q4_K_M</c> and <c>harpia download --quant</c> against a local server speaking the Hub's API: only the
/// chosen quantization's files (every part of a split one) are fetched, resumed and verified as other downloads are.
/// </summary>
public sealed class HubGgufQuantTests : IDisposable
{
    private readonly FakeHub _hub = new();
    private readonly Fixtures.TempDir _dir = new();

    public void Dispose() { _hub.Dispose(); _dir.Dispose(); }

    private static string WholeQ4 => Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q4_K_M.gguf");

    /// <summary>A GGUF repository as TheBloke's Falcon-180B ones are: quantizations whole, byte-split and gguf-split side by side.</summary>
    private void AddManyQuantizations()
    {
        using var parts = new Fixtures.TempDir();
        GgufSplitTests.WriteBytePieces(parts.Path, 1000, new FileInfo(WholeQ4).Length / 2 + 3);
        foreach (var piece in Directory.GetFiles(parts.Path).Order())
            _hub.Add("falcon-180b." + Path.GetFileName(piece)["model-".Length..], File.ReadAllBytes(piece), lfs: true);
        using var shards = new Fixtures.TempDir();
        GgufSplitTests.WriteShards(shards.Path, 3, s => $"falcon-180b-Q8_0-{s + 1:D5}-of-00003.gguf");
        foreach (var shard in Directory.GetFiles(shards.Path).Order())
            _hub.Add("Q8_0/" + Path.GetFileName(shard), File.ReadAllBytes(shard), lfs: true);
        _hub.Add("falcon-180b.Q2_K.gguf", RandomBytes(3000, 1), lfs: true);
        _hub.Add("README.md", Encoding.UTF8.GetBytes("# Falcon-180B GGUF"), lfs: false);
    }

    [Fact]
    public async Task ModelIdWithAQuantizationFetchesOnlyItsPartsAndTheyLoadAsTheWholeFile()
    {
        AddManyQuantizations();
        using var client = new HubClient(_hub.Endpoint, token: "") { CacheRoot = Path.Combine(_dir.Path, "cache") };
        var (path, offline) = await client.EnsureModelAsync("TheBloke/Falcon-180B-GGUF:Q4_K_M", "main");
        Assert.False(offline);
        Assert.EndsWith("falcon-180b.Q4_K_M.gguf-split-a", path);
        var snapshot = Path.GetDirectoryName(path)!;
        Assert.Equal(["falcon-180b.Q4_K_M.gguf-split-a", "falcon-180b.Q4_K_M.gguf-split-b", "falcon-180b.Q4_K_M.gguf-split-c"],
            Directory.GetFiles(snapshot, "*", SearchOption.AllDirectories).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(3, _hub.FileRequests);

        using (var whole = FalconModel.Load(WholeQ4))
        using (var fetched = FalconModel.Load(path))
        {
            var ids = FalconGoldenTests.Golden("tiny-falcon-180b-h256")[0].Ids;
            Assert.Equal(FalconGoldenTests.FullPass(whole, ids), FalconGoldenTests.FullPass(fetched, ids));
        }

        // Lower case works as llama.cpp's does; gguf-split shards in a folder come whole, the first shard is the path.
        var (shardPath, _) = await client.EnsureModelAsync("TheBloke/Falcon-180B-GGUF:q8_0", "main");
        Assert.EndsWith(Path.Combine("Q8_0", "falcon-180b-Q8_0-00001-of-00003.gguf"), shardPath);
        Assert.Equal(3, Directory.GetFiles(Path.GetDirectoryName(shardPath)!).Length);
        using (var whole = FalconModel.Load(WholeQ4))
        using (var sharded = FalconModel.Load(shardPath)) Assert.Equal(whole.Source.Tensors.Count, sharded.Source.Tensors.Count);

        // The hub gone: the cached parts serve, as a whole-repository fetch does.
        using var down = new HubClient(ClosedEndpoint(out var held), token: "") { CacheRoot = client.CacheRoot };
        using (held) Assert.Equal((path, true), await down.EnsureModelAsync("TheBloke/Falcon-180B-GGUF:Q4_K_M", "main"));
    }

    [Fact]
    public async Task AMissingOrAmbiguousQuantizationListsWhatTheRepositoryOffersAndFetchesNothing()
    {
        AddManyQuantizations();
        _hub.Add("falcon-180b-chat.Q2_K.gguf", RandomBytes(3000, 2), lfs: true);
        using var client = new HubClient(_hub.Endpoint, token: "");
        var missing = await Assert.ThrowsAsync<HarpiaException>(() => client.EnsureModelAsync("o/r:Q5_K_M", "main", _dir.File("a")));
        Assert.Contains("no GGUF file for quantization 'Q5_K_M'", missing.Message);
        Assert.Contains("falcon-180b.Q4_K_M.gguf (3 parts)", missing.Message);
        Assert.Contains("Q8_0/falcon-180b-Q8_0.gguf (3 parts)", missing.Message);
        Assert.Contains("falcon-180b.Q2_K.gguf", missing.Message);
        var ambiguous = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadGgufAsync("o/r", "Q2_K", _dir.File("b")));
        Assert.Contains("matches several models", ambiguous.Message);
        var none = await Assert.ThrowsAsync<HarpiaException>(() => client.EnsureModelAsync("o/r:", "main", _dir.File("c")));
        Assert.Contains("give a quantization after ':'", none.Message);
        // Without a tag, a repository of many GGUF models is refused with the tag to use, as before.
        var many = await Assert.ThrowsAsync<HarpiaException>(() => client.EnsureModelAsync("o/r", "main", _dir.File("d")));
        Assert.Contains("o/r:Q4_K_M", many.Message);
        Assert.Contains("(3 parts)", many.Message);
        Assert.Equal(0, _hub.FileRequests);
        Assert.Empty(Directory.GetFileSystemEntries(_dir.Path));
    }

    [Fact]
    public async Task ACutPartResumesWithRangeAndEveryPartIsVerified()
    {
        AddManyQuantizations();
        using var client = new HubClient(_hub.Endpoint, token: "");
        _hub.CutAfterBytes = 100_000; // the first shard dies mid-file
        var cut = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadGgufAsync("o/r", "Q8_0", _dir.Path));
        Assert.Contains("resume", cut.Message);
        _hub.CutAfterBytes = null;
        var files = await client.DownloadGgufAsync("o/r", "Q8_0", _dir.Path, alsoInclude: ["README.md"]);
        Assert.Equal(4, files.Count);
        Assert.EndsWith("falcon-180b-Q8_0-00001-of-00003.gguf", files[0]);
        Assert.Contains(_hub.RangeRequests, r => r > 0);
        Assert.False(File.Exists(_dir.File("falcon-180b.Q2_K.gguf")));
        Assert.Empty(Directory.GetFiles(_dir.Path, "*.incomplete", SearchOption.AllDirectories));

        // A part whose bytes are not the listed hash is refused and removed, as a whole-file download is.
        _hub.Add("bad.Q3_K_S.gguf", RandomBytes(5000, 3), lfs: true, servedBytes: RandomBytes(5000, 4));
        var bad = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadGgufAsync("o/r", "Q3_K_S", _dir.Path));
        Assert.Contains("SHA-256", bad.Message);
        Assert.False(File.Exists(_dir.File("bad.Q3_K_S.gguf")));
    }

    [Fact]
    public async Task ARepositoryOfOneSplitModelIsFetchedWhole()
    {
        using var shards = new Fixtures.TempDir();
        GgufSplitTests.WriteShards(shards.Path, 2);
        foreach (var shard in Directory.GetFiles(shards.Path)) _hub.Add(Path.GetFileName(shard), File.ReadAllBytes(shard), lfs: true);
        using var client = new HubClient(_hub.Endpoint, token: "");
        var (path, _) = await client.EnsureModelAsync("o/one-split", "main", _dir.Path);
        Assert.Equal(_dir.File("model-Q4_K_M-00001-of-00002.gguf"), path);
        Assert.True(File.Exists(_dir.File("model-Q4_K_M-00002-of-00002.gguf")));
    }

    [Fact]
    public async Task TheGuidesGptqRevisionResolvesThroughTheCacheAndLoads()
    {
        // serve --model-id TheBloke/Falcon-180B-GPTQ --revision gptq-4bit--1g-actorder_True, with the tiny fixture as the repository.
        const string name = "tiny-falcon-180b-gptq-4bit--1g-actorder_True";
        foreach (var file in new[] { "config.json", "quantize_config.json", "model.safetensors", "golden.json" })
            _hub.Add(file, File.ReadAllBytes(Path.Combine(Fixtures.Model(name), file)), lfs: file.EndsWith(".safetensors"));
        using var client = new HubClient(_hub.Endpoint, token: "") { CacheRoot = Path.Combine(_dir.Path, "cache") };
        var (path, _) = await client.EnsureModelAsync("TheBloke/Falcon-180B-GPTQ", "gptq-4bit--1g-actorder_True");
        Assert.Contains(Path.Combine("models--TheBloke--Falcon-180B-GPTQ", "snapshots", FakeHub.Commit), path);
        Assert.Equal(FakeHub.Commit, File.ReadAllText(Path.Combine(_dir.Path, "cache", "models--TheBloke--Falcon-180B-GPTQ", "refs", "gptq-4bit--1g-actorder_True")));
        Assert.True(File.Exists(Path.Combine(path, "quantize_config.json")));
        Assert.All(_hub.ListingPaths, p => Assert.EndsWith("/revision/gptq-4bit--1g-actorder_True", p));
        using var model = FalconModel.Load(path);
        Assert.Equal("GPTQ 4-bit, one group per row", model.Weights.Layers[0].Dense.Weight.Packed!.Format);
        foreach (var prompt in FalconGoldenTests.Golden(name))
            Assert.Equal(prompt.ArgmaxPerPosition[^1], FalconGoldenTests.ArgMax(FalconGoldenTests.FullPass(model, prompt.Ids)));
    }

    [Fact]
    public void TheDownloadCommandTakesTheTagOrQuant()
    {
        AddManyQuantizations();
        var (code, _, err) = Cli("download", "TheBloke/Falcon-180B-GGUF:Q4_K_M", "--endpoint", _hub.Endpoint, "--out", _dir.File("tag"));
        Assert.True(code == 0, err);
        Assert.Equal(3, Directory.GetFiles(_dir.File("tag")).Length);
        (code, _, err) = Cli("download", "TheBloke/Falcon-180B-GGUF", "--quant", "Q2_K", "--include", "README.md", "--endpoint", _hub.Endpoint, "--out", _dir.File("quant"));
        Assert.True(code == 0, err);
        Assert.Equal(["README.md", "falcon-180b.Q2_K.gguf"], Directory.GetFiles(_dir.File("quant")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        (code, _, err) = Cli("download", "o/r:Q4_K_M", "--quant", "Q8_0", "--endpoint", _hub.Endpoint, "--out", _dir.File("both"));
        Assert.NotEqual(0, code);
        Assert.Contains("two quantizations given", err);
        (code, _, err) = Cli("download", "o/r", "--quant", "IQ1_S", "--endpoint", _hub.Endpoint, "--out", _dir.File("none"));
        Assert.NotEqual(0, code);
        Assert.Contains("no GGUF file for quantization 'IQ1_S'", err);
    }

    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(typeof(Harpia.Cli.Commands.DownloadCommand).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["HF_TOKEN"] = "";
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "harpia did not finish within 120 s");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Theory]
    [InlineData("owner/repo:Q4_K_M", "owner/repo", "Q4_K_M")]
    [InlineData("owner/repo", "owner/repo", null)]
    [InlineData("owner/repo:", "owner/repo", "")]
    [InlineData("a:b:c", "a:b:c", null)]
    public void ModelIdsSplitAtTheQuantizationTag(string id, string repo, string? quant) =>
        Assert.Equal((repo, quant), GgufFileChoice.SplitModelId(id));

    private static string ClosedEndpoint(out System.Net.Sockets.Socket held)
    {
        held = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        held.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        return $"http://127.0.0.1:{((System.Net.IPEndPoint)held.LocalEndPoint!).Port}";
    }

    private static byte[] RandomBytes(int n, int seed) { var b = new byte[n]; new Random(seed).NextBytes(b); return b; }
}

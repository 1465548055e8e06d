using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Harpia.Hub;

namespace Harpia.Tests.Hub;

/// <summary>
/// The real download code against a local server that speaks the Hub's HTTP API (listing, resolve, Range,
/// X-Error-Code), since the real hub cannot be reached from here.
/// </summary>
public sealed class HubClientTests : IDisposable
{
    private readonly FakeHub _hub = new();
    private readonly Fixtures.TempDir _dir = new();

    public void Dispose() { _hub.Dispose(); _dir.Dispose(); }

    [Fact]
    public async Task DownloadsDefaultFilesAndSkipsOthers()
    {
        var weights = RandomBytes(300_000, 1);
        _hub.Add("config.json", Encoding.UTF8.GetBytes("{\"model_type\":\"falcon\"}"), lfs: false);
        _hub.Add("model.safetensors", weights, lfs: true);
        _hub.Add("pytorch_model.bin", RandomBytes(1000, 2), lfs: true);
        using var client = new HubClient(_hub.Endpoint, token: "");
        var files = await client.DownloadAsync("tiiuae/falcon-tiny", _dir.Path);
        Assert.Equal(2, files.Count);
        Assert.Equal(weights, File.ReadAllBytes(_dir.File("model.safetensors")));
        Assert.False(File.Exists(_dir.File("pytorch_model.bin")));
        Assert.Empty(Directory.GetFiles(_dir.Path, "*.incomplete"));
    }

    [Fact]
    public async Task EnsureModelFetchesWhatServeLoadsAndFallsBackToTheCacheOffline()
    {
        // A Hugging Face repository: the folder, without the GGUF conversions that sit beside the safetensors.
        _hub.Add("config.json", Encoding.UTF8.GetBytes("{\"model_type\":\"falcon\"}"), lfs: false);
        _hub.Add("model.safetensors", RandomBytes(5000, 11), lfs: true);
        _hub.Add("falcon.Q4_K_M.gguf", RandomBytes(3000, 12), lfs: true);
        string folder = Path.Combine(_dir.Path, "hf");
        using (var client = new HubClient(_hub.Endpoint, token: ""))
        {
            var (path, offline) = await client.EnsureModelAsync("tiiuae/falcon-tiny", "main", folder);
            Assert.Equal(folder, path);
            Assert.False(offline);
            Assert.True(File.Exists(Path.Combine(folder, "model.safetensors")));
            Assert.False(File.Exists(Path.Combine(folder, "falcon.Q4_K_M.gguf")));
        }

        // Hub gone: the complete cached copy serves; no cache is a clear error.
        int port;
        using var held = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        held.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        port = ((IPEndPoint)held.LocalEndPoint!).Port;
        using (var down = new HubClient($"http://127.0.0.1:{port}", token: ""))
        {
            Assert.Equal((folder, true), await down.EnsureModelAsync("tiiuae/falcon-tiny", "main", folder));
            File.WriteAllBytes(Path.Combine(folder, "model.safetensors.incomplete"), [1]); // a fetch cut short is no cache
            await Assert.ThrowsAsync<HubUnreachableException>(() => down.EnsureModelAsync("tiiuae/falcon-tiny", "main", folder));
            await Assert.ThrowsAsync<HubUnreachableException>(() => down.EnsureModelAsync("o/none", "main", Path.Combine(_dir.Path, "none")));
        }
    }

    [Fact]
    public async Task EnsureModelTakesTheOneGgufAndRefusesToFetchManyVariants()
    {
        var gguf = RandomBytes(4000, 13);
        _hub.Add("falcon-7b.Q4_K_M.gguf", gguf, lfs: true);
        _hub.Add("README.md", Encoding.UTF8.GetBytes("hi"), lfs: false);
        using var client = new HubClient(_hub.Endpoint, token: "");
        var (path, _) = await client.EnsureModelAsync("o/one-gguf", "main", Path.Combine(_dir.Path, "one"));
        Assert.Equal(Path.Combine(_dir.Path, "one", "falcon-7b.Q4_K_M.gguf"), path);
        Assert.Equal(gguf, File.ReadAllBytes(path));

        _hub.Add("falcon-7b.Q8_0.gguf", RandomBytes(4000, 14), lfs: true);
        var ex = await Assert.ThrowsAsync<HarpiaException>(() => client.EnsureModelAsync("o/many", "main", Path.Combine(_dir.Path, "many")));
        Assert.Contains("2 GGUF files", ex.Message);
        Assert.Contains("--include", ex.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir.Path, "many")));
    }

    [Fact]
    public async Task InterruptedDownloadResumesWithRangeAndVerifiesHash()
    {
        var weights = RandomBytes(500_000, 3);
        _hub.Add("model.safetensors", weights, lfs: true);
        _hub.CutAfterBytes = 123_456; // first response dies mid-file
        using var client = new HubClient(_hub.Endpoint, token: "");
        var ex = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadAsync("o/m", _dir.Path));
        Assert.Contains("resume", ex.Message);
        Assert.False(File.Exists(_dir.File("model.safetensors")));
        Assert.True(new FileInfo(_dir.File("model.safetensors.incomplete")).Length > 0);

        _hub.CutAfterBytes = null;
        await client.DownloadAsync("o/m", _dir.Path);
        Assert.Equal(weights, File.ReadAllBytes(_dir.File("model.safetensors")));
        Assert.Contains(_hub.RangeRequests, r => r > 0);
    }

    [Fact]
    public async Task CorruptContentIsRejectedAndRemoved()
    {
        var weights = RandomBytes(10_000, 4);
        _hub.Add("model.safetensors", weights, lfs: true, servedBytes: RandomBytes(10_000, 5));
        using var client = new HubClient(_hub.Endpoint, token: "");
        var ex = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadAsync("o/m", _dir.Path));
        Assert.Contains("SHA-256", ex.Message);
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public async Task GatedAndMissingReposGiveClearMessages()
    {
        _hub.Add("config.json", [1], lfs: false);
        _hub.Gated = true;
        using var client = new HubClient(_hub.Endpoint, token: "");
        var gated = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadAsync("tiiuae/falcon-180B", _dir.Path));
        Assert.Contains("HF_TOKEN", gated.Message);
        _hub.Gated = false;
        _hub.Missing = true;
        var missing = await Assert.ThrowsAsync<HarpiaException>(() => client.ListFilesAsync("nobody/nothing"));
        Assert.Contains("nobody/nothing", missing.Message);
    }

    [Fact]
    public async Task TokenIsSentAsBearer()
    {
        _hub.Add("config.json", [1], lfs: false);
        using var client = new HubClient(_hub.Endpoint, token: "hf_secret");
        await client.DownloadAsync("o/m", _dir.Path);
        Assert.All(_hub.AuthHeaders, h => Assert.Equal("Bearer hf_secret", h));
    }

    [Theory]
    [InlineData("not a repo")]
    [InlineData("../etc")]
    [InlineData("a/b/c")]
    public async Task BadRepoIdsAreRefused(string repo)
    {
        using var client = new HubClient(_hub.Endpoint, token: "");
        await Assert.ThrowsAsync<HarpiaException>(() => client.ListFilesAsync(repo));
    }

    [Fact]
    public async Task UnreachableEndpointSaysSo()
    {
        // A port held bound but not listening: connections are refused, and no other test can take the port meanwhile.
        using var held = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        held.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        int port = ((IPEndPoint)held.LocalEndPoint!).Port;
        using var client = new HubClient($"http://127.0.0.1:{port}", token: "");
        var ex = await Assert.ThrowsAsync<HubUnreachableException>(() => client.ListFilesAsync("o/m"));
        Assert.Contains("cannot reach", ex.Message);
    }

    [Fact]
    public async Task PathsEscapingTheDestinationAreRefused()
    {
        _hub.Add("../evil.safetensors", [1, 2, 3], lfs: false);
        using var client = new HubClient(_hub.Endpoint, token: "");
        var ex = await Assert.ThrowsAsync<HarpiaException>(() => client.DownloadAsync("o/m", _dir.Path, include: ["**"]));
        Assert.Contains("outside", ex.Message);
    }

    [Theory]
    [InlineData("*.safetensors", "model-00001-of-00002.safetensors", true)]
    [InlineData("*.safetensors", "sub/model.safetensors", false)]
    [InlineData("**.gguf", "sub/falcon-180b.Q4_K_M.gguf", true)]
    [InlineData("*Q4_K_M*.gguf", "falcon-180b.Q4_K_M.gguf", true)]
    [InlineData("config.json", "generation_config.json", false)]
    public void GlobMatchesLikeTheHubClient(string pattern, string path, bool match) =>
        Assert.Equal(match, HubClient.Glob(pattern, path));

    private static byte[] RandomBytes(int n, int seed) { var b = new byte[n]; new Random(seed).NextBytes(b); return b; }
}

/// <summary>A minimal Hub: GET /api/models/{repo}/revision/{rev} and GET /{repo}/resolve/{rev}/{path} with Range.</summary>
internal sealed class FakeHub : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Dictionary<string, (byte[] Served, string? Sha, long Size, string BlobId)> _files = new();
    public string Endpoint { get; }
    public const string Commit = "0123456789abcdef0123456789abcdef01234567";
    /// <summary>What the listing says the commit is (a hostile hub may say anything).</summary>
    public string ListedCommit { get; set; } = Commit;
    public long? CutAfterBytes { get; set; }
    /// <summary>Answers every request 200 with the whole file, as a server that does not do ranges.</summary>
    public bool IgnoreRange { get; set; }
    /// <summary>Answers a range request 206 with this Content-Range start instead of the one asked for.</summary>
    public long? WrongRangeStart { get; set; }
    /// <summary>Sends the headers and this many bytes, then nothing (the connection stays open) until released.</summary>
    public long? StallAfterBytes { get; set; }
    public TaskCompletionSource StallRelease { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    /// <summary>Leaves blobId out of the listing (a mirror that lists no hashes).</summary>
    public bool NoBlobIds { get; set; }
    public List<string?> IfRangeHeaders { get; } = [];
    public int FileRequests;
    public bool Gated { get; set; }
    public bool Missing { get; set; }
    public List<long> RangeRequests { get; } = [];
    public List<string?> AuthHeaders { get; } = [];
    /// <summary>The listing requests' paths (they carry the revision asked for).</summary>
    public List<string> ListingPaths { get; } = [];

    public FakeHub()
    {
        for (int attempt = 0; ; attempt++)
        {
            int port;
            using (var l = new TcpListener(IPAddress.Loopback, 0)) { l.Start(); port = ((IPEndPoint)l.LocalEndpoint).Port; }
            Endpoint = $"http://127.0.0.1:{port}";
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add(Endpoint + "/");
            try { _listener.Start(); break; }
            catch (HttpListenerException) when (attempt < 5) { }
        }
        _ = Task.Run(Loop);
    }

    public void Add(string path, byte[] content, bool lfs, byte[]? servedBytes = null) =>
        _files[path] = (servedBytes ?? content, lfs ? Convert.ToHexStringLower(SHA256.HashData(content)) : null, content.Length,
            Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {content.Length}\0"), .. content])));

    private async Task Loop()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); } catch { return; }
            try { await Handle(ctx); } catch { try { ctx.Response.Abort(); } catch { } }
        }
    }

    private async Task Handle(HttpListenerContext ctx)
    {
        var res = ctx.Response;
        string path = Uri.UnescapeDataString(ctx.Request.Url!.AbsolutePath);
        lock (AuthHeaders) AuthHeaders.Add(ctx.Request.Headers["Authorization"]);
        if (Gated) { res.StatusCode = 401; res.Headers["X-Error-Code"] = "GatedRepo"; res.Close(); return; }
        if (Missing) { res.StatusCode = 401; res.Headers["X-Error-Code"] = "RepoNotFound"; res.Close(); return; }
        if (path.StartsWith("/api/models/"))
        {
            lock (ListingPaths) ListingPaths.Add(path);
            var siblings = _files.Select(f => f.Value.Sha is null
                ? (object)new { rfilename = f.Key, size = f.Value.Size, blobId = NoBlobIds ? null : f.Value.BlobId }
                : new { rfilename = f.Key, size = f.Value.Size, blobId = NoBlobIds ? null : f.Value.BlobId, lfs = new { sha256 = f.Value.Sha, size = f.Value.Size, pointerSize = 134 } });
            var body = JsonSerializer.SerializeToUtf8Bytes(new { id = "o/m", sha = ListedCommit, siblings });
            res.ContentType = "application/json";
            res.OutputStream.Write(body);
            res.Close();
            return;
        }
        int resolve = path.IndexOf("/resolve/", StringComparison.Ordinal);
        string rest = path[(resolve + "/resolve/".Length)..];
        string file = rest[(rest.IndexOf('/') + 1)..];
        if (resolve < 0 || !_files.TryGetValue(file, out var entry))
        { res.StatusCode = 404; res.Headers["X-Error-Code"] = "EntryNotFound"; res.Close(); return; }
        Interlocked.Increment(ref FileRequests);
        long from = 0;
        string? range = ctx.Request.Headers["Range"];
        lock (IfRangeHeaders) IfRangeHeaders.Add(ctx.Request.Headers["If-Range"]);
        if (range is not null && range.StartsWith("bytes=") && !IgnoreRange) from = long.Parse(range[6..].TrimEnd('-'));
        lock (RangeRequests) RangeRequests.Add(from);
        res.Headers["X-Repo-Commit"] = Commit;
        res.Headers["ETag"] = $"\"{entry.Sha ?? entry.BlobId}\"";
        long start = from > 0 && WrongRangeStart is long wrong ? wrong : from;
        var data = entry.Served.AsMemory((int)start);
        res.StatusCode = from > 0 ? 206 : 200;
        if (from > 0) res.Headers["Content-Range"] = $"bytes {start}-{entry.Served.Length - 1}/{entry.Served.Length}";
        res.ContentLength64 = data.Length;
        if (StallAfterBytes is long stall && stall < data.Length)
        {
            await res.OutputStream.WriteAsync(data[..(int)stall]);
            await res.OutputStream.FlushAsync();
            await StallRelease.Task;
            res.Abort();
            return;
        }
        if (CutAfterBytes is long cut && cut < data.Length)
        {
            await res.OutputStream.WriteAsync(data[..(int)cut]);
            await res.OutputStream.FlushAsync();
            res.Abort();
            return;
        }
        await res.OutputStream.WriteAsync(data);
        res.Close();
    }

    public void Dispose() { StallRelease.TrySetResult(); try { _listener.Stop(); _listener.Close(); } catch { } }
}

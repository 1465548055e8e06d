using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Harpia.Hub;

/// <summary>A file of a model repository as the Hub lists it.</summary>
public sealed record HubFile(string Path, long? Size, string? Sha256);

/// <summary>Progress of one file: bytes on disk so far (resumed bytes included) of <see cref="Total"/>.</summary>
public readonly record struct DownloadProgress(string Path, long Done, long? Total);

/// <summary>
/// Downloads model repositories from the Hugging Face Hub (or any server speaking its HTTP API, e.g. a mirror set
/// with HF_ENDPOINT): lists a revision's files, fetches them with resume (HTTP Range) into <c>*.incomplete</c>
/// files, checks LFS files' SHA-256 and size, and renames into place only when complete, so an interrupted
/// download never leaves a file that looks whole.
/// </summary>
public sealed class HubClient : IDisposable
{
    public const string DefaultEndpoint = "https://huggingface.co";
    private readonly HttpClient _http;
    private readonly string _endpoint;

    /// <param name="endpoint">Base URL; null: HF_ENDPOINT, else huggingface.co.</param>
    /// <param name="token">Access token for gated models; null: HF_TOKEN, else ~/.cache/huggingface/token.</param>
    public HubClient(string? endpoint = null, string? token = null, HttpMessageHandler? handler = null)
    {
        _endpoint = (endpoint ?? Environment.GetEnvironmentVariable("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/');
        if (!Uri.TryCreate(_endpoint, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
            throw new HarpiaException($"hub endpoint '{_endpoint}' is not an http(s) URL");
        _http = handler is null ? new HttpClient() : new HttpClient(handler);
        _http.Timeout = Timeout.InfiniteTimeSpan; // large files; per-read stalls are bounded below instead
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("harpia/1.0");
        token ??= Environment.GetEnvironmentVariable("HF_TOKEN") ?? ReadTokenFile();
        if (!string.IsNullOrWhiteSpace(token))
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token.Trim());
    }

    /// <summary>How long a read may stall before the download is abandoned (and can be resumed).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public static bool LooksLikeRepoId(string s) => Regex.IsMatch(s, @"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$");

    /// <summary>Lists the files of <paramref name="repoId"/> at <paramref name="revision"/> (branch, tag or commit).</summary>
    public async Task<(string CommitSha, IReadOnlyList<HubFile> Files)> ListFilesAsync(string repoId, string revision = "main", CancellationToken ct = default)
    {
        ValidateRepoId(repoId);
        string url = $"{_endpoint}/api/models/{repoId}/revision/{Uri.EscapeDataString(revision)}?blobs=true";
        using var response = await SendAsync(HttpMethod.Get, url, null, repoId, revision, null, ct);
        await using var body = await response.Content.ReadAsStreamAsync(ct);
        JsonDocument doc;
        try { doc = await JsonDocument.ParseAsync(body, cancellationToken: ct); }
        catch (JsonException e) { throw new HarpiaException($"hub answered a listing of {repoId}@{revision} that is not JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("siblings", out var siblings) || siblings.ValueKind != JsonValueKind.Array)
                throw new HarpiaException($"hub listing of {repoId}@{revision} has no 'siblings' array");
            string sha = root.TryGetProperty("sha", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString()! : revision;
            var files = new List<HubFile>();
            foreach (var f in siblings.EnumerateArray())
            {
                if (!f.TryGetProperty("rfilename", out var name) || name.ValueKind != JsonValueKind.String) continue;
                long? size = f.TryGetProperty("size", out var sz) && sz.ValueKind == JsonValueKind.Number ? sz.GetInt64() : null;
                string? sha256 = null;
                if (f.TryGetProperty("lfs", out var lfs) && lfs.ValueKind == JsonValueKind.Object)
                {
                    if (lfs.TryGetProperty("sha256", out var h) && h.ValueKind == JsonValueKind.String) sha256 = h.GetString();
                    if (lfs.TryGetProperty("size", out var ls) && ls.ValueKind == JsonValueKind.Number) size = ls.GetInt64();
                }
                files.Add(new HubFile(name.GetString()!, size, sha256));
            }
            return (sha, files);
        }
    }

    /// <summary>
    /// Downloads the files of a repository that match <paramref name="include"/> globs (default: what Harpia loads —
    /// configs, tokenizer, safetensors and GGUF) into <paramref name="destination"/>. Files already complete with the
    /// right size are skipped; partial ones resume.
    /// </summary>
    public async Task<IReadOnlyList<string>> DownloadAsync(string repoId, string destination, string revision = "main",
        IReadOnlyList<string>? include = null, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        var (commit, files) = await ListFilesAsync(repoId, revision, ct);
        var patterns = include is { Count: > 0 } ? include : DefaultPatterns;
        var chosen = files.Where(f => patterns.Any(p => Glob(p, f.Path))).ToList();
        if (chosen.Count == 0)
            throw new HarpiaException($"{repoId}@{revision} has no files matching {string.Join(", ", patterns)} " +
                                      $"(it has: {string.Join(", ", files.Take(12).Select(f => f.Path))}{(files.Count > 12 ? ", …" : "")})");
        Directory.CreateDirectory(destination);
        var written = new List<string>();
        foreach (var file in chosen)
            written.Add(await DownloadFileAsync(repoId, commit, file, destination, progress, ct));
        return written;
    }

    public static readonly IReadOnlyList<string> DefaultPatterns =
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "*.safetensors", "model.safetensors.index.json", "*.gguf", "quantize_config.json"];

    private async Task<string> DownloadFileAsync(string repoId, string revision, HubFile file, string destination,
        IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        string target = SafeTargetPath(destination, file.Path);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        if (File.Exists(target) && file.Size is long known && new FileInfo(target).Length == known)
        {
            progress?.Report(new DownloadProgress(file.Path, known, known));
            return target;
        }
        string partial = target + ".incomplete";
        long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        if (file.Size is long total && have > total) { File.Delete(partial); have = 0; }

        string url = $"{_endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', file.Path.Split('/').Select(Uri.EscapeDataString))}";
        using (var response = await SendAsync(HttpMethod.Get, url, have > 0 ? have : null, repoId, revision, file.Path, ct))
        {
            bool resumed = response.StatusCode == HttpStatusCode.PartialContent;
            if (!resumed) have = 0; // server ignored the range: start over
            long? expected = file.Size ?? (response.Content.Headers.ContentLength is long cl ? cl + have : null);
            await using var src = await response.Content.ReadAsStreamAsync(ct);
            await using var dst = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            var buffer = new byte[1 << 20];
            long done = have;
            while (true)
            {
                using var stall = CancellationTokenSource.CreateLinkedTokenSource(ct);
                stall.CancelAfter(StallTimeout);
                int n;
                try { n = await src.ReadAsync(buffer, stall.Token); }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                { throw new HarpiaException($"{file.Path}: no data for {StallTimeout.TotalSeconds:0} s; run the same command again to resume at {done:N0} bytes"); }
                catch (Exception e) when (e is IOException or HttpRequestException)
                { throw new HarpiaException($"{file.Path}: connection lost at {done:N0} bytes ({e.Message}); run the same command again to resume", e); }
                if (n == 0) break;
                await dst.WriteAsync(buffer.AsMemory(0, n), ct);
                done += n;
                progress?.Report(new DownloadProgress(file.Path, done, expected));
            }
            if (expected is long exp && done != exp)
                throw new HarpiaException($"{file.Path}: connection closed at {done:N0} of {exp:N0} bytes; run the same command again to resume");
        }
        if (file.Sha256 is { } want)
        {
            string got = await Sha256HexAsync(partial, ct);
            if (!string.Equals(got, want, StringComparison.OrdinalIgnoreCase))
            {
                File.Delete(partial);
                throw new HarpiaException($"{file.Path}: SHA-256 {got} does not match the hub's {want}; the partial download was removed");
            }
        }
        File.Move(partial, target, overwrite: true);
        return target;
    }

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string url, long? rangeFrom, string repoId,
        string revision, string? path, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, url);
        if (rangeFrom is long from) request.Headers.Range = new RangeHeaderValue(from, null);
        HttpResponseMessage response;
        try { response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct); }
        catch (HttpRequestException e)
        { throw new HubUnreachableException($"cannot reach {_endpoint}: {e.Message} (offline? set HF_ENDPOINT to a mirror, or pass a local folder instead of a repo id)", e); }
        if (response.IsSuccessStatusCode) return response;
        using (response)
        {
            string code = response.Headers.TryGetValues("X-Error-Code", out var v) ? v.First() : "";
            string what = path is null ? $"{repoId}@{revision}" : $"{repoId}@{revision}: {path}";
            throw (response.StatusCode, code) switch
            {
                (_, "GatedRepo") or (HttpStatusCode.Forbidden, _) =>
                    new HarpiaException($"{what}: the model is gated; accept its license on the hub and set HF_TOKEN to a token with access"),
                (HttpStatusCode.Unauthorized, _) =>
                    new HarpiaException($"{what}: not found or not authorized (private or gated repository? set HF_TOKEN)"),
                (_, "RevisionNotFound") => new HarpiaException($"{repoId}: revision '{revision}' not found"),
                (_, "EntryNotFound") => new HarpiaException($"{what}: file not found in the repository"),
                (HttpStatusCode.NotFound, _) => new HarpiaException($"{what}: not found on {_endpoint}"),
                (HttpStatusCode.RequestedRangeNotSatisfiable, _) =>
                    new HarpiaException($"{what}: the server refused to resume; delete the .incomplete file and retry"),
                _ => new HarpiaException($"{what}: the hub answered {(int)response.StatusCode} {response.ReasonPhrase}"),
            };
        }
    }

    private static void ValidateRepoId(string repoId)
    {
        if (!LooksLikeRepoId(repoId) || repoId.Contains(".."))
            throw new HarpiaException($"'{repoId}' is not a Hugging Face repository id (expected owner/name, e.g. tiiuae/falcon-7b)");
    }

    /// <summary>Refuses hub paths that would escape the destination folder.</summary>
    private static string SafeTargetPath(string destination, string hubPath)
    {
        string root = Path.GetFullPath(destination);
        string full = Path.GetFullPath(Path.Combine(root, hubPath));
        if (!full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new HarpiaException($"hub file path '{hubPath}' points outside {destination}; refusing to write it");
        return full;
    }

    private static async Task<string> Sha256HexAsync(string path, CancellationToken ct)
    {
        await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(fs, ct));
    }

    /// <summary>Matches a file path against a glob with * (no slash) and ** (any).</summary>
    public static bool Glob(string pattern, string path)
    {
        string rx = "^" + Regex.Escape(pattern).Replace(@"\*\*", "\u0001").Replace(@"\*", "[^/]*").Replace(@"\?", "[^/]").Replace("\u0001", ".*") + "$";
        return Regex.IsMatch(path, rx);
    }

    private static string? ReadTokenFile()
    {
        string home = Environment.GetEnvironmentVariable("HF_HOME")
                      ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface");
        string f = Path.Combine(home, "token");
        return File.Exists(f) ? File.ReadAllText(f) : null;
    }

    /// <summary>The default local folder for a repository: $HARPIA_HOME or ~/.cache/harpia, then models/owner--name.</summary>
    public static string DefaultCacheFolder(string repoId, string revision = "main")
    {
        string home = Environment.GetEnvironmentVariable("HARPIA_HOME")
                      ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "harpia");
        string name = repoId.Replace('/', '-').Replace("..", "_");
        return Path.Combine(home, "models", revision == "main" ? name : $"{name}@{revision}");
    }

    /// <summary>
    /// What <c>serve --model-id owner/name</c> loads, as TGI's launcher does with a hub id: the repository's model
    /// files fetched into the local cache (complete files are kept, partial ones resumed, SHA-256 checked), and the
    /// path to load — the folder, or the one GGUF file of a GGUF-only repository. A repository of several GGUF
    /// variants (tens of GB each) is refused with the list, rather than fetched whole. When the hub cannot be reached,
    /// a cached copy from an earlier fetch is used.
    /// </summary>
    public async Task<(string Path, bool Offline)> EnsureModelAsync(string repoId, string revision, string? destination = null,
        IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        ValidateRepoId(repoId);
        string dest = destination ?? DefaultCacheFolder(repoId, revision);
        IReadOnlyList<HubFile> files;
        try { (_, files) = await ListFilesAsync(repoId, revision, ct); }
        catch (HubUnreachableException) when (CachedModelPath(dest) is { } cached) { return (cached, true); }
        var ggufs = files.Where(f => f.Path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)).ToList();
        bool hasSafetensors = files.Any(f => f.Path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase));
        if (!hasSafetensors && ggufs.Count > 1)
            throw new HarpiaException($"{repoId}@{revision} holds {ggufs.Count} GGUF files ({string.Join(", ", ggufs.Take(8).Select(f => f.Path))}" +
                                      $"{(ggufs.Count > 8 ? ", …" : "")}); fetch the one you want with 'harpia download {repoId} --include \"*Q4_K_M*.gguf\"' and serve that file");
        IReadOnlyList<string>? include = hasSafetensors ? DefaultPatterns.Where(p => !p.EndsWith(".gguf", StringComparison.Ordinal)).ToList() : null;
        await DownloadAsync(repoId, dest, revision, include, progress, ct);
        return (CachedModelPath(dest) ?? dest, false);
    }

    /// <summary>A folder with config.json (Hugging Face layout) or holding exactly one .gguf file; null otherwise.</summary>
    public static string? CachedModelPath(string folder)
    {
        if (!Directory.Exists(folder)) return null;
        if (Directory.EnumerateFiles(folder, "*.incomplete", SearchOption.AllDirectories).Any()) return null; // a fetch cut short
        if (File.Exists(Path.Combine(folder, "config.json"))) return folder;
        var ggufs = Directory.GetFiles(folder, "*.gguf", SearchOption.AllDirectories);
        return ggufs.Length == 1 ? ggufs[0] : null;
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>The hub (or its mirror) could not be reached at all: no answer, as opposed to an error answer.</summary>
public sealed class HubUnreachableException(string message, Exception inner) : HarpiaException(message, inner);

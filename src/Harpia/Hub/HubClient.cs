using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Harpia.Hub;

/// <summary>
/// A file of a model repository as the Hub lists it: LFS files with their SHA-256, all files with their git blob id
/// (the SHA-1 of "blob {size}\0" + content; for an LFS file, of its pointer).
/// </summary>
public sealed record HubFile(string Path, long? Size, string? Sha256, string? BlobId = null)
{
    /// <summary>The hash the content is verified against, and the blob's name in the cache (as Hugging Face names it).</summary>
    public string? Etag => Sha256 ?? BlobId;
}

/// <summary>Progress of one file: bytes on disk so far (resumed bytes included) of <see cref="Total"/>.</summary>
public readonly record struct DownloadProgress(string Path, long Done, long? Total);

/// <summary>
/// Downloads model repositories from the Hugging Face Hub (or any server speaking its HTTP API, e.g. a mirror set
/// with HF_ENDPOINT) into Hugging Face's own cache layout (<see cref="HubCache"/>), so a cache the Python tools
/// filled is reused and vice versa: lists a revision's files, fetches each into <c>blobs/&lt;hash&gt;.incomplete</c>
/// with resume (<c>Range</c> + <c>If-Range</c>, the answer's <c>Content-Range</c> checked; a server that ignores the
/// range restarts the file cleanly), verifies every file — SHA-256 for LFS files, the git blob SHA-1 for the rest —
/// and only then moves it into place, so an interrupted or corrupted download never leaves a file that looks whole.
/// Everything the hub sends that becomes a path (file names, commit ids, hashes) is checked first.
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
        HubCache.ValidateRevision(revision);
        string url = $"{_endpoint}/api/models/{repoId}/revision/{Uri.EscapeDataString(revision)}?blobs=true";
        using var response = await SendAsync(HttpMethod.Get, url, null, null, repoId, revision, null, ct);
        byte[] listing;
        await using (var body = await response.Content.ReadAsStreamAsync(ct))
        {
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(ct);
            stall.CancelAfter(StallTimeout);
            try { listing = await Formats.UntrustedFile.ReadBoundedAsync(body, MaxListingBytes, $"the hub's listing of {repoId}@{revision}", stall.Token); }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            { throw new HarpiaException($"{repoId}@{revision}: the hub's listing stalled for {StallTimeout.TotalSeconds:0} s"); }
        }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(listing); }
        catch (JsonException e) { throw new HarpiaException($"hub answered a listing of {repoId}@{revision} that is not JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("siblings", out var siblings) || siblings.ValueKind != JsonValueKind.Array)
                throw new HarpiaException($"hub listing of {repoId}@{revision} has no 'siblings' array");
            string sha = root.TryGetProperty("sha", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString()! : "";
            // The commit names a folder of the cache: it must be a commit id, whatever the server says.
            if (!HubCache.IsCommitHash(sha))
                throw new HarpiaException($"hub listing of {repoId}@{revision} has no valid commit id (got '{Shorten(sha)}')");
            var files = new List<HubFile>();
            foreach (var f in siblings.EnumerateArray())
            {
                if (!f.TryGetProperty("rfilename", out var name) || name.ValueKind != JsonValueKind.String) continue;
                long? size = f.TryGetProperty("size", out var sz) && sz.ValueKind == JsonValueKind.Number && sz.TryGetInt64(out long n) && n >= 0 ? n : null;
                string? blobId = f.TryGetProperty("blobId", out var b) && b.ValueKind == JsonValueKind.String ? b.GetString() : null;
                string? sha256 = null;
                if (f.TryGetProperty("lfs", out var lfs) && lfs.ValueKind == JsonValueKind.Object)
                {
                    if (lfs.TryGetProperty("sha256", out var h) && h.ValueKind == JsonValueKind.String) sha256 = h.GetString();
                    if (lfs.TryGetProperty("size", out var ls) && ls.ValueKind == JsonValueKind.Number && ls.TryGetInt64(out long m) && m >= 0) size = m;
                }
                files.Add(new HubFile(name.GetString()!, size, sha256, blobId));
            }
            return (sha, files);
        }
    }

    /// <summary>Most bytes a listing may have (Falcon-180B's is ~10 KB; a repository of 10,000 files ~2 MB).</summary>
    public const long MaxListingBytes = 32L << 20;

    /// <summary>
    /// Downloads the files of a repository that match <paramref name="include"/> globs (default: what Harpia loads —
    /// configs, tokenizer, safetensors and GGUF). With <paramref name="destination"/> null they go into the Hugging
    /// Face cache (<see cref="HubCache"/>) and the paths returned are in its snapshot folder; otherwise into that
    /// folder as plain files. A file already there is kept only once it is verified; partial ones resume.
    /// </summary>
    public async Task<IReadOnlyList<string>> DownloadAsync(string repoId, string? destination, string revision = "main",
        IReadOnlyList<string>? include = null, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        var (commit, files) = await ListFilesAsync(repoId, revision, ct);
        var patterns = include is { Count: > 0 } ? include : DefaultPatterns;
        var chosen = files.Where(f => patterns.Any(p => Glob(p, f.Path))).ToList();
        if (chosen.Count == 0)
            throw new HarpiaException($"{repoId}@{revision} has no files matching {string.Join(", ", patterns)} " +
                                      $"(it has: {string.Join(", ", files.Take(12).Select(f => f.Path))}{(files.Count > 12 ? ", …" : "")})");
        return await DownloadFilesAsync(repoId, commit, revision, chosen, destination, progress, ct);
    }

    /// <summary>
    /// Downloads one GGUF quantization of a repository that holds many (llama.cpp's <c>owner/repo:Q4_K_M</c>): the
    /// single file, or every part of a split one (gguf-split shards, byte pieces), each resumed and verified as
    /// <see cref="DownloadAsync"/> does, plus any files <paramref name="alsoInclude"/> globs name. The paths come back
    /// in reading order, the GGUF's first part first (the path to open). A quantization the repository does not have,
    /// or one that names several models, is an error listing what it offers; nothing is fetched then.
    /// </summary>
    public async Task<IReadOnlyList<string>> DownloadGgufAsync(string repoId, string quant, string? destination, string revision = "main",
        IReadOnlyList<string>? alsoInclude = null, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        var (commit, files) = await ListFilesAsync(repoId, revision, ct);
        var parts = GgufFileChoice.Select(files.Select(f => f.Path), quant, $"{repoId}@{revision}");
        var byPath = files.ToDictionary(f => f.Path, StringComparer.Ordinal);
        var chosen = parts.Select(p => byPath[p]).ToList();
        if (alsoInclude is { Count: > 0 })
            chosen.AddRange(files.Where(f => !parts.Contains(f.Path) && alsoInclude.Any(p => Glob(p, f.Path))));
        return await DownloadFilesAsync(repoId, commit, revision, chosen, destination, progress, ct);
    }

    private async Task<IReadOnlyList<string>> DownloadFilesAsync(string repoId, string commit, string revision, IReadOnlyList<HubFile> chosen,
        string? destination, IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        foreach (var file in chosen) HubCache.ValidateFilePath(file.Path);
        var written = new List<string>();
        if (destination is null)
        {
            var cache = HubCache.ForRepo(repoId, CacheRoot);
            cache.WriteRef(revision, commit);
            foreach (var file in chosen)
                written.Add(await DownloadToCacheAsync(repoId, commit, file, cache, progress, ct));
            return written;
        }
        Directory.CreateDirectory(destination);
        foreach (var file in chosen)
            written.Add(await DownloadToFolderAsync(repoId, commit, file, destination, progress, ct));
        return written;
    }

    /// <summary>The cache root for this client: null means $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub.</summary>
    public string? CacheRoot { get; init; }

    public static readonly IReadOnlyList<string> DefaultPatterns =
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "*.safetensors", "model.safetensors.index.json", "*.gguf", "quantize_config.json"];

    /// <summary>blobs/&lt;hash&gt; (downloaded and verified unless already there), linked from snapshots/&lt;commit&gt;/&lt;path&gt;.</summary>
    private async Task<string> DownloadToCacheAsync(string repoId, string commit, HubFile file, HubCache cache,
        IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        string etag = RequireEtag(repoId, file);
        string blob = cache.BlobPath(etag);
        // A blob is named by its hash and only ever moved in after verification (by us or by huggingface_hub), so a
        // blob of the right size is the content; one of the wrong size is a leftover and is fetched again.
        bool have = File.Exists(blob) && (file.Size is not long size || new FileInfo(blob).Length == size);
        if (!have)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            await FetchVerifiedAsync(repoId, commit, file, etag, blob + ".incomplete", progress, ct);
            File.Move(blob + ".incomplete", blob, overwrite: true);
        }
        else progress?.Report(new DownloadProgress(file.Path, file.Size ?? 0, file.Size));
        return cache.LinkSnapshot(commit, file.Path, blob);
    }

    /// <summary>A plain folder (<c>--out</c>): the file, verified, with a note of its hash so a later run need not hash it again.</summary>
    private async Task<string> DownloadToFolderAsync(string repoId, string commit, HubFile file, string destination,
        IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        string etag = RequireEtag(repoId, file);
        string target = SafeTargetPath(destination, file.Path);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        string note = SafeTargetPath(destination, Path.Combine(".cache", "harpia", file.Path + ".etag"));
        if (File.Exists(target) && (file.Size is not long known || new FileInfo(target).Length == known))
        {
            // Trusted by size alone only when this client verified it and nothing changed since; otherwise hashed.
            var info = new FileInfo(target);
            string stamp = $"{etag} {info.Length} {info.LastWriteTimeUtc.Ticks}";
            if ((File.Exists(note) && File.ReadAllText(note).Trim() == stamp) || await HashMatchesAsync(target, file, etag, ct))
            {
                WriteNote(note, target, etag);
                progress?.Report(new DownloadProgress(file.Path, info.Length, info.Length));
                return target;
            }
        }
        string partial = target + ".incomplete";
        await FetchVerifiedAsync(repoId, commit, file, etag, partial, progress, ct);
        File.Move(partial, target, overwrite: true);
        WriteNote(note, target, etag);
        return target;
    }

    private static void WriteNote(string note, string target, string etag)
    {
        var info = new FileInfo(target);
        Directory.CreateDirectory(Path.GetDirectoryName(note)!);
        File.WriteAllText(note, $"{etag} {info.Length} {info.LastWriteTimeUtc.Ticks}");
    }

    /// <summary>The hash a file is verified against; a file the hub gives no hash for is not fetched (it could not be checked).</summary>
    private static string RequireEtag(string repoId, HubFile file)
    {
        if (file.Sha256 is { } sha256 && !HubCache.IsHex(sha256, 64))
            throw new HarpiaException($"{repoId}: {file.Path}: the hub's SHA-256 '{Shorten(sha256)}' is not 64 hex digits");
        if (file.Sha256 is null && file.BlobId is { } blob && !HubCache.IsHex(blob, 40))
            throw new HarpiaException($"{repoId}: {file.Path}: the hub's blob id '{Shorten(blob)}' is not 40 hex digits");
        return file.Etag?.ToLowerInvariant()
               ?? throw new HarpiaException($"{repoId}: {file.Path}: the hub's listing gives no hash (no 'lfs.sha256', no 'blobId'), so the file could not be verified; refusing to fetch it");
    }

    /// <summary>
    /// Fetches <paramref name="file"/> into <paramref name="partial"/>, resuming what is there, then verifies it; on a
    /// hash mismatch the partial file is removed. A server that ignores the range (200) or answers another range
    /// restarts the file from its first byte — once; the content is verified either way.
    /// </summary>
    private async Task FetchVerifiedAsync(string repoId, string commit, HubFile file, string etag, string partial,
        IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        string url = $"{_endpoint}/{repoId}/resolve/{commit}/{string.Join('/', file.Path.Split('/').Select(Uri.EscapeDataString))}";
        for (int attempt = 0; ; attempt++)
        {
            long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
            if (file.Size is long total && have > total) { File.Delete(partial); have = 0; }
            bool restart = await FetchOnceAsync(repoId, commit, file, etag, url, partial, have, progress, ct);
            if (!restart) break;
            File.Delete(partial);
            if (attempt > 0) throw new HarpiaException($"{repoId}: {file.Path}: the server answered a range other than the one asked for, twice; giving up");
        }
        bool lfs = file.Sha256 is not null;
        if (!await HashMatchesAsync(partial, file, etag, ct))
        {
            string got = lfs ? await Sha256HexAsync(partial, ct) : await GitBlobSha1HexAsync(partial, ct);
            File.Delete(partial);
            throw new HarpiaException($"{file.Path}: {(lfs ? "SHA-256" : "git blob SHA-1")} {got} does not match the hub's {etag}; the partial download was removed");
        }
    }

    /// <summary>One request; true when the partial file must be discarded and the fetch started over.</summary>
    private async Task<bool> FetchOnceAsync(string repoId, string commit, HubFile file, string etag, string url, string partial,
        long have, IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        using var response = await SendAsync(HttpMethod.Get, url, have > 0 ? have : null, etag, repoId, commit, file.Path, ct);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable) return true;
        // X-Repo-Commit, where the server sends it, must be the commit the listing named (the files must agree).
        if (response.Headers.TryGetValues("X-Repo-Commit", out var commits) && commits.FirstOrDefault() is { } c
            && HubCache.IsCommitHash(c) && !c.Equals(commit, StringComparison.OrdinalIgnoreCase))
            throw new HarpiaException($"{repoId}: {file.Path}: the hub served commit {c} while listing {commit}; the revision moved, run again");
        bool resumed = response.StatusCode == HttpStatusCode.PartialContent;
        if (resumed)
        {
            // 206 must be exactly the range asked for, of the file's length; anything else is not this file's tail.
            var range = response.Content.Headers.ContentRange;
            if (have == 0 || range is null || range.From != have || (file.Size is long size && range.Length is long len && len != size)
                || (range.Length is long l2 && range.To is long to && to != l2 - 1))
                return true;
        }
        else have = 0; // 200: the server ignored the range (or the If-Range validator no longer matched): start over
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
            if (expected is long cap && done + n > cap)
                throw new HarpiaException($"{file.Path}: the server sent more than the {cap:N0} bytes the file has; run again");
            await dst.WriteAsync(buffer.AsMemory(0, n), ct);
            done += n;
            progress?.Report(new DownloadProgress(file.Path, done, expected));
        }
        if (expected is long exp && done != exp)
            throw new HarpiaException($"{file.Path}: connection closed at {done:N0} of {exp:N0} bytes; run the same command again to resume");
        return false;
    }

    private static async Task<bool> HashMatchesAsync(string path, HubFile file, string etag, CancellationToken ct)
    {
        string got = file.Sha256 is not null ? await Sha256HexAsync(path, ct) : await GitBlobSha1HexAsync(path, ct);
        return string.Equals(got, etag, StringComparison.OrdinalIgnoreCase);
    }

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string url, long? rangeFrom, string? ifRange, string repoId,
        string revision, string? path, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, url);
        if (rangeFrom is long from)
        {
            request.Headers.Range = new RangeHeaderValue(from, null);
            // Resume only if the file is still the one whose first bytes we hold; else the server sends it whole.
            if (ifRange is not null) request.Headers.IfRange = new RangeConditionHeaderValue(new EntityTagHeaderValue($"\"{ifRange}\""));
        }
        HttpResponseMessage response;
        using var stall = CancellationTokenSource.CreateLinkedTokenSource(ct);
        stall.CancelAfter(StallTimeout);
        try { response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, stall.Token); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        { throw new HarpiaException($"{_endpoint} did not answer within {StallTimeout.TotalSeconds:0} s ({(path is null ? $"{repoId}@{revision}" : path)})"); }
        catch (HttpRequestException e)
        { throw new HubUnreachableException($"cannot reach {_endpoint}: {e.Message} (offline? set HF_ENDPOINT to a mirror, or pass a local folder instead of a repo id)", e); }
        if (response.IsSuccessStatusCode || (rangeFrom is not null && response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)) return response;
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
                _ => new HarpiaException($"{what}: the hub answered {(int)response.StatusCode} {response.ReasonPhrase}"),
            };
        }
    }

    private static string Shorten(string s) => s.Length <= 80 ? s : s[..80] + "…";

    private static void ValidateRepoId(string repoId)
    {
        // "--" is refused as the Hub refuses it: the cache folder models--owner--name must map back to one repository.
        if (!LooksLikeRepoId(repoId) || repoId.Contains("..") || repoId.Contains("--") || repoId.Length > 96)
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

    /// <summary>Git's id of a file's content: SHA-1 of "blob {length}\0" followed by the bytes (what the Hub lists as blobId).</summary>
    internal static async Task<string> GitBlobSha1HexAsync(string path, CancellationToken ct)
    {
        await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        sha1.AppendData(System.Text.Encoding.ASCII.GetBytes($"blob {fs.Length}\0"));
        var buffer = new byte[1 << 20];
        int n;
        while ((n = await fs.ReadAsync(buffer, ct)) > 0) sha1.AppendData(buffer, 0, n);
        return Convert.ToHexStringLower(sha1.GetHashAndReset());
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

    /// <summary>
    /// What <c>serve --model-id owner/name</c> loads, as TGI's launcher does with a hub id: the repository's model
    /// files fetched into the Hugging Face cache (verified blobs are kept, partial ones resumed), and the path to load
    /// — the snapshot folder, or the one GGUF file of a GGUF-only repository. A repository of several GGUF variants
    /// (tens of GB each) is refused with the list, rather than fetched whole. When the hub cannot be reached, a
    /// complete snapshot from an earlier fetch is used (found through refs/&lt;revision&gt;).
    /// </summary>
    /// <param name="destination">A plain folder instead of the cache (null: the cache).</param>
    /// <param name="repoId">owner/name, or owner/name:QUANT (llama.cpp's and ollama's convention) for one GGUF
    /// quantization of a repository that holds many: its file, or all parts of a split one; the path returned is its first part.</param>
    public async Task<(string Path, bool Offline)> EnsureModelAsync(string repoId, string revision, string? destination = null,
        IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        var (repo, quant) = GgufFileChoice.SplitModelId(repoId);
        ValidateRepoId(repo);
        HubCache.ValidateRevision(revision);
        string commit;
        IReadOnlyList<HubFile> files;
        try { (commit, files) = await ListFilesAsync(repo, revision, ct); }
        catch (HubUnreachableException) when (OfflineCopy(repo, revision, destination, quant) is { } cached) { return (cached, true); }
        if (quant is not null)
        {
            // The listing was checked above; DownloadGgufAsync lists again so that the files and the commit agree.
            var parts = await DownloadGgufAsync(repo, quant, destination, revision, null, progress, ct);
            return (parts[0], false);
        }
        var ggufModels = GgufFileChoice.Models(files.Select(f => f.Path));
        bool hasSafetensors = files.Any(f => f.Path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase));
        if (!hasSafetensors && ggufModels.Count > 1)
            throw new HarpiaException($"{repo}@{revision} holds {files.Count(f => GgufFileChoice.IsGgufPart(f.Path))} GGUF files of {ggufModels.Count} models; " +
                                      $"name one quantization as {repo}:Q4_K_M (or fetch it with 'harpia download {repo} --quant Q4_K_M', or --include \"*Q4_K_M*.gguf\"); " +
                                      GgufFileChoice.OfferedText(files.Select(f => f.Path)));
        if (!hasSafetensors && ggufModels.Count == 1 && ggufModels[0].Parts.Count > 1)
        {
            // One model in parts (shards or byte pieces): all of them, and the first is the one to open.
            var byPath = files.ToDictionary(f => f.Path, StringComparer.Ordinal);
            var parts = await DownloadFilesAsync(repo, commit, revision, ggufModels[0].Parts.Select(p => byPath[p]).ToList(), destination, progress, ct);
            return (parts[0], false);
        }
        IReadOnlyList<string>? include = hasSafetensors ? DefaultPatterns.Where(p => !p.EndsWith(".gguf", StringComparison.Ordinal)).ToList() : null;
        var written = await DownloadAsync(repo, destination, revision, include, progress, ct);
        string folder = destination ?? Path.GetDirectoryName(written[0])!;
        if (destination is null)
        {
            // The snapshot folder is the one whose files were linked: walk up from the first to snapshots/<commit>.
            var cache = HubCache.ForRepo(repo, CacheRoot);
            folder = cache.SnapshotFolder(cache.ReadRef(revision) ?? revision);
        }
        return (CachedModelPath(folder) ?? folder, false);
    }

    private string? OfflineCopy(string repoId, string revision, string? destination, string? quant)
    {
        string? folder = destination;
        if (folder is null)
        {
            var cache = HubCache.ForRepo(repoId, CacheRoot);
            if (cache.ReadRef(revision) is not { } commit) return null;
            folder = cache.SnapshotFolder(commit);
        }
        return quant is null ? CachedModelPath(folder) : CachedGgufPath(folder, quant, repoId);
    }

    /// <summary>The first part of quantization <paramref name="quant"/> in <paramref name="folder"/> when every part of it is there; null otherwise.</summary>
    public static string? CachedGgufPath(string folder, string quant, string repoId)
    {
        if (!Directory.Exists(folder)) return null;
        string root = Path.GetFullPath(folder);
        var present = Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f).Replace(Path.DirectorySeparatorChar, '/')).ToList();
        IReadOnlyList<string> parts;
        try { parts = GgufFileChoice.Select(present, quant, repoId); }
        catch (HarpiaException) { return null; }
        // A byte-split set lists no count: a part still being fetched (its .incomplete beside it) means the set is not whole.
        if (parts.Any(p => File.Exists(Path.Combine(root, p + ".incomplete")))) return null;
        return Path.Combine(root, parts[0]);
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

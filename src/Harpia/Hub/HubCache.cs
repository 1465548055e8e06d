namespace Harpia.Hub;

/// <summary>
/// Hugging Face's cache layout, shared with huggingface_hub so either tool reuses what the other fetched:
/// <c>&lt;root&gt;/models--owner--name/blobs/&lt;hash&gt;</c> holds each file's content under its hash (SHA-256 for LFS
/// files, the git blob SHA-1 for the rest), <c>snapshots/&lt;commit&gt;/&lt;path&gt;</c> links to it, and
/// <c>refs/&lt;revision&gt;</c> holds the commit a branch or tag pointed at when last fetched. The root is
/// <c>$HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>. Repository ids cannot contain
/// "--", so two repositories never share a folder; revisions and file names are checked before they become paths.
/// </summary>
public sealed class HubCache
{
    private HubCache(string repoFolder) => RepoFolder = repoFolder;

    /// <summary>models--owner--name under the root.</summary>
    public string RepoFolder { get; }

    public static string DefaultRoot()
    {
        if (Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } hub) return hub;
        string home = Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } h ? h
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface");
        return Path.Combine(home, "hub");
    }

    /// <summary>The cache of <paramref name="repoId"/> (already validated as owner/name) under <paramref name="root"/> (null: the default).</summary>
    public static HubCache ForRepo(string repoId, string? root = null) =>
        new(Path.Combine(Path.GetFullPath(root ?? DefaultRoot()), "models--" + repoId.Replace("/", "--", StringComparison.Ordinal)));

    public string BlobPath(string etag)
    {
        if (!IsHex(etag, 40) && !IsHex(etag, 64)) throw new HarpiaException($"'{etag}' is not a blob hash");
        return Path.Combine(RepoFolder, "blobs", etag);
    }

    public string SnapshotFolder(string commit)
    {
        if (!IsCommitHash(commit)) throw new HarpiaException($"'{commit}' is not a commit id");
        return Path.Combine(RepoFolder, "snapshots", commit);
    }

    /// <summary>Records that <paramref name="revision"/> is <paramref name="commit"/> (nothing to record when it is the commit).</summary>
    public void WriteRef(string revision, string commit)
    {
        ValidateRevision(revision);
        if (!IsCommitHash(commit)) throw new HarpiaException($"'{commit}' is not a commit id");
        if (revision.Equals(commit, StringComparison.OrdinalIgnoreCase)) return;
        string file = Path.Combine(RepoFolder, "refs", revision);
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, commit);
    }

    /// <summary>The commit <paramref name="revision"/> names: itself when it is a commit id, else what refs/ recorded; null when unknown.</summary>
    public string? ReadRef(string revision)
    {
        ValidateRevision(revision);
        if (IsCommitHash(revision)) return revision.ToLowerInvariant();
        string file = Path.Combine(RepoFolder, "refs", revision);
        if (!Formats.UntrustedFile.IsRegularFile(file)) return null;
        string commit = System.Text.Encoding.ASCII.GetString(Formats.UntrustedFile.ReadAllBytes(file, "cache ref", 1024)).Trim();
        return IsCommitHash(commit) ? commit : null;
    }

    /// <summary>snapshots/&lt;commit&gt;/&lt;path&gt; pointing at <paramref name="blob"/> (a relative symlink, as huggingface_hub makes; a copy where links cannot be made).</summary>
    public string LinkSnapshot(string commit, string path, string blob)
    {
        ValidateFilePath(path);
        string folder = SnapshotFolder(commit);
        string pointer = Path.GetFullPath(Path.Combine(folder, path));
        if (!pointer.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new HarpiaException($"hub file path '{path}' points outside the snapshot folder; refusing to write it");
        Directory.CreateDirectory(Path.GetDirectoryName(pointer)!);
        if (File.Exists(pointer) || new FileInfo(pointer).LinkTarget is not null) File.Delete(pointer);
        try { File.CreateSymbolicLink(pointer, Path.GetRelativePath(Path.GetDirectoryName(pointer)!, blob)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { File.Copy(blob, pointer, overwrite: true); }
        return pointer;
    }

    public static bool IsHex(string s, int length) => s.Length == length && s.All(char.IsAsciiHexDigit);
    public static bool IsCommitHash(string s) => IsHex(s, 40);

    /// <summary>
    /// A branch, tag or commit as a path under refs/: no empty, "." or ".." segment, no leading '/', no backslash, colon
    /// or control character (git refuses all of these in ref names too).
    /// </summary>
    public static void ValidateRevision(string revision)
    {
        if (!IsSafeRelativePath(revision, allowSlash: true))
            throw new HarpiaException($"--revision '{Printable(revision)}' is not a branch, tag or commit name (no '..', no leading '/', no '\\\\', ':' or control characters)");
    }

    /// <summary>A file name from the hub's listing, before it becomes a path: relative, no "." or ".." segments, no control characters.</summary>
    public static void ValidateFilePath(string path)
    {
        if (!IsSafeRelativePath(path, allowSlash: true))
            throw new HarpiaException($"hub file path '{Printable(path)}' is not a plain relative path (or points outside the folder); refusing to write it");
    }

    private static bool IsSafeRelativePath(string s, bool allowSlash)
    {
        if (s.Length is 0 or > 255 || s[0] == '/' || s[^1] == '/') return false;
        foreach (char c in s)
            if (char.IsControl(c) || c is '\\' or ':' || (!allowSlash && c == '/')) return false;
        foreach (var segment in s.Split('/'))
            if (segment.Length == 0 || segment == "." || segment == "..") return false;
        return true;
    }

    private static string Printable(string s) =>
        new(s.Take(120).Select(c => char.IsControl(c) ? '?' : c).ToArray());
}

using System.Text.Json;
using System.Text.Json.Nodes;

namespace Harpia.Formats;

/// <summary>
/// Opening files that came from someone else (a download, a shared folder): only regular files are opened — a FIFO
/// would block the open or the read forever, a device (/dev/zero, /dev/urandom) never ends — and JSON is read through
/// a size cap, so a hostile or broken file costs a clear error instead of a hang or all the memory there is.
/// </summary>
public static class UntrustedFile
{
    /// <summary>Largest JSON file a loader reads (a tokenizer.json of a 250k-token vocabulary is ~20 MB).</summary>
    public const long MaxJsonBytes = 256L << 20;

    /// <summary>
    /// Fails unless <paramref name="path"/> is (or is a symlink chain ending at) a regular file; checked by name,
    /// before any open, since opening a FIFO for reading blocks until a writer comes.
    /// </summary>
    /// <param name="what">What the file is, for the message ("config.json", "tokenizer file").</param>
    public static void RequireRegularFile(string path, string what = "file")
    {
        FileSystemInfo info = new FileInfo(path);
        if (!info.Exists && !Directory.Exists(path) && info.LinkTarget is null)
            throw new HarpiaException($"{path}: {what} not found");
        try
        {
            if (info.LinkTarget is not null)
                info = info.ResolveLinkTarget(returnFinalTarget: true)
                       ?? throw new HarpiaException($"{path}: {what} is a symbolic link that leads nowhere");
        }
        catch (IOException e) { throw new HarpiaException($"{path}: {what} is a symbolic link that cannot be followed ({e.Message})"); }
        if (Directory.Exists(info.FullName)) throw new HarpiaException($"{path}: {what} is a directory, not a file");
        if (!File.Exists(info.FullName))
            throw new HarpiaException($"{path}: {what} is a symbolic link to {info.FullName}, which does not exist");
        if (UnixKind(info.FullName) is { } kind)
            throw new HarpiaException($"{path}: {what} is {kind}, not a regular file; refusing to open it");
    }

    /// <summary>Null for a regular file (or where the type cannot be asked); otherwise what it is.</summary>
    static unsafe string? UnixKind(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        // statx's buffer has one layout on every architecture (unlike stat's); stx_mode is the u16 at offset 28.
        byte* buffer = stackalloc byte[256];
        int rc;
        try { rc = Statx(AtFdCwd, path, 0, StatxType, buffer); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        if (rc != 0) return null; // the open that follows reports what is wrong
        int type = *(ushort*)(buffer + 28) & 0xF000;
        return type switch
        {
            0x8000 => null,                   // S_IFREG
            0x1000 => "a FIFO (named pipe)",  // S_IFIFO
            0x2000 => "a character device",   // S_IFCHR
            0x6000 => "a block device",       // S_IFBLK
            0xC000 => "a socket",             // S_IFSOCK
            0x4000 => "a directory",
            _ => "not a regular file",
        };
    }

    const int AtFdCwd = -100;
    const uint StatxType = 0x1;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    static extern unsafe int Statx(int dirfd, [System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path,
        int flags, uint mask, byte* buffer);

    /// <summary>Reads a whole file that must be regular and at most <paramref name="maxBytes"/> long.</summary>
    public static byte[] ReadAllBytes(string path, string what = "file", long maxBytes = MaxJsonBytes)
    {
        RequireRegularFile(path, what);
        FileStream stream;
        try { stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new HarpiaException($"{path}: cannot read the {what}: {e.Message}"); }
        using (stream)
        {
            if (stream.Length > maxBytes) throw TooLarge(path, what, maxBytes);
            // Read to the cap, not to the length stat reported: a file that grows while it is read still stops there.
            using var buffer = new MemoryStream((int)Math.Min(stream.Length, maxBytes));
            var chunk = new byte[1 << 16];
            while (true)
            {
                int n = stream.Read(chunk);
                if (n == 0) return buffer.ToArray();
                if (buffer.Length + n > maxBytes) throw TooLarge(path, what, maxBytes);
                buffer.Write(chunk, 0, n);
            }
        }
    }

    static HarpiaException TooLarge(string path, string what, long maxBytes) =>
        new($"{path}: the {what} is larger than {maxBytes:N0} bytes; refusing to read it whole");

    /// <summary>True for a regular file (following symlinks); false for anything else or nothing.</summary>
    public static bool IsRegularFile(string path)
    {
        try { RequireRegularFile(path); return true; }
        catch (HarpiaException) { return false; }
    }

    /// <summary>
    /// What a model path is, before any loader opens it, with the message that fits: a GGUF-named file without the
    /// magic, a symlink loop, an unreadable folder — instead of "config.json not found" in some other folder.
    /// </summary>
    public static void CheckModelPath(string path)
    {
        var info = new FileInfo(path);
        if (Directory.Exists(path))
        {
            try { using var e = Directory.EnumerateFileSystemEntries(path).GetEnumerator(); e.MoveNext(); }
            catch (UnauthorizedAccessException) { throw new HarpiaException($"{path}: cannot read the model folder: permission denied"); }
            catch (IOException e) { throw new HarpiaException($"{path}: cannot read the model folder: {e.Message}"); }
            return;
        }
        if (info.LinkTarget is not null && !info.Exists)
        {
            try { info.ResolveLinkTarget(returnFinalTarget: true); }
            catch (IOException) { throw new HarpiaException($"{path}: a symbolic link loop (or a chain too long to follow)"); }
            throw new HarpiaException($"{path}: a symbolic link to {info.LinkTarget}, which does not exist");
        }
        if (!info.Exists) return; // the loader says "no such model folder or GGUF file"
        RequireRegularFile(path, "model file");
        if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
        {
            long length = new FileInfo(info.FullName).Length;
            if (length < 4) throw new InvalidModelFileException(path, $"not a GGUF file: {length} bytes, shorter than the 4-byte magic");
            if (!GgufFile.HasGgufMagic(path)) throw new InvalidModelFileException(path, "not a GGUF file: it does not start with the magic 'GGUF'");
        }
    }

    /// <summary>A JSON document from a regular file of at most <paramref name="maxBytes"/>; parse errors name the file.</summary>
    public static JsonDocument ReadJsonDocument(string path, string what = "JSON file", long maxBytes = MaxJsonBytes)
    {
        var bytes = ReadAllBytes(path, what, maxBytes);
        try { return JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new HarpiaException($"{path}: {what} is not valid JSON: {e.Message}"); }
    }

    /// <summary>As <see cref="ReadJsonDocument"/>, as a mutable node tree.</summary>
    public static JsonNode? ReadJsonNode(string path, string what = "JSON file", long maxBytes = MaxJsonBytes)
    {
        var bytes = ReadAllBytes(path, what, maxBytes);
        try { return JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new HarpiaException($"{path}: {what} is not valid JSON: {e.Message}"); }
    }

    /// <summary>Reads a stream to its end but no further than <paramref name="maxBytes"/> (a network body, say).</summary>
    public static async Task<byte[]> ReadBoundedAsync(Stream stream, long maxBytes, string what, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        while (true)
        {
            int n = await stream.ReadAsync(chunk, ct).ConfigureAwait(false);
            if (n == 0) return buffer.ToArray();
            if (buffer.Length + n > maxBytes) throw new HarpiaException($"{what} is larger than {maxBytes:N0} bytes; refusing to read more");
            buffer.Write(chunk, 0, n);
        }
    }
}

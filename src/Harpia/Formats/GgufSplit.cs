using System.Text.RegularExpressions;
using Harpia.Tensors;

namespace Harpia.Formats;

/// <summary>
/// GGUF models published in parts, opened as one:
/// <list type="bullet">
/// <item>llama.cpp's <c>gguf-split</c> shards (<c>name-00001-of-00003.gguf</c>): each a GGUF file; the first carries the
/// metadata, every one <c>split.no</c> (0-based), <c>split.count</c> and the first <c>split.tensors.count</c>;</item>
/// <item>byte-split pieces (<c>name.gguf-split-a</c>, <c>-b</c>, …) meant to be concatenated: each piece is mapped on its
/// own, tensors are pointed to inside their piece, and only the rare tensor that straddles two pieces is copied.</item>
/// </list>
/// </summary>
public sealed unsafe partial class GgufFile
{
    public const string SplitCountKey = "split.count", SplitIndexKey = "split.no", SplitTensorsKey = "split.tensors.count";

    /// <summary>The header must lie in the first this-many bytes of a byte-split set (Falcon-180B's is a few MB).</summary>
    private const long MaxByteSplitHeader = 64L << 20;

    [GeneratedRegex(@"^(?<stem>.*)-(?<no>\d{5})-of-(?<count>\d{5})\.gguf$", RegexOptions.IgnoreCase)]
    private static partial Regex ShardName();

    [GeneratedRegex(@"\.gguf-split-(?<letter>[a-z])$")]
    private static partial Regex BytePartName();

    public static bool IsBytePart(string path) => BytePartName().IsMatch(path);

    private static GgufFile OpenShards(GgufFile first)
    {
        var parts = new List<GgufFile> { first };
        try
        {
            long count = first.GetInteger(SplitCountKey) ?? 0;
            long index = first.GetInteger(SplitIndexKey) ?? -1;
            long total = first.GetInteger(SplitTensorsKey) ?? -1;
            if (count < 1 || count > 9999) throw new InvalidModelFileException(first.Path, $"{SplitCountKey} = {count} is not a shard count");
            if (index != 0) throw new InvalidModelFileException(first.Path, $"this is shard {index + 1} of {count} ({SplitIndexKey} = {index}); open the set from its first shard");
            var match = ShardName().Match(System.IO.Path.GetFileName(first.Path));
            if (count > 1 && !match.Success)
                throw new InvalidModelFileException(first.Path, $"{SplitCountKey} = {count} but the name does not follow gguf-split's NAME-00001-of-{count:D5}.gguf, so the other shards cannot be found");
            string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(first.Path))!;
            var tensors = new Dictionary<string, TensorEntry>(first.Tensors, StringComparer.Ordinal);
            var order = new List<string>(first.TensorOrder);
            for (int i = 1; i < count; i++)
            {
                string shard = System.IO.Path.Combine(dir, $"{match.Groups["stem"].Value}-{i + 1:D5}-of-{count:D5}.gguf");
                if (!File.Exists(shard)) throw new InvalidModelFileException(first.Path, $"shard {i + 1} of {count}, '{System.IO.Path.GetFileName(shard)}', is missing");
                var file = MappedFile.Open(shard);
                GgufFile part;
                try { part = Parse(shard, file.Pointer, file.Length, file); }
                catch { file.Dispose(); throw; }
                parts.Add(part);
                if (part.GetInteger(SplitCountKey) != count || part.GetInteger(SplitIndexKey) != i)
                    throw new InvalidModelFileException(shard, $"not shard {i + 1} of {count} of this set ({SplitIndexKey} = {part.GetInteger(SplitIndexKey)?.ToString() ?? "missing"}, {SplitCountKey} = {part.GetInteger(SplitCountKey)?.ToString() ?? "missing"})");
                foreach (string name in part.TensorOrder)
                {
                    if (!tensors.TryAdd(name, part.Tensors[name]))
                        throw new InvalidModelFileException(shard, $"tensor '{name}' is also in {tensors[name].FilePath}");
                    order.Add(name);
                }
            }
            if (total >= 0 && tensors.Count != total)
                throw new InvalidModelFileException(first.Path, $"the {count} shards hold {tensors.Count} tensors but {SplitTensorsKey} says {total}");
            return new GgufFile(first.Path, new Owners(parts), first.Version, new Dictionary<string, object>(first.Metadata), tensors, order,
                first.Alignment, first.DataOffset, parts.Sum(p => p.FileBytes));
        }
        catch
        {
            foreach (var p in parts) p.Dispose();
            throw;
        }
    }

    private static GgufFile OpenByteSplit(string path)
    {
        var m = BytePartName().Match(path);
        if (m.Groups["letter"].Value != "a")
            throw new HarpiaException($"{path}: a part of a byte-split GGUF; open the set from its first part ({path[..^1]}a)");
        string prefix = path[..^1];
        var pieces = new List<MappedFile>();
        try
        {
            for (char c = 'a'; c <= 'z' && File.Exists(prefix + c); c++) pieces.Add(MappedFile.Open(prefix + c));
            for (char c = (char)('a' + pieces.Count + 1); c <= 'z'; c++)
                if (File.Exists(prefix + c))
                    throw new HarpiaException($"{prefix + (char)('a' + pieces.Count)}: this part of the byte-split GGUF is missing ({System.IO.Path.GetFileName(prefix + c)} exists after it)");
            var set = new BytePieces(pieces);
            long headerBytes = Math.Min(set.Length, MaxByteSplitHeader);
            byte* header = (byte*)set.Resolve(0, headerBytes);
            try { return Parse(path, header, headerBytes, set.Length, set, set.Resolve, set); }
            catch (InvalidModelFileException e)
            {
                throw new InvalidModelFileException(path, $"read as the {pieces.Count} parts {string.Join(", ", pieces.Select(p => System.IO.Path.GetFileName(p.Path)))} concatenated: {e.Message} (is a part missing or truncated?)");
            }
        }
        catch
        {
            foreach (var p in pieces) p.Dispose();
            throw;
        }
    }

    /// <summary>Disposes the shards of a set together.</summary>
    private sealed class Owners(List<GgufFile> parts) : IDisposable
    {
        public void Dispose() { foreach (var p in parts) p.Dispose(); }
    }

    /// <summary>Mapped pieces addressed as one file: a range inside one piece is a pointer into it; one that straddles is copied.</summary>
    private sealed class BytePieces : IDisposable
    {
        private readonly List<MappedFile> _pieces;
        private readonly long[] _starts;
        private readonly List<NativeBuffer> _copies = [];
        public long Length { get; }

        public BytePieces(List<MappedFile> pieces)
        {
            _pieces = pieces;
            _starts = new long[pieces.Count + 1];
            for (int i = 0; i < pieces.Count; i++) _starts[i + 1] = _starts[i] + pieces[i].Length;
            Length = _starts[^1];
        }

        public nint Resolve(long offset, long bytes)
        {
            int i = Array.BinarySearch(_starts, offset);
            if (i < 0) i = ~i - 1;
            i = Math.Min(i, _pieces.Count - 1);
            if (offset + bytes <= _starts[i + 1]) return (nint)(_pieces[i].Pointer + (offset - _starts[i]));
            var copy = new NativeBuffer(Math.Max(1, bytes));
            _copies.Add(copy);
            long done = 0;
            while (done < bytes)
            {
                long at = offset + done;
                while (at >= _starts[i + 1]) i++;
                long n = Math.Min(bytes - done, _starts[i + 1] - at);
                Buffer.MemoryCopy(_pieces[i].Pointer + (at - _starts[i]), copy.Pointer + done, n, n);
                done += n;
            }
            return (nint)copy.Pointer;
        }

        public void Dispose()
        {
            foreach (var c in _copies) c.Dispose();
            foreach (var p in _pieces) p.Dispose();
        }
    }
}

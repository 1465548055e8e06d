using System.Text;
using Harpia.Tensors;

namespace Harpia.Formats;

/// <summary>
/// Writes GGUF v3 (the layout <see cref="GgufFile"/> reads) as a stream: the header — metadata, then every tensor's
/// name, shape, type and offset — goes out first, because each tensor's byte size follows from its type and shape
/// alone; then the tensors, one at a time, in the order they were declared. A 7 GB model is never held in memory.
/// <para>
/// The bytes go to <c>OUT.partial</c>, renamed to OUT only by <see cref="Commit"/> once every tensor is written, so an
/// interrupted or failed write never leaves a truncated file under the name a loader would pick up. Disposing
/// without committing deletes the partial file.
/// </para>
/// </summary>
public sealed class GgufWriter : IDisposable
{
    public const uint Version = 3;
    public const uint Alignment = GgufFile.DefaultAlignment;
    public const string PartialSuffix = ".partial";

    /// <summary>A tensor to be written: its GGUF name, element type and row-major shape (outermost first).</summary>
    public sealed record TensorInfo(string Name, GgmlType Type, long[] Shape)
    {
        public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));
        public long ByteSize => GgmlTypes.ByteSize(Type, ElementCount)
            ?? throw new HarpiaException($"tensor '{Name}': {ElementCount} elements are not a whole number of {Type} blocks");
    }

    private readonly string _path;
    private readonly string _partialPath;
    private readonly FileStream _stream;
    private readonly IReadOnlyList<TensorInfo> _tensors;
    private readonly long _dataStart;
    private int _next;
    private long _writtenInTensor;
    private bool _committed;

    public string Path => _path;
    public IReadOnlyList<TensorInfo> Tensors => _tensors;
    /// <summary>Index of the tensor that <see cref="WriteTensorData"/> appends to next.</summary>
    public int NextTensor => _next;
    /// <summary>Total size the finished file will have.</summary>
    public long TotalBytes { get; }

    private GgufWriter(string path, FileStream stream, IReadOnlyList<TensorInfo> tensors, long dataStart, long totalBytes)
    {
        _path = path; _partialPath = path + PartialSuffix; _stream = stream; _tensors = tensors; _dataStart = dataStart; TotalBytes = totalBytes;
    }

    /// <summary>
    /// Creates OUT.partial and writes the header. <paramref name="metadata"/> values are typed by their CLR type (see
    /// <see cref="TypeOf"/>); <c>general.alignment</c> is added (32) unless present. An existing OUT is refused unless
    /// <paramref name="overwrite"/>.
    /// </summary>
    public static GgufWriter Create(string path, IEnumerable<KeyValuePair<string, object>> metadata, IReadOnlyList<TensorInfo> tensors, bool overwrite)
    {
        path = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(path)) throw new HarpiaException($"{path}: is a folder; give the output GGUF file's name");
        if (File.Exists(path) && !overwrite) throw new HarpiaException($"{path}: already exists (pass --force to overwrite it)");
        string? dir = System.IO.Path.GetDirectoryName(path);
        if (dir is not null && !Directory.Exists(dir)) throw new HarpiaException($"{path}: folder {dir} does not exist");

        var kv = new List<KeyValuePair<string, object>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var pair in metadata)
        {
            if (!seen.Add(pair.Key)) throw new ArgumentException($"metadata key '{pair.Key}' given twice");
            if (pair.Key == "general.alignment" && !(pair.Value is uint a && a == Alignment))
                throw new ArgumentException($"general.alignment must be the u32 {Alignment}");
            kv.Add(pair);
        }
        if (!seen.Contains("general.alignment")) kv.Add(new("general.alignment", Alignment));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (!names.Add(t.Name)) throw new ArgumentException($"tensor '{t.Name}' given twice");
            if (t.Shape.Length is 0 or > 4 || t.Shape.Any(d => d <= 0)) throw new ArgumentException($"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] is not 1 to 4 positive dimensions");
            _ = t.ByteSize; // validates block geometry before a byte is written
        }

        // The header goes through a memory buffer first: it is small (metadata plus tensor infos; a tokenizer's
        // arrays are the largest part) and its length fixes where the data region starts.
        var header = new MemoryStream();
        using (var w = new BinaryWriter(header, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(GgufFile.Magic);
            w.Write(Version);
            w.Write((ulong)tensors.Count);
            w.Write((ulong)kv.Count);
            foreach (var (key, value) in kv)
            {
                WriteString(w, key);
                var type = TypeOf(value, key);
                w.Write((uint)type);
                WriteValue(w, type, value, key);
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                WriteString(w, t.Name);
                w.Write((uint)t.Shape.Length);
                for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]); // ne[0] is the innermost dimension
                w.Write((uint)t.Type);
                w.Write((ulong)offset);
                offset = AlignUp(offset + t.ByteSize);
            }
        }
        long dataStart = AlignUp(header.Length);
        long total = dataStart;
        foreach (var t in tensors) total = AlignUp(total + t.ByteSize);
        // The file ends right after the last tensor's bytes (no trailing padding), as llama.cpp writes it.
        if (tensors.Count > 0) total -= AlignUp(tensors[^1].ByteSize) - tensors[^1].ByteSize;

        string partial = path + PartialSuffix;
        var stream = new FileStream(partial, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        try
        {
            header.Position = 0;
            header.CopyTo(stream);
            WriteZeros(stream, dataStart - header.Length);
        }
        catch
        {
            stream.Dispose();
            File.Delete(partial);
            throw;
        }
        return new GgufWriter(path, stream, tensors, dataStart, total);
    }

    /// <summary>
    /// Appends bytes to the current tensor (a tensor may arrive in several pieces, e.g. a chunk of rows at a time);
    /// once it is complete, the padding to the next tensor follows and writing moves on.
    /// </summary>
    public void WriteTensorData(ReadOnlySpan<byte> bytes)
    {
        if (_committed) throw new InvalidOperationException("the file is already committed");
        while (!bytes.IsEmpty)
        {
            if (_next >= _tensors.Count) throw new InvalidOperationException($"{bytes.Length} bytes beyond the last tensor");
            var t = _tensors[_next];
            long room = t.ByteSize - _writtenInTensor;
            int n = (int)Math.Min(room, bytes.Length);
            _stream.Write(bytes[..n]);
            bytes = bytes[n..];
            _writtenInTensor += n;
            if (_writtenInTensor == t.ByteSize)
            {
                _next++;
                _writtenInTensor = 0;
                if (_next < _tensors.Count) WriteZeros(_stream, AlignUp(t.ByteSize) - t.ByteSize);
            }
        }
    }

    /// <summary>Checks every tensor was written in full, flushes to disk and renames OUT.partial to OUT.</summary>
    public void Commit()
    {
        if (_committed) return;
        if (_next != _tensors.Count)
            throw new InvalidOperationException($"{_path}: only {_next} of {_tensors.Count} tensors were written");
        if (_stream.Position != TotalBytes)
            throw new InvalidOperationException($"{_path}: wrote {_stream.Position} bytes, expected {TotalBytes}");
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(_partialPath, _path, overwrite: true);
        _committed = true;
    }

    public void Dispose()
    {
        if (_committed) return;
        _stream.Dispose();
        try { File.Delete(_partialPath); } catch (IOException) { } // best effort: never leave a half-written file named as the output
    }

    private static long AlignUp(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void WriteZeros(Stream s, long n)
    {
        Span<byte> zeros = stackalloc byte[(int)Alignment];
        zeros.Clear();
        for (; n > 0; n -= zeros.Length) s.Write(zeros[..(int)Math.Min(n, zeros.Length)]);
    }

    /// <summary>
    /// The GGUF value type of a metadata value, from its CLR type: the types <see cref="GgufFile"/> returns
    /// (byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long, double, arrays of those, and
    /// <c>object[]</c> of arrays for nested arrays), so a file's metadata can be copied through unchanged.
    /// </summary>
    public static GgufValueType TypeOf(object value, string key) => value switch
    {
        byte => GgufValueType.UInt8, sbyte => GgufValueType.Int8, ushort => GgufValueType.UInt16, short => GgufValueType.Int16,
        uint => GgufValueType.UInt32, int => GgufValueType.Int32, float => GgufValueType.Float32, bool => GgufValueType.Bool,
        string => GgufValueType.String, ulong => GgufValueType.UInt64, long => GgufValueType.Int64, double => GgufValueType.Float64,
        Array => GgufValueType.Array,
        _ => throw new ArgumentException($"metadata '{key}': a {value.GetType().Name} has no GGUF value type"),
    };

    // By the exact element type: the CLR lets an int[] pass as a uint[] (and sbyte[] as byte[]…), so type patterns
    // on arrays would misfile them.
    private static GgufValueType ElementTypeOf(Array a, string key)
    {
        var e = a.GetType().GetElementType();
        if (e == typeof(byte)) return GgufValueType.UInt8;
        if (e == typeof(sbyte)) return GgufValueType.Int8;
        if (e == typeof(ushort)) return GgufValueType.UInt16;
        if (e == typeof(short)) return GgufValueType.Int16;
        if (e == typeof(uint)) return GgufValueType.UInt32;
        if (e == typeof(int)) return GgufValueType.Int32;
        if (e == typeof(float)) return GgufValueType.Float32;
        if (e == typeof(bool)) return GgufValueType.Bool;
        if (e == typeof(string)) return GgufValueType.String;
        if (e == typeof(ulong)) return GgufValueType.UInt64;
        if (e == typeof(long)) return GgufValueType.Int64;
        if (e == typeof(double)) return GgufValueType.Float64;
        // Nested arrays: every element must itself be an array (GGUF arrays are homogeneous).
        if (a is object[] o && o.All(x => x is Array)) return GgufValueType.Array;
        throw new ArgumentException($"metadata '{key}': a {a.GetType().Name} is not a GGUF array");
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object v, string key)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write((byte)v); break;
            case GgufValueType.Int8: w.Write((sbyte)v); break;
            case GgufValueType.UInt16: w.Write((ushort)v); break;
            case GgufValueType.Int16: w.Write((short)v); break;
            case GgufValueType.UInt32: w.Write((uint)v); break;
            case GgufValueType.Int32: w.Write((int)v); break;
            case GgufValueType.Float32: w.Write((float)v); break;
            case GgufValueType.Bool: w.Write((bool)v ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)v); break;
            case GgufValueType.UInt64: w.Write((ulong)v); break;
            case GgufValueType.Int64: w.Write((long)v); break;
            case GgufValueType.Float64: w.Write((double)v); break;
            case GgufValueType.Array:
            {
                var a = (Array)v;
                var elementType = ElementTypeOf(a, key);
                w.Write((uint)elementType);
                w.Write((ulong)a.Length);
                foreach (var item in a)
                {
                    if (elementType == GgufValueType.Array) WriteValue(w, GgufValueType.Array, item!, key);
                    else WriteValue(w, elementType, item!, key);
                }
                break;
            }
            default: throw new ArgumentException($"metadata '{key}': value type {type} cannot be written");
        }
    }
}

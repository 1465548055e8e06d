using System.Text;
using Harpia.Tensors;

namespace Harpia.Formats;

/// <summary>GGUF metadata value types, numbered as in the GGUF specification.</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8,
    Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>
/// Reader for GGUF v2/v3 (llama.cpp's format):
/// <code>
/// u32 magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
/// kv_count × { string key | u32 value_type | value }            (string = u64 length + UTF-8 bytes)
/// tensor_count × { string name | u32 n_dims | n_dims × u64 ne | u32 ggml_type | u64 offset }
/// padding to general.alignment (default 32) | tensor data (offsets relative to here, each aligned)
/// </code>
/// ne[0] is the innermost (contiguous) dimension; <see cref="TensorEntry.Shape"/> reverses it to row-major order.
/// Every count and length is checked against the bytes that remain in the file before anything is allocated,
/// so a hostile count such as 2^60 fails cleanly instead of allocating.
/// </summary>
public sealed unsafe partial class GgufFile : ITensorSource
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    public const int DefaultAlignment = 32;
    private const int MaxDims = 4;
    private const int MaxArrayNesting = 4;
    // ggml's own limit on tensor names is 64 bytes; keys are short identifiers. Bounding them keeps a corrupt
    // length from turning into a multi-megabyte name that every error message then repeats.
    private const int MaxTensorNameBytes = 1024;
    private const int MaxKeyBytes = 64 * 1024;

    private readonly IDisposable? _file;

    public string Path { get; }
    public uint Version { get; }
    public IReadOnlyDictionary<string, object> Metadata { get; }
    public IReadOnlyDictionary<string, TensorEntry> Tensors { get; }
    /// <summary>Tensor names in file order.</summary>
    public IReadOnlyList<string> TensorOrder { get; }
    public int Alignment { get; }
    public long DataOffset { get; }
    public long FileBytes { get; }

    private GgufFile(string path, IDisposable? file, uint version, Dictionary<string, object> metadata,
        Dictionary<string, TensorEntry> tensors, List<string> order, int alignment, long dataOffset, long length)
    {
        Path = path; _file = file; Version = version; Metadata = metadata; Tensors = tensors; TensorOrder = order;
        Alignment = alignment; DataOffset = dataOffset; FileBytes = length;
    }

    public static bool HasGgufMagic(string path)
    {
        if (!UntrustedFile.IsRegularFile(path)) return false; // a FIFO would block the open forever
        try
        {
            using var f = File.OpenRead(path);
            Span<byte> b = stackalloc byte[4];
            return f.Read(b) == 4 && BitConverter.ToUInt32(b) == Magic;
        }
        catch (IOException) { return false; }
    }

    /// <summary>Opens a GGUF file; a <c>gguf-split</c> set from its first shard, a byte-split set from its <c>-split-a</c> part.</summary>
    public static GgufFile Open(string path)
    {
        if (IsBytePart(path)) return OpenByteSplit(path);
        var file = MappedFile.Open(path);
        GgufFile first;
        try { first = Parse(path, file.Pointer, file.Length, file); }
        catch { file.Dispose(); throw; }
        return first.Metadata.ContainsKey(SplitCountKey) ? OpenShards(first) : first;
    }

    /// <summary>
    /// One string value of a GGUF file's metadata, or null when the key is missing or not a string. Scans the header
    /// only up to that key, stepping over the values before it without building them — for callers that only ask
    /// what a file is (the model registry reads <c>general.architecture</c>), where <see cref="Open"/> would build the
    /// whole metadata, a tokenizer's tens of thousands of token strings and merges included, only to drop it.
    /// A corrupt header before the key fails with the messages <see cref="Open"/> gives.
    /// </summary>
    public static string? ReadMetadataString(string path, string key)
    {
        if (IsBytePart(path)) // the header may run across the parts: read it as the set
        {
            using var set = Open(path);
            return set.GetString(key);
        }
        using var file = MappedFile.Open(path);
        var r = new Cursor(path, file.Pointer, file.Length);
        ReadHeader(ref r, path, file.Length, out _, out _, out ulong kvCount);
        for (ulong i = 0; i < kvCount; i++)
        {
            string k = r.String("metadata key", MaxKeyBytes);
            var type = (GgufValueType)r.U32();
            if (k == key) return type == GgufValueType.String ? r.String($"metadata '{k}' string") : null;
            r.Skip(type, k, 0);
        }
        return null;
    }

    /// <summary>Magic, version and the two counts, each checked (shared by <see cref="Parse(string, byte*, long, long, object, Func{long, long, nint}?, IDisposable?)"/> and <see cref="ReadMetadataString"/>).</summary>
    private static void ReadHeader(ref Cursor r, string path, long length, out uint version, out ulong tensorCount, out ulong kvCount)
    {
        if (length < 24) throw new InvalidModelFileException(path, $"file is {length} bytes, too short for a GGUF header");
        if (r.U32() != Magic) throw new InvalidModelFileException(path, "not a GGUF file (bad magic)");
        version = r.U32();
        if (version is not (2 or 3))
            throw new InvalidModelFileException(path, $"GGUF version {version} is not supported (2 and 3 are)");
        tensorCount = r.U64();
        kvCount = r.U64();
        // The smallest key/value is 8 (key length) + 4 (type) + 1 (u8) bytes; the smallest tensor info 8 + 4 + 4 + 8.
        if (kvCount > (ulong)(r.Remaining / 13))
            throw new InvalidModelFileException(path, $"metadata count {kvCount} cannot fit in the remaining {r.Remaining} bytes");
        if (tensorCount > (ulong)(r.Remaining / 24))
            throw new InvalidModelFileException(path, $"tensor count {tensorCount} cannot fit in the remaining {r.Remaining} bytes");
    }

    /// <summary>Parses a GGUF image at <paramref name="data"/>; <paramref name="owner"/> keeps it alive.</summary>
    internal static GgufFile Parse(string path, byte* data, long length, object owner) => Parse(path, data, length, length, owner, null, owner as MappedFile);

    /// <param name="headerBytes">bytes readable at <paramref name="data"/> (the header must lie within them)</param>
    /// <param name="length">the file's whole length</param>
    /// <param name="resolve">where the bytes [offset, offset + length) of the file are, when they are not all at <paramref name="data"/></param>
    private static GgufFile Parse(string path, byte* data, long headerBytes, long length, object owner, Func<long, long, nint>? resolve, IDisposable? disposes)
    {
        var r = new Cursor(path, data, headerBytes);
        ReadHeader(ref r, path, length, out uint version, out ulong tensorCount, out ulong kvCount);

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.String("metadata key", MaxKeyBytes);
            var type = (GgufValueType)r.U32();
            object value = r.Value(type, key, 0);
            if (!metadata.TryAdd(key, value)) throw new InvalidModelFileException(path, $"metadata key '{key}' appears twice");
        }

        int alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out var alignObj))
        {
            if (alignObj is not uint a)
                throw new InvalidModelFileException(path, $"general.alignment must be a u32, got {TypeName(alignObj)} {alignObj}");
            if (a == 0 || a > (1u << 20) || (a & (a - 1)) != 0)
                throw new InvalidModelFileException(path, $"general.alignment {a} is not a power of two (at most 2^20)");
            alignment = (int)a;
        }

        var infos = new List<(string Name, GgmlType Type, long[] Shape, ulong Offset, long Bytes)>((int)tensorCount);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.String("tensor name", MaxTensorNameBytes);
            uint nDims = r.U32();
            if (nDims == 0 || nDims > MaxDims) throw new InvalidModelFileException(path, $"tensor '{name}': {nDims} dimensions (1 to {MaxDims} allowed)");
            var ne = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong n = r.U64();
                if (n == 0 || n > long.MaxValue || (long)n > long.MaxValue / elements)
                    throw new InvalidModelFileException(path, $"tensor '{name}': dimension {d} = {n} is empty or overflows");
                ne[d] = (long)n;
                elements *= (long)n;
            }
            uint typeId = r.U32();
            var type = (GgmlType)typeId;
            if (!GgmlTypes.IsGgufType(type)) throw new InvalidModelFileException(path, $"tensor '{name}': unknown ggml type {typeId}");
            ulong offset = r.U64();
            var (blockSize, _) = GgmlTypes.Geometry(type);
            if (ne[0] % blockSize != 0)
                throw new InvalidModelFileException(path, $"tensor '{name}': row of {ne[0]} elements is not a whole number of {type} blocks of {blockSize}");
            long? bytes = GgmlTypes.ByteSize(type, elements);
            if (bytes is null) throw new InvalidModelFileException(path, $"tensor '{name}': byte size of {elements} {type} elements overflows");
            if (offset % (ulong)alignment != 0)
                throw new InvalidModelFileException(path, $"tensor '{name}': data offset {offset} is not aligned to {alignment}");
            Array.Reverse(ne);
            infos.Add((name, type, ne, offset, bytes.Value));
        }

        long dataOffset = (r.Position + alignment - 1) / alignment * alignment;
        if (dataOffset > length && infos.Count > 0)
            throw new InvalidModelFileException(path, $"tensor data would start at {dataOffset}, past the end of the file ({length} bytes)");
        long dataLength = Math.Max(0, length - dataOffset);

        var tensors = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        var order = new List<string>(infos.Count);
        foreach (var (name, type, shape, offset, bytes) in infos)
        {
            if (offset > (ulong)dataLength || bytes > dataLength - (long)offset)
                throw new InvalidModelFileException(path, $"tensor '{name}': bytes [{offset}, {offset + (ulong)bytes}) run past the end of the data ({dataLength} bytes; truncated file?)");
            if (tensors.ContainsKey(name)) throw new InvalidModelFileException(path, $"tensor '{name}' appears twice");
            byte* at = resolve is null ? data + dataOffset + (long)offset : (byte*)resolve(dataOffset + (long)offset, bytes);
            tensors[name] = new TensorEntry(name, type, shape, at, bytes, path, owner);
            order.Add(name);
        }
        var sorted = infos.OrderBy(t => t.Offset).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if ((long)sorted[i].Offset < (long)sorted[i - 1].Offset + sorted[i - 1].Bytes)
                throw new InvalidModelFileException(path, $"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap");

        return new GgufFile(path, disposes, version, metadata, tensors, order, alignment, dataOffset, length);
    }

    // ---- typed metadata access -------------------------------------------------------------------------------

    public bool TryGet(string key, out object value) => Metadata.TryGetValue(key, out value!);

    private static string TypeName(object value) => value switch
    {
        string => "the string", byte => "u8", sbyte => "i8", ushort => "u16", short => "i16", int => "i32", long => "i64",
        ulong => "u64", float => "f32", double => "f64", bool => "a bool", _ => "an array",
    };

    public string? GetString(string key) => Metadata.TryGetValue(key, out var v) ? v as string : null;

    /// <summary>An integer value of any integer type, or null when missing; a value of another type is an error.</summary>
    public long? GetInteger(string key)
    {
        if (!Metadata.TryGetValue(key, out var v)) return null;
        return v switch
        {
            byte x => x, sbyte x => x, ushort x => x, short x => x, uint x => x, int x => x, long x => x,
            ulong x when x <= long.MaxValue => (long)x,
            _ => throw new InvalidModelFileException(Path, $"metadata '{key}' = {v} is not an integer"),
        };
    }

    /// <summary>An integer that must fit an <c>int</c> (a size, count or token id); null when missing.</summary>
    public int? GetInt32(string key)
    {
        long? v = GetInteger(key);
        if (v is null) return null;
        if (v is > int.MaxValue or < int.MinValue)
            throw new InvalidModelFileException(Path, $"{key} = {v} is too large for a 32-bit size or id");
        return (int)v;
    }

    public double? GetFloat(string key)
    {
        if (!Metadata.TryGetValue(key, out var v)) return null;
        return v switch
        {
            float x => x, double x => x,
            byte or sbyte or ushort or short or uint or int or long or ulong => Convert.ToDouble(v),
            _ => throw new InvalidModelFileException(Path, $"metadata '{key}' = {v} is not a number"),
        };
    }

    public void Dispose() => _file?.Dispose();

    /// <summary>Bounds-checked little-endian reads over the mapped header.</summary>
    private struct Cursor(string path, byte* data, long length)
    {
        public long Position;
        public readonly long Remaining => length - Position;

        private void Need(long bytes, string what)
        {
            if (bytes < 0 || bytes > length - Position)
                throw new InvalidModelFileException(path, $"truncated: {what} needs {bytes} bytes at offset {Position} but the file has {length}");
        }

        private T Read<T>(string what) where T : unmanaged
        {
            Need(sizeof(T), what);
            T v = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<T>(data + Position);
            Position += sizeof(T);
            return v;
        }

        public uint U32() => Read<uint>("u32");
        public ulong U64() => Read<ulong>("u64");

        public string String(string what, long maxBytes = int.MaxValue)
        {
            int n = StringLength(what, maxBytes);
            string s = Encoding.UTF8.GetString(data + Position, n);
            Position += n;
            return s;
        }

        private void SkipString(string what)
        {
            int n = StringLength(what, int.MaxValue); // (not "Position += StringLength(…)": that adds to the position before the length was read)
            Position += n;
        }

        /// <summary>A string's byte length, checked against the bytes left (the cursor is then at its bytes).</summary>
        private int StringLength(string what, long maxBytes)
        {
            ulong n = Read<ulong>(what);
            if (n > (ulong)maxBytes) throw new InvalidModelFileException(path, $"{what} at offset {Position - 8} is {n} bytes long (at most {maxBytes} allowed)");
            if (n > (ulong)Remaining) throw new InvalidModelFileException(path, $"truncated: {what} of {n} bytes at offset {Position} runs past the end of the file");
            if (n > int.MaxValue) throw new InvalidModelFileException(path, $"{what} of {n} bytes is not plausible");
            return (int)n;
        }

        public object Value(GgufValueType type, string key, int depth) => type switch
        {
            GgufValueType.UInt8 => Read<byte>(key),
            GgufValueType.Int8 => Read<sbyte>(key),
            GgufValueType.UInt16 => Read<ushort>(key),
            GgufValueType.Int16 => Read<short>(key),
            GgufValueType.UInt32 => Read<uint>(key),
            GgufValueType.Int32 => Read<int>(key),
            GgufValueType.Float32 => Read<float>(key),
            GgufValueType.Bool => Read<byte>(key) switch
            {
                0 => false, 1 => true,
                var b => throw new InvalidModelFileException(path, $"metadata '{key}': bool value {b} is neither 0 nor 1"),
            },
            GgufValueType.String => String($"metadata '{key}' string"),
            GgufValueType.UInt64 => Read<ulong>(key),
            GgufValueType.Int64 => Read<long>(key),
            GgufValueType.Float64 => Read<double>(key),
            GgufValueType.Array => Array(key, depth),
            _ => throw new InvalidModelFileException(path, $"metadata '{key}': unknown value type {(uint)type}"),
        };

        /// <summary>Steps over a value with the checks <see cref="Value"/> makes, building no strings or arrays.</summary>
        public void Skip(GgufValueType type, string key, int depth)
        {
            if (type == GgufValueType.String) { SkipString($"metadata '{key}' string"); return; }
            if (type != GgufValueType.Array) { Value(type, key, depth); return; } // a scalar: read and checked as Value does
            var (elementType, n) = ArrayHeader(key, depth);
            switch (elementType)
            {
                case GgufValueType.String:
                    for (int i = 0; i < n; i++) SkipString($"metadata '{key}'[{i}]");
                    break;
                case GgufValueType.Array:
                    for (int i = 0; i < n; i++) Skip(elementType, key, depth + 1);
                    break;
                case GgufValueType.Bool:
                    Need(n, $"metadata '{key}' array");
                    for (int i = 0; i < n; i++)
                        if (data[Position + i] > 1)
                            throw new InvalidModelFileException(path, $"metadata '{key}'[{i}]: bool value {data[Position + i]} is neither 0 nor 1");
                    Position += n;
                    break;
                default:
                    Need((long)n * MinSize(elementType), $"metadata '{key}' array");
                    Position += (long)n * MinSize(elementType);
                    break;
            }
        }

        /// <summary>An array's element type and count, checked: nesting depth, a known type, a count that fits.</summary>
        private (GgufValueType ElementType, int Count) ArrayHeader(string key, int depth)
        {
            if (depth >= MaxArrayNesting) throw new InvalidModelFileException(path, $"metadata '{key}': arrays nested deeper than {MaxArrayNesting}");
            var elementType = (GgufValueType)Read<uint>(key);
            if ((uint)elementType > (uint)GgufValueType.Float64)
                throw new InvalidModelFileException(path, $"metadata '{key}': unknown array element type {(uint)elementType}");
            ulong count = Read<ulong>(key);
            if (count > (ulong)(Remaining / MinSize(elementType)))
                throw new InvalidModelFileException(path, $"metadata '{key}': array of {count} {elementType} cannot fit in the remaining {Remaining} bytes");
            int n = (int)count;
            return (elementType, n);
        }

        private static int MinSize(GgufValueType t) => t switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
            GgufValueType.Array => 12,
            _ => 1,
        };

        private object Array(string key, int depth)
        {
            var (elementType, n) = ArrayHeader(key, depth);
            switch (elementType)
            {
                case GgufValueType.UInt8: return Block<byte>(n, key);
                case GgufValueType.Int8: return Block<sbyte>(n, key);
                case GgufValueType.UInt16: return Block<ushort>(n, key);
                case GgufValueType.Int16: return Block<short>(n, key);
                case GgufValueType.UInt32: return Block<uint>(n, key);
                case GgufValueType.Int32: return Block<int>(n, key);
                case GgufValueType.Float32: return Block<float>(n, key);
                case GgufValueType.UInt64: return Block<ulong>(n, key);
                case GgufValueType.Int64: return Block<long>(n, key);
                case GgufValueType.Float64: return Block<double>(n, key);
                case GgufValueType.Bool:
                {
                    var bytes = Block<byte>(n, key);
                    var a = new bool[n];
                    for (int i = 0; i < n; i++)
                        a[i] = bytes[i] switch
                        {
                            0 => false, 1 => true,
                            var b => throw new InvalidModelFileException(path, $"metadata '{key}'[{i}]: bool value {b} is neither 0 nor 1"),
                        };
                    return a;
                }
                case GgufValueType.String:
                {
                    var a = new string[n];
                    for (int i = 0; i < n; i++) a[i] = String($"metadata '{key}'[{i}]");
                    return a;
                }
                default:
                {
                    var a = new object[n];
                    for (int i = 0; i < n; i++) a[i] = Value(elementType, key, depth + 1);
                    return a;
                }
            }
        }

        private T[] Block<T>(int n, string key) where T : unmanaged
        {
            Need((long)n * sizeof(T), $"metadata '{key}' array");
            var a = new ReadOnlySpan<T>(data + Position, n).ToArray();
            Position += (long)n * sizeof(T);
            return a;
        }
    }
}

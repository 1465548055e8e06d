using System.Text.Json;
using Harpia.Tensors;

namespace Harpia.Formats;

/// <summary>
/// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header mapping each tensor
/// name to <c>{dtype, shape, data_offsets: [begin, end]}</c> (offsets relative to the data region right after the
/// header) plus an optional <c>__metadata__</c> string map, then the raw data. Everything in the header is checked
/// before any tensor is handed out: known dtype, shape × element size = byte range, ranges inside the data region
/// and not overlapping.
/// </summary>
public sealed unsafe class SafetensorsFile : ITensorSource
{
    /// <summary>Headers are small (a few hundred bytes per tensor); anything bigger than this is not a real file.</summary>
    public const long MaxHeaderBytes = 100L << 20;

    private readonly MappedFile? _file;

    public string Path { get; }
    public IReadOnlyDictionary<string, TensorEntry> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public long FileBytes { get; }

    private SafetensorsFile(string path, MappedFile? file, long length, Dictionary<string, TensorEntry> tensors, Dictionary<string, string> metadata)
    {
        Path = path; _file = file; FileBytes = length; Tensors = tensors; Metadata = metadata;
    }

    public static SafetensorsFile Open(string path)
    {
        var file = MappedFile.Open(path);
        try { return Parse(path, file.Pointer, file.Length, file); }
        catch { file.Dispose(); throw; }
    }

    /// <summary>Parses a safetensors image at <paramref name="data"/>; <paramref name="owner"/> keeps it alive.</summary>
    internal static SafetensorsFile Parse(string path, byte* data, long length, object owner)
    {
        if (length < 8) throw Bad(path, $"file is {length} bytes, too short for the 8-byte header length");
        ulong headerLength = *(ulong*)data;
        if (!BitConverter.IsLittleEndian) headerLength = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(headerLength);
        if (headerLength < 2 || headerLength > MaxHeaderBytes || (long)headerLength > length - 8)
            throw Bad(path, $"header length {headerLength} does not fit in a file of {length} bytes (truncated or not safetensors)");
        long dataStart = 8 + (long)headerLength;
        long dataLength = length - dataStart;

        var tensors = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        JsonDocument doc;
        try
        {
            var header = new ReadOnlySpan<byte>(data + 8, (int)headerLength).ToArray();
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e) { throw Bad(path, $"header is not valid JSON ({e.Message})"); }
        using (doc)
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "header is not a JSON object");
            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                string name = property.Name;
                if (name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object) throw Bad(path, "__metadata__ is not an object");
                    foreach (var m in property.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad(path, $"__metadata__ value '{m.Name}' is not a string");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                if (tensors.ContainsKey(name)) throw Bad(path, $"tensor '{name}' appears twice in the header");
                var (type, shape, begin, end) = ParseTensorHeader(path, name, property.Value);
                if (end > dataLength)
                    throw Bad(path, $"tensor '{name}': data_offsets [{begin}, {end}] run past the end of the data ({dataLength} bytes; truncated file?)");
                ranges.Add((begin, end, name));
                tensors[name] = new TensorEntry(name, type, shape, data + dataStart + begin, end - begin, path, owner);
            }
            ranges.Sort((a, b) => a.Begin.CompareTo(b.Begin));
            for (int i = 1; i < ranges.Count; i++)
                if (ranges[i].Begin < ranges[i - 1].End && ranges[i].End > ranges[i].Begin)
                    throw Bad(path, $"tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap");
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            // System.Text.Json validates structure but decodes strings lazily: invalid UTF-8 surfaces here.
            throw Bad(path, $"header is not valid UTF-8 JSON ({e.Message})");
        }
        return new SafetensorsFile(path, owner as MappedFile, length, tensors, metadata);
    }

    private static (GgmlType, long[], long, long) ParseTensorHeader(string path, string name, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Bad(path, $"tensor '{name}': header entry is not an object");
        if (!e.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw Bad(path, $"tensor '{name}': missing dtype");
        string dtype = dtypeEl.GetString()!;
        GgmlType type = dtype switch
        {
            "F32" => GgmlType.F32, "F16" => GgmlType.F16, "BF16" => GgmlType.BF16, "F64" => GgmlType.F64,
            "I8" => GgmlType.I8, "U8" => GgmlType.U8, "I16" => GgmlType.I16, "I32" => GgmlType.I32, "I64" => GgmlType.I64,
            _ => throw Bad(path, $"tensor '{name}': dtype '{dtype}' is not supported (F32, F16, BF16, F64, I8, U8, I16, I32, I64)"),
        };
        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw Bad(path, $"tensor '{name}': missing shape");
        int rank = shapeEl.GetArrayLength();
        if (rank > 8) throw Bad(path, $"tensor '{name}': rank {rank} is not plausible");
        var shape = new long[rank];
        long elements = 1;
        for (int i = 0; i < rank; i++)
        {
            var d = shapeEl[i];
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw Bad(path, $"tensor '{name}': shape entry {i} is not a non-negative integer");
            shape[i] = dim;
            if (dim != 0 && elements > long.MaxValue / dim) throw Bad(path, $"tensor '{name}': shape [{string.Join(", ", shape[..(i + 1)])}…] overflows");
            elements *= dim;
        }
        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2
            || !TryInt64(offEl[0], out long begin) || !TryInt64(offEl[1], out long end) || begin < 0 || end < begin)
            throw Bad(path, $"tensor '{name}': data_offsets must be [begin, end] with 0 ≤ begin ≤ end");
        long? bytes = GgmlTypes.ByteSize(type, elements);
        if (bytes is null || bytes.Value != end - begin)
            throw Bad(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype} needs {(bytes is null ? "an impossible number of" : bytes.Value.ToString())} bytes but data_offsets give {end - begin}");
        return (type, shape, begin, end);
    }

    private static bool TryInt64(JsonElement e, out long value)
    {
        value = 0;
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out value);
    }

    private static InvalidModelFileException Bad(string path, string problem) => new(path, problem);

    public void Dispose() => _file?.Dispose();
}

/// <summary>
/// A Hugging Face checkpoint folder: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (<c>weight_map</c>: tensor name → shard file).
/// </summary>
public sealed class SafetensorsCheckpoint : ITensorSource
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";
    public const long MaxIndexBytes = 64L << 20;

    private readonly List<SafetensorsFile> _files;
    public string Path { get; }
    public IReadOnlyDictionary<string, TensorEntry> Tensors { get; }
    public IReadOnlyList<SafetensorsFile> Files => _files;
    public long FileBytes => _files.Sum(f => f.FileBytes);

    private SafetensorsCheckpoint(string path, List<SafetensorsFile> files, Dictionary<string, TensorEntry> tensors)
    {
        Path = path; _files = files; Tensors = tensors;
    }

    public static bool IsCheckpointFolder(string folder) =>
        File.Exists(System.IO.Path.Combine(folder, IndexFileName)) || File.Exists(System.IO.Path.Combine(folder, SingleFileName));

    /// <summary>Opens a folder (index or single file) or a single <c>.safetensors</c> file.</summary>
    public static SafetensorsCheckpoint Open(string folderOrFile)
    {
        if (File.Exists(folderOrFile))
        {
            var single = SafetensorsFile.Open(folderOrFile);
            return new SafetensorsCheckpoint(folderOrFile, [single], new Dictionary<string, TensorEntry>(single.Tensors));
        }
        if (!Directory.Exists(folderOrFile)) throw new HarpiaException($"{folderOrFile}: no such file or folder");
        string index = System.IO.Path.Combine(folderOrFile, IndexFileName);
        if (File.Exists(index)) return OpenSharded(folderOrFile, index);
        string singlePath = System.IO.Path.Combine(folderOrFile, SingleFileName);
        if (File.Exists(singlePath))
        {
            var single = SafetensorsFile.Open(singlePath);
            return new SafetensorsCheckpoint(folderOrFile, [single], new Dictionary<string, TensorEntry>(single.Tensors));
        }
        if (Directory.EnumerateFiles(folderOrFile, "pytorch_model*.bin").Any())
            throw new HarpiaException($"{folderOrFile}: only PyTorch .bin weights here; Harpia reads safetensors or GGUF (convert the checkpoint to safetensors first)");
        throw new HarpiaException($"{folderOrFile}: no {SingleFileName} or {IndexFileName} in this folder");
    }

    private static SafetensorsCheckpoint OpenSharded(string folder, string indexPath)
    {
        var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            // Falcon-180B's index is ~100 KB; a file far beyond that is not an index, and must not be read whole.
            if (new FileInfo(indexPath).Length > MaxIndexBytes)
                throw new InvalidModelFileException(indexPath, $"index is larger than {MaxIndexBytes >> 20} MiB");
            using var doc = JsonDocument.Parse(UntrustedFile.ReadAllBytes(indexPath, "safetensors index", MaxIndexBytes));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map)
                || map.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(indexPath, "no weight_map object");
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new InvalidModelFileException(indexPath, $"weight_map['{p.Name}'] is not a file name");
                string shard = p.Value.GetString()!;
                // A hostile index must not point outside the checkpoint folder.
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                    throw new InvalidModelFileException(indexPath, $"weight_map['{p.Name}'] = '{shard}' is not a plain file name in the folder");
                weightMap[p.Name] = shard;
            }
        }
        catch (JsonException e) { throw new InvalidModelFileException(indexPath, $"not valid JSON ({e.Message})"); }

        var files = new List<SafetensorsFile>();
        var tensors = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        try
        {
            foreach (string shard in weightMap.Values.Distinct().Order(StringComparer.Ordinal))
            {
                string shardPath = System.IO.Path.Combine(folder, shard);
                if (!File.Exists(shardPath)) throw new InvalidModelFileException(indexPath, $"shard '{shard}' listed in weight_map is missing");
                var file = SafetensorsFile.Open(shardPath);
                files.Add(file);
                foreach (var (name, entry) in file.Tensors)
                {
                    if (!tensors.TryAdd(name, entry))
                        throw new InvalidModelFileException(shardPath, $"tensor '{name}' is also stored in {tensors[name].FilePath}");
                }
            }
            foreach (var (name, shard) in weightMap)
            {
                if (!tensors.TryGetValue(name, out var entry) || System.IO.Path.GetFileName(entry.FilePath) != shard)
                    throw new InvalidModelFileException(System.IO.Path.Combine(folder, shard), $"tensor '{name}' is listed in the index but not stored in this shard");
            }
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
        return new SafetensorsCheckpoint(folder, files, tensors);
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}

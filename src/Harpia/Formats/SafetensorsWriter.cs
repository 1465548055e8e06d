using System.Text;
using System.Text.Json.Nodes;
using Harpia.Tensors;

namespace Harpia.Formats;

/// <summary>A tensor to be written: its name, dtype and row-major shape.</summary>
public sealed record SafetensorsTensorSpec(string Name, GgmlType Type, long[] Shape)
{
    public long ByteLength => GgmlTypes.ByteSize(Type, Shape.Aggregate(1L, (a, b) => checked(a * b)))
        ?? throw new HarpiaException($"tensor '{Name}': {Type} cannot be stored in safetensors");
}

/// <summary>
/// Writes a safetensors file streaming: the header is computed from the specs up front, then each tensor's bytes
/// are produced by a callback, so a multi-gigabyte file never sits in memory.
/// </summary>
public static class SafetensorsWriter
{
    public static string DtypeName(GgmlType type) => type switch
    {
        GgmlType.F32 => "F32", GgmlType.F16 => "F16", GgmlType.BF16 => "BF16", GgmlType.F64 => "F64",
        GgmlType.I8 => "I8", GgmlType.U8 => "U8", GgmlType.I16 => "I16", GgmlType.I32 => "I32", GgmlType.I64 => "I64",
        _ => throw new HarpiaException($"{type} has no safetensors dtype"),
    };

    /// <param name="writeTensor">Writes exactly the bytes of tensor i to the stream.</param>
    public static void Write(string path, IReadOnlyList<SafetensorsTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata,
        Action<int, Stream> writeTensor)
    {
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var m = new JsonObject();
            foreach (var (k, v) in metadata) m[k] = v;
            header["__metadata__"] = m;
        }
        long offset = 0;
        foreach (var t in tensors)
        {
            long bytes = t.ByteLength;
            header[t.Name] = new JsonObject
            {
                ["dtype"] = DtypeName(t.Type),
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8; // keep the data 8-byte aligned, as the reference writer does
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        stream.Write(len);
        stream.Write(json);
        for (int i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
        long dataStart = stream.Position;
        offset = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            writeTensor(i, stream);
            offset += tensors[i].ByteLength;
            if (stream.Position - dataStart != offset)
                throw new InvalidOperationException($"tensor '{tensors[i].Name}': writer produced {stream.Position - dataStart - offset + tensors[i].ByteLength} bytes, expected {tensors[i].ByteLength}");
        }
    }
}

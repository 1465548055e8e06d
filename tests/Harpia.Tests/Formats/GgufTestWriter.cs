using System.Text;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Tests.Formats;

/// <summary>A minimal GGUF writer for tests: typed metadata and raw tensor bytes, laid out as the spec says.</summary>
public sealed class GgufTestWriter
{
    private readonly List<(string Key, GgufValueType Type, object Value)> _kv = [];
    private readonly List<(string Name, GgmlType Type, long[] Ne, byte[] Data)> _tensors = [];
    public uint Version { get; set; } = 3;
    public int Alignment { get; set; } = 32;

    public GgufTestWriter Add(string key, GgufValueType type, object value) { _kv.Add((key, type, value)); return this; }

    /// <summary>Adds a tensor; <paramref name="ne"/> is GGUF order (innermost first).</summary>
    public GgufTestWriter Tensor(string name, GgmlType type, long[] ne, byte[] data) { _tensors.Add((name, type, ne, data)); return this; }

    public GgufTestWriter F32Tensor(string name, long[] ne, float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return Tensor(name, GgmlType.F32, ne, bytes);
    }

    public byte[] Build()
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms);
        w.Write(GgufFile.Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_kv.Count);
        foreach (var (key, type, value) in _kv)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }
        long offset = 0;
        var offsets = new List<long>();
        foreach (var t in _tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Ne.Length);
            foreach (long d in t.Ne) w.Write((ulong)d);
            w.Write((uint)t.Type);
            offset = (offset + Alignment - 1) / Alignment * Alignment;
            offsets.Add(offset);
            w.Write((ulong)offset);
            offset += t.Data.Length;
        }
        w.Flush();
        long dataStart = (ms.Length + Alignment - 1) / Alignment * Alignment;
        ms.SetLength(dataStart);
        ms.Position = dataStart;
        for (int i = 0; i < _tensors.Count; i++)
        {
            ms.SetLength(dataStart + offsets[i]);
            ms.Position = dataStart + offsets[i];
            ms.Write(_tensors[i].Data);
        }
        return ms.ToArray();
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object v)
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
                var (elementType, items) = ((GgufValueType, System.Collections.IList))v;
                w.Write((uint)elementType);
                w.Write((ulong)items.Count);
                foreach (var item in items) WriteValue(w, elementType, item!);
                break;
            }
        }
    }
}

/// <summary>Runs a reader over an in-memory image (pinned), as if it were a mapped file.</summary>
public static unsafe class ImageParser
{
    /// <summary>
    /// Parses a copy of the image on the pinned object heap, handed to the parser as the owner it keeps alive: the
    /// parsed file reads tensor data through pointers long after this returns, so a <c>fixed</c> block (which lets
    /// the GC move the array once it ends) would make those reads see whatever moved in.
    /// </summary>
    public static T Parse<T>(byte[] image, int length, Func<IntPtr, long, byte[], T> parse)
    {
        var pinned = GC.AllocateUninitializedArray<byte>(image.Length, pinned: true);
        image.CopyTo(pinned, 0);
        fixed (byte* p = pinned) return parse((IntPtr)p, length, pinned);
    }
}

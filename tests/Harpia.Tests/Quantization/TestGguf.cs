using System.Text;
using Harpia.Tensors;

namespace Harpia.Tests.Quantization;

/// <summary>
/// TEST-ONLY minimal GGUF tensor locator for the quantization tests (the real reader lives in Harpia.Formats and
/// will replace this): parses the header, skips metadata, and returns each tensor's type, shape and bytes.
/// </summary>
internal sealed class TestGguf
{
    public sealed record Tensor(string Name, GgmlType Type, long[] Dims, long Offset, long Bytes);

    public Dictionary<string, Tensor> Tensors { get; } = new();
    private readonly byte[] _file;

    public TestGguf(string path)
    {
        _file = File.ReadAllBytes(path);
        using var r = new BinaryReader(new MemoryStream(_file));
        if (Encoding.ASCII.GetString(r.ReadBytes(4)) != "GGUF") throw new InvalidDataException($"{path}: not GGUF");
        uint version = r.ReadUInt32();
        if (version < 2) throw new InvalidDataException($"{path}: GGUF v{version} unsupported");
        long nTensors = r.ReadInt64(), nKv = r.ReadInt64();
        long alignment = 32;
        for (long i = 0; i < nKv; i++)
        {
            string key = Str(r);
            uint type = r.ReadUInt32();
            if (key == "general.alignment" && type == 4) { alignment = r.ReadUInt32(); continue; }
            Skip(r, type);
        }
        var infos = new List<(string, GgmlType, long[], long)>();
        for (long i = 0; i < nTensors; i++)
        {
            string name = Str(r);
            uint nd = r.ReadUInt32();
            var dims = new long[nd];
            for (int d = 0; d < nd; d++) dims[d] = r.ReadInt64();
            var t = (GgmlType)r.ReadUInt32();
            infos.Add((name, t, dims, r.ReadInt64()));
        }
        long dataStart = (r.BaseStream.Position + alignment - 1) / alignment * alignment;
        foreach (var (name, t, dims, off) in infos)
        {
            long elements = dims.Aggregate(1L, (a, b) => a * b);
            Tensors[name] = new Tensor(name, t, dims, dataStart + off, GgmlTypes.ByteSize(t, elements) ?? throw new InvalidDataException(name));
        }
    }

    public ReadOnlySpan<byte> Data(Tensor t) => _file.AsSpan(checked((int)t.Offset), checked((int)t.Bytes));

    /// <summary>The tensor as f32 [rows = product of dims[1..], cols = dims[0]] via Harpia's dequantizers.</summary>
    public float[] Dequantize(Tensor t)
    {
        int cols = (int)t.Dims[0];
        long rows = t.Dims.Skip(1).Aggregate(1L, (a, b) => a * b);
        var result = new float[rows * cols];
        long rowBytes = GgmlTypes.ByteSize(t.Type, cols)!.Value;
        var data = Data(t);
        for (long r = 0; r < rows; r++)
        {
            var src = data.Slice((int)(r * rowBytes), (int)rowBytes);
            var dst = result.AsSpan((int)(r * cols), cols);
            if (t.Type == GgmlType.F32) System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
            else Harpia.Quantization.QuantFormats.Dequantize(t.Type, src, dst);
        }
        return result;
    }

    private static string Str(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadInt64())));

    private static void Skip(BinaryReader r, uint type)
    {
        switch (type)
        {
            case 0: case 1: case 7: r.ReadByte(); break;
            case 2: case 3: r.ReadUInt16(); break;
            case 4: case 5: case 6: r.ReadUInt32(); break;
            case 10: case 11: case 12: r.ReadUInt64(); break;
            case 8: Str(r); break;
            case 9:
                uint et = r.ReadUInt32();
                long n = r.ReadInt64();
                for (long i = 0; i < n; i++) Skip(r, et);
                break;
            default: throw new InvalidDataException($"GGUF metadata type {type}");
        }
    }
}

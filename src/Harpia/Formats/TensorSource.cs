using Harpia.Tensors;

namespace Harpia.Formats;

/// <summary>
/// One tensor of a checkpoint as it lies in its (mapped) file: validated type, shape and byte range.
/// <see cref="Shape"/> is row-major, outermost first (safetensors order; GGUF's ne[] reversed), so a linear
/// weight is [out_features, in_features].
/// </summary>
public sealed unsafe class TensorEntry
{
    public string Name { get; }
    public GgmlType Type { get; }
    public long[] Shape { get; }
    public byte* Data { get; }
    public long ByteLength { get; }
    /// <summary>The file the bytes live in (for error messages).</summary>
    public string FilePath { get; }
    /// <summary>What keeps <see cref="Data"/> valid (the mapped file).</summary>
    public object Owner { get; }

    public TensorEntry(string name, GgmlType type, long[] shape, byte* data, long byteLength, string filePath, object owner)
    {
        Name = name; Type = type; Shape = shape; Data = data; ByteLength = byteLength; FilePath = filePath; Owner = owner;
    }

    public long ElementCount
    {
        get { long n = 1; foreach (long d in Shape) n *= d; return n; }
    }

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <summary>A 2-D view for the matrix kernels, over the mapped bytes (no copy).</summary>
    public WeightMatrix AsMatrix()
    {
        if (Shape.Length != 2 || Shape[0] > int.MaxValue || Shape[1] > int.MaxValue)
            throw new InvalidModelFileException(FilePath, $"tensor '{Name}': expected a 2-D matrix, found shape {ShapeText}");
        return new WeightMatrix(Name, Type, (int)Shape[0], (int)Shape[1], Data, Owner);
    }

    /// <summary>Widens a small 1-D tensor (norm weights, biases) to a managed f32 array.</summary>
    public float[] ToFloatVector()
    {
        if (Shape.Length != 1 || Shape[0] > 1 << 26)
            throw new InvalidModelFileException(FilePath, $"tensor '{Name}': expected a 1-D vector, found shape {ShapeText}");
        if (Type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16))
            throw new InvalidModelFileException(FilePath, $"tensor '{Name}': vectors must be F32, F16 or BF16, found {Type}");
        var result = new float[Shape[0]];
        MatMul.Widen(Type, new ReadOnlySpan<byte>(Data, checked((int)ByteLength)), result);
        return result;
    }
}

/// <summary>A checkpoint's tensors by name, over one or more mapped files; disposing unmaps them.</summary>
public interface ITensorSource : IDisposable
{
    /// <summary>The folder or file the checkpoint was opened from.</summary>
    string Path { get; }
    IReadOnlyDictionary<string, TensorEntry> Tensors { get; }
    /// <summary>Total size of the files holding the tensors.</summary>
    long FileBytes { get; }
}

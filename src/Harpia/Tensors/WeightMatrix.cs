namespace Harpia.Tensors;

/// <summary>
/// A 2-D weight laid out row-major as GGUF and safetensors store it: <see cref="Rows"/> output features, each a
/// row of <see cref="Cols"/> input features encoded in <see cref="Type"/>. The bytes usually live in a
/// memory-mapped file (so a 360 GB checkpoint is never copied into managed arrays); <see cref="Owner"/> keeps
/// whatever holds them alive.
/// </summary>
public sealed unsafe class WeightMatrix
{
    public string Name { get; }
    public GgmlType Type { get; }
    public int Rows { get; }
    public int Cols { get; }
    /// <summary>First byte of row 0.</summary>
    public byte* Data { get; }
    /// <summary>Bytes per row (a whole number of blocks of <see cref="Type"/>).</summary>
    public long RowBytes { get; }
    public object? Owner { get; }

    public WeightMatrix(string name, GgmlType type, int rows, int cols, byte* data, object? owner)
    {
        long? rowBytes = GgmlTypes.ByteSize(type, cols);
        if (rowBytes is null)
            throw new HarpiaException($"tensor '{name}': {cols} columns is not a whole number of {type} blocks");
        if (rows <= 0 || cols <= 0) throw new HarpiaException($"tensor '{name}': empty shape [{rows}, {cols}]");
        Name = name; Type = type; Rows = rows; Cols = cols; Data = data; RowBytes = rowBytes.Value; Owner = owner;
    }

    /// <summary>
    /// A matrix in a format that is not GGUF blocks per row (GPTQ, bitsandbytes 4-bit): <see cref="Data"/> is null,
    /// <see cref="RowBytes"/> 0, and <see cref="Packed"/> multiplies and decodes it.
    /// </summary>
    public WeightMatrix(string name, IPackedMatrix packed, object? owner = null)
    {
        Name = name; Type = packed.Type; Rows = packed.Rows; Cols = packed.Cols; Data = null; RowBytes = 0; Owner = owner ?? packed;
        Packed = packed;
    }

    /// <summary>The matrix when it is in a packed (non-GGUF) format, else null.</summary>
    public IPackedMatrix? Packed { get; }

    public long ByteLength => Packed?.ByteLength ?? RowBytes * Rows;

    /// <summary>The same weights in a kernel-friendly layout built at load (Q8_0, Q4_K with AVX-VNNI), or null.</summary>
    public Quantization.RepackedWeights? Repacked { get; internal set; }

    public ReadOnlySpan<byte> Row(int r) => new(Data + r * RowBytes, checked((int)RowBytes));
}

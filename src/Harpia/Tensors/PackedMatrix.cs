namespace Harpia.Tensors;

/// <summary>
/// A weight matrix whose stored form is not a run of GGUF blocks per row (GPTQ's column-packed words, bitsandbytes'
/// flattened 4-bit codes): it is carried by <see cref="WeightMatrix.Packed"/> and multiplies and decodes itself, so
/// <see cref="MatMul.Compute"/> and <see cref="MatMul.DequantizeRow"/> hand such a matrix straight to it.
/// </summary>
public interface IPackedMatrix
{
    /// <summary>The weight's element type as the rest of Harpia sees it (<see cref="GgmlType.GPTQ"/>, <see cref="GgmlType.BNB_4BIT"/>).</summary>
    GgmlType Type { get; }
    int Rows { get; }
    int Cols { get; }
    /// <summary>One line for <c>inspect</c>: the format and its parameters ("GPTQ 4-bit, group 128, act-order").</summary>
    string Format { get; }
    /// <summary>Stored bits per weight, everything (scales, zeros, absmax) included.</summary>
    double BitsPerWeight { get; }
    /// <summary>Input channels that share one scale (GPTQ group, bitsandbytes block); the row length for one group per row.</summary>
    int GroupSize { get; }
    /// <summary>Bytes the matrix occupies in memory at run time.</summary>
    long ByteLength { get; }
    /// <summary>y [n, Rows] = x [n, Cols] · Wᵀ.</summary>
    void Multiply(ReadOnlySpan<float> x, int n, Span<float> y);
    /// <summary>Row <paramref name="row"/> of W, decoded to f32.</summary>
    void DequantizeRow(int row, Span<float> dst);
}

/// <summary>
/// How the packed formats (<see cref="IPackedMatrix"/>) treat activations: kept in f32 (the default: exact to f32
/// rounding, which the GPTQ/bitsandbytes references assume) or rounded to 8 bits per 32-value block for the integer
/// dots (<c>HARPIA_ACTIVATIONS=q8</c>: faster in prefill, but on the tiny GPTQ fixtures it moves last logits by
/// 0.2–0.4 and can flip a near-tie top-1, so it is not the default). Per calling thread, as
/// <see cref="Quantization.SimdPaths.Forced"/>, so tests cannot disturb each other.
/// </summary>
public static class PackedActivations
{
    private static readonly bool DefaultFloat =
        !string.Equals(Environment.GetEnvironmentVariable("HARPIA_ACTIVATIONS"), "q8", StringComparison.OrdinalIgnoreCase);

    [ThreadStatic] private static bool? _float;

    /// <summary>Whether MatMul on a packed weight keeps f32 activations on this thread.</summary>
    public static bool Float
    {
        get => _float ?? DefaultFloat;
        set => _float = value;
    }
}

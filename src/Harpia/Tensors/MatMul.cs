using System.Numerics;
using System.Runtime.InteropServices;

namespace Harpia.Tensors;

/// <summary>
/// y = x · Wᵀ for a weight <see cref="WeightMatrix"/> [rows, cols] and activations x [n, cols] giving y [n, rows].
/// The single entry point the model uses for every linear layer; it dispatches on the weight's type.
/// </summary>
public static unsafe class MatMul
{
    public static void Compute(WeightMatrix w, ReadOnlySpan<float> x, int n, Span<float> y)
    {
        if (x.Length < (long)n * w.Cols) throw new ArgumentException("x is shorter than n × cols");
        if (y.Length < (long)n * w.Rows) throw new ArgumentException("y is shorter than n × rows");
        fixed (float* px = x)
        fixed (float* py = y)
        {
            float* xp = px, yp = py;
            switch (w.Type)
            {
                case GgmlType.F32:
                case GgmlType.F16:
                case GgmlType.BF16:
                    ComputePool.For(w.Rows, (r0, r1) => FloatRows(w, xp, n, yp, r0, r1), minChunk: 16);
                    break;
                default:
                    throw new HarpiaException($"tensor '{w.Name}': matrix multiply for {w.Type} is not implemented");
            }
        }
    }

    private static void FloatRows(WeightMatrix w, float* x, int n, float* y, int r0, int r1)
    {
        int cols = w.Cols;
        float[] rowBuf = System.Buffers.ArrayPool<float>.Shared.Rent(cols);
        try
        {
            Span<float> row = rowBuf.AsSpan(0, cols);
            for (int r = r0; r < r1; r++)
            {
                ReadOnlySpan<float> wr;
                if (w.Type == GgmlType.F32) wr = new ReadOnlySpan<float>(w.Data + r * w.RowBytes, cols);
                else { Widen(w.Type, w.Row(r), row); wr = row; }
                for (int i = 0; i < n; i++)
                    y[(long)i * w.Rows + r] = Dot(wr, new ReadOnlySpan<float>(x + (long)i * cols, cols));
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(rowBuf); }
    }

    /// <summary>Decodes row <paramref name="row"/> of <paramref name="w"/> to f32 (embedding lookups, tests).</summary>
    public static void DequantizeRow(WeightMatrix w, int row, Span<float> dst)
    {
        if ((uint)row >= (uint)w.Rows) throw new ArgumentOutOfRangeException(nameof(row));
        switch (w.Type)
        {
            case GgmlType.F32:
            case GgmlType.F16:
            case GgmlType.BF16:
                Widen(w.Type, w.Row(row), dst[..w.Cols]);
                break;
            default:
                throw new HarpiaException($"tensor '{w.Name}': decoding {w.Type} rows is not implemented");
        }
    }

    /// <summary>Widens a row of F16 or BF16 to f32.</summary>
    public static void Widen(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (type == GgmlType.F16)
        {
            var h = MemoryMarshal.Cast<byte, Half>(src);
            for (int i = 0; i < dst.Length; i++) dst[i] = (float)h[i];
        }
        else if (type == GgmlType.BF16)
        {
            var b = MemoryMarshal.Cast<byte, ushort>(src);
            for (int i = 0; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle(b[i] << 16);
        }
        else if (type == GgmlType.F32) MemoryMarshal.Cast<byte, float>(src)[..dst.Length].CopyTo(dst);
        else throw new HarpiaException($"cannot widen {type}");
    }

    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b) =>
        System.Numerics.Tensors.TensorPrimitives.Dot(a, b);
}

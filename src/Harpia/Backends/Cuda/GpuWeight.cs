using Harpia.Backends.Cuda.Kernels;
using Harpia.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace Harpia.Backends.Cuda;

/// <summary>
/// A weight matrix in device memory exactly as the file stores it (GGUF blocks, or f32/f16/bf16 rows): no
/// dequantized copy. The buffer is padded to whole 32-bit words so float rows can be read as words.
/// </summary>
public sealed unsafe class GpuWeight : IDisposable
{
    public string Name { get; }
    public GgmlType Type { get; }
    public int Rows { get; }
    public int Cols { get; }
    public long RowBytes { get; }
    public int TypeId => (int)Type;
    private readonly MemoryBuffer1D<uint, Stride1D.Dense> _buffer;

    public ArrayView<uint> Words => _buffer.View;
    public ArrayView<byte> Bytes => _buffer.View.AsContiguous().Cast<byte>();
    public long ByteLength => RowBytes * Rows;

    /// <summary>Copies <paramref name="w"/>'s bytes to <paramref name="device"/> (in slices, so the source's pages can be released behind).</summary>
    public GpuWeight(GpuDevice device, WeightMatrix w, Action<long>? afterSlice = null)
    {
        if (!DeviceQuant.Supports(w.Type)) throw new HarpiaException($"tensor '{w.Name}': the CUDA backend does not read {w.Type} weights");
        if (w.Cols % 8 != 0) throw new HarpiaException($"tensor '{w.Name}': the CUDA kernels need a multiple of 8 columns, got {w.Cols}");
        Name = w.Name; Type = w.Type; Rows = w.Rows; Cols = w.Cols; RowBytes = w.RowBytes;
        long bytes = w.ByteLength, words = (bytes + 3) / 4;
        _buffer = device.Accelerator.Allocate1D<uint>(words);
        try
        {
            const long Slice = 64L << 20;
            for (long o = 0; o < bytes; o += Slice)
            {
                long len = Math.Min(Slice, bytes - o);
                long wordStart = o / 4, wordLen = (len + 3) / 4;
                if (o + len == bytes && len % 4 != 0)
                {
                    var tail = new uint[wordLen];
                    fixed (uint* t = tail) Buffer.MemoryCopy(w.Data + o, t, wordLen * 4, len);
                    _buffer.View.SubView(wordStart, wordLen).CopyFromCPU(tail);
                }
                else
                    _buffer.View.SubView(wordStart, wordLen).CopyFromCPU(ref System.Runtime.CompilerServices.Unsafe.AsRef<uint>(w.Data + o), wordLen);
                afterSlice?.Invoke(o + len);
            }
        }
        catch
        {
            _buffer.Dispose();
            throw;
        }
    }

    public void Dispose() => _buffer.Dispose();
}

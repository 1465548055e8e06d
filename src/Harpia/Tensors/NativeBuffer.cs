using System.Runtime.InteropServices;

namespace Harpia.Tensors;

/// <summary>
/// A block of native memory, 64-byte aligned (a cache line, and the widest SIMD load), that holds weights Harpia
/// made itself (quantized on load) rather than mapped from a file. It is a <see cref="WeightMatrix.Owner"/>: the
/// matrix keeps it reachable; whoever built the model frees it on dispose (the finalizer is the safety net).
/// </summary>
public sealed unsafe class NativeBuffer : IDisposable
{
    public const int Alignment = 64;

    private byte* _pointer;
    public long Length { get; }

    public NativeBuffer(long length)
    {
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length));
        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, Alignment);
        Length = length;
        GC.AddMemoryPressure(length); // the GC cannot see native memory; tell it, so finalizers of dropped buffers run
    }

    public byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(NativeBuffer));

    public Span<byte> Span => new(Pointer, checked((int)Length));

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    ~NativeBuffer() => Free();

    private void Free()
    {
        byte* p = _pointer;
        if (p == null) return;
        _pointer = null;
        NativeMemory.AlignedFree(p);
        GC.RemoveMemoryPressure(Length);
    }
}

using System.Runtime.InteropServices;
using Harpia.Backends.Cuda;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Tests.Backends.Cuda;

/// <summary>
/// One ILGPU CPU accelerator (NVIDIA-shaped, warp 32) shared by every CUDA kernel test: kernels compile once, and the
/// tests of the collection run one after another (the accelerator is slow, ~60 µs per launched thread, so shapes
/// are small but odd: partial blocks, partial warps, several groups).
/// </summary>
public sealed class CudaSimulatorFixture : IDisposable
{
    public GpuDevice Device { get; } = GpuDevice.CreateSimulator();
    public void Dispose() => Device.Dispose();
}

[CollectionDefinition(Name)]
public sealed class CudaSimulatorCollection : ICollectionFixture<CudaSimulatorFixture>
{
    public const string Name = "CUDA simulator";
}

/// <summary>A test that needs a real NVIDIA GPU: skipped, with the reason, where there is none.</summary>
public sealed class GpuFactAttribute : FactAttribute
{
    public GpuFactAttribute()
    {
        var gpus = GpuDevice.List();
        if (gpus.Count == 0)
            Skip = CudaDriver.IsInstalled() ? "needs an NVIDIA GPU: the driver reports none" : "needs an NVIDIA GPU: no NVIDIA driver (libcuda.so.1) on this machine";
    }
}

/// <summary>A weight matrix in unmanaged memory, encoded from f32 values (the quantizers of Quantization/).</summary>
public sealed unsafe class HostWeight : IDisposable
{
    public WeightMatrix Matrix { get; }
    private readonly byte* _data;

    public HostWeight(GgmlType type, int rows, int cols, float[] values, string name = "w")
    {
        long rowBytes = GgmlTypes.ByteSize(type, cols)!.Value;
        _data = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * rows), 64);
        for (int r = 0; r < rows; r++)
            RowEncoder.Encode(type, values.AsSpan(r * cols, cols), new Span<byte>(_data + r * rowBytes, (int)rowBytes));
        Matrix = new WeightMatrix(name, type, rows, cols, _data, this);
    }

    /// <summary>Row r decoded by the scalar reference dequantizer.</summary>
    public float[] Row(int r)
    {
        var row = new float[Matrix.Cols];
        MatMul.DequantizeRow(Matrix, r, row);
        return row;
    }

    public void Dispose() => NativeMemory.AlignedFree(_data);
}

public static class TestData
{
    public static float[] Random(int count, int seed, float scale = 1f)
    {
        var rng = new System.Random(seed);
        var a = new float[count];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }
}

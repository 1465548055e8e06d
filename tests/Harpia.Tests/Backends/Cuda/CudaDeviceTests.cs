using Harpia.Backends.Cuda;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Harpia.Tests.Backends.Cuda;

public sealed class CudaDeviceTests
{
    [Theory]
    [InlineData("cpu", DeviceChoice.Cpu, 0)]
    [InlineData("CPU", DeviceChoice.Cpu, 0)]
    [InlineData("auto", DeviceChoice.Auto, 0)]
    [InlineData("cuda", DeviceChoice.Cuda, 0)]
    [InlineData("cuda:0", DeviceChoice.Cuda, 0)]
    [InlineData("cuda:3", DeviceChoice.Cuda, 3)]
    [InlineData("gpu:1", DeviceChoice.Cuda, 1)]
    public void Device_flag_parses(string value, DeviceChoice choice, int index)
    {
        var request = DeviceRequest.Parse(value);
        Assert.Equal(choice, request.Choice);
        Assert.Equal(index, request.Index);
    }

    [Theory]
    [InlineData("tpu", "unknown device 'tpu'")]
    [InlineData("cuda:", "no GPU number")]
    [InlineData("cuda:x", "no GPU number")]
    [InlineData("cuda:-1", "no GPU number")]
    public void Bad_device_flag_is_a_one_line_error(string value, string expected)
    {
        var e = Assert.Throws<HarpiaException>(() => DeviceRequest.Parse(value));
        Assert.Contains("--device", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>Without a driver (CI), opening a GPU fails with one line that says what is missing and what to try.</summary>
    [Fact]
    public void Opening_cuda_without_a_usable_gpu_says_why_in_one_line()
    {
        if (GpuDevice.List().Count > 0) return;   // a GPU machine: covered by the GPU tests
        var e = Assert.Throws<HarpiaException>(() => GpuDevice.OpenCuda(0));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("--device cpu", e.Message);
        Assert.Contains(CudaDriver.IsInstalled() ? "reports no GPU" : "no NVIDIA driver", e.Message);
    }

    /// <summary>
    /// Every kernel compiles to PTX for sm_80 (what the driver JIT-compiles for sm_80/90/12x) without a GPU, so a
    /// kernel using something the PTX backend lacks fails here, not first on the GPU machine; the tiled product's
    /// PTX holds the tensor-core MMA.
    /// </summary>
    [Fact]
    public void Every_kernel_compiles_to_sm80_ptx()
    {
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_80), CudaArchitecture.SM_80, CudaInstructionSet.ISA_70, null);
        var kernels = new[] { typeof(Harpia.Backends.Cuda.Kernels.LinearKernels), typeof(Harpia.Backends.Cuda.Kernels.ElementKernels), typeof(Harpia.Backends.Cuda.Kernels.AttentionKernels) }
            .SelectMany(t => t.GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static))
            .Where(m => m.ReturnType == typeof(void) && m.GetParameters().Length > 0 && m.GetParameters()[0].ParameterType.Name.StartsWith("ArrayView", StringComparison.Ordinal))
            .ToList();
        Assert.True(kernels.Count >= 15, $"found {kernels.Count} kernels");
        foreach (var method in kernels)
        {
            var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), KernelSpecialization.Empty);
            Assert.Contains(".target sm_80", compiled.PTXAssembly);
            if (method.Name == "MatMulTiled") Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", compiled.PTXAssembly);
        }
    }
}

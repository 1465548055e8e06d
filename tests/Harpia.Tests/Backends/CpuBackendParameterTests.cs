using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Models;

namespace Harpia.Tests.Backends;

/// <summary>The CPU backend keeps norm and bias vectors in the weights' own arrays (issue 11: peak RSS no higher than before the seam).</summary>
public class CpuBackendParameterTests
{
    [Fact]
    public void NormAndBiasParametersShareTheHostArraysInsteadOfCopying()
    {
        var backend = new CpuBackend(repackAtLoad: false);
        float[] weight = [1f, 2f, 3f, 4f], bias = [0.5f, -0.5f, 0f, 1f];
        using var norm = DeviceNorm.Prepare(backend, weight, bias, 1e-5f);
        Assert.Same(weight, ((CpuTensor)norm.Weight).Array);
        Assert.Same(bias, ((CpuTensor)norm.Bias!).Array);
        Assert.Equal((1, 4), (norm.Weight.Rows, norm.Weight.Cols));

        // The shared tensor computes what a copied one does.
        using var copied = new DeviceNorm(backend.Upload(weight), backend.Upload(bias), 1e-5f);
        float[] input = [0.3f, -1.2f, 2.5f, 0.7f, 4f, 4f, -4f, 1f];
        var x = backend.Allocate(TensorType.F32, 2, 4);
        var y1 = backend.Allocate(TensorType.F32, 2, 4);
        var y2 = backend.Allocate(TensorType.F32, 2, 4);
        backend.Upload(input, x);
        backend.LayerNorm(x, y1, 2, norm.Weight, norm.Bias, norm.Eps);
        backend.LayerNorm(x, y2, 2, copied.Weight, copied.Bias, copied.Eps);
        Assert.Equal(((CpuTensor)y2).Array, ((CpuTensor)y1).Array);
    }
}

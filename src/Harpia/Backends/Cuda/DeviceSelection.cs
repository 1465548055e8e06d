using Harpia.Backends.Cpu;

namespace Harpia.Backends.Cuda;

/// <summary>
/// From a <c>--device</c> value to the backend a model runs on: <c>cpu</c>; <c>cuda</c>/<c>cuda:N</c> (that GPU, or a
/// one-line error saying what is missing: driver, GPU, compute capability, memory); <c>auto</c> (GPU 0 when it opens
/// and the model fits, else the CPU, saying which and why in one line).
/// With <see cref="SimulatorVariable"/>=1 the "GPU" is ILGPU's CPU accelerator running the CUDA kernels, so the whole
/// CLI path is testable on machines without a GPU (slow: tiny models only).
/// </summary>
public static class DeviceSelection
{
    public const string SimulatorVariable = "HARPIA_CUDA_ON_CPU_ACCELERATOR";

    public static bool SimulatorRequested => Environment.GetEnvironmentVariable(SimulatorVariable) is "1" or "true";

    /// <summary>Headroom left on the GPU beyond the weights (activations, KV cache, the CUDA context): 5 % or 1 GiB, the larger.</summary>
    public static long Reserve(long total) => Math.Max(1L << 30, total / 20);

    /// <summary>
    /// Opens the backend for <paramref name="value"/>. <paramref name="modelPath"/> (when given) is checked against the
    /// GPU's free memory before anything loads; <paramref name="quantizedOnLoad"/> skips that check (the stored size
    /// is not what will be uploaded). The choice is written to <paramref name="log"/> in one line.
    /// </summary>
    public static IComputeBackend Open(string? value, string? modelPath = null, bool quantizedOnLoad = false, TextWriter? log = null, string flag = "--device")
    {
        var request = DeviceRequest.Parse(value, flag);
        if (request.Choice == DeviceChoice.Cpu)
        {
            log?.WriteLine("device: cpu");
            return CpuBackend.Default;
        }
        CudaBackend? backend = null;
        try
        {
            backend = SimulatorRequested ? CudaBackend.OpenSimulator() : CudaBackend.OpenCuda(request.Index, flag);
            if (modelPath is not null && !quantizedOnLoad)
            {
                var (free, total) = backend.Gpu.MemoryInfo();
                CheckFits(modelPath, WeightFileBytes(modelPath), free, total, backend.Name, backend.Device.Name, flag);
            }
        }
        catch (HarpiaException e) when (request.Choice == DeviceChoice.Auto)
        {
            backend?.Dispose();
            log?.WriteLine($"device: auto → cpu ({FirstClause(e.Message)})");
            return CpuBackend.Default;
        }
        catch
        {
            backend?.Dispose();
            throw;
        }
        log?.WriteLine($"device: {(request.Choice == DeviceChoice.Auto ? "auto → " : "")}{backend.Name} {backend.Device.Name}, {CudaBackend.Bytes(backend.Device.MemoryBytes)}");
        return backend;
    }

    /// <summary>
    /// The model-too-big check, before loading: the weights as stored (what the backend uploads) plus
    /// <see cref="Reserve"/> must fit the GPU's free memory.
    /// </summary>
    public static void CheckFits(string modelPath, long weightBytes, long freeBytes, long totalBytes, string device, string deviceName, string flag = "--device")
    {
        long need = weightBytes + Reserve(totalBytes);
        if (need <= freeBytes) return;
        throw new HarpiaException($"{flag} {device}: {modelPath} needs {CudaBackend.Bytes(weightBytes)} of weights + {CudaBackend.Bytes(Reserve(totalBytes))} headroom, " +
            $"but {deviceName} has {CudaBackend.Bytes(freeBytes)} free of {CudaBackend.Bytes(totalBytes)}; use a smaller quantization (a Q4_K_M GGUF), a larger GPU, or --device cpu");
    }

    /// <summary>Bytes of a checkpoint's weight files: the GGUF file, or the folder's *.safetensors / *.gguf files.</summary>
    public static long WeightFileBytes(string modelPath)
    {
        if (File.Exists(modelPath)) return new FileInfo(modelPath).Length;
        if (!Directory.Exists(modelPath)) return 0;
        // A folder's safetensors are the checkpoint; a GGUF beside them is another copy, counted only when alone.
        long Sum(string pattern) => Directory.EnumerateFiles(modelPath, pattern).Sum(f => new FileInfo(f).Length);
        long safetensors = Sum("*.safetensors");
        return safetensors > 0 ? safetensors : Sum("*.gguf");
    }

    private static string FirstClause(string message)
    {
        // "--device cuda:0: no NVIDIA driver …; install …" → "no NVIDIA driver …"
        int colon = message.IndexOf(": ", StringComparison.Ordinal);
        string rest = colon >= 0 ? message[(colon + 2)..] : message;
        int semicolon = rest.IndexOf(';');
        return semicolon > 0 ? rest[..semicolon] : rest;
    }
}

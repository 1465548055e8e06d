using System.Runtime.InteropServices;

namespace Harpia.Backends.Cuda;

/// <summary>
/// The few CUDA driver API calls Harpia makes itself: whether the driver library loads at all (to tell "no driver"
/// from "no GPU"), and free/total memory of the current context's GPU (<c>cuMemGetInfo_v2</c>). Everything else
/// goes through ILGPU.
/// </summary>
public static partial class CudaDriver
{
    private const string Library = "libcuda.so.1";

    /// <summary>Whether the NVIDIA driver library can be loaded on this machine (false on machines without a driver).</summary>
    public static bool IsInstalled()
    {
        string name = OperatingSystem.IsWindows() ? "nvcuda.dll" : Library;
        if (!NativeLibrary.TryLoad(name, out var handle)) return false;
        NativeLibrary.Free(handle);
        return true;
    }

    [LibraryImport(Library, EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);

    /// <summary>Free and total bytes of the GPU whose context is current on this thread, or null when the call fails.</summary>
    public static (long Free, long Total)? MemoryInfo()
    {
        try
        {
            return CuMemGetInfo(out var free, out var total) == 0 ? ((long)free, (long)total) : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }
}

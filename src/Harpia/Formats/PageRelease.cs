using System.Runtime.InteropServices;

namespace Harpia.Formats;

/// <summary>
/// Hands pages of a read-only file mapping back to the OS (madvise MADV_DONTNEED): they leave this process's
/// resident set and are read again from the page cache or disk if touched later. Used after weights have been
/// copied into a repacked form, so a model is not resident twice. A no-op where madvise is unavailable.
/// </summary>
public static unsafe partial class PageRelease
{
    private const int MadvDontNeed = 4;
    private static readonly long PageSize = Environment.SystemPageSize;

    /// <summary>Releases the whole pages inside [p, p + length); partial pages at either end stay.</summary>
    public static void DontNeed(byte* p, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0) return;
        long start = ((long)p + PageSize - 1) / PageSize * PageSize, end = ((long)p + length) / PageSize * PageSize;
        if (end <= start) return;
        try { _ = madvise((nint)start, (nuint)(end - start), MadvDontNeed); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint address, nuint length, int advice);
}

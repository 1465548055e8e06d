using System.IO.MemoryMappedFiles;

namespace Harpia.Formats;

/// <summary>
/// A whole file mapped read-only into the address space. The pointer is acquired once when the file opens and
/// released on dispose; pages are read from disk only when touched, so a 360 GB checkpoint costs address space,
/// not memory. Readers never trust what they read here: every offset is checked against <see cref="Length"/>.
/// </summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _pointer;

    public string Path { get; }
    public long Length { get; }

    /// <summary>First byte of the file. Valid until <see cref="Dispose"/>.</summary>
    public byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(Path);

    private MappedFile(string path, long length, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* pointer)
    {
        Path = path; Length = length; _map = map; _view = view; _pointer = pointer;
    }

    public static MappedFile Open(string path)
    {
        UntrustedFile.RequireRegularFile(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = stream.Length;
        if (length == 0)
        {
            stream.Dispose();
            throw new InvalidModelFileException(path, "the file is empty");
        }
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new MappedFile(path, length, map, view, p + view.PointerOffset);
        }
        catch
        {
            view?.Dispose();
            if (map is not null) map.Dispose(); else stream.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_pointer == null) return;
        _pointer = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}

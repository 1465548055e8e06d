using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace Harpia.Evaluation;

/// <summary>
/// A reference model's log-probabilities saved for later KL-divergence runs (<c>--save-reference</c> /
/// <c>--reference-logits</c>), so the big reference model need not be loaded again for every quantization.
/// Little-endian, version 1:
/// <code>
///   0  8 bytes  magic "HRPALGPB"
///   8  u32      version (1)
///  12  u32      vocabulary size V
///  16  u32      context C (tokens per window)
///  20  u32      first scored row F
///  24  u32      windows W
///  28  u32      reserved (0)
///  32  i32[W·C] the token ids of all windows, so a file is never compared against another text or tokenizer
///      f32[W][C−1−F][V] log-probabilities of the scored rows
/// </code>
/// Float32 is exact against the live path (which rounds to float too); it costs 4·V bytes per scored token.
/// </summary>
public static class ReferenceLogProbsFile
{
    public const int Version = 1;
    public const int HeaderBytes = 32;
    private static ReadOnlySpan<byte> Magic => "HRPALGPB"u8;

    /// <summary>Bytes a file for these windows takes.</summary>
    public static long FileBytes(EvaluationWindows w, int vocab) =>
        HeaderBytes + 4L * w.Count * w.Context + 4L * w.Count * w.ScoredPerWindow * vocab;

    /// <summary>
    /// Opens a saved file for a run over <paramref name="tokens"/> with <paramref name="windows"/>, after checking
    /// everything the header promises: magic, version, sizes, the exact file length, and that it was saved for
    /// this vocabulary, these windows and this very token sequence.
    /// </summary>
    public static Reader Open(string path, int vocab, ReadOnlySpan<int> tokens, EvaluationWindows windows)
    {
        if (!File.Exists(path)) throw new HarpiaException($"{path}: reference log-probs file not found");
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            var header = ReadHeader(stream, path);
            string Fail(string problem) => throw new InvalidModelFileException(path, problem);
            long expected = FileBytes(header, header.Vocab);
            if (stream.Length < expected)
                Fail($"truncated: {stream.Length:N0} bytes, the header promises {expected:N0} ({header.Count} windows of {header.Context} tokens, vocabulary {header.Vocab})");
            if (stream.Length > expected) Fail($"{stream.Length:N0} bytes, {expected:N0} expected from the header: corrupt or not a reference file");
            if (header.Vocab != vocab)
                Fail($"saved with a vocabulary of {header.Vocab} tokens; the model has {vocab}: it is a reference for another model family or tokenizer");
            if (header.Context != windows.Context || header.FirstScored != windows.FirstScored)
                Fail($"saved with --context {header.Context}{(header.FirstScored == 0 ? " --score-all" : "")}; this run uses --context {windows.Context}{(windows.FirstScored == 0 ? " --score-all" : "")}");
            if (header.Count < windows.Count)
                Fail($"holds {header.Count} windows; this run evaluates {windows.Count} (pass --max-windows {header.Count} or save a longer reference)");

            var saved = new int[checked((int)windows.TokensEvaluated)];
            stream.ReadExactly(MemoryMarshal.AsBytes(saved.AsSpan()));
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("reference files are little-endian");
            for (int i = 0; i < saved.Length; i++)
                if (saved[i] != tokens[i])
                    Fail($"its token sequence differs from this text's at token {i} (saved id {saved[i]}, this text {tokens[i]}): it was saved for another text or tokenizer");
            long dataStart = HeaderBytes + 4L * header.Count * header.Context;
            return new Reader(stream, path, header, dataStart);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    internal readonly record struct Header(int Vocab, int Context, int FirstScored, int Count)
    {
        public int ScoredPerWindow => Context - 1 - FirstScored;
        public static implicit operator EvaluationWindows(Header h) => new(h.Context, h.Count, h.FirstScored);
    }

    private static Header ReadHeader(Stream stream, string path)
    {
        var b = new byte[HeaderBytes]; // once per file; a local function reads it
        if (stream.Length < HeaderBytes)
            throw new InvalidModelFileException(path, $"truncated: {stream.Length} bytes, shorter than the {HeaderBytes}-byte header of a reference log-probs file");
        stream.ReadExactly(b);
        if (!b.AsSpan(0, 8).SequenceEqual(Magic))
            throw new InvalidModelFileException(path, $"not a Harpia reference log-probs file (magic is not \"{Encoding.ASCII.GetString(Magic)}\")");
        uint U(int offset) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(offset, 4));
        uint version = U(8), vocab = U(12), context = U(16), first = U(20), count = U(24);
        if (version != Version) throw new InvalidModelFileException(path, $"format version {version}; this Harpia reads version {Version}");
        if (vocab is 0 or > int.MaxValue / 4 || context is < 2 or > 1 << 24 || first > context - 2 || count is 0 or > 1 << 24 || U(28) != 0)
            throw new InvalidModelFileException(path, $"corrupt header (vocabulary {vocab}, context {context}, first scored row {first}, windows {count})");
        return new Header((int)vocab, (int)context, (int)first, (int)count);
    }

    /// <summary>Reads one window's rows at a time; positioned reads, so windows may be read in any order.</summary>
    public sealed class Reader : IReferenceLogProbs, IDisposable
    {
        private readonly FileStream _stream;
        private readonly Header _header;
        private readonly long _dataStart;

        public string Name { get; }
        public int VocabSize => _header.Vocab;
        public int Windows => _header.Count;

        internal Reader(FileStream stream, string path, Header header, long dataStart)
        {
            _stream = stream;
            _header = header;
            _dataStart = dataStart;
            Name = path;
        }

        public void Read(int window, Span<float> logProbs)
        {
            if ((uint)window >= (uint)_header.Count) throw new ArgumentOutOfRangeException(nameof(window));
            int floats = _header.ScoredPerWindow * _header.Vocab;
            if (logProbs.Length < floats) throw new ArgumentException("buffer smaller than a window", nameof(logProbs));
            long offset = _dataStart + 4L * floats * window;
            int read = RandomAccess.Read(_stream.SafeFileHandle, MemoryMarshal.AsBytes(logProbs[..floats]), offset);
            // The length was checked on open; a short read means the file shrank under us.
            if (read != 4 * floats) throw new InvalidModelFileException(Name, $"truncated while reading window {window}");
        }

        public void Dispose() => _stream.Dispose();
    }

    /// <summary>
    /// Writes a file window by window to <c>path.partial</c> and renames it on <see cref="Complete"/>, so a run that
    /// stops early never leaves a file that looks whole.
    /// </summary>
    public sealed class Writer : IDisposable
    {
        private readonly FileStream _stream;
        private readonly string _path, _partial;
        private readonly EvaluationWindows _windows;
        private readonly int _vocab;
        private int _written;

        public Writer(string path, int vocab, ReadOnlySpan<int> tokens, EvaluationWindows windows)
        {
            if (tokens.Length < windows.TokensEvaluated) throw new ArgumentException("fewer tokens than the windows cover", nameof(tokens));
            _path = path;
            _partial = path + ".partial";
            _windows = windows;
            _vocab = vocab;
            try { _stream = new FileStream(_partial, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new HarpiaException($"{path}: cannot write the reference file ({e.Message})", e);
            }
            Span<byte> h = stackalloc byte[HeaderBytes];
            h.Clear();
            Magic.CopyTo(h);
            BinaryPrimitives.WriteUInt32LittleEndian(h[8..], Version);
            BinaryPrimitives.WriteUInt32LittleEndian(h[12..], (uint)vocab);
            BinaryPrimitives.WriteUInt32LittleEndian(h[16..], (uint)windows.Context);
            BinaryPrimitives.WriteUInt32LittleEndian(h[20..], (uint)windows.FirstScored);
            BinaryPrimitives.WriteUInt32LittleEndian(h[24..], (uint)windows.Count);
            _stream.Write(h);
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("reference files are little-endian");
            _stream.Write(MemoryMarshal.AsBytes(tokens[..checked((int)windows.TokensEvaluated)]));
        }

        /// <summary>Appends the next window's scored rows (ScoredPerWindow × vocab log-probs).</summary>
        public void Write(ReadOnlySpan<float> logProbs)
        {
            if (_written == _windows.Count) throw new InvalidOperationException("all windows are written");
            if (logProbs.Length != _windows.ScoredPerWindow * _vocab) throw new ArgumentException("not one window of rows", nameof(logProbs));
            _stream.Write(MemoryMarshal.AsBytes(logProbs));
            _written++;
        }

        public void Complete()
        {
            if (_written != _windows.Count) throw new InvalidOperationException($"{_written} of {_windows.Count} windows written");
            _stream.Dispose();
            File.Move(_partial, _path, overwrite: true);
        }

        public void Dispose()
        {
            _stream.Dispose();
            if (File.Exists(_partial)) File.Delete(_partial);
        }
    }
}

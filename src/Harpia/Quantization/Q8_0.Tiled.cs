using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Prefill (matrix × matrix) for the Q8_0 family with AVX-VNNI, over a tile of eight weight rows interleaved so
/// that one 256-bit register holds four consecutive weights of each of the eight rows:
/// <code>
/// block b (32 columns):  quad j = columns 4j..4j+3:   [row0 w0..w3 | row1 w0..w3 | … | row7 w0..w3]   (8 × 32 bytes)
/// then, for all blocks:  scales  d[b][8]  (fp16, as stored)  and  −Σ w[b][row]  (int16)
/// </code>
/// 288 bytes per eight row-blocks against Q8_0's 272, so a matrix repacked at load (<see cref="RepackedQ8_0"/>)
/// costs 6 % more memory than the file and decode reads 6 % more bytes, for a third of the instructions.
/// Broadcasting four activation bytes against a quad makes vpdpbusd accumulate the eight rows' dots in the eight
/// int32 lanes, so the per-block f32 work (convert, scale, FMA) is paid once per eight rows instead of once per
/// row, and no horizontal sum is ever needed. vpdpbusd multiplies unsigned × signed, so activations are fed as
/// x + 128 (= x XOR 0x80 as a byte) and each sum starts at −128·Σw of its row and block. Integer
/// sums are exact; f32 accumulation runs block by block, so results equal <see cref="Q8_0.Dot"/> to f32 rounding.
/// The scalar reference is <see cref="Q8_0.DotScalar"/>. Without AVX-VNNI the same kernel runs on the exact AVX2
/// emulation of vpdpbusd (<see cref="Vnni"/>, HARPIA_VNNI=emulate); by default such machines use the per-row kernels.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q8_0Tiled
{
    public const int TileRows = 8;

    /// <summary>Whether this machine can run the tiled kernel: AVX2 + FMA, with AVX-VNNI or its exact emulation
    /// (<see cref="Vnni"/>). Whether MatMul uses it is <see cref="Vnni.Tiles"/>.</summary>
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Bytes of the packed form of one eight-row tile with <paramref name="nb"/> blocks per row.</summary>
    public static long PackedBytes(int nb) => (long)nb * 288;

    /// <summary>
    /// Packs <paramref name="count"/> (≤ 8) Q8_0-layout rows of <paramref name="nb"/> blocks; missing rows are zero.
    /// An 8 × 8 int32 transpose per block (unpack 32/64, permute 128) builds the quads.
    /// </summary>
    public static void Pack(BlockQ8_0** rows, int count, int nb, byte* dst)
    {
        ushort* scales = (ushort*)(dst + (long)nb * 256);
        short* sums = (short*)(dst + (long)nb * 272);
        var ones = Vector256.Create((byte)1);
        for (int b = 0; b < nb; b++)
        {
            Vector256<int> r0 = Row(0), r1 = Row(1), r2 = Row(2), r3 = Row(3), r4 = Row(4), r5 = Row(5), r6 = Row(6), r7 = Row(7);
            var t0 = Avx2.UnpackLow(r0, r1); var t1 = Avx2.UnpackHigh(r0, r1);
            var t2 = Avx2.UnpackLow(r2, r3); var t3 = Avx2.UnpackHigh(r2, r3);
            var t4 = Avx2.UnpackLow(r4, r5); var t5 = Avx2.UnpackHigh(r4, r5);
            var t6 = Avx2.UnpackLow(r6, r7); var t7 = Avx2.UnpackHigh(r6, r7);
            var u0 = Avx2.UnpackLow(t0.AsInt64(), t2.AsInt64()); var u1 = Avx2.UnpackHigh(t0.AsInt64(), t2.AsInt64());
            var u2 = Avx2.UnpackLow(t1.AsInt64(), t3.AsInt64()); var u3 = Avx2.UnpackHigh(t1.AsInt64(), t3.AsInt64());
            var u4 = Avx2.UnpackLow(t4.AsInt64(), t6.AsInt64()); var u5 = Avx2.UnpackHigh(t4.AsInt64(), t6.AsInt64());
            var u6 = Avx2.UnpackLow(t5.AsInt64(), t7.AsInt64()); var u7 = Avx2.UnpackHigh(t5.AsInt64(), t7.AsInt64());
            byte* q = dst + (long)b * 256;
            // Quad j sits in the low 128 bits of u(j) for j < 4 and the high 128 bits for j ≥ 4.
            var q0 = Avx2.Permute2x128(u0, u4, 0x20); var q4 = Avx2.Permute2x128(u0, u4, 0x31);
            var q1 = Avx2.Permute2x128(u1, u5, 0x20); var q5 = Avx2.Permute2x128(u1, u5, 0x31);
            var q2 = Avx2.Permute2x128(u2, u6, 0x20); var q6 = Avx2.Permute2x128(u2, u6, 0x31);
            var q3 = Avx2.Permute2x128(u3, u7, 0x20); var q7 = Avx2.Permute2x128(u3, u7, 0x31);
            q0.Store((long*)q); q1.Store((long*)(q + 32)); q2.Store((long*)(q + 64)); q3.Store((long*)(q + 96));
            q4.Store((long*)(q + 128)); q5.Store((long*)(q + 160)); q6.Store((long*)(q + 192)); q7.Store((long*)(q + 224));
            // Σw per row: the same vpdpbusd with all-ones as the unsigned side, lane by lane.
            var sum = Vector256<int>.Zero;
            for (int j = 0; j < 8; j++) sum = Vnni.DotBytesSmall(sum, ones, Vector256.Load(q + 32 * j).AsSByte());
            Vector128.Narrow(-sum.GetLower(), -sum.GetUpper()).Store(sums + 8 * b);   // |Σw| ≤ 32·128 fits int16
            for (int r = 0; r < TileRows; r++) scales[8 * b + r] = r < count ? rows[r][b].D : (ushort)0;

            Vector256<int> Row(int r) => r < count ? Vector256.Load((int*)rows[r][b].Qs) : Vector256<int>.Zero;
        }
    }

    /// <summary>
    /// y[a][0..8) = tile · x_a for four activation rows a (quants as x + 128 at xu + a·<paramref name="xStride"/>,
    /// scales at xd + a·nb); writes <paramref name="valid"/> of the eight results of each row at y + a·<paramref name="yStride"/>.
    /// </summary>
    public static void Multiply4(byte* pack, int nb, byte* xu, long xStride, float* xd, float* y, long yStride, int valid)
    {
        var f0 = Vector256<float>.Zero;
        var f1 = Vector256<float>.Zero;
        var f2 = Vector256<float>.Zero;
        var f3 = Vector256<float>.Zero;
        ushort* scales = (ushort*)(pack + (long)nb * 256);
        short* sums = (short*)(pack + (long)nb * 272);
        for (int b = 0; b < nb; b++)
        {
            sbyte* q = (sbyte*)pack + (long)b * 256;
            var w0 = Vector256.Load(q); var w1 = Vector256.Load(q + 32); var w2 = Vector256.Load(q + 64); var w3 = Vector256.Load(q + 96);
            var w4 = Vector256.Load(q + 128); var w5 = Vector256.Load(q + 160); var w6 = Vector256.Load(q + 192); var w7 = Vector256.Load(q + 224);
            var start = Start(sums + 8 * b);
            var d = HalfToSingle(Vector128.Load(scales + 8 * b));
            int* x = (int*)(xu + 32L * b);
            Row(ref f0, x, xd[b]);
            Row(ref f1, (int*)((byte*)x + xStride), xd[nb + b]);
            Row(ref f2, (int*)((byte*)x + 2 * xStride), xd[2 * nb + b]);
            Row(ref f3, (int*)((byte*)x + 3 * xStride), xd[3 * nb + b]);

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            void Row(ref Vector256<float> f, int* xa, float dx)
            {
                var acc = Vnni.DotBytes(start, Vector256.Create(xa[0]).AsByte(), w0);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[1]).AsByte(), w1);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[2]).AsByte(), w2);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[3]).AsByte(), w3);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[4]).AsByte(), w4);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[5]).AsByte(), w5);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[6]).AsByte(), w6);
                acc = Vnni.DotBytes(acc, Vector256.Create(xa[7]).AsByte(), w7);
                f = Fma.MultiplyAdd(Avx.ConvertToVector256Single(acc), d * Vector256.Create(dx), f);
            }
        }
        Store(f0, y, valid);
        Store(f1, y + yStride, valid);
        Store(f2, y + 2 * yStride, valid);
        Store(f3, y + 3 * yStride, valid);
    }

    /// <summary>One activation row: <see cref="Multiply4"/> for the rows left over.</summary>
    public static void Multiply1(byte* pack, int nb, byte* xu, float* xd, float* y, int valid)
    {
        var f = Vector256<float>.Zero;
        ushort* scales = (ushort*)(pack + (long)nb * 256);
        short* sums = (short*)(pack + (long)nb * 272);
        for (int b = 0; b < nb; b++)
        {
            sbyte* q = (sbyte*)pack + (long)b * 256;
            QuantCommon.PrefetchAhead(q, 4);
            int* x = (int*)(xu + 32L * b);
            var acc = Vnni.DotBytes(Start(sums + 8 * b), Vector256.Create(x[0]).AsByte(), Vector256.Load(q));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[1]).AsByte(), Vector256.Load(q + 32));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[2]).AsByte(), Vector256.Load(q + 64));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[3]).AsByte(), Vector256.Load(q + 96));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[4]).AsByte(), Vector256.Load(q + 128));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[5]).AsByte(), Vector256.Load(q + 160));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[6]).AsByte(), Vector256.Load(q + 192));
            acc = Vnni.DotBytes(acc, Vector256.Create(x[7]).AsByte(), Vector256.Load(q + 224));
            f = Fma.MultiplyAdd(Avx.ConvertToVector256Single(acc), HalfToSingle(Vector128.Load(scales + 8 * b)) * Vector256.Create(xd[b]), f);
        }
        Store(f, y, valid);
    }

    /// <summary>−128·Σw of eight rows, the value each vpdpbusd sum starts at.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Start(short* sums) => Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(sums), 7);

    /// <summary>
    /// Eight fp16 → f32, exactly as <see cref="QuantCommon.H2F"/> for finite values: normals by moving the bits,
    /// subnormals as mantissa × 2^-24 (integer convert, so no denormal float arithmetic), sign or'ed back.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> HalfToSingle(Vector128<ushort> h)
    {
        var v = Avx2.ConvertToVector256Int32(h).AsUInt32();
        var magnitude = v & Vector256.Create(0x7FFFu);
        var normal = (Vector256.ShiftLeft(magnitude, 13) + Vector256.Create(112u << 23)).AsSingle();
        var subnormal = Avx.ConvertToVector256Single(magnitude.AsInt32()) * Vector256.Create(1f / 16777216f);
        var isSub = Vector256.LessThan(magnitude, Vector256.Create(0x400u)).AsSingle();
        return (Vector256.ConditionalSelect(isSub, subnormal, normal).AsUInt32() | Vector256.ShiftLeft(v & Vector256.Create(0x8000u), 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Store(Vector256<float> f, float* y, int valid)
    {
        if (valid == TileRows) f.Store(y);
        else for (int r = 0; r < valid; r++) y[r] = f.GetElement(r);
    }

    /// <summary>x + 128 as bytes (x XOR 0x80): the unsigned form of int8 activations vpdpbusd needs.</summary>
    public static void ToUnsigned(sbyte* x, byte* dst, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (var m = Vector256.Create((byte)0x80); i + 32 <= n; i += 32)
                (Vector256.Load((byte*)x + i) ^ m).Store(dst + i);
        for (; i < n; i++) dst[i] = (byte)(((byte*)x)[i] ^ 0x80);
    }
}

/// <summary>
/// A Q8_0, Q4_K, Q5_K or Q6_K matrix repacked once at load into the eight-row interleaved layout of
/// <see cref="Q8_0Tiled"/>, <see cref="Q4_KTiled"/>, <see cref="Q5_KTiled"/> or <see cref="Q6_KTiled"/> (what llama.cpp calls a CPU "repack" buffer), so decode and prefill both run the tiled
/// AVX-VNNI kernels without packing anything per call. The original rows stay valid for row access (embedding
/// lookups); when they come from a mapped file, their pages are handed back to the OS as they are repacked, so
/// resident memory holds the packed copy, not both.
/// </summary>
public sealed unsafe class RepackedWeights : IDisposable
{
    private readonly Tensors.NativeBuffer _buffer;
    public Tensors.GgmlType Type { get; }
    public int Rows { get; }
    public int Cols { get; }
    public int Tiles { get; }
    public long TileBytes { get; }

    public const int TileRows = 8;

    private RepackedWeights(Tensors.GgmlType type, int rows, int cols)
    {
        Type = type; Rows = rows; Cols = cols;
        Tiles = (rows + TileRows - 1) / TileRows;
        TileBytes = type switch
        {
            Tensors.GgmlType.Q8_0 => Q8_0Tiled.PackedBytes(cols / 32),
            Tensors.GgmlType.Q4_K => Q4_KTiled.PackedBytes(cols / 256),
            Tensors.GgmlType.Q5_K => Q5_KTiled.PackedBytes(cols / 256),
            _ => Q6_KTiled.PackedBytes(cols / 256),
        };
        _buffer = new Tensors.NativeBuffer(TileBytes * Tiles);
    }

    public byte* Tile(int t) => _buffer.Pointer + t * TileBytes;

    /// <summary>Whether models repack their matrices at load: where the tiled kernels are in use (<see cref="Vnni.Tiles"/>:
    /// AVX-VNNI, or HARPIA_VNNI=emulate); HARPIA_REPACK=0 turns it off.</summary>
    public static bool Enabled => Vnni.Tiles && Environment.GetEnvironmentVariable("HARPIA_REPACK") != "0";

    /// <summary>The types that have a repacked layout.</summary>
    public static bool Handles(Tensors.GgmlType type) =>
        type is Tensors.GgmlType.Q8_0 or Tensors.GgmlType.Q4_K or Tensors.GgmlType.Q5_K or Tensors.GgmlType.Q6_K;

    /// <summary>
    /// The types a model repacks at load. Q5_K and Q6_K tiles are checked against the row-major kernels but have not
    /// yet been timed on an AVX-VNNI machine (the one they were written on lacks it), so until they are they run
    /// only with HARPIA_REPACK=all; Q8_0 and Q4_K tiles are measured (docs/BENCHMARKS.md) and on by default.
    /// </summary>
    public static bool RepacksAtLoad(Tensors.GgmlType type) =>
        type is Tensors.GgmlType.Q8_0 or Tensors.GgmlType.Q4_K
        || (Handles(type) && Environment.GetEnvironmentVariable("HARPIA_REPACK") == "all");

    /// <summary>Repacks <paramref name="rows"/> rows of <paramref name="type"/> at <paramref name="data"/>;
    /// <paramref name="releaseSource"/> drops the source pages from this process as it goes (read-only file mappings only).</summary>
    public static RepackedWeights Create(Tensors.GgmlType type, byte* data, int rows, int cols, bool releaseSource)
    {
        if (!Handles(type)) throw new ArgumentException($"{type} has no repacked layout", nameof(type));
        var packed = new RepackedWeights(type, rows, cols);
        long rowBytes = Tensors.GgmlTypes.ByteSize(type, cols) ?? throw new ArgumentException("cols", nameof(cols));
        // Chunks of tiles in parallel; each chunk's source bytes are released when it is done.
        const int tilesPerChunk = 64;
        int chunks = (packed.Tiles + tilesPerChunk - 1) / tilesPerChunk;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = Tensors.ComputePool.Threads }, c =>
        {
            byte** src = stackalloc byte*[TileRows];
            int t0 = c * tilesPerChunk, t1 = Math.Min(packed.Tiles, t0 + tilesPerChunk);
            for (int t = t0; t < t1; t++)
            {
                int r0 = t * TileRows, count = Math.Min(TileRows, rows - r0);
                for (int i = 0; i < count; i++) src[i] = data + (r0 + i) * rowBytes;
                switch (type)
                {
                    case Tensors.GgmlType.Q8_0: Q8_0Tiled.Pack((BlockQ8_0**)src, count, cols / 32, packed.Tile(t)); break;
                    case Tensors.GgmlType.Q4_K: Q4_KTiled.Pack((BlockQ4_K**)src, count, cols / 256, packed.Tile(t)); break;
                    case Tensors.GgmlType.Q5_K: Q5_KTiled.Pack((BlockQ5_K**)src, count, cols / 256, packed.Tile(t)); break;
                    default: Q6_KTiled.Pack((BlockQ6_K**)src, count, cols / 256, packed.Tile(t)); break;
                }
            }
            if (releaseSource)
            {
                long start = (long)t0 * TileRows * rowBytes, end = Math.Min((long)rows, (long)t1 * TileRows) * rowBytes;
                Formats.PageRelease.DontNeed(data + start, end - start);
            }
        });
        return packed;
    }

    public void Dispose() => _buffer.Dispose();
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Harpia.Quantization;

namespace Harpia.Tensors;

/// <summary>
/// y = x · Wᵀ for a weight <see cref="WeightMatrix"/> [rows, cols] and activations x [n, cols] giving y [n, rows].
/// The single entry point the model uses for every linear layer; it dispatches on the weight's type.
/// Quantized weights are never dequantized as a whole: activations are quantized once per call (Q8_0 blocks for
/// Q8_0/Q4_0/Q5_0, Q8_K for k-quants) and each weight row is consumed by integer dot products. Decode (n = 1)
/// splits rows evenly over <see cref="ComputePool.Threads"/>; prefill (n &gt; 1) decodes a tile of weight rows once
/// into a per-thread buffer and reuses it for every activation row, so each weight byte is read from memory once.
/// </summary>
[SkipLocalsInit]
public static unsafe class MatMul
{
    /// <summary>Weight rows decoded together in prefill; their unpacked form stays in L2 while all n rows pass.</summary>
    internal const int PrefillRowTile = 8;

    private struct Job
    {
        public GgmlType Type;
        public byte* W;
        public long RowBytes;
        public int Rows, Cols, N;
        public float* X;           // f32 activations [n, cols]
        public sbyte* Xq;          // Q8_0 activations: quants [n, cols]
        public byte* Xu;           //                   the same quants + 128 for the tiled AVX-VNNI kernels, or null
        public byte* Packed;       // the weights repacked at load (RepackedWeights: tiles of PackedTileBytes), or null;
        public long PackedTileBytes; // then Xu is set for every n
        public float* Xd;          //                   scales [n, cols/32]
        public BlockQ8_K* Xk;      // Q8_K activations [n, cols/256]
        public float* Y;
        public SimdPath Path;
    }

    public static void Compute(WeightMatrix w, ReadOnlySpan<float> x, int n, Span<float> y)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), "n must be positive");
        if (x.Length < (long)n * w.Cols) throw new ArgumentException("x is shorter than n × cols");
        if (y.Length < (long)n * w.Rows) throw new ArgumentException("y is shorter than n × rows");
        var format = w.Type switch
        {
            GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => ActivationFormat.Float,
            _ when QuantFormats.IsSupported(w.Type) => QuantFormats.ActivationFor(w.Type),
            _ => throw new HarpiaException($"tensor '{w.Name}': matrix multiply for {w.Type} is not implemented"),
        };
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new Job
            {
                Type = w.Type, W = w.Data, RowBytes = w.RowBytes, Rows = w.Rows, Cols = w.Cols, N = n,
                X = px, Y = py, Path = SimdPaths.Active,
            };
            var scratch = ActivationScratch.ForCurrentThread();
            // Weights repacked at load always run the tiled kernels on the 256/512-bit paths (through the exact AVX2
            // emulation of AVX-VNNI where the CPU lacks it); unpacked Q8_0-family prefill packs tiles per call only
            // where the tiled kernels are in use (Vnni.Tiles).
            bool wide = Q8_0Tiled.IsSupported && job.Path is SimdPath.Vector512 or SimdPath.Vector256;
            if (wide && w.Repacked is { } repacked) { job.Packed = repacked.Tile(0); job.PackedTileBytes = repacked.TileBytes; }
            if (format == ActivationFormat.Q8_0)
            {
                bool tiled = (wide && Vnni.Tiles && n > 1) || job.Packed != null;
                long quants = (long)n * w.Cols, scales = (long)n * (w.Cols / 32) * 4;
                scratch.Reserve(quants + scales);
                job.Xq = (sbyte*)scratch.Ptr;
                job.Xd = (float*)(scratch.Ptr + quants);
                // The tiled kernels read only the unsigned form, so it replaces the signed quants in place.
                if (tiled) job.Xu = scratch.Ptr;
                QuantizeActivations(&job, format);
            }
            else if (format == ActivationFormat.Q8_K)
            {
                scratch.Reserve((long)n * (w.Cols / 256) * BlockQ8_K.Bytes);
                job.Xk = (BlockQ8_K*)scratch.Ptr;
                QuantizeActivations(&job, format);
            }
            if (n == 1 && job.Packed != null)
            {
                int tiles = (w.Rows + Q8_0Tiled.TileRows - 1) / Q8_0Tiled.TileRows;
                ComputePool.For(tiles, ComputePool.ChunkCount(tiles, 2), &DecodePackedTiles, &job);
            }
            else if (n == 1)
                ComputePool.For(w.Rows, ComputePool.ChunkCount(w.Rows, 16), &DecodeRows, &job);
            else
            {
                int tiles = (w.Rows + PrefillRowTile - 1) / PrefillRowTile;
                ComputePool.For(tiles, ComputePool.ChunkCount(tiles, 1), &PrefillTiles, &job);
            }
            GC.KeepAlive(w);
            GC.KeepAlive(w.Repacked);
        }
    }

    private static void QuantizeActivations(Job* job, ActivationFormat format)
    {
        if (job->N >= 4) ComputePool.For(job->N, ComputePool.ChunkCount(job->N, 2), &QuantizeActivationRows, job);
        else QuantizeActivationRows(job, 0, job->N);
    }

    private static void QuantizeActivationRows(void* state, int i0, int i1)
    {
        var job = (Job*)state;
        int cols = job->Cols;
        for (int i = i0; i < i1; i++)
        {
            if (job->Xk != null) Q8_K.Quantize(job->X + (long)i * cols, job->Xk + (long)i * (cols / 256), cols / 256, job->Path);
            else
            {
                Q8Activations.Quantize(job->X + (long)i * cols, cols, job->Xq + (long)i * cols, job->Xd + (long)i * (cols / 32));
                if (job->Xu != null) Q8_0Tiled.ToUnsigned(job->Xq + (long)i * cols, job->Xu + (long)i * cols, cols);
            }
        }
    }

    /// <summary>Matrix × vector over rows [r0, r1).</summary>
    private static void DecodeRows(void* state, int r0, int r1)
    {
        var job = (Job*)state;
        int cols = job->Cols;
        for (int r = r0; r < r1; r++)
        {
            byte* row = job->W + r * job->RowBytes;
            job->Y[r] = job->Type switch
            {
                GgmlType.F32 => System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(row, cols), new ReadOnlySpan<float>(job->X, cols)),
                GgmlType.BF16 => DotBF16((ushort*)row, job->X, cols, job->Path),
                GgmlType.F16 => DotF16((Half*)row, job->X, cols),
                GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0 => QuantFormats.DotRowQ8(job->Type, row, cols / 32, job->Xq, job->Xd, job->Path),
                _ => QuantFormats.DotRowK(job->Type, row, cols / 256, job->Xk, job->Path),
            };
        }
    }

    /// <summary>Matrix × vector over tiles [t0, t1) of a matrix repacked at load.</summary>
    private static void DecodePackedTiles(void* state, int t0, int t1)
    {
        var job = (Job*)state;
        int nb = job->Cols / 32;
        for (int t = t0; t < t1; t++)
        {
            byte* tile = job->Packed + t * job->PackedTileBytes;
            int valid = Math.Min(Q8_0Tiled.TileRows, job->Rows - t * Q8_0Tiled.TileRows);
            float* y = job->Y + t * Q8_0Tiled.TileRows;
            switch (job->Type)
            {
                case GgmlType.Q4_K: Q4_KTiled.Multiply1(tile, job->Cols / 256, job->Xk, y, valid); break;
                case GgmlType.Q5_K: Q5_KTiled.Multiply1(tile, job->Cols / 256, job->Xk, y, valid); break;
                case GgmlType.Q6_K: Q6_KTiled.Multiply1(tile, job->Cols / 256, job->Xk, y, valid); break;
                default: Q8_0Tiled.Multiply1(tile, nb, job->Xu, job->Xd, y, valid); break;
            }
        }
    }

    /// <summary>One tile of a k-quant (Q4_K, Q5_K, Q6_K) matrix repacked at load: four activation rows at a time, then
    /// the rest one by one.</summary>
    private static void PackedKTile(Job* job, int t)
    {
        int nsb = job->Cols / 256, n = job->N, rows = job->Rows, r0 = t * Q4_KTiled.TileRows;
        int valid = Math.Min(Q4_KTiled.TileRows, rows - r0);
        byte* tile = job->Packed + t * job->PackedTileBytes;
        var type = job->Type;
        int i = 0;
        for (; i + 4 <= n; i += 4)
        {
            BlockQ8_K* x = job->Xk + (long)i * nsb;
            float* y = job->Y + (long)i * rows + r0;
            if (type == GgmlType.Q4_K) Q4_KTiled.Multiply4(tile, nsb, x, nsb, y, rows, valid);
            else if (type == GgmlType.Q5_K) Q5_KTiled.Multiply4(tile, nsb, x, nsb, y, rows, valid);
            else Q6_KTiled.Multiply4(tile, nsb, x, nsb, y, rows, valid);
        }
        for (; i < n; i++)
        {
            BlockQ8_K* x = job->Xk + (long)i * nsb;
            float* y = job->Y + (long)i * rows + r0;
            if (type == GgmlType.Q4_K) Q4_KTiled.Multiply1(tile, nsb, x, y, valid);
            else if (type == GgmlType.Q5_K) Q5_KTiled.Multiply1(tile, nsb, x, y, valid);
            else Q6_KTiled.Multiply1(tile, nsb, x, y, valid);
        }
    }

    /// <summary>Matrix × matrix over weight-row tiles [t0, t1): decode each tile once, reuse it for all n rows.</summary>
    private static void PrefillTiles(void* state, int t0, int t1)
    {
        var job = (Job*)state;
        int cols = job->Cols, n = job->N, rows = job->Rows;
        var format = job->Xk != null ? ActivationFormat.Q8_K : job->Xq != null ? ActivationFormat.Q8_0 : ActivationFormat.Float;
        long perRow = format switch
        {
            ActivationFormat.Q8_K => (long)(cols / 256) * sizeof(KUnpacked),
            ActivationFormat.Q8_0 => (long)(cols / 32) * BlockQ8_0.Bytes,
            _ => (long)cols * sizeof(float),
        };
        var scratch = TileScratch.ForCurrentThread();
        scratch.Reserve(perRow * PrefillRowTile);
        float* r4 = stackalloc float[4];
        for (int t = t0; t < t1; t++)
        {
            if (job->Packed != null && job->Type is GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K)
            {
                PackedKTile(job, t);
                continue;
            }
            int r0 = t * PrefillRowTile, r1 = Math.Min(rows, r0 + PrefillRowTile);
            for (int r = r0; r < r1; r++)
            {
                byte* row = job->W + r * job->RowBytes;
                byte* dst = scratch.Ptr + (r - r0) * perRow;
                // The same row of the next tile is fetched while this tile computes: decode-then-compute is bursty,
                // and the hardware prefetcher alone left the unpack waiting on DRAM (n = 4 ran slower than 4 decodes).
                if (job->Packed == null && r + PrefillRowTile < rows)
                    for (long b = 0; b < job->RowBytes; b += 64) Prefetch(row + PrefillRowTile * job->RowBytes + b);
                if (format == ActivationFormat.Q8_K)
                    for (int sb = 0; sb < cols / 256; sb++) QuantFormats.UnpackK(job->Type, row, sb, (KUnpacked*)dst + sb);
                else if (format == ActivationFormat.Q8_0)
                {
                    if (job->Type != GgmlType.Q8_0) QuantFormats.UnpackQ8(job->Type, row, 0, cols / 32, (BlockQ8_0*)dst);
                }
                else Widen(job->Type, new ReadOnlySpan<byte>(row, checked((int)job->RowBytes)), new Span<float>(dst, cols));
            }
            if (job->Xu != null)
            {
                TiledQ8(job, scratch.Ptr, perRow, r0, r1);
                continue;
            }
            int i0 = 0;
            if (format == ActivationFormat.Q8_K && job->Path == SimdPath.Vector512 && Avx512BW.IsSupported)
            {
                // Register-blocked: four activation rows per pass over each decoded weight row.
                int nsb = cols / 256;
                for (; i0 + 4 <= n; i0 += 4)
                    for (int r = r0; r < r1; r++)
                    {
                        KQuantDot.Dot4x512((KUnpacked*)(scratch.Ptr + (r - r0) * perRow), nsb, job->Xk + (long)i0 * nsb, nsb, r4);
                        for (int a = 0; a < 4; a++) job->Y[(long)(i0 + a) * rows + r] = r4[a];
                    }
            }
            else if (format == ActivationFormat.Q8_0 && job->Path is SimdPath.Vector512 or SimdPath.Vector256 && Avx2.IsSupported && Fma.IsSupported)
            {
                int nb = cols / 32;
                for (; i0 + 4 <= n; i0 += 4)
                    for (int r = r0; r < r1; r++)
                    {
                        var wrow = job->Type == GgmlType.Q8_0 ? (BlockQ8_0*)(job->W + r * job->RowBytes) : (BlockQ8_0*)(scratch.Ptr + (r - r0) * perRow);
                        Q8_0.Dot4x256(wrow, job->Xq + (long)i0 * cols, job->Xd + (long)i0 * nb, nb, r4);
                        for (int a = 0; a < 4; a++) job->Y[(long)(i0 + a) * rows + r] = r4[a];
                    }
            }
            for (int i = i0; i < n; i++)
            {
                float* yi = job->Y + (long)i * rows;
                for (int r = r0; r < r1; r++)
                {
                    byte* u = scratch.Ptr + (r - r0) * perRow;
                    yi[r] = format switch
                    {
                        ActivationFormat.Q8_K => DotUnpackedK((KUnpacked*)u, job->Xk + (long)i * (cols / 256), cols / 256, job->Path),
                        ActivationFormat.Q8_0 => Q8_0.Dot(job->Type == GgmlType.Q8_0 ? (BlockQ8_0*)(job->W + r * job->RowBytes) : (BlockQ8_0*)u,
                            job->Xq + (long)i * cols, job->Xd + (long)i * (cols / 32), cols / 32, job->Path),
                        _ => System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(u, cols), new ReadOnlySpan<float>(job->X + (long)i * cols, cols)),
                    };
                }
            }
        }
    }

    /// <summary>One tile of the Q8_0 family through <see cref="Q8_0Tiled"/>: pack the (≤ 8) rows, then all n activation rows.</summary>
    private static void TiledQ8(Job* job, byte* unpacked, long perRow, int r0, int r1)
    {
        int cols = job->Cols, n = job->N, rows = job->Rows, nb = cols / 32, count = r1 - r0;
        byte* tile;
        if (job->Packed != null) tile = job->Packed + (r0 / Q8_0Tiled.TileRows) * job->PackedTileBytes;
        else
        {
            BlockQ8_0** src = stackalloc BlockQ8_0*[Q8_0Tiled.TileRows];
            for (int r = r0; r < r1; r++)
                src[r - r0] = job->Type == GgmlType.Q8_0 ? (BlockQ8_0*)(job->W + r * job->RowBytes) : (BlockQ8_0*)(unpacked + (r - r0) * perRow);
            var pack = PackScratch.ForCurrentThread();
            pack.Reserve(Q8_0Tiled.PackedBytes(nb));
            Q8_0Tiled.Pack(src, count, nb, pack.Ptr);
            tile = pack.Ptr;
        }
        int i = 0;
        for (; i + 4 <= n; i += 4)
            Q8_0Tiled.Multiply4(tile, nb, job->Xu + (long)i * cols, cols, job->Xd + (long)i * nb, job->Y + (long)i * rows + r0, rows, count);
        for (; i < n; i++)
            Q8_0Tiled.Multiply1(tile, nb, job->Xu + (long)i * cols, job->Xd + (long)i * nb, job->Y + (long)i * rows + r0, count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(byte* p)
    {
        if (Sse.IsSupported) Sse.Prefetch0(p);
    }

    private static float DotUnpackedK(KUnpacked* u, BlockQ8_K* x, int nsb, SimdPath path)
    {
        float sum = 0;
        for (int sb = 0; sb < nsb; sb++) sum += KQuantDot.Dot(u + sb, x + sb, path);
        return sum;
    }

    /// <summary>bf16 · f32 without a row buffer: widen 16 bf16 to f32 in registers (shift left 16) and FMA. The width
    /// follows <paramref name="path"/> (the 512-, 256- and 128-bit loops each run under tests); the tail is scalar.</summary>
    internal static float DotBF16(ushort* w, float* x, int n, SimdPath path)
    {
        int i = 0;
        float sum = 0;
        if (path == SimdPath.Vector512 && Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            var acc2 = Vector512<float>.Zero;
            var acc3 = Vector512<float>.Zero;
            // 64 bf16 (two cache lines) per step, four independent FMA chains.
            for (; i + 64 <= n; i += 64)
            {
                var w0 = Vector512.Load(w + i);
                var w1 = Vector512.Load(w + i + 32);
                acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(w0.GetLower()), 16).AsSingle(), Vector512.Load(x + i), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(w0.GetUpper()), 16).AsSingle(), Vector512.Load(x + i + 16), acc1);
                acc2 = Avx512F.FusedMultiplyAdd(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(w1.GetLower()), 16).AsSingle(), Vector512.Load(x + i + 32), acc2);
                acc3 = Avx512F.FusedMultiplyAdd(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(w1.GetUpper()), 16).AsSingle(), Vector512.Load(x + i + 48), acc3);
            }
            for (; i + 16 <= n; i += 16)
                acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(w + i)), 16).AsSingle(), Vector512.Load(x + i), acc0);
            acc1 += acc3;
            acc0 += acc2;
            sum = Vector512.Sum(acc0 + acc1);
        }
        else if (path is SimdPath.Vector512 or SimdPath.Vector256 && Avx2.IsSupported && Fma.IsSupported)
        {
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                var a = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.Load(w + i)), 16).AsSingle();
                acc = Fma.MultiplyAdd(a, Vector256.Load(x + i), acc);
            }
            sum = Vector256.Sum(acc);
        }
        else if (path != SimdPath.Scalar && Vector128.IsHardwareAccelerated)
        {
            var acc = Vector128<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                var v = Vector128.Load(w + i);
                var (lo, hi) = Vector128.Widen(v);
                acc += Vector128.ShiftLeft(lo, 16).AsSingle() * Vector128.Load(x + i);
                acc += Vector128.ShiftLeft(hi, 16).AsSingle() * Vector128.Load(x + i + 4);
            }
            sum = Vector128.Sum(acc);
        }
        for (; i < n; i++) sum += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return sum;
    }

    /// <summary>f16 · f32: widen 256 at a time into a stack buffer (vectorized conversion) and dot.</summary>
    internal static float DotF16(Half* w, float* x, int n)
    {
        const int chunk = 256;
        float* buf = stackalloc float[chunk];
        float sum = 0;
        for (int i = 0; i < n; i += chunk)
        {
            int m = Math.Min(chunk, n - i);
            System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(w + i, m), new Span<float>(buf, m));
            sum += System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(buf, m), new ReadOnlySpan<float>(x + i, m));
        }
        return sum;
    }

    /// <summary>Decodes row <paramref name="row"/> of <paramref name="w"/> to f32 (embedding lookups, tests).</summary>
    public static void DequantizeRow(WeightMatrix w, int row, Span<float> dst)
    {
        if ((uint)row >= (uint)w.Rows) throw new ArgumentOutOfRangeException(nameof(row));
        if (dst.Length < w.Cols) throw new ArgumentException("dst is shorter than a row", nameof(dst));
        switch (w.Type)
        {
            case GgmlType.F32:
            case GgmlType.F16:
            case GgmlType.BF16:
                Widen(w.Type, w.Row(row), dst[..w.Cols]);
                break;
            default:
                if (!QuantFormats.IsSupported(w.Type))
                    throw new HarpiaException($"tensor '{w.Name}': decoding {w.Type} rows is not implemented");
                QuantFormats.Dequantize(w.Type, w.Row(row), dst[..w.Cols]);
                break;
        }
    }

    /// <summary>Widens a row of F16 or BF16 to f32.</summary>
    public static void Widen(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (type == GgmlType.F16)
            System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src)[..dst.Length], dst);
        else if (type == GgmlType.BF16)
        {
            var b = MemoryMarshal.Cast<byte, ushort>(src);
            int i = 0;
            if (Vector128.IsHardwareAccelerated)
                fixed (ushort* pb = b)
                fixed (float* pd = dst)
                    for (; i + 8 <= dst.Length; i += 8)
                    {
                        var (lo, hi) = Vector128.Widen(Vector128.Load(pb + i));
                        Vector128.ShiftLeft(lo, 16).AsSingle().Store(pd + i);
                        Vector128.ShiftLeft(hi, 16).AsSingle().Store(pd + i + 4);
                    }
            for (; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle(b[i] << 16);
        }
        else if (type == GgmlType.F32) MemoryMarshal.Cast<byte, float>(src)[..dst.Length].CopyTo(dst);
        else throw new HarpiaException($"cannot widen {type}");
    }

    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b) =>
        System.Numerics.Tensors.TensorPrimitives.Dot(a, b);

    /// <summary>A growable native buffer owned by one thread (activation quantization, prefill tiles).</summary>
    private sealed class NativeScratch
    {
        public byte* Ptr;
        private long _size;

        public void Reserve(long bytes)
        {
            if (bytes <= _size) return;
            if (Ptr != null) NativeMemory.AlignedFree(Ptr);
            Ptr = null; _size = 0;
            Ptr = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            _size = bytes;
        }

        ~NativeScratch()
        {
            if (Ptr != null) NativeMemory.AlignedFree(Ptr);
        }
    }

    private static class ActivationScratch
    {
        [ThreadStatic] private static NativeScratch? _s;
        public static NativeScratch ForCurrentThread() => _s ??= new NativeScratch();
    }

    private static class PackScratch
    {
        [ThreadStatic] private static NativeScratch? _s;
        public static NativeScratch ForCurrentThread() => _s ??= new NativeScratch();
    }

    private static class TileScratch
    {
        [ThreadStatic] private static NativeScratch? _s;
        public static NativeScratch ForCurrentThread() => _s ??= new NativeScratch();
    }
}

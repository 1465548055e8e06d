using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Harpia.Backends.Cuda.Kernels;

/// <summary>
/// y[n, rows] = x[n, cols] · Wᵀ straight from the GGUF blocks. Kernels are grid-stride loops, so any launch size
/// is correct: a GPU gets many groups, ILGPU's CPU accelerator (tests) a few.
/// </summary>
public static class LinearKernels
{
    /// <summary>Tokens whose partial sums one warp keeps in registers while it streams a weight row.</summary>
    public const int TokenTile = 4;

    /// <summary>
    /// Decode and small batches: one warp per weight row (grid-stride over rows). Lane l decodes the 8-weight chunks
    /// l, l + 32, … of the row — neighbouring lanes read neighbouring bytes, so a warp's loads coalesce — and
    /// multiplies each decoded chunk with up to <see cref="TokenTile"/> activation rows before the next chunk, so
    /// the weights are read once per tile of tokens. The lane sums are reduced with warp shuffles.
    /// </summary>
    public static void MatVec(ArrayView<byte> w, ArrayView<uint> words, long rowBytes, int rows, int cols, int type,
        ArrayView<float> x, int n, ArrayView<float> y)
    {
        DeviceQuant.Geometry(type, out int blockSize, out int blockBytes);
        int warpsPerGroup = Group.DimX / Warp.WarpSize;
        int firstWarp = Grid.IdxX * warpsPerGroup + Warp.WarpIdx;
        int totalWarps = Grid.DimX * warpsPerGroup;
        int lane = Warp.LaneIdx;
        int chunks = cols / 8;
        for (int r = firstWarp; r < rows; r += totalWarps)
        {
            long rowStart = r * rowBytes;
            for (int t0 = 0; t0 < n; t0 += TokenTile)
            {
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                int tokens = n - t0 < TokenTile ? n - t0 : TokenTile;
                for (int c = lane; c < chunks; c += Warp.WarpSize)
                {
                    int e = c * 8;
                    var v = DeviceQuant.Decode8(type, w, words, rowStart + (long)(e / blockSize) * blockBytes, e % blockSize);
                    long xo = (long)t0 * cols + e;
                    s0 += v.Dot(x, xo);
                    if (tokens > 1) s1 += v.Dot(x, xo + cols);
                    if (tokens > 2) s2 += v.Dot(x, xo + 2L * cols);
                    if (tokens > 3) s3 += v.Dot(x, xo + 3L * cols);
                }
                s0 = WarpSum(s0);
                if (tokens > 1) s1 = WarpSum(s1);   // tokens is warp-uniform, so every lane shuffles alike
                if (tokens > 2) s2 = WarpSum(s2);
                if (tokens > 3) s3 = WarpSum(s3);
                if (lane == 0)
                {
                    y[(long)t0 * rows + r] = s0;
                    if (tokens > 1) y[(long)(t0 + 1) * rows + r] = s1;
                    if (tokens > 2) y[(long)(t0 + 2) * rows + r] = s2;
                    if (tokens > 3) y[(long)(t0 + 3) * rows + r] = s3;
                }
            }
        }
    }

    /// <summary>Sum over the warp's lanes, left in every lane (butterfly).</summary>
    public static float WarpSum(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2) v += Warp.ShuffleXor(v, o);
        return v;
    }

    public static float WarpMax(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2)
        {
            float other = Warp.ShuffleXor(v, o);
            v = other > v ? other : v;
        }
        return v;
    }

    // ---- prefill / batched decode: tiles on tensor cores -----------------------------------------------------------

    /// <summary>Output tile of one group: 64 weight rows × 32 tokens, four warps, each 16 rows × 32 tokens (four m16n8 fragments).</summary>
    public const int TileRows = 64, TileTokens = 32, TileK = 32, TileThreads = 128;

    /// <summary>
    /// y[n, rows] = x · Wᵀ by 64×32 output tiles (grid-stride over tiles). Per K step of 32 the group decodes a
    /// 64×32 weight tile from the blocks into shared memory as f16 and converts a 32×32 activation tile to f16 beside
    /// it; each warp then multiplies its 16 weight rows with the 32 tokens as m16n8k16 MMAs (f16 inputs, f32
    /// accumulators). On an NVIDIA GPU <paramref name="useMma"/> issues <c>mma.sync</c> (inline PTX); elsewhere, and
    /// when it is 0, <see cref="MmaTwin"/> computes the same fragments with the same f16-rounded inputs in plain C#
    /// — the CPU accelerator runs that twin in CI, and it checks the tiling, the decode into shared memory and the
    /// fragment layout (which lane holds which output) that the PTX path shares.
    /// </summary>
    public static void MatMulTiled(ArrayView<byte> w, ArrayView<uint> words, long rowBytes, int rows, int cols, int type,
        ArrayView<float> x, int n, ArrayView<float> y, int useMma)
    {
        // f16 bits; rows padded by 8 halves (16 bytes) against bank conflicts on the fragment loads.
        const int Stride = TileK + 8;
        var wTile = SharedMemory.Allocate<ushort>(TileRows * Stride);
        var xTile = SharedMemory.Allocate<ushort>(TileTokens * Stride);
        DeviceQuant.Geometry(type, out int blockSize, out int blockBytes);
        int tid = Group.IdxX, warp = tid / 32, lane = tid % 32;
        int group = lane / 4, quad = lane % 4;   // the PTX fragment coordinates: groupID and threadID_in_group
        int rowTiles = (rows + TileRows - 1) / TileRows, tokenTiles = (n + TileTokens - 1) / TileTokens;
        for (int tile = Grid.IdxX; tile < rowTiles * tokenTiles; tile += Grid.DimX)
        {
            int r0 = tile % rowTiles * TileRows, t0 = tile / rowTiles * TileTokens;
            // acc[f][i]: fragment f (tokens 8f..8f+8) of this warp's 16 rows; i as in the m16n8 C layout.
            float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
            float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
            for (int k0 = 0; k0 < cols; k0 += TileK)
            {
                // Decode: 64 rows × 4 chunks of 8 = 256 chunks over 128 threads; convert: 32 tokens × 32 values.
                for (int c = tid; c < TileRows * (TileK / 8); c += TileThreads)
                {
                    int rr = c / (TileK / 8), e = k0 + c % (TileK / 8) * 8;
                    int row = r0 + rr;
                    Float8 v = default;
                    if (row < rows)
                        v = DeviceQuant.Decode8(type, w, words, row * rowBytes + (long)(e / blockSize) * blockBytes, e % blockSize);
                    int o = rr * Stride + c % (TileK / 8) * 8;
                    for (int j = 0; j < 8; j++) wTile[o + j] = DeviceQuant.FloatToHalf(v[j]);
                }
                for (int c = tid; c < TileTokens * TileK; c += TileThreads)
                {
                    int tt = c / TileK, kk = c % TileK;
                    StoreHalf(xTile, tt * Stride + kk, t0 + tt < n ? x[(long)(t0 + tt) * cols + k0 + kk] : 0f);
                }
                Group.Barrier();
                int wr = warp * 16;
                for (int kk = 0; kk < TileK; kk += 16)
                {
                    if (useMma != 0 && CudaAsm.IsSupported)
                    {
                        MmaPtx(wTile, xTile, Stride, wr, 0, kk, group, quad, ref a00, ref a01, ref a02, ref a03);
                        MmaPtx(wTile, xTile, Stride, wr, 8, kk, group, quad, ref a10, ref a11, ref a12, ref a13);
                        MmaPtx(wTile, xTile, Stride, wr, 16, kk, group, quad, ref a20, ref a21, ref a22, ref a23);
                        MmaPtx(wTile, xTile, Stride, wr, 24, kk, group, quad, ref a30, ref a31, ref a32, ref a33);
                    }
                    else
                    {
                        MmaTwin(wTile, xTile, Stride, wr, 0, kk, group, quad, ref a00, ref a01, ref a02, ref a03);
                        MmaTwin(wTile, xTile, Stride, wr, 8, kk, group, quad, ref a10, ref a11, ref a12, ref a13);
                        MmaTwin(wTile, xTile, Stride, wr, 16, kk, group, quad, ref a20, ref a21, ref a22, ref a23);
                        MmaTwin(wTile, xTile, Stride, wr, 24, kk, group, quad, ref a30, ref a31, ref a32, ref a33);
                    }
                }
                Group.Barrier();
            }
            // C fragment: c0,c1 at (row group, tokens 2·quad, 2·quad+1); c2,c3 at row group + 8.
            int rowA = r0 + warp * 16 + group, rowB = rowA + 8;
            StorePair(y, rows, n, rowA, rowB, t0 + 2 * quad, a00, a01, a02, a03);
            StorePair(y, rows, n, rowA, rowB, t0 + 8 + 2 * quad, a10, a11, a12, a13);
            StorePair(y, rows, n, rowA, rowB, t0 + 16 + 2 * quad, a20, a21, a22, a23);
            StorePair(y, rows, n, rowA, rowB, t0 + 24 + 2 * quad, a30, a31, a32, a33);
        }
    }

    private static void StoreHalf(ArrayView<ushort> tile, int o, float v) => tile[o] = DeviceQuant.FloatToHalf(v);

    private static void StorePair(ArrayView<float> y, int rows, int n, int rowA, int rowB, int token, float c0, float c1, float c2, float c3)
    {
        if (token < n)
        {
            if (rowA < rows) y[(long)token * rows + rowA] = c0;
            if (rowB < rows) y[(long)token * rows + rowB] = c2;
        }
        if (token + 1 < n)
        {
            if (rowA < rows) y[(long)(token + 1) * rows + rowA] = c1;
            if (rowB < rows) y[(long)(token + 1) * rows + rowB] = c3;
        }
    }

    private static float H(ArrayView<ushort> tile, int o) => DeviceQuant.HalfToFloat(tile[o]);

    /// <summary>
    /// The C# twin of one m16n8k16 MMA: this lane's four accumulators (rows <c>wr + group</c> and <c>+ 8</c>, tokens
    /// <c>tok + 2·quad</c> and <c>+ 1</c>) gain Σₖ W[row, kk + k]·X[token, kk + k] over 16 k, from the same f16 tiles.
    /// </summary>
    public static void MmaTwin(ArrayView<ushort> wTile, ArrayView<ushort> xTile, int stride, int wr, int tok, int kk, int group, int quad,
        ref float c0, ref float c1, ref float c2, ref float c3)
    {
        int ra = (wr + group) * stride + kk, rb = ra + 8 * stride;
        int ta = (tok + 2 * quad) * stride + kk, tb = ta + stride;
        for (int k = 0; k < 16; k++)
        {
            float wa = H(wTile, ra + k), wb = H(wTile, rb + k), xa = H(xTile, ta + k), xb = H(xTile, tb + k);
            c0 += wa * xa; c1 += wa * xb; c2 += wb * xa; c3 += wb * xb;
        }
    }

    private static uint Pair(ArrayView<ushort> tile, int o) => tile[o] | ((uint)tile[o + 1] << 16);

    /// <summary>
    /// One <c>mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32</c> on tensor cores. Fragments per the PTX ISA:
    /// A (16×16, row-major) a0 = (group, 2q..2q+1), a1 = (group + 8, 2q..), a2 = (group, 2q + 8..), a3 = (group + 8, 2q + 8..);
    /// B (16×8, column = token) b0 = (k 2q..2q+1, token group), b1 = (k 2q + 8.., token group).
    /// ILGPU's inline PTX returns one value per statement, so the four f32 results come back as two 64-bit pairs
    /// (two MMAs on the same inputs: tensor throughput halves, which prefill can afford; decode does not use tiles).
    /// </summary>
    private static void MmaPtx(ArrayView<ushort> wTile, ArrayView<ushort> xTile, int stride, int wr, int tok, int kk, int group, int quad,
        ref float c0, ref float c1, ref float c2, ref float c3)
    {
        int ra = (wr + group) * stride + kk + 2 * quad, rb = ra + 8 * stride;
        uint a0 = Pair(wTile, ra), a1 = Pair(wTile, rb), a2 = Pair(wTile, ra + 8), a3 = Pair(wTile, rb + 8);
        int tb = (tok + group) * stride + kk + 2 * quad;
        uint b0 = Pair(xTile, tb), b1 = Pair(xTile, tb + 8);
        uint cl = Interop.FloatAsInt(c0), ch = Interop.FloatAsInt(c1);
        CudaAsm.Emit("{ .reg .f32 d<4>, z; mov.b32 z, 0f00000000; " +
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {d0, d1, d2, d3}, {%1, %2, %3, %4}, {%5, %6}, {%7, %8, z, z}; " +
            "mov.b64 %0, {d0, d1}; }", out ulong low, a0, a1, a2, a3, b0, b1, cl, ch);
        cl = Interop.FloatAsInt(c2); ch = Interop.FloatAsInt(c3);
        CudaAsm.Emit("{ .reg .f32 d<4>, z; mov.b32 z, 0f00000000; " +
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {d0, d1, d2, d3}, {%1, %2, %3, %4}, {%5, %6}, {z, z, %7, %8}; " +
            "mov.b64 %0, {d2, d3}; }", out ulong high, a0, a1, a2, a3, b0, b1, cl, ch);
        c0 = Interop.IntAsFloat((uint)low); c1 = Interop.IntAsFloat((uint)(low >> 32));
        c2 = Interop.IntAsFloat((uint)high); c3 = Interop.IntAsFloat((uint)(high >> 32));
    }
}

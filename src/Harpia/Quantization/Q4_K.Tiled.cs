using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Q4_K repacked at load, eight rows interleaved, for AVX-VNNI (the k-quant sibling of <see cref="Q8_0Tiled"/>).
/// One super-block (256 columns) of an eight-row tile:
/// <code>
/// [0, 1024)     32 registers m: [row0 b0..b3 | row1 b0..b3 | … | row7 b0..b3], byte i of a row holding the 4-bit
///               levels of columns 8m+i (low nibble) and 8m+4+i (high nibble)
/// [1024, 1088)  6-bit scale of each 32-column group g, [g][row]
/// [1088, 1152)  6-bit min of each group, as pairs: [g/2][row][g even, g odd] (an int16 pair per row once widened)
/// [1152, 1168)  d [row] (fp16)      [1168, 1184)  dmin [row] (fp16)
/// </code>
/// The levels are unsigned, so vpdpbusd takes them directly against four broadcast activation bytes and sums eight
/// rows per lane; each group's integer sum is scaled by its 6-bit scale (vpmulld), the mins meet the activation
/// group sums two groups at a time in vpdpwssd, and only then, once per super-block and eight rows, goes through f32. 1184 bytes against 8 × 144 in
/// the file (2.8 % more), for ~40 µops per row and super-block against ~85 in the row-major fused kernel. Integer
/// sums are exact; f32 accumulation runs per super-block, so results equal <see cref="Q4_K"/>'s reference dot to
/// f32 rounding. Scalar reference: <see cref="KQuantDot.ScaledScalar"/> over <see cref="Q4_K.Unpack"/>.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q4_KTiled
{
    public const int TileRows = 8, SuperBlockBytes = 1184;

    /// <summary>Whether this machine runs the tiled k-quant kernels: AVX2 + FMA, with vpdpbusd/vpdpwssd where AVX-VNNI
    /// is there and their AVX2 equivalents otherwise (see <see cref="Vnni(Vector256{int}, Vector256{byte}, Vector256{sbyte})"/>).</summary>
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    public static long PackedBytes(int nsb) => (long)nsb * SuperBlockBytes;

    /// <summary>Packs <paramref name="count"/> (≤ 8) Q4_K rows of <paramref name="nsb"/> super-blocks; missing rows are zero.</summary>
    public static void Pack(BlockQ4_K** rows, int count, int nsb, byte* dst)
    {
        byte* levels = stackalloc byte[256];
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* t = dst + (long)sb * SuperBlockBytes;
            new Span<byte>(t, SuperBlockBytes).Clear();
            for (int r = 0; r < count; r++)
            {
                var block = rows[r] + sb;
                // Element order: chunk j's low nibbles are columns 64j..64j+31, its high nibbles 64j+32..64j+63.
                for (int j = 0; j < 4; j++) KQuantDot.Nibbles32(block->Qs + 32 * j, levels + 64 * j);
                for (int m = 0; m < 32; m++)
                    for (int i = 0; i < 4; i++)
                        t[32 * m + 4 * r + i] = (byte)(levels[8 * m + i] | (levels[8 * m + 4 + i] << 4));
                var sm = Q4_K.ScalesAndMins(block->Scales);
                for (int g = 0; g < 8; g++)
                {
                    t[1024 + 8 * g + r] = sm.GetElement(g);
                    t[1088 + 16 * (g / 2) + 2 * r + (g & 1)] = sm.GetElement(8 + g);
                }
                ((ushort*)(t + 1152))[r] = block->D;
                ((ushort*)(t + 1168))[r] = block->DMin;
            }
        }
    }

    /// <summary>y[0..valid) = tile · x for one activation row (Q8_K, <paramref name="nsb"/> blocks).</summary>
    public static void Multiply1(byte* tile, int nsb, BlockQ8_K* x, float* y, int valid)
    {
        var f = Vector256<float>.Zero;
        var fm = Vector256<float>.Zero;
        var mask = Vector256.Create((byte)0x0F);
        for (int sb = 0; sb < nsb; sb++, x++)
        {
            byte* t = tile + (long)sb * SuperBlockBytes;
            QuantCommon.PrefetchAhead(t, 19);   // this super-block's 1184 bytes, PrefetchBytes ahead
            int* xq = (int*)x->Qs;
            var total = Vector256<int>.Zero;
            Vector256<int> mins;
            for (int g = 0; g < 8; g++)
            {
                var group = Vector256<int>.Zero;
                for (int k = 0; k < 4; k++)
                {
                    int m = 4 * g + k;
                    var v = Vector256.Load(t + 32 * m);
                    group = Vnni(group, v & mask, Vector256.Create(xq[2 * m]).AsSByte());
                    group = Vnni(group, Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & mask, Vector256.Create(xq[2 * m + 1]).AsSByte());
                }
                total += Avx2.MultiplyLow(group, Avx2.ConvertToVector256Int32(t + 1024 + 8 * g));
            }
            mins = Mins(t + 1088, x);
            var dx = Vector256.Create(x->D);
            f = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + 1152))) * dx, f);
            fm = Fma.MultiplyAdd(Avx.ConvertToVector256Single(mins), Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + 1168))) * dx, fm);
        }
        Q8_0Tiled.Store(f - fm, y, valid);
    }

    /// <summary>
    /// Four activation rows (row a at x + a·<paramref name="xStride"/> blocks) against one tile; results of row a at
    /// y + a·<paramref name="yStride"/>. The nibble split and the scale widening are shared by the four rows.
    /// </summary>
    public static void Multiply4(byte* tile, int nsb, BlockQ8_K* x, long xStride, float* y, long yStride, int valid)
    {
        var f0 = Vector256<float>.Zero; var f1 = Vector256<float>.Zero; var f2 = Vector256<float>.Zero; var f3 = Vector256<float>.Zero;
        var mask = Vector256.Create((byte)0x0F);
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* t = tile + (long)sb * SuperBlockBytes;
            BlockQ8_K* x0 = x + sb, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride;
            Vector256<int> t0 = default, t1 = default, t2 = default, t3 = default;
            for (int g = 0; g < 8; g++)
            {
                Vector256<int> g0 = default, g1 = default, g2 = default, g3 = default;
                for (int k = 0; k < 4; k++)
                {
                    int m = 4 * g + k;
                    var v = Vector256.Load(t + 32 * m);
                    var lo = v & mask;
                    var hi = Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & mask;
                    g0 = Quad(g0, lo, hi, (int*)x0->Qs, m);
                    g1 = Quad(g1, lo, hi, (int*)x1->Qs, m);
                    g2 = Quad(g2, lo, hi, (int*)x2->Qs, m);
                    g3 = Quad(g3, lo, hi, (int*)x3->Qs, m);
                }
                var sc = Avx2.ConvertToVector256Int32(t + 1024 + 8 * g);
                t0 += Avx2.MultiplyLow(g0, sc);
                t1 += Avx2.MultiplyLow(g1, sc);
                t2 += Avx2.MultiplyLow(g2, sc);
                t3 += Avx2.MultiplyLow(g3, sc);
            }
            Vector256<int> n0 = Mins(t + 1088, x0), n1 = Mins(t + 1088, x1), n2 = Mins(t + 1088, x2), n3 = Mins(t + 1088, x3);
            var d = Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + 1152)));
            var dmin = Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + 1168)));
            f0 = Combine(f0, t0, n0, d, dmin, x0->D);
            f1 = Combine(f1, t1, n1, d, dmin, x1->D);
            f2 = Combine(f2, t2, n2, d, dmin, x2->D);
            f3 = Combine(f3, t3, n3, d, dmin, x3->D);
        }
        Q8_0Tiled.Store(f0, y, valid);
        Q8_0Tiled.Store(f1, y + yStride, valid);
        Q8_0Tiled.Store(f2, y + 2 * yStride, valid);
        Q8_0Tiled.Store(f3, y + 3 * yStride, valid);
    }

    /// <summary>Σ_g min_g · (activation sum of group g) for eight rows: the 16-column sums pair up into the 32-column
    /// group sums with one phaddw, and meet the rows' min pairs (64 bytes at <paramref name="pairs"/>) in four vpdpwssd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Mins(byte* pairs, BlockQ8_K* x)
    {
        var groups = Ssse3.HorizontalAdd(Vector128.Load(x->Bsums), Vector128.Load(x->Bsums + 8)).AsInt32();   // |sum| ≤ 32·127
        var m = Vnni(Vector256<int>.Zero, Avx2.ConvertToVector256Int16(pairs), Vector256.Create(groups.GetElement(0)).AsInt16());
        m = Vnni(m, Avx2.ConvertToVector256Int16(pairs + 16), Vector256.Create(groups.GetElement(1)).AsInt16());
        m = Vnni(m, Avx2.ConvertToVector256Int16(pairs + 32), Vector256.Create(groups.GetElement(2)).AsInt16());
        return Vnni(m, Avx2.ConvertToVector256Int16(pairs + 48), Vector256.Create(groups.GetElement(3)).AsInt16());
    }

    /// <summary>
    /// acc + Σ of each four u8 × s8 products (vpdpbusd, or off <see cref="VnniPath.Hardware"/> vpmaddubsw, vpmaddwd
    /// against ones, vpaddd), which equals it while no pair of products leaves int16 — true for the k-quant levels
    /// (≤ 63) against int8 activations (2 · 63 · 127 &lt; 2^15), not for the biased Q8_0 activations of
    /// <see cref="Q8_0Tiled"/>, which use the general <see cref="Quantization.Vnni.DotBytes"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Vnni(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s) =>
        Quantization.Vnni.DotBytesSmall(acc, u, s);

    /// <summary>acc + Σ of each two s16 × s16 products (vpdpwssd, or vpmaddwd + vpaddd).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Vnni(Vector256<int> acc, Vector256<short> a, Vector256<short> b) =>
        Quantization.Vnni.DotPairs(acc, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Quad(Vector256<int> acc, Vector256<byte> lo, Vector256<byte> hi, int* xq, int m) =>
        Vnni(Vnni(acc, lo, Vector256.Create(xq[2 * m]).AsSByte()),
            hi, Vector256.Create(xq[2 * m + 1]).AsSByte());

    // f += (d·total − dmin·mins) · dx, the super-block's contribution to eight rows.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Combine(Vector256<float> f, Vector256<int> total, Vector256<int> mins, Vector256<float> d, Vector256<float> dmin, float dx)
    {
        var s = Vector256.Create(dx);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), d * s, Fma.MultiplyAddNegated(Avx.ConvertToVector256Single(mins), dmin * s, f));
    }
}

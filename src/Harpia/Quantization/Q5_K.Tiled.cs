using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Q5_K repacked at load, eight rows interleaved, for AVX-VNNI: <see cref="Q4_KTiled"/>'s layout plus a plane of
/// fifth bits. One super-block (256 columns) of an eight-row tile:
/// <code>
/// [0, 1024)     32 registers m: [row0 b0..b3 | … | row7 b0..b3], byte i of a row holding bits 0-3 of the levels
///               of columns 8m+i (low nibble) and 8m+4+i (high nibble), as in Q4_KTiled
/// [1024, 1088)  6-bit scale of each 32-column group g, [g][row]
/// [1088, 1152)  6-bit min of each group, as pairs: [g/2][row][g even, g odd]
/// [1152, 1168)  d [row] (fp16)      [1168, 1184)  dmin [row] (fp16)
/// [1184, 1440)  8 registers g: byte i of a row holds bit 4 of the levels of columns 32g+4k+i in its bit k
/// </code>
/// 1440 bytes against 8 × 176 in the file (2.3 % more). Quad k of group g (columns 32g+4k..32g+4k+3, activation
/// int k of the group) is a nibble or'ed with bit k of the plane moved to bit 4 (one 16-bit shift and a mask);
/// the rest is Q4_KTiled's kernel. Integer sums are exact, so results equal <see cref="Q5_K"/>'s reference dot to
/// f32 rounding. Scalar reference: <see cref="KQuantDot.ScaledScalar"/> over <see cref="Q5_K.Unpack"/>.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q5_KTiled
{
    public const int TileRows = 8, SuperBlockBytes = 1440;
    const int Scales = 1024, MinPairs = 1088, D = 1152, DMin = 1168, FifthBits = 1184;

    public static bool IsSupported => Q4_KTiled.IsSupported;

    public static long PackedBytes(int nsb) => (long)nsb * SuperBlockBytes;

    /// <summary>Packs <paramref name="count"/> (≤ 8) Q5_K rows of <paramref name="nsb"/> super-blocks; missing rows are zero.</summary>
    public static void Pack(BlockQ5_K** rows, int count, int nsb, byte* dst)
    {
        KUnpacked u;
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* t = dst + (long)sb * SuperBlockBytes;
            new Span<byte>(t, SuperBlockBytes).Clear();
            for (int r = 0; r < count; r++)
            {
                var block = rows[r] + sb;
                Q5_K.Unpack(block, &u);   // levels 0..31 in column order
                byte* q = u.Q;
                for (int m = 0; m < 32; m++)
                    for (int i = 0; i < 4; i++)
                        t[32 * m + 4 * r + i] = (byte)((q[8 * m + i] & 0xF) | ((q[8 * m + 4 + i] & 0xF) << 4));
                for (int g = 0; g < 8; g++)
                    for (int i = 0; i < 4; i++)
                    {
                        int bits = 0;
                        for (int k = 0; k < 8; k++) bits |= (q[32 * g + 4 * k + i] >> 4) << k;
                        t[FifthBits + 32 * g + 4 * r + i] = (byte)bits;
                    }
                var sm = Q4_K.ScalesAndMins(block->Scales);
                for (int g = 0; g < 8; g++)
                {
                    t[Scales + 8 * g + r] = sm.GetElement(g);
                    t[MinPairs + 16 * (g / 2) + 2 * r + (g & 1)] = sm.GetElement(8 + g);
                }
                ((ushort*)(t + D))[r] = block->D;
                ((ushort*)(t + DMin))[r] = block->DMin;
            }
        }
    }

    /// <summary>y[0..valid) = tile · x for one activation row (Q8_K, <paramref name="nsb"/> blocks).</summary>
    public static void Multiply1(byte* tile, int nsb, BlockQ8_K* x, float* y, int valid)
    {
        var f = Vector256<float>.Zero;
        var fm = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m1 = Vector256.Create((byte)0x10);
        for (int sb = 0; sb < nsb; sb++, x++)
        {
            byte* t = tile + (long)sb * SuperBlockBytes;
            QuantCommon.PrefetchAhead(t, 23);   // this super-block's 1440 bytes, PrefetchBytes ahead
            int* xq = (int*)x->Qs;
            var total = Vector256<int>.Zero;
            for (int g = 0; g < 8; g++)
            {
                var hb = Vector256.Load(t + FifthBits + 32 * g).AsUInt16();
                LevelsLow(t, g, hb, m4, m1, out var a, out var b, out var c, out var d);
                var group = Quad4(Vector256<int>.Zero, a, b, c, d, xq + 8 * g);
                LevelsHigh(t, g, hb, m4, m1, out a, out b, out c, out d);
                group = Quad4(group, a, b, c, d, xq + 8 * g + 4);
                total += Avx2.MultiplyLow(group, Avx2.ConvertToVector256Int32(t + Scales + 8 * g));
            }
            var mins = Q4_KTiled.Mins(t + MinPairs, x);
            var dx = Vector256.Create(x->D);
            f = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + D))) * dx, f);
            fm = Fma.MultiplyAdd(Avx.ConvertToVector256Single(mins), Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + DMin))) * dx, fm);
        }
        Q8_0Tiled.Store(f - fm, y, valid);
    }

    /// <summary>Scalar reference of <see cref="Multiply1"/>, read straight from the layout above (tests).</summary>
    public static void Multiply1Scalar(byte* tile, int nsb, BlockQ8_K* x, float* y, int valid)
    {
        for (int r = 0; r < valid; r++)
        {
            float sum = 0;
            for (int sb = 0; sb < nsb; sb++)
            {
                byte* t = tile + (long)sb * SuperBlockBytes;
                int total = 0, mins = 0;
                for (int g = 0; g < 8; g++)
                {
                    int group = 0;
                    for (int k = 0; k < 8; k++)
                        for (int i = 0; i < 4; i++)
                        {
                            int col = 32 * g + 4 * k + i, m = col / 8, nibble = col % 8 / 4;
                            int low = (t[32 * m + 4 * r + i] >> (4 * nibble)) & 0xF;
                            int fifth = (t[FifthBits + 32 * g + 4 * r + i] >> k) & 1;
                            group += (low | (fifth << 4)) * x[sb].Qs[col];
                        }
                    total += t[Scales + 8 * g + r] * group;
                    mins += t[MinPairs + 16 * (g / 2) + 2 * r + (g & 1)] * (x[sb].Bsums[2 * g] + x[sb].Bsums[2 * g + 1]);
                }
                float dx = x[sb].D;
                sum += QuantCommon.H2F(((ushort*)(t + D))[r]) * dx * total - QuantCommon.H2F(((ushort*)(t + DMin))[r]) * dx * mins;
            }
            y[r] = sum;
        }
    }

    /// <summary>
    /// Four activation rows (row a at x + a·<paramref name="xStride"/> blocks) against one tile; results of row a at
    /// y + a·<paramref name="yStride"/>. The level assembly and the scale widening are shared by the four rows.
    /// </summary>
    public static void Multiply4(byte* tile, int nsb, BlockQ8_K* x, long xStride, float* y, long yStride, int valid)
    {
        var f0 = Vector256<float>.Zero; var f1 = Vector256<float>.Zero; var f2 = Vector256<float>.Zero; var f3 = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m1 = Vector256.Create((byte)0x10);
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* t = tile + (long)sb * SuperBlockBytes;
            BlockQ8_K* x0 = x + sb, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride;
            int* q0 = (int*)x0->Qs, q1 = (int*)x1->Qs, q2 = (int*)x2->Qs, q3 = (int*)x3->Qs;
            Vector256<int> t0 = default, t1 = default, t2 = default, t3 = default;
            for (int g = 0; g < 8; g++)
            {
                var hb = Vector256.Load(t + FifthBits + 32 * g).AsUInt16();
                LevelsLow(t, g, hb, m4, m1, out var a, out var b, out var c, out var d);
                int o = 8 * g;
                var g0 = Quad4(Vector256<int>.Zero, a, b, c, d, q0 + o);
                var g1 = Quad4(Vector256<int>.Zero, a, b, c, d, q1 + o);
                var g2 = Quad4(Vector256<int>.Zero, a, b, c, d, q2 + o);
                var g3 = Quad4(Vector256<int>.Zero, a, b, c, d, q3 + o);
                LevelsHigh(t, g, hb, m4, m1, out a, out b, out c, out d);
                g0 = Quad4(g0, a, b, c, d, q0 + o + 4);
                g1 = Quad4(g1, a, b, c, d, q1 + o + 4);
                g2 = Quad4(g2, a, b, c, d, q2 + o + 4);
                g3 = Quad4(g3, a, b, c, d, q3 + o + 4);
                var sc = Avx2.ConvertToVector256Int32(t + Scales + 8 * g);
                t0 += Avx2.MultiplyLow(g0, sc);
                t1 += Avx2.MultiplyLow(g1, sc);
                t2 += Avx2.MultiplyLow(g2, sc);
                t3 += Avx2.MultiplyLow(g3, sc);
            }
            Vector256<int> n0 = Q4_KTiled.Mins(t + MinPairs, x0), n1 = Q4_KTiled.Mins(t + MinPairs, x1),
                n2 = Q4_KTiled.Mins(t + MinPairs, x2), n3 = Q4_KTiled.Mins(t + MinPairs, x3);
            var dw = Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + D)));
            var dmin = Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + DMin)));
            f0 = Q4_KTiled.Combine(f0, t0, n0, dw, dmin, x0->D);
            f1 = Q4_KTiled.Combine(f1, t1, n1, dw, dmin, x1->D);
            f2 = Q4_KTiled.Combine(f2, t2, n2, dw, dmin, x2->D);
            f3 = Q4_KTiled.Combine(f3, t3, n3, dw, dmin, x3->D);
        }
        Q8_0Tiled.Store(f0, y, valid);
        Q8_0Tiled.Store(f1, y + yStride, valid);
        Q8_0Tiled.Store(f2, y + 2 * yStride, valid);
        Q8_0Tiled.Store(f3, y + 3 * yStride, valid);
    }

    /// <summary>Quads 0-3 of group <paramref name="g"/> (registers 4g, 4g+1): a nibble or'ed with plane bit k at bit 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void LevelsLow(byte* t, int g, Vector256<ushort> hb, Vector256<byte> m4, Vector256<byte> m1,
        out Vector256<byte> a, out Vector256<byte> b, out Vector256<byte> c, out Vector256<byte> d)
    {
        var v0 = Vector256.Load(t + 128 * g);
        var v1 = Vector256.Load(t + 128 * g + 32);
        a = (v0 & m4) | (Vector256.ShiftLeft(hb, 4).AsByte() & m1);
        b = (Vector256.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftLeft(hb, 3).AsByte() & m1);
        c = (v1 & m4) | (Vector256.ShiftLeft(hb, 2).AsByte() & m1);
        d = (Vector256.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftLeft(hb, 1).AsByte() & m1);
    }

    /// <summary>Quads 4-7 of group <paramref name="g"/> (registers 4g+2, 4g+3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void LevelsHigh(byte* t, int g, Vector256<ushort> hb, Vector256<byte> m4, Vector256<byte> m1,
        out Vector256<byte> a, out Vector256<byte> b, out Vector256<byte> c, out Vector256<byte> d)
    {
        var v0 = Vector256.Load(t + 128 * g + 64);
        var v1 = Vector256.Load(t + 128 * g + 96);
        a = (v0 & m4) | (hb.AsByte() & m1);
        b = (Vector256.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftRightLogical(hb, 1).AsByte() & m1);
        c = (v1 & m4) | (Vector256.ShiftRightLogical(hb, 2).AsByte() & m1);
        d = (Vector256.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftRightLogical(hb, 3).AsByte() & m1);
    }

    // Four quads against four consecutive broadcast activation ints.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Quad4(Vector256<int> acc, Vector256<byte> a, Vector256<byte> b, Vector256<byte> c, Vector256<byte> d, int* xq)
    {
        acc = Q4_KTiled.Vnni(acc, a, Vector256.Create(xq[0]).AsSByte());
        acc = Q4_KTiled.Vnni(acc, b, Vector256.Create(xq[1]).AsSByte());
        acc = Q4_KTiled.Vnni(acc, c, Vector256.Create(xq[2]).AsSByte());
        return Q4_KTiled.Vnni(acc, d, Vector256.Create(xq[3]).AsSByte());
    }
}

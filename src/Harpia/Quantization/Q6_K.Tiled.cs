using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Q6_K repacked at load, eight rows interleaved, for AVX-VNNI (see <see cref="Q4_KTiled"/>). One super-block (256
/// columns) of an eight-row tile:
/// <code>
/// [0, 1024)     32 registers m: [row0 b0..b3 | … | row7 b0..b3], byte i of a row holding bits 0-3 of the 6-bit
///               levels of columns 8m+i (low nibble) and 8m+4+i (high nibble), as in Q4_KTiled
/// [1024, 1536)  16 registers g (one per 16-column group): byte i of a row holds bits 4-5 of the levels of columns
///               16g+i, 16g+4+i, 16g+8+i, 16g+12+i in its bit pairs 0-1, 2-3, 4-5, 6-7
/// [1536, 1664)  int8 scale of each group, as pairs: [g/2][row][g even, g odd] (an int16 pair per row once widened)
/// [1664, 1680)  d [row] (fp16)
/// </code>
/// The same 1680 bytes as eight rows in the file. The levels are unsigned (0..63), so vpdpbusd takes them against
/// four broadcast activation bytes and sums eight rows per lane; each group's sum is scaled by its int8 scale
/// (vpmulld), and the −32 offset is 32 · Σ_g scale_g · (activation sum of group g): the Q8_K bsums are exactly the
/// 16-column group sums, so it is eight vpdpwssd against the scale pairs. Both are integer, so one convert and one
/// FMA per super-block and eight rows. Integer sums are exact, so results equal <see cref="Q6_K"/>'s reference dot
/// to f32 rounding. Scalar reference: <see cref="KQuantDot.ScaledScalar"/> over <see cref="Q6_K.Unpack"/>.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q6_KTiled
{
    public const int TileRows = 8, SuperBlockBytes = 1680;
    const int HighBits = 1024, ScalePairs = 1536, Scale = 1664;

    public static bool IsSupported => Q4_KTiled.IsSupported;

    public static long PackedBytes(int nsb) => (long)nsb * SuperBlockBytes;

    /// <summary>Packs <paramref name="count"/> (≤ 8) Q6_K rows of <paramref name="nsb"/> super-blocks; missing rows are zero.</summary>
    public static void Pack(BlockQ6_K** rows, int count, int nsb, byte* dst)
    {
        KUnpacked u;
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* t = dst + (long)sb * SuperBlockBytes;
            new Span<byte>(t, SuperBlockBytes).Clear();
            for (int r = 0; r < count; r++)
            {
                var block = rows[r] + sb;
                Q6_K.Unpack(block, &u);   // levels 0..63 in column order
                byte* q = u.Q;
                for (int m = 0; m < 32; m++)
                    for (int i = 0; i < 4; i++)
                        t[32 * m + 4 * r + i] = (byte)((q[8 * m + i] & 0xF) | ((q[8 * m + 4 + i] & 0xF) << 4));
                for (int g = 0; g < 16; g++)
                    for (int i = 0; i < 4; i++)
                    {
                        int bits = 0;
                        for (int k = 0; k < 4; k++) bits |= (q[16 * g + 4 * k + i] >> 4) << (2 * k);
                        t[HighBits + 32 * g + 4 * r + i] = (byte)bits;
                    }
                for (int g = 0; g < 16; g++) t[ScalePairs + 16 * (g / 2) + 2 * r + (g & 1)] = (byte)block->Scales[g];
                ((ushort*)(t + Scale))[r] = block->D;
            }
        }
    }

    /// <summary>y[0..valid) = tile · x for one activation row (Q8_K, <paramref name="nsb"/> blocks).</summary>
    public static void Multiply1(byte* tile, int nsb, BlockQ8_K* x, float* y, int valid)
    {
        var f = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m2 = Vector256.Create((byte)0x30);
        for (int sb = 0; sb < nsb; sb++, x++)
        {
            byte* t = tile + (long)sb * SuperBlockBytes;
            QuantCommon.PrefetchAhead(t, 27);   // this super-block's 1680 bytes, PrefetchBytes ahead
            int* xq = (int*)x->Qs;
            var total = Vector256<int>.Zero;
            var offset = Vector256<int>.Zero;
            for (int j = 0; j < 8; j++)
            {
                var pairs = Avx2.ConvertToVector256Int16((sbyte*)t + ScalePairs + 16 * j);
                offset = Q4_KTiled.Vnni(offset, pairs, Vector256.Create(((int*)x->Bsums)[j]).AsInt16());
                var even = Group(t, 2 * j, xq, m4, m2);
                var odd = Group(t, 2 * j + 1, xq, m4, m2);
                total += Avx2.MultiplyLow(even, EvenScales(pairs)) + Avx2.MultiplyLow(odd, OddScales(pairs));
            }
            var dx = Vector256.Create(x->D);
            f = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total - Vector256.ShiftLeft(offset, 5)),
                Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + Scale))) * dx, f);
        }
        Q8_0Tiled.Store(f, y, valid);
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
                int total = 0, offset = 0;
                for (int g = 0; g < 16; g++)
                {
                    int scale = (sbyte)t[ScalePairs + 16 * (g / 2) + 2 * r + (g & 1)], group = 0;
                    for (int k = 0; k < 4; k++)
                        for (int i = 0; i < 4; i++)
                        {
                            int col = 16 * g + 4 * k + i, m = col / 8, nibble = col % 8 / 4;
                            int low = (t[32 * m + 4 * r + i] >> (4 * nibble)) & 0xF;
                            int high = (t[HighBits + 32 * g + 4 * r + i] >> (2 * k)) & 3;
                            group += (low | (high << 4)) * x[sb].Qs[col];
                        }
                    total += scale * group;
                    offset += scale * x[sb].Bsums[g];
                }
                sum += QuantCommon.H2F(((ushort*)(t + Scale))[r]) * x[sb].D * (total - 32 * offset);
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
        var m2 = Vector256.Create((byte)0x30);
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* t = tile + (long)sb * SuperBlockBytes;
            BlockQ8_K* x0 = x + sb, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride;
            int* q0 = (int*)x0->Qs, q1 = (int*)x1->Qs, q2 = (int*)x2->Qs, q3 = (int*)x3->Qs;
            Vector256<int> t0 = default, t1 = default, t2 = default, t3 = default;
            Vector256<int> o0 = default, o1 = default, o2 = default, o3 = default;
            for (int j = 0; j < 8; j++)
            {
                var pairs = Avx2.ConvertToVector256Int16((sbyte*)t + ScalePairs + 16 * j);
                o0 = Q4_KTiled.Vnni(o0, pairs, Vector256.Create(((int*)x0->Bsums)[j]).AsInt16());
                o1 = Q4_KTiled.Vnni(o1, pairs, Vector256.Create(((int*)x1->Bsums)[j]).AsInt16());
                o2 = Q4_KTiled.Vnni(o2, pairs, Vector256.Create(((int*)x2->Bsums)[j]).AsInt16());
                o3 = Q4_KTiled.Vnni(o3, pairs, Vector256.Create(((int*)x3->Bsums)[j]).AsInt16());
                for (int h = 0; h < 2; h++)
                {
                    int g = 2 * j + h;
                    Levels(t, g, m4, m2, out var a, out var b, out var c, out var d);
                    var sc = h == 0 ? EvenScales(pairs) : OddScales(pairs);
                    t0 += Avx2.MultiplyLow(Quad4(a, b, c, d, q0, g), sc);
                    t1 += Avx2.MultiplyLow(Quad4(a, b, c, d, q1, g), sc);
                    t2 += Avx2.MultiplyLow(Quad4(a, b, c, d, q2, g), sc);
                    t3 += Avx2.MultiplyLow(Quad4(a, b, c, d, q3, g), sc);
                }
            }
            var dw = Q8_0Tiled.HalfToSingle(Vector128.Load((ushort*)(t + Scale)));
            f0 = Combine(f0, t0, o0, dw, x0->D);
            f1 = Combine(f1, t1, o1, dw, x1->D);
            f2 = Combine(f2, t2, o2, dw, x2->D);
            f3 = Combine(f3, t3, o3, dw, x3->D);
        }
        Q8_0Tiled.Store(f0, y, valid);
        Q8_0Tiled.Store(f1, y + yStride, valid);
        Q8_0Tiled.Store(f2, y + 2 * yStride, valid);
        Q8_0Tiled.Store(f3, y + 3 * yStride, valid);
    }

    /// <summary>Integer sums of group <paramref name="g"/> (16 columns) for eight rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Group(byte* t, int g, int* xq, Vector256<byte> m4, Vector256<byte> m2)
    {
        Levels(t, g, m4, m2, out var a, out var b, out var c, out var d);
        return Quad4(a, b, c, d, xq, g);
    }

    /// <summary>The 6-bit levels of group <paramref name="g"/> as four quads: quad k (columns 16g+4k..16g+4k+3) takes
    /// bits 0-3 from a nibble and bits 4-5 from bit pair k of the group's high-bits register.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Levels(byte* t, int g, Vector256<byte> m4, Vector256<byte> m2,
        out Vector256<byte> a, out Vector256<byte> b, out Vector256<byte> c, out Vector256<byte> d)
    {
        var v0 = Vector256.Load(t + 64 * g);
        var v1 = Vector256.Load(t + 64 * g + 32);
        var hb = Vector256.Load(t + HighBits + 32 * g).AsUInt16();
        a = (v0 & m4) | (Vector256.ShiftLeft(hb, 4).AsByte() & m2);
        b = (Vector256.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftLeft(hb, 2).AsByte() & m2);
        c = (v1 & m4) | (hb.AsByte() & m2);
        d = (Vector256.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftRightLogical(hb, 2).AsByte() & m2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Quad4(Vector256<byte> a, Vector256<byte> b, Vector256<byte> c, Vector256<byte> d, int* xq, int g)
    {
        var acc = Q4_KTiled.Vnni(Vector256<int>.Zero, a, Vector256.Create(xq[4 * g]).AsSByte());
        acc = Q4_KTiled.Vnni(acc, b, Vector256.Create(xq[4 * g + 1]).AsSByte());
        acc = Q4_KTiled.Vnni(acc, c, Vector256.Create(xq[4 * g + 2]).AsSByte());
        return Q4_KTiled.Vnni(acc, d, Vector256.Create(xq[4 * g + 3]).AsSByte());
    }

    // The scale pairs widened to int16: int32 lane r = (odd << 16) | even, sign-extended halves.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> EvenScales(Vector256<short> pairs) =>
        Vector256.ShiftRightArithmetic(Vector256.ShiftLeft(pairs.AsInt32(), 16), 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> OddScales(Vector256<short> pairs) => Vector256.ShiftRightArithmetic(pairs.AsInt32(), 16);

    // f += d · (total − 32 · offset) · dx, the super-block's contribution to eight rows (all of it integer until here).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Combine(Vector256<float> f, Vector256<int> total, Vector256<int> offset, Vector256<float> d, float dx) =>
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(total - Vector256.ShiftLeft(offset, 5)), d * Vector256.Create(dx), f);
}

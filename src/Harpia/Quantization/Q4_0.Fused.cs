using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Harpia.Quantization;

/// <summary>
/// Fused AVX2/AVX-VNNI row dots for Q4_0 and Q5_0 weights against Q8_0 activations: the 32 levels of a block are
/// built in one register (low nibbles | high nibbles, plus Q5_0's fifth bit spread from the 32-bit Qh with a byte
/// shuffle and compare), re-centred to int8 and fed to the same |w| · sign(x, w) integer dot as Q8_0.
/// Same integer sums as the other paths; f32 accumulation per lane as in <see cref="Q8_0.Dot"/>.
/// </summary>
[SkipLocalsInit]
public static unsafe class Q4_0Fused
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    // Byte j of the 32-lane vector tests bit j of Qh: bytes 0..15 read Qh bytes 0..1, bytes 16..31 bytes 2..3.
    private static readonly Vector256<byte> Spread = Vector256.Create(
        (byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    private static readonly Vector256<byte> BitOfByte = Vector256.Create(
        (byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles(byte* qs)
    {
        var q = Vector128.Load(qs);
        var m4 = Vector128.Create((byte)0xF);
        return Avx2.InsertVector128((q & m4).ToVector256Unsafe(), Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4, 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<sbyte> w, sbyte* x, float scale, Vector256<float> acc)
    {
        var aw = Avx2.Abs(w);
        var sx = Avx2.Sign(Vector256.Load(x), w);
        var p = Vnni.DotBytesSmall(Vector256<int>.Zero, aw, sx);   // |w| ≤ 128, |x| ≤ 127: pairs fit int16
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(scale), acc);
    }

    public static float DotRowQ4_0(BlockQ4_0* w, sbyte* xq, float* xd, int nb)
    {
        var acc = Vector256<float>.Zero;
        var eight = Vector256.Create((byte)8);
        for (int b = 0; b < nb; b++)
            acc = Accumulate((Nibbles(w[b].Qs) - eight).AsSByte(), xq + 32 * b, QuantCommon.H2F(w[b].D) * xd[b], acc);
        return Vector256.Sum(acc);
    }

    public static float DotRowQ5_0(BlockQ5_0* w, sbyte* xq, float* xd, int nb)
    {
        var acc = Vector256<float>.Zero;
        var sixteen = Vector256.Create((byte)16);
        for (int b = 0; b < nb; b++)
        {
            var qh = Vector256.Create(Unsafe.ReadUnaligned<uint>(w[b].Qh)).AsByte();
            var high = Vector256.Equals(Avx2.Shuffle(qh, Spread) & BitOfByte, BitOfByte) & sixteen;
            acc = Accumulate(((Nibbles(w[b].Qs) | high) - sixteen).AsSByte(), xq + 32 * b, QuantCommon.H2F(w[b].D) * xd[b], acc);
        }
        return Vector256.Sum(acc);
    }
}

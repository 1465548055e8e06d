using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Harpia.Quantization.QuantCommon;

namespace Harpia.Quantization;

/// <summary>
/// Dots of a Q4_0 or Q8_0 weight row with f32 activations (no activation rounding): the kernels of the packed
/// formats (<see cref="GptqMatrix"/>) when activations stay f32. Each block's 32 codes are widened to f32 in registers,
/// multiplied with the activations, and the block's sum is scaled by d in a vector accumulator (no horizontal sum
/// per block). A scalar reference beside each SIMD path; <see cref="SimdPath"/> picks the path.
/// </summary>
[SkipLocalsInit]
public static unsafe class FloatActivationDot
{
    /// <summary>Reference: Σ_b d_b · Σ_j (q_j − 8) · x_j, element j in byte j's low nibble, j + 16 in its high nibble.</summary>
    public static float Q4_0Scalar(BlockQ4_0* row, float* x, int nb)
    {
        float sum = 0;
        for (int b = 0; b < nb; b++, x += 32)
        {
            float block = 0;
            for (int j = 0; j < 16; j++)
                block += ((row[b].Qs[j] & 15) - 8) * x[j] + ((row[b].Qs[j] >> 4) - 8) * x[j + 16];
            sum += H2F(row[b].D) * block;
        }
        return sum;
    }

    public static float Q8_0Scalar(BlockQ8_0* row, float* x, int nb)
    {
        float sum = 0;
        for (int b = 0; b < nb; b++, x += 32)
        {
            float block = 0;
            for (int j = 0; j < 32; j++) block += row[b].Qs[j] * x[j];
            sum += H2F(row[b].D) * block;
        }
        return sum;
    }

    public static float Q4_0(BlockQ4_0* row, float* x, int nb, SimdPath path)
    {
        if (path == SimdPath.Vector512 && Avx512F.IsSupported) return Q4_0x512(row, x, nb);
        if (path is SimdPath.Vector512 or SimdPath.Vector256 && Avx2.IsSupported && Fma.IsSupported) return Q4_0x256(row, x, nb);
        return Q4_0Scalar(row, x, nb);
    }

    public static float Q8_0(BlockQ8_0* row, float* x, int nb, SimdPath path)
    {
        if (path == SimdPath.Vector512 && Avx512F.IsSupported) return Q8_0x512(row, x, nb);
        if (path is SimdPath.Vector512 or SimdPath.Vector256 && Avx2.IsSupported && Fma.IsSupported) return Q8_0x256(row, x, nb);
        return Q8_0Scalar(row, x, nb);
    }

    private static float Q4_0x512(BlockQ4_0* row, float* x, int nb)
    {
        var low = Vector512.Create(15);
        var eight = Vector512.Create(8f);
        var acc0 = Vector512<float>.Zero;
        var acc1 = Vector512<float>.Zero;
        int b = 0;
        for (; b + 2 <= nb; b += 2, x += 64)
        {
            acc0 = Block512(row + b, x, low, eight, acc0);
            acc1 = Block512(row + b + 1, x + 32, low, eight, acc1);
        }
        if (b < nb) acc0 = Block512(row + b, x, low, eight, acc0);
        return Vector512.Sum(acc0 + acc1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Block512(BlockQ4_0* blk, float* x, Vector512<int> low, Vector512<float> eight, Vector512<float> acc)
    {
        var codes = Avx512F.ConvertToVector512Int32(Vector128.Load(blk->Qs));
        var lo = Avx512F.ConvertToVector512Single(codes & low) - eight;
        var hi = Avx512F.ConvertToVector512Single(Avx512F.ShiftRightLogical(codes, 4)) - eight;
        var t = Avx512F.FusedMultiplyAdd(hi, Vector512.Load(x + 16), lo * Vector512.Load(x));
        return Avx512F.FusedMultiplyAdd(t, Vector512.Create(H2F(blk->D)), acc);
    }

    private static float Q4_0x256(BlockQ4_0* row, float* x, int nb)
    {
        var low = Vector256.Create(15);
        var eight = Vector256.Create(8f);
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < nb; b++, x += 32)
        {
            byte* q = row[b].Qs;
            var c0 = Avx2.ConvertToVector256Int32(q);       // bytes 0–7: elements 0–7 (low), 16–23 (high)
            var c1 = Avx2.ConvertToVector256Int32(q + 8);   // bytes 8–15: elements 8–15, 24–31
            var t = Avx.ConvertToVector256Single(c0 & low) - eight;
            t *= Vector256.Load(x);
            t = Fma.MultiplyAdd(Avx.ConvertToVector256Single(c1 & low) - eight, Vector256.Load(x + 8), t);
            t = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ShiftRightLogical(c0, 4)) - eight, Vector256.Load(x + 16), t);
            t = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ShiftRightLogical(c1, 4)) - eight, Vector256.Load(x + 24), t);
            acc = Fma.MultiplyAdd(t, Vector256.Create(H2F(row[b].D)), acc);
        }
        return Vector256.Sum(acc);
    }

    private static float Q8_0x512(BlockQ8_0* row, float* x, int nb)
    {
        var acc = Vector512<float>.Zero;
        for (int b = 0; b < nb; b++, x += 32)
        {
            sbyte* q = row[b].Qs;
            var lo = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q)));
            var hi = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + 16)));
            var t = Avx512F.FusedMultiplyAdd(hi, Vector512.Load(x + 16), lo * Vector512.Load(x));
            acc = Avx512F.FusedMultiplyAdd(t, Vector512.Create(H2F(row[b].D)), acc);
        }
        return Vector512.Sum(acc);
    }

    private static float Q8_0x256(BlockQ8_0* row, float* x, int nb)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < nb; b++, x += 32)
        {
            sbyte* q = row[b].Qs;
            var t = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q)) * Vector256.Load(x);
            t = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 8)), Vector256.Load(x + 8), t);
            t = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 16)), Vector256.Load(x + 16), t);
            t = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 24)), Vector256.Load(x + 24), t);
            acc = Fma.MultiplyAdd(t, Vector256.Create(H2F(row[b].D)), acc);
        }
        return Vector256.Sum(acc);
    }
}

using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Harpia.Tensors;

/// <summary>Scaled dot-product attention kernels and the softmax they use.</summary>
public static class Attention
{
    /// <summary>Numerically stable softmax in place: exp(x − max) / Σ exp(x − max), f32 throughout.</summary>
    public static void Softmax(Span<float> x)
    {
        if (x.IsEmpty) return;
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, x);
        TensorPrimitives.Exp(x, x);
        float sum = TensorPrimitives.Sum(x);
        TensorPrimitives.Divide(x, sum, x);
    }

    /// <summary>
    /// One query head attending over positions [0, count): out = Σⱼ softmax(q·kⱼ · scale)ⱼ vⱼ.
    /// <paramref name="key"/>/<paramref name="value"/> give the head's vector at position j (a KV cache slot).
    /// <paramref name="scores"/> must hold <paramref name="count"/> floats.
    /// </summary>
    public static void AttendOneHead<TCache>(ReadOnlySpan<float> q, int count, float scale, TCache cache,
        Span<float> scores, Span<float> output)
        where TCache : IHeadVectors, allows ref struct
    {
        var s = scores[..count];
        if (q.Length == 64 && Vector512.IsHardwareAccelerated)
        {
            AttendHead64(q, count, scale, cache, s, output);
            return;
        }
        for (int j = 0; j < count; j++) s[j] = TensorPrimitives.Dot(q, cache.Key(j)) * scale;
        Softmax(s);
        output.Clear();
        for (int j = 0; j < count; j++) TensorPrimitives.MultiplyAdd(cache.Value(j), s[j], output, output);
    }

    /// <summary>
    /// Falcon's head size (64 = four 512-bit vectors) with q and the output held in registers: per position four
    /// FMAs instead of a library call with its dispatch, which dominated attention for long prompts. Same maths as
    /// the general path; the dot's summation order differs (per lane, then across), so results agree to f32 rounding.
    /// </summary>
    private static void AttendHead64<TCache>(ReadOnlySpan<float> q, int count, float scale, TCache cache, Span<float> s, Span<float> output)
        where TCache : IHeadVectors, allows ref struct
    {
        var q0 = Vector512.Create(q[..16]); var q1 = Vector512.Create(q.Slice(16, 16));
        var q2 = Vector512.Create(q.Slice(32, 16)); var q3 = Vector512.Create(q.Slice(48, 16));
        for (int j = 0; j < count; j++)
        {
            var k = cache.Key(j);
            var d = q0 * Vector512.Create(k[..16]) + q1 * Vector512.Create(k.Slice(16, 16))
                  + q2 * Vector512.Create(k.Slice(32, 16)) + q3 * Vector512.Create(k.Slice(48, 16));
            s[j] = Vector512.Sum(d) * scale;
        }
        Softmax(s);
        Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
        for (int j = 0; j < count; j++)
        {
            var v = cache.Value(j);
            var p = Vector512.Create(s[j]);
            o0 = Vector512.FusedMultiplyAdd(Vector512.Create(v[..16]), p, o0);
            o1 = Vector512.FusedMultiplyAdd(Vector512.Create(v.Slice(16, 16)), p, o1);
            o2 = Vector512.FusedMultiplyAdd(Vector512.Create(v.Slice(32, 16)), p, o2);
            o3 = Vector512.FusedMultiplyAdd(Vector512.Create(v.Slice(48, 16)), p, o3);
        }
        o0.CopyTo(output[..16]); o1.CopyTo(output.Slice(16, 16)); o2.CopyTo(output.Slice(32, 16)); o3.CopyTo(output.Slice(48, 16));
    }

    /// <summary>Where one KV head's key and value vectors live, position by position.</summary>
    public interface IHeadVectors
    {
        ReadOnlySpan<float> Key(int position);
        ReadOnlySpan<float> Value(int position);
    }
}

using System.Numerics.Tensors;

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
        for (int j = 0; j < count; j++) s[j] = TensorPrimitives.Dot(q, cache.Key(j)) * scale;
        Softmax(s);
        output.Clear();
        for (int j = 0; j < count; j++) TensorPrimitives.MultiplyAdd(cache.Value(j), s[j], output, output);
    }

    /// <summary>Where one KV head's key and value vectors live, position by position.</summary>
    public interface IHeadVectors
    {
        ReadOnlySpan<float> Key(int position);
        ReadOnlySpan<float> Value(int position);
    }
}

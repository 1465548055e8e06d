using System.Runtime.InteropServices;
using Harpia.Tensors;

namespace Harpia.Quantization;

/// <summary>Encodes one f32 row into a weight type: the float types by conversion, the block types by quantizing.</summary>
public static class RowEncoder
{
    public static bool CanEncode(GgmlType type) =>
        type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 || QuantFormats.IsSupported(type);

    public static void Encode(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.AsBytes(src).CopyTo(dst);
                break;
            case GgmlType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst)[..src.Length]);
                break;
            case GgmlType.BF16:
            {
                var d = MemoryMarshal.Cast<byte, ushort>(dst);
                for (int i = 0; i < src.Length; i++) d[i] = ToBf16(src[i]);
                break;
            }
            default:
                QuantFormats.Quantize(type, src, dst);
                break;
        }
    }

    /// <summary>f32 → bf16, rounding to nearest even as ggml does; NaN stays a (quiet) NaN.</summary>
    private static ushort ToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    }
}

namespace Harpia.Tensors;

/// <summary>
/// Element types of weights, numbered exactly as GGUF/ggml number them so a GGUF tensor's type id maps
/// straight onto this enum. Safetensors dtypes map onto the float members.
/// </summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,

    // ---- Harpia-only members (never GGUF type ids; see GgmlTypes.IsGgufType) ----
    /// <summary>safetensors' U8 (bitsandbytes stores its packed 4-bit weights and quant state as bytes).</summary>
    U8 = 0x1_0000,
    /// <summary>A GPTQ linear (qweight/qzeros/scales/g_idx), carried by <see cref="WeightMatrix.Packed"/>.</summary>
    GPTQ = 0x1_0001,
    /// <summary>A bitsandbytes 4-bit (NF4/FP4) linear, carried by <see cref="WeightMatrix.Packed"/>.</summary>
    BNB_4BIT = 0x1_0002,
}

/// <summary>Block geometry of each type: a row of <c>n</c> elements occupies n / BlockSize × BlockBytes bytes.</summary>
public static class GgmlTypes
{
    /// <summary>Elements per block and bytes per block, or (0, 0) for a type id Harpia does not know.</summary>
    public static (int BlockSize, int BlockBytes) Geometry(GgmlType type) => type switch
    {
        GgmlType.F32 => (1, 4),
        GgmlType.F16 => (1, 2),
        GgmlType.BF16 => (1, 2),
        GgmlType.F64 => (1, 8),
        GgmlType.I8 => (1, 1),
        GgmlType.I16 => (1, 2),
        GgmlType.I32 => (1, 4),
        GgmlType.I64 => (1, 8),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_1 => (32, 20),
        GgmlType.Q5_0 => (32, 22),
        GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q8_1 => (32, 36),
        GgmlType.Q2_K => (256, 84),
        GgmlType.Q3_K => (256, 110),
        GgmlType.Q4_K => (256, 144),
        GgmlType.Q5_K => (256, 176),
        GgmlType.Q6_K => (256, 210),
        GgmlType.Q8_K => (256, 292),
        GgmlType.IQ4_NL => (32, 18),
        GgmlType.IQ4_XS => (256, 136),
        GgmlType.U8 => (1, 1),
        _ => (0, 0),
    };

    public static bool IsKnown(GgmlType type) => Geometry(type).BlockSize != 0;

    /// <summary>Whether a GGUF file may carry this type id (the Harpia-only members are not ggml types).</summary>
    public static bool IsGgufType(GgmlType type) => IsKnown(type) && (uint)type < (uint)GgmlType.U8;

    public static bool IsQuantized(GgmlType type) => Geometry(type).BlockSize > 1;

    /// <summary>
    /// Bytes taken by <paramref name="elements"/> elements, or null when the count is not a whole number of
    /// blocks, the type is unknown, or the size overflows. Readers use this to validate before they trust.
    /// </summary>
    public static long? ByteSize(GgmlType type, long elements)
    {
        var (bs, bb) = Geometry(type);
        if (bs == 0 || elements < 0 || elements % bs != 0) return null;
        long blocks = elements / bs;
        if (blocks > long.MaxValue / bb) return null;
        return blocks * bb;
    }
}

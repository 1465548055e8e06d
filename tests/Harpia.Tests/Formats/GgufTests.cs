using System.Collections;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Tests.Formats;

public unsafe class GgufTests
{
    private static GgufFile ParseImage(byte[] image, int? length = null) =>
        ImageParser.Parse(image, length ?? image.Length, (p, n, owner) => GgufFile.Parse("x.gguf", (byte*)p, n, owner));

    private static Exception ParseError(byte[] image, int? length = null) =>
        Assert.ThrowsAny<HarpiaException>(() => ParseImage(image, length));

    private static GgufTestWriter EveryValueType() => new GgufTestWriter()
        .Add("u8", GgufValueType.UInt8, (byte)200).Add("i8", GgufValueType.Int8, (sbyte)-5)
        .Add("u16", GgufValueType.UInt16, (ushort)60000).Add("i16", GgufValueType.Int16, (short)-300)
        .Add("u32", GgufValueType.UInt32, 4_000_000_000u).Add("i32", GgufValueType.Int32, -70000)
        .Add("f32", GgufValueType.Float32, 1.5f).Add("bool", GgufValueType.Bool, true)
        .Add("str", GgufValueType.String, "falcão").Add("u64", GgufValueType.UInt64, ulong.MaxValue)
        .Add("i64", GgufValueType.Int64, long.MinValue).Add("f64", GgufValueType.Float64, Math.PI)
        .Add("arr.str", GgufValueType.Array, (GgufValueType.String, (IList)new[] { "a", "", "ç" }))
        .Add("arr.f32", GgufValueType.Array, (GgufValueType.Float32, (IList)new[] { 1f, -2f }))
        .Add("arr.bool", GgufValueType.Array, (GgufValueType.Bool, (IList)new[] { true, false }))
        .Add("arr.nested", GgufValueType.Array, (GgufValueType.Array, (IList)new object[]
        {
            (GgufValueType.Int32, (IList)new[] { 1, 2 }), (GgufValueType.Int32, (IList)new[] { 3 }),
        }));

    [Theory]
    [InlineData(3u, 32)]
    [InlineData(2u, 64)]
    public void MetadataOfEveryTypeAndAlignedTensorsReadBack(uint version, int alignment)
    {
        var writer = EveryValueType();
        writer.Version = version;
        writer.Alignment = alignment;
        if (alignment != 32) writer.Add("general.alignment", GgufValueType.UInt32, (uint)alignment);
        writer.F32Tensor("w", [3, 2], [1, 2, 3, 4, 5, 6]);
        writer.Tensor("h", GgmlType.F16, [2], [.. BitConverter.GetBytes((Half)0.25), .. BitConverter.GetBytes((Half)(-4))]);
        writer.Tensor("b", GgmlType.BF16, [1], BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(3f) >> 16)));
        var image = writer.Build();
        using var g = ParseImage(image);
        Assert.Equal(version, g.Version);
        Assert.Equal(alignment, g.Alignment);
        Assert.Equal(0, g.DataOffset % alignment);
        Assert.Equal((byte)200, g.Metadata["u8"]);
        Assert.Equal((sbyte)-5, g.Metadata["i8"]);
        Assert.Equal((ushort)60000, g.Metadata["u16"]);
        Assert.Equal((short)-300, g.Metadata["i16"]);
        Assert.Equal(4_000_000_000L, g.GetInteger("u32"));
        Assert.Equal(-70000L, g.GetInteger("i32"));
        Assert.Equal(1.5, g.GetFloat("f32"));
        Assert.Equal(true, g.Metadata["bool"]);
        Assert.Equal("falcão", g.GetString("str"));
        Assert.Equal(ulong.MaxValue, g.Metadata["u64"]);
        Assert.Equal(long.MinValue, g.GetInteger("i64"));
        Assert.Equal(Math.PI, g.GetFloat("f64"));
        Assert.Equal(new[] { "a", "", "ç" }, (string[])g.Metadata["arr.str"]);
        Assert.Equal(new[] { 1f, -2f }, (float[])g.Metadata["arr.f32"]);
        Assert.Equal(new[] { true, false }, (bool[])g.Metadata["arr.bool"]);
        var nested = (object[])g.Metadata["arr.nested"];
        Assert.Equal(new[] { 3 }, (int[])nested[1]);
        Assert.Throws<InvalidModelFileException>(() => g.GetInteger("str"));

        Assert.Equal(new[] { "w", "h", "b" }, g.TensorOrder);
        var w = g.Tensors["w"];
        Assert.Equal([2L, 3L], w.Shape); // GGUF ne [3, 2] is 2 rows of 3
        var row = new float[3];
        MatMul.DequantizeRow(w.AsMatrix(), 1, row);
        Assert.Equal([4f, 5f, 6f], row);
        Assert.Equal([0.25f, -4f], g.Tensors["h"].ToFloatVector());
        Assert.Equal([3f], g.Tensors["b"].ToFloatVector());
        foreach (var t in g.Tensors.Values) Assert.Equal(0, (t.Data - w.Data) % alignment);
    }

    [Fact]
    public void FixtureGgufHasFalconMetadataAndTensors()
    {
        using var g = GgufFile.Open(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-f32.gguf"));
        Assert.Equal("falcon", g.GetString("general.architecture"));
        Assert.Equal(2, g.GetInteger("falcon.block_count"));
        Assert.Equal(4096, ((string[])g.Metadata["tokenizer.ggml.tokens"]).Length);
        Assert.Equal([4096L, 256L], g.Tensors["token_embd.weight"].Shape);
        Assert.Equal([384L, 256L], g.Tensors["blk.0.attn_qkv.weight"].Shape);
        Assert.Contains("blk.1.attn_norm_2.weight", g.Tensors.Keys);
    }

    [Fact]
    public void QuantizedFixtureKeepsItsBlockTypes()
    {
        using var g = GgufFile.Open(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q4_K_M.gguf"));
        Assert.Contains(g.Tensors.Values, t => t.Type == GgmlType.Q4_K);
        var m = g.Tensors["blk.0.attn_qkv.weight"].AsMatrix();
        Assert.Equal(GgmlTypes.ByteSize(m.Type, 256), m.RowBytes);
    }

    private static byte[] Header(uint version, ulong tensors, ulong kvs, params byte[][] rest)
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms);
        w.Write(GgufFile.Magic); w.Write(version); w.Write(tensors); w.Write(kvs);
        foreach (var r in rest) w.Write(r);
        w.Write(new byte[64]);
        return ms.ToArray();
    }

    /// <summary>Writes an image to a temporary .gguf file (deleted on dispose) for the path-taking readers.</summary>
    private sealed class TempGguf : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"harpia-{Guid.NewGuid():N}.gguf");
        public TempGguf(byte[] image) => File.WriteAllBytes(Path, image);
        public void Dispose() => File.Delete(Path);
    }

    [Fact]
    public void ReadMetadataStringStepsOverEveryValueTypeToTheKey()
    {
        var writer = EveryValueType().Add("general.architecture", GgufValueType.String, "falcon");
        writer.F32Tensor("w", [3, 2], [1, 2, 3, 4, 5, 6]);
        using var file = new TempGguf(writer.Build());
        Assert.Equal("falcon", GgufFile.ReadMetadataString(file.Path, "general.architecture"));
        Assert.Equal("falcão", GgufFile.ReadMetadataString(file.Path, "str"));
        Assert.Null(GgufFile.ReadMetadataString(file.Path, "u32")); // not a string, as GetString says
        Assert.Null(GgufFile.ReadMetadataString(file.Path, "missing"));
        using var g = GgufFile.Open(file.Path);
        Assert.Equal(g.GetString("general.architecture"), GgufFile.ReadMetadataString(file.Path, "general.architecture"));
    }

    [Fact]
    public void ReadMetadataStringFailsOnACorruptHeaderAsOpenDoes()
    {
        byte[] key = [.. Str("general.architecture"), .. BitConverter.GetBytes((uint)GgufValueType.String), .. Str("falcon")];
        byte[][] corrupt =
        [
            [.. "GGML"u8, .. new byte[40]],
            Header(1, 0, 0),
            Header(3, 0, 2, Str("k"), BitConverter.GetBytes((uint)GgufValueType.Bool), [7], key),
            Header(3, 0, 2, Str("k"), BitConverter.GetBytes(99u), key),
            Header(3, 0, 2, Str("k"), BitConverter.GetBytes((uint)GgufValueType.Array), BitConverter.GetBytes((uint)GgufValueType.String),
                BitConverter.GetBytes(3UL), Str("a"), BitConverter.GetBytes(1000UL), key),
            Header(3, 0, 2, Str("k"), BitConverter.GetBytes((uint)GgufValueType.Array), BitConverter.GetBytes((uint)GgufValueType.UInt64),
                BitConverter.GetBytes(1UL << 60), key),
        ];
        foreach (var image in corrupt)
        {
            using var file = new TempGguf(image);
            var expected = Assert.ThrowsAny<HarpiaException>(() => GgufFile.Open(file.Path).Dispose());
            var actual = Assert.ThrowsAny<HarpiaException>(() => GgufFile.ReadMetadataString(file.Path, "general.architecture"));
            Assert.Equal(expected.Message, actual.Message);
        }
    }

    private static byte[] Str(string s) => [.. BitConverter.GetBytes((ulong)s.Length), .. System.Text.Encoding.UTF8.GetBytes(s)];

    [Fact]
    public void HostileCountsAndLengthsFailWithoutAllocating()
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Contains("tensor count", ParseError(Header(3, 1UL << 60, 0)).Message);
        Assert.Contains("metadata count", ParseError(Header(3, 0, 1UL << 60)).Message);
        ParseError(Header(3, 0, 1, BitConverter.GetBytes(1UL << 62)));
        ParseError(Header(3, 0, 1, Str("k"), BitConverter.GetBytes((uint)GgufValueType.String), BitConverter.GetBytes(ulong.MaxValue)));
        var array = ParseError(Header(3, 0, 1, Str("k"), BitConverter.GetBytes((uint)GgufValueType.Array),
            BitConverter.GetBytes((uint)GgufValueType.UInt64), BitConverter.GetBytes(1UL << 60)));
        Assert.Contains("array", array.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void BadHeadersGiveClearErrors()
    {
        Assert.Contains("magic", ParseError([.. "GGML"u8, .. new byte[40]]).Message);
        Assert.Contains("version 1", ParseError(Header(1, 0, 0)).Message);
        Assert.Contains("value type 99", ParseError(Header(3, 0, 1, Str("k"), BitConverter.GetBytes(99u))).Message);
        Assert.Contains("bool value 7", ParseError(Header(3, 0, 1, Str("k"), BitConverter.GetBytes((uint)GgufValueType.Bool), [7])).Message);
        Assert.Contains("too short", ParseError(Header(3, 0, 0), 10).Message);
    }

    private static byte[] OneTensor(GgmlType type, long[] ne, int dataBytes, Action<GgufTestWriter>? extra = null)
    {
        var w = new GgufTestWriter();
        extra?.Invoke(w);
        w.Tensor("t", type, ne, new byte[dataBytes]);
        return w.Build();
    }

    [Fact]
    public void BadTensorInfosNameTheTensor()
    {
        Assert.Contains("unknown ggml type", ParseError(OneTensor((GgmlType)77, [4], 16)).Message);
        Assert.Contains("blocks", ParseError(OneTensor(GgmlType.Q8_0, [16], 34)).Message);
        Assert.Contains("dimensions", ParseError(OneTensor(GgmlType.F32, [1, 1, 1, 1, 1], 4)).Message);
        Assert.Contains("empty", ParseError(OneTensor(GgmlType.F32, [0], 0)).Message);
        var truncated = OneTensor(GgmlType.F32, [8], 32);
        var e = ParseError(truncated, truncated.Length - 1);
        Assert.Contains("'t'", e.Message);
        Assert.Contains("past the end", e.Message);
        Assert.Contains("alignment", ParseError(OneTensor(GgmlType.F32, [1], 4, w => w.Add("general.alignment", GgufValueType.UInt32, 12u))).Message);
    }

    [Fact]
    public void MisalignedAndOverlappingTensorsAreRefused()
    {
        var image = new GgufTestWriter().F32Tensor("a", [8], new float[8]).F32Tensor("b", [8], new float[8]).Build();
        // Tensor b's offset (32) is the last u64 before the padding; point it into a's bytes.
        int at = FindOffsetField(image, "b");
        BitConverter.GetBytes(0UL).CopyTo(image, at);
        Assert.Contains("overlap", ParseError(image).Message);
        BitConverter.GetBytes(36UL).CopyTo(image, at);
        Assert.Contains("aligned", ParseError(image).Message);
    }

    private static int FindOffsetField(byte[] image, string name)
    {
        var needle = Str(name);
        for (int i = 0; i < image.Length - needle.Length; i++)
            if (image.AsSpan(i, needle.Length).SequenceEqual(needle)) return i + needle.Length + 4 + 8 + 4; // n_dims, ne[0], type
        throw new InvalidOperationException();
    }
}

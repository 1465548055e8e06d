using System.Text;
using System.Text.Json.Nodes;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Tests.Formats;

public unsafe class SafetensorsTests
{
    private static string WriteSample(Fixtures.TempDir dir, string name = "model.safetensors")
    {
        string path = dir.File(name);
        var specs = new List<SafetensorsTensorSpec>
        {
            new("a.f32", GgmlType.F32, [2, 3]),
            new("b.f16", GgmlType.F16, [4]),
            new("c.bf16", GgmlType.BF16, [3, 2]),
        };
        SafetensorsWriter.Write(path, specs, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "hi" }, (i, s) =>
        {
            for (int k = 0; k < specs[i].ByteLength / (specs[i].Type == GgmlType.F32 ? 4 : 2); k++)
            {
                float v = i * 10 + k + 0.5f;
                if (specs[i].Type == GgmlType.F32) s.Write(BitConverter.GetBytes(v));
                else if (specs[i].Type == GgmlType.F16) s.Write(BitConverter.GetBytes((Half)v));
                else s.Write(BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)));
            }
        });
        return path;
    }

    [Fact]
    public void WrittenFileReadsBackWithMetadataShapesAndValues()
    {
        using var dir = new Fixtures.TempDir();
        using var file = SafetensorsFile.Open(WriteSample(dir));
        Assert.Equal("hi", file.Metadata["note"]);
        Assert.Equal(3, file.Tensors.Count);
        var a = file.Tensors["a.f32"].AsMatrix();
        Assert.Equal((2, 3, GgmlType.F32), (a.Rows, a.Cols, a.Type));
        var row = new float[3];
        MatMul.DequantizeRow(a, 1, row);
        Assert.Equal([3.5f, 4.5f, 5.5f], row);
        Assert.Equal([10.5f, 11.5f, 12.5f, 13.5f], file.Tensors["b.f16"].ToFloatVector());
        var c = file.Tensors["c.bf16"].AsMatrix();
        MatMul.DequantizeRow(c, 2, row.AsSpan(0, 2));
        Assert.Equal([24.5f, 25.5f], row[..2]);
    }

    [Fact]
    public void ShardedFixtureMapsEveryTensorToItsShard()
    {
        using var ckpt = SafetensorsCheckpoint.Open(Fixtures.Model("tiny-falcon-180b"));
        Assert.Equal(3, ckpt.Files.Count);
        Assert.Equal(27, ckpt.Tensors.Count);
        var qkv = ckpt.Tensors["transformer.h.0.self_attention.query_key_value.weight"];
        Assert.Equal([96L, 64L], qkv.Shape);
        Assert.Equal(GgmlType.BF16, qkv.Type);
        Assert.EndsWith("model-00003-of-00003.safetensors", qkv.FilePath);
    }

    private static string CopyShardedFixture(Fixtures.TempDir dir)
    {
        foreach (var f in Directory.GetFiles(Fixtures.Model("tiny-falcon-180b"), "*.safetensors*"))
            File.Copy(f, dir.File(Path.GetFileName(f)));
        foreach (var f in Directory.GetFiles(dir.Path)) File.SetAttributes(f, FileAttributes.Normal);
        return dir.File(SafetensorsCheckpoint.IndexFileName);
    }

    [Fact]
    public void IndexPointingAtTheWrongShardIsAnError()
    {
        using var dir = new Fixtures.TempDir();
        string index = CopyShardedFixture(dir);
        var json = JsonNode.Parse(File.ReadAllText(index))!;
        json["weight_map"]!["transformer.ln_f.weight"] = "model-00001-of-00003.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsCheckpoint.Open(dir.Path));
        Assert.Contains("transformer.ln_f.weight", e.Message);
    }

    [Theory]
    [InlineData("../../etc/passwd")]
    [InlineData("/etc/passwd")]
    [InlineData("missing.safetensors")]
    public void IndexNamingAFileOutsideTheFolderOrAMissingShardIsAnError(string shard)
    {
        using var dir = new Fixtures.TempDir();
        string index = CopyShardedFixture(dir);
        var json = JsonNode.Parse(File.ReadAllText(index))!;
        json["weight_map"]!["transformer.ln_f.weight"] = shard;
        File.WriteAllText(index, json.ToJsonString());
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsCheckpoint.Open(dir.Path));
        Assert.Contains(index, e.Message);
    }

    private static byte[] Image(string header, int dataBytes, ulong? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var image = new byte[8 + h.Length + dataBytes];
        BitConverter.GetBytes(declaredLength ?? (ulong)h.Length).CopyTo(image, 0);
        h.CopyTo(image, 8);
        return image;
    }

    private static Exception ParseError(byte[] image) =>
        Assert.ThrowsAny<HarpiaException>(() => ImageParser.Parse(image, image.Length, (p, n, owner) => SafetensorsFile.Parse("x.safetensors", (byte*)p, n, owner)));

    [Theory]
    [InlineData("""{"t":{"dtype":"F8_E5M2","shape":[4],"data_offsets":[0,4]}}""", 16, "dtype 'F8_E5M2'")]
    [InlineData("""{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}""", 16, "needs 16 bytes")]
    [InlineData("""{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, "run past the end")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 16, "data_offsets")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 16, "overlap")]
    [InlineData("""{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 16, "shape entry")]
    [InlineData("""{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}""", 16, "t")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16, "twice")]
    [InlineData("""{"t":[1,2]}""", 16, "not an object")]
    [InlineData("""[1,2]""", 0, "not a JSON object")]
    [InlineData("""{"t":{"dtype":"F32""", 0, "not valid JSON")]
    [InlineData("""{"__metadata__":{"a":1}}""", 0, "__metadata__")]
    public void InvalidHeadersGiveClearErrors(string header, int dataBytes, string expected)
    {
        var e = ParseError(Image(header, dataBytes));
        Assert.Contains("x.safetensors", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData(ulong.MaxValue)]
    [InlineData(1UL << 40)]
    [InlineData(0UL)]
    public void HostileHeaderLengthsAreRefusedWithoutAllocating(ulong declared)
    {
        var image = Image("""{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, declared);
        long before = GC.GetAllocatedBytesForCurrentThread();
        ParseError(image);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void EmptyAndTruncatedFilesAreClearErrors()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllBytes(dir.File("empty.safetensors"), []);
        Assert.Contains("empty", Assert.Throws<InvalidModelFileException>(() => SafetensorsFile.Open(dir.File("empty.safetensors"))).Message);
        var full = File.ReadAllBytes(WriteSample(dir));
        File.WriteAllBytes(dir.File("cut.safetensors"), full[..^3]);
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsFile.Open(dir.File("cut.safetensors")));
        Assert.Contains("c.bf16", e.Message);
        Assert.Contains("cut.safetensors", e.Message);
    }

    [Fact]
    public void FolderWithoutCheckpointIsAClearError()
    {
        using var dir = new Fixtures.TempDir();
        Assert.Contains("no model.safetensors", Assert.Throws<HarpiaException>(() => SafetensorsCheckpoint.Open(dir.Path)).Message);
    }
}

public class CheckpointFolderTests
{
    [Fact]
    public void PyTorchBinOnlyFoldersAreRefusedWithAHint()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllBytes(dir.File("pytorch_model-00001-of-00002.bin"), [1, 2, 3]);
        Assert.Contains("convert the checkpoint to safetensors", Assert.Throws<HarpiaException>(() => SafetensorsCheckpoint.Open(dir.Path)).Message);
    }

    [Fact]
    public void OversizedIndexIsRefusedBeforeReading()
    {
        using var dir = new Fixtures.TempDir();
        using (var f = File.Create(dir.File(SafetensorsCheckpoint.IndexFileName))) f.SetLength(SafetensorsCheckpoint.MaxIndexBytes + 1);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Contains("larger than", Assert.Throws<InvalidModelFileException>(() => SafetensorsCheckpoint.Open(dir.Path)).Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }
}

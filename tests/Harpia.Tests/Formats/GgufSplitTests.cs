using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Tests.Models;

namespace Harpia.Tests.Formats;

/// <summary>The h256 Q4_K_M fixture cut both ways (llama.cpp's gguf-split shards, and byte pieces) loads and runs as the whole file.</summary>
public class GgufSplitTests
{
    private static string Whole => Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q4_K_M.gguf");

    /// <summary>Writes the fixture as gguf-split shards (tensors dealt out in file order; metadata in the first) and returns the first.</summary>
    public static string WriteShards(string dir, int count, Func<int, string>? nameOf = null, Action<int, List<KeyValuePair<string, object>>>? tamper = null)
    {
        using var whole = GgufFile.Open(Whole);
        var names = whole.TensorOrder;
        int per = (names.Count + count - 1) / count;
        string first = "";
        for (int s = 0; s < count; s++)
        {
            var mine = names.Skip(s * per).Take(per).ToList();
            var kv = new List<KeyValuePair<string, object>>();
            if (s == 0) kv.AddRange(whole.Metadata.Where(p => p.Key != "general.alignment"));
            kv.Add(new(GgufFile.SplitIndexKey, (ushort)s));
            kv.Add(new(GgufFile.SplitCountKey, (ushort)count));
            kv.Add(new(GgufFile.SplitTensorsKey, names.Count));
            tamper?.Invoke(s, kv);
            string path = Path.Combine(dir, nameOf?.Invoke(s) ?? $"model-Q4_K_M-{s + 1:D5}-of-{count:D5}.gguf");
            if (s == 0) first = path;
            var infos = mine.Select(n => new GgufWriter.TensorInfo(n, whole.Tensors[n].Type, GgufShape(whole.Tensors[n].Shape))).ToList();
            using var writer = GgufWriter.Create(path, kv, infos, overwrite: true);
            foreach (var n in mine) writer.WriteTensorData(PackedBytes(whole.Tensors[n]));
            writer.Commit();
        }
        return first;
    }

    private static long[] GgufShape(long[] rowMajor) => rowMajor;

    private static unsafe byte[] PackedBytes(TensorEntry t) => new ReadOnlySpan<byte>(t.Data, checked((int)t.ByteLength)).ToArray();

    /// <summary>Cuts the whole file into pieces at the given offsets: a cut inside the header and one inside a tensor.</summary>
    public static string WriteBytePieces(string dir, params long[] cuts)
    {
        byte[] all = File.ReadAllBytes(Whole);
        long[] bounds = [0, .. cuts, all.Length];
        for (int i = 0; i + 1 < bounds.Length; i++)
            File.WriteAllBytes(Path.Combine(dir, "model-Q4_K_M.gguf-split-" + (char)('a' + i)), all[(int)bounds[i]..(int)bounds[i + 1]]);
        return Path.Combine(dir, "model-Q4_K_M.gguf-split-a");
    }

    private static void AssertRunsAsTheWholeFile(string path)
    {
        using var whole = FalconModel.Load(Whole);
        using var parts = FalconModel.Load(path);
        Assert.Equal(whole.Source.Tensors.Count, parts.Source.Tensors.Count);
        foreach (var prompt in FalconGoldenTests.Golden("tiny-falcon-180b-h256"))
        {
            Assert.Equal(FalconGoldenTests.FullPass(whole, prompt.Ids, allLogits: true), FalconGoldenTests.FullPass(parts, prompt.Ids, allLogits: true));
        }
    }

    [Fact]
    public void GgufSplitShardsOpenFromTheFirstAndRunAsTheWholeFile()
    {
        using var dir = new Fixtures.TempDir();
        AssertRunsAsTheWholeFile(WriteShards(dir.Path, 3));
    }

    [Fact]
    public void BytePiecesRunAsTheWholeFileWithoutConcatenating()
    {
        using var dir = new Fixtures.TempDir();
        long length = new FileInfo(Whole).Length;
        // One cut inside the header (the tokenizer-free metadata and tensor infos), one in the middle of the tensor data.
        string first = WriteBytePieces(dir.Path, 1000, length / 2 + 3);
        AssertRunsAsTheWholeFile(first);
        Assert.Equal(3, Directory.GetFiles(dir.Path).Length); // nothing was written beside the pieces
    }

    [Fact]
    public void PlanReadsASplitFileAsTheWholeOne()
    {
        var whole = Harpia.Planning.ModelSpec.Resolve(Whole);
        long Bytes(Harpia.Planning.ModelSpec s) => Harpia.Planning.Precision.AsStored(s).Weights(s).Bytes;
        using var pieces = new Fixtures.TempDir();
        string first = WriteBytePieces(pieces.Path, 1000, new FileInfo(Whole).Length / 2 + 3);
        using var shards = new Fixtures.TempDir();
        WriteShards(shards.Path, 3);
        foreach (var split in new[] { Harpia.Planning.ModelSpec.Resolve(first), Harpia.Planning.ModelSpec.Resolve(pieces.Path), Harpia.Planning.ModelSpec.Resolve(shards.Path) })
        {
            Assert.Equal("Q4_K_M", split.StoredFormat);
            Assert.Equal(whole.ParameterCount, split.ParameterCount);
            Assert.Equal(Bytes(whole), Bytes(split));
        }
    }

    [Fact]
    public void AMissingShardIsNamed()
    {
        using var dir = new Fixtures.TempDir();
        string first = WriteShards(dir.Path, 3);
        File.Delete(Path.Combine(dir.Path, "model-Q4_K_M-00002-of-00003.gguf"));
        var e = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(first).Dispose());
        Assert.Contains("model-Q4_K_M-00002-of-00003.gguf", e.Message);
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public void AForeignShardIsNamed()
    {
        using var dir = new Fixtures.TempDir();
        string first = WriteShards(dir.Path, 3, tamper: (s, kv) =>
        {
            if (s != 2) return;
            kv.RemoveAll(p => p.Key == GgufFile.SplitIndexKey);
            kv.Add(new(GgufFile.SplitIndexKey, (ushort)1));
        });
        var e = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(first).Dispose());
        Assert.Contains("model-Q4_K_M-00003-of-00003.gguf", e.Message);
        Assert.Contains("not shard 3 of 3", e.Message);
    }

    [Fact]
    public void AWrongTensorCountIsRefused()
    {
        using var dir = new Fixtures.TempDir();
        string first = WriteShards(dir.Path, 2, tamper: (s, kv) =>
        {
            kv.RemoveAll(p => p.Key == GgufFile.SplitTensorsKey);
            kv.Add(new(GgufFile.SplitTensorsKey, 5));
        });
        var e = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(first).Dispose());
        Assert.Contains("split.tensors.count says 5", e.Message);
    }

    [Fact]
    public void OpeningALaterShardOrPieceSaysWhichToOpen()
    {
        using var dir = new Fixtures.TempDir();
        WriteShards(dir.Path, 2);
        var e = Assert.ThrowsAny<HarpiaException>(() => GgufFile.Open(Path.Combine(dir.Path, "model-Q4_K_M-00002-of-00002.gguf")).Dispose());
        Assert.Contains("first shard", e.Message);
        using var dir2 = new Fixtures.TempDir();
        WriteBytePieces(dir2.Path, 5000);
        e = Assert.ThrowsAny<HarpiaException>(() => GgufFile.Open(Path.Combine(dir2.Path, "model-Q4_K_M.gguf-split-b")).Dispose());
        Assert.Contains("split-a", e.Message);
    }

    [Fact]
    public void AMissingBytePieceIsNamed()
    {
        using var dir = new Fixtures.TempDir();
        long length = new FileInfo(Whole).Length;
        string first = WriteBytePieces(dir.Path, length / 3, 2 * length / 3);
        File.Delete(Path.Combine(dir.Path, "model-Q4_K_M.gguf-split-b"));
        var e = Assert.ThrowsAny<HarpiaException>(() => GgufFile.Open(first).Dispose());
        Assert.Contains("model-Q4_K_M.gguf-split-b", e.Message);
        File.Delete(Path.Combine(dir.Path, "model-Q4_K_M.gguf-split-c"));
        e = Assert.ThrowsAny<HarpiaException>(() => GgufFile.Open(first).Dispose());
        Assert.Contains("concatenated", e.Message);
    }
}

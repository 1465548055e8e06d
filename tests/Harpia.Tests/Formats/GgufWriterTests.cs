using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Tests.Formats;

public unsafe class GgufWriterTests
{
    private static readonly string Dir = CreateDir();

    private static string CreateDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"harpia-gguf-writer-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        Fixtures.DeleteAtExit(dir);
        return dir;
    }

    private static string TempPath(string name)
    {
        string dir = Dir;
        string path = Path.Combine(dir, name);
        File.Delete(path);
        File.Delete(path + GgufWriter.PartialSuffix);
        return path;
    }

    private static readonly KeyValuePair<string, object>[] EveryType =
    [
        new("t.u8", (byte)200), new("t.i8", (sbyte)-100), new("t.u16", (ushort)60000), new("t.i16", (short)-30000),
        new("t.u32", 4_000_000_000u), new("t.i32", -2_000_000_000), new("t.f32", 1.5f), new("t.bool", true),
        new("t.string", "Falcon — ünïcode"), new("t.u64", ulong.MaxValue), new("t.i64", long.MinValue), new("t.f64", Math.PI),
        new("t.arr.u8", new byte[] { 1, 2, 3 }), new("t.arr.i8", new sbyte[] { -1, 2 }), new("t.arr.u16", new ushort[] { 7 }),
        new("t.arr.i16", new short[] { -7, 8 }), new("t.arr.u32", new uint[] { 1, uint.MaxValue }), new("t.arr.i32", new[] { -1, 3, 5 }),
        new("t.arr.f32", new[] { 0.25f, -2f }), new("t.arr.bool", new[] { true, false, true }),
        new("t.arr.string", new[] { "a", "", "Ġthe", ">>TITLE<<" }), new("t.arr.u64", new ulong[] { 9 }),
        new("t.arr.i64", new long[] { -9, 10 }), new("t.arr.f64", new[] { 1e300, -0.5 }),
        new("t.arr.empty", Array.Empty<string>()),
        new("t.arr.nested", new object[] { new[] { 1, 2 }, new[] { 3 } }),
    ];

    [Fact]
    public void EveryMetadataTypeAndTensorRoundTripsThroughTheReader()
    {
        string path = TempPath("roundtrip.gguf");
        var rnd = new Random(1);
        var f32 = Enumerable.Range(0, 3 * 5).Select(_ => (float)rnd.NextDouble()).ToArray();
        var q8 = new byte[2 * 34];
        rnd.NextBytes(q8);
        q8[0] = 0; q8[1] = 0x3c; q8[34] = 0; q8[35] = 0x3c; // finite f16 scales
        var bias = new[] { 1f, 2f, 3f };
        var tensors = new List<GgufWriter.TensorInfo>
        {
            new("a.weight", GgmlType.F32, [3, 5]),       // 60 bytes: the next tensor needs padding to 32
            new("b.weight", GgmlType.Q8_0, [2, 32]),
            new("c.bias", GgmlType.F32, [3]),
        };
        using (var w = GgufWriter.Create(path, EveryType, tensors, overwrite: false))
        {
            w.WriteTensorData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(f32.AsSpan()));
            w.WriteTensorData(q8.AsSpan(0, 34)); // a tensor may arrive in pieces
            w.WriteTensorData(q8.AsSpan(34));
            w.WriteTensorData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(bias.AsSpan()));
            w.Commit();
        }
        Assert.False(File.Exists(path + GgufWriter.PartialSuffix));

        using var g = GgufFile.Open(path);
        Assert.Equal(3u, g.Version);
        Assert.Equal(32, g.Alignment);
        Assert.Equal(32u, g.Metadata["general.alignment"]);
        foreach (var (key, value) in EveryType)
        {
            var read = g.Metadata[key];
            if (value.GetType() == typeof(object[]) && value is object[] nested) // (a string[] is an object[] too)
            {
                var r = Assert.IsType<object[]>(read);
                Assert.Equal(nested.Length, r.Length);
                for (int i = 0; i < nested.Length; i++) Assert.Equal((int[])nested[i], (int[])r[i]);
            }
            else
            {
                Assert.Equal(value.GetType(), read.GetType());
                Assert.Equal(value, read);
            }
        }
        Assert.Equal(["a.weight", "b.weight", "c.bias"], g.TensorOrder);
        Assert.Equal(0, g.DataOffset % 32);
        var a = g.Tensors["a.weight"];
        Assert.Equal([3L, 5L], a.Shape);
        Assert.Equal(f32, new ReadOnlySpan<float>(a.Data, 15).ToArray());
        var b = g.Tensors["b.weight"];
        Assert.Equal(GgmlType.Q8_0, b.Type);
        Assert.Equal(q8, new ReadOnlySpan<byte>(b.Data, q8.Length).ToArray());
        Assert.Equal(bias, g.Tensors["c.bias"].ToFloatVector());
        // Offsets are aligned relative to the data region: a.weight at 0, b.weight at 64 (60 bytes rounded up to 32),
        // c.bias at 160 (64 + 68 rounded up); the padding between is zeros.
        Assert.Equal(64, b.Data - a.Data);
        Assert.Equal(160, g.Tensors["c.bias"].Data - a.Data);
        Assert.All(new ReadOnlySpan<byte>(a.Data + 60, 4).ToArray(), x => Assert.Equal(0, x));
        Assert.Equal(g.DataOffset + 160 + 12, new FileInfo(path).Length);
    }

    [Fact]
    public void AnUnfinishedWriteLeavesNothingUnderTheOutputName()
    {
        string path = TempPath("unfinished.gguf");
        using (var w = GgufWriter.Create(path, [], [new("x", GgmlType.F32, [8])], overwrite: false))
        {
            Assert.True(File.Exists(path + GgufWriter.PartialSuffix));
            w.WriteTensorData(new byte[16]);               // half the tensor
            Assert.Throws<InvalidOperationException>(w.Commit);
        }
        Assert.False(File.Exists(path));
        Assert.False(File.Exists(path + GgufWriter.PartialSuffix));
    }

    [Fact]
    public void AnExistingOutputIsRefusedUnlessOverwriteIsAsked()
    {
        string path = TempPath("existing.gguf");
        File.WriteAllText(path, "keep me");
        var e = Assert.Throws<HarpiaException>(() => GgufWriter.Create(path, [], [], overwrite: false));
        Assert.Contains("already exists", e.Message);
        Assert.Contains("--force", e.Message);
        Assert.Equal("keep me", File.ReadAllText(path));
        using (var w = GgufWriter.Create(path, [new("k", "v")], [], overwrite: true))
        {
            Assert.Equal("keep me", File.ReadAllText(path)); // replaced only at commit
            w.Commit();
        }
        using var g = GgufFile.Open(path);
        Assert.Equal("v", g.GetString("k"));
    }

    [Fact]
    public void TooManyBytesOrABadShapeIsRejected()
    {
        string path = TempPath("bad.gguf");
        Assert.Throws<HarpiaException>(() => GgufWriter.Create(path, [], [new("q", GgmlType.Q4_K, [2, 100])], overwrite: false));
        using var w = GgufWriter.Create(path, [], [new("x", GgmlType.F32, [1])], overwrite: false);
        Assert.Throws<InvalidOperationException>(() => w.WriteTensorData(new byte[8]));
    }
}

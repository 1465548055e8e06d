using System.Diagnostics;
using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Tests.Formats;

/// <summary>
/// Seeded random byte flips and truncations of valid headers (tiny files written here, and the fixtures):
/// every outcome is a clean load or a <see cref="HarpiaException"/> — never another exception, a hang, or a
/// large allocation.
/// </summary>
public unsafe class FormatFuzzTests
{
    private const long MaxAllocation = 100L << 20;

    private delegate ITensorSource Parser(byte* data, long length, object owner);

    private static void Fuzz(byte[] image, int headerBytes, Parser parse, int iterations, int seed)
    {
        var task = Task.Run(() =>
        {
            var random = new Random(seed);
            var pristine = (byte[])image.Clone();
            int loads = 0, errors = 0;
            fixed (byte* p = image)
            {
                for (int it = 0; it < iterations; it++)
                {
                    Array.Copy(pristine, image, Math.Min(image.Length, headerBytes + 64));
                    long length = image.Length;
                    int mode = random.Next(4);
                    if (mode == 0) length = random.NextInt64(0, image.Length + 1); // truncation anywhere
                    int flips = mode == 0 ? 0 : 1 + random.Next(mode == 3 ? 16 : 4);
                    for (int f = 0; f < flips; f++)
                    {
                        int at = random.Next(headerBytes);
                        image[at] = mode switch
                        {
                            1 => (byte)(image[at] ^ (1 << random.Next(8))), // bit flip
                            2 => (byte)random.Next(256),                  // random byte
                            _ => random.Next(2) == 0 ? (byte)0xFF : (byte)0, // extremes make huge counts
                        };
                    }
                    long before = GC.GetAllocatedBytesForCurrentThread();
                    try
                    {
                        using var source = parse(p, length, image);
                        foreach (var t in source.Tensors.Values)
                            Assert.True(t.Data >= p && t.Data + t.ByteLength <= p + length, $"tensor '{t.Name}' outside the file");
                        loads++;
                    }
                    catch (HarpiaException e)
                    {
                        Assert.False(string.IsNullOrWhiteSpace(e.Message));
                        errors++;
                    }
                    long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                    Assert.True(allocated < MaxAllocation, $"iteration {it}: allocated {allocated} bytes");
                }
            }
            Array.Copy(pristine, image, image.Length);
            Assert.True(errors > iterations / 10, $"only {errors} of {iterations} mutations were rejected");
            return loads;
        });
        Assert.True(task.Wait(TimeSpan.FromSeconds(120)), "fuzzing hung");
        task.GetAwaiter().GetResult();
    }

    private static readonly Parser Safetensors = (d, n, o) => SafetensorsFile.Parse("fuzz.safetensors", d, n, o);
    private static readonly Parser Gguf = (d, n, o) => GgufFile.Parse("fuzz.gguf", d, n, o);

    private static int SafetensorsHeaderBytes(byte[] image) => 8 + (int)BitConverter.ToUInt64(image, 0);

    [Fact]
    public void SafetensorsTinyFileSurvivesMutations()
    {
        using var dir = new Fixtures.TempDir();
        var specs = new List<SafetensorsTensorSpec> { new("w", GgmlType.BF16, [8, 4]), new("b", GgmlType.F32, [8]), new("h", GgmlType.F16, [2, 2, 2]) };
        SafetensorsWriter.Write(dir.File("t.safetensors"), specs, new Dictionary<string, string> { ["format"] = "pt" },
            (i, s) => s.Write(new byte[specs[i].ByteLength]));
        var image = File.ReadAllBytes(dir.File("t.safetensors"));
        Fuzz(image, SafetensorsHeaderBytes(image), Safetensors, 3000, seed: 1);
    }

    [Fact]
    public void SafetensorsFixtureHeaderSurvivesMutations()
    {
        var image = File.ReadAllBytes(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model.safetensors"));
        Fuzz(image, SafetensorsHeaderBytes(image), Safetensors, 1500, seed: 2);
    }

    [Fact]
    public void GgufTinyFileSurvivesMutations()
    {
        var image = new GgufTestWriter()
            .Add("general.architecture", GgufValueType.String, "falcon")
            .Add("n", GgufValueType.UInt32, 7u)
            .Add("list", GgufValueType.Array, (GgufValueType.String, (System.Collections.IList)new[] { "a", "bc" }))
            .Add("scores", GgufValueType.Array, (GgufValueType.Float32, (System.Collections.IList)new[] { 1f, 2f }))
            .F32Tensor("w", [4, 2], new float[8])
            .F32Tensor("b", [4], new float[4])
            .Build();
        int header = image.Length - 8 * 4 - 4 * 4;
        Fuzz(image, header, Gguf, 3000, seed: 3);
    }

    [Fact]
    public void GgufFixtureHeaderSurvivesMutations()
    {
        var image = File.ReadAllBytes(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-f32.gguf"));
        long dataOffset;
        fixed (byte* p = image) using (var g = GgufFile.Parse("f", p, image.Length, image)) dataOffset = g.DataOffset;
        // Mutate the whole header region: the token list dominates it, the tensor infos sit at its end.
        Fuzz(image, (int)dataOffset, Gguf, 1000, seed: 4);
        var tail = new Random(5);
        // A second pass concentrated on the last 2 KiB (tensor infos), where offsets and shapes live.
        var sw = Stopwatch.StartNew();
        FuzzTail(image, (int)dataOffset, 1000, tail);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(120));
    }

    private static void FuzzTail(byte[] image, int dataOffset, int iterations, Random random)
    {
        var pristine = (byte[])image.Clone();
        fixed (byte* p = image)
        {
            for (int it = 0; it < iterations; it++)
            {
                Array.Copy(pristine, image, dataOffset);
                for (int f = 0; f < 1 + random.Next(4); f++)
                {
                    int at = dataOffset - 1 - random.Next(Math.Min(2048, dataOffset));
                    image[at] = (byte)random.Next(256);
                }
                long before = GC.GetAllocatedBytesForCurrentThread();
                try { using var g = GgufFile.Parse("fuzz.gguf", p, image.Length, image); }
                catch (HarpiaException) { }
                Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < MaxAllocation);
            }
        }
        Array.Copy(pristine, image, image.Length);
    }
}

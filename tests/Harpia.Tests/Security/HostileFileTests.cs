using System.Diagnostics;
using System.Text.Json.Nodes;
using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Tests.Formats;
using Harpia.Tokenization;

namespace Harpia.Tests.Security;

/// <summary>
/// Issue 18, cases 4, 5, 6, 10 and 12: files are untrusted input. Non-regular files are refused by name before any
/// open (a FIFO used to hang every command), JSON is read through a cap (/dev/zero used to grow to 4 GB), header
/// integers too large for their use say so by name, and the messages name the real problem.
/// </summary>
public sealed class HostileFileTests : IDisposable
{
    private readonly Fixtures.TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private static readonly string TinyFalcon = Fixtures.Model("tiny-falcon-7b");

    private string Fifo(string name)
    {
        string path = _dir.File(name);
        using var mk = Process.Start(new ProcessStartInfo("mkfifo", path) { UseShellExecute = false })!;
        mk.WaitForExit();
        Assert.Equal(0, mk.ExitCode);
        return path;
    }

    /// <summary>Runs a loader that must fail at once; a guard (not a measurement) turns a hang into a failure.</summary>
    private static HarpiaException Refused(Action load)
    {
        var task = Task.Run(load);
        try { Assert.True(task.Wait(TimeSpan.FromSeconds(60)), "the loader hung on a non-regular file"); }
        catch (AggregateException) { }
        var ex = Assert.IsAssignableFrom<HarpiaException>(task.Exception?.InnerException);
        return ex;
    }

    private string ModelFolderWith(string replaced, Func<string, string> make)
    {
        string folder = Path.Combine(_dir.Path, "model");
        Directory.CreateDirectory(folder);
        foreach (var f in Directory.GetFiles(TinyFalcon))
            if (Path.GetFileName(f) != replaced) File.CreateSymbolicLink(Path.Combine(folder, Path.GetFileName(f)), f);
        make(Path.Combine(folder, replaced));
        return folder;
    }

    [Fact]
    public void AFifoAsConfigJsonIsRefusedByName()
    {
        string folder = ModelFolderWith("config.json", p => { File.Move(Fifo("cfg-fifo"), p); return p; });
        var ex = Refused(() => FalconModel.Load(folder).Dispose());
        Assert.Contains("config.json", ex.Message);
        Assert.Contains("FIFO", ex.Message);
    }

    [Fact]
    public void AFifoAsModelSafetensorsIsRefusedByName()
    {
        string folder = ModelFolderWith("model.safetensors", p => { File.Move(Fifo("st-fifo"), p); return p; });
        var ex = Refused(() => FalconModel.Load(folder).Dispose());
        Assert.Contains("model.safetensors", ex.Message);
        Assert.Contains("FIFO", ex.Message);
    }

    [Fact]
    public void AFifoAsAGgufFileIsRefusedByName()
    {
        string fifo = Fifo("model.gguf");
        var ex = Refused(() => FalconModel.Load(fifo).Dispose());
        Assert.Contains("model.gguf", ex.Message);
        Assert.Contains("FIFO", ex.Message);
        Assert.False(GgufFile.HasGgufMagic(fifo));
    }

    [Fact]
    public void DevicesBehindJsonNamesAreRefusedNotReadForever()
    {
        string config = ModelFolderWith("config.json", p => { File.CreateSymbolicLink(p, "/dev/zero"); return p; });
        var ex = Refused(() => FalconConfig.FromJsonFile(config));
        Assert.Contains("character device", ex.Message);

        string tokenizer = _dir.File("tokenizer.json");
        File.CreateSymbolicLink(tokenizer, "/dev/urandom");
        var tok = Refused(() => HfTokenizer.Load(tokenizer));
        Assert.Contains("character device", tok.Message);
        var fifoTok = Refused(() => HfTokenizer.Load(Fifo("tok-fifo.json")));
        Assert.Contains("FIFO", fifoTok.Message);
    }

    [Fact]
    public void JsonIsReadThroughASizeCap()
    {
        string big = _dir.File("big.json");
        File.WriteAllText(big, "[" + new string(' ', 5000) + "]");
        var ex = Assert.Throws<HarpiaException>(() => UntrustedFile.ReadJsonDocument(big, "tokenizer file", maxBytes: 4096));
        Assert.Contains("larger than 4,096 bytes", ex.Message);
        using var ok = UntrustedFile.ReadJsonDocument(big, "tokenizer file", maxBytes: 8192);
        Assert.Equal(0, ok.RootElement.GetArrayLength());
    }

    [Theory]
    [InlineData(new byte[] { 0x47, 0x47 }, "shorter than the 4-byte magic")]
    [InlineData(new byte[] { 0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0 }, "does not start with the magic")]
    public void AGgufNamedFileThatIsNotGgufSaysSo(byte[] content, string expected)
    {
        string path = _dir.File("broken.gguf");
        File.WriteAllBytes(path, content);
        var ex = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(path).Dispose());
        Assert.Contains("broken.gguf", ex.Message);
        Assert.Contains(expected, ex.Message);
        Assert.DoesNotContain("config.json", ex.Message);
    }

    [Fact]
    public void ASymlinkLoopAndAnUnreadableFolderSaySo()
    {
        string a = Path.Combine(_dir.Path, "loop-a"), b = Path.Combine(_dir.Path, "loop-b");
        Directory.CreateSymbolicLink(a, b);
        Directory.CreateSymbolicLink(b, a);
        var loop = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(a).Dispose());
        Assert.Contains("symbolic link", loop.Message);
        Assert.DoesNotContain("config.json", loop.Message);

        if (OperatingSystem.IsWindows() || Environment.UserName == "root") return; // root reads any folder: no permission error to see
        string locked = Path.Combine(_dir.Path, "locked");
        Directory.CreateDirectory(locked);
        File.SetUnixFileMode(locked, UnixFileMode.None);
        try
        {
            var ex = Assert.ThrowsAny<HarpiaException>(() => FalconModel.Load(locked).Dispose());
            Assert.Contains("permission denied", ex.Message);
        }
        finally { File.SetUnixFileMode(locked, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute); }
    }

    private static GgufTestWriter FalconGguf(params (string Key, GgufValueType Type, object Value)[] overrides)
    {
        var values = new Dictionary<string, (GgufValueType, object)>
        {
            ["general.architecture"] = (GgufValueType.String, "falcon"),
            ["falcon.embedding_length"] = (GgufValueType.UInt32, 8u),
            ["falcon.attention.head_count"] = (GgufValueType.UInt32, 2u),
            ["falcon.block_count"] = (GgufValueType.UInt32, 1u),
        };
        foreach (var (k, t, v) in overrides) values[k] = (t, v);
        var w = new GgufTestWriter();
        foreach (var (k, (t, v)) in values) w.Add(k, t, v);
        return w.F32Tensor("token_embd.weight", [8, 16], new float[128]);
    }

    private static unsafe FalconConfig ConfigOf(byte[] image) =>
        ImageParser.Parse(image, image.Length, (p, n, owner) => FalconConfig.FromGguf(GgufFile.Parse("m.gguf", (byte*)p, n, owner)));

    [Theory]
    [InlineData("falcon.embedding_length", 2147483648u)]
    [InlineData("falcon.feed_forward_length", 4294967295u)]
    [InlineData("falcon.context_length", 2147483648u)]
    [InlineData("tokenizer.ggml.eos_token_id", 4294967295u)]
    [InlineData("tokenizer.ggml.bos_token_id", 4294967295u)]
    public void GgufIntegersTooLargeForTheirUseAreNamed(string key, uint value)
    {
        var ex = Assert.ThrowsAny<HarpiaException>(() => ConfigOf(FalconGguf((key, GgufValueType.UInt32, value)).Build()));
        Assert.Equal($"m.gguf: {key} = {value} is too large for a 32-bit size or id", ex.Message);
    }

    [Fact]
    public void AnAlignmentOfTheWrongTypeSaysItsType()
    {
        var ex = Assert.ThrowsAny<HarpiaException>(() => ConfigOf(FalconGguf(("general.alignment", GgufValueType.String, "32")).Build()));
        Assert.Contains("general.alignment must be a u32, got the string 32", ex.Message);
    }

    private static JsonObject Config(string key, JsonNode value) => new()
    {
        ["model_type"] = "falcon", ["hidden_size"] = 64, ["num_attention_heads"] = 4, ["num_hidden_layers"] = 2,
        ["vocab_size"] = 100, [key] = value,
    };

    [Theory]
    [InlineData("hidden_size", 1e9, "hidden_size = 1000000000 is too large for a Falcon model")]
    [InlineData("hidden_size", 2147483648d, "hidden_size = 2147483648 is too large for a 32-bit integer")]
    [InlineData("eos_token_id", 1e9, "eos_token_id = 1000000000 is outside the vocabulary (0 to 99)")]
    [InlineData("eos_token_id", -1d, "eos_token_id = -1 is outside the vocabulary (0 to 99)")]
    [InlineData("bos_token_id", 100d, "bos_token_id = 100 is outside the vocabulary (0 to 99)")]
    public void ConfigValuesOutOfRangeAreNamedWithTheirValue(string key, double value, string expected)
    {
        var ex = Assert.ThrowsAny<HarpiaException>(() => FalconConfig.FromJson(Config(key, value), "config.json"));
        Assert.Equal("config.json: " + expected, ex.Message[..Math.Min(ex.Message.Length, ("config.json: " + expected).Length)]);
    }

    [Fact]
    public void AGgufEosOutsideTheVocabularyIsRefused()
    {
        var ex = Assert.ThrowsAny<HarpiaException>(() => ConfigOf(FalconGguf(("tokenizer.ggml.eos_token_id", GgufValueType.UInt32, 1_000_000_000u)).Build()));
        Assert.Contains("eos_token_id = 1000000000 is outside the vocabulary (0 to 15)", ex.Message);
    }
}

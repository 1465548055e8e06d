using System.Collections.Concurrent;
using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Quantization;

namespace Harpia.Tests.Quantization;

/// <summary>
/// tiny-falcon-180b-h256 as a Hugging Face folder with a tokenizer.json (the fixture folder has none: its tokenizer is
/// the one in model-f32.gguf, rebuilt here as tokenizer.json), and the GGUF files Harpia's quantizer writes from it,
/// each written once per test run and shared by the tests that read them.
/// </summary>
public static class QuantizedFiles
{
    public static string Fixture => Fixtures.Model("tiny-falcon-180b-h256");

    public static string Root { get; } = CreateRoot();

    /// <summary>A folder with config.json, model.safetensors (linked) and tokenizer.json.</summary>
    public static string HfFolder { get; } = CreateHfFolder();

    private static readonly ConcurrentDictionary<string, Lazy<string>> Written = new();

    /// <summary>The GGUF <c>harpia quantize</c>'s library code writes for <paramref name="type"/>.</summary>
    public static string Gguf(string type) => Written.GetOrAdd(type.ToUpperInvariant(), t => new Lazy<string>(() =>
    {
        string path = Path.Combine(Root, $"harpia-{t}.gguf");
        FalconQuantizer.WriteGguf(new QuantizeRequest(HfFolder, path, QuantizationScheme.Parse(t)) { Force = true, Threads = 2 });
        return path;
    })).Value;

    private static string CreateRoot()
    {
        string root = Path.Combine(Path.GetTempPath(), $"harpia-quant-tests-{Environment.ProcessId}");
        Directory.CreateDirectory(root);
        Fixtures.DeleteAtExit(root);
        return root;
    }

    private static string CreateHfFolder()
    {
        string dir = Path.Combine(Root, "tiny-falcon-180b-h256");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(Fixture, "config.json"), Path.Combine(dir, "config.json"), overwrite: true);
        string link = Path.Combine(dir, "model.safetensors");
        if (!File.Exists(link)) File.CreateSymbolicLink(link, Path.Combine(Fixture, "model.safetensors"));
        using var gguf = GgufFile.Open(Path.Combine(Fixture, "model-f32.gguf"));
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), GgufTokenizerJson.Build(gguf).ToJsonString());
        return dir;
    }
}

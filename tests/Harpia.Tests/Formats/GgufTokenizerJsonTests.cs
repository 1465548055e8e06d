using System.Text.Json.Nodes;
using Harpia.Formats;

namespace Harpia.Tests.Formats;

public class GgufTokenizerJsonTests
{
    [Fact]
    public void FixtureGgufTokenizerBecomesFalconStyleTokenizerJson()
    {
        using var gguf = GgufFile.Open(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-f32.gguf"));
        var json = GgufTokenizerJson.Build(gguf);
        var vocab = json["model"]!["vocab"]!.AsObject();
        Assert.Equal(4096, vocab.Count);
        Assert.Equal(11, (int)vocab["<|endoftext|>"]!);
        Assert.Equal(3856, json["model"]!["merges"]!.AsArray().Count);
        Assert.Equal("Ġ t", (string)json["model"]!["merges"]![0]!);
        var added = json["added_tokens"]!.AsArray();
        Assert.Equal(12, added.Count);
        Assert.True((bool)added[11]!["special"]!);

        // The structure matches Falcon's own tokenizer.json, apart from the vocabulary size.
        var real = JsonNode.Parse(File.ReadAllText(Fixtures.Path_("falcon", "tokenizer.json")))!;
        Assert.True(JsonNode.DeepEquals(real["pre_tokenizer"], json["pre_tokenizer"]));
        Assert.True(JsonNode.DeepEquals(real["decoder"], json["decoder"]));
        Assert.True(JsonNode.DeepEquals(real["added_tokens"], json["added_tokens"]));
        foreach (var (token, id) in vocab) Assert.Equal((int)id!, (int)real["model"]!["vocab"]![token]!);
        var realMerges = real["model"]!["merges"]!.AsArray();
        for (int i = 0; i < 3856; i++) Assert.Equal((string)realMerges[i]!, (string)json["model"]!["merges"]![i]!);
    }

    [Fact]
    public void OtherTokenizerKindsAreRefusedByName()
    {
        var image = new GgufTestWriter()
            .Add("tokenizer.ggml.model", GgufValueType.String, "llama")
            .Add("tokenizer.ggml.tokens", GgufValueType.Array, (GgufValueType.String, (System.Collections.IList)new[] { "a" }))
            .Build();
        using var dir = new Fixtures.TempDir();
        File.WriteAllBytes(dir.File("t.gguf"), image);
        using var gguf = GgufFile.Open(dir.File("t.gguf"));
        Assert.Contains("'llama'", Assert.Throws<HarpiaException>(() => GgufTokenizerJson.Build(gguf)).Message);
    }
}

using Harpia.Tokenization;

namespace Harpia.Tests.Tokenization;

/// <summary>A missing or malformed tokenizer.json gives one clear error naming the file and the problem.</summary>
public class TokenizerLoadErrorTests
{
    private const string Minimal = """
        {"added_tokens": [], "normalizer": null, "pre_tokenizer": {PRE}, "post_processor": null, "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [MERGES]}}
        """;

    private static string Json(string pre = "null", string merges = "\"a b\"") => Minimal.Replace("{PRE}", pre).Replace("[MERGES]", $"[{merges}]");

    private static InvalidModelFileException LoadError(string content, out string path)
    {
        using var dir = new Fixtures.TempDir();
        path = dir.File("tokenizer.json");
        File.WriteAllText(path, content);
        string p = path;
        return Assert.Throws<InvalidModelFileException>(() => HfTokenizer.Load(p));
    }

    [Fact]
    public void MinimalFileLoadsAndMerges()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), Json());
        var tok = HfTokenizer.Load(dir.Path); // a folder means <folder>/tokenizer.json
        Assert.Equal([2, 0], tok.Encode("aba"));
        Assert.Equal("aba", tok.Decode([2, 0]));
        Assert.Equal(3, tok.VocabSize);
    }

    [Fact]
    public void MissingFileNamesThePath()
    {
        var e = Assert.Throws<InvalidModelFileException>(() => HfTokenizer.Load("/no/such/dir/tokenizer.json"));
        Assert.Contains("/no/such/dir/tokenizer.json", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void FolderWithoutTokenizerJson()
    {
        using var dir = new Fixtures.TempDir();
        var e = Assert.Throws<InvalidModelFileException>(() => HfTokenizer.Load(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "tokenizer.json"), e.Message);
        Assert.Contains("no tokenizer.json", e.Message);
    }

    [Theory]
    [InlineData("{\"model\": ", "not valid JSON")]
    [InlineData("", "not valid JSON")]
    [InlineData("[1, 2]", "top level must be a JSON object")]
    [InlineData("{}", "model is missing")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab is missing")]
    [InlineData("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "model.type 'Unigram' is not supported")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}", "model.vocab['a'] must be a non-negative integer id")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2000000000}, \"merges\": []}}", "not a dense vocabulary")]
    public void MalformedFilesNameTheProblem(string content, string problem)
    {
        var e = LoadError(content, out string path);
        Assert.Contains(path, e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void UnknownComponentIsRefusedByName()
    {
        var e = LoadError(Json(pre: "{\"type\": \"BertPreTokenizer\"}"), out _);
        Assert.Contains("pre_tokenizer: pre_tokenizer type 'BertPreTokenizer' is not supported", e.Message);
    }

    [Fact]
    public void MergeOfUnknownTokenIsReported()
    {
        var e = LoadError(Json(merges: "\"a c\""), out _);
        Assert.Contains("model.merges[0]: 'c' is not in model.vocab", e.Message);
    }

    [Fact]
    public void BadMergeLineIsReported()
    {
        var e = LoadError(Json(merges: "\"abc\""), out _);
        Assert.Contains("model.merges[0]", e.Message);
    }

    [Fact]
    public void BadRegexIsReported()
    {
        var e = LoadError(Json(pre: "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"([a-\"}, \"behavior\": \"Isolated\"}"), out _);
        Assert.Contains("pre_tokenizer.pattern is not a valid regular expression", e.Message);
    }
}

/// <summary>The window-based streaming decoder (non-byte-level decoders), on a Llama-2-style tokenizer.</summary>
public class WindowStreamingTests
{
    [Fact]
    public void StreamingEqualsFullDecodeOnLlama2StyleEncodings()
    {
        var tok = HfTokenizer.Load(Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Tokenization", "Data", "llama2-style.tokenizer.json"));
        var cases = DifferentialTests.ReadCases("llama2-style-differential.jsonl");
        foreach (var c in cases) TokenizerPropertyTests.AssertStreamingMatches(tok, c.IdsSpecial, prefixConsistent: false);
    }
}

/// <summary>Structurally damaged files (a field replaced by a value of another type) load or fail cleanly.</summary>
public class TokenizerLoadFuzzTests
{
    [Fact]
    public void DamagedFilesNeverThrowAnythingButInvalidModelFile()
    {
        string json = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Tokenization", "Data", "llama2-style.tokenizer.json"));
        // FUZZ_SEED / FUZZ_N widen the search by hand (e.g. FUZZ_N=1500); the default run is small and fixed.
        var rng = new Random(int.Parse(Environment.GetEnvironmentVariable("FUZZ_SEED") ?? "5"));
        System.Text.Json.Nodes.JsonNode?[] replacements =
            [null, 7, -1, 3.5, "x", "", true, new System.Text.Json.Nodes.JsonArray(), new System.Text.Json.Nodes.JsonObject(),
             new System.Text.Json.Nodes.JsonArray(1, "a"), new System.Text.Json.Nodes.JsonObject { ["type"] = "Nope" }];
        int loaded = 0, refused = 0;
        for (int iteration = 0; iteration < int.Parse(Environment.GetEnvironmentVariable("FUZZ_N") ?? "150"); iteration++)
        {
            var root = System.Text.Json.Nodes.JsonNode.Parse(json)!;
            // Pick a random container among the components (skip the big vocab/merges) and damage one of its members.
            var containers = new List<System.Text.Json.Nodes.JsonNode>();
            void Collect(System.Text.Json.Nodes.JsonNode? n, int depth)
            {
                if (n is null || depth > 6) return;
                if (n is System.Text.Json.Nodes.JsonObject o) { containers.Add(o); foreach (var (k, v) in o) if (k is not "vocab" and not "merges") Collect(v, depth + 1); }
                else if (n is System.Text.Json.Nodes.JsonArray a) { containers.Add(a); foreach (var v in a.Take(4)) Collect(v, depth + 1); }
            }
            Collect(root, 0);
            var target = containers[rng.Next(containers.Count)];
            var value = replacements[rng.Next(replacements.Length)]?.DeepClone();
            if (target is System.Text.Json.Nodes.JsonObject obj && obj.Count > 0) obj[obj.ElementAt(rng.Next(obj.Count)).Key] = value;
            else if (target is System.Text.Json.Nodes.JsonArray arr && arr.Count > 0) arr[rng.Next(arr.Count)] = value;
            try
            {
                var tok = HfTokenizer.Parse(System.Text.Encoding.UTF8.GetBytes(root.ToJsonString()), "damaged.json");
                tok.Decode(tok.Encode("Hello <s> wörld 123", addSpecialTokens: true).ToArray());
                loaded++;
            }
            catch (InvalidModelFileException e)
            {
                Assert.StartsWith("damaged.json: ", e.Message);
                refused++;
            }
        }
        Assert.True(refused > 20 && loaded > 5, $"refused {refused}, loaded {loaded}");
    }
}

using System.Text.Json;
using Harpia.Tokenization;

namespace Harpia.Tests.Tokenization;

/// <summary>
/// Texts built to stress the pipeline (mixed scripts, emoji, digits next to ²³¹¼½¾, whitespace runs, contractions,
/// inline and broken special tokens) with the outputs of the Rust tokenizers library 0.22.2, produced by
/// bench/tokenizers-node/reference.mjs (see docs/TOKENIZER.md). Synthetic tokenizer.json files exercise the
/// components Falcon does not use.
/// </summary>
public class DifferentialTests
{
    public sealed record Case(string Text, int[] Ids, int[] IdsSpecial, string Decoded, string DecodedSkipSpecial);

    private static string DataDir => Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Tokenization", "Data");

    internal static Case[] ReadCases(string file) => File.ReadLines(Path.Combine(DataDir, file))
        .Where(l => l.Length > 0)
        .Select(l =>
        {
            using var doc = JsonDocument.Parse(l);
            var r = doc.RootElement;
            int[] Ints(string name) => r.GetProperty(name).EnumerateArray().Select(x => x.GetInt32()).ToArray();
            return new Case(r.GetProperty("text").GetString()!, Ints("ids"), Ints("ids_special"),
                r.GetProperty("decoded").GetString()!, r.GetProperty("decoded_skip_special").GetString()!);
        }).ToArray();

    public static TheoryData<string, string> Suites() => new()
    {
        { "falcon", "falcon-differential.jsonl" },
        { "llama2-style", "llama2-style-differential.jsonl" },      // Prepend+Replace normalizer, byte_fallback, template
        { "metaspace-nfkc", "metaspace-nfkc-differential.jsonl" },  // NFKC+Lowercase+Strip, Metaspace, unk, Bert processor
        { "gpt2-style", "gpt2-style-differential.jsonl" },          // NFC, ByteLevel(add_prefix_space), lstrip/rstrip token
        { "llama3-style", "llama3-style-differential.jsonl" },      // Llama-3 Split regex, ignore_merges, Sequence processor
    };

    /// <summary>
    /// Synthetic tokenizers: a small tokenizer.json in Data/, or an overlay of top-level fields (and model flags) on
    /// Falcon's tokenizer.json, whose byte-level vocabulary is too big to copy.
    /// </summary>
    private static HfTokenizer TokenizerFor(string name)
    {
        if (name == "falcon") return FalconConformanceTests.Falcon.Value;
        string file = Path.Combine(DataDir, name + ".tokenizer.json");
        if (File.Exists(file)) return HfTokenizer.Load(file);
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(FalconConformanceTests.FalconTokenizerPath))!.AsObject();
        var overlay = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(DataDir, name + ".overlay.json")))!.AsObject();
        foreach (var (key, value) in overlay.ToList())
        {
            if (key == "model") foreach (var (mk, mv) in value!.AsObject().ToList()) root["model"]![mk] = mv?.DeepClone();
            else root[key] = value?.DeepClone();
        }
        return HfTokenizer.Parse(System.Text.Encoding.UTF8.GetBytes(root.ToJsonString()), name + " (Falcon + overlay)");
    }

    [Theory]
    [MemberData(nameof(Suites))]
    public void MatchesRustTokenizers(string tokenizer, string casesFile)
    {
        var tok = TokenizerFor(tokenizer);
        var cases = ReadCases(casesFile);
        Assert.NotEmpty(cases);
        var failures = new List<string>();
        foreach (var c in cases)
        {
            void Check(string what, object expected, object actual)
            {
                if (!Equals(expected, actual)) failures.Add($"{what} for {JsonSerializer.Serialize(c.Text)}: expected {expected}, got {actual}");
            }
            Check("ids", string.Join(',', c.Ids), string.Join(',', tok.Encode(c.Text)));
            Check("ids with special tokens", string.Join(',', c.IdsSpecial), string.Join(',', tok.Encode(c.Text, addSpecialTokens: true)));
            Check("decode", c.Decoded, tok.Decode(c.Ids));
            Check("decode skipping special tokens", c.DecodedSkipSpecial, tok.Decode(c.Ids, skipSpecialTokens: true));
        }
        Assert.True(failures.Count == 0, $"{failures.Count} mismatches:\n" + string.Join('\n', failures.Take(10)));
    }
}

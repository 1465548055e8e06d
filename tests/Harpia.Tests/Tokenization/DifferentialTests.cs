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
    /// <param name="Offsets">The Rust library's offsets of <paramref name="Ids"/>, in characters (code points).</param>
    public sealed record Case(string Text, int[] Ids, int[] IdsSpecial, string Decoded, string DecodedSkipSpecial, (int, int)[] Offsets);

    private static string DataDir => Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Tokenization", "Data");

    internal static Case[] ReadCases(string file) => File.ReadLines(Path.Combine(DataDir, file))
        .Where(l => l.Length > 0)
        .Select(l =>
        {
            using var doc = JsonDocument.Parse(l);
            var r = doc.RootElement;
            int[] Ints(string name) => r.GetProperty(name).EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var offsets = r.GetProperty("offsets").EnumerateArray().Select(o => (o[0].GetInt32(), o[1].GetInt32())).ToArray();
            return new Case(r.GetProperty("text").GetString()!, Ints("ids"), Ints("ids_special"),
                r.GetProperty("decoded").GetString()!, r.GetProperty("decoded_skip_special").GetString()!, offsets);
        }).ToArray();

    public static TheoryData<string, string> Suites() => new()
    {
        { "falcon", "falcon-differential.jsonl" },
        { "llama2-style", "llama2-style-differential.jsonl" },      // Prepend+Replace normalizer, byte_fallback, template
        { "metaspace-nfkc", "metaspace-nfkc-differential.jsonl" },  // NFKC+Lowercase+Strip, Metaspace, unk, Bert processor
        { "gpt2-style", "gpt2-style-differential.jsonl" },          // NFC, ByteLevel(add_prefix_space), lstrip/rstrip token
        { "llama3-style", "llama3-style-differential.jsonl" },      // Llama-3 Split regex, ignore_merges, Sequence processor
        { "prefix-wordpiece-like", "prefix-wordpiece-like-differential.jsonl" },   // continuing_subword_prefix "##", no decoder
        { "suffix-openai-gpt-like", "suffix-openai-gpt-like-differential.jsonl" }, // end_of_word_suffix "</w>", WhitespaceSplit
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

    /// <summary>
    /// Harpia's byte offsets as the Rust library's character (code point) offsets: the characters that contain the
    /// token's first and last byte (a token holding part of a character — a byte-level piece of an emoji — gets
    /// that whole character, as in Rust).
    /// </summary>
    internal static IEnumerable<(int, int)> CharOffsets(string text, IReadOnlyList<TokenSpan> spans)
    {
        var charOfByte = new List<int>();
        int index = 0;
        for (int i = 0; i < text.Length; index++)
        {
            System.Text.Rune.DecodeFromUtf16(text.AsSpan(i), out var rune, out int used);
            for (int b = 0; b < rune.Utf8SequenceLength; b++) charOfByte.Add(index);
            i += used;
        }
        charOfByte.Add(index);
        foreach (var s in spans)
            yield return s.Stop == s.Start ? (charOfByte[s.Start], charOfByte[s.Start]) : (charOfByte[s.Start], charOfByte[s.Stop - 1] + 1);
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
            void Check(string what, string expected, string actual)
            {
                if (expected == actual) return;
                int at = 0;
                while (at < Math.Min(expected.Length, actual.Length) && expected[at] == actual[at]) at++;
                int from = Math.Max(0, at - 40);
                failures.Add($"{what} for {JsonSerializer.Serialize(c.Text)}: from char {from}, expected " +
                             $"…{expected[from..Math.Min(expected.Length, at + 60)]}…, got …{actual[from..Math.Min(actual.Length, at + 60)]}…");
            }
            Check("ids", string.Join(',', c.Ids), string.Join(',', tok.Encode(c.Text)));
            Check("ids with special tokens", string.Join(',', c.IdsSpecial), string.Join(',', tok.Encode(c.Text, addSpecialTokens: true)));
            Check("decode", c.Decoded, tok.Decode(c.Ids));
            Check("decode skipping special tokens", c.DecodedSkipSpecial, tok.Decode(c.Ids, skipSpecialTokens: true));
            // Characters the vocabulary cannot encode at all (no byte token, no unk) are dropped, and the Rust library's
            // offsets then shift left inside that word; Harpia keeps true offsets, so such texts skip this check.
            if (!c.Text.Any(ch => ch is '\u0003' or '\u0004' or '\u0005' or '\u000B' or (>= '\u0011' and <= '\u001E')))
                Check("offsets", string.Join(' ', c.Offsets), string.Join(' ', CharOffsets(c.Text, tok.EncodeWithOffsets(c.Text))));
        }
        Assert.True(failures.Count == 0, $"{failures.Count} mismatches:\n" + string.Join('\n', failures.Take(10)));
    }
}

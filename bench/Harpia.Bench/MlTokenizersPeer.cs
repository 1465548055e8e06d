using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Harpia.Bench;

/// <summary>
/// The evaluation of Microsoft.ML.Tokenizers for Falcon (docs/TOKENIZER.md): its BpeTokenizer in byte-level mode
/// with Falcon's vocabulary and merges, and the closest pre-tokenizer it can express — character ranges of the
/// original text (special tokens, Punctuation contiguous, GPT-2's regex, Digits grouped, 3-digit split). Falcon's
/// Digits/Split steps really run on byte-level characters, which character ranges cannot reproduce.
/// </summary>
internal static class MlTokenizersPeer
{
    public static BpeTokenizer Create(string tokenizerJsonPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJsonPath));
        var root = doc.RootElement;
        var vocab = root.GetProperty("model").GetProperty("vocab").EnumerateObject()
            .Select(p => new KeyValuePair<string, int>(p.Name, p.Value.GetInt32())).ToList();
        var merges = root.GetProperty("model").GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).ToList();
        var specials = root.GetProperty("added_tokens").EnumerateArray()
            .ToDictionary(t => t.GetProperty("content").GetString()!, t => t.GetProperty("id").GetInt32());
        return BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges, ByteLevel = true, SpecialTokens = specials, PreTokenizer = new FalconLikePreTokenizer(specials.Keys),
        });
    }

    /// <summary>How many of the reference cases (JSON lines with "text" and "ids") it encodes exactly.</summary>
    public static (int Equal, int Total) Agreement(BpeTokenizer tokenizer, string jsonLinesPath)
    {
        int equal = 0, total = 0;
        foreach (var line in File.ReadLines(jsonLinesPath))
        {
            if (line.Length == 0) continue;
            using var doc = JsonDocument.Parse(line);
            var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            total++;
            if (tokenizer.EncodeToIds(doc.RootElement.GetProperty("text").GetString()!).SequenceEqual(ids)) equal++;
        }
        return (equal, total);
    }

    private sealed class FalconLikePreTokenizer(IEnumerable<string> specials) : PreTokenizer
    {
        private static readonly Regex Gpt2 = new(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);
        private static readonly Regex Punctuation = new(@"[\p{P}!-/:-@\[-`{-~]+|[^\p{P}!-/:-@\[-`{-~]+", RegexOptions.Compiled);
        private static readonly Regex Digits = new(@"\p{N}+|\P{N}+", RegexOptions.Compiled);
        private static readonly Regex ThreeDigits = new(@"[0-9][0-9][0-9]|(?:(?![0-9][0-9][0-9]).)+", RegexOptions.Compiled | RegexOptions.Singleline);
        private readonly Regex _special = new(string.Join("|", specials.OrderByDescending(s => s.Length).Select(Regex.Escape)), RegexOptions.Compiled);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => Split(text);
        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text.ToString());

        private List<(int, int)> Split(string text)
        {
            var pieces = new List<(int, int)>();
            int pos = 0;
            foreach (Match s in _special.Matches(text))
            {
                Segment(text, pos, s.Index, pieces);
                pieces.Add((s.Index, s.Length));
                pos = s.Index + s.Length;
            }
            Segment(text, pos, text.Length, pieces);
            return pieces;
        }

        private static void Segment(string text, int from, int to, List<(int, int)> pieces)
        {
            foreach (Match p in Punctuation.Matches(text[from..to]))
            foreach (Match g in Gpt2.Matches(p.Value))
            foreach (Match d in Digits.Matches(g.Value))
            foreach (Match t in ThreeDigits.Matches(d.Value))
                pieces.Add((from + p.Index + g.Index + d.Index + t.Index, t.Length));
        }
    }
}

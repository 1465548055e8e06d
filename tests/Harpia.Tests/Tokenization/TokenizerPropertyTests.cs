using System.Text;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Harpia.Tokenization;

namespace Harpia.Tests.Tokenization;

/// <summary>Random texts mixing scripts, emoji, whitespace runs, digits and special-token look-alikes.</summary>
public static class TokenizerArbitraries
{
    private static readonly string[] Fragments =
    [
        "a", "Z", "the", " ", "  ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\u200b", "\u0085",
        "0", "7", "12", "345", "6789", "3.14", "1,000", "²", "³", "½", "①", "٣", "०",
        "'s", "'ll", "'", "\"", "!", "?!", "...", "—", "«", "»", "(", ")", "{}", "<", ">", "$", "_",
        "é", "ç", "ã", "e\u0301", "ß", "İ", "β", "Ω", "ς", "ж", "中", "文", "日本", "한", "ع", "न", "्",
        "😀", "🎉", "👍🏽", "🇧🇷", "👨‍👩‍👧", "❤️", "𝐀", "𠀀",
        ">>TITLE<<", "<|endoftext|>", ">>ANSWER", "<|endof", ">>", "<<",
    ];

    public static Gen<string> Text { get; } =
        Gen.OneOf(
                Gen.Elements(Fragments),
                Gen.Choose(0x20, 0x2FF).Select(c => ((char)c).ToString()),
                Gen.Choose(0x370, 0xD7FF).Select(c => char.IsSurrogate((char)c) ? "x" : ((char)c).ToString()),
                Gen.Choose(0x1F300, 0x1FAFF).Select(char.ConvertFromUtf32))
            .ListOf()
            .Select(parts => string.Concat(parts));

    public static Arbitrary<string> Strings() => Text.ToArbitrary();

    /// <summary>Random id sequences over the whole vocabulary, biased towards specials and single bytes.</summary>
    public static Arbitrary<int[]> IdSequences() =>
        Gen.OneOf(Gen.Choose(0, 65023), Gen.Choose(0, 11), Gen.Choose(100, 260), Gen.Choose(65024, 65030), Gen.Choose(-3, -1))
            .ArrayOf().ToArbitrary();
}

// Seeded: every run tests the same inputs; a failure prints its own Replay seed, to pin here while debugging it.
[Properties(Arbitrary = [typeof(TokenizerArbitraries)], MaxTest = 300, Replay = "(20261204,1205)")]
public class TokenizerPropertyTests
{
    private static HfTokenizer Falcon => FalconConformanceTests.Falcon.Value;

    [Property]
    public bool DecodeOfEncodeIsTheText(string text) =>
        Falcon.Decode(Falcon.Encode(text).ToArray()) == text;

    [Property]
    public void TokensCoverTheTextsBytesInOrder(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var spans = Falcon.EncodeWithOffsets(text);
        int pos = 0;
        foreach (var s in spans)
        {
            Assert.Equal(pos, s.Start);
            // The token's own bytes are exactly the input bytes it claims to cover.
            byte[] tokenBytes = Encoding.UTF8.GetBytes(Falcon.Decode([s.Id]));
            if (!Falcon.IsSpecial(s.Id) && !Falcon.Decode([s.Id]).Contains('\uFFFD'))
                Assert.Equal(utf8.AsSpan(s.Start, s.Stop - s.Start).ToArray(), tokenBytes);
            pos = s.Stop;
        }
        Assert.Equal(utf8.Length, pos);
    }

    [Property]
    public void StreamingEqualsFullDecodeForEveryPrefixOfAnEncoding(string text) =>
        AssertStreamingMatches(Falcon, Falcon.Encode(text).ToArray());

    [Property]
    public void StreamingEqualsFullDecodeForRandomIds(int[] ids) => AssertStreamingMatches(Falcon, ids);

    [Property(MaxTest = 100)]
    public void EncodingIsDeterministicAcrossTheWordCache(string text)
    {
        var first = Falcon.Encode(text + " " + text);
        var second = Falcon.Encode(text + " " + text);
        Assert.Equal(first, second);
    }

    /// <param name="prefixConsistent">
    /// The decoder's output for a prefix of ids is a prefix of its output for all ids (true for ByteLevel; not for
    /// ByteFallback, which turns a whole run of byte tokens into U+FFFDs while a character is incomplete).
    /// </param>
    [Property(MaxTest = 100)]
    public void LoneSurrogatesEncodeAsReplacementCharacters(string text)
    {
        // .NET strings may hold unpaired surrogates (Rust strings cannot): they encode as U+FFFD, never crash.
        string broken = text + "\uD800" + text + "\uDC00";
        string expected = System.Text.Encoding.UTF8.GetString(System.Text.Encoding.UTF8.GetBytes(broken));
        Assert.Equal(expected, Falcon.Decode(Falcon.Encode(broken).ToArray()));
        Assert.Equal(Encoding.UTF8.GetByteCount(broken), Falcon.EncodeWithOffsets(broken).LastOrDefault().Stop);
    }

    internal static void AssertStreamingMatches(ITokenizer tokenizer, int[] ids, bool prefixConsistent = true)
    {
        foreach (bool skip in new[] { false, true })
        {
            var stream = tokenizer.CreateStreamingDecoder(skip);
            var emitted = new StringBuilder();
            for (int n = 1; n <= ids.Length; n++)
            {
                string piece = stream.Push(ids[n - 1]);
                // Never half a character: no piece ends with a high surrogate, and nothing emitted is taken back.
                Assert.False(piece.Length > 0 && char.IsHighSurrogate(piece[^1]));
                emitted.Append(piece);
                string full = tokenizer.Decode(prefixConsistent ? ids.AsSpan(0, n) : ids, skip);
                Assert.StartsWith(emitted.ToString(), full, StringComparison.Ordinal);
            }
            emitted.Append(stream.Flush());
            Assert.Equal(tokenizer.Decode(ids, skip), emitted.ToString());
        }
    }
}

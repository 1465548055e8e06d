using Harpia.Tokenization;

namespace Harpia.Tests.Tokenization;

/// <summary>Harpia's own NFC/NFD/NFKC/NFKD (the process runs with InvariantGlobalization, where .NET's does nothing).</summary>
public class UnicodeNormalizationTests
{
    [Theory]
    // UAX #15's examples and a few tokenizer-relevant ones: (input, NFD, NFC, NFKD, NFKC)
    [InlineData("\u1E9B\u0323", "\u017F\u0323\u0307", "\u1E9B\u0323", "\u0073\u0323\u0307", "\u1E69")]
    [InlineData("e\u0301", "e\u0301", "\u00E9", "e\u0301", "\u00E9")]
    [InlineData("\u00C5\u212B", "A\u030AA\u030A", "\u00C5\u00C5", "A\u030AA\u030A", "\u00C5\u00C5")]
    [InlineData("\uFB01ne \u2460 \u216B", "\uFB01ne \u2460 \u216B", "\uFB01ne \u2460 \u216B", "fine 1 XII", "fine 1 XII")]
    [InlineData("\uD55C\uAE00", "\u1112\u1161\u11AB\u1100\u1173\u11AF", "\uD55C\uAE00", "\u1112\u1161\u11AB\u1100\u1173\u11AF", "\uD55C\uAE00")]
    [InlineData("a\u0308\u0327", "a\u0327\u0308", "\u00E4\u0327", "a\u0327\u0308", "\u00E4\u0327")]
    [InlineData("\u0308\u0327x", "\u0327\u0308x", "\u0327\u0308x", "\u0327\u0308x", "\u0327\u0308x")]
    [InlineData("x\u00A0\uFF21\uD835\uDC00", "x\u00A0\uFF21\uD835\uDC00", "x\u00A0\uFF21\uD835\uDC00", "x AA", "x AA")]
    [InlineData("plain ascii", "plain ascii", "plain ascii", "plain ascii", "plain ascii")]
    public void MatchesTheStandardForms(string input, string nfd, string nfc, string nfkd, string nfkc)
    {
        string Run(bool compat, bool compose)
        {
            var t = NormalizedText.Identity(input);
            UnicodeNormalization.Normalize(t, compat, compose);
            Assert.Equal(t.Text.Length, t.Source.Length);
            Assert.All(t.Source, s => Assert.InRange(s, 0, input.Length - 1));
            return t.Text;
        }
        Assert.Equal(nfd, Run(false, false));
        Assert.Equal(nfc, Run(false, true));
        Assert.Equal(nfkd, Run(true, false));
        Assert.Equal(nfkc, Run(true, true));
    }
}

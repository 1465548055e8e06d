using System.Globalization;
using System.Text;

namespace Harpia.Tokenization;

/// <summary>
/// The character classes the Hugging Face pre-tokenizers test, on code points (not UTF-16 units, so letters outside
/// the BMP are letters): \p{L}, \p{N}, \s (Unicode White_Space — the same set as .NET's char.IsWhiteSpace), and
/// the Punctuation pre-tokenizer's "ASCII punctuation or any P* category".
/// </summary>
internal static class UnicodeClass
{
    private const byte Letter = 1, Number = 2, Space = 4, Punct = 8;
    private static readonly byte[] Latin1 = BuildLatin1();

    private static byte[] BuildLatin1()
    {
        var t = new byte[256];
        for (int c = 0; c < 256; c++) t[c] = Classify(c);
        return t;
    }

    private static byte Classify(int cp)
    {
        var cat = Rune.IsValid(cp) ? Rune.GetUnicodeCategory(new Rune(cp)) : UnicodeCategory.OtherNotAssigned;
        byte f = 0;
        switch (cat)
        {
            case UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter:
                f |= Letter; break;
            case UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber:
                f |= Number; break;
            case UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
                or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
                or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation:
                f |= Punct; break;
        }
        if (cp < 0x10000 && char.IsWhiteSpace((char)cp)) f |= Space;
        // Rust's char::is_ascii_punctuation also counts the ASCII symbols $+<=>^`|~ (categories Sc/Sm/Sk).
        if (cp < 0x80 && (cp is >= 0x21 and <= 0x2F or >= 0x3A and <= 0x40 or >= 0x5B and <= 0x60 or >= 0x7B and <= 0x7E)) f |= Punct;
        return f;
    }

    private static byte Flags(int cp) => cp < 256 ? Latin1[cp] : Classify(cp);

    public static bool IsLetter(int cp) => (Flags(cp) & Letter) != 0;
    public static bool IsNumber(int cp) => (Flags(cp) & Number) != 0;
    public static bool IsWhiteSpace(int cp) => (Flags(cp) & Space) != 0;
    public static bool IsPunctuation(int cp) => (Flags(cp) & Punct) != 0;
    /// <summary>Rust's char::is_alphanumeric (letters and numbers), used for single_word added tokens.</summary>
    public static bool IsWordChar(int cp) => (Flags(cp) & (Letter | Number)) != 0 || cp == '_';
}

namespace Harpia.Tokenization;

/// <summary>
/// GPT-2's byte ⇄ printable-character table: every byte gets a visible character so that BPE vocabularies can be
/// stored as text. Printable Latin-1 bytes (0x21–0x7E, 0xA1–0xAC, 0xAE–0xFF) map to themselves; the other 68
/// bytes map, in byte order, to U+0100, U+0101, … (so the space 0x20 becomes 'Ġ' U+0120).
/// </summary>
public static class ByteLevelAlphabet
{
    /// <summary>The character that stands for each byte.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>The byte a character stands for, or -1 when the character is not in the alphabet (index: char).</summary>
    private static readonly short[] CharToByteTable = BuildCharToByte();

    public static int CharToByte(int c) => (uint)c < (uint)CharToByteTable.Length ? CharToByteTable[c] : -1;

    private static bool IsSelfMapped(int b) => b is >= 0x21 and <= 0x7E or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++) map[b] = IsSelfMapped(b) ? (char)b : (char)next++;
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var table = new short[256 + 68];
        Array.Fill(table, (short)-1);
        var byteToChar = BuildByteToChar();
        for (int b = 0; b < 256; b++) table[byteToChar[b]] = (short)b;
        return table;
    }

    /// <summary>
    /// The bytes a vocabulary string stands for, or null when one of its characters is outside the alphabet (such a
    /// token, e.g. an added token, decodes as its own UTF-8 text — what the Rust ByteLevel decoder does).
    /// </summary>
    public static byte[]? TryGetBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            int b = CharToByte(token[i]);
            if (b < 0) return null;
            bytes[i] = (byte)b;
        }
        return bytes;
    }
}

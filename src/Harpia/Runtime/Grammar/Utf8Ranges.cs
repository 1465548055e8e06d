namespace Harpia.Runtime.Grammar;

/// <summary>
/// An immutable set of Unicode scalar values (code points 0–10FFFF except the surrogates D800–DFFF), kept as
/// sorted, disjoint, non-adjacent inclusive ranges. Surrogates are never members: they have no UTF-8 encoding,
/// so a grammar that admitted them would admit invalid UTF-8.
/// </summary>
internal sealed class CodePointSet
{
    public const int MaxCodePoint = 0x10FFFF;
    private const int SurrogateFirst = 0xD800, SurrogateLast = 0xDFFF;

    private readonly (int Lo, int Hi)[] _ranges;

    public IReadOnlyList<(int Lo, int Hi)> Ranges => _ranges;
    public bool IsEmpty => _ranges.Length == 0;

    private CodePointSet((int Lo, int Hi)[] normalized) => _ranges = normalized;

    public static CodePointSet Single(int codePoint) => FromRanges([(codePoint, codePoint)]);

    /// <summary>Normalizes any ranges (unsorted, overlapping, touching surrogates) into a set.</summary>
    public static CodePointSet FromRanges(IEnumerable<(int Lo, int Hi)> ranges)
    {
        var list = new List<(int Lo, int Hi)>();
        foreach (var (lo0, hi0) in ranges)
        {
            int lo = Math.Max(lo0, 0), hi = Math.Min(hi0, MaxCodePoint);
            if (lo > hi) continue;
            // Cut out the surrogate block.
            if (lo < SurrogateFirst && hi >= SurrogateFirst) { list.Add((lo, SurrogateFirst - 1)); lo = SurrogateFirst; }
            if (lo >= SurrogateFirst && lo <= SurrogateLast) lo = SurrogateLast + 1;
            if (lo <= hi) list.Add((lo, hi));
        }
        list.Sort((a, b) => a.Lo.CompareTo(b.Lo));
        var merged = new List<(int Lo, int Hi)>(list.Count);
        foreach (var r in list)
        {
            if (merged.Count > 0 && r.Lo <= merged[^1].Hi + 1)
                merged[^1] = (merged[^1].Lo, Math.Max(merged[^1].Hi, r.Hi));
            else merged.Add(r);
        }
        // D7FF and E000 are adjacent in scalar-value space once the surrogates are gone; keeping them as two ranges
        // is harmless (the UTF-8 split treats them separately anyway).
        return new CodePointSet(merged.ToArray());
    }

    public CodePointSet Union(CodePointSet other) => FromRanges(_ranges.Concat(other._ranges));

    /// <summary>Every scalar value not in this set.</summary>
    public CodePointSet Complement()
    {
        var result = new List<(int, int)>();
        int next = 0;
        foreach (var (lo, hi) in _ranges)
        {
            if (lo > next) result.Add((next, lo - 1));
            next = hi + 1;
        }
        if (next <= MaxCodePoint) result.Add((next, MaxCodePoint));
        return FromRanges(result);
    }

    public CodePointSet Intersect(CodePointSet other) => Complement().Union(other.Complement()).Complement();

    public bool IsSingle(out int codePoint)
    {
        codePoint = _ranges.Length == 1 && _ranges[0].Lo == _ranges[0].Hi ? _ranges[0].Lo : -1;
        return codePoint >= 0;
    }
}

/// <summary>One byte position of a UTF-8 sequence pattern: any byte in [Lo, Hi].</summary>
internal readonly record struct ByteRange(byte Lo, byte Hi);

/// <summary>
/// Turns code point ranges into UTF-8 byte-range sequences. A set of code points becomes an alternation of
/// sequences such as [E1-EC][80-BF][80-BF]; each sequence accepts exactly the encodings of a sub-range, so the
/// alternation accepts exactly the valid UTF-8 encodings of the set (never overlong forms, never surrogates).
/// </summary>
internal static class Utf8Ranges
{
    private static readonly int[] MaxForLength = [0x7F, 0x7FF, 0xFFFF, 0x10FFFF];

    public static List<ByteRange[]> Sequences(CodePointSet set)
    {
        var result = new List<ByteRange[]>();
        foreach (var (lo, hi) in set.Ranges) Split(lo, hi, result);
        return result;
    }

    private static void Split(int lo, int hi, List<ByteRange[]> output)
    {
        // First split by encoded length: a sequence pattern only works for code points of one length.
        for (int n = 0; n < MaxForLength.Length - 1; n++)
        {
            int max = MaxForLength[n];
            if (lo <= max && hi > max)
            {
                Split(lo, max, output);
                Split(max + 1, hi, output);
                return;
            }
        }
        int length = EncodedLength(lo);
        if (length == 1) { output.Add([new ByteRange((byte)lo, (byte)hi)]); return; }

        // Then split until, for every continuation position, lo and hi differ only in the low 6·i bits with lo's
        // low bits all zero and hi's all one (or the prefixes agree): then byte i can range freely and the
        // per-byte ranges [lo_b, hi_b] describe exactly [lo, hi].
        for (int i = 1; i < length; i++)
        {
            int mask = (1 << (6 * i)) - 1;
            if ((lo & ~mask) != (hi & ~mask))
            {
                if ((lo & mask) != 0)
                {
                    Split(lo, lo | mask, output);
                    Split((lo | mask) + 1, hi, output);
                    return;
                }
                if ((hi & mask) != mask)
                {
                    Split(lo, (hi & ~mask) - 1, output);
                    Split(hi & ~mask, hi, output);
                    return;
                }
            }
        }
        Span<byte> a = stackalloc byte[4], b = stackalloc byte[4];
        Encode(lo, a);
        Encode(hi, b);
        var seq = new ByteRange[length];
        for (int i = 0; i < length; i++) seq[i] = new ByteRange(a[i], b[i]);
        output.Add(seq);
    }

    public static int EncodedLength(int cp) => cp <= 0x7F ? 1 : cp <= 0x7FF ? 2 : cp <= 0xFFFF ? 3 : 4;

    private static void Encode(int cp, Span<byte> dest)
    {
        switch (EncodedLength(cp))
        {
            case 1: dest[0] = (byte)cp; break;
            case 2: dest[0] = (byte)(0xC0 | (cp >> 6)); dest[1] = (byte)(0x80 | (cp & 0x3F)); break;
            case 3:
                dest[0] = (byte)(0xE0 | (cp >> 12)); dest[1] = (byte)(0x80 | ((cp >> 6) & 0x3F));
                dest[2] = (byte)(0x80 | (cp & 0x3F)); break;
            default:
                dest[0] = (byte)(0xF0 | (cp >> 18)); dest[1] = (byte)(0x80 | ((cp >> 12) & 0x3F));
                dest[2] = (byte)(0x80 | ((cp >> 6) & 0x3F)); dest[3] = (byte)(0x80 | (cp & 0x3F)); break;
        }
    }
}

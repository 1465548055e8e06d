using System.Buffers;
using System.Text;
using System.Text.RegularExpressions;

namespace Harpia.Tokenization;

/// <summary>A piece of a segment: a UTF-8 byte range [Start, End) of the (normalized) segment text.</summary>
internal readonly record struct Piece(int Start, int End);

/// <summary>How a split keeps the delimiters it finds (Hugging Face's SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>
/// The state a pre-tokenizer works on: the segment's UTF-8 bytes and whether earlier steps already turned it into
/// GPT-2's byte-level alphabet (after a ByteLevel step every byte reads as one character of that alphabet, so
/// later steps — Falcon's Digits and Split — see those characters, exactly as in the Rust library).
/// </summary>
internal sealed class PreTokenizeState
{
    public byte[] Text = [];
    public int Length;
    public bool ByteLevel;
    public List<Piece> Pieces = new(64);
    public List<Piece> Next = new(64);

    public ReadOnlySpan<byte> Span => Text.AsSpan(0, Length);

    public void Swap() { (Pieces, Next) = (Next, Pieces); Next.Clear(); }

    /// <summary>The code point at <paramref name="pos"/> as the current view reads it, and its length in bytes.</summary>
    public int CharAt(int pos, out int len)
    {
        byte b = Text[pos];
        if (ByteLevel) { len = 1; return ByteLevelAlphabet.ByteToChar[b]; }
        if (b < 0x80) { len = 1; return b; }
        Rune.DecodeFromUtf8(Text.AsSpan(pos, Length - pos), out var rune, out len);
        return rune.Value;
    }
}

/// <summary>
/// Turns a stream of (range, is-delimiter) events into pieces according to a <see cref="SplitBehavior"/>,
/// as a forward pass with the same results as the Rust library's folds. Empty pieces are dropped.
/// </summary>
internal struct SplitSink
{
    private readonly List<Piece> _output;
    private readonly SplitBehavior _behavior;
    private int _start, _end;         // the piece not yet written (MergedWithPrevious / Contiguous / MergedWithNext)
    private bool _hasPending, _previousMatch;

    public SplitSink(List<Piece> output, SplitBehavior behavior)
    {
        _output = output; _behavior = behavior; _start = _end = 0; _hasPending = _previousMatch = false;
    }

    private readonly void Emit(int start, int end) { if (end > start) _output.Add(new Piece(start, end)); }

    public void Add(int start, int end, bool isMatch)
    {
        if (end <= start) return;
        switch (_behavior)
        {
            case SplitBehavior.Isolated: Emit(start, end); break;
            case SplitBehavior.Removed: if (!isMatch) Emit(start, end); break;
            case SplitBehavior.Contiguous:
                if (_hasPending && isMatch == _previousMatch) _end = end;
                else { if (_hasPending) Emit(_start, _end); _start = start; _end = end; _hasPending = true; }
                _previousMatch = isMatch;
                break;
            case SplitBehavior.MergedWithPrevious:
                if (_hasPending && isMatch && !_previousMatch) _end = end;
                else { if (_hasPending) Emit(_start, _end); _start = start; _end = end; _hasPending = true; }
                _previousMatch = isMatch;
                break;
            case SplitBehavior.MergedWithNext:
                // A delimiter joins the piece after it when that piece is not itself a delimiter.
                if (_hasPending)
                {
                    if (!isMatch) { Emit(_start, end); _hasPending = false; }
                    else { Emit(_start, _end); _start = start; _end = end; }
                }
                else if (isMatch) { _start = start; _end = end; _hasPending = true; }
                else Emit(start, end);
                break;
        }
    }

    public readonly void Finish() { if (_hasPending) Emit(_start, _end); }
}

internal abstract class PreTokenizer
{
    /// <summary>Splits every piece in <c>state.Pieces</c> into <c>state.Next</c>, then swaps.</summary>
    public abstract void PreTokenize(PreTokenizeState state);

    /// <summary>Pre-tokenizers that rewrite text (Metaspace) do it here, once per segment, before any split.</summary>
    public virtual NormalizedText Rewrite(NormalizedText segment, bool atStartOfInput) => segment;

    public virtual bool RewritesText => false;

    internal static SplitBehavior ParseBehavior(string value, string where) => value.ToLowerInvariant() switch
    {
        "removed" => SplitBehavior.Removed,
        "isolated" => SplitBehavior.Isolated,
        "mergedwithprevious" => SplitBehavior.MergedWithPrevious,
        "mergedwithnext" => SplitBehavior.MergedWithNext,
        "contiguous" => SplitBehavior.Contiguous,
        _ => throw new FormatException($"{where}: unknown split behavior '{value}'"),
    };
}

/// <summary>Splits wherever a per-character test holds (Punctuation, Digits, WhitespaceSplit-like steps).</summary>
internal abstract class CharPredicateSplit(SplitBehavior behavior) : PreTokenizer
{
    protected abstract bool IsDelimiter(int cp);

    public override void PreTokenize(PreTokenizeState state)
    {
        foreach (var piece in state.Pieces)
        {
            var sink = new SplitSink(state.Next, behavior);
            int runStart = piece.Start, pos = piece.Start;
            while (pos < piece.End)
            {
                int cp = state.CharAt(pos, out int len);
                if (IsDelimiter(cp))
                {
                    sink.Add(runStart, pos, false);
                    sink.Add(pos, pos + len, true);
                    runStart = pos + len;
                }
                pos += len;
            }
            sink.Add(runStart, piece.End, false);
            sink.Finish();
        }
        state.Swap();
    }
}

/// <summary>Punctuation: ASCII punctuation (including $+&lt;=&gt;^`|~) or any Unicode P* character.</summary>
internal sealed class PunctuationPreTokenizer(SplitBehavior behavior) : CharPredicateSplit(behavior)
{
    protected override bool IsDelimiter(int cp) => UnicodeClass.IsPunctuation(cp);
}

/// <summary>
/// Digits: numeric characters (Nd/Nl/No), grouped (Contiguous) or one by one (Isolated). After a ByteLevel step the
/// bytes 0xB2 0xB3 0xB9 0xBC–0xBE read as ²³¹¼½¾ and so count as digits too — a quirk the Rust library has and
/// which decides Falcon's ids for e.g. "β" (CE B2).
/// </summary>
internal sealed class DigitsPreTokenizer(bool individualDigits)
    : CharPredicateSplit(individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous)
{
    protected override bool IsDelimiter(int cp) => UnicodeClass.IsNumber(cp);
}

/// <summary>WhitespaceSplit: splits on Unicode whitespace, dropping it.</summary>
internal sealed class WhitespaceSplitPreTokenizer() : CharPredicateSplit(SplitBehavior.Removed)
{
    protected override bool IsDelimiter(int cp) => UnicodeClass.IsWhiteSpace(cp);
}

/// <summary>
/// ByteLevel: optionally splits with GPT-2's pattern
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c> (implemented as a scanner with
/// the regex's exact leftmost-first semantics), then switches the view to the byte-level alphabet.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    public bool AddPrefixSpace { get; } = addPrefixSpace;

    public override bool RewritesText => AddPrefixSpace;

    public override NormalizedText Rewrite(NormalizedText segment, bool atStartOfInput)
    {
        if (AddPrefixSpace && segment.Text.Length > 0 && segment.Text[0] != ' ') new PrependNormalizer(" ").Normalize(segment);
        return segment;
    }

    public override void PreTokenize(PreTokenizeState state)
    {
        if (useRegex)
        {
            foreach (var piece in state.Pieces) SplitGpt2(state, piece, state.Next);
            state.Swap();
        }
        state.ByteLevel = true;
    }

    private enum Class { Letter, Number, Space, Other }

    private static Class ClassOf(int cp) =>
        UnicodeClass.IsLetter(cp) ? Class.Letter : UnicodeClass.IsNumber(cp) ? Class.Number
        : UnicodeClass.IsWhiteSpace(cp) ? Class.Space : Class.Other;

    internal static void SplitGpt2(PreTokenizeState state, Piece piece, List<Piece> output)
    {
        int end = piece.End, i = piece.Start;
        while (i < end)
        {
            int cp = state.CharAt(i, out int len);
            // 's 't 're 've 'm 'll 'd (lower-case ASCII only, as in the pattern)
            if (cp == '\'' && i + len < end)
            {
                int c2 = state.CharAt(i + len, out int len2);
                if (c2 is 's' or 't' or 'm' or 'd') { output.Add(new Piece(i, i + len + len2)); i += len + len2; continue; }
                if (i + len + len2 < end && c2 is 'r' or 'v' or 'l')
                {
                    int c3 = state.CharAt(i + len + len2, out int len3);
                    if ((c2 == 'r' && c3 == 'e') || (c2 == 'v' && c3 == 'e') || (c2 == 'l' && c3 == 'l'))
                    {
                        output.Add(new Piece(i, i + len + len2 + len3)); i += len + len2 + len3; continue;
                    }
                }
            }
            // ' ?' prefix: a single U+0020 joins the run of letters/numbers/others that follows it.
            int j = i, c = cp, cl = len;
            if (cp == ' ' && i + len < end)
            {
                int after = state.CharAt(i + len, out int afterLen);
                if (!UnicodeClass.IsWhiteSpace(after)) { j = i + len; c = after; cl = afterLen; }
            }
            var cls = ClassOf(c);
            if (cls != Class.Space)
            {
                int k = j + cl;
                while (k < end)
                {
                    int n = state.CharAt(k, out int nl);
                    if (ClassOf(n) != cls) break;
                    k += nl;
                }
                output.Add(new Piece(i, k));
                i = k;
                continue;
            }
            // \s+(?!\S) | \s+ : a whitespace run; when non-space follows, its last character is left for the next match.
            int p = i, lastStart = i;
            while (p < end)
            {
                int n = state.CharAt(p, out int nl);
                if (!UnicodeClass.IsWhiteSpace(n)) break;
                lastStart = p;
                p += nl;
            }
            int stop = p == end || lastStart == i ? p : lastStart;
            output.Add(new Piece(i, stop));
            i = stop;
        }
    }
}

/// <summary>Split: a literal string or a regular expression, with a behavior and an optional invert.</summary>
internal sealed class SplitPreTokenizer : PreTokenizer
{
    private readonly string? _literal;
    private readonly Regex? _regex;
    private readonly int _asciiDigitRun; // > 0 when the pattern is "[0-9]" repeated this many times (Falcon)
    private readonly SplitBehavior _behavior;
    private readonly bool _invert;

    public SplitPreTokenizer(string? literal, string? regex, SplitBehavior behavior, bool invert)
    {
        _behavior = behavior; _invert = invert;
        if (literal is not null) _literal = literal;
        else
        {
            _asciiDigitRun = AsciiDigitRunLength(regex!);
            if (_asciiDigitRun == 0) _regex = new Regex(regex!, RegexOptions.CultureInvariant | RegexOptions.Compiled);
        }
        if (_literal is { Length: 0 }) throw new FormatException("Split pattern is an empty string");
    }

    private static int AsciiDigitRunLength(string pattern)
    {
        if (pattern.Length == 0 || pattern.Length % 5 != 0) return 0;
        for (int i = 0; i < pattern.Length; i += 5) if (string.CompareOrdinal(pattern, i, "[0-9]", 0, 5) != 0) return 0;
        return pattern.Length / 5;
    }

    public override void PreTokenize(PreTokenizeState state)
    {
        foreach (var piece in state.Pieces)
        {
            var sink = new SplitSink(state.Next, _behavior);
            if (_asciiDigitRun > 0) SplitAsciiDigitRuns(state, piece, ref sink);
            else SplitWithText(state, piece, ref sink);
            sink.Finish();
        }
        state.Swap();
    }

    /// <summary>Leftmost, non-overlapping matches of N ASCII digits: "12345" → "123" | "45".</summary>
    private void SplitAsciiDigitRuns(PreTokenizeState state, Piece piece, ref SplitSink sink)
    {
        var text = state.Text;
        int previous = piece.Start, run = 0;
        for (int pos = piece.Start; pos < piece.End; pos++)
        {
            // ASCII digits are the same byte in both views (the byte-level alphabet maps 0x30–0x39 to themselves).
            if ((uint)(text[pos] - '0') <= 9)
            {
                if (++run == _asciiDigitRun)
                {
                    int start = pos + 1 - run;
                    sink.Add(previous, start, _invert);
                    sink.Add(start, pos + 1, !_invert);
                    previous = pos + 1;
                    run = 0;
                }
            }
            else run = 0;
        }
        sink.Add(previous, piece.End, _invert);
    }

    /// <summary>General case: materialize the piece as the view's characters and search it.</summary>
    private void SplitWithText(PreTokenizeState state, Piece piece, ref SplitSink sink)
    {
        // Character index → byte offset, so matches map back to the segment's bytes.
        var sb = new StringBuilder(piece.End - piece.Start);
        var byteAt = new List<int>(piece.End - piece.Start + 1);
        for (int pos = piece.Start; pos < piece.End;)
        {
            int cp = state.CharAt(pos, out int len);
            int units = cp >= 0x10000 ? 2 : 1;
            sb.Append(char.ConvertFromUtf32(cp));
            for (int u = 0; u < units; u++) byteAt.Add(pos);
            pos += len;
        }
        byteAt.Add(piece.End);
        string text = sb.ToString();
        int previous = 0;
        if (_literal is not null)
        {
            for (int at = text.IndexOf(_literal, StringComparison.Ordinal); at >= 0;
                 at = text.IndexOf(_literal, previous, StringComparison.Ordinal))
            {
                sink.Add(byteAt[previous], byteAt[at], _invert);
                sink.Add(byteAt[at], byteAt[at + _literal.Length], !_invert);
                previous = at + _literal.Length;
                if (previous >= text.Length) break;
            }
        }
        else
        {
            for (var m = _regex!.Match(text); m.Success; m = m.NextMatch())
            {
                if (m.Length == 0) continue;
                sink.Add(byteAt[previous], byteAt[m.Index], _invert);
                sink.Add(byteAt[m.Index], byteAt[m.Index + m.Length], !_invert);
                previous = m.Index + m.Length;
            }
        }
        sink.Add(byteAt[previous], byteAt[text.Length], _invert);
    }
}

/// <summary>
/// Metaspace (SentencePiece style): spaces become the replacement character (▁), a ▁ is prepended per
/// prepend_scheme, and with split=true the text splits before each ▁.
/// </summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : PreTokenizer
{
    public override bool RewritesText => true;

    public override NormalizedText Rewrite(NormalizedText segment, bool atStartOfInput)
    {
        segment.Text = segment.Text.Replace(' ', replacement); // one char for one char: the alignment is unchanged
        bool prepend = scheme == PrependScheme.Always || (scheme == PrependScheme.First && atStartOfInput);
        if (prepend && segment.Text.Length > 0 && segment.Text[0] != replacement) new PrependNormalizer(replacement.ToString()).Normalize(segment);
        return segment;
    }

    public override void PreTokenize(PreTokenizeState state)
    {
        if (!split) return;
        Span<byte> rep = stackalloc byte[4];
        int repLen = new Rune(replacement).EncodeToUtf8(rep);
        foreach (var piece in state.Pieces)
        {
            var sink = new SplitSink(state.Next, SplitBehavior.MergedWithNext);
            var span = state.Span;
            int previous = piece.Start;
            for (int pos = piece.Start; pos + repLen <= piece.End;)
            {
                if (span.Slice(pos, repLen).SequenceEqual(rep[..repLen]))
                {
                    sink.Add(previous, pos, false);
                    sink.Add(pos, pos + repLen, true);
                    pos += repLen; previous = pos;
                }
                else pos++;
            }
            sink.Add(previous, piece.End, false);
            sink.Finish();
        }
        state.Swap();
    }
}

internal enum PrependScheme { Always, First, Never }

internal sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizer> steps) : PreTokenizer
{
    public IReadOnlyList<PreTokenizer> Steps { get; } = steps;

    public override bool RewritesText => Steps.Count > 0 && Steps[0].RewritesText;

    public override NormalizedText Rewrite(NormalizedText segment, bool atStartOfInput) =>
        Steps.Count > 0 ? Steps[0].Rewrite(segment, atStartOfInput) : segment;

    public override void PreTokenize(PreTokenizeState state)
    {
        foreach (var step in Steps) step.PreTokenize(state);
    }
}

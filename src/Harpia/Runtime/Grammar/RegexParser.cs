using System.Globalization;
using System.Text;

namespace Harpia.Runtime.Grammar;

/// <summary>A parsed regular expression over code points (the grammar's syntax tree).</summary>
internal abstract record RegexNode;

/// <summary>Matches the empty string.</summary>
internal sealed record EmptyNode : RegexNode
{
    public static readonly EmptyNode Instance = new();
}

/// <summary>Matches one code point of the set.</summary>
internal sealed record SetNode(CodePointSet Set) : RegexNode;

internal sealed record ConcatNode(IReadOnlyList<RegexNode> Items) : RegexNode;

internal sealed record AltNode(IReadOnlyList<RegexNode> Items) : RegexNode;

/// <summary>Item repeated Min to Max times; Max = -1 for no upper bound.</summary>
internal sealed record RepeatNode(RegexNode Item, int Min, int Max) : RegexNode;

/// <summary>
/// Parses the regex subset a grammar supports into a <see cref="RegexNode"/> tree. The pattern must match the
/// whole text (TGI/outlines semantics), so a leading ^ and a trailing $ are accepted and ignored; every construct
/// that a finite automaton cannot express (back-references, look-around, anchors and word boundaries inside the
/// pattern, possessive or atomic groups, inline flags, Unicode property classes) is refused with its position
/// rather than approximated, so a grammar never silently admits text the regex would reject.
/// </summary>
internal sealed class RegexParser
{
    /// <summary>Largest count accepted in {n,m}; the automaton size limit usually bites earlier.</summary>
    public const int MaxRepeatCount = 10_000;

    /// <summary>Deepest group nesting accepted: the parser and the automaton builder recurse per level.</summary>
    public const int MaxNesting = 256;

    private static readonly CodePointSet Digit = CodePointSet.FromRanges([('0', '9')]);
    private static readonly CodePointSet Word = CodePointSet.FromRanges([('0', '9'), ('A', 'Z'), ('a', 'z'), ('_', '_')]);
    private static readonly CodePointSet Space = CodePointSet.FromRanges([(' ', ' '), ('\t', '\r')]); // \t \n \v \f \r
    private static readonly CodePointSet AnyButNewline = CodePointSet.Single('\n').Complement();

    private readonly string _pattern;
    private int _pos;
    private readonly int _end;
    private int _depth;

    private RegexParser(string pattern)
    {
        _pattern = pattern;
        _end = pattern.Length;
        // Full-match semantics already anchor both ends; accept the explicit anchors TGI users often write.
        if (_end > 0 && pattern[0] == '^') _pos = 1;
        if (_end > _pos && pattern[_end - 1] == '$' && !IsEscaped(pattern, _end - 1)) _end--;
    }

    public static RegexNode Parse(string pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var parser = new RegexParser(pattern);
        var node = parser.ParseAlternation();
        if (parser._pos < parser._end)
        {
            // The only way ParseAlternation stops early is an unmatched ')'.
            throw parser.Error(parser._pos, "unmatched ')'");
        }
        return node;
    }

    private static bool IsEscaped(string s, int index)
    {
        int backslashes = 0;
        for (int i = index - 1; i >= 0 && s[i] == '\\'; i--) backslashes++;
        return backslashes % 2 == 1;
    }

    private HarpiaException Error(int position, string problem) =>
        new($"grammar regex: {problem} at position {position} of pattern \"{Shorten(_pattern)}\"");

    private static string Shorten(string s) => s.Length <= 200 ? s : s[..200] + "…";

    private bool AtEnd => _pos >= _end;
    private char Peek => _pattern[_pos];

    // alternation := concat ('|' concat)*
    private RegexNode ParseAlternation()
    {
        var branches = new List<RegexNode> { ParseConcat() };
        while (!AtEnd && Peek == '|')
        {
            _pos++;
            branches.Add(ParseConcat());
        }
        return branches.Count == 1 ? branches[0] : new AltNode(branches);
    }

    // concat := repeat*
    private RegexNode ParseConcat()
    {
        var items = new List<RegexNode>();
        while (!AtEnd && Peek != '|' && Peek != ')')
        {
            var atom = ParseAtom();
            items.Add(ParseQuantifiers(atom));
        }
        return items.Count switch { 0 => EmptyNode.Instance, 1 => items[0], _ => new ConcatNode(items) };
    }

    private RegexNode ParseQuantifiers(RegexNode atom)
    {
        if (AtEnd) return atom;
        int start = _pos;
        int min, max;
        switch (Peek)
        {
            case '*': min = 0; max = -1; _pos++; break;
            case '+': min = 1; max = -1; _pos++; break;
            case '?': min = 0; max = 1; _pos++; break;
            case '{':
                if (!TryParseBraces(out min, out max)) return atom; // not a quantifier: '{' is a literal
                break;
            default: return atom;
        }
        if (!AtEnd && Peek == '?') _pos++;          // lazy: the same language under full-match semantics
        else if (!AtEnd && Peek == '+') throw Error(_pos, "possessive quantifier '+' is not supported");
        if (!AtEnd && (Peek is '*' or '+' or '?' || (Peek == '{' && LooksLikeQuantifier())))
            throw Error(_pos, $"a quantifier cannot follow the quantifier at position {start} (nested quantifier; use a group)");
        return new RepeatNode(atom, min, max);
    }

    /// <summary>Parses {n}, {n,}, {n,m} or {,m} (Python's form, meaning {0,m}); false when '{' starts no quantifier.</summary>
    private bool TryParseBraces(out int min, out int max)
    {
        min = max = 0;
        int start = _pos;
        // Quantifier bodies are short; looking only a little ahead keeps a pattern full of literal '{' linear.
        int close = _pattern.IndexOf('}', _pos, Math.Min(_end - _pos, 16));
        if (close < 0) return false;
        var body = _pattern.AsSpan(_pos + 1, close - _pos - 1);
        int comma = body.IndexOf(',');
        var first = comma < 0 ? body : body[..comma];
        var second = comma < 0 ? default : body[(comma + 1)..];
        if (!AllDigits(first) || !AllDigits(second) || (first.IsEmpty && (comma < 0 || second.IsEmpty))) return false;
        min = first.IsEmpty ? 0 : ParseCount(first, start);
        max = comma < 0 ? min : second.IsEmpty ? -1 : ParseCount(second, start);
        if (max >= 0 && max < min) throw Error(start, $"quantifier {{{body.ToString()}}} has its maximum below its minimum");
        _pos = close + 1;
        return true;
    }

    private bool LooksLikeQuantifier()
    {
        int saved = _pos;
        bool ok = TryParseBraces(out _, out _);
        _pos = saved;
        return ok;
    }

    private static bool AllDigits(ReadOnlySpan<char> s)
    {
        foreach (char c in s) if (c is < '0' or > '9') return false;
        return true;
    }

    private int ParseCount(ReadOnlySpan<char> digits, int position)
    {
        if (digits.Length > 6 || int.Parse(digits, CultureInfo.InvariantCulture) > MaxRepeatCount)
            throw Error(position, $"repetition count {digits.ToString()} is larger than the supported {MaxRepeatCount}");
        return int.Parse(digits, CultureInfo.InvariantCulture);
    }

    private RegexNode ParseAtom()
    {
        int start = _pos;
        char c = Peek;
        switch (c)
        {
            case '(':
                return ParseGroup();
            case '[':
                return new SetNode(ParseClass());
            case '.':
                _pos++;
                return new SetNode(AnyButNewline);
            case '\\':
                return new SetNode(ParseEscape(inClass: false));
            case '*' or '+' or '?':
                throw Error(start, $"quantifier '{c}' has nothing to repeat");
            case '{' when LooksLikeQuantifier():
                throw Error(start, "quantifier '{' has nothing to repeat");
            case '^':
                throw Error(start, "anchor '^' is only supported at the very start of the pattern (the whole text is always matched)");
            case '$':
                throw Error(start, "anchor '$' is only supported at the very end of the pattern (the whole text is always matched)");
            default:
                return new SetNode(CodePointSet.Single(ReadLiteralCodePoint()));
        }
    }

    /// <summary>Reads one code point of the pattern text (a surrogate pair is one code point).</summary>
    private int ReadLiteralCodePoint()
    {
        int start = _pos;
        char c = _pattern[_pos++];
        if (char.IsHighSurrogate(c) && _pos < _pattern.Length && char.IsLowSurrogate(_pattern[_pos]))
            return char.ConvertToUtf32(c, _pattern[_pos++]);
        if (char.IsSurrogate(c)) throw Error(start, "lone UTF-16 surrogate in the pattern text");
        return c;
    }

    private RegexNode ParseGroup()
    {
        int start = _pos;
        _pos++; // '('
        if (!AtEnd && Peek == '?')
        {
            var rest = _pattern.AsSpan(_pos, _end - _pos);
            if (rest.StartsWith("?:", StringComparison.Ordinal)) _pos += 2;
            else if (rest.StartsWith("?#", StringComparison.Ordinal))
            {
                int close = _pattern.IndexOf(')', _pos);
                if (close < 0 || close >= _end) throw Error(start, "unterminated comment group (?#");
                _pos = close + 1;
                return EmptyNode.Instance;
            }
            else if (rest.StartsWith("?=", StringComparison.Ordinal) || rest.StartsWith("?!", StringComparison.Ordinal)
                     || rest.StartsWith("?<=", StringComparison.Ordinal) || rest.StartsWith("?<!", StringComparison.Ordinal))
                throw Error(start, "look-around groups ((?=, (?!, (?<=, (?<!) are not supported");
            else if (rest.StartsWith("?P=", StringComparison.Ordinal))
                throw Error(start, "back-references ((?P=name)) are not supported");
            else if (rest.StartsWith("?>", StringComparison.Ordinal))
                throw Error(start, "atomic groups (?>...) are not supported");
            else if (rest.StartsWith("?<", StringComparison.Ordinal) || rest.StartsWith("?P<", StringComparison.Ordinal)
                     || rest.StartsWith("?'", StringComparison.Ordinal))
            {
                // A named capturing group: captures mean nothing to a grammar, so it is a plain group.
                char closer = rest[1] == '\'' ? '\'' : '>';
                int nameStart = _pos + (rest[1] == 'P' ? 3 : 2);
                int close = _pattern.IndexOf(closer, nameStart);
                if (close < 0 || close >= _end || close == nameStart)
                    throw Error(start, "malformed named group");
                for (int i = nameStart; i < close; i++)
                    if (!(char.IsAsciiLetterOrDigit(_pattern[i]) || _pattern[i] == '_'))
                        throw Error(start, "malformed named group");
                _pos = close + 1;
            }
            else throw Error(start, $"group syntax '(?{(rest.Length > 1 ? rest[1].ToString() : "")}' (inline flags, conditionals, …) is not supported");
        }
        if (++_depth > MaxNesting) throw Error(start, $"groups are nested more than {MaxNesting} deep");
        var inner = ParseAlternation();
        if (AtEnd || Peek != ')') throw Error(start, "unclosed group '('");
        _pos++;
        _depth--;
        return inner;
    }

    /// <summary>Parses [...] (the '[' at _pos) into a code point set.</summary>
    private CodePointSet ParseClass()
    {
        int start = _pos;
        _pos++;
        bool negated = false;
        if (!AtEnd && Peek == '^') { negated = true; _pos++; }
        var ranges = new List<(int, int)>();
        var sets = new List<CodePointSet>();
        bool first = true;
        while (true)
        {
            if (AtEnd) throw Error(start, "unclosed character class '['");
            char c = Peek;
            if (c == ']' && !first) { _pos++; break; }
            bool isFirst = first;
            first = false;
            int itemStart = _pos;
            if (c == '-' && !isFirst && _pos + 1 < _end && _pattern[_pos + 1] == '[')
                throw Error(itemStart, "character class subtraction '-[' is not supported");
            if (c == '[' && _pos + 1 < _end && _pattern[_pos + 1] is ':' or '=' or '.')
                throw Error(itemStart, "POSIX bracket expressions ([:alpha:] …) are not supported");
            int lo;
            if (c == '\\')
            {
                var escaped = ParseEscape(inClass: true);
                if (!escaped.IsSingle(out lo))
                {
                    sets.Add(escaped); // \d, \w, \s … : a set, never a range end
                    continue;
                }
            }
            else lo = ReadLiteralCodePoint();

            // A range a-b, unless the '-' is the last thing in the class.
            if (_pos + 1 < _end && Peek == '-' && _pattern[_pos + 1] != ']')
            {
                _pos++;
                if (Peek == '[') throw Error(_pos - 1, "character class subtraction '-[' is not supported");
                int hiStart = _pos;
                int hi;
                if (Peek == '\\')
                {
                    var escaped = ParseEscape(inClass: true);
                    if (!escaped.IsSingle(out hi)) throw Error(hiStart, "a class escape like \\d cannot end a range");
                }
                else hi = ReadLiteralCodePoint();
                if (hi < lo) throw Error(itemStart, $"range out of order in character class (U+{lo:X4} > U+{hi:X4})");
                ranges.Add((lo, hi));
            }
            else ranges.Add((lo, lo));
        }
        var set = CodePointSet.FromRanges(ranges);
        foreach (var s in sets) set = set.Union(s);
        return negated ? set.Complement() : set;
    }

    /// <summary>Parses an escape at _pos ('\\'); returns the code point set it stands for.</summary>
    private CodePointSet ParseEscape(bool inClass)
    {
        int start = _pos;
        _pos++;
        if (_pos >= _end)
            throw Error(start, "pattern ends with a lone backslash");
        char c = _pattern[_pos++];
        switch (c)
        {
            case 'd': return Digit;
            case 'D': return Digit.Complement();
            case 'w': return Word;
            case 'W': return Word.Complement();
            case 's': return Space;
            case 'S': return Space.Complement();
            case 'n': return CodePointSet.Single('\n');
            case 't': return CodePointSet.Single('\t');
            case 'r': return CodePointSet.Single('\r');
            case 'f': return CodePointSet.Single('\f');
            case 'v': return CodePointSet.Single('\v');
            case 'a': return CodePointSet.Single('\a');
            case 'e': return CodePointSet.Single('\u001B');
            case 'b' when inClass: return CodePointSet.Single('\b');
            case '0' when _pos >= _end || !char.IsAsciiDigit(_pattern[_pos]): return CodePointSet.Single(0);
            case 'x': return CodePointSet.Single(ReadHex(2, start));
            case 'u': return CodePointSet.Single(ReadUtf16Escape(start));
            case 'U': return CodePointSet.Single(CheckScalar(ReadHex(8, start), start));
            case 'b' or 'B':
                throw Error(start, $"word boundary '\\{c}' is not supported");
            case 'A' or 'z' or 'Z' or 'G':
                throw Error(start, $"anchor '\\{c}' is not supported (the whole text is always matched)");
            case >= '0' and <= '9':
                throw Error(start, $"back-reference or octal escape '\\{c}' is not supported");
            case 'k':
                throw Error(start, "named back-reference '\\k' is not supported");
            case 'p' or 'P':
                throw Error(start, $"Unicode property class '\\{c}' is not supported");
            default:
                if (char.IsAsciiLetterOrDigit(c)) throw Error(start, $"unknown escape '\\{c}'");
                _pos--;
                return CodePointSet.Single(ReadLiteralCodePoint()); // an escaped metacharacter or any other symbol
        }
    }

    private int ReadHex(int digits, int start)
    {
        if (_pos + digits > _end) throw Error(start, $"escape needs {digits} hex digits");
        var span = _pattern.AsSpan(_pos, digits);
        foreach (char h in span)
            if (!char.IsAsciiHexDigit(h)) throw Error(start, $"escape needs {digits} hex digits, got '{span.ToString()}'");
        _pos += digits;
        return (int)uint.Parse(span, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
    }

    /// <summary>\uXXXX; a high surrogate must be followed by \uYYYY with a low surrogate (a non-BMP code point).</summary>
    private int ReadUtf16Escape(int start)
    {
        int unit = ReadHex(4, start);
        if (unit is >= 0xD800 and <= 0xDBFF && _pos + 6 <= _end && _pattern[_pos] == '\\' && _pattern[_pos + 1] == 'u')
        {
            int saved = _pos;
            _pos += 2;
            int low = ReadHex(4, start);
            if (low is >= 0xDC00 and <= 0xDFFF) return 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            _pos = saved;
        }
        return CheckScalar(unit, start);
    }

    private int CheckScalar(int cp, int start)
    {
        if (cp is >= 0xD800 and <= 0xDFFF) throw Error(start, $"lone surrogate U+{cp:X4} is not a character (it has no UTF-8 encoding)");
        if (cp > CodePointSet.MaxCodePoint) throw Error(start, $"U+{cp:X} is beyond U+10FFFF");
        return cp;
    }
}

/// <summary>Writes a <see cref="RegexNode"/> tree back as pattern text that <see cref="RegexParser"/> reads identically.</summary>
internal static class RegexWriter
{
    public static string Write(RegexNode node)
    {
        var sb = new StringBuilder();
        Write(node, sb);
        return sb.ToString();
    }

    private static void Write(RegexNode node, StringBuilder sb)
    {
        switch (node)
        {
            case EmptyNode:
                break;
            case SetNode { Set: var set }:
                WriteSet(set, sb);
                break;
            case ConcatNode { Items: var items }:
                foreach (var item in items)
                {
                    if (item is AltNode) { sb.Append("(?:"); Write(item, sb); sb.Append(')'); }
                    else Write(item, sb);
                }
                break;
            case AltNode { Items: var items }:
                for (int i = 0; i < items.Count; i++)
                {
                    if (i > 0) sb.Append('|');
                    Write(items[i], sb);
                }
                break;
            case RepeatNode { Item: var item, Min: var min, Max: var max }:
                sb.Append("(?:");
                Write(item, sb);
                sb.Append(')');
                sb.Append(max < 0 ? $"{{{min},}}" : min == max ? $"{{{min}}}" : $"{{{min},{max}}}");
                break;
            default:
                throw new InvalidOperationException(node.GetType().Name);
        }
    }

    private static void WriteSet(CodePointSet set, StringBuilder sb)
    {
        if (set.IsSingle(out int single)) { WriteCodePoint(single, sb); return; }
        if (set.IsEmpty) { sb.Append(@"[^\x00-\U0010FFFF]"); return; } // the empty class: matches nothing
        sb.Append('[');
        foreach (var (lo, hi) in set.Ranges)
        {
            WriteCodePoint(lo, sb);
            if (hi != lo) { sb.Append('-'); WriteCodePoint(hi, sb); }
        }
        sb.Append(']');
    }

    /// <summary>Every code point as an escape: safe in and out of classes, and readable for the ASCII letters.</summary>
    private static void WriteCodePoint(int cp, StringBuilder sb)
    {
        if (cp < 0x80 && char.IsAsciiLetterOrDigit((char)cp)) sb.Append((char)cp);
        else if (cp < 0x80) sb.Append(CultureInfo.InvariantCulture, $"\\x{cp:X2}");
        else if (cp <= 0xFFFF) sb.Append(CultureInfo.InvariantCulture, $"\\u{cp:X4}");
        else sb.Append(CultureInfo.InvariantCulture, $"\\U{cp:X8}");
    }
}

namespace Harpia.Tokenization;

/// <summary>One entry of tokenizer.json's <c>added_tokens</c>.</summary>
public sealed record AddedToken(int Id, string Content, bool SingleWord, bool LStrip, bool RStrip, bool Normalized, bool Special);

/// <summary>A match of an added token: the char range it takes in the text (after lstrip/rstrip) and its id.</summary>
internal readonly record struct AddedMatch(int Start, int End, int Id);

/// <summary>
/// Finds added tokens in text before pre-tokenization, as the Rust library's AddedVocabulary does: leftmost-longest
/// matching over all contents, then single_word filtering and lstrip/rstrip growing the match over whitespace.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly AddedToken[] _tokens;
    private readonly Node _root = new();
    private readonly bool[] _firstCharAscii = new bool[128];
    private readonly bool _anyNonAsciiFirst;

    private sealed class Node
    {
        public Dictionary<char, Node>? Children;
        public int Token = -1; // index into _tokens when a content ends here
    }

    public bool IsEmpty => _tokens.Length == 0;

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens)
    {
        _tokens = tokens.Where(t => t.Content.Length > 0).ToArray();
        for (int t = 0; t < _tokens.Length; t++)
        {
            var node = _root;
            foreach (char c in _tokens[t].Content)
            {
                node.Children ??= new Dictionary<char, Node>();
                if (!node.Children.TryGetValue(c, out var child)) node.Children[c] = child = new Node();
                node = child;
            }
            if (node.Token < 0) node.Token = t;
            char first = _tokens[t].Content[0];
            if (first < 128) _firstCharAscii[first] = true; else _anyNonAsciiFirst = true;
        }
    }

    /// <summary>Appends the matches in <paramref name="text"/>, in order and non-overlapping.</summary>
    public void FindMatches(ReadOnlySpan<char> text, List<AddedMatch> matches)
    {
        if (_tokens.Length == 0) return;
        int consumedUpTo = 0;
        for (int i = 0; i < text.Length;)
        {
            char c = text[i];
            if (c < 128 ? !_firstCharAscii[c] : !_anyNonAsciiFirst) { i++; continue; }
            int best = -1, bestEnd = 0;
            var node = _root;
            for (int j = i; j < text.Length && node.Children is not null && node.Children.TryGetValue(text[j], out node); j++)
                if (node.Token >= 0) { best = node.Token; bestEnd = j + 1; }
            if (best < 0) { i++; continue; }
            var token = _tokens[best];
            int start = i, stop = bestEnd;
            if (token.SingleWord)
            {
                bool wordBefore = start > 0 && IsWordCharBefore(text, start);
                bool wordAfter = stop < text.Length && IsWordCharAt(text, stop);
                if (wordBefore || wordAfter) { i = stop; continue; } // the automaton has consumed it all the same
            }
            if (token.LStrip)
            {
                while (start > consumedUpTo && char.IsWhiteSpace(text[start - 1])) start--;
            }
            if (token.RStrip)
            {
                while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
            }
            matches.Add(new AddedMatch(start, stop, token.Id));
            consumedUpTo = stop;
            i = stop;
        }
    }

    private static bool IsWordCharBefore(ReadOnlySpan<char> text, int index)
    {
        int k = index - 1;
        int cp = char.IsLowSurrogate(text[k]) && k > 0 && char.IsHighSurrogate(text[k - 1])
            ? char.ConvertToUtf32(text[k - 1], text[k]) : text[k];
        return UnicodeClass.IsWordChar(cp);
    }

    private static bool IsWordCharAt(ReadOnlySpan<char> text, int index)
    {
        int cp = char.IsHighSurrogate(text[index]) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1])
            ? char.ConvertToUtf32(text[index], text[index + 1]) : text[index];
        return UnicodeClass.IsWordChar(cp);
    }
}

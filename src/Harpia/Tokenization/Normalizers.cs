using System.Text;
using System.Text.RegularExpressions;

namespace Harpia.Tokenization;

/// <summary>
/// Text being normalized, with, for every character, the index of the original character it came from — enough to
/// map token offsets back to the caller's text.
/// </summary>
internal sealed class NormalizedText(string text, int[] source)
{
    public string Text = text;
    /// <summary>Source[i] = index in the original segment of the character Text[i] came from.</summary>
    public int[] Source = source;

    public static NormalizedText Identity(string text)
    {
        var source = new int[text.Length];
        for (int i = 0; i < source.Length; i++) source[i] = i;
        return new NormalizedText(text, source);
    }
}

internal abstract class Normalizer
{
    public abstract void Normalize(NormalizedText text);
}

internal sealed class SequenceNormalizer(IReadOnlyList<Normalizer> steps) : Normalizer
{
    public override void Normalize(NormalizedText text) { foreach (var s in steps) s.Normalize(text); }
}

/// <summary>NFC / NFD / NFKC / NFKD with Harpia's own Unicode tables (see <see cref="UnicodeNormalization"/>).</summary>
internal sealed class UnicodeNormalizer(bool compatibility, bool compose) : Normalizer
{
    public override void Normalize(NormalizedText text) => UnicodeNormalization.Normalize(text, compatibility, compose);
}

/// <summary>Lowercase with Rust's full mapping for U+0130 (İ → i̇); every other character maps one to one.</summary>
internal sealed class LowercaseNormalizer : Normalizer
{
    public override void Normalize(NormalizedText text)
    {
        var sb = new StringBuilder(text.Text.Length);
        var source = new List<int>(text.Text.Length);
        for (int i = 0; i < text.Text.Length;)
        {
            Rune.DecodeFromUtf16(text.Text.AsSpan(i), out var r, out int used);
            if (r.Value == 0x130) { sb.Append("i\u0307"); source.Add(text.Source[i]); source.Add(text.Source[i]); }
            else
            {
                sb.Append(Rune.ToLowerInvariant(r).ToString());
                int added = Rune.ToLowerInvariant(r).Utf16SequenceLength;
                for (int k = 0; k < added; k++) source.Add(text.Source[i]);
            }
            i += used;
        }
        text.Text = sb.ToString(); text.Source = source.ToArray();
    }
}

/// <summary>Replace every occurrence of a literal or a regular expression.</summary>
internal sealed class ReplaceNormalizer : Normalizer
{
    private readonly string? _literal;
    private readonly Regex? _regex;
    private readonly string _content;

    public ReplaceNormalizer(string? literal, string? regex, string content)
    {
        _literal = literal; _content = content;
        if (regex is not null) _regex = new Regex(regex, RegexOptions.CultureInvariant);
        if (_literal is { Length: 0 }) throw new FormatException("Replace pattern is an empty string");
    }

    public override void Normalize(NormalizedText text)
    {
        var sb = new StringBuilder(text.Text.Length);
        var source = new List<int>(text.Text.Length);
        int previous = 0;
        void Keep(int from, int to) { sb.Append(text.Text, from, to - from); for (int k = from; k < to; k++) source.Add(text.Source[k]); }
        void Replace(int at, int length)
        {
            sb.Append(_content);
            int origin = at < text.Source.Length ? text.Source[at] : (text.Source.Length > 0 ? text.Source[^1] : 0);
            for (int k = 0; k < _content.Length; k++) source.Add(origin);
        }
        if (_literal is not null)
        {
            for (int at = text.Text.IndexOf(_literal, StringComparison.Ordinal); at >= 0;
                 at = previous < text.Text.Length ? text.Text.IndexOf(_literal, previous, StringComparison.Ordinal) : -1)
            {
                Keep(previous, at); Replace(at, _literal.Length); previous = at + _literal.Length;
            }
        }
        else
        {
            for (var m = _regex!.Match(text.Text); m.Success; m = m.NextMatch())
            {
                if (m.Length == 0) continue;
                Keep(previous, m.Index); Replace(m.Index, m.Length); previous = m.Index + m.Length;
            }
        }
        if (previous == 0 && source.Count == 0) return; // nothing replaced
        Keep(previous, text.Text.Length);
        text.Text = sb.ToString(); text.Source = source.ToArray();
    }
}

/// <summary>Prepend a string to every non-empty segment (Llama-2's "▁").</summary>
internal sealed class PrependNormalizer(string prefix) : Normalizer
{
    public override void Normalize(NormalizedText text)
    {
        if (text.Text.Length == 0) return;
        var source = new int[prefix.Length + text.Source.Length];
        Array.Fill(source, text.Source[0], 0, prefix.Length);
        text.Source.CopyTo(source, prefix.Length);
        text.Text = prefix + text.Text; text.Source = source;
    }
}

/// <summary>Strip whitespace on the left and/or right.</summary>
internal sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override void Normalize(NormalizedText text)
    {
        int start = 0, end = text.Text.Length;
        if (left) while (start < end && char.IsWhiteSpace(text.Text[start])) start++;
        if (right) while (end > start && char.IsWhiteSpace(text.Text[end - 1])) end--;
        if (start == 0 && end == text.Text.Length) return;
        text.Text = text.Text[start..end]; text.Source = text.Source[start..end];
    }
}

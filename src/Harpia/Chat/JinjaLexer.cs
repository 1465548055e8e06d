using System.Globalization;
using System.Text;

namespace Harpia.Chat;

/// <summary>A template or expression the Jinja subset cannot parse or evaluate.</summary>
public sealed class JinjaException(string message) : HarpiaException(message);

internal enum JTok { Text, VarOpen, VarClose, BlockOpen, BlockClose, Name, String, Int, Float, Op, End }

internal readonly record struct JToken(JTok Kind, string Value, int Position);

/// <summary>
/// Splits a template into text and tag tokens, applying the whitespace rules Hugging Face's
/// <c>apply_chat_template</c> uses: <c>trim_blocks</c> (drop the first newline after a block tag),
/// <c>lstrip_blocks</c> (drop spaces/tabs before a block tag at the start of a line) and the explicit
/// <c>-</c> modifiers on any tag.
/// </summary>
internal static class JinjaLexer
{
    static readonly string[] Operators =
        ["==", "!=", "<=", ">=", "//", "**", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}",
         ",", ".", ":", "|", "="];

    public static List<JToken> Tokenize(string source)
    {
        var tokens = new List<JToken>();
        int pos = 0;
        bool trimNextText = false;     // a "-%}" / "-}}" before this text
        bool dropFirstNewline = false; // trim_blocks after a "%}"
        while (pos < source.Length)
        {
            int open = FindTagOpen(source, pos);
            string text = source[pos..(open < 0 ? source.Length : open)];
            char kind = open < 0 ? '\0' : source[open + 1];
            bool leftTrim = open >= 0 && open + 2 < source.Length && source[open + 2] == '-';
            bool leftKeep = open >= 0 && open + 2 < source.Length && source[open + 2] == '+';
            if (open >= 0 && !leftTrim && !leftKeep && kind is '%' or '#')
            {
                // lstrip_blocks: spaces and tabs between the start of the line and a block tag go.
                int lineStart = text.LastIndexOf('\n') + 1;
                bool atLineStart = lineStart > 0 || pos == 0 || source[pos - 1] == '\n';
                if (atLineStart && text.AsSpan(lineStart).Trim(" \t").IsEmpty) text = text[..lineStart];
            }
            if (dropFirstNewline)
            {
                if (text.StartsWith("\r\n", StringComparison.Ordinal)) text = text[2..];
                else if (text.StartsWith('\n')) text = text[1..];
            }
            if (trimNextText) text = text.TrimStart();
            if (leftTrim) text = text.TrimEnd();
            if (open < 0) { if (text.Length > 0) tokens.Add(new(JTok.Text, text, pos)); break; }
            if (text.Length > 0) tokens.Add(new(JTok.Text, text, pos));

            int bodyStart = open + 2 + (leftTrim || leftKeep ? 1 : 0);
            if (kind == '#')
            {
                int close = source.IndexOf("#}", bodyStart, StringComparison.Ordinal);
                if (close < 0) throw new JinjaException($"chat template: unclosed comment at offset {open}");
                trimNextText = source[close - 1] == '-';
                dropFirstNewline = true;
                pos = close + 2;
                continue;
            }
            string closer = kind == '{' ? "}}" : "%}";
            tokens.Add(new(kind == '{' ? JTok.VarOpen : JTok.BlockOpen, "", open));
            pos = LexExpression(source, bodyStart, closer, tokens, out bool rightTrim);
            tokens.Add(new(kind == '{' ? JTok.VarClose : JTok.BlockClose, "", pos));
            pos += 2;
            trimNextText = rightTrim;
            dropFirstNewline = kind == '%';
        }
        tokens.Add(new(JTok.End, "", source.Length));
        return tokens;
    }

    static int FindTagOpen(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Lexes tag content up to the closer; returns the closer's offset.</summary>
    static int LexExpression(string s, int pos, string closer, List<JToken> tokens, out bool rightTrim)
    {
        while (true)
        {
            while (pos < s.Length && char.IsWhiteSpace(s[pos])) pos++;
            if (pos >= s.Length) throw new JinjaException($"chat template: missing '{closer}'");
            if (s[pos] == '-' && string.CompareOrdinal(s, pos + 1, closer, 0, 2) == 0) { rightTrim = true; return pos + 1; }
            if (s[pos] == '+' && string.CompareOrdinal(s, pos + 1, closer, 0, 2) == 0) { rightTrim = false; return pos + 1; }
            if (string.CompareOrdinal(s, pos, closer, 0, 2) == 0) { rightTrim = false; return pos; }
            char c = s[pos];
            if (char.IsLetter(c) || c == '_')
            {
                int start = pos;
                while (pos < s.Length && (char.IsLetterOrDigit(s[pos]) || s[pos] == '_')) pos++;
                tokens.Add(new(JTok.Name, s[start..pos], start));
            }
            else if (char.IsDigit(c))
            {
                int start = pos;
                while (pos < s.Length && (char.IsDigit(s[pos]) || s[pos] == '_')) pos++;
                bool isFloat = false;
                if (pos + 1 < s.Length && s[pos] == '.' && char.IsDigit(s[pos + 1]))
                {
                    isFloat = true; pos++;
                    while (pos < s.Length && char.IsDigit(s[pos])) pos++;
                }
                if (pos < s.Length && s[pos] is 'e' or 'E')
                {
                    isFloat = true; pos++;
                    if (pos < s.Length && s[pos] is '+' or '-') pos++;
                    while (pos < s.Length && char.IsDigit(s[pos])) pos++;
                }
                tokens.Add(new(isFloat ? JTok.Float : JTok.Int, s[start..pos].Replace("_", ""), start));
            }
            else if (c is '\'' or '"')
            {
                int start = pos++;
                var sb = new StringBuilder();
                while (true)
                {
                    if (pos >= s.Length) throw new JinjaException($"chat template: unterminated string at offset {start}");
                    char ch = s[pos++];
                    if (ch == c) break;
                    if (ch != '\\' || pos >= s.Length) { sb.Append(ch); continue; }
                    char esc = s[pos++];
                    switch (esc)
                    {
                        case 'n': sb.Append('\n'); break;
                        case 't': sb.Append('\t'); break;
                        case 'r': sb.Append('\r'); break;
                        case '\\': sb.Append('\\'); break;
                        case '\'': sb.Append('\''); break;
                        case '"': sb.Append('"'); break;
                        case 'u' when pos + 4 <= s.Length:
                            sb.Append((char)int.Parse(s.AsSpan(pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture)); pos += 4; break;
                        default: sb.Append('\\').Append(esc); break;
                    }
                }
                tokens.Add(new(JTok.String, sb.ToString(), start));
            }
            else
            {
                string? op = null;
                foreach (var candidate in Operators)
                    if (string.CompareOrdinal(s, pos, candidate, 0, candidate.Length) == 0) { op = candidate; break; }
                if (op is null) throw new JinjaException($"chat template: unexpected character '{c}' at offset {pos}");
                tokens.Add(new(JTok.Op, op, pos));
                pos += op.Length;
            }
        }
    }
}

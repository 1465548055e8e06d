using System.Globalization;
using System.Text;

namespace Harpia;

/// <summary>
/// A compact JSON string literal as Python's <c>json.dumps(s, ensure_ascii=False)</c> writes it: quote, backslash
/// and control characters escaped, everything else (non-ASCII included) as is; a lone surrogate, which UTF-8 cannot
/// carry, as its \u escape. Chat templates' <c>tojson</c> and the JSON-schema grammar both need exactly this.
/// </summary>
internal static class JsonLiteral
{
    public static string Quote(string s) => Append(new StringBuilder(s.Length + 2), s).ToString();

    public static StringBuilder Append(StringBuilder sb, string s)
    {
        sb.Append('"');
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    bool pair = char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]);
                    if (c < 0x20 || (char.IsSurrogate(c) && !pair)) sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
                    else if (pair) { sb.Append(c).Append(s[i + 1]); i++; }
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"');
    }
}

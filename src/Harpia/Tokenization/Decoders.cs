using System.Text;
using System.Text.RegularExpressions;

namespace Harpia.Tokenization;

/// <summary>A decoder step: token strings in, token strings out (the Rust library's decode_chain).</summary>
internal abstract class TokenDecoder
{
    public abstract List<string> DecodeChain(List<string> tokens);
}

/// <summary>ByteLevel: characters back to bytes, then UTF-8 with U+FFFD for invalid sequences.</summary>
internal sealed class ByteLevelDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>(tokens.Count * 4);
        foreach (var token in tokens) AppendBytes(token, bytes);
        return [Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes))];
    }

    /// <summary>A token with a character outside the alphabet (an added token) contributes its own UTF-8.</summary>
    public static void AppendBytes(string token, List<byte> bytes)
    {
        foreach (char c in token)
            if (ByteLevelAlphabet.CharToByte(c) < 0) { bytes.AddRange(Encoding.UTF8.GetBytes(token)); return; }
        foreach (char c in token) bytes.Add((byte)ByteLevelAlphabet.CharToByte(c));
    }
}

/// <summary>Replace a literal (or regex) in every token.</summary>
internal sealed class ReplaceDecoder(string? literal, string? regex, string content) : TokenDecoder
{
    private readonly Regex? _regex = regex is null ? null : new Regex(regex, RegexOptions.CultureInvariant);

    public override List<string> DecodeChain(List<string> tokens) =>
        tokens.Select(t => _regex is not null ? _regex.Replace(t, content) : t.Replace(literal!, content, StringComparison.Ordinal)).ToList();
}

/// <summary>ByteFallback: runs of &lt;0xXX&gt; tokens become their UTF-8 text, or one U+FFFD per byte when invalid.</summary>
internal sealed class ByteFallbackDecoder : TokenDecoder
{
    private static readonly UTF8Encoding Strict = new(false, true);

    public override List<string> DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var pending = new List<byte>();
        void Flush()
        {
            if (pending.Count == 0) return;
            try { output.Add(Strict.GetString(pending.ToArray())); }
            catch (DecoderFallbackException) { for (int i = 0; i < pending.Count; i++) output.Add("\uFFFD"); }
            pending.Clear();
        }
        foreach (var token in tokens)
        {
            if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
                pending.Add(b);
            else { Flush(); output.Add(token); }
        }
        Flush();
        return output;
    }
}

/// <summary>Fuse: all tokens into one string.</summary>
internal sealed class FuseDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Strip: removes up to <c>start</c> leading and <c>stop</c> trailing occurrences of a character per token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(t =>
    {
        int from = 0, to = t.Length;
        while (from < Math.Min(start, t.Length) && t[from] == content) from++;
        for (int k = 0; k < stop && to > from && t[to - 1] == content; k++) to--;
        return t[from..to];
    }).ToList();
}

/// <summary>Metaspace: ▁ → space; in the first token (unless prepend_scheme is never) every ▁ is dropped.</summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme scheme) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var sb = new StringBuilder(tokens[i].Length);
            foreach (char c in tokens[i])
            {
                if (c != replacement) sb.Append(c);
                else if (!(i == 0 && scheme != PrependScheme.Never)) sb.Append(' ');
            }
            output.Add(sb.ToString());
        }
        return output;
    }
}

internal sealed class SequenceDecoder(IReadOnlyList<TokenDecoder> steps) : TokenDecoder
{
    public IReadOnlyList<TokenDecoder> Steps => steps;

    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}

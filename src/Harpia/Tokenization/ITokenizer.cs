namespace Harpia.Tokenization;

/// <summary>One token of an encoding, with the UTF-8 byte range of the input it came from (TGI's /tokenize).</summary>
public readonly record struct TokenSpan(int Id, string Text, int Start, int Stop);

/// <summary>
/// Text ⇄ token ids, exactly as Hugging Face <c>tokenizers</c> does it for the same <c>tokenizer.json</c>.
/// </summary>
public interface ITokenizer
{
    int VocabSize { get; }
    IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false);
    IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false);
    string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false);
    /// <summary>The vocabulary string of a token (byte-level form, e.g. "Ġthe"), or null for an unknown id.</summary>
    string? IdToToken(int id);
    int? TokenToId(string token);
    bool IsSpecial(int id);
    /// <summary>
    /// The UTF-8 bytes token <paramref name="id"/> contributes to a decode in the middle of a text (a byte-level
    /// token may hold only part of a character's encoding); special tokens give their content's UTF-8, and the
    /// caller decides whether to use them. Null for an unknown id.
    /// </summary>
    byte[]? TokenBytes(int id);
    /// <summary>A decoder for streaming: feed ids as they arrive; the text pieces concatenate to the full decode.</summary>
    IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false);
}

public interface IStreamingDecoder
{
    /// <summary>Adds one token; returns the text that became final (never half a UTF-8 sequence; may be empty).</summary>
    string Push(int id);
    /// <summary>Returns whatever is still held back (at the end of a stream).</summary>
    string Flush();
}

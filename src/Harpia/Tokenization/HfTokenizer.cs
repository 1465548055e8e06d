using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Harpia.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> tokenizer (BPE model) that reproduces the Rust <c>tokenizers</c> library
/// token for token. Pipeline per encode: added tokens are cut out of the raw text first; each remaining segment
/// is normalized, pre-tokenized into words and each word is byte-pair encoded; the post-processor then adds the
/// template's special tokens when asked. See docs/TOKENIZER.md.
/// </summary>
public sealed class HfTokenizer : ITokenizer
{
    private readonly string[] _idToToken;       // "" for ids with no token
    private readonly bool[] _hasToken;
    private readonly bool[] _isSpecial;
    private readonly Dictionary<string, int> _addedByContent = new(StringComparer.Ordinal);
    private readonly AddedTokenMatcher _rawMatcher;        // added tokens with normalized=false: matched on raw text
    private readonly AddedTokenMatcher _normalizedMatcher; // normalized=true: matched on each normalized segment
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly BpeModel _model;
    private readonly PostProcessor? _postProcessor;
    private readonly TokenDecoder? _decoder;
    /// <summary>Decoder is exactly ByteLevel: decode by concatenating each token's bytes (exact and fast).</summary>
    private readonly bool _byteLevelDecoding;
    private readonly byte[][] _tokenBytes;

    /// <summary>The file this tokenizer was read from.</summary>
    public string SourcePath { get; }
    public int VocabSize => _idToToken.Length;
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    private HfTokenizer(string path, JsonElement root)
    {
        SourcePath = path;
        const string top = "tokenizer.json";
        if (root.ValueKind != JsonValueKind.Object) throw TokenizerJson.Error("the top level must be a JSON object");

        // Model
        var model = TokenizerJson.Required(root, "model", top);
        string type = TokenizerJson.OptionalString(model, "type", "model") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "?");
        if (type != "BPE")
            throw TokenizerJson.Error($"model.type '{type}' is not supported (supported: BPE; WordPiece, Unigram and WordLevel are not implemented)");
        if (TokenizerJson.Optional(model, "dropout") is JsonElement dropout && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw TokenizerJson.Error("model.dropout is set: BPE dropout is random and only meant for training");
        var vocabJson = TokenizerJson.Required(model, "vocab", "model");
        if (vocabJson.ValueKind != JsonValueKind.Object) throw TokenizerJson.Error("model.vocab must be an object of token → id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocabJson.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw TokenizerJson.Error($"model.vocab['{entry.Name}'] must be a non-negative integer id");
            vocab[entry.Name] = id;
        }
        var mergesJson = TokenizerJson.Required(model, "merges", "model");
        if (mergesJson.ValueKind != JsonValueKind.Array) throw TokenizerJson.Error("model.merges must be an array");
        var merges = new List<(string, string)>(mergesJson.GetArrayLength());
        int rank = 0;
        foreach (var m in mergesJson.EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.String)
            {
                var parts = m.GetString()!.Split(' ');
                if (parts.Length != 2) throw TokenizerJson.Error($"model.merges[{rank}] '{m.GetString()}' is not two tokens separated by one space");
                merges.Add((parts[0], parts[1]));
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                     && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                merges.Add((m[0].GetString()!, m[1].GetString()!));
            else throw TokenizerJson.Error($"model.merges[{rank}] must be \"a b\" or [\"a\", \"b\"]");
            rank++;
        }
        _model = new BpeModel(vocab, merges,
            TokenizerJson.OptionalString(model, "unk_token", "model"),
            TokenizerJson.Bool(model, "fuse_unk", "model", false),
            TokenizerJson.Bool(model, "byte_fallback", "model", false),
            TokenizerJson.Bool(model, "ignore_merges", "model", false),
            TokenizerJson.OptionalString(model, "continuing_subword_prefix", "model"),
            TokenizerJson.OptionalString(model, "end_of_word_suffix", "model"),
            TokenizerJson.Error);

        // Added tokens
        var added = new List<AddedToken>();
        if (TokenizerJson.Optional(root, "added_tokens") is JsonElement addedJson)
        {
            if (addedJson.ValueKind != JsonValueKind.Array) throw TokenizerJson.Error("added_tokens must be an array");
            int i = 0;
            foreach (var t in addedJson.EnumerateArray())
            {
                string p = $"added_tokens[{i++}]";
                int id = TokenizerJson.Int(t, "id", p);
                if (id < 0) throw TokenizerJson.Error($"{p}.id must be non-negative");
                added.Add(new AddedToken(id, TokenizerJson.String(t, "content", p),
                    TokenizerJson.Bool(t, "single_word", p, false), TokenizerJson.Bool(t, "lstrip", p, false),
                    TokenizerJson.Bool(t, "rstrip", p, false), TokenizerJson.Bool(t, "normalized", p, false),
                    TokenizerJson.Bool(t, "special", p, false)));
            }
        }
        AddedTokens = added;

        // Id → token table (ids must be dense enough that a table is reasonable)
        int maxId = -1;
        foreach (int id in vocab.Values) maxId = Math.Max(maxId, id);
        foreach (var t in added) maxId = Math.Max(maxId, t.Id);
        int count = vocab.Count + added.Count;
        if (maxId >= 2 * count + 1024)
            throw TokenizerJson.Error($"token id {maxId} is far beyond the {count} tokens defined; the ids are not a dense vocabulary");
        _idToToken = new string[maxId + 1];
        _hasToken = new bool[maxId + 1];
        _isSpecial = new bool[maxId + 1];
        Array.Fill(_idToToken, "");
        foreach (var (token, id) in vocab) { _idToToken[id] = token; _hasToken[id] = true; }
        foreach (var t in added)
        {
            _idToToken[t.Id] = t.Content; _hasToken[t.Id] = true; _isSpecial[t.Id] = t.Special;
            _addedByContent[t.Content] = t.Id;
        }

        _normalizer = TokenizerJson.Normalizer(TokenizerJson.Optional(root, "normalizer"), "normalizer");
        _preTokenizer = TokenizerJson.PreTokenizer(TokenizerJson.Optional(root, "pre_tokenizer"), "pre_tokenizer");
        _postProcessor = TokenizerJson.PostProcessor(TokenizerJson.Optional(root, "post_processor"), "post_processor", TokenToId);
        var decoderJson = TokenizerJson.Optional(root, "decoder");
        _decoder = TokenizerJson.Decoder(decoderJson, "decoder");
        _byteLevelDecoding = _decoder is ByteLevelDecoder;

        _rawMatcher = new AddedTokenMatcher(added.Where(t => !t.Normalized));
        _normalizedMatcher = new AddedTokenMatcher(added.Where(t => t.Normalized).Select(t =>
        {
            if (_normalizer is null) return t;
            var n = NormalizedText.Identity(t.Content);
            _normalizer.Normalize(n);
            return t with { Content = n.Text };
        }));

        _tokenBytes = new byte[_idToToken.Length][];
        for (int id = 0; id < _idToToken.Length; id++)
            _tokenBytes[id] = ByteLevelAlphabet.TryGetBytes(_idToToken[id]) ?? Encoding.UTF8.GetBytes(_idToToken[id]);
    }

    /// <summary>Reads <c>tokenizer.json</c> (or <c>&lt;folder&gt;/tokenizer.json</c>).</summary>
    /// <exception cref="InvalidModelFileException">missing, unreadable, malformed or unsupported file.</exception>
    public static HfTokenizer Load(string fileOrFolder)
    {
        string path = Directory.Exists(fileOrFolder) ? Path.Combine(fileOrFolder, "tokenizer.json") : fileOrFolder;
        if (!File.Exists(path))
            throw new InvalidModelFileException(path, Directory.Exists(fileOrFolder)
                ? "file not found (the folder has no tokenizer.json)" : "file not found");
        byte[] bytes;
        try { bytes = Formats.UntrustedFile.ReadAllBytes(path, "tokenizer file"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new InvalidModelFileException(path, $"cannot read: {e.Message}"); }
        return Parse(bytes, path);
    }

    /// <summary>Parses tokenizer.json content; <paramref name="path"/> names it in errors.</summary>
    public static HfTokenizer Parse(ReadOnlySpan<byte> json, string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 128 }); }
        catch (JsonException e) { throw new InvalidModelFileException(path, $"not valid JSON: {e.Message}"); }
        using (doc)
        {
            try { return new HfTokenizer(path, doc.RootElement); }
            catch (TokenizerFormatException e) { throw new InvalidModelFileException(path, e.Message); }
            catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException)
            { throw new InvalidModelFileException(path, e.Message); }
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Encoding

    [ThreadStatic] private static EncodeScratch? t_scratch;

    private sealed class EncodeScratch
    {
        public readonly PreTokenizeState State = new();
        public readonly List<WordToken> Words = new(64);
        public readonly List<AddedMatch> Matches = new();
        public readonly List<AddedMatch> InnerMatches = new();
        public readonly List<(int Id, int Start, int Stop)> Tokens = new(256);
    }

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var scratch = t_scratch ??= new EncodeScratch();
        var tokens = scratch.Tokens;
        tokens.Clear();
        EncodeCore(text, addSpecialTokens, scratch);
        var ids = new int[tokens.Count];
        for (int i = 0; i < ids.Length; i++) ids[i] = tokens[i].Id;
        if (tokens.Capacity > 1 << 16) { tokens.Clear(); tokens.Capacity = 256; } // do not pin a huge buffer to the thread
        return ids;
    }

    public IReadOnlyList<TokenSpan> EncodeWithOffsets(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var scratch = t_scratch ??= new EncodeScratch();
        var tokens = scratch.Tokens;
        tokens.Clear();
        EncodeCore(text, addSpecialTokens, scratch);
        var spans = new TokenSpan[tokens.Count];
        for (int i = 0; i < spans.Length; i++)
        {
            var (id, start, stop) = tokens[i];
            spans[i] = new TokenSpan(id, IdToToken(id) ?? "", start, stop);
        }
        if (tokens.Capacity > 1 << 16) { tokens.Clear(); tokens.Capacity = 256; }
        return spans;
    }

    private void EncodeCore(string text, bool addSpecialTokens, EncodeScratch scratch)
    {
        var matches = scratch.Matches;
        matches.Clear();
        _rawMatcher.FindMatches(text, matches);
        int charPos = 0, bytePos = 0;
        foreach (var m in matches)
        {
            if (m.Start > charPos) bytePos = EncodeSegment(text, charPos, m.Start, bytePos, scratch);
            int tokenBytes = Encoding.UTF8.GetByteCount(text.AsSpan(m.Start, m.End - m.Start));
            scratch.Tokens.Add((m.Id, bytePos, bytePos + tokenBytes));
            bytePos += tokenBytes;
            charPos = m.End;
        }
        if (charPos < text.Length) EncodeSegment(text, charPos, text.Length, bytePos, scratch);
        if (addSpecialTokens && _postProcessor is not null) _postProcessor.Process(scratch.Tokens);
    }

    /// <summary>Encodes text[start..end) (no added tokens inside); returns the byte offset after it.</summary>
    private int EncodeSegment(string text, int start, int end, int byteBase, EncodeScratch scratch)
    {
        var segment = text.AsSpan(start, end - start);
        if (_normalizer is null && _normalizedMatcher.IsEmpty && _preTokenizer is not { RewritesText: true })
        {
            // Fast path (Falcon, GPT-2, Llama-3): offsets are the segment's own bytes.
            var state = scratch.State;
            LoadState(state, segment);
            EncodePieces(state, byteBase, null, scratch);
            return byteBase + state.Length;
        }
        return EncodeNormalizedSegment(segment, start, byteBase, scratch);
    }

    private static void LoadState(PreTokenizeState state, ReadOnlySpan<char> text)
    {
        int max = text.Length < 4096 ? Encoding.UTF8.GetMaxByteCount(text.Length) : Encoding.UTF8.GetByteCount(text);
        if (state.Text.Length < max) state.Text = new byte[Math.Max(max, 256)];
        else if (state.Text.Length > 1 << 20 && max < 1 << 16) state.Text = new byte[Math.Max(max, 256)];
        state.Length = Encoding.UTF8.GetBytes(text, state.Text);
        state.ByteLevel = false;
        state.Pieces.Clear();
        state.Next.Clear();
        state.Pieces.Add(new Piece(0, state.Length));
    }

    /// <summary>Pre-tokenizes state's text and BPE-encodes each word; offsets via <paramref name="toOriginal"/> when given.</summary>
    private void EncodePieces(PreTokenizeState state, int byteBase, Func<int, bool, int>? toOriginal, EncodeScratch scratch)
    {
        _preTokenizer?.PreTokenize(state);
        var words = scratch.Words;
        var tokens = scratch.Tokens;
        foreach (var piece in state.Pieces)
        {
            words.Clear();
            _model.EncodeWord(state.Text.AsSpan(piece.Start, piece.End - piece.Start), state.ByteLevel, words);
            int pos = piece.Start;
            foreach (var w in words)
            {
                int s = pos, e = pos + w.ByteLength;
                tokens.Add(toOriginal is null ? (w.Id, byteBase + s, byteBase + e)
                    : (w.Id, byteBase + toOriginal(s, false), byteBase + toOriginal(e, true)));
                pos = e;
            }
        }
    }

    /// <summary>Slow path: normalizer, normalized added tokens or a text-rewriting pre-tokenizer (Metaspace).</summary>
    private int EncodeNormalizedSegment(ReadOnlySpan<char> segment, int segmentStart, int byteBase, EncodeScratch scratch)
    {
        string original = segment.ToString();
        // Byte offset (within the segment) where each original char starts; a surrogate pair's 4 bytes go to its first char.
        // origByte[j + 1] is then where char j ends, for every j.
        var origByte = new int[original.Length + 1];
        for (int i = 0, b = 0; i < original.Length;)
        {
            origByte[i] = b;
            b += Utf8Length(original, i, out int units);
            if (units == 2) origByte[i + 1] = b;
            i += units;
            origByte[i] = b;
        }
        var normalized = NormalizedText.Identity(original);
        _normalizer?.Normalize(normalized);

        var inner = scratch.InnerMatches;
        inner.Clear();
        _normalizedMatcher.FindMatches(normalized.Text, inner);
        int pos = 0;
        var parts = new List<(int Start, int End, int Id)>();
        foreach (var m in inner)
        {
            if (m.Start > pos) parts.Add((pos, m.Start, -1));
            parts.Add((m.Start, m.End, m.Id));
            pos = m.End;
        }
        if (pos < normalized.Text.Length) parts.Add((pos, normalized.Text.Length, -1));

        foreach (var (start, end, id) in parts)
        {
            var piece = new NormalizedText(normalized.Text[start..end], normalized.Source[start..end]);
            if (piece.Source.Length == 0) continue;
            if (id >= 0)
            {
                scratch.Tokens.Add((id, byteBase + origByte[piece.Source[0]], byteBase + origByte[piece.Source[^1] + 1]));
                continue;
            }
            if (_preTokenizer is { RewritesText: true })
            {
                // The Rust library asks whether the piece's original range starts at offset 0 (reordering can move the
                // first source character away from position 0, so take the minimum).
                bool atStart = segmentStart == 0 && piece.Source.Min() == 0;
                var rewritten = _preTokenizer.Rewrite(piece, atStart);
                piece = rewritten;
            }
            var state = scratch.State;
            LoadState(state, piece.Text);
            // Normalized byte → normalized char index.
            var charOfByte = new int[state.Length + 1];
            for (int ci = 0, b = 0; ci < piece.Text.Length;)
            {
                int n = Utf8Length(piece.Text, ci, out int units);
                for (int k = 0; k < n; k++) charOfByte[b + k] = ci;
                b += n; ci += units;
            }
            charOfByte[state.Length] = piece.Text.Length - 1;
            var p = piece;
            // A token starts where its first byte's source char starts and stops where its last byte's source char ends.
            EncodePieces(state, byteBase, (b, isEnd) =>
            {
                int source = p.Source[charOfByte[isEnd ? Math.Max(b - 1, 0) : b]];
                return isEnd ? origByte[source + 1] : origByte[source];
            }, scratch);
        }
        return byteBase + origByte[original.Length];
    }

    /// <summary>UTF-8 length of the character at s[i] (a lone surrogate counts as U+FFFD, as the encoder writes it).</summary>
    private static int Utf8Length(string s, int i, out int units)
    {
        char c = s[i];
        units = 1;
        if (c < 0x80) return 1;
        if (c < 0x800) return 2;
        if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { units = 2; return 4; }
        return 3;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Decoding

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        if (_byteLevelDecoding)
        {
            var bytes = new List<byte>(ids.Length * 4);
            foreach (int id in ids)
                if (IsDecodable(id, skipSpecialTokens)) bytes.AddRange(_tokenBytes[id]);
            return Encoding.UTF8.GetString(CollectionsMarshal.AsSpan(bytes));
        }
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
            if (IsDecodable(id, skipSpecialTokens)) tokens.Add(_idToToken[id]);
        return _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.DecodeChain(tokens));
    }

    /// <summary>Known id, and not a special token being skipped (unknown ids are dropped, as the Rust library does).</summary>
    private bool IsDecodable(int id, bool skipSpecialTokens) =>
        (uint)id < (uint)_hasToken.Length && _hasToken[id] && !(skipSpecialTokens && _isSpecial[id]);

    public string? IdToToken(int id) => (uint)id < (uint)_hasToken.Length && _hasToken[id] ? _idToToken[id] : null;

    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int a) ? a : _model.Vocab.TryGetValue(token, out int id) ? id : null;

    public bool IsSpecial(int id) => (uint)id < (uint)_isSpecial.Length && _isSpecial[id];

    public byte[]? TokenBytes(int id)
    {
        if (!IsDecodable(id, skipSpecialTokens: false)) return null;
        if (_byteLevelDecoding) return (byte[])_tokenBytes[id].Clone();
        if (_decoder is null) return Encoding.UTF8.GetBytes(_idToToken[id]);
        // Other decoders are not a plain concatenation: a byte-fallback token is one raw byte, and Metaspace/Strip
        // treat the first token of a text specially. Decode the token after a placeholder so it is a middle token,
        // then cut the placeholder off again.
        string token = _idToToken[id];
        if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte raw)
            && ContainsByteFallback(_decoder))
            return [raw];
        const string placeholder = "a";
        string text = string.Concat(_decoder.DecodeChain([placeholder, token]));
        return Encoding.UTF8.GetBytes(text.StartsWith(placeholder, StringComparison.Ordinal) ? text[placeholder.Length..] : text);
    }

    private static bool ContainsByteFallback(TokenDecoder decoder) =>
        decoder is ByteFallbackDecoder || (decoder is SequenceDecoder seq && seq.Steps.Any(ContainsByteFallback));

    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) =>
        _byteLevelDecoding ? new ByteStreamDecoder(this, skipSpecialTokens) : new WindowStreamDecoder(this, skipSpecialTokens);

    /// <summary>
    /// Streaming for byte-level decoding: token bytes go through a stateful UTF-8 decoder that holds back an
    /// incomplete sequence, so pieces never split a character and their concatenation is the full decode.
    /// </summary>
    private sealed class ByteStreamDecoder(HfTokenizer owner, bool skipSpecialTokens) : IStreamingDecoder
    {
        private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
        private char[] _chars = new char[64];

        public string Push(int id)
        {
            if (!owner.IsDecodable(id, skipSpecialTokens)) return "";
            return Run(owner._tokenBytes[id], flush: false);
        }

        public string Flush() => Run([], flush: true);

        private string Run(byte[] bytes, bool flush)
        {
            int max = _utf8.GetCharCount(bytes, flush: false) + 8;
            if (_chars.Length < max) _chars = new char[max * 2];
            int n = _utf8.GetChars(bytes, _chars, flush);
            return n == 0 ? "" : new string(_chars, 0, n);
        }
    }

    /// <summary>
    /// Streaming for other decoders (Metaspace, ByteFallback, …), as the Rust library's DecodeStream: decode a
    /// short window of recent ids and emit what grew, holding back while the text ends in U+FFFD (an
    /// incomplete character); Flush emits the rest.
    /// </summary>
    private sealed class WindowStreamDecoder(HfTokenizer owner, bool skipSpecialTokens) : IStreamingDecoder
    {
        private readonly List<int> _ids = new();
        private string _prefix = "";
        private int _prefixIndex;

        public string Push(int id)
        {
            _ids.Add(id);
            string text = owner.Decode(CollectionsMarshal.AsSpan(_ids), skipSpecialTokens);
            if (text.Length <= _prefix.Length || text.EndsWith('\uFFFD') || !text.StartsWith(_prefix, StringComparison.Ordinal))
                return "";
            string fresh = text[_prefix.Length..];
            int newPrefixIndex = _ids.Count - _prefixIndex;
            _ids.RemoveRange(0, _prefixIndex);
            _prefix = owner.Decode(CollectionsMarshal.AsSpan(_ids), skipSpecialTokens);
            _prefixIndex = newPrefixIndex;
            return fresh;
        }

        public string Flush()
        {
            string text = owner.Decode(CollectionsMarshal.AsSpan(_ids), skipSpecialTokens);
            string rest = text.Length > _prefix.Length && text.StartsWith(_prefix, StringComparison.Ordinal) ? text[_prefix.Length..] : "";
            _ids.Clear(); _prefix = ""; _prefixIndex = 0;
            return rest;
        }
    }
}

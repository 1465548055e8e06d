using System.Collections.Concurrent;
using System.Text;

namespace Harpia.Tokenization;

/// <summary>One BPE output token: its id and how many bytes of the segment text it covers.</summary>
internal readonly record struct WordToken(int Id, int ByteLength);

/// <summary>
/// Byte-pair encoding as the Rust library's BPE model does it: a word starts as one symbol per character (per byte
/// in the byte-level view), then the adjacent pair with the lowest merge rank is merged — leftmost first on ties —
/// until no pair has a merge. Merges are looked up by (left id, right id); results are cached per word.
/// </summary>
internal sealed class BpeModel
{
    private const int CacheCapacity = 50_000; // words; bounded so adversarial input cannot grow memory without limit
    private const int MaxCachedWordBytes = 128;

    public Dictionary<string, int> Vocab { get; }
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    /// <summary>(left id &lt;&lt; 32 | right id) → (rank &lt;&lt; 32 | merged id).</summary>
    private readonly Dictionary<long, long> _merges;
    /// <summary>Id of the byte-level character for each byte, or -1 (no prefix/suffix in force).</summary>
    private readonly int[] _byteSymbol = new int[256];
    private readonly int[] _byteFallbackId = new int[256];
    private readonly int? _unkId;
    private readonly bool _fuseUnk, _byteFallback, _ignoreMerges;
    private readonly string? _prefix, _suffix;
    private readonly ConcurrentDictionary<string, WordToken[]> _cache = new();
    private readonly ConcurrentDictionary<string, WordToken[]>.AlternateLookup<ReadOnlySpan<char>> _cacheBySpan;
    private int _cacheCount;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string? unkToken,
        bool fuseUnk, bool byteFallback, bool ignoreMerges, string? continuingSubwordPrefix, string? endOfWordSuffix,
        Func<string, Exception> error)
    {
        Vocab = vocab;
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheBySpan = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        _fuseUnk = fuseUnk; _byteFallback = byteFallback; _ignoreMerges = ignoreMerges;
        _prefix = string.IsNullOrEmpty(continuingSubwordPrefix) ? null : continuingSubwordPrefix;
        _suffix = string.IsNullOrEmpty(endOfWordSuffix) ? null : endOfWordSuffix;
        if (unkToken is not null)
        {
            if (!vocab.TryGetValue(unkToken, out int unk)) throw error($"model.unk_token '{unkToken}' is not in model.vocab");
            _unkId = unk;
        }
        _merges = new Dictionary<long, long>(merges.Count);
        int prefixLength = _prefix?.Length ?? 0;
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int a)) throw error($"model.merges[{rank}]: '{left}' is not in model.vocab");
            if (!vocab.TryGetValue(right, out int b)) throw error($"model.merges[{rank}]: '{right}' is not in model.vocab");
            string merged = left + (prefixLength > 0 && right.StartsWith(_prefix!, StringComparison.Ordinal) ? right[prefixLength..] : right);
            if (!vocab.TryGetValue(merged, out int id)) throw error($"model.merges[{rank}]: merged token '{merged}' is not in model.vocab");
            // A pair listed twice keeps its later rank, as the Rust library's map (built in rank order) does.
            _merges[((long)a << 32) | (uint)b] = ((long)rank << 32) | (uint)id;
        }
        Span<char> one = stackalloc char[1];
        for (int b = 0; b < 256; b++)
        {
            one[0] = ByteLevelAlphabet.ByteToChar[b];
            _byteSymbol[b] = _vocabBySpan.TryGetValue(one, out int id) ? id : -1;
            _byteFallbackId[b] = vocab.TryGetValue($"<0x{b:X2}>", out int fb) ? fb : -1;
        }
    }

    /// <summary>Encodes one pre-tokenized word (UTF-8 bytes; <paramref name="byteLevel"/>: read as byte-level characters).</summary>
    public void EncodeWord(ReadOnlySpan<byte> word, bool byteLevel, List<WordToken> output)
    {
        if (word.Length == 0) return;
        if (word.Length <= MaxCachedWordBytes)
        {
            // Cache key: the bytes widened to chars (one char per byte: unique and allocation-free to look up).
            Span<char> key = stackalloc char[word.Length + 1];
            for (int i = 0; i < word.Length; i++) key[i] = (char)word[i];
            key[word.Length] = byteLevel ? '\u0001' : '\u0000';
            if (_cacheBySpan.TryGetValue(key, out var cached)) { output.AddRange(cached); return; }
            int before = output.Count;
            EncodeUncached(word, byteLevel, output);
            if (_cacheCount < CacheCapacity && Interlocked.Increment(ref _cacheCount) <= CacheCapacity)
                _cache.TryAdd(new string(key), output.GetRange(before, output.Count - before).ToArray());
            return;
        }
        EncodeUncached(word, byteLevel, output);
    }

    [ThreadStatic] private static WordScratch? t_scratch;

    private sealed class WordScratch
    {
        public int[] Id = new int[64], Len = new int[64], Prev = new int[64], Next = new int[64];
        public readonly PriorityQueue<int, long> Queue = new();
        public void Ensure(int n)
        {
            if (Id.Length >= n) return;
            int size = Math.Max(n, Id.Length * 2);
            Id = new int[size]; Len = new int[size]; Prev = new int[size]; Next = new int[size];
        }
    }

    private void EncodeUncached(ReadOnlySpan<byte> word, bool byteLevel, List<WordToken> output)
    {
        if (_ignoreMerges && TryWholeWord(word, byteLevel, output)) return;
        var s = t_scratch ??= new WordScratch();
        s.Ensure(word.Length + 1); // every symbol covers at least one byte
        try { EncodeSymbols(word, byteLevel, output, s); }
        finally { if (s.Id.Length > 1 << 16) t_scratch = null; } // do not keep a huge word's buffers alive
    }

    private void EncodeSymbols(ReadOnlySpan<byte> word, bool byteLevel, List<WordToken> output, WordScratch s)
    {
        int n = byteLevel && _prefix is null && _suffix is null
            ? InitialByteSymbols(word, s)
            : InitialCharSymbols(word, byteLevel, s);
        if (n == 0) return;
        for (int i = 0; i < n; i++) { s.Prev[i] = i - 1; s.Next[i] = i + 1 < n ? i + 1 : -1; }
        if (n > 1) MergeSymbols(s, n);
        for (int i = 0; i >= 0; i = s.Next[i]) output.Add(new WordToken(s.Id[i], s.Len[i]));
    }

    private int InitialByteSymbols(ReadOnlySpan<byte> word, WordScratch s)
    {
        int n = 0, pendingUnk = -1;
        for (int i = 0; i < word.Length; i++)
        {
            int id = _byteSymbol[word[i]];
            if (id >= 0) { AddSymbol(s, ref n, ref pendingUnk, id, 1); continue; }
            AddUnknown(s, ref n, ref pendingUnk, word.Slice(i, 1), 1);
        }
        return n;
    }

    private int InitialCharSymbols(ReadOnlySpan<byte> word, bool byteLevel, WordScratch s)
    {
        int n = 0, pendingUnk = -1;
        var sb = new StringBuilder(16);
        for (int pos = 0; pos < word.Length;)
        {
            int cp, len;
            if (byteLevel) { cp = ByteLevelAlphabet.ByteToChar[word[pos]]; len = 1; }
            else { Rune.DecodeFromUtf8(word[pos..], out var r, out len); cp = r.Value; }
            sb.Clear();
            if (pos > 0 && _prefix is not null) sb.Append(_prefix);
            sb.Append(char.ConvertFromUtf32(cp));
            if (pos + len == word.Length && _suffix is not null) sb.Append(_suffix);
            if (Vocab.TryGetValue(sb.ToString(), out int id)) AddSymbol(s, ref n, ref pendingUnk, id, len);
            else AddUnknown(s, ref n, ref pendingUnk, word.Slice(pos, len), len);
            pos += len;
        }
        return n;
    }

    private static void AddSymbol(WordScratch s, ref int n, ref int pendingUnk, int id, int len)
    {
        EndUnknownRun(ref pendingUnk);
        s.Id[n] = id; s.Len[n] = len; n++;
    }

    /// <summary>A character missing from the vocabulary: byte-fallback tokens, else unk (fused if asked), else dropped.</summary>
    private void AddUnknown(WordScratch s, ref int n, ref int pendingUnk, ReadOnlySpan<byte> bytes, int len)
    {
        if (_byteFallback)
        {
            bool all = true;
            foreach (byte b in bytes) all &= _byteFallbackId[b] >= 0;
            if (all)
            {
                EndUnknownRun(ref pendingUnk);
                foreach (byte b in bytes) { s.Id[n] = _byteFallbackId[b]; s.Len[n] = 1; n++; }
                return;
            }
        }
        if (_unkId is not int unk) return; // the Rust library drops such characters when there is no unk token
        if (pendingUnk >= 0 && _fuseUnk) { s.Len[pendingUnk] += len; return; }
        EndUnknownRun(ref pendingUnk);
        s.Id[n] = unk; s.Len[n] = len; pendingUnk = n; n++;
    }

    /// <summary>A known symbol ends a run of unknown characters (which fuse_unk would otherwise merge).</summary>
    private static void EndUnknownRun(ref int pendingUnk) => pendingUnk = -1;

    private bool TryWholeWord(ReadOnlySpan<byte> word, bool byteLevel, List<WordToken> output)
    {
        Span<char> chars = word.Length <= 256 ? stackalloc char[word.Length] : new char[word.Length];
        int count;
        if (byteLevel) { for (int i = 0; i < word.Length; i++) chars[i] = ByteLevelAlphabet.ByteToChar[word[i]]; count = word.Length; }
        else count = Encoding.UTF8.GetChars(word, chars);
        if (!_vocabBySpan.TryGetValue(chars[..count], out int id)) return false;
        output.Add(new WordToken(id, word.Length));
        return true;
    }

    private void MergeSymbols(WordScratch s, int n)
    {
        var queue = s.Queue;
        queue.Clear();
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(((long)s.Id[i] << 32) | (uint)s.Id[i + 1], out long m))
                queue.Enqueue(i, (m & ~0xFFFFFFFFL) | (uint)i);
        while (queue.TryDequeue(out int pos, out long priority))
        {
            if (s.Len[pos] == 0) continue;          // merged into its left neighbour already
            int next = s.Next[pos];
            if (next < 0) continue;
            if (!_merges.TryGetValue(((long)s.Id[pos] << 32) | (uint)s.Id[next], out long m)
                || (m >> 32) != (priority >> 32)) continue; // stale: this pair changed since it was queued
            s.Id[pos] = (int)(m & 0xFFFFFFFF);
            s.Len[pos] += s.Len[next];
            s.Len[next] = 0;
            int after = s.Next[next];
            s.Next[pos] = after;
            if (after >= 0) s.Prev[after] = pos;
            int prev = s.Prev[pos];
            if (prev >= 0 && _merges.TryGetValue(((long)s.Id[prev] << 32) | (uint)s.Id[pos], out long mp))
                queue.Enqueue(prev, (mp & ~0xFFFFFFFFL) | (uint)prev);
            if (after >= 0 && _merges.TryGetValue(((long)s.Id[pos] << 32) | (uint)s.Id[after], out long mn))
                queue.Enqueue(pos, (mn & ~0xFFFFFFFFL) | (uint)pos);
        }
    }
}

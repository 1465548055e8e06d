using Harpia.Tokenization;

namespace Harpia.Runtime.Grammar;

/// <summary>
/// The vocabulary's bytes, built once per model and shared by all constraints (immutable, thread-safe). Tokens are
/// also laid out as a byte trie so that finding the tokens a grammar state allows walks each shared prefix once
/// and skips whole subtrees as soon as the grammar rejects a prefix.
/// </summary>
public sealed class TokenVocabulary
{
    private readonly byte[]?[] _bytes;

    // The trie, nodes in depth-first preorder (children in increasing byte order). Node 0 is the root (empty
    // prefix). A node's subtree is the contiguous run [node, node + SubtreeSize[node]), so a walk can skip it whole.
    internal readonly int[] Parent;
    internal readonly byte[] Label;        // the byte on the edge from the parent (unused for the root)
    internal readonly int[] SubtreeSize;
    internal readonly int[] TokensStart;   // tokens ending at node n: TokenIds[TokensStart[n]..TokensStart[n + 1])
    internal readonly int[] TokenIds;

    public int Count => _bytes.Length;
    public int? EosId { get; }

    /// <param name="tokenBytes">tokenBytes[id] = the UTF-8 bytes token id adds to the decoded text; null = a token
    /// that may never be generated under a grammar (special tokens other than EOS, unknown ids). Empty tokens are
    /// never allowed either: they would let a generation loop without making progress.</param>
    /// <param name="eosId">The end-of-sequence token (its bytes are ignored: it is allowed exactly when the text is a full match).</param>
    public TokenVocabulary(IReadOnlyList<byte[]?> tokenBytes, int? eosId)
    {
        ArgumentNullException.ThrowIfNull(tokenBytes);
        if (eosId is int eos && (eos < 0 || eos >= tokenBytes.Count))
            throw new ArgumentOutOfRangeException(nameof(eosId), eosId, $"outside the vocabulary of {tokenBytes.Count} tokens");
        EosId = eosId;
        _bytes = new byte[]?[tokenBytes.Count];
        var ids = new List<int>(tokenBytes.Count);
        for (int id = 0; id < tokenBytes.Count; id++)
        {
            var b = tokenBytes[id];
            _bytes[id] = b is null ? null : (byte[])b.Clone();
            if (b is { Length: > 0 } && id != eosId) ids.Add(id);
        }

        // Sorting by bytes makes the insertion order a depth-first preorder: each token shares its longest common
        // prefix with the one before it, so the trie is built by keeping the current path on a stack.
        ids.Sort((a, b) =>
        {
            int c = _bytes[a].AsSpan().SequenceCompareTo(_bytes[b]);
            return c != 0 ? c : a.CompareTo(b);
        });
        var parent = new List<int> { -1 };
        var label = new List<byte> { 0 };
        var tokenNode = new int[ids.Count];
        var path = new List<int> { 0 }; // path[d] = node at depth d on the current branch
        byte[] previous = [];
        for (int i = 0; i < ids.Count; i++)
        {
            var bytes = _bytes[ids[i]]!;
            int common = bytes.AsSpan().CommonPrefixLength(previous);
            path.RemoveRange(common + 1, path.Count - common - 1);
            for (int d = common; d < bytes.Length; d++)
            {
                parent.Add(path[d]);
                label.Add(bytes[d]);
                path.Add(parent.Count - 1);
            }
            tokenNode[i] = path[bytes.Length];
            previous = bytes;
        }
        int n = parent.Count;
        Parent = parent.ToArray();
        Label = label.ToArray();
        SubtreeSize = new int[n];
        for (int v = n - 1; v >= 0; v--)
        {
            SubtreeSize[v] += 1;
            if (v > 0) SubtreeSize[Parent[v]] += SubtreeSize[v];
        }
        TokensStart = new int[n + 1];
        foreach (int node in tokenNode) TokensStart[node + 1]++;
        for (int v = 0; v < n; v++) TokensStart[v + 1] += TokensStart[v];
        TokenIds = new int[ids.Count];
        var fill = (int[])TokensStart.Clone();
        for (int i = 0; i < ids.Count; i++) TokenIds[fill[tokenNode[i]]++] = ids[i];
    }

    /// <summary>Trie size (diagnostics).</summary>
    internal int NodeCount => Parent.Length;

    /// <summary>The bytes of a token (null: never allowed under a grammar).</summary>
    internal byte[]? BytesOf(int id) => (uint)id < (uint)_bytes.Length ? _bytes[id] : null;

    /// <summary>
    /// The vocabulary of a tokenizer: each token's decoded bytes, with special tokens other than
    /// <paramref name="eosId"/> mapped to null (a grammar never lets the model emit a control token as text).
    /// </summary>
    public static TokenVocabulary FromTokenizer(ITokenizer tokenizer, int? eosId)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var bytes = new byte[]?[tokenizer.VocabSize];
        for (int id = 0; id < bytes.Length; id++)
            bytes[id] = id != eosId && tokenizer.IsSpecial(id) ? null : tokenizer.TokenBytes(id);
        return new TokenVocabulary(bytes, eosId);
    }
}

namespace Harpia.Runtime.Grammar;

/// <summary>
/// Per-sequence grammar state: which tokens may come next. Thread-confined (one per generated sequence); the
/// automaton and the per-state token masks it reads are shared by every sequence using the same grammar and
/// vocabulary, so after a state's mask is built once, <see cref="Mask"/> only fills score ranges (no allocation).
/// </summary>
public sealed class TokenConstraint
{
    private readonly ByteDfa _dfa;
    private readonly TokenVocabulary _vocab;
    private readonly TokenMaskCache _masks;
    private int _state;
    private bool _finished;

    public TokenConstraint(ByteDfa dfa, TokenVocabulary vocab)
    {
        ArgumentNullException.ThrowIfNull(dfa);
        ArgumentNullException.ThrowIfNull(vocab);
        _dfa = dfa;
        _vocab = vocab;
        _masks = dfa.MaskCache(vocab);
        _state = dfa.Start;
    }

    /// <summary>
    /// Sets scores[id] = -∞ for every token not allowed now (and for every id beyond the vocabulary). EOS is
    /// allowed exactly when the text so far is a full match — or when no other token fits (only possible with a
    /// vocabulary that cannot spell what the grammar needs), so that generation ends instead of stalling. Without an
    /// EOS id in that case every score is -∞. The first visit of a grammar state builds its mask (about a
    /// millisecond on a 65k vocabulary); later visits, from any sequence on the same grammar, only fill ranges.
    /// </summary>
    /// <exception cref="HarpiaException">the grammar's automaton grew past its size limit (a pathological grammar).</exception>
    public void Mask(Span<float> scores)
    {
        if (scores.Length < _vocab.Count)
            throw new ArgumentException($"scores has {scores.Length} entries, fewer than the vocabulary's {_vocab.Count}", nameof(scores));
        var mask = _finished ? _masks.OnlyEos : _masks.Get(_state);
        var ranges = mask.Disallowed;
        for (int i = 0; i < ranges.Length; i += 2)
            scores.Slice(ranges[i], ranges[i + 1]).Fill(float.NegativeInfinity);
        scores[_vocab.Count..].Fill(float.NegativeInfinity);
    }

    /// <summary>Advances by the token's bytes; EOS marks the sequence finished.</summary>
    /// <exception cref="InvalidOperationException">the token is not one <see cref="Mask"/> allows now.</exception>
    public void Accept(int id)
    {
        if (_finished) throw new InvalidOperationException("the grammar constraint already accepted end-of-sequence");
        if (id == _vocab.EosId)
        {
            if (!_dfa.IsAccepting(_state) && _masks.Get(_state).AnyAllowed)
                throw new InvalidOperationException("end-of-sequence is not allowed before the text matches the grammar");
            _finished = true;
            return;
        }
        var bytes = _vocab.BytesOf(id);
        if (bytes is not { Length: > 0 })
            throw new InvalidOperationException($"token {id} can never be generated under a grammar");
        int state = _state;
        foreach (byte b in bytes)
        {
            state = _dfa.Next(state, b);
            if (state < 0) throw new InvalidOperationException($"token {id} is not allowed by the grammar at this point");
        }
        _state = state;
    }

    /// <summary>The text is a full match and nothing can extend it (or EOS was accepted): the caller should end generation.</summary>
    public bool IsComplete => _finished || (_dfa.IsAccepting(_state) && !_dfa.HasExits(_state));
}

/// <summary>Which token ids one automaton state forbids, as (start, length) runs over [0, vocabulary size).</summary>
internal sealed class TokenMask(int[] disallowed, bool anyAllowed)
{
    /// <summary>Pairs (start, length) of ids to set to -∞; runs rather than ids keep both near-empty and near-full masks short.</summary>
    public readonly int[] Disallowed = disallowed;
    /// <summary>Some token other than EOS is allowed.</summary>
    public readonly bool AnyAllowed = anyAllowed;
}

/// <summary>
/// The token masks of one (automaton, vocabulary) pair, built per state on first use by walking the vocabulary's
/// trie through the automaton. Shared by all constraints on that pair; reads of built masks take no lock.
/// </summary>
internal sealed class TokenMaskCache
{
    private readonly ByteDfa _dfa;
    private readonly TokenVocabulary _vocab;
    private readonly object _gate = new();
    private TokenMask?[] _byState = new TokenMask?[64];
    // Scratch (under _gate): the DFA state reached at each trie node, and the allowed flags per id.
    private int[]? _nodeState;
    private bool[]? _allowed;

    public TokenMask OnlyEos { get; }

    public TokenMaskCache(ByteDfa dfa, TokenVocabulary vocab)
    {
        _dfa = dfa;
        _vocab = vocab;
        var allowed = new bool[vocab.Count];
        if (vocab.EosId is int eos) allowed[eos] = true;
        OnlyEos = Build(allowed, anyAllowed: false);
    }

    public TokenMask Get(int state)
    {
        var table = Volatile.Read(ref _byState);
        if ((uint)state < (uint)table.Length && Volatile.Read(ref table[state]) is { } mask) return mask;
        lock (_gate)
        {
            table = _byState;
            if ((uint)state < (uint)table.Length && table[state] is { } again) return again;
            mask = Compute(state);
            if (state >= table.Length)
            {
                Array.Resize(ref table, Math.Max(table.Length * 2, state + 1));
                table[state] = mask;
                Volatile.Write(ref _byState, table);
            }
            else Volatile.Write(ref table[state], mask);
            return mask;
        }
    }

    /// <summary>Walks the trie in preorder, carrying the automaton state; a dead prefix skips its whole subtree.</summary>
    private TokenMask Compute(int state)
    {
        var v = _vocab;
        int nodes = v.NodeCount;
        var nodeState = _nodeState ??= new int[nodes];
        var allowed = _allowed ??= new bool[v.Count];
        Array.Clear(allowed);
        bool any = false;
        nodeState[0] = state;
        for (int node = 1; node < nodes;)
        {
            int next = _dfa.Next(nodeState[v.Parent[node]], v.Label[node]);
            if (next < 0) { node += v.SubtreeSize[node]; continue; }
            nodeState[node] = next;
            for (int i = v.TokensStart[node]; i < v.TokensStart[node + 1]; i++) { allowed[v.TokenIds[i]] = true; any = true; }
            node++;
        }
        if (v.EosId is int eos) allowed[eos] = _dfa.IsAccepting(state) || !any;
        return Build(allowed, any);
    }

    private static TokenMask Build(bool[] allowed, bool anyAllowed)
    {
        var runs = new List<int>();
        for (int id = 0; id < allowed.Length;)
        {
            if (allowed[id]) { id++; continue; }
            int start = id;
            while (id < allowed.Length && !allowed[id]) id++;
            runs.Add(start);
            runs.Add(id - start);
        }
        return new TokenMask(runs.ToArray(), anyAllowed);
    }
}

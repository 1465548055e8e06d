using System.Runtime.CompilerServices;
using System.Text.Json;

namespace Harpia.Runtime.Grammar;

/// <summary>
/// A deterministic automaton over UTF-8 bytes, built lazily from a regex: a DFA state is a set of NFA states
/// (subset construction), and a state's transitions are computed the first time anyone asks for them, then
/// cached. Grammars such as JSON schemas have DFAs far too large to build whole but a generation only ever
/// visits a few hundred states. Thread-safe: states are added under a lock and published complete, so
/// <see cref="Next"/> on an already-computed state takes no lock; one instance can serve every sequence using
/// the same grammar.
/// </summary>
public sealed class ByteDfa
{
    /// <summary>Most DFA states one grammar may grow to before generation fails with a clear error.</summary>
    internal const int MaxStates = 100_000;

    private readonly ByteNfa _nfa;
    private readonly string _pattern;
    // Bytes that no NFA edge tells apart share a class; rows are indexed by class (typically a few dozen, not 256).
    private readonly byte[] _classOf = new byte[256];
    private readonly int _classCount;

    private readonly object _gate = new();
    private State?[] _states = new State?[64];
    private int _count;
    private readonly Dictionary<int[], int> _index = new(SetComparer.Instance);
    // Scratch for row computation (only touched under _gate).
    private readonly List<int>[] _buckets;
    private readonly int[] _stamp;
    private int _stampValue;
    private readonly Stack<int> _stack = new();
    private readonly List<int> _closure = [];

    private readonly ConditionalWeakTable<TokenVocabulary, TokenMaskCache> _maskCaches = new();

    private sealed class State(int[] nfaStates, bool accepting)
    {
        public readonly int[] NfaStates = nfaStates;
        public readonly bool Accepting = accepting;
        /// <summary>Next state per byte class (-1 = dead); null until computed, published whole.</summary>
        public int[]? Row;
        public bool HasExits; // written before Row is published
    }

    private ByteDfa(ByteNfa nfa, string pattern)
    {
        _nfa = nfa;
        _pattern = pattern;
        var boundary = new bool[257];
        foreach (var e in nfa.AllEdges) { boundary[e.Lo] = true; boundary[e.Hi + 1] = true; }
        int cls = -1;
        for (int b = 0; b < 256; b++)
        {
            if (b == 0 || boundary[b]) cls++;
            _classOf[b] = (byte)cls;
        }
        _classCount = cls + 1;
        _buckets = new List<int>[_classCount];
        for (int i = 0; i < _classCount; i++) _buckets[i] = [];
        _stamp = new int[nfa.StateCount];
        lock (_gate) Start = Intern([nfa.Start]);
    }

    /// <summary>Compiles a regex (full-match semantics; see <see cref="RegexParser"/> for the supported subset).</summary>
    /// <exception cref="HarpiaException">unsupported construct, malformed pattern or a pattern too large to compile.</exception>
    public static ByteDfa FromRegex(string pattern) => FromRegex(pattern, CancellationToken.None);

    /// <summary>As <see cref="FromRegex(string)"/>; construction stops with <see cref="OperationCanceledException"/> when <paramref name="cancellation"/> fires.</summary>
    public static ByteDfa FromRegex(string pattern, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var tree = RegexParser.Parse(pattern);
        return new ByteDfa(ByteNfa.Build(tree, pattern, cancellation), pattern);
    }

    /// <summary>Compiles a JSON schema via <see cref="JsonSchemaRegex.FromSchema"/>.</summary>
    /// <exception cref="HarpiaException">unsupported schema keyword, or a schema whose pattern is too large.</exception>
    public static ByteDfa FromJsonSchema(JsonElement schema) => FromJsonSchema(schema, null, CancellationToken.None);

    /// <summary>As <see cref="FromJsonSchema(JsonElement)"/>, within <paramref name="limits"/> and cancellable.</summary>
    public static ByteDfa FromJsonSchema(JsonElement schema, GrammarLimits? limits, CancellationToken cancellation)
    {
        return FromSchemaPattern(JsonSchemaRegex.FromSchema(schema, limits), cancellation);
    }

    /// <summary>The automaton for a pattern <see cref="JsonSchemaRegex.FromSchema(JsonElement, GrammarLimits?)"/> made.</summary>
    internal static ByteDfa FromSchemaPattern(string pattern, CancellationToken cancellation)
    {
        try { return FromRegex(pattern, cancellation); }
        catch (HarpiaException e)
        {
            throw new HarpiaException($"grammar JSON schema: the schema compiles to a pattern that is too large or invalid: " +
                e.Message.Replace("grammar regex: ", "", StringComparison.Ordinal), e);
        }
    }

    /// <summary>The pattern this automaton was built from.</summary>
    internal string Pattern => _pattern;

    public int Start { get; }

    /// <summary>The state after reading <paramref name="b"/> in <paramref name="state"/>; -1 = dead (no match possible any more).</summary>
    public int Next(int state, byte b)
    {
        if (state < 0) return -1;
        var row = RowOf(state);
        return row[_classOf[b]];
    }

    /// <summary>The bytes so far are a full match.</summary>
    public bool IsAccepting(int state) => state >= 0 && StateAt(state).Accepting;

    /// <summary>Some byte leads to a live state (false: the match is complete, only end-of-sequence may follow).</summary>
    public bool HasExits(int state)
    {
        if (state < 0) return false;
        var st = StateAt(state);
        if (Volatile.Read(ref st.Row) is null) RowOf(state);
        return st.HasExits;
    }

    /// <summary>How many states have been built so far (diagnostics).</summary>
    internal int StateCount => Volatile.Read(ref _count);

    internal TokenMaskCache MaskCache(TokenVocabulary vocab) => _maskCaches.GetValue(vocab, v => new TokenMaskCache(this, v));

    /// <summary>The state's transition row (indexed by byte class); computes it on first use.</summary>
    private int[] RowOf(int state)
    {
        var st = StateAt(state);
        var row = Volatile.Read(ref st.Row);
        if (row is not null) return row;
        lock (_gate)
        {
            row = st.Row;
            if (row is not null) return row;
            row = ComputeRow(st);
            bool exits = false;
            foreach (int t in row) exits |= t >= 0;
            st.HasExits = exits;
            Volatile.Write(ref st.Row, row);
            return row;
        }
    }

    private State StateAt(int state)
    {
        var states = Volatile.Read(ref _states);
        return (uint)state < (uint)states.Length && Volatile.Read(ref states[state]) is { } st ? st
            : throw new ArgumentOutOfRangeException(nameof(state), state, "not a state of this automaton");
    }

    /// <summary>Subset construction for one state: where each byte class leads. Called under _gate.</summary>
    private int[] ComputeRow(State st)
    {
        foreach (var bucket in _buckets) bucket.Clear();
        foreach (int q in st.NfaStates)
            foreach (var e in _nfa.Edges(q))
                for (int c = _classOf[e.Lo]; c <= _classOf[e.Hi]; c++)
                    _buckets[c].Add(e.Target);
        var row = new int[_classCount];
        for (int c = 0; c < _classCount; c++)
            row[c] = _buckets[c].Count == 0 ? -1 : Intern(_buckets[c]);
        return row;
    }

    /// <summary>The DFA state for the ε-closure of <paramref name="seeds"/> (created if new). Called under _gate.</summary>
    private int Intern(List<int> seeds)
    {
        // ε-closure, keeping only the states that matter for the future (byte readers and the final state), so
        // NFA configurations that differ only in bookkeeping states share a DFA state.
        if (++_stampValue == int.MaxValue) { Array.Clear(_stamp); _stampValue = 1; }
        _closure.Clear();
        foreach (int s in seeds)
            if (_stamp[s] != _stampValue) { _stamp[s] = _stampValue; _stack.Push(s); }
        while (_stack.Count > 0)
        {
            int s = _stack.Pop();
            if (_nfa.IsImportant(s)) _closure.Add(s);
            foreach (int t in _nfa.Epsilons(s))
                if (_stamp[t] != _stampValue) { _stamp[t] = _stampValue; _stack.Push(t); }
        }
        _closure.Sort();
        var key = _closure.ToArray();
        if (_index.TryGetValue(key, out int id)) return id;

        if (_count >= MaxStates)
            throw new HarpiaException($"grammar: the automaton for this grammar grew past {MaxStates} states; simplify the pattern or schema " +
                $"(pattern \"{(_pattern.Length <= 200 ? _pattern : _pattern[..200] + "…")}\")");
        id = _count;
        var state = new State(key, Array.BinarySearch(key, _nfa.Final) >= 0);
        var states = _states;
        if (id == states.Length)
        {
            Array.Resize(ref states, states.Length * 2);
            states[id] = state;
            Volatile.Write(ref _states, states);
        }
        else Volatile.Write(ref states[id], state);
        _index[key] = id;
        Volatile.Write(ref _count, id + 1);
        return id;
    }

    private sealed class SetComparer : IEqualityComparer<int[]>
    {
        public static readonly SetComparer Instance = new();
        public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(int[] set)
        {
            var h = new HashCode();
            foreach (int s in set) h.Add(s);
            return h.ToHashCode();
        }
    }
}

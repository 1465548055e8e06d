namespace Harpia.Runtime.Grammar;

/// <summary>
/// An NFA over bytes, built from a <see cref="RegexNode"/> tree: code point sets become alternations of UTF-8
/// byte-range sequences, so the automaton reads the text's UTF-8 encoding directly. Immutable once built.
/// <para>
/// Built right to left: each piece is compiled knowing the state it must lead to, and a piece already compiled
/// for the same (structurally equal) subexpression and the same continuation is reused. Reuse is sound because a
/// piece only ever gets edges out of the states it creates, and every path through it ends at its continuation.
/// It is what keeps generated patterns small: the "any later optional member" tails of a JSON object whose
/// members are all optional are written out once per member in the regex text (quadratic) but built once.
/// </para>
/// States that cannot reach the final state (e.g. behind an empty character class) are pruned, so every state a
/// run can be in still has a way to a full match — which is what lets the DFA treat "no live state" as dead.
/// </summary>
internal sealed class ByteNfa
{
    /// <summary>Largest automaton we build; {n,m} expansions multiply quickly, so construction stops at this size.</summary>
    public const int MaxStates = 250_000;

    /// <summary>Cap on construction steps, for patterns that repeat something empty a huge number of times.</summary>
    private const long MaxSteps = 4L * MaxStates;

    public int Start { get; }
    public int Final { get; }
    public int StateCount => _epsStart.Length - 1;

    // Compressed adjacency: state s's ε-targets are _eps[_epsStart[s].._epsStart[s+1]), its byte edges likewise.
    private readonly int[] _epsStart, _eps;
    private readonly int[] _edgeStart;
    private readonly ByteEdge[] _edges;

    public readonly record struct ByteEdge(byte Lo, byte Hi, int Target);

    private ByteNfa(int start, int final, int[] epsStart, int[] eps, int[] edgeStart, ByteEdge[] edges)
    {
        Start = start; Final = final;
        _epsStart = epsStart; _eps = eps; _edgeStart = edgeStart; _edges = edges;
    }

    public ReadOnlySpan<int> Epsilons(int state) => _eps.AsSpan(_epsStart[state], _epsStart[state + 1] - _epsStart[state]);
    public ReadOnlySpan<ByteEdge> Edges(int state) => _edges.AsSpan(_edgeStart[state], _edgeStart[state + 1] - _edgeStart[state]);

    /// <summary>True for states a DFA state must remember: those that read a byte, and the final state.</summary>
    public bool IsImportant(int state) => state == Final || _edgeStart[state + 1] > _edgeStart[state];

    public IEnumerable<ByteEdge> AllEdges => _edges;

    public static ByteNfa Build(RegexNode root, string patternForErrors, CancellationToken cancellation = default)
    {
        var builder = new Builder(patternForErrors, cancellation);
        int final = builder.NewState();
        int start = builder.Build(root, final);
        return builder.Finish(start, final);
    }

    private static string Shorten(string s) => s.Length <= 200 ? s : s[..200] + "…";

    private sealed class Builder(string pattern, CancellationToken cancellation)
    {
        // Flat edge lists (a list per state would cost an object per state on patterns with 100k states).
        private int _stateCount;
        private long _steps;
        private readonly List<(int From, int To)> _eps = [];
        private readonly List<(int From, ByteEdge Edge)> _edges = [];
        private readonly Dictionary<CodePointSet, List<ByteRange[]>> _sequences = new(ReferenceEqualityComparer.Instance);
        private readonly Dictionary<string, int> _suffixScratch = new(StringComparer.Ordinal);
        // Hash-consing: structurally equal subtrees get one id; (id, continuation) → the entry state built for it.
        private readonly Dictionary<RegexNode, int> _nodeIds = new(ReferenceEqualityComparer.Instance);
        private readonly Dictionary<string, int> _canonical = new(StringComparer.Ordinal);
        private readonly Dictionary<(int Node, int Exit), int> _built = [];

        private HarpiaException TooLarge() =>
            new($"grammar regex: the pattern needs more than {MaxStates} automaton states; lower its repetition counts ({{n,m}}, " +
                $"maxLength, maxItems) or its size: \"{Shorten(pattern)}\"");

        public int NewState()
        {
            if (_stateCount >= MaxStates) throw TooLarge();
            return _stateCount++;
        }

        private void Epsilon(int from, int to) => _eps.Add((from, to));

        private List<ByteRange[]> SequencesOf(CodePointSet set)
        {
            if (!_sequences.TryGetValue(set, out var seqs)) _sequences[set] = seqs = Utf8Ranges.Sequences(set);
            return seqs;
        }

        /// <summary>An id equal for structurally equal subtrees (computed once per node, bottom-up).</summary>
        private int IdOf(RegexNode node)
        {
            if (_nodeIds.TryGetValue(node, out int id)) return id;
            string key = node switch
            {
                EmptyNode => "E",
                SetNode s => "S" + string.Join(',', s.Set.Ranges.Select(r => $"{r.Lo:X}-{r.Hi:X}")),
                ConcatNode c => "C" + string.Join(',', c.Items.Select(IdOf)),
                AltNode a => "A" + string.Join(',', a.Items.Select(IdOf)),
                RepeatNode r => $"R{IdOf(r.Item)},{r.Min},{r.Max}",
                _ => throw new InvalidOperationException(node.GetType().Name),
            };
            if (!_canonical.TryGetValue(key, out id)) _canonical[key] = id = _canonical.Count;
            _nodeIds[node] = id;
            return id;
        }

        /// <summary>Builds <paramref name="node"/> so that its matches lead to <paramref name="exit"/>; returns its entry state.</summary>
        public int Build(RegexNode node, int exit)
        {
            if (++_steps > MaxSteps) throw TooLarge();
            // A request's grammar compiles on its own time: a client that leaves (or a server that stops) ends it.
            if ((_steps & 1023) == 0) cancellation.ThrowIfCancellationRequested();
            var key = (IdOf(node), exit);
            if (_built.TryGetValue(key, out int entry)) return entry;
            entry = node switch
            {
                EmptyNode => exit,
                SetNode { Set: var set } => BuildSet(set, exit),
                ConcatNode c => BuildConcat(c, exit),
                AltNode a => BuildAlt(a, exit),
                RepeatNode r => BuildRepeat(r, exit),
                _ => throw new InvalidOperationException(node.GetType().Name),
            };
            _built[key] = entry;
            return entry;
        }

        private int BuildConcat(ConcatNode c, int exit)
        {
            for (int i = c.Items.Count - 1; i >= 0; i--) exit = Build(c.Items[i], exit);
            return exit;
        }

        private int BuildAlt(AltNode a, int exit)
        {
            int entry = NewState();
            foreach (var item in a.Items) Epsilon(entry, Build(item, exit));
            return entry;
        }

        private int BuildRepeat(RepeatNode r, int exit)
        {
            int cur;
            if (r.Max < 0)
            {
                // Kleene star: the hub either leaves or enters a copy of the item that leads back to the hub.
                cur = NewState();
                Epsilon(cur, exit);
                Epsilon(cur, Build(r.Item, cur));
            }
            else
            {
                // The optional copies nested, (x(x(x)?)?)?, from the inside out: each may stop straight to the exit.
                cur = exit;
                for (int i = r.Min; i < r.Max; i++)
                {
                    int choice = NewState();
                    Epsilon(choice, exit);
                    Epsilon(choice, Build(r.Item, cur));
                    cur = choice;
                }
            }
            for (int i = 0; i < r.Min; i++) cur = Build(r.Item, cur);
            return cur;
        }

        /// <summary>
        /// A code point set: its UTF-8 sequences from one entry state to the exit. Sequences that end alike share their
        /// tail states (every 3-byte sequence ends in [80-BF][80-BF], say), which keeps "any character" classes —
        /// repeated in every string of a JSON schema — to about eight states instead of thirty.
        /// </summary>
        private int BuildSet(CodePointSet set, int exit)
        {
            int entry = NewState();
            var suffixState = _suffixScratch;
            suffixState.Clear();
            foreach (var seq in SequencesOf(set))
            {
                int prev = entry;
                for (int i = 0; i < seq.Length; i++)
                {
                    int next;
                    bool shared = false;
                    if (i == seq.Length - 1) next = exit;
                    else
                    {
                        string key = SuffixKey(seq, i + 1);
                        shared = suffixState.TryGetValue(key, out next);
                        if (!shared) suffixState[key] = next = NewState();
                    }
                    _edges.Add((prev, new ByteEdge(seq[i].Lo, seq[i].Hi, next)));
                    if (shared) break; // the rest of this tail was built by an earlier sequence
                    prev = next;
                }
            }
            return entry;
        }

        private static string SuffixKey(ByteRange[] seq, int from)
        {
            var sb = new System.Text.StringBuilder((seq.Length - from) * 2);
            for (int i = from; i < seq.Length; i++) sb.Append((char)seq[i].Lo).Append((char)seq[i].Hi);
            return sb.ToString();
        }

        public ByteNfa Finish(int start, int final)
        {
            int n = _stateCount;
            // Co-reachability: walk the edges backwards from the final state.
            var predStart = new int[n + 1];
            foreach (var (_, to) in _eps) predStart[to + 1]++;
            foreach (var (_, edge) in _edges) predStart[edge.Target + 1]++;
            for (int i = 0; i < n; i++) predStart[i + 1] += predStart[i];
            var preds = new int[predStart[n]];
            var fill = (int[])predStart.Clone();
            foreach (var (from, to) in _eps) preds[fill[to]++] = from;
            foreach (var (from, edge) in _edges) preds[fill[edge.Target]++] = from;
            var live = new bool[n];
            var stack = new Stack<int>();
            live[final] = true;
            stack.Push(final);
            while (stack.Count > 0)
            {
                int t = stack.Pop();
                for (int i = predStart[t]; i < predStart[t + 1]; i++)
                    if (!live[preds[i]]) { live[preds[i]] = true; stack.Push(preds[i]); }
            }
            if (!live[start])
                throw new HarpiaException($"grammar regex: the pattern can never match anything (an empty character class?): \"{Shorten(pattern)}\"");

            // Forward adjacency of the live part, grouped by state (counting sort keeps each state's insertion order).
            var epsStart = new int[n + 1];
            var edgeStart = new int[n + 1];
            foreach (var (from, to) in _eps) if (live[from] && live[to]) epsStart[from + 1]++;
            foreach (var (from, edge) in _edges) if (live[from] && live[edge.Target]) edgeStart[from + 1]++;
            for (int i = 0; i < n; i++) { epsStart[i + 1] += epsStart[i]; edgeStart[i + 1] += edgeStart[i]; }
            var eps = new int[epsStart[n]];
            var edges = new ByteEdge[edgeStart[n]];
            var epsFill = (int[])epsStart.Clone();
            var edgeFill = (int[])edgeStart.Clone();
            foreach (var (from, to) in _eps) if (live[from] && live[to]) eps[epsFill[from]++] = to;
            foreach (var (from, edge) in _edges) if (live[from] && live[edge.Target]) edges[edgeFill[from]++] = edge;
            return new ByteNfa(start, final, epsStart, eps, edgeStart, edges);
        }
    }
}

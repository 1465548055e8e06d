using System.Collections.Frozen;
using System.Text;

namespace Harpia.Tokenization;

/// <summary>
/// NFC / NFD / NFKC / NFKD (UAX #15) over Harpia's own tables, tracking for every output character the input
/// character it came from. Needed because .NET's string.Normalize is a no-op for non-ASCII text when the process
/// runs with InvariantGlobalization (as Harpia does), and tokenizers must not depend on the machine's ICU.
/// </summary>
internal static class UnicodeNormalization
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Lazy<Tables> Data = new(() => new Tables());

    private sealed class Tables
    {
        public readonly FrozenDictionary<int, byte> Ccc;
        public readonly FrozenDictionary<long, int> Compose;
        public readonly FrozenDictionary<int, (int Start, int Length)> Canonical, Compatibility;

        public Tables()
        {
            var ccc = new Dictionary<int, byte>();
            var t = UnicodeNormalizationData.CombiningClass;
            for (int i = 0; i < t.Length; i += 2) ccc[t[i]] = (byte)t[i + 1];
            Ccc = ccc.ToFrozenDictionary();
            var comp = new Dictionary<long, int>();
            var c = UnicodeNormalizationData.Compositions;
            for (int i = 0; i < c.Length; i += 3) comp[((long)c[i] << 21) | (uint)c[i + 1]] = c[i + 2];
            Compose = comp.ToFrozenDictionary();
            Canonical = Index(UnicodeNormalizationData.CanonicalIndex);
            Compatibility = Index(UnicodeNormalizationData.CompatibilityIndex);
        }

        private static FrozenDictionary<int, (int, int)> Index(int[] triples)
        {
            var d = new Dictionary<int, (int, int)>(triples.Length / 3);
            for (int i = 0; i < triples.Length; i += 3) d[triples[i]] = (triples[i + 1], triples[i + 2]);
            return d.ToFrozenDictionary();
        }
    }

    /// <summary>True when <paramref name="text"/> is certainly unchanged by the form (a cheap pre-check).</summary>
    public static bool IsTriviallyNormalized(string text, bool compatibility)
    {
        char limit = compatibility ? '\u00A0' : '\u00C0';
        foreach (char ch in text) if (ch >= limit) return false;
        return true;
    }

    public static void Normalize(NormalizedText text, bool compatibility, bool compose)
    {
        if (IsTriviallyNormalized(text.Text, compatibility)) return;
        var tables = Data.Value;
        string s = text.Text;
        var cps = new List<int>(s.Length + 8);
        var inserted = new List<bool>(s.Length + 8); // not the first character of its input's decomposition
        var inputSource = new List<int>(s.Length);   // per input code point: its Source
        string decompText = compatibility ? UnicodeNormalizationData.CompatibilityText : UnicodeNormalizationData.CanonicalText;

        // 1. Full decomposition.
        for (int i = 0; i < s.Length;)
        {
            Rune.DecodeFromUtf16(s.AsSpan(i), out var rune, out int used);
            int cp = rune.Value;
            inputSource.Add(text.Source[i]);
            i += used;
            int first = cps.Count;
            if (cp >= SBase && cp < SBase + SCount)
            {
                int sIndex = cp - SBase;
                cps.Add(LBase + sIndex / NCount);
                cps.Add(VBase + sIndex % NCount / TCount);
                if (sIndex % TCount != 0) cps.Add(TBase + sIndex % TCount);
            }
            else if ((compatibility && tables.Compatibility.TryGetValue(cp, out var range))
                     || tables.Canonical.TryGetValue(cp, out range))
            {
                string source = compatibility && tables.Compatibility.ContainsKey(cp) ? decompText : UnicodeNormalizationData.CanonicalText;
                for (int k = range.Start; k < range.Start + range.Length;)
                {
                    Rune.DecodeFromUtf16(source.AsSpan(k, range.Start + range.Length - k), out var r, out int u);
                    cps.Add(r.Value); k += u;
                }
            }
            else cps.Add(cp);
            for (int k = first; k < cps.Count; k++) inserted.Add(k > first);
        }

        // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
        for (int i = 1; i < cps.Count; i++)
        {
            int cc = Ccc(tables, cps[i]);
            if (cc == 0) continue;
            for (int j = i; j > 0 && Ccc(tables, cps[j - 1]) > cc; j--)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                (inserted[j - 1], inserted[j]) = (inserted[j], inserted[j - 1]);
            }
        }

        // 3. Canonical composition (UAX #15's reference algorithm).
        int count = cps.Count;
        var removedBefore = new int[count]; // input characters absorbed, charged to this output character
        if (compose && count > 1)
        {
            int starterPos = 0, starter = cps[0];
            int lastClass = Ccc(tables, starter) != 0 ? 256 : 0;
            int write = 1, clusterHead = 0, pending = 0;
            for (int read = 1; read < count; read++)
            {
                int ch = cps[read], chClass = Ccc(tables, ch);
                int composite = Pair(tables, starter, ch);
                if (composite >= 0 && (lastClass < chClass || lastClass == 0))
                {
                    cps[starterPos] = composite; starter = composite;
                    if (!inserted[read])
                    {
                        // The Rust library charges an absorbed character to the cluster's first character after
                        // its composite (emitted or still to come).
                        if (write > clusterHead + 1) removedBefore[clusterHead + 1]++;
                        else pending++;
                    }
                    continue;
                }
                if (chClass == 0) { starterPos = write; starter = ch; clusterHead = write; }
                lastClass = chClass;
                cps[write] = ch; inserted[write] = inserted[read];
                removedBefore[write] = pending; pending = 0;
                write++;
            }
            count = write;
        }

        // 4. Alignment, as the Rust library computes it: an inserted character takes the previous one's source; any
        //    other consumes the next input character after skipping the absorbed ones charged to it.
        var src = new int[count];
        int consumed = -1, previous = inputSource.Count > 0 ? inputSource[0] : 0;
        for (int w = 0; w < count; w++)
        {
            int net = (inserted[w] ? 1 : 0) - removedBefore[w];
            if (net > 0) { src[w] = previous; continue; }
            consumed += 1 - net;
            src[w] = previous = inputSource[Math.Min(consumed, inputSource.Count - 1)];
        }

        var sb = new StringBuilder(count + 8);
        var sources = new List<int>(count + 8);
        for (int i = 0; i < count; i++)
        {
            var r = new Rune(cps[i]);
            sb.Append(r.ToString());
            for (int u = 0; u < r.Utf16SequenceLength; u++) sources.Add(src[i]);
        }
        text.Text = sb.ToString();
        text.Source = sources.ToArray();
    }

    private static int Ccc(Tables t, int cp) => cp < 0x300 ? 0 : t.Ccc.TryGetValue(cp, out byte c) ? c : 0;

    private static int Pair(Tables t, int first, int second)
    {
        if (first >= LBase && first < LBase + LCount && second >= VBase && second < VBase + VCount)
            return SBase + ((first - LBase) * VCount + (second - VBase)) * TCount;
        if (first >= SBase && first < SBase + SCount && (first - SBase) % TCount == 0 && second > TBase && second < TBase + TCount)
            return first + (second - TBase);
        return t.Compose.TryGetValue(((long)first << 21) | (uint)second, out int c) ? c : -1;
    }
}

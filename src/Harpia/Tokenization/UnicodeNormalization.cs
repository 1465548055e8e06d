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
        var src = new List<int>(s.Length + 8);
        string decompText = compatibility ? UnicodeNormalizationData.CompatibilityText : UnicodeNormalizationData.CanonicalText;

        // 1. Full decomposition.
        for (int i = 0; i < s.Length;)
        {
            Rune.DecodeFromUtf16(s.AsSpan(i), out var rune, out int used);
            int cp = rune.Value, origin = text.Source[i];
            i += used;
            if (cp >= SBase && cp < SBase + SCount)
            {
                int sIndex = cp - SBase;
                cps.Add(LBase + sIndex / NCount); src.Add(origin);
                cps.Add(VBase + sIndex % NCount / TCount); src.Add(origin);
                if (sIndex % TCount != 0) { cps.Add(TBase + sIndex % TCount); src.Add(origin); }
                continue;
            }
            if ((compatibility && tables.Compatibility.TryGetValue(cp, out var range))
                || tables.Canonical.TryGetValue(cp, out range))
            {
                string source = compatibility && tables.Compatibility.ContainsKey(cp) ? decompText : UnicodeNormalizationData.CanonicalText;
                for (int k = range.Start; k < range.Start + range.Length;)
                {
                    Rune.DecodeFromUtf16(source.AsSpan(k, range.Start + range.Length - k), out var r, out int u);
                    cps.Add(r.Value); src.Add(origin); k += u;
                }
                continue;
            }
            cps.Add(cp); src.Add(origin);
        }

        // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
        for (int i = 1; i < cps.Count; i++)
        {
            int cc = Ccc(tables, cps[i]);
            if (cc == 0) continue;
            for (int j = i; j > 0 && Ccc(tables, cps[j - 1]) > cc; j--)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                (src[j - 1], src[j]) = (src[j], src[j - 1]);
            }
        }

        // 3. Canonical composition (UAX #15's reference algorithm).
        int count = cps.Count;
        if (compose && count > 1)
        {
            int starterPos = 0, starter = cps[0];
            int lastClass = Ccc(tables, starter) != 0 ? 256 : 0;
            int write = 1;
            for (int read = 1; read < count; read++)
            {
                int ch = cps[read], chClass = Ccc(tables, ch);
                int composite = Pair(tables, starter, ch);
                if (composite >= 0 && (lastClass < chClass || lastClass == 0))
                {
                    cps[starterPos] = composite; starter = composite;
                    continue;
                }
                if (chClass == 0) { starterPos = write; starter = ch; }
                lastClass = chClass;
                cps[write] = ch; src[write] = src[read]; write++;
            }
            count = write;
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

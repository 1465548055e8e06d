using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;
using Harpia.Runtime.Grammar;
using Harpia.Tokenization;

namespace Harpia.Tests.Runtime;

/// <summary>Helpers shared by the grammar tests: walking a DFA, random documents, a small schema validator.</summary>
internal static class GrammarTestKit
{
    public static bool Matches(ByteDfa dfa, ReadOnlySpan<byte> bytes)
    {
        int s = dfa.Start;
        foreach (byte b in bytes)
        {
            s = dfa.Next(s, b);
            if (s < 0) return false;
        }
        return dfa.IsAccepting(s);
    }

    public static bool Matches(ByteDfa dfa, string text) => Matches(dfa, Encoding.UTF8.GetBytes(text));

    /// <summary>.NET's verdict on a full match (the pattern anchored with ^(?: … )\z).</summary>
    public static bool NetMatches(string pattern, string text) =>
        Regex.IsMatch(text, "^(?:" + pattern + @")\z", RegexOptions.ECMAScript); // ECMAScript: ASCII \d \w \s, as ours

    /// <summary>
    /// .NET matches UTF-16 code units, so '.' or [^x] see half an emoji. For a fair oracle, non-BMP characters are
    /// mapped to distinct private-use BMP characters in both the pattern and the text (same answer in code points).
    /// </summary>
    public static string MapAstral(string s)
    {
        var sb = new StringBuilder();
        foreach (var r in s.EnumerateRunes())
            sb.Append(r.IsBmp ? r.ToString() : ((char)(0xF000 + (r.Value & 0xFFF))).ToString());
        return sb.ToString();
    }

    /// <summary>
    /// A random full match: random live bytes (a quarter of the time preferring JSON punctuation so structures vary),
    /// then the shortest completion once the byte budget is spent.
    /// </summary>
    public static byte[] RandomWalk(ByteDfa dfa, Random rng, int maxBytes)
    {
        var bytes = new List<byte>();
        var candidates = new List<byte>();
        var punctuation = new List<byte>();
        int state = dfa.Start;
        while (true)
        {
            if (dfa.IsAccepting(state) && (!dfa.HasExits(state) || rng.Next(3) == 0)) break;
            if (bytes.Count >= maxBytes) { bytes.AddRange(ShortestCompletion(dfa, state)); break; }
            candidates.Clear();
            punctuation.Clear();
            for (int b = 0; b < 256; b++)
                if (dfa.Next(state, (byte)b) >= 0)
                {
                    candidates.Add((byte)b);
                    if ("\"{}[],:".Contains((char)b)) punctuation.Add((byte)b);
                }
            Assert.NotEmpty(candidates); // a live, non-accepting state always has a way on
            var pool = punctuation.Count > 0 && rng.Next(4) == 0 ? punctuation : candidates;
            byte pick = pool[rng.Next(pool.Count)];
            bytes.Add(pick);
            state = dfa.Next(state, pick);
        }
        return bytes.ToArray();
    }

    /// <summary>Breadth-first: the shortest byte string from <paramref name="state"/> to a full match.</summary>
    public static byte[] ShortestCompletion(ByteDfa dfa, int state)
    {
        var parent = new Dictionary<int, (int From, byte By)> { [state] = (-1, 0) };
        var queue = new Queue<int>();
        queue.Enqueue(state);
        while (queue.Count > 0)
        {
            int s = queue.Dequeue();
            if (dfa.IsAccepting(s))
            {
                var path = new List<byte>();
                for (int at = s; parent[at].From >= 0; at = parent[at].From) path.Add(parent[at].By);
                path.Reverse();
                return path.ToArray();
            }
            for (int b = 0; b < 256; b++)
            {
                int t = dfa.Next(s, (byte)b);
                if (t >= 0 && parent.TryAdd(t, (s, (byte)b))) queue.Enqueue(t);
            }
        }
        throw new InvalidOperationException("no completion from a live state");
    }

    /// <summary>Null when <paramref name="v"/> is valid for the schema subset the tests use; otherwise why not.</summary>
    public static string? Check(JsonElement v, JsonElement s, JsonElement root)
    {
        if (s.ValueKind == JsonValueKind.True) return null;
        if (s.TryGetProperty("$ref", out var r))
        {
            var target = root;
            foreach (var part in r.GetString()!.TrimStart('#').Split('/', StringSplitOptions.RemoveEmptyEntries)) target = target.GetProperty(part);
            return Check(v, target, root);
        }
        if (s.TryGetProperty("anyOf", out var any))
            return any.EnumerateArray().Any(b => Check(v, b, root) is null) ? null : $"{v} matches no anyOf branch";
        if (s.TryGetProperty("oneOf", out var one))
            return one.EnumerateArray().Count(b => Check(v, b, root) is null) == 1 ? null : $"{v} matches not exactly one oneOf branch";
        if (s.TryGetProperty("allOf", out var all))
            foreach (var b in all.EnumerateArray()) if (Check(v, b, root) is string e) return e;
        if (s.TryGetProperty("enum", out var en) && !en.EnumerateArray().Any(e => JsonElement.DeepEquals(e, v))) return $"{v} not in enum";
        if (s.TryGetProperty("const", out var c) && !JsonElement.DeepEquals(c, v)) return $"{v} is not the const";
        if (s.TryGetProperty("type", out var type))
        {
            var types = type.ValueKind == JsonValueKind.String ? [type.GetString()!] : type.EnumerateArray().Select(t => t.GetString()!).ToArray();
            bool ok = types.Any(t => t switch
            {
                "string" => v.ValueKind == JsonValueKind.String,
                "number" => v.ValueKind == JsonValueKind.Number,
                "integer" => v.ValueKind == JsonValueKind.Number && double.IsInteger(v.GetDouble()),
                "boolean" => v.ValueKind is JsonValueKind.True or JsonValueKind.False,
                "null" => v.ValueKind == JsonValueKind.Null,
                "object" => v.ValueKind == JsonValueKind.Object,
                "array" => v.ValueKind == JsonValueKind.Array,
                _ => false,
            });
            if (!ok) return $"{v} is not of type {type}";
        }
        switch (v.ValueKind)
        {
            case JsonValueKind.String:
            {
                string str = v.GetString()!;
                int length = str.EnumerateRunes().Count();
                if (s.TryGetProperty("minLength", out var min) && length < min.GetInt32()) return $"\"{str}\" shorter than minLength";
                if (s.TryGetProperty("maxLength", out var max) && length > max.GetInt32()) return $"\"{str}\" longer than maxLength";
                if (s.TryGetProperty("pattern", out var p) && !Regex.IsMatch(str, p.GetString()!)) return $"\"{str}\" does not match pattern";
                if (s.TryGetProperty("format", out var f) && !FormatOk(f.GetString()!, str)) return $"\"{str}\" is not a {f}";
                break;
            }
            case JsonValueKind.Number when s.TryGetProperty("minimum", out _) || s.TryGetProperty("maximum", out _)
                                           || s.TryGetProperty("exclusiveMinimum", out _) || s.TryGetProperty("exclusiveMaximum", out _):
            {
                decimal d = v.GetDecimal();
                if (s.TryGetProperty("minimum", out var min) && d < min.GetDecimal()) return $"{d} below minimum";
                if (s.TryGetProperty("maximum", out var max) && d > max.GetDecimal()) return $"{d} above maximum";
                if (s.TryGetProperty("exclusiveMinimum", out var xmin) && d <= xmin.GetDecimal()) return $"{d} not above exclusiveMinimum";
                if (s.TryGetProperty("exclusiveMaximum", out var xmax) && d >= xmax.GetDecimal()) return $"{d} not below exclusiveMaximum";
                break;
            }
            case JsonValueKind.Object:
            {
                var props = s.TryGetProperty("properties", out var ps) ? ps : default;
                var names = v.EnumerateObject().Select(p => p.Name).ToList();
                if (s.TryGetProperty("required", out var req))
                    foreach (var name in req.EnumerateArray())
                        if (!names.Contains(name.GetString()!)) return $"missing required \"{name}\"";
                foreach (var p in v.EnumerateObject())
                {
                    if (props.ValueKind == JsonValueKind.Object && props.TryGetProperty(p.Name, out var ps1))
                    {
                        if (Check(p.Value, ps1, root) is string e) return $"{p.Name}: {e}";
                    }
                    else if (s.TryGetProperty("additionalProperties", out var ap))
                    {
                        if (ap.ValueKind == JsonValueKind.False) return $"extra property \"{p.Name}\"";
                        if (Check(p.Value, ap, root) is string e) return $"{p.Name}: {e}";
                    }
                }
                if (props.ValueKind == JsonValueKind.Object && names.Count != names.Distinct().Count()) return "duplicate property";
                break;
            }
            case JsonValueKind.Array:
            {
                int n = v.GetArrayLength();
                if (s.TryGetProperty("minItems", out var min) && n < min.GetInt32()) return "too few items";
                if (s.TryGetProperty("maxItems", out var max) && n > max.GetInt32()) return "too many items";
                if (s.TryGetProperty("items", out var items))
                    foreach (var item in v.EnumerateArray()) if (Check(item, items, root) is string e) return $"item: {e}";
                break;
            }
        }
        return null;
    }

    private static bool FormatOk(string format, string s) => format switch
    {
        "date" => DateOk(s),
        "time" => TimeOk(s),
        "date-time" => s.Split('T') is [var d, var t] && FormatOk("date", d) && TimeOk(t),
        "uuid" => Guid.TryParseExact(s, "D", out _),
        "email" => s.Split('@') is [var local, var host] && local.Length > 0 && host.Contains('.') && !local.StartsWith('.') && !local.EndsWith('.'),
        _ => throw new InvalidOperationException(format),
    };

    /// <summary>RFC 3339 full-date: any four-digit year (0000 too), the month's real length, proleptic Gregorian leap years.</summary>
    private static bool DateOk(string s)
    {
        var m = Regex.Match(s, @"^(\d{4})-(\d\d)-(\d\d)$");
        if (!m.Success) return false;
        int y = int.Parse(m.Groups[1].Value), mo = int.Parse(m.Groups[2].Value), d = int.Parse(m.Groups[3].Value);
        bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        int[] days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        return mo is >= 1 and <= 12 && d >= 1 && d <= days[mo - 1];
    }

    private static bool TimeOk(string s)
    {
        var m = Regex.Match(s, @"^(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-](\d\d):(\d\d))$");
        return m.Success && int.Parse(m.Groups[1].Value) < 24 && int.Parse(m.Groups[2].Value) < 60 && int.Parse(m.Groups[3].Value) < 60
               && (!m.Groups[6].Success || (int.Parse(m.Groups[6].Value) < 24 && int.Parse(m.Groups[7].Value) < 60));
    }

    /// <summary>Picks the best-scoring allowed token each step (random scores), as a sampler would, until the grammar ends it.</summary>
    public static List<int> Generate(TokenConstraint constraint, int scoreCount, int? eos, Random rng, int maxTokens, Action<TimeSpan>? onMask = null)
    {
        var scores = new float[scoreCount];
        var ids = new List<int>();
        for (int step = 0; step < maxTokens && !constraint.IsComplete; step++)
        {
            for (int i = 0; i < scores.Length; i++) scores[i] = rng.NextSingle();
            long t0 = Stopwatch.GetTimestamp();
            constraint.Mask(scores);
            onMask?.Invoke(Stopwatch.GetElapsedTime(t0));
            int best = 0;
            for (int i = 1; i < scores.Length; i++) if (scores[i] > scores[best]) best = i;
            Assert.False(float.IsNegativeInfinity(scores[best]), "Mask left nothing allowed");
            constraint.Accept(best);
            if (best == eos) break;
            ids.Add(best);
        }
        return ids;
    }
}

public class GrammarRegexTests
{
    private static readonly string[] Patterns =
    [
        "", "abc", "a|b|c", "a*", "a+b?", "(ab)*c", "(?:ab|cd){2,3}", "a{3}", "a{2,}", "x{0,2}y", "(a|)+b", "((a|b)*c)?d",
        "[a-z]+", "[^a-z]+", "[^\"\\\\]*", "\\d{2,4}-\\w+", "\\s*x\\s*", "[\\d\\s]+", "\\D\\W\\S", "[\\w-]+",
        ".", ".*", ".+é", "é+", "[é-ü]+", "[^é]", "🦅", "🦅+|漢字", "[漢字]+", "[^漢]*", "[\\u00e9\\u4e00-\\u9fff]+", "[a🦅]+",
        "\\x41\\u0042", "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$\\/", "a\\tb\\nc", "^abc$", "^a|b$",
        "[-a]+", "[a-]+", "{", "a{", "a{1", "x}", "]", "a{1,x}", "(?<n>ab)+", "(?:)", "a??b", "a*?b", "a{1,2}?",
        "[\\]\\\\-]+", "[\\b]", "\\0", "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", "\"(?:[^\"\\\\\\x00-\\x1F]|\\\\[\"\\\\/bfnrt])*\"",
        "(a|ab)(c|bcd)(d*)", "(?:a|b)*abb", "[\\x00-\\x7F]+", "[^\\x00-\\x7F]+", "[\\u0080-\\u07FF]+", "\\$", "a\\$",
    ];

    private static readonly string[] Texts =
    [
        "", "a", "b", "c", "d", "x", "y", "ab", "abc", "abd", "cd", "abcd", "abcabc", "aaa", "aab", "abb", "babb", "xy", "xxy", "xxxy", "ababcd",
        "12-ab", "123-_", "12345-a", "1-a", " x ", "\tx\n", "x", "-", "a-", "w-x_y", "1 2", "1é2",
        "é", "ü", "éé", "ê", "🦅", "🦅🦅", "漢字", "漢", "字", "abé", "a\nb", "\n", "\"q\"", "\\", "\"a\\\"b\"", "\"\\u00e9\"",
        "-0", "-01", "3.14", "1.", "1e5", "-2.5E-3", "{", "a{", "a{1", "x}", "]", "a]", "a{1,x}", "\u0008", "\0", ".*+?()[]{}|^$/",
        "a\tb\nc", "AB", "Aé", "ab+", "abab", "ababab", "\u007F", "\u0080", "\uFFFD", "\u4e00", "a🦅", "🦅a", "$", "a$",
    ];

    [Fact]
    public void Full_match_agrees_with_dotnet_regex_on_a_table_of_patterns_and_texts()
    {
        foreach (var pattern in Patterns)
        {
            var dfa = ByteDfa.FromRegex(pattern);
            string netPattern = MapAstral(pattern);
            foreach (var text in Texts)
                Assert.True(GrammarTestKit.NetMatches(netPattern, MapAstral(text)) == GrammarTestKit.Matches(dfa, text),
                    $"pattern /{pattern}/ on \"{text}\": .NET says {GrammarTestKit.NetMatches(netPattern, MapAstral(text))}");
        }
    }

    private static string MapAstral(string s) => GrammarTestKit.MapAstral(s);

    [Fact]
    public void Random_texts_agree_with_dotnet_regex()
    {
        var rng = new Random(1234);
        string[] alphabet = ["a", "b", "c", "x", "y", "é", "🦅", "漢", "-", "1", "2", "\"", "\\", " ", "\n", "{", "}"];
        foreach (var pattern in Patterns)
        {
            var dfa = ByteDfa.FromRegex(pattern);
            string netPattern = MapAstral(pattern);
            for (int i = 0; i < 200; i++)
            {
                int length = rng.Next(0, 8);
                string text = string.Concat(Enumerable.Range(0, length).Select(_ => alphabet[rng.Next(alphabet.Length)]));
                Assert.True(GrammarTestKit.NetMatches(netPattern, MapAstral(text)) == GrammarTestKit.Matches(dfa, text), $"pattern /{pattern}/ on \"{text}\"");
            }
        }
    }

    [Fact]
    public void Random_patterns_agree_with_dotnet_regex()
    {
        var rng = new Random(42);
        // No empty atom "(?:)": .NET gets (?:a+|)+ wrong (no full match of ""), see Empty_alternatives_inside_loops_match_empty.
        string[] atoms = ["a", "b", "é", "🦅", ".", "[ab]", "[^a]", "[a-c]", "\\d", "\\w", "\\s", "x"];
        string[] alphabet = ["a", "b", "c", "é", "🦅", "1", " ", "x", "\n"];
        string RandomPattern(int depth)
        {
            int kind = depth > 3 ? 0 : rng.Next(5);
            string p = kind switch
            {
                0 or 1 => atoms[rng.Next(atoms.Length)],
                2 => RandomPattern(depth + 1) + RandomPattern(depth + 1),
                3 => "(?:" + RandomPattern(depth + 1) + "|" + RandomPattern(depth + 1) + ")",
                _ => "(" + RandomPattern(depth + 1) + ")",
            };
            return rng.Next(4) switch { 0 => "(?:" + p + ")" + new[] { "*", "+", "?", "{2}", "{0,2}", "{1,}" }[rng.Next(6)], _ => p };
        }
        for (int k = 0; k < 300; k++)
        {
            string pattern = RandomPattern(0);
            var dfa = ByteDfa.FromRegex(pattern);
            for (int i = 0; i < 60; i++)
            {
                string text = string.Concat(Enumerable.Range(0, rng.Next(0, 7)).Select(_ => alphabet[rng.Next(alphabet.Length)]));
                Assert.True(GrammarTestKit.NetMatches(MapAstral(pattern), MapAstral(text)) == GrammarTestKit.Matches(dfa, text), $"pattern /{pattern}/ on \"{text}\"");
            }
            // Random walks through the DFA are matches too.
            for (int i = 0; i < 5; i++)
            {
                var bytes = GrammarTestKit.RandomWalk(dfa, rng, 12);
                string text = new UTF8Encoding(false, true).GetString(bytes);
                Assert.True(GrammarTestKit.NetMatches(MapAstral(pattern), MapAstral(text)), $"walk \"{text}\" of /{pattern}/");
            }
        }
    }

    [Fact]
    public void Only_valid_utf8_is_ever_accepted()
    {
        var strict = new UTF8Encoding(false, true);
        var rng = new Random(7);
        foreach (var pattern in new[] { ".*", "[^a]*", "[\\s\\S]*" })
        {
            var dfa = ByteDfa.FromRegex(pattern);
            for (int i = 0; i < 5000; i++)
            {
                // Mostly bytes around the interesting UTF-8 boundaries.
                var bytes = new byte[rng.Next(1, 6)];
                for (int j = 0; j < bytes.Length; j++)
                    bytes[j] = rng.Next(3) switch { 0 => (byte)rng.Next(0x80, 0xC0), 1 => (byte)rng.Next(0xC0, 0x100), _ => (byte)rng.Next(0, 0x100) };
                string? text;
                try { text = strict.GetString(bytes); } catch (DecoderFallbackException) { text = null; }
                bool expected = text is not null && GrammarTestKit.NetMatches(MapAstral(pattern), MapAstral(text));
                Assert.True(expected == GrammarTestKit.Matches(dfa, bytes), $"/{pattern}/ on {Convert.ToHexString(bytes)}");
            }
        }
        // The classic invalid forms: overlong, surrogate, beyond U+10FFFF, truncated.
        var any = ByteDfa.FromRegex(".*");
        foreach (var hex in new[] { "C080", "E08080", "EDA080", "EDBFBF", "F4908080", "F5808080", "C3", "E282", "80", "FF" })
            Assert.False(GrammarTestKit.Matches(any, Convert.FromHexString(hex)), hex);
        foreach (var hex in new[] { "C3A9", "E282AC", "F09FA685", "EFBFBF", "F48FBFBF", "ED9FBF", "EE8080" })
            Assert.True(GrammarTestKit.Matches(any, Convert.FromHexString(hex)), hex);
    }

    [Fact]
    public void Written_back_patterns_read_the_same()
    {
        // RegexWriter (used to embed schema patterns) must round-trip through the parser.
        foreach (var pattern in Patterns)
        {
            var original = ByteDfa.FromRegex(pattern);
            var rewritten = ByteDfa.FromRegex(RegexWriter.Write(RegexParser.Parse(pattern)));
            foreach (var text in Texts)
                Assert.True(GrammarTestKit.Matches(original, text) == GrammarTestKit.Matches(rewritten, text), $"/{pattern}/ on \"{text}\"");
        }
    }

    [Fact]
    public void Escaped_surrogate_pairs_and_long_escapes_denote_one_code_point()
    {
        Assert.True(GrammarTestKit.Matches(ByteDfa.FromRegex("\\uD83E\\uDD85+"), "🦅🦅"));
        Assert.True(GrammarTestKit.Matches(ByteDfa.FromRegex("[\\U0001F985a]"), "🦅"));
        Assert.False(GrammarTestKit.Matches(ByteDfa.FromRegex("\\uD83E\\uDD85"), "🦅🦅"));
    }

    [Fact]
    public void Class_with_a_leading_bracket_and_empty_alternatives_in_loops()
    {
        // Hand-checked: ']' first in a class is a literal (Python and .NET; ECMAScript, our oracle, reads [^] differently).
        var cls = ByteDfa.FromRegex("[]a]+");
        Assert.True(GrammarTestKit.Matches(cls, "]a]"));
        Assert.False(GrammarTestKit.Matches(cls, "b"));
        var neg = ByteDfa.FromRegex("[^]a]");
        Assert.True(GrammarTestKit.Matches(neg, "b"));
        Assert.True(GrammarTestKit.Matches(neg, "🦅"));
        Assert.False(GrammarTestKit.Matches(neg, "]"));
        Assert.False(GrammarTestKit.Matches(neg, "a"));
        // (?:a+|)+ matches "" (one iteration taking the empty branch); Python agrees, .NET's engine does not.
        Assert.True(GrammarTestKit.Matches(ByteDfa.FromRegex("(?:a+|)+"), ""));
        Assert.True(GrammarTestKit.Matches(ByteDfa.FromRegex("(?:a+|)+"), "aaa"));
    }

    [Fact]
    public void Python_style_open_lower_bound_means_zero()
    {
        var dfa = ByteDfa.FromRegex("a{,2}b");
        Assert.True(GrammarTestKit.Matches(dfa, "b"));
        Assert.True(GrammarTestKit.Matches(dfa, "aab"));
        Assert.False(GrammarTestKit.Matches(dfa, "aaab"));
    }

    [Fact]
    public void Accepting_and_exits_report_where_the_match_stands()
    {
        var dfa = ByteDfa.FromRegex("ab|abc*");
        int s = dfa.Start;
        Assert.False(dfa.IsAccepting(s));
        Assert.True(dfa.HasExits(s));
        s = dfa.Next(dfa.Next(s, (byte)'a'), (byte)'b');
        Assert.True(dfa.IsAccepting(s));
        Assert.True(dfa.HasExits(s)); // 'c' may follow
        Assert.Equal(-1, dfa.Next(s, (byte)'x'));
        Assert.Equal(-1, dfa.Next(-1, (byte)'a'));
        var done = ByteDfa.FromRegex("ab");
        int t = done.Next(done.Next(done.Start, (byte)'a'), (byte)'b');
        Assert.True(done.IsAccepting(t));
        Assert.False(done.HasExits(t));
        Assert.Throws<ArgumentOutOfRangeException>(() => done.Next(12345, 0));
    }

    [Theory]
    [InlineData("(?=a)", "look-around", 0)]
    [InlineData("a(?!b)", "look-around", 1)]
    [InlineData("(?<=a)b", "look-around", 0)]
    [InlineData("(a)\\1", "back-reference", 3)]
    [InlineData("(?P<x>a)(?P=x)", "back-reference", 8)]
    [InlineData("\\k<x>", "back-reference", 0)]
    [InlineData("a\\b", "word boundary", 1)]
    [InlineData("a^b", "anchor '^'", 1)]
    [InlineData("a$b", "anchor '$'", 1)]
    [InlineData("\\Aa", "anchor '\\A'", 0)]
    [InlineData("a\\z", "anchor '\\z'", 1)]
    [InlineData("\\p{L}", "Unicode property", 0)]
    [InlineData("(?i)a", "inline flags", 0)]
    [InlineData("(?>a)", "atomic", 0)]
    [InlineData("a**", "nested quantifier", 2)]
    [InlineData("a{2}{3}", "nested quantifier", 4)]
    [InlineData("a++", "possessive", 2)]
    [InlineData("*a", "nothing to repeat", 0)]
    [InlineData("a|?", "nothing to repeat", 2)]
    [InlineData("(a", "unclosed group", 0)]
    [InlineData("a)", "unmatched ')'", 1)]
    [InlineData("[a", "unclosed character class", 0)]
    [InlineData("[z-a]", "out of order", 1)]
    [InlineData("ab\\", "lone backslash", 2)]
    [InlineData("\\q", "unknown escape", 0)]
    [InlineData("\\uD800", "lone surrogate", 0)]
    [InlineData("\\x4", "hex digits", 0)]
    [InlineData("a{5,2}", "maximum below its minimum", 1)]
    [InlineData("[[:alpha:]]", "POSIX", 1)]
    [InlineData("[a-z-[aeiou]]", "subtraction", 4)]
    [InlineData("a{99999}", "larger than the supported", 1)]
    public void Unsupported_or_malformed_patterns_name_the_construct_and_position(string pattern, string construct, int position)
    {
        var e = Assert.Throws<HarpiaException>(() => ByteDfa.FromRegex(pattern));
        Assert.Contains(construct, e.Message);
        Assert.Contains($"at position {position} ", e.Message);
    }

    [Fact]
    public void Pathological_sizes_fail_cleanly_and_fast()
    {
        var sw = Stopwatch.StartNew();
        foreach (var pattern in new[] { "(a{1000}){1000}", "((a|b){1000}){1000}", "(((x{30}){30}){30}){30}", "(?:[^a]{10000}){10}", "(?:.{10000}){5}" })
        {
            var e = Assert.Throws<HarpiaException>(() => ByteDfa.FromRegex(pattern));
            Assert.Contains("automaton states", e.Message);
        }
        var deep = Assert.Throws<HarpiaException>(() => ByteDfa.FromRegex(new string('(', 5000) + new string(')', 5000)));
        Assert.Contains("nested more than", deep.Message);
        Assert.Throws<HarpiaException>(() => ByteDfa.FromRegex("[^\\s\\S]")); // can never match
        Assert.True(GrammarTestKit.Matches(ByteDfa.FromRegex("(((?:){1000}){1000}){1000}"), "")); // repeated emptiness is cheap
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30)); // a guard against a hang, not a timing assertion
    }

    [Fact]
    public void A_dfa_that_would_explode_stops_at_the_state_limit_with_a_clear_error()
    {
        // (a|b)*a(a|b){17}: the DFA must remember the last 18 letters, 2^18 states.
        var dfa = ByteDfa.FromRegex("(a|b)*a(a|b){17}");
        var seen = new HashSet<int> { dfa.Start };
        var queue = new Queue<int>(seen);
        var e = Assert.Throws<HarpiaException>(() =>
        {
            while (queue.Count > 0)
            {
                int s = queue.Dequeue();
                foreach (byte b in "ab"u8)
                {
                    int t = dfa.Next(s, b);
                    if (t >= 0 && seen.Add(t)) queue.Enqueue(t);
                }
            }
        });
        Assert.Contains("grew past", e.Message);
    }

    [Fact]
    public void Dfa_is_safe_to_share_between_threads()
    {
        var dfa = ByteDfa.FromRegex("(?:[a-z]{1,3}[0-9]|é|🦅)*x");
        var texts = new[] { "ab1x", "x", "é🦅abc9x", "abcd1x", "a1b2c3éx" };
        Parallel.For(0, 64, i =>
        {
            foreach (var t in texts)
                Assert.Equal(GrammarTestKit.NetMatches(MapAstral("(?:[a-z]{1,3}[0-9]|é|🦅)*x"), MapAstral(t)), GrammarTestKit.Matches(dfa, t));
        });
    }
}

public class GrammarJsonSchemaTests
{
    private static JsonElement Schema(string json) => JsonDocument.Parse(json).RootElement.Clone();

    private const string Person = """
        {"type":"object","additionalProperties":false,
         "properties":{
           "name":{"type":"string","minLength":1,"maxLength":20},
           "age":{"type":"integer","minimum":0,"maximum":150},
           "email":{"type":"string","format":"email"},
           "nick":{"type":["string","null"],"maxLength":8},
           "score":{"type":"number"}},
         "required":["name","age"]}
        """;

    private const string Nested = """
        {"type":"object","additionalProperties":false,
         "properties":{
           "id":{"type":"string","format":"uuid"},
           "owner":{"type":"object","additionalProperties":false,"properties":{"first":{"type":"string","maxLength":5},"last":{"type":"string","maxLength":5}},"required":["last"]},
           "tags":{"type":"array","items":{"type":"string","pattern":"^[a-z]{1,4}$"},"minItems":1,"maxItems":3},
           "created":{"type":"string","format":"date-time"},
           "day":{"type":"string","format":"date"},
           "at":{"type":"string","format":"time"}},
         "required":["id","owner","tags"]}
        """;

    private const string AllOptional = """
        {"type":"object","additionalProperties":false,"properties":{"a":{"type":"boolean"},"b":{"type":"null"},"c":{"enum":[1,"two",[3],{"four":4}]},"d":{"const":"é🦅"}}}
        """;

    private const string Refs = """
        {"$defs":{"Color":{"enum":["red","green","blue"],"type":"string","title":"Color"},
                  "Point":{"type":"object","properties":{"x":{"type":"integer","minimum":-10,"maximum":10},"y":{"type":"integer","exclusiveMinimum":0}},"required":["x","y"],"additionalProperties":false}},
         "type":"object","additionalProperties":false,
         "properties":{
           "color":{"$ref":"#/$defs/Color"},
           "points":{"type":"array","items":{"$ref":"#/$defs/Point"},"maxItems":4},
           "shape":{"anyOf":[{"type":"string","enum":["circle","square"]},{"type":"integer","minimum":3,"maximum":12},{"type":"null"}]},
           "kind":{"oneOf":[{"const":"a"},{"const":"b"}]},
           "legacy":{"allOf":[{"$ref":"#/definitions/Flag"}],"description":"old"}},
         "definitions":{"Flag":{"type":"boolean"}},
         "required":["color","points"]}
        """;

    private const string Anything = "{}";
    private const string AnyObject = """{"type":"object"}""";
    private const string Map = """{"type":"object","additionalProperties":{"type":"integer"}}""";
    private const string Numbers = """{"type":"array","items":{"type":"number","minimum":-3,"maximum":7},"maxItems":6}""";

    public static TheoryData<string> Schemas => [Person, Nested, AllOptional, Refs, Anything, AnyObject, Map, Numbers];

    [Theory]
    [MemberData(nameof(Schemas))]
    public void Random_documents_from_the_grammar_parse_and_satisfy_the_schema(string schemaJson)
    {
        var schema = Schema(schemaJson);
        var dfa = ByteDfa.FromJsonSchema(schema);
        var rng = new Random(schemaJson.Length);
        for (int i = 0; i < 150; i++)
        {
            var bytes = GrammarTestKit.RandomWalk(dfa, rng, 160);
            string text = new UTF8Encoding(false, true).GetString(bytes);
            JsonDocument doc;
            try { doc = JsonDocument.Parse(bytes); }
            catch (JsonException e) { throw new Xunit.Sdk.XunitException($"not JSON: {text}\n{e.Message}"); }
            using (doc)
                Assert.True(GrammarTestKit.Check(doc.RootElement, schema, schema) is null,
                    $"{text}\n{GrammarTestKit.Check(doc.RootElement, schema, schema)}");
        }
    }

    [Theory]
    [InlineData(Person, """{"name":"Ann","age":30}""", true)]
    [InlineData(Person, """{"name": "Ann", "age": 30, "email": "a.b@c.org", "nick": null, "score": -1.5e3}""", true)]
    [InlineData(Person, """{"name":"Ann","age":30,"nick":"x","score":0}""", true)]
    [InlineData(Person, """{"age":30}""", false)]                              // missing required
    [InlineData(Person, """{"name":"Ann"}""", false)]                          // missing required
    [InlineData(Person, """{"name":"Ann","age":"30"}""", false)]               // wrong type
    [InlineData(Person, """{"name":"Ann","age":151}""", false)]                // above maximum
    [InlineData(Person, """{"name":"Ann","age":-1}""", false)]                 // below minimum
    [InlineData(Person, """{"name":"","age":3}""", false)]                     // minLength
    [InlineData(Person, """{"name":"Ann","age":30,"extra":1}""", false)]       // extra property
    [InlineData(Person, """{"age":30,"name":"Ann"}""", false)]                 // declared order only
    [InlineData(Person, """{"name":"Ann","age":30,}""", false)]                // trailing comma
    [InlineData(Person, """{"name":"Ann",  "age":30}""", false)]               // two spaces
    [InlineData(Person, """{"name":"Ann","age":30,"email":"nope"}""", false)]  // format
    [InlineData(Person, """{"name":"A\"n\\n\u00e9","age":0}""", true)]         // escapes
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["ab"]}""", true)]
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"first":"Jo","last":"Li"},"tags":["ab","c"],"created":"2024-02-29T23:59:59.5+02:00","day":"2000-02-29","at":"00:00:00Z"}""", true)]
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":[]}""", false)]          // minItems
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["a","b","c","d"]}""", false)] // maxItems
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"first":"Jo"},"tags":["ab"]}""", false)]       // nested required
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["AB"]}""", false)]        // pattern
    [InlineData(Nested, """{"id":"not-a-uuid","owner":{"last":"Li"},"tags":["ab"]}""", false)]
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["ab"],"day":"2023-02-29"}""", false)] // not a leap year
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["ab"],"day":"1900-02-29"}""", false)]
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["ab"],"day":"2023-04-31"}""", false)]
    [InlineData(Nested, """{"id":"123e4567-e89b-12d3-a456-426614174000","owner":{"last":"Li"},"tags":["ab"],"at":"24:00:00Z"}""", false)]
    [InlineData(AllOptional, """{}""", true)]
    [InlineData(AllOptional, """{"b":null}""", true)]
    [InlineData(AllOptional, """{"a":true,"c":{"four":4},"d":"é🦅"}""", true)]
    [InlineData(AllOptional, """{"c":[3]}""", true)]
    [InlineData(AllOptional, """{"a":true,}""", false)]
    [InlineData(AllOptional, """{,"a":true}""", false)]
    [InlineData(AllOptional, """{"c":3}""", false)]
    [InlineData(Refs, """{"color":"red","points":[]}""", true)]
    [InlineData(Refs, """{"color":"blue","points":[{"x":-10,"y":1},{"x":10,"y":99}],"shape":12,"kind":"b","legacy":false}""", true)]
    [InlineData(Refs, """{"color":"red","points":[],"shape":"circle"}""", true)]
    [InlineData(Refs, """{"color":"pink","points":[]}""", false)]
    [InlineData(Refs, """{"color":"red","points":[{"x":11,"y":1}]}""", false)]
    [InlineData(Refs, """{"color":"red","points":[{"x":1,"y":0}]}""", false)]  // exclusiveMinimum
    [InlineData(Refs, """{"color":"red","points":[],"shape":2}""", false)]
    [InlineData(Refs, """{"color":"red","points":[],"kind":"c"}""", false)]
    [InlineData(Anything, """[{"a":1,"b":"x"},[null],-0.5,"s"]""", true)]
    [InlineData(Anything, """[[[1]]]""", false)] // deeper than the any-value approximation
    [InlineData(AnyObject, """{"k":{"n":[1]}}""", false)]
    [InlineData(AnyObject, """{"k":{"n":1},"m":[true]}""", true)]
    [InlineData(Map, """{"a":1,"b":-2}""", true)]
    [InlineData(Map, """{"a":1.5}""", false)]
    [InlineData(Numbers, """[-3,7,6.999,-2.5,0.0,-0.25]""", true)]
    [InlineData(Numbers, """[7.5]""", false)]
    [InlineData(Numbers, """[-3.5]""", false)]
    [InlineData(Numbers, """[8]""", false)]
    public void Hand_written_documents_are_accepted_or_rejected(string schemaJson, string document, bool valid)
    {
        var schema = Schema(schemaJson);
        var dfa = ByteDfa.FromJsonSchema(schema);
        Assert.Equal(valid, GrammarTestKit.Matches(dfa, document));
        if (valid)
        {
            // The hand-written checker agrees (so the grammar test above is checking the right thing).
            using var doc = JsonDocument.Parse(document);
            Assert.Null(GrammarTestKit.Check(doc.RootElement, schema, schema));
        }
    }

    [Fact]
    public void Integer_ranges_accept_exactly_the_integers_in_range()
    {
        var rng = new Random(5);
        var bounds = new List<(long? Lo, long? Hi)> { (0, 0), (0, 9), (1, 10), (-5, 5), (-120, -7), (7, 123), (99, 1000), (-1000, -999), (0, null), (13, null), (-37, null), (null, 0), (null, -13), (null, 250), (null, null) };
        for (int i = 0; i < 40; i++)
        {
            long a = rng.Next(-3000, 3000), b = a + rng.Next(0, 3000);
            bounds.Add((a, b));
        }
        foreach (var (lo, hi) in bounds)
        {
            string json = "{\"type\":\"integer\"" + (lo is null ? "" : $",\"minimum\":{lo}") + (hi is null ? "" : $",\"maximum\":{hi}") + "}";
            var dfa = ByteDfa.FromJsonSchema(Schema(json));
            long center = lo ?? hi ?? 0;
            for (long v = center - 3100; v <= (hi ?? center) + 3100; v++)
            {
                bool expected = (lo is null || v >= lo) && (hi is null || v <= hi);
                Assert.True(expected == GrammarTestKit.Matches(dfa, v.ToString(CultureInfo.InvariantCulture)), $"{v} for {json}");
            }
            foreach (var bad in new[] { lo is null && hi is null ? "--0" : "-0", "01", "+1", "00", "1.0", "" }) // "-0" is a valid integer; bounded ranges emit the canonical 0
                Assert.False(GrammarTestKit.Matches(dfa, bad), $"\"{bad}\" for {json}");
        }
        // Draft-4 boolean exclusive bounds and draft-6 numeric ones, and fractional bounds.
        var ex = ByteDfa.FromJsonSchema(Schema("""{"type":"integer","minimum":1,"exclusiveMinimum":true,"exclusiveMaximum":5.5}"""));
        Assert.Equal(["2", "3", "4", "5"], Enumerable.Range(-10, 30).Select(v => v.ToString(CultureInfo.InvariantCulture)).Where(v => GrammarTestKit.Matches(ex, v)));
    }

    [Fact]
    public void String_lengths_count_characters_not_bytes()
    {
        var dfa = ByteDfa.FromJsonSchema(Schema("""{"type":"string","minLength":2,"maxLength":3}"""));
        Assert.True(GrammarTestKit.Matches(dfa, "\"é🦅\""));
        Assert.True(GrammarTestKit.Matches(dfa, "\"a\\n\\u00e9\""));
        Assert.True(GrammarTestKit.Matches(dfa, "\"\\ud83e\\udd85x\"")); // an escaped pair is one character
        Assert.False(GrammarTestKit.Matches(dfa, "\"é\""));
        Assert.False(GrammarTestKit.Matches(dfa, "\"abcd\""));
        Assert.False(GrammarTestKit.Matches(dfa, "\"a\\ud800\""));       // lone surrogate escape
        Assert.False(GrammarTestKit.Matches(dfa, "\"a\tb\""));           // raw control character
    }

    [Fact]
    public void A_schema_pattern_can_never_produce_broken_json()
    {
        var dfa = ByteDfa.FromJsonSchema(Schema("""{"type":"string","pattern":"^.*$"}"""));
        Assert.True(GrammarTestKit.Matches(dfa, "\"abc é\""));
        Assert.False(GrammarTestKit.Matches(dfa, "\"a\"b\""));
        Assert.False(GrammarTestKit.Matches(dfa, "\"a\\\""));
        var rng = new Random(3);
        for (int i = 0; i < 100; i++)
        {
            var bytes = GrammarTestKit.RandomWalk(dfa, rng, 40);
            using var doc = JsonDocument.Parse(bytes);
            Assert.Equal(JsonValueKind.String, doc.RootElement.ValueKind);
        }
    }

    [Fact]
    public void Schema_given_as_a_json_string_is_parsed()
    {
        var dfa = ByteDfa.FromJsonSchema(Schema("\"{\\\"type\\\":\\\"boolean\\\"}\""));
        Assert.True(GrammarTestKit.Matches(dfa, "true"));
        Assert.False(GrammarTestKit.Matches(dfa, "1"));
    }

    [Fact]
    public void Enum_values_are_emitted_as_compact_json()
    {
        string regex = JsonSchemaRegex.FromSchema(Schema("""{"enum":[{"a" : [1, 2]}, "x\"y", null, 1.50]}"""));
        var dfa = ByteDfa.FromRegex(regex);
        foreach (var ok in new[] { """{"a":[1,2]}""", "\"x\\\"y\"", "null", "1.50" }) Assert.True(GrammarTestKit.Matches(dfa, ok), ok);
        Assert.False(GrammarTestKit.Matches(dfa, """{"a" : [1, 2]}"""));
    }

    [Theory]
    [InlineData("""{"type":"string","not":{"const":"a"}}""", "'not'")]
    [InlineData("""{"if":{"type":"string"},"then":{"maxLength":3}}""", "'if'")]
    [InlineData("""{"type":"object","patternProperties":{"^a":{}}}""", "'patternProperties'")]
    [InlineData("""{"type":"integer","multipleOf":3}""", "'multipleOf'")]
    [InlineData("""{"type":"array","uniqueItems":true}""", "'uniqueItems'")]
    [InlineData("""{"type":"array","prefixItems":[{"type":"string"}]}""", "'prefixItems'")]
    [InlineData("""{"type":"object","minProperties":1}""", "'minProperties'")]
    [InlineData("""{"type":"number","minimum":0.5}""", "'minimum'")]
    [InlineData("""{"type":"number","exclusiveMinimum":0}""", "'exclusiveMinimum'")]
    [InlineData("""{"type":"string","format":"hostname"}""", "\"hostname\"")]
    [InlineData("""{"allOf":[{"type":"string"},{"maxLength":3}]}""", "'allOf'")]
    [InlineData("""{"type":"string","anyOf":[{"maxLength":3}]}""", "'anyOf' together with 'type'")]
    [InlineData("""{"$ref":"#/$defs/Node","$defs":{"Node":{"type":"object","properties":{"next":{"$ref":"#/$defs/Node"}}}}}""", "recursive")]
    [InlineData("""{"$ref":"https://example.com/s.json"}""", "only references inside the schema")]
    [InlineData("""{"$ref":"#/$defs/Missing"}""", "points to nothing")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"}},"required":["b"]}""", "\"b\"")]
    [InlineData("""{"type":"wat"}""", "unknown type")]
    [InlineData("""{"type":"array","items":[{"type":"string"}]}""", "tuple")]
    [InlineData("""{"type":"array","items":{"type":"string"},"minItems":3,"maxItems":2}""", "'minItems' is above 'maxItems'")]
    [InlineData("""{"type":"integer","minimum":5,"maximum":4}""", "no integer")]
    [InlineData("""{"type":"string","pattern":"(?=a)"}""", "look-around")]
    [InlineData("""{"type":"string","maxLength":99999}""", "'maxLength'")]
    [InlineData("""false""", "'false'")]
    [InlineData("""[1]""", "must be a JSON object")]
    public void Unsupported_schema_keywords_are_refused_by_name(string schemaJson, string named)
    {
        var e = Assert.Throws<HarpiaException>(() => ByteDfa.FromJsonSchema(Schema(schemaJson)));
        Assert.Contains(named, e.Message);
        Assert.Contains("JSON schema", e.Message);
    }

    [Fact]
    public void Non_ascii_and_escaped_names_and_values_are_literal()
    {
        var dfa = ByteDfa.FromJsonSchema(Schema("""
            {"type":"object","properties":{"名前":{"enum":["é","🦅","a.b*c"]},"q\"x":{"const":"line\nbreak"}},"required":["名前","q\"x"]}
            """));
        Assert.True(GrammarTestKit.Matches(dfa, """{"名前":"🦅","q\"x":"line\nbreak"}"""));
        Assert.True(GrammarTestKit.Matches(dfa, """{"名前": "a.b*c", "q\"x": "line\nbreak"}"""));
        Assert.False(GrammarTestKit.Matches(dfa, """{"名前":"aXbbc","q\"x":"line\nbreak"}""")); // regex metacharacters stay literal
        Assert.False(GrammarTestKit.Matches(dfa, "{\"名前\":\"é\",\"q\\\"x\":\"line\nbreak\"}"));  // a raw newline is not JSON
    }

    [Fact]
    public void Descriptive_keywords_and_unknown_annotations_are_ignored()
    {
        var dfa = ByteDfa.FromJsonSchema(Schema("""
            {"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","title":"T","description":"D","default":true,
             "examples":[true],"x-vendor":{"anything":1},"type":"boolean"}
            """));
        Assert.True(GrammarTestKit.Matches(dfa, "false"));
    }

    [Theory]
    [InlineData(new[] { false, false, false, false })]
    [InlineData(new[] { true, false, false, false })]
    [InlineData(new[] { false, true, false, true })]
    [InlineData(new[] { false, false, false, true })]
    [InlineData(new[] { true, true, true, true })]
    public void Every_subset_of_members_in_declared_order_is_accepted_exactly_when_the_required_are_there(bool[] required)
    {
        string[] names = ["a", "b", "c", "d"];
        string props = string.Join(',', names.Select(n => $"\"{n}\":{{\"type\":\"integer\"}}"));
        string req = string.Join(',', names.Where((_, i) => required[i]).Select(n => $"\"{n}\""));
        var dfa = ByteDfa.FromJsonSchema(Schema("{\"type\":\"object\",\"properties\":{" + props + "},\"required\":[" + req + "]}"));
        for (int mask = 0; mask < 16; mask++)
        {
            var present = Enumerable.Range(0, 4).Where(i => (mask & (1 << i)) != 0).ToList();
            string doc = "{" + string.Join(",", present.Select(i => $"\"{names[i]}\":{i}")) + "}";
            bool expected = Enumerable.Range(0, 4).All(i => !required[i] || present.Contains(i));
            Assert.True(expected == GrammarTestKit.Matches(dfa, doc), doc);
            if (present.Count >= 2)
            {
                // Out of declared order, or a doubled comma, is never accepted.
                string reversed = "{" + string.Join(",", present.AsEnumerable().Reverse().Select(i => $"\"{names[i]}\":{i}")) + "}";
                Assert.False(GrammarTestKit.Matches(dfa, reversed), reversed);
                Assert.False(GrammarTestKit.Matches(dfa, doc.Replace(",", ",,")), doc);
            }
        }
    }

    [Fact]
    public void Wide_all_optional_objects_stay_within_limits()
    {
        // The regex text is quadratic in the member count; the automaton shares the repeated tails.
        var wide = string.Join(',', Enumerable.Range(0, 40).Select(i => $"\"q{i}\":{{\"type\":\"string\",\"maxLength\":30}}"));
        var big = ByteDfa.FromJsonSchema(Schema("{\"type\":\"object\",\"properties\":{" + wide + "}}"));
        Assert.True(GrammarTestKit.Matches(big, """{"q7":"x","q39":"y"}"""));
        var props = string.Join(',', Enumerable.Range(0, 12).Select(i => $"\"p{i}\":{{\"type\":\"string\",\"maxLength\":10}}"));
        var dfa = ByteDfa.FromJsonSchema(Schema("{\"type\":\"object\",\"properties\":{" + props + "}}"));
        Assert.True(GrammarTestKit.Matches(dfa, """{"p3":"x", "p11":"y"}"""));
        Assert.False(GrammarTestKit.Matches(dfa, """{"p11":"y","p3":"x"}"""));
    }
}

public class GrammarTokenConstraintTests
{
    // 0 "{"  1 "\""  2 "a"  3 "ab"  4 "\"}"  5 "}"  6 "1"  7 "12"  8 " "  9 EOS  10 special (null)
    // 11 0xC3  12 0xA9  13 "é"  14 ":"  15 "\":"  16 ","  17 "b"  18 empty token
    private static readonly byte[]?[] Bytes =
    [
        "{"u8.ToArray(), "\""u8.ToArray(), "a"u8.ToArray(), "ab"u8.ToArray(), "\"}"u8.ToArray(), "}"u8.ToArray(),
        "1"u8.ToArray(), "12"u8.ToArray(), " "u8.ToArray(), "</s>"u8.ToArray(), null, [0xC3], [0xA9], "é"u8.ToArray(),
        ":"u8.ToArray(), "\":"u8.ToArray(), ","u8.ToArray(), "b"u8.ToArray(), [],
    ];
    private const int Eos = 9;
    private static readonly TokenVocabulary Vocab = new(Bytes, Eos);

    private static int[] Allowed(TokenConstraint c, int extra = 0)
    {
        var scores = new float[Bytes.Length + extra];
        c.Mask(scores);
        Assert.All(scores[Bytes.Length..], s => Assert.Equal(float.NegativeInfinity, s));
        return Enumerable.Range(0, scores.Length).Where(i => scores[i] == 0f).ToArray();
    }

    [Fact]
    public void Mask_allows_exactly_the_tokens_that_keep_a_match_possible()
    {
        var c = new TokenConstraint(ByteDfa.FromRegex("ab|a"), Vocab);
        Assert.Equal([2, 3], Allowed(c, extra: 5));
        c.Accept(2); // "a": a full match, and "b" may still follow
        Assert.Equal([Eos, 17], Allowed(c));
        Assert.False(c.IsComplete);
        c.Accept(17);
        Assert.Equal([Eos], Allowed(c));
        Assert.True(c.IsComplete);
        c.Accept(Eos);
        Assert.True(c.IsComplete);
        Assert.Throws<InvalidOperationException>(() => c.Accept(2));
    }

    [Fact]
    public void A_character_split_across_two_tokens_is_followed_byte_by_byte()
    {
        var c = new TokenConstraint(ByteDfa.FromRegex("é+"), Vocab);
        Assert.Equal([11, 13], Allowed(c)); // 0xC3 alone or the whole "é"; never the continuation byte first
        c.Accept(11);
        Assert.Equal([12], Allowed(c));      // only 0xA9 completes it; EOS not allowed mid-character
        c.Accept(12);
        Assert.Equal([Eos, 11, 13], Allowed(c));
        c.Accept(13);
        Assert.False(c.IsComplete);
        Assert.Equal([Eos, 11, 13], Allowed(c));
    }

    [Fact]
    public void Json_like_grammar_over_the_small_vocabulary()
    {
        var c = new TokenConstraint(ByteDfa.FromRegex("\\{\"ab?\":[ ]?(1|12)\\}"), Vocab);
        Assert.Equal([0], Allowed(c));
        c.Accept(0);
        Assert.Equal([1], Allowed(c));
        c.Accept(1);
        Assert.Equal([2, 3], Allowed(c));
        c.Accept(2);
        Assert.Equal([1, 15, 17], Allowed(c)); // "\"" (":" follows later), "\":" or "b"; not "\"}"
        c.Accept(15);
        Assert.Equal([6, 7, 8], Allowed(c));
        c.Accept(8);
        Assert.Equal([6, 7], Allowed(c));
        c.Accept(7);
        Assert.Equal([5], Allowed(c));
        Assert.Throws<InvalidOperationException>(() => c.Accept(4));
        Assert.Throws<InvalidOperationException>(() => c.Accept(Eos)); // not a match yet
        c.Accept(5);
        Assert.True(c.IsComplete);
        Assert.Equal([Eos], Allowed(c));
    }

    [Fact]
    public void Null_and_empty_tokens_are_never_allowed_and_cannot_be_accepted()
    {
        var c = new TokenConstraint(ByteDfa.FromRegex(".*"), Vocab);
        var allowed = Allowed(c);
        Assert.DoesNotContain(10, allowed);
        Assert.DoesNotContain(18, allowed);
        Assert.DoesNotContain(12, allowed); // a lone continuation byte is never valid UTF-8
        Assert.Contains(Eos, allowed);      // ".*" matches the empty text
        Assert.Throws<InvalidOperationException>(() => c.Accept(10));
        Assert.Throws<InvalidOperationException>(() => c.Accept(18));
        Assert.Throws<InvalidOperationException>(() => c.Accept(99));
        Assert.Throws<ArgumentException>(() => c.Mask(new float[3]));
    }

    [Fact]
    public void When_the_vocabulary_cannot_continue_only_eos_is_left()
    {
        var c = new TokenConstraint(ByteDfa.FromRegex("zz"), Vocab);
        Assert.Equal([Eos], Allowed(c));
    }

    [Fact]
    public void Disallowed_scores_become_negative_infinity_and_the_rest_are_untouched()
    {
        var c = new TokenConstraint(ByteDfa.FromRegex("a[b ]"), Vocab);
        var scores = Enumerable.Range(0, Bytes.Length).Select(i => (float)i + 0.5f).ToArray();
        c.Mask(scores);
        for (int i = 0; i < scores.Length; i++)
            Assert.Equal(i is 2 or 3 ? i + 0.5f : float.NegativeInfinity, scores[i]);
    }

    [Theory]
    [InlineData("\\{\"ab?\":[ ]?(1|12){1,3}\\}")]
    [InlineData("(ab|a){1,4}é")]
    [InlineData("\"a{0,5}\"")]
    [InlineData("(é|1|\\{)*\\}")]
    public void Greedy_generation_from_random_scores_always_ends_in_a_full_match(string pattern)
    {
        var dfa = ByteDfa.FromRegex(pattern);
        for (int seed = 0; seed < 50; seed++)
        {
            var c = new TokenConstraint(dfa, Vocab);
            var ids = GrammarTestKit.Generate(c, Bytes.Length + 2, Eos, new Random(seed), 500);
            var text = new UTF8Encoding(false, true).GetString(ids.SelectMany(id => Bytes[id]!).ToArray());
            Assert.True(GrammarTestKit.NetMatches(pattern, text), $"seed {seed}: \"{text}\"");
        }
    }

    [Fact]
    public void Constraints_on_one_grammar_share_masks_across_threads()
    {
        var dfa = ByteDfa.FromRegex("(ab|a|1|12|é)*\\}");
        Parallel.For(0, 32, seed =>
        {
            var c = new TokenConstraint(dfa, Vocab);
            var ids = GrammarTestKit.Generate(c, Bytes.Length, Eos, new Random(seed), 60);
            var text = Encoding.UTF8.GetString(ids.SelectMany(id => Bytes[id]!).ToArray());
            if (c.IsComplete) Assert.Matches("^(?:ab|a|1|12|é)*\\}$", text);
        });
    }

    [Fact]
    public void Vocabulary_rejects_an_eos_outside_it()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenVocabulary(Bytes, Bytes.Length));
    }
}

public class GrammarFalconTests(ITestOutputHelper output)
{
    private static readonly Lazy<HfTokenizer> Tokenizer = new(() => HfTokenizer.Load(Fixtures.Path_("falcon", "tokenizer.json")));
    private const int FalconEos = 11;

    [Fact]
    public void Token_bytes_concatenate_to_the_text()
    {
        var tok = Tokenizer.Value;
        foreach (var text in new[] { "Hello, wörld 🦅 漢字!", "{\"a\": [1, 2.5e3, null]}", "  tabs\tand\nnewlines  ", "é" })
        {
            var ids = tok.Encode(text);
            Assert.Equal(Encoding.UTF8.GetBytes(text), ids.SelectMany(id => tok.TokenBytes(id)!).ToArray());
        }
        Assert.Null(tok.TokenBytes(-1));
        Assert.Null(tok.TokenBytes(tok.VocabSize));
        Assert.Equal("<|endoftext|>"u8.ToArray(), tok.TokenBytes(FalconEos));
    }

    [Theory]
    [InlineData("llama2-style")]     // Replace ▁, ByteFallback, Fuse, Strip
    [InlineData("metaspace-nfkc")]   // Metaspace, first token special
    public void Token_bytes_of_non_byte_level_decoders_are_what_each_token_adds_mid_text(string name)
    {
        var tok = HfTokenizer.Load(Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Tokenization", "Data", name + ".tokenizer.json"));
        var prefix = tok.Encode("x").ToArray();
        foreach (var text in new[] { "Hello world", " two  spaces", "é and 🦅 and 漢字", "tab\tnew\nline" })
        {
            var ids = tok.Encode(text).ToArray();
            string expected = tok.Decode([.. prefix, .. ids])[tok.Decode(prefix).Length..];
            Assert.Equal(expected, Encoding.UTF8.GetString(ids.SelectMany(id => tok.TokenBytes(id)!).ToArray()));
        }
    }

    [Fact]
    public void Mask_over_the_real_vocabulary_equals_walking_every_token()
    {
        var tok = Tokenizer.Value;
        var vocab = TokenVocabulary.FromTokenizer(tok, FalconEos);
        var bytes = Enumerable.Range(0, tok.VocabSize).Select(id => id != FalconEos && tok.IsSpecial(id) ? null : tok.TokenBytes(id)).ToArray();
        foreach (var pattern in new[] { "\\{\"[a-z]{1,8}\":[ ]?-?[0-9]{1,4}\\}", "[^\"\\\\]{0,12}é?", "(?:Hello|hi), 🦅+!", "\\d+(?:\\.\\d+)?" })
        {
            var dfa = ByteDfa.FromRegex(pattern);
            var rng = new Random(pattern.Length);
            // Several states along random walks, each compared with a brute-force walk of every token.
            for (int k = 0; k < 6; k++)
            {
                // A prefix of a random match, cut anywhere (possibly inside a UTF-8 character).
                var walk = GrammarTestKit.RandomWalk(dfa, rng, rng.Next(0, 10));
                var prefix = walk.Take(rng.Next(0, walk.Length + 1)).ToArray();
                // Drive the constraint to the same state through single-byte tokens (Falcon has one per byte).
                var constraint = new TokenConstraint(dfa, vocab);
                int reached = dfa.Start;
                foreach (byte b in prefix)
                {
                    int id = Array.FindIndex(bytes, t => t is { Length: 1 } && t[0] == b);
                    constraint.Accept(id);
                    reached = dfa.Next(reached, b);
                }
                var scores = new float[vocab.Count];
                constraint.Mask(scores);
                bool anyToken = false;
                for (int id = 0; id < vocab.Count; id++)
                {
                    bool expected;
                    if (id == FalconEos) continue;
                    if (bytes[id] is not { Length: > 0 } tb) expected = false;
                    else
                    {
                        int s = reached;
                        foreach (byte b in tb) { s = dfa.Next(s, b); if (s < 0) break; }
                        expected = s >= 0;
                    }
                    anyToken |= expected;
                    Assert.True(expected == (scores[id] == 0f), $"/{pattern}/ after \"{Encoding.UTF8.GetString(prefix)}\": token {id} {tok.IdToToken(id)}");
                }
                Assert.Equal(dfa.IsAccepting(reached) || !anyToken, scores[FalconEos] == 0f);
            }
        }
    }

    [Fact]
    public void Constrained_generation_over_the_real_vocabulary_yields_valid_json()
    {
        var tok = Tokenizer.Value;
        var sw = Stopwatch.StartNew();
        var vocab = TokenVocabulary.FromTokenizer(tok, FalconEos);
        output.WriteLine($"vocabulary: {vocab.Count} tokens, trie {vocab.NodeCount} nodes, built in {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal(65024, vocab.Count);

        var schema = JsonDocument.Parse("""
            {"type":"object","additionalProperties":false,
             "properties":{
               "name":{"type":"string","maxLength":12},
               "age":{"type":"integer","minimum":0,"maximum":120},
               "tags":{"type":"array","items":{"enum":["red","green","blue"]},"maxItems":3},
               "ok":{"type":"boolean"},
               "when":{"type":"string","format":"date"}},
             "required":["name","age"]}
            """).RootElement.Clone();
        sw.Restart();
        var dfa = ByteDfa.FromJsonSchema(schema);
        output.WriteLine($"schema compiled in {sw.Elapsed.TotalMilliseconds:F1} ms");

        var first = new TokenConstraint(dfa, vocab);
        var scores = new float[vocab.Count];
        sw.Restart();
        first.Mask(scores);
        output.WriteLine($"first Mask (start state, cold): {sw.Elapsed.TotalMilliseconds:F2} ms");
        for (int id = 0; id < FalconEos; id++) Assert.Equal(float.NegativeInfinity, scores[id]); // specials never
        Assert.Equal(float.NegativeInfinity, scores[FalconEos]);                                    // not a match yet
        Assert.Equal(0f, scores[tok.TokenToId("{")!.Value]);

        var cold = new List<double>();
        var warm = new List<double>();
        for (int seed = 0; seed < 6; seed++)
        {
            var c = new TokenConstraint(dfa, vocab);
            var ids = GrammarTestKit.Generate(c, vocab.Count, FalconEos, new Random(seed), 400, t => cold.Add(t.TotalMilliseconds));
            Assert.True(c.IsComplete, "generation did not finish");
            string text = tok.Decode(ids.ToArray());
            output.WriteLine($"seed {seed}: {ids.Count} tokens: {text}");
            using var doc = JsonDocument.Parse(text);
            Assert.Null(GrammarTestKit.Check(doc.RootElement, schema, schema));

            // The same generation again: every state's mask is cached now.
            var again = new TokenConstraint(dfa, vocab);
            var ids2 = GrammarTestKit.Generate(again, vocab.Count, FalconEos, new Random(seed), 400, t => warm.Add(t.TotalMilliseconds));
            Assert.Equal(ids, ids2);
        }
        // Cached masks allocate nothing.
        var warmConstraint = new TokenConstraint(dfa, vocab);
        warmConstraint.Mask(scores);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++) warmConstraint.Mask(scores);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        output.WriteLine($"Mask, first visit of a state (incl. building it): mean {cold.Average():F3} ms, max {cold.Max():F3} ms over {cold.Count} calls");
        output.WriteLine($"Mask, cached state: mean {warm.Average():F4} ms, max {warm.Max():F4} ms over {warm.Count} calls");
        output.WriteLine($"DFA states built: {dfa.StateCount}");
    }
}

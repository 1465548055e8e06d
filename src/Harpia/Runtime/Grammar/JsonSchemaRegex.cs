using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Harpia.Runtime.Grammar;

/// <summary>
/// Compiles a JSON schema to a regex (for <see cref="ByteDfa.FromRegex"/>) whose every full match is a JSON
/// document valid for the schema, in the spirit of outlines' build_regex_from_schema. The output is compact JSON:
/// the only whitespace allowed is one optional space after ':' and ',', so a model cannot ramble in whitespace.
/// Keywords that would change which documents are valid but cannot be expressed are refused with a
/// <see cref="HarpiaException"/> naming the keyword and where it is, rather than ignored: a grammar must never
/// produce a document the schema rejects. (Documents valid for the schema may still be refused by the grammar —
/// e.g. other whitespace, properties outside "properties", or nesting deeper than the any-value approximation.)
/// </summary>
public static class JsonSchemaRegex
{
    private const string Ws = "[ ]?";
    private const string Hex = "[0-9A-Fa-f]";
    // \uXXXX escapes that denote a character: any BMP non-surrogate, or a high+low surrogate pair. A lone
    // surrogate escape is valid JSON syntax but not a valid string, so it is left out.
    private const string UnicodeEscape =
        @"\\u(?:[0-9A-Ca-cEFef]" + Hex + "{3}|[Dd][0-7]" + Hex + "{2}|[Dd][89ABab]" + Hex + @"{2}\\u[Dd][C-Fc-f]" + Hex + "{2})";
    /// <summary>One character of a JSON string's content: a raw character other than '"', '\' and controls, or an escape.</summary>
    internal const string StringChar = @"(?:[^""\\\x00-\x1F]|\\[""\\/bfnrt]|" + UnicodeEscape + ")";
    internal const string StringPattern = "\"" + StringChar + "*\"";
    internal const string IntegerPattern = "-?(?:0|[1-9][0-9]*)";
    internal const string NumberPattern = @"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?";
    private const string BooleanPattern = "(?:true|false)";
    private const string NullPattern = "null";

    /// <summary>How deep containers nest where a schema allows any value (a regular grammar cannot nest without limit).</summary>
    internal const int AnyValueDepth = 2;

    private static readonly CodePointSet RawStringChars = CodePointSet.FromRanges([(0, 0x1F), ('"', '"'), ('\\', '\\')]).Complement();

    /// <summary>Keywords that only describe or organize; they never change validity.</summary>
    private static readonly HashSet<string> Descriptive = new(StringComparer.Ordinal)
    {
        "title", "description", "default", "examples", "example", "$schema", "$id", "id", "$comment", "$anchor",
        "readOnly", "writeOnly", "deprecated", "contentEncoding", "contentMediaType", "$defs", "definitions",
    };

    /// <summary>Keywords this compiler interprets (with the limits each one documents).</summary>
    private static readonly HashSet<string> Handled = new(StringComparer.Ordinal)
    {
        "type", "enum", "const", "properties", "required", "additionalProperties", "unevaluatedProperties", "items",
        "minItems", "maxItems", "uniqueItems", "anyOf", "oneOf", "allOf", "$ref", "minLength", "maxLength", "pattern",
        "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "nullable",
    };

    /// <summary>Standard keywords that change validity and are not supported: refused by name.</summary>
    private static readonly HashSet<string> Unsupported = new(StringComparer.Ordinal)
    {
        "not", "if", "then", "else", "patternProperties", "multipleOf", "contains", "minContains", "maxContains",
        "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "dependencies", "propertyNames",
        "prefixItems", "additionalItems", "unevaluatedItems", "$dynamicRef", "$recursiveRef", "contentSchema",
    };

    /// <summary>The regex for documents valid under <paramref name="schema"/> (an object, a boolean, or a string holding schema JSON).</summary>
    /// <exception cref="HarpiaException">an unsupported keyword or construct, named with its location.</exception>
    public static string FromSchema(JsonElement schema) => FromSchema(schema, null);

    /// <summary>As <see cref="FromSchema(JsonElement)"/>, within <paramref name="limits"/> (null: none beyond the compiler's own).</summary>
    /// <exception cref="HarpiaException">an unsupported keyword or construct, or a limit exceeded, named with its location.</exception>
    public static string FromSchema(JsonElement schema, GrammarLimits? limits)
    {
        if (schema.ValueKind == JsonValueKind.String)
        {
            // TGI accepts the schema as a JSON object or as a string holding one.
            JsonDocument doc;
            try { doc = JsonDocument.Parse(schema.GetString()!); }
            catch (JsonException)
            {
                // The reader's own message describes its internals (byte positions, "invalid start of a value").
                throw new HarpiaException("grammar JSON schema: the value is a string that does not hold JSON; send the schema as a JSON object (or a string holding one)");
            }
            using (doc) return FromSchema(doc.RootElement.Clone(), limits);
        }
        if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True or JsonValueKind.False))
            throw new HarpiaException($"grammar JSON schema: the schema must be a JSON object (got {schema.ValueKind})");
        return new Compiler(schema, limits).Value(schema, "#");
    }

    private sealed class Compiler(JsonElement root, GrammarLimits? limits)
    {
        private readonly List<string> _refStack = [];
        private int _enumValues;

        private static HarpiaException Error(string path, string problem) => new($"grammar JSON schema: {problem} (at {path})");

        public string Value(JsonElement s, string path)
        {
            string pattern = ValueCore(s, path);
            // Checked as each piece is built, so $refs that expand one another cannot grow a giant pattern first.
            if (limits is { } l && pattern.Length > l.MaxPatternChars)
                throw Error(path, $"the schema expands to a pattern of more than {l.MaxPatternChars:N0} characters (the server's limit); simplify it");
            return pattern;
        }

        private string ValueCore(JsonElement s, string path)
        {
            if (s.ValueKind == JsonValueKind.True) return AnyValue(AnyValueDepth);
            if (s.ValueKind == JsonValueKind.False) throw Error(path, "the schema 'false' allows no value");
            if (s.ValueKind != JsonValueKind.Object) throw Error(path, $"a schema must be an object or a boolean, not {s.ValueKind}");

            var keys = new List<string>();
            foreach (var p in s.EnumerateObject())
            {
                if (Unsupported.Contains(p.Name)) throw Error(path, $"keyword '{p.Name}' is not supported");
                if (Handled.Contains(p.Name)) keys.Add(p.Name);
                // Anything else is descriptive or not a JSON Schema keyword at all: annotations never change validity.
            }
            if (s.TryGetProperty("uniqueItems", out var unique) && unique.ValueKind == JsonValueKind.True)
                throw Error(path, "keyword 'uniqueItems': true is not supported");
            if (s.TryGetProperty("unevaluatedProperties", out var uneval) && uneval.ValueKind != JsonValueKind.False)
                throw Error(path, "keyword 'unevaluatedProperties' is only supported as false (the implied default)");

            if (s.TryGetProperty("$ref", out var reference))
            {
                RequireAlone(keys, "$ref", path);
                return Ref(reference, path);
            }
            foreach (string combinator in (string[])["allOf", "anyOf", "oneOf"])
            {
                if (!s.TryGetProperty(combinator, out var list)) continue;
                RequireAlone(keys, combinator, path);
                if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0)
                    throw Error(path, $"'{combinator}' must be a non-empty array of schemas");
                if (combinator == "allOf")
                {
                    if (list.GetArrayLength() != 1)
                        throw Error(path, "'allOf' with more than one schema is not supported (only a single entry)");
                    return Value(list[0], path + "/allOf/0");
                }
                // oneOf is compiled like anyOf: a document matching two branches would break oneOf's exclusivity,
                // which the usual discriminated unions (distinct types or consts) never do.
                var branches = list.EnumerateArray().Select((b, i) => Value(b, $"{path}/{combinator}/{i}"));
                return Group(string.Join('|', branches));
            }
            if (s.TryGetProperty("enum", out _) || s.TryGetProperty("const", out _))
                return Enum(s, keys, path);

            var types = Types(s, path);
            if (types.Count == 0) return AnyValue(AnyValueDepth);
            return Group(string.Join('|', types.Select(t => TypeValue(t, s, path))));
        }

        /// <summary>$ref and the combinators replace the schema: other assertions beside them would need an intersection.</summary>
        private static void RequireAlone(List<string> keys, string keyword, string path)
        {
            foreach (string k in keys)
                if (k != keyword && k != "uniqueItems" && k != "unevaluatedProperties")
                    throw Error(path, $"'{keyword}' together with '{k}' in the same schema is not supported");
        }

        private string Ref(JsonElement reference, string path)
        {
            if (reference.ValueKind != JsonValueKind.String) throw Error(path, "'$ref' must be a string");
            string r = reference.GetString()!;
            if (!r.StartsWith('#')) throw Error(path, $"'$ref' \"{r}\" is not supported (only references inside the schema, \"#/...\")");
            if (_refStack.Contains(r))
                throw Error(path, $"recursive '$ref' \"{r}\" is not supported (a regular grammar cannot nest without limit)");
            var target = root;
            string pointer = Uri.UnescapeDataString(r[1..]);
            if (pointer.Length > 0)
            {
                if (pointer[0] != '/') throw Error(path, $"'$ref' \"{r}\" is not supported (anchors; use a JSON pointer \"#/...\")");
                foreach (string raw in pointer[1..].Split('/'))
                {
                    string part = raw.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
                    if (target.ValueKind == JsonValueKind.Object && target.TryGetProperty(part, out var child)) target = child;
                    else if (target.ValueKind == JsonValueKind.Array && int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int i)
                             && i < target.GetArrayLength()) target = target[i];
                    else throw Error(path, $"'$ref' \"{r}\" points to nothing");
                }
            }
            _refStack.Add(r);
            try { return Value(target, r); }
            finally { _refStack.RemoveAt(_refStack.Count - 1); }
        }

        private static List<string> Types(JsonElement s, string path)
        {
            var types = new List<string>();
            if (s.TryGetProperty("type", out var type))
            {
                if (type.ValueKind == JsonValueKind.String) types.Add(type.GetString()!);
                else if (type.ValueKind == JsonValueKind.Array && type.GetArrayLength() > 0)
                    foreach (var t in type.EnumerateArray())
                    {
                        if (t.ValueKind != JsonValueKind.String) throw Error(path, "'type' entries must be strings");
                        types.Add(t.GetString()!);
                    }
                else throw Error(path, "'type' must be a string or a non-empty array of strings");
                foreach (string t in types)
                    if (t is not ("string" or "integer" or "number" or "boolean" or "null" or "object" or "array"))
                        throw Error(path, $"unknown type \"{t}\"");
            }
            else
            {
                // No type: the keywords present say which kinds of value they constrain. Generating only those kinds is
                // a subset of what the schema allows (it would also accept any value of the other kinds).
                bool Has(params string[] names) => names.Any(n => s.TryGetProperty(n, out _));
                if (Has("properties", "required", "additionalProperties")) types.Add("object");
                if (Has("items", "minItems", "maxItems")) types.Add("array");
                if (Has("minLength", "maxLength", "pattern", "format")) types.Add("string");
                if (Has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")) types.Add("number");
            }
            if (s.TryGetProperty("nullable", out var nullable) && nullable.ValueKind == JsonValueKind.True && !types.Contains("null"))
            {
                if (types.Count == 0) return []; // nullable with no type: any value
                types.Add("null");
            }
            return types.Distinct().ToList();
        }

        private string TypeValue(string type, JsonElement s, string path) => type switch
        {
            "string" => StringValue(s, path),
            "integer" => IntegerValue(s, path),
            "number" => NumberValue(s, path),
            "boolean" => BooleanPattern,
            "null" => NullPattern,
            "object" => ObjectValue(s, path),
            "array" => ArrayValue(s, path),
            _ => throw new InvalidOperationException(type),
        };

        // ---------------------------------------------------------------------------------------------------------
        // enum / const

        private string Enum(JsonElement s, List<string> keys, string path)
        {
            foreach (string k in keys)
                if (k is not ("enum" or "const" or "type" or "nullable" or "uniqueItems" or "unevaluatedProperties"))
                    throw Error(path, $"'enum'/'const' together with '{k}' is not supported");
            if (s.TryGetProperty("enum", out _) && s.TryGetProperty("const", out _))
                throw Error(path, "'enum' together with 'const' is not supported");
            var values = new List<JsonElement>();
            if (s.TryGetProperty("const", out var c)) values.Add(c);
            else
            {
                var e = s.GetProperty("enum");
                if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0) throw Error(path, "'enum' must be a non-empty array");
                values.AddRange(e.EnumerateArray());
            }
            _enumValues += values.Count;
            if (limits is { } l && _enumValues > l.MaxEnumValues)
                throw Error(path, $"the schema has more than {l.MaxEnumValues:N0} 'enum'/'const' values (the server's limit)");
            var types = s.TryGetProperty("type", out _) ? Types(s, path) : null;
            var literals = values.Where(v => types is null || types.Any(t => IsOfType(v, t)))
                .Select(v => Literal(CompactJson(v))).Distinct().ToList();
            if (literals.Count == 0) throw Error(path, "no 'enum'/'const' value has the schema's 'type'");
            return Group(string.Join('|', literals));
        }

        private static bool IsOfType(JsonElement v, string type) => type switch
        {
            "string" => v.ValueKind == JsonValueKind.String,
            "number" => v.ValueKind == JsonValueKind.Number,
            "integer" => v.ValueKind == JsonValueKind.Number && double.IsInteger(v.GetDouble()),
            "boolean" => v.ValueKind is JsonValueKind.True or JsonValueKind.False,
            "null" => v.ValueKind == JsonValueKind.Null,
            "object" => v.ValueKind == JsonValueKind.Object,
            "array" => v.ValueKind == JsonValueKind.Array,
            _ => false,
        };

        // ---------------------------------------------------------------------------------------------------------
        // strings

        private static string StringValue(JsonElement s, string path)
        {
            int? minLength = Count(s, "minLength", path), maxLength = Count(s, "maxLength", path);
            if (minLength > maxLength) throw Error(path, "'minLength' is above 'maxLength'");
            bool hasLength = minLength is not null || maxLength is not null;
            if (s.TryGetProperty("format", out var format))
            {
                if (format.ValueKind != JsonValueKind.String) throw Error(path, "'format' must be a string");
                if (hasLength || s.TryGetProperty("pattern", out _))
                    throw Error(path, "'format' together with 'pattern', 'minLength' or 'maxLength' is not supported");
                return "\"" + Format(format.GetString()!, path) + "\"";
            }
            if (s.TryGetProperty("pattern", out var pattern))
            {
                if (pattern.ValueKind != JsonValueKind.String) throw Error(path, "'pattern' must be a string");
                if (hasLength) throw Error(path, "'pattern' together with 'minLength'/'maxLength' is not supported");
                return "\"" + Group(PatternInString(pattern.GetString()!, path)) + "\"";
            }
            return "\"" + StringChar + Quantifier(minLength ?? 0, maxLength) + "\"";
        }

        /// <summary>
        /// A schema pattern as string content. JSON Schema patterns search, but like outlines the whole content must
        /// match (a subset: every full match is also a search match). The pattern is parsed and rewritten so that each
        /// of its characters is one the JSON text can hold unescaped — a pattern that matches '"', '\' or a control
        /// character would otherwise produce broken JSON.
        /// </summary>
        private static string PatternInString(string pattern, string path)
        {
            RegexNode tree;
            try { tree = RegexParser.Parse(pattern); }
            catch (HarpiaException e) { throw Error(path, $"'pattern': {e.Message}"); }
            return RegexWriter.Write(RestrictSets(tree));
        }

        private static RegexNode RestrictSets(RegexNode node) => node switch
        {
            SetNode set => new SetNode(set.Set.Intersect(RawStringChars)),
            ConcatNode c => new ConcatNode(c.Items.Select(RestrictSets).ToArray()),
            AltNode a => new AltNode(a.Items.Select(RestrictSets).ToArray()),
            RepeatNode r => r with { Item = RestrictSets(r.Item) },
            _ => node,
        };

        private static string Format(string format, string path)
        {
            switch (format)
            {
                case "date": return Date;
                case "time": return Time;
                case "date-time": return Date + "T" + Time;
                case "uuid": return Hex + "{8}-" + Hex + "{4}-" + Hex + "{4}-" + Hex + "{4}-" + Hex + "{12}";
                case "email":
                {
                    // RFC 5321 dot-atom local part @ a dotted hostname (a subset of valid addresses).
                    const string atom = @"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
                    const string label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
                    return atom + @"(?:\." + atom + ")*@" + label + @"(?:\." + label + ")+";
                }
                default:
                    throw Error(path, $"'format' \"{format}\" is not supported (supported: date, time, date-time, uuid, email)");
            }
        }

        // RFC 3339 full-date with real month lengths; 29 February only in leap years (divisible by 4, centuries by 400).
        private const string Date =
            "(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)" +
            "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)";

        // RFC 3339 full-time: hh:mm:ss, optional fraction, required offset (Z or ±hh:mm).
        private const string Time = @"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";

        // ---------------------------------------------------------------------------------------------------------
        // numbers

        private static string IntegerValue(JsonElement s, string path)
        {
            var (lo, hi) = IntegerBounds(s, path, integerOnly: false);
            if (lo is null && hi is null) return IntegerPattern;
            if (lo > hi) throw Error(path, "no integer lies between 'minimum' and 'maximum'");
            return IntegerRange(lo, hi);
        }

        /// <summary>
        /// Numbers: bounds are supported when they are inclusive whole numbers; the result is then an integer in range, or
        /// a decimal fraction whose integer part keeps it inside (no exponent form — a subset of the valid numbers).
        /// </summary>
        private static string NumberValue(JsonElement s, string path)
        {
            if (s.TryGetProperty("exclusiveMinimum", out _) || s.TryGetProperty("exclusiveMaximum", out _))
                throw Error(path, "'exclusiveMinimum'/'exclusiveMaximum' on a number are not supported (use 'integer', or inclusive whole-number bounds)");
            var (lo, hi) = IntegerBounds(s, path, integerOnly: true);
            if (lo is null && hi is null) return NumberPattern;
            if (lo > hi) throw Error(path, "'minimum' is above 'maximum'");
            var parts = new List<string> { IntegerRange(lo, hi) };
            // x.f with x ≥ 0 lies in [x, x+1): needs lo ≤ x and x + 1 ≤ hi.
            long posLo = Math.Max(lo ?? 0, 0);
            if (hi is null || posLo <= hi - 1) parts.Add(NonNegative(posLo, hi - 1) + @"\.[0-9]+");
            // -k.f lies in (-(k+1), -k]: needs -k ≤ hi and lo ≤ -(k+1).
            long negLo = Math.Max(hi is null ? 0 : -hi.Value, 0);
            if (lo is null || negLo <= -lo - 1) parts.Add("-" + NonNegative(negLo, lo is null ? null : -lo - 1) + @"\.[0-9]+");
            return Group(string.Join('|', parts));
        }

        private const long MaxBound = 1_000_000_000_000_000_000;

        /// <summary>The inclusive integer bounds a schema sets (draft 4's boolean exclusive* and draft 6's numeric ones).</summary>
        private static (long? Lo, long? Hi) IntegerBounds(JsonElement s, string path, bool integerOnly)
        {
            long? lo = null, hi = null;
            bool exclusiveMinFlag = s.TryGetProperty("exclusiveMinimum", out var exMin) && exMin.ValueKind == JsonValueKind.True;
            bool exclusiveMaxFlag = s.TryGetProperty("exclusiveMaximum", out var exMax) && exMax.ValueKind == JsonValueKind.True;
            if (Bound(s, "minimum", path, integerOnly) is double min) lo = exclusiveMinFlag ? (long)Math.Floor(min) + 1 : (long)Math.Ceiling(min);
            if (Bound(s, "maximum", path, integerOnly) is double max) hi = exclusiveMaxFlag ? (long)Math.Ceiling(max) - 1 : (long)Math.Floor(max);
            if (exMin.ValueKind == JsonValueKind.Number && Bound(s, "exclusiveMinimum", path, integerOnly) is double xmin)
                lo = Math.Max(lo ?? long.MinValue, (long)Math.Floor(xmin) + 1);
            if (exMax.ValueKind == JsonValueKind.Number && Bound(s, "exclusiveMaximum", path, integerOnly) is double xmax)
                hi = Math.Min(hi ?? long.MaxValue, (long)Math.Ceiling(xmax) - 1);
            return (lo, hi);
        }

        private static double? Bound(JsonElement s, string name, string path, bool integerOnly)
        {
            if (!s.TryGetProperty(name, out var v)) return null;
            if ((v.ValueKind is JsonValueKind.True or JsonValueKind.False) && name.StartsWith("exclusive", StringComparison.Ordinal)) return null;
            if (v.ValueKind != JsonValueKind.Number) throw Error(path, $"'{name}' must be a number");
            double d = v.GetDouble();
            if (Math.Abs(d) > MaxBound) throw Error(path, $"'{name}' {v.GetRawText()} is beyond the supported ±1e18");
            if (integerOnly && !double.IsInteger(d))
                throw Error(path, $"'{name}' {v.GetRawText()} on a number is not supported (only whole-number bounds)");
            return d;
        }

        /// <summary>Integers in [lo, hi] (either side open when null), in canonical form (no leading zeros, no "-0").</summary>
        internal static string IntegerRange(long? lo, long? hi)
        {
            var parts = new List<string>();
            if (lo is null || lo < 0)
            {
                long negHi = hi is null ? -1 : Math.Min(hi.Value, -1); // the negative part is [lo, negHi]
                if (lo is null || lo <= negHi) parts.Add("-" + NonNegative(-negHi, lo is null ? null : -lo.Value));
            }
            if (hi is null || hi >= 0)
            {
                long nonNegLo = lo is null ? 0 : Math.Max(lo.Value, 0);
                if (hi is null || nonNegLo <= hi) parts.Add(NonNegative(nonNegLo, hi));
            }
            return Group(string.Join('|', parts));
        }

        /// <summary>Decimal digit strings (no leading zeros) for the integers in [a, b], b = null for no upper bound; a ≥ 0.</summary>
        private static string NonNegative(long a, long? b)
        {
            var parts = new List<string>();
            int la = Digits(a);
            int lb = b is null ? la : Digits(b.Value);
            for (int length = la; length <= lb; length++)
            {
                long from = length == la ? a : Pow10(length - 1);
                long to = length == lb && b is not null ? b.Value : Pow10(length) - 1;
                parts.Add(SameLength(from.ToString(CultureInfo.InvariantCulture), to.ToString(CultureInfo.InvariantCulture)));
            }
            if (b is null) parts.Add("[1-9][0-9]{" + la + ",}"); // every longer number
            return Group(string.Join('|', parts));
        }

        private static int Digits(long v) => v.ToString(CultureInfo.InvariantCulture).Length;

        private static long Pow10(int n)
        {
            long p = 1;
            for (int i = 0; i < n; i++) p *= 10;
            return p;
        }

        /// <summary>Digit strings of one length between from and to (inclusive), digit by digit.</summary>
        private static string SameLength(string from, string to)
        {
            if (from == to) return from;
            if (from.Length == 1) return DigitClass(from[0], to[0]);
            if (from[0] == to[0]) return from[0] + SameLength(from[1..], to[1..]);
            int rest = from.Length - 1;
            string any = "[0-9]{" + rest + "}";
            bool fromLowest = from.AsSpan(1).IndexOfAnyExcept('0') < 0, toHighest = to.AsSpan(1).IndexOfAnyExcept('9') < 0;
            var parts = new List<string>();
            char midLo = fromLowest ? from[0] : (char)(from[0] + 1), midHi = toHighest ? to[0] : (char)(to[0] - 1);
            if (!fromLowest) parts.Add(from[0] + Group(SameLength(from[1..], new string('9', rest))));
            if (midLo <= midHi) parts.Add(DigitClass(midLo, midHi) + any);
            if (!toHighest) parts.Add(to[0] + Group(SameLength(new string('0', rest), to[1..])));
            return Group(string.Join('|', parts));
        }

        private static string DigitClass(char lo, char hi) => lo == hi ? lo.ToString() : $"[{lo}-{hi}]";

        // ---------------------------------------------------------------------------------------------------------
        // objects and arrays

        private string ObjectValue(JsonElement s, string path)
        {
            var required = new HashSet<string>(StringComparer.Ordinal);
            if (s.TryGetProperty("required", out var req))
            {
                if (req.ValueKind != JsonValueKind.Array) throw Error(path, "'required' must be an array of strings");
                foreach (var r in req.EnumerateArray())
                {
                    if (r.ValueKind != JsonValueKind.String) throw Error(path, "'required' must be an array of strings");
                    required.Add(r.GetString()!);
                }
            }
            var props = new List<(string Regex, bool Required)>();
            var declared = new HashSet<string>(StringComparer.Ordinal);
            if (s.TryGetProperty("properties", out var properties))
            {
                if (properties.ValueKind != JsonValueKind.Object) throw Error(path, "'properties' must be an object");
                foreach (var p in properties.EnumerateObject())
                {
                    declared.Add(p.Name);
                    bool isRequired = required.Contains(p.Name);
                    string propPath = path + "/properties/" + p.Name.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);
                    if (p.Value.ValueKind == JsonValueKind.False)
                    {
                        if (isRequired) throw Error(propPath, "a required property has the schema 'false'");
                        continue; // must be absent: we never emit it
                    }
                    props.Add((Literal(JsonLiteral.Quote(p.Name)) + ":" + Ws + Value(p.Value, propPath), isRequired));
                }
            }
            foreach (string r in required)
                if (!declared.Contains(r)) throw Error(path, $"required property \"{r}\" has no schema in 'properties'");

            if (props.Count == 0 && declared.Count == 0)
            {
                // No declared properties: a map with string keys.
                if (s.TryGetProperty("additionalProperties", out var additional) && additional.ValueKind != JsonValueKind.True)
                    return additional.ValueKind == JsonValueKind.False ? @"\{\}" : Map(Value(additional, path + "/additionalProperties"));
                return Map(AnyValue(AnyValueDepth - 1));
            }
            // Declared properties only, in declared order: valid whatever additionalProperties says.
            return @"\{" + Members(props) + @"\}";
        }

        /// <summary>
        /// The member list, with commas right whatever optional members are left out. With a required member, the
        /// optional ones before the first required carry a trailing comma and all later ones a leading comma (linear
        /// size). With none required, the list is empty or starts at whichever member comes first (quadratic in the
        /// member count, which only matters for very wide all-optional objects).
        /// </summary>
        private static string Members(List<(string Regex, bool Required)> props)
        {
            var sb = new StringBuilder();
            int first = props.FindIndex(p => p.Required);
            if (first >= 0)
            {
                for (int i = 0; i < props.Count; i++)
                {
                    var (regex, isRequired) = props[i];
                    if (i < first) sb.Append("(?:").Append(regex).Append(',').Append(Ws).Append(")?");
                    else if (i == first) sb.Append(regex);
                    else if (isRequired) sb.Append(',').Append(Ws).Append(regex);
                    else sb.Append("(?:,").Append(Ws).Append(regex).Append(")?");
                }
                return sb.ToString();
            }
            sb.Append("(?:");
            for (int i = 0; i < props.Count; i++)
            {
                if (i > 0) sb.Append('|');
                sb.Append(props[i].Regex);
                for (int j = i + 1; j < props.Count; j++) sb.Append("(?:,").Append(Ws).Append(props[j].Regex).Append(")?");
            }
            sb.Append(")?");
            return sb.ToString();
        }

        private string ArrayValue(JsonElement s, string path)
        {
            string item;
            if (s.TryGetProperty("items", out var items))
            {
                if (items.ValueKind == JsonValueKind.Array)
                    throw Error(path, "'items' as an array (tuple validation) is not supported");
                if (items.ValueKind == JsonValueKind.False) return @"\[\]";
                item = Value(items, path + "/items");
            }
            else item = AnyValue(AnyValueDepth - 1);
            int min = Count(s, "minItems", path) ?? 0;
            int? max = Count(s, "maxItems", path);
            if (min > max) throw Error(path, "'minItems' is above 'maxItems'");
            if (max == 0) return @"\[\]";
            string more = "(?:," + Ws + item + ")";
            if (min == 0) return @"\[(?:" + item + more + Quantifier(0, max - 1) + @")?\]";
            return @"\[" + item + more + Quantifier(min - 1, max - 1) + @"\]";
        }

        private static int? Count(JsonElement s, string name, string path)
        {
            if (!s.TryGetProperty(name, out var v)) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long n) || n < 0)
                throw Error(path, $"'{name}' must be a non-negative integer");
            if (n > RegexParser.MaxRepeatCount) throw Error(path, $"'{name}' {n} is larger than the supported {RegexParser.MaxRepeatCount}");
            return (int)n;
        }

        /// <summary>
        /// Any JSON value with containers nested at most <paramref name="depth"/> deep — a regular approximation of
        /// "anything" (JSON itself is not regular). Depth 0 is a scalar.
        /// </summary>
        private static string AnyValue(int depth)
        {
            const string scalar = StringPattern + "|" + NumberPattern + "|" + BooleanPattern + "|" + NullPattern;
            if (depth <= 0) return Group(scalar);
            string inner = AnyValue(depth - 1);
            string array = @"\[(?:" + inner + "(?:," + Ws + inner + @")*)?\]";
            return Group(scalar + "|" + array + "|" + Map(inner));
        }

        private static string Map(string value)
        {
            string member = StringPattern + ":" + Ws + value;
            return @"\{(?:" + member + "(?:," + Ws + member + @")*)?\}";
        }
    }

    private static string Quantifier(int min, int? max) => max switch
    {
        null => min == 0 ? "*" : "{" + min + ",}",
        _ when max == min => "{" + min + "}",
        _ => "{" + min + "," + max + "}",
    };

    private static string Group(string alternatives) => "(?:" + alternatives + ")";

    /// <summary>A JSON value as compact text (no whitespace), strings re-escaped minimally.</summary>
    internal static string CompactJson(JsonElement v)
    {
        var sb = new StringBuilder();
        Write(v, sb);
        return sb.ToString();

        static void Write(JsonElement v, StringBuilder sb)
        {
            switch (v.ValueKind)
            {
                case JsonValueKind.Object:
                    sb.Append('{');
                    bool first = true;
                    foreach (var p in v.EnumerateObject())
                    {
                        if (!first) sb.Append(',');
                        first = false;
                        sb.Append(JsonLiteral.Quote(p.Name)).Append(':');
                        Write(p.Value, sb);
                    }
                    sb.Append('}');
                    break;
                case JsonValueKind.Array:
                    sb.Append('[');
                    int i = 0;
                    foreach (var e in v.EnumerateArray())
                    {
                        if (i++ > 0) sb.Append(',');
                        Write(e, sb);
                    }
                    sb.Append(']');
                    break;
                case JsonValueKind.String:
                    JsonLiteral.Append(sb, v.GetString()!);
                    break;
                default:
                    sb.Append(v.GetRawText()); // numbers as written; true, false, null
                    break;
            }
        }
    }

    /// <summary>Regex that matches exactly <paramref name="text"/>.</summary>
    internal static string Literal(string text)
    {
        var sb = new StringBuilder(text.Length + 8);
        foreach (char c in text)
        {
            if (c is '\\' or '^' or '$' or '.' or '|' or '?' or '*' or '+' or '(' or ')' or '[' or ']' or '{' or '}')
                sb.Append('\\').Append(c);
            else if (c < 0x20 || c == 0x7F) sb.Append(CultureInfo.InvariantCulture, $"\\x{(int)c:X2}");
            else sb.Append(c);
        }
        return sb.ToString();
    }
}

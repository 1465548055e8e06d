using System.Text;
using System.Text.Json;

namespace Harpia.Tokenization;

/// <summary>A problem with a field of tokenizer.json; the loader adds the file name.</summary>
internal sealed class TokenizerFormatException(string message) : Exception(message);

/// <summary>
/// Reads the components of a Hugging Face tokenizer.json. Every unknown component type is refused by name, and
/// every missing or mistyped field is reported with its JSON path.
/// </summary>
internal static class TokenizerJson
{
    public static Exception Error(string message) => new TokenizerFormatException(message);

    public static JsonElement Required(JsonElement obj, string name, string path)
    {
        if (obj.ValueKind != JsonValueKind.Object) throw Error($"{path} must be an object");
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            throw Error($"{path}.{name} is missing");
        return value;
    }

    public static JsonElement? Optional(JsonElement obj, string name) =>
        obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public static string String(JsonElement obj, string name, string path)
    {
        var v = Required(obj, name, path);
        return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Error($"{path}.{name} must be a string");
    }

    public static string? OptionalString(JsonElement obj, string name, string path)
    {
        var v = Optional(obj, name);
        if (v is null) return null;
        return v.Value.ValueKind == JsonValueKind.String ? v.Value.GetString() : throw Error($"{path}.{name} must be a string");
    }

    public static bool Bool(JsonElement obj, string name, string path, bool fallback)
    {
        var v = Optional(obj, name);
        if (v is null) return fallback;
        return v.Value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error($"{path}.{name} must be true or false"),
        };
    }

    public static int Int(JsonElement obj, string name, string path, int? fallback = null)
    {
        var v = Optional(obj, name);
        if (v is null) return fallback ?? throw Error($"{path}.{name} is missing");
        return v.Value.ValueKind == JsonValueKind.Number && v.Value.TryGetInt32(out int i) ? i
            : throw Error($"{path}.{name} must be an integer");
    }

    public static string TypeOf(JsonElement obj, string path) => String(obj, "type", path);

    /// <summary>A Split/Replace pattern: {"String": "…"} or {"Regex": "…"}.</summary>
    public static (string? Literal, string? Regex) Pattern(JsonElement obj, string path)
    {
        var p = Required(obj, "pattern", path);
        if (p.ValueKind == JsonValueKind.Object)
        {
            if (p.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) return (s.GetString(), null);
            if (p.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String) return (null, r.GetString());
        }
        throw Error($"{path}.pattern must be {{\"String\": …}} or {{\"Regex\": …}}");
    }

    private static char SingleChar(string s, string where) =>
        s.Length == 1 ? s[0] : throw Error($"{where} must be a single character, got '{s}'");

    private static PrependScheme ParsePrependScheme(JsonElement obj, string path)
    {
        string? scheme = OptionalString(obj, "prepend_scheme", path);
        if (scheme is null) return Bool(obj, "add_prefix_space", path, true) ? PrependScheme.Always : PrependScheme.Never;
        return scheme switch
        {
            "always" => PrependScheme.Always,
            "first" => PrependScheme.First,
            "never" => PrependScheme.Never,
            _ => throw Error($"{path}.prepend_scheme '{scheme}' is not one of always, first, never"),
        };
    }

    private static System.Text.RegularExpressions.Regex? Validate(string? regex, string path)
    {
        if (regex is null) return null;
        try { return new System.Text.RegularExpressions.Regex(regex); }
        catch (ArgumentException e) { throw Error($"{path}.pattern is not a valid regular expression: {e.Message}"); }
    }

    public static Normalizer? Normalizer(JsonElement? element, string path)
    {
        if (element is not JsonElement e) return null;
        string type = TypeOf(e, path);
        switch (type)
        {
            case "Sequence":
            {
                var list = Required(e, "normalizers", path);
                if (list.ValueKind != JsonValueKind.Array) throw Error($"{path}.normalizers must be an array");
                return new SequenceNormalizer(list.EnumerateArray().Select((x, i) => Normalizer(x, $"{path}.normalizers[{i}]")!).ToList());
            }
            case "NFC": return new UnicodeNormalizer(compatibility: false, compose: true);
            case "NFD": return new UnicodeNormalizer(compatibility: false, compose: false);
            case "NFKC": return new UnicodeNormalizer(compatibility: true, compose: true);
            case "NFKD": return new UnicodeNormalizer(compatibility: true, compose: false);
            case "Lowercase": return new LowercaseNormalizer();
            case "Prepend": return new PrependNormalizer(String(e, "prepend", path));
            case "Strip": return new StripNormalizer(Bool(e, "strip_left", path, true), Bool(e, "strip_right", path, true));
            case "Replace":
            {
                var (lit, re) = Pattern(e, path);
                Validate(re, path);
                try { return new ReplaceNormalizer(lit, re, String(e, "content", path)); }
                catch (FormatException x) { throw Error($"{path}: {x.Message}"); }
            }
            default:
                throw Error($"{path}: normalizer type '{type}' is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip)");
        }
    }

    public static PreTokenizer? PreTokenizer(JsonElement? element, string path, bool nested = false)
    {
        if (element is not JsonElement e) return null;
        string type = TypeOf(e, path);
        switch (type)
        {
            case "Sequence":
            {
                var list = Required(e, "pretokenizers", path);
                if (list.ValueKind != JsonValueKind.Array) throw Error($"{path}.pretokenizers must be an array");
                var steps = list.EnumerateArray().Select((x, i) => PreTokenizer(x, $"{path}.pretokenizers[{i}]", true)!).ToList();
                for (int i = 1; i < steps.Count; i++)
                    if (steps[i].RewritesText)
                        throw Error($"{path}.pretokenizers[{i}]: a text-rewriting step (Metaspace, ByteLevel with add_prefix_space) is only supported first in a Sequence");
                return new SequencePreTokenizer(steps);
            }
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", path, true), Bool(e, "use_regex", path, true));
            case "Punctuation":
                return new PunctuationPreTokenizer(Behavior(e, path, SplitBehavior.Isolated));
            case "Digits":
                return new DigitsPreTokenizer(Bool(e, "individual_digits", path, false));
            case "WhitespaceSplit":
                return new WhitespaceSplitPreTokenizer();
            case "Split":
            {
                var (lit, re) = Pattern(e, path);
                Validate(re, path);
                try { return new SplitPreTokenizer(lit, re, Behavior(e, path, null), Bool(e, "invert", path, false)); }
                catch (FormatException x) { throw Error($"{path}: {x.Message}"); }
            }
            case "Metaspace":
                return new MetaspacePreTokenizer(SingleChar(String(e, "replacement", path), $"{path}.replacement"),
                    ParsePrependScheme(e, path), Bool(e, "split", path, true));
            default:
                throw Error($"{path}: pre_tokenizer type '{type}' is not supported (supported: Sequence, ByteLevel, Punctuation, Digits, Split, Metaspace, WhitespaceSplit)");
        }
    }

    private static SplitBehavior Behavior(JsonElement e, string path, SplitBehavior? fallback)
    {
        string? b = OptionalString(e, "behavior", path);
        if (b is null) return fallback ?? throw Error($"{path}.behavior is missing");
        try { return Tokenization.PreTokenizer.ParseBehavior(b, $"{path}.behavior"); }
        catch (FormatException x) { throw Error(x.Message); }
    }

    public static TokenDecoder? Decoder(JsonElement? element, string path)
    {
        if (element is not JsonElement e) return null;
        string type = TypeOf(e, path);
        switch (type)
        {
            case "Sequence":
            {
                var list = Required(e, "decoders", path);
                if (list.ValueKind != JsonValueKind.Array) throw Error($"{path}.decoders must be an array");
                return new SequenceDecoder(list.EnumerateArray().Select((x, i) => Decoder(x, $"{path}.decoders[{i}]")!).ToList());
            }
            case "ByteLevel": return new ByteLevelDecoder();
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "Strip":
                return new StripDecoder(SingleChar(String(e, "content", path), $"{path}.content"),
                    Int(e, "start", path, 0), Int(e, "stop", path, 0));
            case "Replace":
            {
                var (lit, re) = Pattern(e, path);
                Validate(re, path);
                if (lit is { Length: 0 }) throw Error($"{path}.pattern is an empty string");
                return new ReplaceDecoder(lit, re, String(e, "content", path));
            }
            case "Metaspace":
                return new MetaspaceDecoder(SingleChar(String(e, "replacement", path), $"{path}.replacement"), ParsePrependScheme(e, path));
            default:
                throw Error($"{path}: decoder type '{type}' is not supported (supported: Sequence, ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace)");
        }
    }

    public static PostProcessor? PostProcessor(JsonElement? element, string path, Func<string, int?> tokenToId)
    {
        if (element is not JsonElement e) return null;
        string type = TypeOf(e, path);
        switch (type)
        {
            case "Sequence":
            {
                var list = Required(e, "processors", path);
                if (list.ValueKind != JsonValueKind.Array) throw Error($"{path}.processors must be an array");
                return new SequencePostProcessor(list.EnumerateArray().Select((x, i) => PostProcessor(x, $"{path}.processors[{i}]", tokenToId)!).ToList());
            }
            case "ByteLevel": return new NoOpPostProcessor();
            case "TemplateProcessing":
            {
                var single = Required(e, "single", path);
                if (single.ValueKind != JsonValueKind.Array) throw Error($"{path}.single must be an array");
                var specials = Optional(e, "special_tokens");
                var pieces = new List<int[]?>();
                int index = 0;
                foreach (var item in single.EnumerateArray())
                {
                    string where = $"{path}.single[{index++}]";
                    if (item.TryGetProperty("Sequence", out _)) { pieces.Add(null); continue; }
                    if (!item.TryGetProperty("SpecialToken", out var st)) throw Error($"{where} must be a Sequence or a SpecialToken");
                    string name = String(st, "id", where + ".SpecialToken");
                    if (specials is JsonElement map && map.TryGetProperty(name, out var spec))
                    {
                        var ids = Required(spec, "ids", $"{path}.special_tokens.{name}");
                        pieces.Add(ids.EnumerateArray().Select(x => x.TryGetInt32(out int v) ? v
                            : throw Error($"{path}.special_tokens.{name}.ids must hold integers")).ToArray());
                    }
                    else pieces.Add([tokenToId(name) ?? throw Error($"{where}: special token '{name}' is not in the vocabulary")]);
                }
                return new TemplatePostProcessor(pieces);
            }
            case "BertProcessing" or "RobertaProcessing":
            {
                int Id(string field)
                {
                    var pair = Required(e, field, path);
                    if (pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2 || !pair[1].TryGetInt32(out int id))
                        throw Error($"{path}.{field} must be [token, id]");
                    return id;
                }
                return new TemplatePostProcessor([[Id("cls")], null, [Id("sep")]]);
            }
            default:
                throw Error($"{path}: post_processor type '{type}' is not supported (supported: Sequence, ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing)");
        }
    }
}

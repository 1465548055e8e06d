using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Formats;

namespace Harpia.Models;

/// <summary>
/// Typed reads of a Hugging Face <c>config.json</c> for every architecture's config parser: absent or null keys are
/// null, a value of the wrong JSON type is an <see cref="InvalidModelFileException"/> naming the key.
/// </summary>
internal static class ConfigJson
{
    public static Exception Missing(string source, string key) => new InvalidModelFileException(source, $"config key '{key}' is missing");

    public static string? Str(JsonObject c, string key) =>
        c[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    public static bool? Bool(JsonObject c, string key) =>
        c[key] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;

    public static double? Num(JsonObject c, string source, string key)
    {
        if (c[key] is not JsonNode n || n.GetValueKind() == JsonValueKind.Null) return null;
        if (n is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
            return double.Parse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);
        throw new InvalidModelFileException(source, $"config key '{key}' is not a number");
    }

    /// <summary>The first of <paramref name="keys"/> present (configs name some values several ways), as an int.</summary>
    public static int? Int(JsonObject c, string source, params string[] keys)
    {
        foreach (string key in keys)
        {
            double? d = Num(c, source, key);
            if (d is null) continue;
            if (d != Math.Floor(d.Value)) throw new InvalidModelFileException(source, $"config key '{key}' = {d} is not an integer");
            if (d < int.MinValue || d > int.MaxValue)
                throw new InvalidModelFileException(source, $"{key} = {d:R} is too large for a 32-bit integer");
            return (int)d.Value;
        }
        return null;
    }
}

using System.Text.Json;

namespace Harpia.Planning;

public enum HardwareKind { Purchase, Cloud }

/// <summary>How a model is spread over several devices.</summary>
public enum SplitMode
{
    /// <summary>One device.</summary>
    Single,
    /// <summary>Tensor parallel: every device reads its slice of every layer at once (bandwidths add up).</summary>
    Tensor,
    /// <summary>Layer (pipeline) split: a token visits the devices in turn (one device's bandwidth at a time).</summary>
    Pipeline,
}

/// <summary>A memory pool: its size in bytes (from the vendor's GB or GiB), bandwidth and the compute reading from it.</summary>
public sealed record MemoryTier(string Name, double Size, string Unit, double BandwidthGBs, double Bf16Tflops)
{
    public double Bytes => Unit == "GiB" ? Size * (1L << 30) : Size * 1e9;
}

public sealed record CloudPricing(double OnDemandUsdPerHour, double Commit1YDiscount, double Commit3YDiscount,
    double SpotDiscountMin, double SpotDiscountMax);

/// <summary>One catalog entry. The first tier is per unit (one per device); later tiers are shared (offload).</summary>
public sealed record HardwareEntry
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required HardwareKind Kind { get; init; }
    public required int Units { get; init; }
    public required SplitMode Split { get; init; }
    public required IReadOnlyList<MemoryTier> Tiers { get; init; }
    public double RuntimeOverheadGib { get; init; }
    public double ReservedGB { get; init; }
    public double? PriceBrl { get; init; }
    public double? PriceUsd { get; init; }
    public CloudPricing? Cloud { get; init; }
    public required string PriceSource { get; init; }
    public required string PriceDate { get; init; }
    public double PowerW { get; init; }
    public double IdleW { get; init; }
    public string? Region { get; init; }
    public IReadOnlyList<string> UnavailableRegions { get; init; } = [];
    public string? Notes { get; init; }

    /// <summary>Bytes the device(s) offer in total: per-unit fast tier × units + shared tiers.</summary>
    public double TotalBytes => Tiers[0].Bytes * Units + Tiers.Skip(1).Sum(t => t.Bytes);

    /// <summary>Bytes the runtime and the OS take before any model byte: CUDA context per device, OS reserve per box.</summary>
    public double OverheadBytes => RuntimeOverheadGib * (1L << 30) * Units + ReservedGB * 1e9 * (Split == SplitMode.Pipeline ? Units : 1);
}

/// <summary>The hardware catalog: embedded <c>catalog.json</c>, or a user's file with the same schema.</summary>
public sealed class HardwareCatalog
{
    public IReadOnlyList<HardwareEntry> Entries { get; }
    public string Source { get; }

    private HardwareCatalog(IReadOnlyList<HardwareEntry> entries, string source) { Entries = entries; Source = source; }

    public static HardwareCatalog Default() => Parse(EmbeddedData.ReadText("catalog.json"), "built-in catalog.json");

    public static HardwareCatalog Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new HarpiaException($"catalog {path}: cannot read: {e.Message}"); }
        return Parse(text, path);
    }

    public static HardwareCatalog Parse(string json, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new HarpiaException($"catalog {source}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("entries", out var entries) || entries.ValueKind != JsonValueKind.Array)
                throw new HarpiaException($"catalog {source}: expected an object with an 'entries' array");
            var list = new List<HardwareEntry>();
            int index = 0;
            foreach (var e in entries.EnumerateArray())
            {
                list.Add(ParseEntry(e, $"catalog {source}: entry {index}"));
                index++;
            }
            if (list.Count == 0) throw new HarpiaException($"catalog {source}: 'entries' is empty");
            var dup = list.GroupBy(x => x.Id).FirstOrDefault(g => g.Count() > 1);
            if (dup is not null) throw new HarpiaException($"catalog {source}: id '{dup.Key}' appears more than once");
            return new HardwareCatalog(list, source);
        }
    }

    private static HardwareEntry ParseEntry(JsonElement e, string where)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new HarpiaException($"{where}: expected an object");
        string id = Str(e, "id", where);
        where = $"{where} ('{id}')";
        var kind = Str(e, "kind", where) switch
        {
            "purchase" => HardwareKind.Purchase,
            "cloud" => HardwareKind.Cloud,
            var k => throw new HarpiaException($"{where}: field 'kind' is '{k}', expected 'purchase' or 'cloud'"),
        };
        var split = (OptStr(e, "split", where) ?? "single") switch
        {
            "single" => SplitMode.Single,
            "tensor" => SplitMode.Tensor,
            "pipeline" => SplitMode.Pipeline,
            var s => throw new HarpiaException($"{where}: field 'split' is '{s}', expected single, tensor or pipeline"),
        };
        if (!e.TryGetProperty("tiers", out var tiersEl) || tiersEl.ValueKind != JsonValueKind.Array || tiersEl.GetArrayLength() == 0)
            throw new HarpiaException($"{where}: missing field 'tiers' (a non-empty array of memory pools)");
        var tiers = new List<MemoryTier>();
        int ti = 0;
        foreach (var t in tiersEl.EnumerateArray())
        {
            string tw = $"{where}: tiers[{ti++}]";
            if (t.ValueKind != JsonValueKind.Object) throw new HarpiaException($"{tw}: expected an object");
            string unit = Str(t, "unit", tw);
            if (unit is not ("GB" or "GiB")) throw new HarpiaException($"{tw}: field 'unit' is '{unit}', expected GB or GiB");
            tiers.Add(new MemoryTier(OptStr(t, "name", tw) ?? $"tier {ti}", Positive(t, "size", tw), unit,
                Positive(t, "bandwidth_gb_s", tw), Positive(t, "bf16_tflops", tw)));
        }
        CloudPricing? cloud = null;
        double? priceBrl = OptNonNegative(e, "price_brl", where), priceUsd = OptNonNegative(e, "price_usd", where);
        if (kind == HardwareKind.Cloud)
        {
            if (!e.TryGetProperty("cloud", out var c) || c.ValueKind != JsonValueKind.Object)
                throw new HarpiaException($"{where}: cloud entry needs a 'cloud' object with on_demand_usd_per_hour");
            string cw = $"{where}: cloud";
            cloud = new CloudPricing(Positive(c, "on_demand_usd_per_hour", cw), Fraction(c, "commit_1y_discount", cw),
                Fraction(c, "commit_3y_discount", cw), Fraction(c, "spot_discount_min", cw), Fraction(c, "spot_discount_max", cw));
            if (cloud.SpotDiscountMin > cloud.SpotDiscountMax)
                throw new HarpiaException($"{cw}: spot_discount_min is larger than spot_discount_max");
        }
        else if (priceBrl is null && priceUsd is null)
            throw new HarpiaException($"{where}: purchase entry needs 'price_brl' or 'price_usd'");
        int units = (int)Positive(e, "units", where);
        if (units != Positive(e, "units", where) || units > 1024) throw new HarpiaException($"{where}: field 'units' must be a whole number from 1 to 1024");
        var unavailable = new List<string>();
        if (e.TryGetProperty("unavailable_regions", out var ur))
        {
            if (ur.ValueKind != JsonValueKind.Array) throw new HarpiaException($"{where}: field 'unavailable_regions' must be an array of strings");
            foreach (var r in ur.EnumerateArray())
                unavailable.Add(r.ValueKind == JsonValueKind.String ? r.GetString()! : throw new HarpiaException($"{where}: field 'unavailable_regions' must be an array of strings"));
        }
        return new HardwareEntry
        {
            Id = id, Name = Str(e, "name", where), Kind = kind, Units = units, Split = split, Tiers = tiers,
            RuntimeOverheadGib = OptNonNegative(e, "runtime_overhead_gib", where) ?? 0,
            ReservedGB = OptNonNegative(e, "reserved_gb", where) ?? 0,
            PriceBrl = priceBrl, PriceUsd = priceUsd, Cloud = cloud,
            PriceSource = Str(e, "price_source", where), PriceDate = Str(e, "price_date", where),
            PowerW = OptNonNegative(e, "power_w", where) ?? 0, IdleW = OptNonNegative(e, "idle_w", where) ?? 0,
            Region = OptStr(e, "region", where), UnavailableRegions = unavailable, Notes = OptStr(e, "notes", where),
        };
    }

    private static string Str(JsonElement e, string key, string where) =>
        OptStr(e, key, where) is { Length: > 0 } s ? s : throw new HarpiaException($"{where}: missing field '{key}'");

    private static string? OptStr(JsonElement e, string key, string where)
    {
        if (!e.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new HarpiaException($"{where}: field '{key}' must be a string");
    }

    private static double? OptNumber(JsonElement e, string key, string where)
    {
        if (!e.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d))
            throw new HarpiaException($"{where}: field '{key}' must be a number");
        return d;
    }

    private static double Positive(JsonElement e, string key, string where)
    {
        double d = OptNumber(e, key, where) ?? throw new HarpiaException($"{where}: missing field '{key}'");
        return d > 0 ? d : throw new HarpiaException($"{where}: field '{key}' must be positive (got {d})");
    }

    private static double? OptNonNegative(JsonElement e, string key, string where)
    {
        double? d = OptNumber(e, key, where);
        return d is null or >= 0 ? d : throw new HarpiaException($"{where}: field '{key}' must not be negative (got {d})");
    }

    private static double Fraction(JsonElement e, string key, string where)
    {
        double d = OptNumber(e, key, where) ?? 0;
        return d is >= 0 and < 1 ? d : throw new HarpiaException($"{where}: field '{key}' must be a fraction in [0, 1) (got {d})");
    }
}

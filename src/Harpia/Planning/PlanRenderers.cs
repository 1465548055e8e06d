using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Harpia.Planning;

/// <summary>Text renderings of a <see cref="PlanResult"/>: markdown and JSON. (The CLI renders the terminal table and chart.)</summary>
public static class PlanRenderers
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Hardware options to show in summary tables: every option with the most precise precision that fits it.</summary>
    public static IEnumerable<PlanOption> SummaryRows(PlanResult plan) => plan.Options
        .GroupBy(o => o.Hardware)
        .Select(g => g.Where(o => o.Fits).OrderByDescending(o => o.BitsPerWeight).FirstOrDefault()
                     ?? g.OrderBy(o => o.TotalGb).First());

    /// <summary>Distinct memory configurations (cloud pricing variants share one), in catalog order.</summary>
    public static IEnumerable<PlanOption> MemoryColumns(PlanResult plan) =>
        plan.Options.GroupBy(o => o.HardwareId).Select(g => g.First());

    public static string UsageHeader(double hpw) => hpw >= 168 ? "per month (continuous)" : $"per month ({hpw.ToString("0.#", Inv)} h/wk)";

    public static string MonthlyCell(PlanRequest r, UsageCost u) =>
        u.MonthlyBrlLow < u.MonthlyBrl - 0.5 ? $"{r.Money(u.MonthlyBrlLow)}–{r.Money(u.MonthlyBrl)}" : r.Money(u.MonthlyBrl);

    /// <summary>Unit of the cost-per-million-tokens column: "R$/M tok" or "US$/M tok".</summary>
    public static string PerMillionUnit(PlanRequest r) => (r.Currency == "USD" ? "US$" : "R$") + "/M tok";

    /// <summary>Cost per million generated tokens at the primary usage (purchases amortized over the horizon), or "-".</summary>
    public static string PerMillionCell(PlanRequest r, PlanOption o) =>
        o.Usage[0].CostPerMillionTokensBrl is double cpm ? r.Money2(cpm) : "-";

    /// <summary>
    /// The month a purchase becomes cheaper than renting the same precision (primary usage): "1.4 mo"; "never" when the
    /// cheapest rental costs less a month; "-" for rentals, options that do not fit and precisions no rental runs.
    /// </summary>
    public static string BreakEvenCell(PlanOption o)
    {
        if (o.Kind != HardwareKind.Purchase || !o.Fits) return "-";
        var u = o.Usage[0];
        if (u.BreakEvenMonth is double m && double.IsFinite(m)) return (m < 100 ? m.ToString("0.#", Inv) : m.ToString("N0", Inv)) + " mo";
        return u.BreakEvenVs is null ? "-" : "never";
    }

    /// <summary>GB in a table column: one decimal (108.4), or two significant digits under 1 GB (0.0019).</summary>
    public static string GbCell(double gb) => gb >= 1 ? gb.ToString("0.0", Inv) : Planner.Gb(gb);

    public static string HardwareName(PlanOption o) => o.RegionNote is null ? o.Hardware : $"{o.Hardware} [{o.Region}]";

    public static string Markdown(PlanResult plan)
    {
        var r = plan.Request;
        var sb = new StringBuilder();
        sb.Append(Inv, $"# Deployment plan: {plan.Model}\n\n");
        sb.Append(Inv, $"{plan.Parameters:N0} parameters ({Planner.CountShort(plan.Parameters)}). Budget {r.Money(r.BudgetBrl)}; context {r.Context:N0} tokens × {r.Concurrent} sequence(s), KV cache {r.KvDtype} = {plan.KvCacheGb:0.###} GB; {r.UsdBrl.ToString("0.00", Inv)} BRL/USD. GB = 1e9 bytes.\n\n");

        sb.Append("## Recommendation\n\n");
        foreach (var line in plan.Recommendation) sb.Append("- ").Append(line).Append('\n');

        sb.Append("\n## Weights per precision\n\n| precision | bits/weight | weights (GB) | " +
                  string.Join(" | ", MemoryColumns(plan).Select(c => Escape(c.Hardware.Split(',')[0]))) + " |\n");
        sb.Append("| --- | ---: | ---: |" + string.Concat(MemoryColumns(plan).Select(_ => " :---: |")) + "\n");
        foreach (var p in plan.Precisions)
        {
            sb.Append(Inv, $"| {p.Label} | {p.BitsPerWeight:0.000} | {GbCell(p.WeightsGb)} |");
            foreach (var c in MemoryColumns(plan))
            {
                var o = plan.Options.First(x => x.HardwareId == c.HardwareId && x.Precision == p.Id);
                sb.Append(o.Fits ? string.Create(Inv, $" fits ({o.HeadroomGb:0} GB free) |") : string.Create(Inv, $" no ({o.TotalGb:0} > {o.AvailableGb:0}) |"));
            }
            sb.Append('\n');
        }

        sb.Append("\n## Options (most precise precision that fits each)\n\n");
        string primary = Planner.Hours(r.HoursPerWeek[0]);
        sb.Append("| hardware | pricing | precision | need / available (GB) | decode tok/s (est.) | prefill tok/s (est.) | up front | " +
                  string.Join(" | ", r.HoursPerWeek.Select(UsageHeader)) + " | per million tokens (est.) | break-even (buy vs rent) | verdict |\n");
        sb.Append("| --- | --- | --- | ---: | ---: | ---: | ---: |" + string.Concat(r.HoursPerWeek.Select(_ => " ---: |")) + " ---: | ---: | --- |\n");
        foreach (var o in SummaryRows(plan))
        {
            sb.Append(Inv, $"| {Escape(HardwareName(o))} | {o.Pricing} | {(o.Fits ? o.PrecisionLabel : "none")} | {o.TotalGb:0.0} / {o.AvailableGb:0.0} | {Planner.Speed(o.DecodeTokensPerSecEstimate)} | {Planner.Speed(o.PrefillTokensPerSecEstimate)} | {r.Money(o.UpfrontBrl)} |");
            foreach (var u in o.Usage) sb.Append(' ').Append(MonthlyCell(r, u)).Append(" |");
            // Cost per million generated tokens at the primary usage (purchases amortized over the horizon).
            sb.Append(' ').Append(PerMillionCell(r, o)).Append(" |");
            string breakEven = BreakEvenCell(o);
            if (o.Usage[0].BreakEvenVs is { } vs && breakEven != "-") breakEven += $" vs {vs}";
            sb.Append(' ').Append(Escape(breakEven)).Append(" |");
            sb.Append(' ').Append(Escape(o.Verdict)).Append(" |\n");
        }
        sb.Append(Inv, $"\nSpeeds are upper-bound ESTIMATES (decode from memory bandwidth, prefill from peak BF16 compute). Per million tokens: cost per million generated tokens at {primary} and the decode estimate, purchases amortized over {r.Months} months. Break-even: the month a purchase's total cost drops below the cheapest rental running the same precision at {primary} (\"never\" when renting is cheaper every month).\n");

        sb.Append("\n## Device maps (what `harpia serve` would place where, for the rows above)\n\n");
        foreach (var o in SummaryRows(plan))
            sb.Append("- ").Append(Escape(HardwareName(o))).Append(" (").Append(o.PrecisionLabel).Append("): ").Append(DeviceMapCell(o)).Append('\n');

        sb.Append("\n## Notes\n\n");
        foreach (var n in plan.Notes) sb.Append("- ").Append(n).Append('\n');
        foreach (var o in MemoryColumns(plan).Where(o => o.RegionNote is not null))
            sb.Append("- ").Append(o.Hardware.Split(',')[0]).Append(": ").Append(o.RegionNote).Append('\n');
        sb.Append("- Catalog: ").Append(r.Catalog.Source).Append(". Sources and price dates:\n");
        foreach (var e in r.Catalog.Entries) sb.Append("  - ").Append(e.Name).Append(" (").Append(e.PriceDate).Append("): ").Append(e.PriceSource).Append('\n');
        return sb.ToString();
    }

    /// <summary>The option's device map in one line, or why the runtime would refuse it.</summary>
    public static string DeviceMapCell(PlanOption o) => o.DeviceMap is { } map
        ? map.Summary() + (map.UsesDisk ? " — layers on disk are read from the file each pass (slow)" : "")
        : "no map: " + o.DeviceMapError;

    private static string Escape(string s) => s.Replace("|", "\\|", StringComparison.Ordinal);

    public static string Json(PlanResult plan)
    {
        var r = plan.Request;
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("model", plan.Model);
            w.WriteNumber("parameters", plan.Parameters);
            w.WriteNumber("budget_brl", r.BudgetBrl);
            w.WriteString("currency", r.Currency);
            w.WriteNumber("usd_brl", r.UsdBrl);
            w.WriteNumber("context", r.Context);
            w.WriteNumber("concurrent", r.Concurrent);
            w.WriteString("kv_dtype", r.KvDtype);
            w.WriteNumber("kv_cache_gb", Round(plan.KvCacheGb, 4));
            w.WriteNumber("months", r.Months);
            w.WriteStartArray("hours_per_week");
            foreach (var h in r.HoursPerWeek) w.WriteNumberValue(h);
            w.WriteEndArray();
            w.WriteString("units", "GB = 1e9 bytes; money in BRL");
            w.WriteString("recommendation", string.Join(" ", plan.Recommendation));
            w.WriteStartArray("recommendation_lines");
            foreach (var l in plan.Recommendation) w.WriteStringValue(l);
            w.WriteEndArray();
            if (plan.Hybrid is { } h2)
            {
                w.WriteStartObject("hybrid");
                w.WriteString("purchase", h2.PurchaseHardware);
                w.WriteString("purchase_precision", h2.PurchasePrecision);
                w.WriteString("cloud", h2.CloudHardware);
                w.WriteString("cloud_precision", h2.CloudPrecision);
                w.WriteNumber("cloud_hours_per_week", h2.CloudHoursPerWeek);
                w.WriteNumber("upfront_brl", Round(h2.UpfrontBrl, 2));
                w.WriteNumber("monthly_brl_low", Round(h2.MonthlyBrlLow, 2));
                w.WriteNumber("monthly_brl_high", Round(h2.MonthlyBrlHigh, 2));
                w.WriteNumber("horizon_cost_brl", Round(h2.HorizonCostBrl, 2));
                w.WriteBoolean("within_budget", h2.WithinBudget);
                WriteNullable(w, "budget_months", h2.BudgetMonths, 1);
                w.WriteEndObject();
            }
            w.WriteStartArray("precisions");
            foreach (var p in plan.Precisions)
            {
                w.WriteStartObject();
                w.WriteString("id", p.Id);
                w.WriteString("label", p.Label);
                w.WriteNumber("bits_per_weight", Round(p.BitsPerWeight, 4));
                w.WriteNumber("weights_gb", Round(p.WeightsGb, 3));
                w.WriteString("method", p.Method);
                w.WriteStartObject("bytes_by_type");
                foreach (var (k, v) in p.BytesByType) w.WriteNumber(k, v);
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("options");
            foreach (var o in plan.Options)
            {
                w.WriteStartObject();
                w.WriteString("hardware", o.Hardware);
                w.WriteString("hardware_id", o.HardwareId);
                w.WriteString("kind", o.Kind == HardwareKind.Purchase ? "purchase" : "cloud");
                w.WriteString("pricing", o.Pricing);
                if (o.Region is null) w.WriteNull("region"); else w.WriteString("region", o.Region);
                if (o.RegionNote is null) w.WriteNull("region_note"); else w.WriteString("region_note", o.RegionNote);
                w.WriteString("precision", o.Precision);
                w.WriteNumber("bits_per_weight", Round(o.BitsPerWeight, 4));
                w.WriteNumber("weights_gb", Round(o.WeightsGb, 3));
                w.WriteNumber("kv_cache_gb", Round(o.KvCacheGb, 4));
                w.WriteNumber("workspace_gb", Round(o.WorkspaceGb, 4));
                w.WriteNumber("overhead_gb", Round(o.OverheadGb, 3));
                w.WriteNumber("total_gb", Round(o.TotalGb, 3));
                w.WriteNumber("available_gb", Round(o.AvailableGb, 3));
                w.WriteNumber("headroom_gb", Round(o.HeadroomGb, 3));
                w.WriteBoolean("fits", o.Fits);
                w.WriteNumber("offload_fraction", Round(o.OffloadFraction, 4));
                w.WriteNumber("upfront_brl", Round(o.UpfrontBrl, 2));
                w.WriteNumber("monthly_brl", Round(o.MonthlyBrl, 2));
                w.WriteNumber("upfront_usd", Round(o.UpfrontBrl / r.UsdBrl, 2));
                w.WriteNumber("monthly_usd", Round(o.MonthlyBrl / r.UsdBrl, 2));
                w.WriteBoolean("within_budget", o.WithinBudget);
                w.WriteBoolean("cost_within_budget", o.CostWithinBudget);
                WriteNullable(w, "break_even_month", o.BreakEvenMonth, 1);
                WriteNullable(w, "decode_tokens_per_s_estimate", o.DecodeTokensPerSecEstimate, 3);
                WriteNullable(w, "decode_aggregate_tokens_per_s_estimate", o.DecodeAggregateTokensPerSecEstimate, 3);
                WriteNullable(w, "prefill_tokens_per_s_estimate", o.PrefillTokensPerSecEstimate, 1);
                w.WriteString("verdict", o.Verdict);
                // The device map the runtime would build here (one code path: Placement.DeviceMapper).
                if (o.DeviceMap is { } map) { w.WritePropertyName("device_map"); map.WriteJson(w); }
                else { w.WriteStartObject("device_map"); w.WriteString("error", o.DeviceMapError); w.WriteEndObject(); }
                w.WriteStartArray("usage");
                foreach (var u in o.Usage)
                {
                    w.WriteStartObject();
                    w.WriteNumber("hours_per_week", u.HoursPerWeek);
                    w.WriteNumber("hours_per_month", Round(u.HoursPerMonth, 2));
                    w.WriteNumber("monthly_brl", Round(u.MonthlyBrl, 2));
                    w.WriteNumber("monthly_brl_low", Round(u.MonthlyBrlLow, 2));
                    WriteNullable(w, "cost_per_million_tokens_brl", u.CostPerMillionTokensBrl, 2);
                    w.WriteNumber("horizon_cost_brl", Round(u.HorizonCostBrl, 2));
                    w.WriteBoolean("within_budget", u.WithinBudget);
                    w.WriteBoolean("cost_within_budget", u.CostWithinBudget);
                    WriteNullable(w, "budget_months", u.BudgetMonths, 2);
                    WriteNullable(w, "break_even_month", u.BreakEvenMonth, 1);
                    if (u.BreakEvenVs is null) w.WriteNull("break_even_vs"); else w.WriteString("break_even_vs", u.BreakEvenVs);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("notes");
            foreach (var n in plan.Notes) w.WriteStringValue(n);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    private static double Round(double x, int digits) => Math.Round(x, digits, MidpointRounding.AwayFromZero);

    private static void WriteNullable(Utf8JsonWriter w, string name, double? value, int digits)
    {
        if (value is double v && double.IsFinite(v)) w.WriteNumber(name, Round(v, digits));
        else w.WriteNull(name);
    }
}

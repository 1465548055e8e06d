using System.Globalization;

namespace Harpia.Planning;

/// <summary>What to plan for. Defaults answer the guide's question (R$40,000, continuous and 10 h/week use).</summary>
public sealed record PlanRequest
{
    public required ModelSpec Model { get; init; }
    /// <summary>Formats to plan; by default <see cref="Precision.For"/> the model (all, or a quantized file's own).</summary>
    public IReadOnlyList<Precision> Precisions { get => _precisions ?? Precision.For(Model); init => _precisions = value; }
    private readonly IReadOnlyList<Precision>? _precisions;
    public HardwareCatalog Catalog { get; init; } = HardwareCatalog.Default();
    /// <summary>Tokens of context per sequence that the KV cache must hold.</summary>
    public int Context { get; init; } = 2048;
    /// <summary>Sequences decoded at once (batch).</summary>
    public int Concurrent { get; init; } = 1;
    public string KvDtype { get; init; } = "f16";
    public double BudgetBrl { get; init; } = 40_000;
    public double UsdBrl { get; init; } = 5.6;
    /// <summary>Usage patterns; the first is the primary one (budget verdict). 168 = continuous.</summary>
    public IReadOnlyList<double> HoursPerWeek { get; init; } = [168, 10];
    /// <summary>Months over which costs are compared with the budget (and purchases amortized per token).</summary>
    public int Months { get; init; } = 12;
    public double KwhBrl { get; init; } = 0.85;
    /// <summary>Where the user is: options unavailable there are flagged.</summary>
    public string UserRegion { get; init; } = "southamerica-east1";
    /// <summary>Currency of the rendered text ("BRL" or "USD"); the numbers in the result are always BRL.</summary>
    public string Currency { get; init; } = "BRL";

    /// <summary>Formats a BRL amount in the display currency (R$ or US$ at <see cref="UsdBrl"/>).</summary>
    public string Money(double brl) => Currency == "USD"
        ? "US$" + (brl / UsdBrl).ToString("N0", CultureInfo.InvariantCulture)
        : "R$" + brl.ToString("N0", CultureInfo.InvariantCulture);

    /// <summary>As <see cref="Money"/>, with cents (for small unit costs).</summary>
    public string Money2(double brl) => Currency == "USD"
        ? "US$" + (brl / UsdBrl).ToString("N2", CultureInfo.InvariantCulture)
        : "R$" + brl.ToString("N2", CultureInfo.InvariantCulture);
}

/// <summary>
/// Costs of one option at one usage pattern. <see cref="CostWithinBudget"/> is the cost verdict alone (up front and the
/// cost over the horizon both within the budget); <see cref="WithinBudget"/> also needs the model to fit: "this option
/// runs this model at this precision within the budget".
/// </summary>
public sealed record UsageCost(
    double HoursPerWeek, double HoursPerMonth, double MonthlyBrl, double MonthlyBrlLow,
    double? CostPerMillionTokensBrl, double HorizonCostBrl, bool Fits, bool CostWithinBudget, double? BudgetMonths,
    double? BreakEvenMonth, string? BreakEvenVs)
{
    public bool WithinBudget => Fits && CostWithinBudget;
}

/// <summary>One hardware option (with its pricing) × one precision.</summary>
public sealed record PlanOption
{
    public required string HardwareId { get; init; }
    public required string Hardware { get; init; }
    public required HardwareKind Kind { get; init; }
    /// <summary>purchase, on-demand, commit-1y, commit-3y or spot.</summary>
    public required string Pricing { get; init; }
    public string? Region { get; init; }
    public string? RegionNote { get; init; }
    public required string Precision { get; init; }
    public required string PrecisionLabel { get; init; }
    public double BitsPerWeight { get; init; }
    public double WeightsGb { get; init; }
    public double KvCacheGb { get; init; }
    public double WorkspaceGb { get; init; }
    public double OverheadGb { get; init; }
    public double TotalGb { get; init; }
    public double AvailableGb { get; init; }
    public double HeadroomGb => AvailableGb - TotalGb;
    public bool Fits { get; init; }
    /// <summary>Per-sequence decode tokens/s, an upper bound from memory bandwidth (and compute); null when it does not fit.</summary>
    public double? DecodeTokensPerSecEstimate { get; init; }
    public double? DecodeAggregateTokensPerSecEstimate { get; init; }
    public double? PrefillTokensPerSecEstimate { get; init; }
    /// <summary>Share of the resident bytes that lands outside the fastest memory (offload).</summary>
    public double OffloadFraction { get; init; }
    public double UpfrontBrl { get; init; }
    public required IReadOnlyList<UsageCost> Usage { get; init; }
    public double MonthlyBrl => Usage[0].MonthlyBrl;
    /// <summary>Runs this model at this precision within the budget at the primary usage pattern: it fits and its cost is within.</summary>
    public bool WithinBudget => Fits && CostWithinBudget;
    /// <summary>The cost verdict alone at the primary usage pattern (true even when the model does not fit).</summary>
    public bool CostWithinBudget => Usage[0].CostWithinBudget;
    public double? BreakEvenMonth => Usage[0].BreakEvenMonth;
    public string Verdict { get; init; } = "";
    /// <summary>The device map the runtime would build for this hardware and precision (<see cref="PlanDeviceMaps"/>); null when it refuses (<see cref="DeviceMapError"/>).</summary>
    public Placement.DeviceMap? DeviceMap { get; init; }
    public string? DeviceMapError { get; init; }
}

public sealed record PrecisionSummary(string Id, string Label, double BitsPerWeight, double WeightsGb,
    IReadOnlyDictionary<string, long> BytesByType, string Method);

/// <summary>One purchase for everyday use plus rented machines for the occasional heavier run.</summary>
public sealed record HybridPlan(
    string PurchaseHardware, string PurchasePrecision, string CloudHardware, string CloudPrecision, double CloudHoursPerWeek,
    double UpfrontBrl, double MonthlyBrlLow, double MonthlyBrlHigh, double HorizonCostBrl, bool WithinBudget, double? BudgetMonths);

public sealed record PlanResult
{
    public required PlanRequest Request { get; init; }
    public required string Model { get; init; }
    public required long Parameters { get; init; }
    public required double KvCacheGb { get; init; }
    public required IReadOnlyList<PrecisionSummary> Precisions { get; init; }
    public required IReadOnlyList<PlanOption> Options { get; init; }
    public required IReadOnlyList<string> Recommendation { get; init; }
    public HybridPlan? Hybrid { get; init; }
    public required IReadOnlyList<string> Notes { get; init; }
}

/// <summary>
/// The deployment planner: memory need per precision, fit per hardware option, bandwidth-bound speed estimates,
/// costs for usage patterns, verdicts against a budget and a recommendation. Pure computation, no I/O.
/// </summary>
public static class Planner
{
    public const double HoursPerMonth = 730; // cloud billing month (8,760 h / 12)
    private const double GB = 1e9;
    /// <summary>Prefill is done in chunks of this many tokens; the workspace holds one chunk's activations.</summary>
    public const int PrefillChunk = 512;

    public static double KvBytesPerElement(string dtype) => dtype.Trim().ToLowerInvariant() switch
    {
        "f32" or "fp32" => 4,
        "f16" or "fp16" or "bf16" => 2,
        "q8_0" => 34.0 / 32,
        "int8" or "fp8" or "f8" => 1,
        "q4_0" => 18.0 / 32,
        _ => throw new HarpiaException($"unknown KV-cache dtype '{dtype}': use f32, f16, bf16, fp8, q8_0 or q4_0"),
    };

    public static PlanResult Plan(PlanRequest r)
    {
        Validate(r);
        var m = r.Model;
        long parameters = m.ParameterCount;
        double kvBpe = KvBytesPerElement(r.KvDtype);
        double kvBytes = m.KvCacheBytes(r.Context, r.Concurrent, kvBpe);
        double kvPerSeqBytes = m.KvCacheBytes(r.Context, 1, kvBpe);
        double workspaceBytes = (double)r.Concurrent * Math.Min(r.Context, PrefillChunk) * (m.FfnHidden + m.QkvWidth + m.Vocab) * 4;

        var summaries = r.Precisions.Select(p =>
        {
            var w = p.Weights(m);
            return new PrecisionSummary(p.Id, p.Label, w.BitsPerWeight(parameters), w.Bytes / GB, w.BytesByType, p.Method);
        }).ToList();

        var options = new List<PlanOption>();
        foreach (var hw in r.Catalog.Entries)
        {
            // One map per hardware and precision (pricing variants share it).
            var maps = r.Precisions.ToDictionary(p => p.Id, p => PlanDeviceMaps.For(r, hw, p));
            foreach (var (pricing, label) in PricingVariants(hw))
                foreach (var p in r.Precisions)
                    options.Add(Evaluate(r, hw, pricing, label, p, parameters, kvBytes, kvPerSeqBytes, workspaceBytes)
                        with { DeviceMap = maps[p.Id].Map, DeviceMapError = maps[p.Id].Error });
        }

        options = AddBreakEven(r, options);
        options = options.Select(o => o with { Verdict = VerdictFor(r, o) }).ToList();
        var hybrid = Hybrid(r, options);
        var notes = new List<string>
        {
            "GB = 1e9 bytes throughout; hardware specified in GiB (GPU memory) is converted (80 GiB = 85.9 GB).",
            $"Memory need = weights + KV cache ({r.Context:N0} tokens × {r.Concurrent} sequence(s), {r.KvDtype}) + workspace (one {PrefillChunk}-token prefill chunk) + runtime overhead (CUDA context per device, OS reserve on unified-memory boxes).",
            "Speeds are ESTIMATES: decode is an upper bound from memory bandwidth ÷ bytes read per token (tensor-parallel nodes add their devices' bandwidth, a pipeline split does not); prefill is an upper bound from peak dense BF16 compute. Real systems reach roughly 50–80 % of these.",
            $"Costs: cloud months are {HoursPerMonth:0} h; commitments are billed every hour of the month; spot is shown as a range (60–91 % off) and judged at its dearest end; purchases pay electricity at R${r.KwhBrl.ToString("0.00", CultureInfo.InvariantCulture)}/kWh and are amortized over {r.Months} months in the cost per million tokens. Storage, egress and taxes are not included.",
            $"Exchange rate: {r.UsdBrl.ToString("0.00", CultureInfo.InvariantCulture)} BRL per USD.",
        };
        if (StoredNote(r) is { } storedNote) notes.Add(storedNote);
        if (r.Context > m.MaxPositions)
            notes.Add($"The requested context ({r.Context:N0}) exceeds the model's max_position_embeddings ({m.MaxPositions:N0}).");
        return new PlanResult
        {
            Request = r, Model = m.Name, Parameters = parameters, KvCacheGb = kvBytes / GB, Precisions = summaries,
            Options = options, Recommendation = Recommend(r, options, hybrid, parameters), Hybrid = hybrid, Notes = notes,
        };
    }

    /// <summary>For a model that exists only as a quantized file: why only its own precision is planned.</summary>
    private static string? StoredNote(PlanRequest r) => r.Model.IsStoredQuantized
        ? $"{r.Model.Name} is {r.Model.StoredKind} already quantized to {r.Model.StoredFormat}: it is planned as stored (tensor types and sizes read from the file). " +
          "More precise formats cannot be recovered from it, and re-quantizing it to a smaller one compounds the error; plan the original checkpoint (its config.json) to compare formats."
        : null;

    private static void Validate(PlanRequest r)
    {
        if (!double.IsFinite(r.BudgetBrl) || r.BudgetBrl < 0) throw new HarpiaException($"--budget must be zero or positive (got {r.BudgetBrl})");
        if (!double.IsFinite(r.UsdBrl) || r.UsdBrl <= 0) throw new HarpiaException($"--usd-brl must be positive (got {r.UsdBrl})");
        if (r.Context < 1 || r.Context > 10_000_000) throw new HarpiaException($"--context must be from 1 to 10,000,000 tokens (got {r.Context})");
        if (r.Concurrent < 1 || r.Concurrent > 100_000) throw new HarpiaException($"--concurrent must be from 1 to 100,000 (got {r.Concurrent})");
        if (r.Months < 1 || r.Months > 240) throw new HarpiaException($"--months must be from 1 to 240 (got {r.Months})");
        if (!double.IsFinite(r.KwhBrl) || r.KwhBrl < 0) throw new HarpiaException($"--kwh-brl must be zero or positive (got {r.KwhBrl})");
        if (r.HoursPerWeek.Count == 0) throw new HarpiaException("--hours-per-week needs at least one value");
        foreach (var h in r.HoursPerWeek)
            if (!double.IsFinite(h) || h <= 0 || h > 168) throw new HarpiaException($"--hours-per-week must be in (0, 168] (got {h})");
        if (r.Precisions.Count == 0) throw new HarpiaException("no precision selected");
        if (r.Model.IsStoredQuantized && r.Precisions.FirstOrDefault(p => p.Id != StoredPrecision.StoredId) is { } other)
            throw new HarpiaException($"{r.Model.Name} is {r.Model.StoredKind} already quantized to {r.Model.StoredFormat}: it can only be planned as stored, not at {other.Label} " +
                "(a more precise format cannot be recovered from it, and re-quantizing it compounds the error; plan the original checkpoint's config.json to compare formats)");
        if (r.Currency is not ("BRL" or "USD")) throw new HarpiaException($"--currency must be BRL or USD (got {r.Currency})");
    }

    private static IEnumerable<(string Pricing, string Label)> PricingVariants(HardwareEntry hw)
    {
        if (hw.Kind == HardwareKind.Purchase) { yield return ("purchase", hw.Name); yield break; }
        var c = hw.Cloud!;
        yield return ("on-demand", $"{hw.Name}, on demand");
        if (c.Commit1YDiscount > 0) yield return ("commit-1y", $"{hw.Name}, 1-year commitment");
        if (c.Commit3YDiscount > 0) yield return ("commit-3y", $"{hw.Name}, 3-year commitment");
        if (c.SpotDiscountMax > 0) yield return ("spot", $"{hw.Name}, spot");
    }

    /// <summary>Hours of use per month for a weekly pattern (168 h/week = the whole 730 h month).</summary>
    public static double HoursPerMonthFor(double hoursPerWeek) => Math.Min(HoursPerMonth, hoursPerWeek * HoursPerMonth / 168);

    private static PlanOption Evaluate(PlanRequest r, HardwareEntry hw, string pricing, string label, Precision p,
        long parameters, double kvBytes, double kvPerSeqBytes, double workspaceBytes)
    {
        var m = r.Model;
        double weights = p.Weights(m).Bytes;
        double overhead = hw.OverheadBytes;
        double resident = weights + kvBytes + workspaceBytes;
        double total = resident + overhead;
        double available = hw.TotalBytes;
        bool fits = total <= available;

        // Fill the tiers fastest first: the fast tier loses the per-device runtime overhead; the OS reserve sits in the
        // last (system) tier.
        double[] capacity = new double[hw.Tiers.Count];
        for (int i = 0; i < hw.Tiers.Count; i++)
            capacity[i] = hw.Tiers[i].Bytes * (i == 0 ? hw.Units : 1);
        capacity[0] -= hw.RuntimeOverheadGib * (1L << 30) * hw.Units;
        capacity[^1] -= hw.ReservedGB * GB * (hw.Split == SplitMode.Pipeline ? hw.Units : 1);
        double[] share = new double[hw.Tiers.Count];
        double left = resident;
        for (int i = 0; i < share.Length && left > 0; i++)
        {
            double take = Math.Clamp(Math.Min(left, capacity[i]), 0, left);
            share[i] = take / resident;
            left -= take;
        }

        double? decode = null, aggregate = null, prefill = null;
        if (fits)
        {
            double stepBytes = p.DecodeReadBytes(m) + r.Concurrent * kvPerSeqBytes;
            // FLOPs: 2 per weight per token, plus attention over the context (QKᵀ and AV: 4·layers·heads·d·ctx).
            double attnFlops = 4.0 * m.Layers * m.Heads * m.HeadDim * r.Context;
            double stepFlops = r.Concurrent * (2.0 * parameters + attnFlops);
            double tMem = 0, tCompute = 0, tPrefill = 0;
            double prefillFlopsPerToken = 2.0 * parameters + attnFlops / 2; // average position over the prompt
            for (int i = 0; i < share.Length; i++)
            {
                if (share[i] == 0) continue;
                var tier = hw.Tiers[i];
                int parallel = i == 0 && hw.Split == SplitMode.Tensor ? hw.Units : 1;
                int prefillParallel = i == 0 && hw.Split != SplitMode.Single ? hw.Units : 1;
                tMem += stepBytes * share[i] / (tier.BandwidthGBs * GB * parallel);
                tCompute += stepFlops * share[i] / (tier.Bf16Tflops * 1e12 * parallel);
                tPrefill += prefillFlopsPerToken * share[i] / (tier.Bf16Tflops * 1e12 * prefillParallel);
            }
            double tStep = Math.Max(tMem, tCompute);
            decode = 1 / tStep;
            aggregate = r.Concurrent / tStep;
            prefill = 1 / tPrefill;
        }

        double upfront = hw.Kind == HardwareKind.Purchase ? hw.PriceBrl ?? hw.PriceUsd!.Value * r.UsdBrl : 0;
        var usage = new List<UsageCost>();
        foreach (double hpw in r.HoursPerWeek)
        {
            double hours = HoursPerMonthFor(hpw);
            (double high, double low) = MonthlyCost(r, hw, pricing, hours);
            double horizon = upfront + high * r.Months;
            double? perMillion = null;
            if (aggregate is double tps && tps > 0)
            {
                double tokens = tps * 3600 * hours;
                perMillion = (high + upfront / r.Months) / tokens * 1e6;
            }
            double? budgetMonths = upfront > r.BudgetBrl ? 0 : high > 0 ? (r.BudgetBrl - upfront) / high : null;
            usage.Add(new UsageCost(hpw, hours, high, low, perMillion, horizon, fits, upfront <= r.BudgetBrl && horizon <= r.BudgetBrl,
                budgetMonths, null, null));
        }

        string? regionNote = null;
        if (hw.UnavailableRegions.Contains(r.UserRegion, StringComparer.OrdinalIgnoreCase))
            regionNote = $"not offered in {r.UserRegion}";
        return new PlanOption
        {
            HardwareId = hw.Id, Hardware = label, Kind = hw.Kind, Pricing = pricing, Region = hw.Region, RegionNote = regionNote,
            Precision = p.Id, PrecisionLabel = p.Label, BitsPerWeight = weights * 8 / parameters,
            WeightsGb = weights / GB, KvCacheGb = kvBytes / GB, WorkspaceGb = workspaceBytes / GB, OverheadGb = overhead / GB,
            TotalGb = total / GB, AvailableGb = available / GB, Fits = fits,
            DecodeTokensPerSecEstimate = decode, DecodeAggregateTokensPerSecEstimate = aggregate, PrefillTokensPerSecEstimate = prefill,
            OffloadFraction = fits ? 1 - share[0] : 0, UpfrontBrl = upfront, Usage = usage,
        };
    }

    /// <summary>Monthly cost in BRL (dearest, cheapest) for <paramref name="hours"/> hours of use a month.</summary>
    private static (double High, double Low) MonthlyCost(PlanRequest r, HardwareEntry hw, string pricing, double hours)
    {
        if (hw.Kind == HardwareKind.Purchase)
        {
            double kwh = (hw.PowerW * hours + hw.IdleW * (HoursPerMonth - hours)) / 1000;
            double energy = kwh * r.KwhBrl;
            return (energy, energy);
        }
        var c = hw.Cloud!;
        double usd = c.OnDemandUsdPerHour;
        return pricing switch
        {
            "commit-1y" => Same(usd * (1 - c.Commit1YDiscount) * HoursPerMonth * r.UsdBrl),
            "commit-3y" => Same(usd * (1 - c.Commit3YDiscount) * HoursPerMonth * r.UsdBrl),
            "spot" => (usd * (1 - c.SpotDiscountMin) * hours * r.UsdBrl, usd * (1 - c.SpotDiscountMax) * hours * r.UsdBrl),
            _ => Same(usd * hours * r.UsdBrl),
        };
        static (double, double) Same(double x) => (x, x);
    }

    /// <summary>For each purchase that fits: the month its cost drops below the cheapest rental running the same precision.</summary>
    private static List<PlanOption> AddBreakEven(PlanRequest r, List<PlanOption> options)
    {
        var result = new List<PlanOption>(options.Count);
        foreach (var o in options)
        {
            if (o.Kind != HardwareKind.Purchase || !o.Fits) { result.Add(o); continue; }
            var usage = new List<UsageCost>();
            for (int u = 0; u < o.Usage.Count; u++)
            {
                var own = o.Usage[u];
                var rent = options.Where(x => x.Kind == HardwareKind.Cloud && x.Fits && x.Precision == o.Precision)
                    .OrderBy(x => x.Usage[u].MonthlyBrl).FirstOrDefault();
                double? month = null;
                if (rent is not null && rent.Usage[u].MonthlyBrl > own.MonthlyBrl)
                    month = o.UpfrontBrl / (rent.Usage[u].MonthlyBrl - own.MonthlyBrl);
                usage.Add(own with { BreakEvenMonth = month, BreakEvenVs = rent?.Hardware });
            }
            result.Add(o with { Usage = usage });
        }
        return result;
    }

    private static string VerdictFor(PlanRequest r, PlanOption o)
    {
        if (!o.Fits) return $"does not fit (needs {Gb(o.TotalGb)} GB of {Gb(o.AvailableGb)} GB)";
        if (o.UpfrontBrl > r.BudgetBrl) return $"fits; over budget ({r.Money(o.UpfrontBrl)} up front > {r.Money(r.BudgetBrl)})";
        var within = o.Usage.Where(u => u.WithinBudget).ToList();
        if (within.Count == o.Usage.Count) return $"fits; within budget ({r.Months} months)";
        if (within.Count > 0) return $"fits; within budget ({r.Months} months) only at {string.Join(", ", within.Select(u => Hours(u.HoursPerWeek)))}";
        var first = o.Usage[0];
        string lasts = first.BudgetMonths is double bm ? $"; budget lasts {bm:0.#} months" : "";
        return $"fits; over budget over {r.Months} months{lasts}";
    }

    /// <summary>The most precise precision that fits, per hardware option.</summary>
    private static IEnumerable<PlanOption> BestPerHardware(IEnumerable<PlanOption> options) =>
        options.Where(o => o.Fits).GroupBy(o => o.Hardware).Select(g => g.OrderByDescending(o => o.BitsPerWeight).First());

    private static HybridPlan? Hybrid(PlanRequest r, List<PlanOption> options)
    {
        var buy = BestPurchase(r, options);
        if (buy is null) return null;
        int occasional = IndexOfMin(r.HoursPerWeek);
        // The rented side runs what the purchase cannot (a more precise format than the purchase holds) on the
        // cheapest spot machine, each machine at the most precise format it holds.
        var spot = BestPerHardware(options.Where(o => o.Kind == HardwareKind.Cloud && o.Pricing == "spot"))
            .Where(o => o.BitsPerWeight > buy.BitsPerWeight)
            .OrderBy(o => o.Usage[occasional].MonthlyBrl).ThenByDescending(o => o.BitsPerWeight).FirstOrDefault();
        if (spot is null) return null;
        double own = buy.Usage[0].MonthlyBrl; // the purchase runs continuously at home
        double high = own + spot.Usage[occasional].MonthlyBrl, low = own + spot.Usage[occasional].MonthlyBrlLow;
        double horizon = buy.UpfrontBrl + high * r.Months;
        double? months = buy.UpfrontBrl > r.BudgetBrl ? 0 : high > 0 ? (r.BudgetBrl - buy.UpfrontBrl) / high : null;
        return new HybridPlan(buy.Hardware, buy.PrecisionLabel, spot.Hardware, spot.PrecisionLabel, r.HoursPerWeek[occasional],
            buy.UpfrontBrl, low, high, horizon, horizon <= r.BudgetBrl, months);
    }

    private static int IndexOfMin(IReadOnlyList<double> xs)
    {
        int best = 0;
        for (int i = 1; i < xs.Count; i++) if (xs[i] < xs[best]) best = i;
        return best;
    }

    private static PlanOption? BestPurchase(PlanRequest r, IEnumerable<PlanOption> options) =>
        BestPerHardware(options.Where(o => o.Kind == HardwareKind.Purchase && o.UpfrontBrl <= r.BudgetBrl && o.Usage.Any(u => u.WithinBudget)))
            .OrderByDescending(o => o.DecodeTokensPerSecEstimate).ThenByDescending(o => o.BitsPerWeight).FirstOrDefault();

    private static List<string> Recommend(PlanRequest r, List<PlanOption> options, HybridPlan? hybrid, long parameters)
    {
        var s = new List<string>();
        var m = r.Model;
        s.Add($"{m.Name}: {Count(parameters)} parameters; budget {r.Money(r.BudgetBrl)}.");
        if (StoredNote(r) is { } storedNote) s.Add(storedNote);
        var buy = BestPurchase(r, options);
        if (buy is not null)
            s.Add($"Buy: {buy.Hardware} ({r.Money(buy.UpfrontBrl)}) runs {m.Name} at {buy.PrecisionLabel} " +
                  $"({Gb(buy.WeightsGb)} GB of weights, {Gb(buy.TotalGb)} GB needed of {Gb(buy.AvailableGb)} GB, {Gb(buy.HeadroomGb)} GB to spare): " +
                  $"about {Speed(buy.DecodeTokensPerSecEstimate)} tokens/s decode at most (bandwidth-bound estimate), " +
                  $"then ~{r.Money(buy.MonthlyBrl)}/month in electricity.");
        else
            s.Add($"No purchase in the catalog both holds {m.Name} and stays within {r.Money(r.BudgetBrl)}.");

        // Dearer purchases are worth a sentence only when they would hold a more precise format or decode faster.
        foreach (var o in BestPerHardware(options.Where(o => o.Kind == HardwareKind.Purchase && o.UpfrontBrl > r.BudgetBrl))
                     .Where(o => buy is null || o.BitsPerWeight > buy.BitsPerWeight || o.DecodeTokensPerSecEstimate > buy.DecodeTokensPerSecEstimate)
                     .OrderBy(o => o.UpfrontBrl))
            s.Add($"{o.Hardware} ({r.Money(o.UpfrontBrl)}) would hold {o.PrecisionLabel} but is over the budget by {r.Money(o.UpfrontBrl - r.BudgetBrl)}.");

        var unfit = options.Where(o => o.Kind == HardwareKind.Purchase).GroupBy(o => o.HardwareId).Where(g => g.All(o => !o.Fits)).Select(g => g.First());
        foreach (var o in unfit)
            s.Add($"{o.Hardware} cannot hold {m.Name} at any precision (even {Gb(options.Where(x => x.HardwareId == o.HardwareId).Min(x => x.TotalGb))} GB > {Gb(o.AvailableGb)} GB).");

        int occasional = IndexOfMin(r.HoursPerWeek);
        var rent = options.Where(o => o.Kind == HardwareKind.Cloud && o.Fits)
            .OrderByDescending(o => o.BitsPerWeight).ThenBy(o => o.Usage[occasional].MonthlyBrl).FirstOrDefault();
        if (rent is not null)
        {
            var u = rent.Usage[occasional];
            string range = u.MonthlyBrlLow < u.MonthlyBrl ? $"{r.Money(u.MonthlyBrlLow)}–{r.Money(u.MonthlyBrl)}" : $"{r.Money(u.MonthlyBrl)}";
            string region = rent.RegionNote is null ? "" : $" (in {rent.Region}; {rent.RegionNote})";
            s.Add($"Rent: the cheapest way to run {rent.PrecisionLabel} ({Gb(rent.WeightsGb)} GB) is {rent.Hardware}{region}: " +
                  $"{range}/month at {Hours(u.HoursPerWeek)}, ~{Speed(rent.DecodeTokensPerSecEstimate)} tokens/s decode at most.");
        }
        var continuous = options.Where(o => o.Kind == HardwareKind.Cloud && o.Fits && o.Pricing != "spot")
            .OrderBy(o => o.Usage[0].MonthlyBrl).FirstOrDefault();
        if (continuous is not null && r.HoursPerWeek[0] >= 168)
            s.Add($"Renting around the clock costs at least {r.Money(continuous.Usage[0].MonthlyBrl)}/month ({continuous.Hardware}, {continuous.PrecisionLabel}): " +
                  (continuous.Usage[0].MonthlyBrl * r.Months > r.BudgetBrl ? $"the budget lasts {r.BudgetBrl / continuous.Usage[0].MonthlyBrl:0.#} months." : "within budget."));

        if (hybrid is not null)
        {
            string verdict = hybrid.WithinBudget
                ? $"within {r.Money(r.BudgetBrl)} for {r.Months} months ({r.Money(hybrid.HorizonCostBrl)} at the dearest spot price)"
                : $"{r.Money(hybrid.HorizonCostBrl)} over {r.Months} months at the dearest spot price, over the budget; it lasts {hybrid.BudgetMonths:0.#} months";
            s.Add($"Hybrid: {hybrid.PurchaseHardware} ({hybrid.PurchasePrecision}) for daily work plus {hybrid.CloudHardware} " +
                  $"({hybrid.CloudPrecision}) for {Hours(hybrid.CloudHoursPerWeek)}: {r.Money(hybrid.UpfrontBrl)} up front + " +
                  $"{r.Money(hybrid.MonthlyBrlLow)}–{r.Money(hybrid.MonthlyBrlHigh)}/month; {verdict}. Spot machines can be preempted: checkpoint long jobs.");
        }
        return s;
    }

    public static string Hours(double hpw) => hpw >= 168 ? "continuous use" : $"{hpw.ToString("0.#", CultureInfo.InvariantCulture)} h/week";
    /// <summary>
    /// Gigabytes for text: at most one decimal from 1 GB up (108.4, 128), two significant digits below (0.52, 0.0019,
    /// 0.002), so a tiny model's weights never read as "0 GB".
    /// </summary>
    public static string Gb(double gb)
    {
        double a = Math.Abs(gb);
        if (a >= 1 || a == 0 || !double.IsFinite(a)) return gb.ToString("0.#", CultureInfo.InvariantCulture);
        int decimals = Math.Min(12, (int)Math.Ceiling(-Math.Log10(a)) + 1);
        return gb.ToString("0." + new string('#', decimals), CultureInfo.InvariantCulture);
    }

    /// <summary>A parameter count in words: "178.56 billion", "41.3 billion", "2.43 million", "12.5 thousand", "900".</summary>
    public static string Count(long n) => n switch
    {
        >= 1_000_000_000 => (n / 1e9).ToString("0.##", CultureInfo.InvariantCulture) + " billion",
        >= 1_000_000 => (n / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + " million",
        >= 1_000 => (n / 1e3).ToString("0.##", CultureInfo.InvariantCulture) + " thousand",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>A parameter count in short form: "178.56 B", "2.43 M", "12.5 K".</summary>
    public static string CountShort(long n) => n switch
    {
        >= 1_000_000_000 => (n / 1e9).ToString("0.##", CultureInfo.InvariantCulture) + " B",
        >= 1_000_000 => (n / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + " M",
        >= 1_000 => (n / 1e3).ToString("0.##", CultureInfo.InvariantCulture) + " K",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    internal static string Brl(double x) => x.ToString("N0", CultureInfo.InvariantCulture);
    public static string Speed(double? tps) => tps switch
    {
        null => "-",
        < 10 => tps.Value.ToString("0.0", CultureInfo.InvariantCulture),
        _ => tps.Value.ToString("N0", CultureInfo.InvariantCulture),
    };
}

using System.ComponentModel;
using System.Globalization;
using Harpia.Planning;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia plan</c>: what can run a model, how fast, at what cost, within a budget. With no arguments it answers
/// the guide's question: Falcon-180B within R$40,000.
/// </summary>
public sealed class PlanCommand : Command<PlanCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "[model]")]
        [Description("Preset (falcon-7b, falcon-40b, falcon-180b), a config.json, a model folder or a .gguf file. Default falcon-180b. Same as --model.")]
        public string? Model { get; init; }

        [CommandOption("--model <MODEL>")]
        [Description("The model, as the positional argument (the spelling the other commands use); give one or the other, or both naming the same model.")]
        public string? ModelOption { get; init; }

        /// <summary>The model to plan for: the positional argument or <c>--model</c> (which must agree when both are given).</summary>
        public string ResolvedModel => (Model, ModelOption) switch
        {
            (null, null) => "falcon-180b",
            (string a, null) => a,
            (null, string b) => b,
            (string a, string b) when SameModel(a, b) => a,
            (string a, string b) => throw new HarpiaException($"two different models given: '{a}' (argument) and '{b}' (--model); give one"),
        };

        // Presets compare case-insensitively (as they resolve); paths compare by where they point.
        private static bool SameModel(string a, string b)
        {
            a = a.Trim();
            b = b.Trim();
            if (string.Equals(a, b, StringComparison.Ordinal)) return true;
            if (ModelSpec.PresetNames.Contains(a.ToLowerInvariant()) || ModelSpec.PresetNames.Contains(b.ToLowerInvariant()))
                return string.Equals(a, b, StringComparison.OrdinalIgnoreCase);
            try { return Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)) == Path.TrimEndingDirectorySeparator(Path.GetFullPath(b)); }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { return false; }
        }

        [CommandOption("--precision <LIST>")]
        [Description("Comma-separated precisions (bf16,int8,q8_0,q6_k,q5_k_m,q4_k_m,gptq-4bit-128g,gptq-4bit,nf4,q3_k_m,q2_k). Default: all; an already-quantized .gguf is planned as stored (as-stored) only.")]
        public string? Precision { get; init; }

        [CommandOption("--context <TOKENS>")]
        [Description("Context tokens per sequence held in the KV cache. Default 2048.")]
        public string Context { get; init; } = "2048";

        [CommandOption("--concurrent <N>")]
        [Description("Sequences decoded at once. Default 1.")]
        public string Concurrent { get; init; } = "1";

        [CommandOption("--kv-dtype <TYPE>")]
        [Description("KV-cache element type: f16, bf16, f32, fp8, q8_0, q4_0. Default f16.")]
        public string KvDtype { get; init; } = "f16";

        [CommandOption("--budget <BRL>")]
        [Description("Budget in BRL. Default 40000.")]
        public string Budget { get; init; } = "40000";

        [CommandOption("--usd-brl <RATE>")]
        [Description("BRL per USD. Default 5.6.")]
        public string UsdBrl { get; init; } = "5.6";

        [CommandOption("--hours-per-week <LIST>")]
        [Description("Usage patterns in hours per week, comma-separated; the first decides the budget verdict. Default 168,10 (continuous and 10 h/week).")]
        public string HoursPerWeek { get; init; } = "168,10";

        [CommandOption("--months <N>")]
        [Description("Months over which costs are compared with the budget. Default 12.")]
        public string Months { get; init; } = "12";

        [CommandOption("--kwh-brl <PRICE>")]
        [Description("Electricity price in BRL per kWh. Default 0.85.")]
        public string KwhBrl { get; init; } = "0.85";

        [CommandOption("--region <REGION>")]
        [Description("Your cloud region; options not offered there are flagged. Default southamerica-east1.")]
        public string Region { get; init; } = "southamerica-east1";

        [CommandOption("--catalog <FILE>")]
        [Description("Hardware catalog JSON replacing the built-in one (same schema).")]
        public string? Catalog { get; init; }

        [CommandOption("--currency <BRL|USD>")]
        [Description("Currency of the rendered text. Default BRL.")]
        public string Currency { get; init; } = "BRL";

        [CommandOption("--format <FORMAT>")]
        [Description("table (default), markdown or json.")]
        public string Format { get; init; } = "table";

        [CommandOption("--output <FILE>")]
        [Description("Write the markdown/json/table text to FILE instead of the terminal.")]
        public string? Output { get; init; }

        [CommandOption("--chart <PNG>")]
        [Description("Also write a cost-over-months chart of the options to this PNG file.")]
        public string? Chart { get; init; }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        string format = s.Format.Trim().ToLowerInvariant();
        if (format is not ("table" or "markdown" or "md" or "json"))
            throw new HarpiaException($"--format must be table, markdown or json (got '{s.Format}')");
        var plan = Planner.Plan(BuildRequest(s));

        string? text = format switch
        {
            "json" => PlanRenderers.Json(plan),
            "markdown" or "md" => PlanRenderers.Markdown(plan),
            _ => null,
        };
        if (text is null)
        {
            if (s.Output is null)
            {
                // Redirected output has no terminal width; give the tables room instead of Spectre's 80 columns.
                if (Console.IsOutputRedirected) AnsiConsole.Console.Profile.Width = 200;
                PlanTable.Render(plan, AnsiConsole.Console);
            }
            else
            {
                using var writer = new StringWriter(CultureInfo.InvariantCulture);
                var console = AnsiConsole.Create(new AnsiConsoleSettings { Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Out = new AnsiConsoleOutput(writer) });
                console.Profile.Width = 200;
                PlanTable.Render(plan, console);
                WriteFile(s.Output, writer.ToString());
            }
        }
        else if (s.Output is null) Console.Out.Write(text);
        else WriteFile(s.Output, text);

        if (s.Chart is not null)
        {
            PlanChart.Save(plan, s.Chart);
            Console.Error.WriteLine($"chart written to {s.Chart}");
        }
        return 0;
    }

    private static void WriteFile(string path, string text)
    {
        try { File.WriteAllText(path, text); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new HarpiaException($"{path}: cannot write: {e.Message}"); }
    }

    internal static PlanRequest BuildRequest(Settings s)
    {
        var model = ModelSpec.Resolve(s.ResolvedModel);
        // Default: every format, or an already-quantized GGUF's own (the planner rejects any other for such a file).
        var precisions = s.Precision is null ? Precision.For(model)
            : s.Precision.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(p => model.IsStoredQuantized && (p.ToLowerInvariant() is "as-stored" or "stored" || string.Equals(p, model.StoredFormat, StringComparison.OrdinalIgnoreCase))
                    ? Precision.AsStored(model) : Precision.Parse(p))
                .DistinctBy(p => p.Id).ToList();
        var catalog = s.Catalog is null ? HardwareCatalog.Default() : HardwareCatalog.Load(s.Catalog);
        var hours = s.HoursPerWeek.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(h => Number(h, "--hours-per-week")).ToList();
        return new PlanRequest
        {
            Model = model, Precisions = precisions, Catalog = catalog, Context = Integer(s.Context, "--context"), Concurrent = Integer(s.Concurrent, "--concurrent"),
            KvDtype = s.KvDtype, BudgetBrl = Number(s.Budget, "--budget"), UsdBrl = Number(s.UsdBrl, "--usd-brl"),
            HoursPerWeek = hours, Months = Integer(s.Months, "--months"), KwhBrl = Number(s.KwhBrl, "--kwh-brl"), UserRegion = s.Region,
            Currency = s.Currency.Trim().ToUpperInvariant(),
        };
    }

    private static int Integer(string text, string option) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)
            ? v : throw new HarpiaException($"{option}: '{text}' is not a whole number");

    // Numbers are taken as strings so that "--budget -5" reaches the planner (and gets a clear message) instead of
    // being read as an unknown option.
    private static double Number(string text, string option) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)
            ? v : throw new HarpiaException($"{option}: '{text}' is not a number");
}

/// <summary>The terminal rendering: a fit matrix (precision × hardware) and the options table.</summary>
internal static class PlanTable
{
    public static void Render(PlanResult plan, IAnsiConsole console)
    {
        var r = plan.Request;
        console.Write(new Rule($"[bold]harpia plan[/]: {Markup.Escape(plan.Model)}").LeftJustified());
        console.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
            $"{plan.Parameters:N0} parameters ({Planner.CountShort(plan.Parameters)}) · budget {r.Money(r.BudgetBrl)} · context {r.Context:N0} × {r.Concurrent} seq, KV {r.KvDtype} = {plan.KvCacheGb:0.###} GB · GB = 1e9 bytes")));

        var weights = new Table().Border(TableBorder.Rounded).Title(plan.Request.Model.IsStoredQuantized
            ? "Weights as stored in the file (already quantized: no other precision can be recovered from it)"
            : "Weights per precision (computed from the config)");
        weights.AddColumn("precision").AddColumn(new TableColumn("bits/weight").RightAligned()).AddColumn(new TableColumn("weights GB").RightAligned());
        foreach (var p in plan.Precisions)
            weights.AddRow(Markup.Escape(p.Label), p.BitsPerWeight.ToString("0.000", CultureInfo.InvariantCulture), PlanRenderers.GbCell(p.WeightsGb));
        console.Write(weights);

        // Fit matrix: one row per memory configuration, one column per precision; ✓ free GB, ✗ when need > available.
        var columns = PlanRenderers.MemoryColumns(plan).ToList();
        var fit = new Table().Border(TableBorder.Rounded).Title("Fit: ✓ GB to spare, ✗ does not fit");
        fit.AddColumn("hardware").AddColumn(new TableColumn("GB").RightAligned());
        foreach (var p in plan.Precisions) fit.AddColumn(new TableColumn(Markup.Escape(p.Id)).RightAligned());
        foreach (var c in columns)
        {
            var cells = new List<string> { Markup.Escape(ShortName(c)), c.AvailableGb.ToString("0", CultureInfo.InvariantCulture) };
            foreach (var p in plan.Precisions)
            {
                var o = plan.Options.First(x => x.HardwareId == c.HardwareId && x.Precision == p.Id);
                cells.Add(o.Fits ? $"[green]✓{o.HeadroomGb.ToString("0", CultureInfo.InvariantCulture)}[/]" : "[red]✗[/]");
            }
            fit.AddRow(cells.ToArray());
        }
        console.Write(fit);

        var table = new Table().Border(TableBorder.Rounded).Title("Options: the most precise precision that fits each (tok/s = upper-bound ESTIMATES)");
        table.AddColumn("hardware").AddColumn("precision").AddColumn(new TableColumn("need/avail GB").RightAligned())
            .AddColumn(new TableColumn("decode tok/s").RightAligned()).AddColumn(new TableColumn("prefill tok/s").RightAligned())
            .AddColumn(new TableColumn("up front").RightAligned());
        foreach (var h in r.HoursPerWeek) table.AddColumn(new TableColumn(Markup.Escape(PlanRenderers.UsageHeader(h))).RightAligned());
        table.AddColumn(new TableColumn(Markup.Escape(PlanRenderers.PerMillionUnit(r))).RightAligned())
            .AddColumn(new TableColumn("break-even").RightAligned());
        table.AddColumn("verdict");
        foreach (var o in PlanRenderers.SummaryRows(plan))
        {
            string colour = !o.Fits ? "red" : o.WithinBudget ? "green" : o.Usage.Any(u => u.WithinBudget) ? "yellow" : "red";
            var cells = new List<string>
            {
                Markup.Escape(PlanRenderers.HardwareName(o)),
                Markup.Escape(o.Fits ? o.PrecisionLabel : "none"),
                string.Create(CultureInfo.InvariantCulture, $"{o.TotalGb:0.0}/{o.AvailableGb:0.0}"),
                Planner.Speed(o.DecodeTokensPerSecEstimate),
                Planner.Speed(o.PrefillTokensPerSecEstimate),
                Markup.Escape(r.Money(o.UpfrontBrl)),
            };
            cells.AddRange(o.Usage.Select(u => Markup.Escape(PlanRenderers.MonthlyCell(r, u))));
            cells.Add(Markup.Escape(PlanRenderers.PerMillionCell(r, o)));
            cells.Add(Markup.Escape(PlanRenderers.BreakEvenCell(o)));
            cells.Add($"[{colour}]{Markup.Escape(o.Verdict)}[/]");
            table.AddRow(cells.ToArray());
        }
        console.Write(table);

        console.Write(new Rule("[bold]Device maps[/] (what harpia serve would place where, per row above)").LeftJustified());
        foreach (var o in PlanRenderers.SummaryRows(plan))
            console.MarkupLine(Markup.Escape($"{ShortName(o)} ({o.PrecisionLabel}): {PlanRenderers.DeviceMapCell(o)}"));

        console.Write(new Rule("[bold]Recommendation[/]").LeftJustified());
        foreach (var line in plan.Recommendation) console.MarkupLine("• " + Markup.Escape(line));
        foreach (var c in columns.Where(c => c.RegionNote is not null).Take(1))
            console.MarkupLine(Markup.Escape($"Region: the cloud options are priced in {c.Region}; these machines are {c.RegionNote}."));
        console.MarkupLine("[grey]" + Markup.Escape(
            $"Estimates: decode ≤ bandwidth ÷ bytes per token, prefill ≤ peak BF16 compute. {PlanRenderers.PerMillionUnit(r)}: cost per million generated tokens at {Planner.Hours(r.HoursPerWeek[0])} (purchases amortized over {r.Months} months). " +
            $"break-even: month a purchase becomes cheaper than the cheapest rental of the same precision at {Planner.Hours(r.HoursPerWeek[0])}. See --format markdown for method, sources and price dates.") + "[/]");
    }

    private static string ShortName(PlanOption o)
    {
        string n = o.Hardware.Split(',')[0];
        int paren = n.IndexOf(" (", StringComparison.Ordinal);
        return (paren > 0 ? n[..paren] : n).Replace("NVIDIA ", "", StringComparison.Ordinal).Replace("Workstation: ", "WS ", StringComparison.Ordinal);
    }
}

/// <summary>
/// Cumulative cost over months of the options that fit (purchases, on-demand and spot at its dearest), at the
/// lightest usage pattern given (where renting competes with buying), with the budget line.
/// </summary>
internal static class PlanChart
{
    public static void Save(PlanResult plan, string path)
    {
        var r = plan.Request;
        int months = Math.Max(r.Months, 36);
        int usage = 0;
        for (int i = 1; i < r.HoursPerWeek.Count; i++) if (r.HoursPerWeek[i] < r.HoursPerWeek[usage]) usage = i;
        double scale = r.Currency == "USD" ? 1 / r.UsdBrl : 1;
        string unit = r.Currency == "USD" ? "US$" : "R$";
        var plt = new ScottPlot.Plot();
        double ymax = r.BudgetBrl * scale * 2.5;
        var rows = PlanRenderers.SummaryRows(plan).Where(o => o.Fits && o.Pricing is "purchase" or "on-demand" or "spot").ToList();
        foreach (var o in rows)
        {
            var u = o.Usage[usage];
            double[] xs = Enumerable.Range(0, months + 1).Select(m => (double)m).ToArray();
            double[] ys = xs.Select(m => (o.UpfrontBrl + u.MonthlyBrl * m) * scale).ToArray();
            var line = plt.Add.Scatter(xs, ys);
            line.MarkerSize = 0;
            line.LineWidth = 2;
            if (o.Kind == HardwareKind.Cloud) line.LinePattern = ScottPlot.LinePattern.DenselyDashed;
            line.LegendText = $"{o.Hardware} ({o.PrecisionLabel})";
        }
        if (plan.Hybrid is { } h)
        {
            double[] xs = Enumerable.Range(0, months + 1).Select(m => (double)m).ToArray();
            var line = plt.Add.Scatter(xs, xs.Select(m => (h.UpfrontBrl + h.MonthlyBrlHigh * m) * scale).ToArray());
            line.MarkerSize = 0;
            line.LineWidth = 4;
            line.LegendText = $"hybrid: {h.PurchaseHardware} + {h.CloudHardware} {Planner.Hours(h.CloudHoursPerWeek)}";
        }
        var budget = plt.Add.HorizontalLine(r.BudgetBrl * scale);
        budget.LineWidth = 2;
        budget.LinePattern = ScottPlot.LinePattern.Dashed;
        budget.Color = ScottPlot.Colors.Black;
        budget.LegendText = $"budget {r.Money(r.BudgetBrl)}";
        plt.Title($"{plan.Model}: cumulative cost at {Planner.Hours(r.HoursPerWeek[usage])} (spot at its dearest; estimates)");
        plt.XLabel("months");
        plt.YLabel($"cumulative cost ({unit})");
        plt.Axes.SetLimits(0, months, 0, ymax);
        plt.ShowLegend(ScottPlot.Alignment.UpperRight);
        try { plt.SavePng(path, 1400, 800); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DirectoryNotFoundException)
        { throw new HarpiaException($"{path}: cannot write chart: {e.Message}"); }
    }
}

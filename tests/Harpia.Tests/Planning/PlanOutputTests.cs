using System.Diagnostics;
using System.Text.Json;
using Harpia.Cli.Commands;
using Harpia.Planning;
using Spectre.Console;

namespace Harpia.Tests.Planning;

public class PlanOutputTests
{
    private static readonly PlanResult Guide = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-180b") });

    [Fact]
    public void Json_has_the_documented_shape_and_values()
    {
        using var doc = JsonDocument.Parse(PlanRenderers.Json(Guide));
        var root = doc.RootElement;
        Assert.Equal("falcon-180b", root.GetProperty("model").GetString());
        Assert.Equal(178_557_088_768L, root.GetProperty("parameters").GetInt64());
        Assert.Equal(40_000, root.GetProperty("budget_brl").GetDouble());
        Assert.Contains("DGX Spark", root.GetProperty("recommendation").GetString());
        var options = root.GetProperty("options").EnumerateArray().ToList();
        Assert.Equal(Guide.Options.Count, options.Count);
        string[] required = ["hardware", "precision", "weights_gb", "total_gb", "available_gb", "fits", "upfront_brl", "monthly_brl", "within_budget", "decode_tokens_per_s_estimate"];
        Assert.All(options, o => Assert.All(required, k => Assert.True(o.TryGetProperty(k, out _), k)));
        var spark = options.Single(o => o.GetProperty("hardware_id").GetString() == "dgx-spark-x1" && o.GetProperty("precision").GetString() == "q4_k_m");
        Assert.True(spark.GetProperty("fits").GetBoolean());
        Assert.InRange(spark.GetProperty("decode_tokens_per_s_estimate").GetDouble(), 2.4, 2.6);
        var a2 = options.Single(o => o.GetProperty("hardware_id").GetString() == "gce-a2-ultragpu-4g" && o.GetProperty("precision").GetString() == "bf16" && o.GetProperty("pricing").GetString() == "on-demand");
        Assert.False(a2.GetProperty("fits").GetBoolean());
        Assert.Equal(JsonValueKind.Null, a2.GetProperty("decode_tokens_per_s_estimate").ValueKind);
    }

    [Fact]
    public void Json_within_budget_is_false_for_options_that_do_not_fit()
    {
        // dgx-spark-x1 at bf16 used to say "fits": false, "within_budget": true (a cost verdict alone).
        using var doc = JsonDocument.Parse(PlanRenderers.Json(Guide));
        var options = doc.RootElement.GetProperty("options").EnumerateArray().ToList();
        var bf16 = options.Single(o => o.GetProperty("hardware_id").GetString() == "dgx-spark-x1" && o.GetProperty("precision").GetString() == "bf16");
        Assert.False(bf16.GetProperty("fits").GetBoolean());
        Assert.False(bf16.GetProperty("within_budget").GetBoolean());
        Assert.True(bf16.GetProperty("cost_within_budget").GetBoolean());   // the price alone is within R$40,000
        Assert.All(bf16.GetProperty("usage").EnumerateArray(), u => Assert.False(u.GetProperty("within_budget").GetBoolean()));
        foreach (var o in options)
        {
            bool fits = o.GetProperty("fits").GetBoolean(), cost = o.GetProperty("cost_within_budget").GetBoolean();
            Assert.Equal(fits && cost, o.GetProperty("within_budget").GetBoolean());
        }
        var q4 = options.Single(o => o.GetProperty("hardware_id").GetString() == "dgx-spark-x1" && o.GetProperty("precision").GetString() == "q4_k_m");
        Assert.True(q4.GetProperty("within_budget").GetBoolean());
    }

    [Fact]
    public void Markdown_has_the_recommendation_and_well_formed_tables()
    {
        string md = PlanRenderers.Markdown(Guide);
        Assert.StartsWith("# Deployment plan: falcon-180b", md);
        var lines = md.Split('\n');
        int header = Array.FindIndex(lines, l => l.StartsWith("| hardware | pricing | precision", StringComparison.Ordinal));
        Assert.True(header > 0);
        int columns = lines[header].Count(c => c == '|');
        Assert.StartsWith("| --- |", lines[header + 1]);
        var rows = lines.Skip(header + 2).TakeWhile(l => l.StartsWith('|')).ToList();
        Assert.Equal(PlanRenderers.SummaryRows(Guide).Count(), rows.Count);
        Assert.All(rows, r => Assert.Equal(columns, r.Replace("\\|", "", StringComparison.Ordinal).Count(c => c == '|')));
        Assert.Contains(rows, r => r.StartsWith("| NVIDIA DGX Spark ×1 | purchase | Q4_K_M |", StringComparison.Ordinal) && r.Contains("within budget"));
        Assert.Contains(rows, r => r.StartsWith("| NVIDIA DGX Spark ×2", StringComparison.Ordinal) && r.Contains("over budget"));
        Assert.Contains("| Q4_K_M | 4.85", md);
        Assert.Contains("price", md);   // sources and dates are listed
    }

    [Fact]
    public void Terminal_table_renders_the_key_facts()
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Out = new AnsiConsoleOutput(writer) });
        console.Profile.Width = 220;
        PlanTable.Render(Guide, console);
        string text = writer.ToString();
        Assert.Contains("NVIDIA DGX Spark ×1", text);
        Assert.Contains("R$44,782", text);
        Assert.Contains("over budget", text);
        Assert.Contains("Recommendation", text);
        Assert.Contains("ESTIMATE", text);
    }

    [Fact]
    public void Terminal_and_markdown_show_prefill_cost_per_million_and_break_even()
    {
        // These were computed (and in the JSON) but the terminal table lacked all three and markdown the first and last.
        var spark = PlanRenderers.SummaryRows(Guide).Single(o => o.HardwareId == "dgx-spark-x1");
        Assert.Equal("q4_k_m", spark.Precision);
        string prefill = Planner.Speed(spark.PrefillTokensPerSecEstimate);
        string perMillion = Guide.Request.Money2(spark.Usage[0].CostPerMillionTokensBrl!.Value);
        string breakEven = spark.BreakEvenMonth!.Value.ToString("0.#", System.Globalization.CultureInfo.InvariantCulture) + " mo";
        Assert.Equal("345", prefill);
        Assert.Equal("1.4 mo", breakEven);

        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Out = new AnsiConsoleOutput(writer) });
        console.Profile.Width = 220;
        PlanTable.Render(Guide, console);
        var lines = writer.ToString().Split('\n');
        string header = lines.Single(l => l.Contains("decode tok/s", StringComparison.Ordinal));
        Assert.Contains("prefill tok/s", header);
        Assert.Contains("R$/M tok", header);
        Assert.Contains("break-even", header);
        var cells = lines.Single(l => l.StartsWith("│ NVIDIA DGX Spark ×1 ", StringComparison.Ordinal)).Split('│').Select(c => c.Trim()).ToList();
        Assert.Contains(prefill, cells);
        Assert.Contains(perMillion, cells);
        Assert.Contains(breakEven, cells);
        int breakEvenColumn = header.Split('│').Select(c => c.Trim()).ToList().IndexOf("break-even");
        Assert.Equal(breakEven, cells[breakEvenColumn]);
        // A rental has no break-even of its own.
        Assert.Equal("-", lines.SkipWhile(l => l != header).First(l => l.StartsWith("│ GCE a2-ultragpu-2g", StringComparison.Ordinal)).Split('│')[breakEvenColumn].Trim());

        string md = PlanRenderers.Markdown(Guide);
        var mdLines = md.Split('\n');
        string mdHeader = mdLines.Single(l => l.StartsWith("| hardware | pricing | precision", StringComparison.Ordinal));
        Assert.Contains("| prefill tok/s (est.) |", mdHeader);
        Assert.Contains("| break-even (buy vs rent) |", mdHeader);
        var row = mdLines.Single(l => l.StartsWith("| NVIDIA DGX Spark ×1 |", StringComparison.Ordinal)).Split(" | ").ToList();
        Assert.Equal(prefill, row[mdHeader.Split(" | ").ToList().IndexOf("prefill tok/s (est.)")]);
        Assert.StartsWith(breakEven + " vs GCE", row[mdHeader.Split(" | ").ToList().IndexOf("break-even (buy vs rent)")]);
        Assert.Contains(perMillion, row);
    }

    [Fact]
    public void Chart_is_a_png()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("costs.png");
        PlanChart.Save(Guide, path);
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length > 10_000);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        // IHDR: width 1400, height 800 (big-endian at offsets 16 and 20)
        Assert.Equal(1400, (bytes[16] << 24) | (bytes[17] << 16) | (bytes[18] << 8) | bytes[19]);
        Assert.Equal(800, (bytes[20] << 24) | (bytes[21] << 16) | (bytes[22] << 8) | bytes[23]);
    }

    // ---- the CLI, run as a process (its own console, its real exit code) ----

    private static (int Code, string Out, string Err) Harpia(params string[] args) => HarpiaProcess.Run(args);

    [Fact]
    public void Cli_plan_with_no_arguments_answers_the_guides_question()
    {
        var (code, output, err) = Harpia("plan");
        Assert.True(code == 0, err);
        Assert.Contains("falcon-180b", output);
        Assert.Contains("Buy: NVIDIA DGX Spark ×1 (R$22,391) runs falcon-180b at Q4_K_M", output);
        Assert.Contains("over the budget by R$4,782", output);
    }

    [Fact]
    public void Cli_writes_json_markdown_and_chart_files()
    {
        using var dir = new Fixtures.TempDir();
        var (code, _, err) = Harpia("plan", "falcon-40b", "--format", "json", "--output", dir.File("p.json"), "--chart", dir.File("c.png"), "--precision", "bf16,q4_k_m", "--hours-per-week", "40");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(File.ReadAllText(dir.File("p.json")));
        Assert.Equal(41_303_293_952L, doc.RootElement.GetProperty("parameters").GetInt64());
        Assert.All(doc.RootElement.GetProperty("options").EnumerateArray(), o => Assert.Contains(o.GetProperty("precision").GetString(), new[] { "bf16", "q4_k_m" }));
        Assert.True(new FileInfo(dir.File("c.png")).Length > 10_000);
        (code, var md, err) = Harpia("plan", "--format", "markdown", "--currency", "usd");
        Assert.True(code == 0, err);
        Assert.Contains("US$3,998", md);   // R$22,391 at 5.6
    }

    [Fact]
    public void Cli_plan_takes_the_model_as_model_option_too()
    {
        // README's tour and every other command spell it --model; plan used to answer "Unknown option 'model'" (exit 2).
        var (code, output, err) = Harpia("plan", "--model", "falcon-40b", "--format", "json", "--precision", "q4_k_m");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(output))
            Assert.Equal("falcon-40b", doc.RootElement.GetProperty("model").GetString());
        (code, output, err) = Harpia("plan", "falcon-40b", "--model", "Falcon-40B", "--format", "json", "--precision", "q4_k_m");
        Assert.True(code == 0, err);
        (code, _, err) = Harpia("plan", "falcon-7b", "--model", "falcon-40b");
        Assert.Equal(1, code);
        Assert.Contains("error: two different models given: 'falcon-7b' (argument) and 'falcon-40b' (--model)", err);
    }

    [Fact]
    public void Model_argument_and_option_resolve_to_one_model()
    {
        Assert.Equal("falcon-180b", new PlanCommand.Settings().ResolvedModel);
        Assert.Equal("falcon-7b", new PlanCommand.Settings { Model = "falcon-7b" }.ResolvedModel);
        Assert.Equal("falcon-7b", new PlanCommand.Settings { ModelOption = "falcon-7b" }.ResolvedModel);
        Assert.Equal("models/x", new PlanCommand.Settings { Model = "models/x", ModelOption = "models/x/" }.ResolvedModel);
        Assert.Throws<HarpiaException>(() => new PlanCommand.Settings { Model = "models/x", ModelOption = "models/y" }.ResolvedModel);
    }

    [Fact]
    public void Cli_plan_help_exits_0_and_lists_the_options()
    {
        var (code, output, err) = Harpia("plan", "--help");
        Assert.True(code == 0, err);
        foreach (var option in new[] { "--model", "--precision", "--context", "--budget", "--hours-per-week", "--format", "--output", "--chart", "--catalog" })
            Assert.Contains(option, output);
    }

    [Fact]
    public void Cli_plans_a_quantized_gguf_as_stored_only()
    {
        string gguf = Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q4_K_M.gguf");
        var (code, output, err) = Harpia("plan", gguf, "--format", "json");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.Equal("tiny-falcon-180b-h256", doc.RootElement.GetProperty("model").GetString());
            Assert.Equal("as-stored", Assert.Single(doc.RootElement.GetProperty("precisions").EnumerateArray().ToList()).GetProperty("id").GetString());
        }
        (code, _, err) = Harpia("plan", gguf, "--precision", "q4_k_m", "--format", "json");   // its own format, by name
        Assert.True(code == 0, err);
        (code, _, err) = Harpia("plan", gguf, "--precision", "bf16");
        Assert.Equal(1, code);
        Assert.Contains("already quantized to Q4_K_M", err);
    }

    [Theory]
    [InlineData("falcon-1t", "unknown model 'falcon-1t'")]
    [InlineData("/nonexistent/config.json", "unknown model '/nonexistent/config.json'")]
    public void Cli_bad_model_is_one_message_and_exit_1(string model, string expected)
    {
        var (code, output, err) = Harpia("plan", model);
        Assert.Equal(1, code);
        Assert.Contains("error: " + expected, err);
        Assert.DoesNotContain("   at ", err + output);   // no stack trace
    }

    [Fact]
    public void Cli_rejects_negative_budget_malformed_catalog_and_unreadable_config()
    {
        var (code, _, err) = Harpia("plan", "--budget", "-5");
        Assert.Equal(1, code);
        Assert.Contains("error: --budget must be zero or positive", err);
        (code, _, err) = Harpia("plan", "--context", "abc");
        Assert.Equal(1, code);
        Assert.Contains("error: --context: 'abc' is not a whole number", err);

        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("cat.json"), "{\"entries\": [ {\"id\": \"x\" ");
        (code, _, err) = Harpia("plan", "--catalog", dir.File("cat.json"));
        Assert.Equal(1, code);
        Assert.Contains("error: catalog " + dir.File("cat.json") + ": not valid JSON", err);

        File.WriteAllText(dir.File("config.json"), "{\"model_type\": \"falcon\", \"hidden_size\": 64}");
        (code, _, err) = Harpia("plan", dir.File("config.json"));
        Assert.Equal(1, code);
        Assert.Contains("missing field 'num_attention_heads'", err);
        Assert.DoesNotContain("   at ", err);
    }
}

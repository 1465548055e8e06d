using Harpia.Planning;

namespace Harpia.Tests.Planning;

public class PlannerTests
{
    private static readonly PlanResult Guide = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-180b") });

    private static PlanOption Option(PlanResult plan, string hardwareId, string precision, string pricing = "purchase") =>
        plan.Options.Single(o => o.HardwareId == hardwareId && o.Precision == precision && o.Pricing == pricing);

    // ---- the "done when" facts ----

    [Fact]
    public void Falcon180B_Q4_K_M_about_109_GB_fits_one_DGX_Spark()
    {
        var o = Option(Guide, "dgx-spark-x1", "q4_k_m");
        Assert.InRange(o.WeightsGb, 108, 109.5);
        Assert.True(o.Fits);
        Assert.True(o.TotalGb < o.AvailableGb);
        Assert.True(o.WithinBudget);
        Assert.Equal(22_391, o.UpfrontBrl);
    }

    [Fact]
    public void Two_DGX_Sparks_at_R44782_exceed_R40000()
    {
        var o = Option(Guide, "dgx-spark-x2", "q4_k_m");
        Assert.Equal(44_782, o.UpfrontBrl);
        Assert.False(o.WithinBudget);
        Assert.All(o.Usage, u => Assert.False(u.WithinBudget));
        Assert.Contains("over budget", o.Verdict);
        Assert.Contains(Guide.Recommendation, l => l.Contains("DGX Spark ×2") && l.Contains("over the budget by R$4,782"));
    }

    [Fact]
    public void Bf16_does_not_fit_a2_ultragpu_4g()
    {
        var o = Option(Guide, "gce-a2-ultragpu-4g", "bf16", "on-demand");
        Assert.False(o.Fits);
        Assert.InRange(o.WeightsGb, 357, 357.2);
        Assert.Equal(4 * 80 * 1.073741824, o.AvailableGb, 6);   // 4 × 80 GiB = 343.6 GB (the guide's "320 GB")
        Assert.True(o.WeightsGb > o.AvailableGb);
        Assert.Null(o.DecodeTokensPerSecEstimate);
        Assert.True(Option(Guide, "gce-a2-ultragpu-8g", "bf16", "on-demand").Fits);
    }

    [Fact]
    public void Every_fitting_option_has_a_bandwidth_bound_decode_estimate_and_no_other_does()
    {
        Assert.All(Guide.Options, o =>
        {
            if (o.Fits) Assert.True(o.DecodeTokensPerSecEstimate > 0 && o.PrefillTokensPerSecEstimate > 0);
            else Assert.Null(o.DecodeTokensPerSecEstimate);
        });
    }

    // Decode at batch 1 on one Spark: bytes per token = all Q4_K_M weights (tied head reads the embedding) + the KV
    // cache of 2,048 tokens (2,048 × 160 KiB); bandwidth 273 GB/s. Compute (125 TFLOPS) is far from the bound.
    [Fact]
    public void Spark_decode_estimate_is_bandwidth_over_bytes_per_token()
    {
        long weights = Precision.Parse("q4_k_m").Weights(ModelSpec.FromPreset("falcon-180b")).Bytes;
        double expected = 273e9 / (weights + 2048.0 * 160 * 1024);
        var o = Option(Guide, "dgx-spark-x1", "q4_k_m");
        Assert.Equal(expected, o.DecodeTokensPerSecEstimate!.Value, 9);
        Assert.InRange(expected, 2.4, 2.6);
    }

    // Tensor parallel adds bandwidth (8 × 2,039 GB/s); a pipeline split of two Sparks does not (273 GB/s per token).
    [Fact]
    public void Tensor_parallel_adds_bandwidth_and_pipeline_does_not()
    {
        var a2 = Option(Guide, "gce-a2-ultragpu-8g", "bf16", "on-demand");
        Assert.Equal(8 * 2039e9 / (2 * 178_557_088_768.0 + 2048.0 * 160 * 1024), a2.DecodeTokensPerSecEstimate!.Value, 6);
        var one = Option(Guide, "dgx-spark-x1", "q4_k_m");
        var two = Option(Guide, "dgx-spark-x2", "q4_k_m");
        Assert.Equal(one.DecodeTokensPerSecEstimate!.Value, two.DecodeTokensPerSecEstimate!.Value, 9);
    }

    [Fact]
    public void Offloaded_weights_are_read_at_system_memory_bandwidth()
    {
        var ws = Option(Guide, "workstation-rtx5090", "q4_k_m");
        Assert.True(ws.Fits);
        Assert.InRange(ws.OffloadFraction, 0.6, 0.8);   // ~32 GiB of ~110 GB on the GPU
        Assert.True(ws.DecodeTokensPerSecEstimate < Option(Guide, "dgx-spark-x1", "q4_k_m").DecodeTokensPerSecEstimate);
    }

    // Costs: cloud months of 730 h; 10 h/week = 10·730/168 = 43.45 h/month; commitments billed all month.
    [Fact]
    public void Cloud_and_purchase_monthly_costs_match_hand_arithmetic()
    {
        double h10 = 10 * 730.0 / 168;
        var od = Option(Guide, "gce-a2-ultragpu-4g", "q8_0", "on-demand");
        Assert.Equal(20.28 * 730 * 5.6, od.Usage[0].MonthlyBrl, 6);
        Assert.Equal(20.28 * h10 * 5.6, od.Usage[1].MonthlyBrl, 6);
        var c3 = Option(Guide, "gce-a2-ultragpu-4g", "q8_0", "commit-3y");
        Assert.Equal(20.28 * 0.45 * 730 * 5.6, c3.Usage[1].MonthlyBrl, 6);
        var spot = Option(Guide, "gce-a2-ultragpu-4g", "q8_0", "spot");
        Assert.Equal(20.28 * 0.40 * h10 * 5.6, spot.Usage[1].MonthlyBrl, 6);
        Assert.Equal(20.28 * 0.09 * h10 * 5.6, spot.Usage[1].MonthlyBrlLow, 6);
        var spark = Option(Guide, "dgx-spark-x1", "q4_k_m");
        Assert.Equal(170 * 730 / 1000.0 * 0.85, spark.Usage[0].MonthlyBrl, 6);
        Assert.Equal((170 * h10 + 30 * (730 - h10)) / 1000 * 0.85, spark.Usage[1].MonthlyBrl, 6);
        // cost per million tokens: (energy + upfront amortized over 12 months) / tokens generated in the month
        double tokens = spark.DecodeAggregateTokensPerSecEstimate!.Value * 3600 * 730;
        Assert.Equal((spark.Usage[0].MonthlyBrl + 22_391 / 12.0) / tokens * 1e6, spark.Usage[0].CostPerMillionTokensBrl!.Value, 6);
    }

    [Fact]
    public void Usd_rate_scales_cloud_costs()
    {
        var plan = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-180b"), UsdBrl = 5.0, HoursPerWeek = [168] });
        Assert.Equal(20.28 * 730 * 5.0, Option(plan, "gce-a2-ultragpu-4g", "q8_0", "on-demand").MonthlyBrl, 6);
        Assert.Equal(100_000 * 5.0, Option(plan, "dgx-station", "bf16").UpfrontBrl);
        Assert.Equal(22_391, Option(plan, "dgx-spark-x1", "q4_k_m").UpfrontBrl);   // quoted in BRL
    }

    [Fact]
    public void Break_even_against_the_cheapest_rental_of_the_same_precision()
    {
        var spark = Option(Guide, "dgx-spark-x1", "q4_k_m");
        var rent = Guide.Options.Where(o => o.Kind == HardwareKind.Cloud && o.Fits && o.Precision == "q4_k_m").MinBy(o => o.Usage[0].MonthlyBrl)!;
        Assert.Equal(22_391 / (rent.Usage[0].MonthlyBrl - spark.Usage[0].MonthlyBrl), spark.BreakEvenMonth!.Value, 9);
        Assert.Equal(rent.Hardware, spark.Usage[0].BreakEvenVs);
    }

    [Fact]
    public void Hybrid_is_computed_from_the_options()
    {
        var h = Guide.Hybrid!;
        var spark = Option(Guide, "dgx-spark-x1", "q4_k_m");
        Assert.Equal("NVIDIA DGX Spark ×1", h.PurchaseHardware);
        Assert.Equal(10, h.CloudHoursPerWeek);
        var cloud = Guide.Options.Single(o => o.Hardware == h.CloudHardware && o.PrecisionLabel == h.CloudPrecision);
        Assert.Equal("spot", cloud.Pricing);
        Assert.True(cloud.BitsPerWeight > spark.BitsPerWeight);
        Assert.Equal(spark.Usage[0].MonthlyBrl + cloud.Usage[1].MonthlyBrl, h.MonthlyBrlHigh, 6);
        Assert.Equal(22_391 + 12 * h.MonthlyBrlHigh, h.HorizonCostBrl, 6);
        Assert.Equal(h.HorizonCostBrl <= 40_000, h.WithinBudget);
        Assert.Contains(Guide.Recommendation, l => l.StartsWith("Hybrid:", StringComparison.Ordinal));
    }

    [Fact]
    public void A_tiny_quantized_gguf_is_planned_as_stored_with_readable_small_numbers()
    {
        var m = ModelSpec.Resolve(Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), "model-Q4_K_M.gguf"));
        var plan = Planner.Plan(new PlanRequest { Model = m });
        Assert.Equal("as-stored", Assert.Single(plan.Precisions).Id);
        Assert.All(plan.Options, o => Assert.Equal("Q4_K_M (as stored)", o.PrecisionLabel));
        // It used to say "0 billion parameters", "0 GB of weights" and "runs model-Q4_K_M at BF16".
        Assert.Equal("tiny-falcon-180b-h256: 2.43 million parameters; budget R$40,000.", plan.Recommendation[0]);
        Assert.Contains("already quantized to Q4_K_M", plan.Recommendation[1]);
        Assert.Contains(plan.Notes, n => n.Contains("already quantized to Q4_K_M", StringComparison.Ordinal));
        var buy = Assert.Single(plan.Recommendation, l => l.StartsWith("Buy:", StringComparison.Ordinal));
        Assert.Contains("at Q4_K_M (as stored) (0.002 GB of weights", buy);
        Assert.DoesNotContain(plan.Recommendation, l => l.Contains("BF16", StringComparison.Ordinal) || l.Contains(" 0 GB", StringComparison.Ordinal) || l.Contains("0 billion", StringComparison.Ordinal));

        var e = Assert.Throws<HarpiaException>(() => Planner.Plan(new PlanRequest { Model = m, Precisions = [Precision.Parse("bf16")] }));
        Assert.Contains("already quantized to Q4_K_M", e.Message);
    }

    [Theory]
    [InlineData(357.12, "357.1")]
    [InlineData(128, "128")]
    [InlineData(1.04, "1")]
    [InlineData(0.52, "0.52")]
    [InlineData(0.00196, "0.002")]
    [InlineData(0.0019, "0.0019")]
    [InlineData(0.000034, "0.000034")]
    [InlineData(0, "0")]
    public void Gigabytes_keep_two_significant_digits_when_small(double gb, string expected) => Assert.Equal(expected, Planner.Gb(gb));

    [Theory]
    [InlineData(178_557_088_768L, "178.56 billion", "178.56 B")]
    [InlineData(2_427_392L, "2.43 million", "2.43 M")]
    [InlineData(1_900_000L, "1.9 million", "1.9 M")]
    [InlineData(12_500L, "12.5 thousand", "12.5 K")]
    [InlineData(900L, "900", "900")]
    public void Parameter_counts_read_in_the_right_unit(long n, string words, string shortForm)
    {
        Assert.Equal(words, Planner.Count(n));
        Assert.Equal(shortForm, Planner.CountShort(n));
    }

    [Fact]
    public void Budget_verdicts_follow_the_budget()
    {
        var rich = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-180b"), BudgetBrl = 1_000_000 });
        Assert.True(Option(rich, "dgx-spark-x2", "q4_k_m").WithinBudget);
        var broke = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-180b"), BudgetBrl = 0 });
        Assert.DoesNotContain(broke.Options, o => o.WithinBudget && o.UpfrontBrl > 0);
        Assert.Contains(broke.Recommendation, l => l.StartsWith("No purchase", StringComparison.Ordinal));
    }

    [Fact]
    public void Concurrency_and_context_grow_the_kv_cache_and_slow_each_sequence()
    {
        var m = ModelSpec.FromPreset("falcon-180b");
        var one = Planner.Plan(new PlanRequest { Model = m, Precisions = [Precision.Parse("q4_k_m")] });
        var many = Planner.Plan(new PlanRequest { Model = m, Precisions = [Precision.Parse("q4_k_m")], Concurrent = 8, Context = 8192 });
        Assert.Equal(8 * 8192 * 160.0 * 1024 / 1e9, many.KvCacheGb, 9);
        var a = Option(one, "gce-a2-ultragpu-4g", "q4_k_m", "on-demand");
        var b = Option(many, "gce-a2-ultragpu-4g", "q4_k_m", "on-demand");
        Assert.True(b.DecodeTokensPerSecEstimate < a.DecodeTokensPerSecEstimate);
        Assert.True(b.DecodeAggregateTokensPerSecEstimate > a.DecodeAggregateTokensPerSecEstimate);
        Assert.Equal(8 * b.DecodeTokensPerSecEstimate!.Value, b.DecodeAggregateTokensPerSecEstimate!.Value, 9);
    }

    [Fact]
    public void Smaller_presets_fit_small_hardware()
    {
        var plan = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-7b") });
        Assert.True(Option(plan, "jetson-orin-nano-super", "q4_k_m").Fits);
        Assert.False(Option(plan, "jetson-orin-nano-super", "bf16").Fits);
    }

    [Fact]
    public void Cloud_options_flag_the_users_region()
    {
        var o = Option(Guide, "gce-a2-ultragpu-4g", "q8_0", "spot");
        Assert.Equal("us-central1", o.Region);
        Assert.Contains("southamerica-east1", o.RegionNote);
        Assert.Null(Option(Guide, "dgx-spark-x1", "q4_k_m").RegionNote);
    }

    [Theory]
    [InlineData(-1.0, 5.6, 168.0, "--budget")]
    [InlineData(40000.0, 0.0, 168.0, "--usd-brl")]
    [InlineData(40000.0, 5.6, 200.0, "--hours-per-week")]
    public void Bad_request_values_are_rejected(double budget, double usd, double hours, string expected)
    {
        var e = Assert.Throws<HarpiaException>(() => Planner.Plan(new PlanRequest
        {
            Model = ModelSpec.FromPreset("falcon-7b"), BudgetBrl = budget, UsdBrl = usd, HoursPerWeek = [hours],
        }));
        Assert.Contains(expected, e.Message);
    }
}

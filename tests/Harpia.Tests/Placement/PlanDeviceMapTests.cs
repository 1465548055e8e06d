using System.Text.Json;
using Harpia.Placement;
using Harpia.Planning;

namespace Harpia.Tests.Placement;

/// <summary>The planner shows, per hardware option, the device map the runtime's <see cref="DeviceMapper"/> builds there.</summary>
public class PlanDeviceMapTests
{
    private const long GiB = 1L << 30;
    private static readonly PlanResult Guide = Planner.Plan(new PlanRequest { Model = ModelSpec.FromPreset("falcon-180b") });

    private static PlanOption Option(string hardwareId, string precision, string pricing = "purchase") =>
        Guide.Options.Single(o => o.HardwareId == hardwareId && o.Precision == precision && o.Pricing == pricing);

    // The planner's defaults: context 2,048 × 1 sequence at f16 KV (2,048 B per position per layer → 4 MiB a layer),
    // one 512-token prefill chunk of activations. One Spark holds everything on its one device, which keeps 1 GiB for
    // CUDA and 6 GB for DGX OS.
    [Fact]
    public void One_Spark_runs_Falcon180B_Q4_K_M_on_its_one_device()
    {
        var o = Option("dgx-spark-x1", "q4_k_m");
        var map = Assert.IsType<DeviceMap>(o.DeviceMap);
        Assert.Equal([DeviceId.Gpu(0)], map.Devices);
        var u = map.Usage.Single();
        Assert.Equal(GiB + 6_000_000_000, u.ReserveBytes);
        Assert.Equal(128_000_000_000, u.BudgetBytes);
        Assert.Equal(108_362_723_328, u.WeightBytes);
        Assert.Equal(80L * 2_048 * 2_048, u.KvBytes);
        Assert.Equal(2_048, map.MaxBatchTotalTokens);
        Assert.Equal(512, map.MaxBatchPrefillTokens);
        // The planner's need (weights + KV + its one workspace + overhead) is this device's total, less the
        // activations it does not count: its workspace is F + QKV + V wide, the runtime's F + QKV + 3H + heads·d + 2·KV
        // heads·d (k and v) on the layers' device plus H + V on the head's.
        const long H = 14_848;
        long extraActivations = 4L * 512 * (3 * H + 232 * 64 + 2 * 8 * 64 + H);
        Assert.Equal(o.TotalGb * 1e9 + extraActivations, u.TotalBytes, 1e3);
    }

    [Fact]
    public void The_RTX_5090_workstation_offloads_to_the_CPU_and_four_A100s_split_the_layers()
    {
        var ws = Assert.IsType<DeviceMap>(Option("workstation-rtx5090", "q4_k_m").DeviceMap);
        Assert.Equal([DeviceId.Gpu(0), DeviceId.Cpu], ws.Devices);
        Assert.Equal(DeviceId.Cpu, ws.Head);
        Assert.InRange(ws.LayerCountOn(DeviceId.Gpu(0)), 20, 25);   // ~31 GiB usable at ~1.3 GB a layer
        var a4 = Assert.IsType<DeviceMap>(Option("gce-a2-ultragpu-4g", "q8_0", "on-demand").DeviceMap);
        Assert.Equal(Enumerable.Range(0, 4).Select(DeviceId.Gpu), a4.Devices);
        Assert.All(a4.Usage, u => Assert.True(u.TotalBytes <= u.BudgetBytes));
    }

    /// <summary>Where the planner says an option fits, the runtime's map holds it in memory (no layer on disk), and the other way round.</summary>
    [Fact]
    public void The_plan_and_the_map_agree_on_what_fits()
    {
        foreach (var o in Guide.Options)
        {
            bool mapFits = o.DeviceMap is { FitsInMemory: true };
            Assert.True(o.Fits == mapFits, $"{o.Hardware} {o.Precision}: plan fits={o.Fits}, map: {(o.DeviceMap?.Summary() ?? o.DeviceMapError)}");
        }
    }

    [Fact]
    public void Json_has_a_device_map_in_every_option_and_markdown_a_summary()
    {
        using var doc = JsonDocument.Parse(PlanRenderers.Json(Guide));
        foreach (var option in doc.RootElement.GetProperty("options").EnumerateArray())
        {
            var map = option.GetProperty("device_map");
            Assert.True(map.TryGetProperty("devices", out _) || map.TryGetProperty("error", out _));
        }
        var spark = doc.RootElement.GetProperty("options").EnumerateArray()
            .First(o => o.GetProperty("hardware_id").GetString() == "dgx-spark-x1" && o.GetProperty("precision").GetString() == "q4_k_m");
        var device = spark.GetProperty("device_map").GetProperty("devices")[0];
        Assert.Equal("0", device.GetProperty("device").GetString());
        Assert.Equal("embedding, layers 0–79, ln_f/lm_head", device.GetProperty("holds").GetString());
        Assert.Equal(108_362_723_328, device.GetProperty("weights_bytes").GetInt64());

        string md = PlanRenderers.Markdown(Guide);
        Assert.Contains("## Device maps", md);
        Assert.Contains("NVIDIA DGX Spark ×1 (Q4_K_M): GPU 0: embedding, layers 0–79, ln_f/lm_head", md);
    }
}

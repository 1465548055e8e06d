using Harpia.Planning;

namespace Harpia.Tests.Planning;

public class CatalogTests
{
    [Fact]
    public void Built_in_catalog_has_the_guide_options_and_the_ones_it_missed_with_sources()
    {
        var c = HardwareCatalog.Default();
        foreach (var id in new[] { "dgx-spark-x1", "dgx-spark-x2", "dgx-station", "jetson-orin-nano-super", "gce-a2-ultragpu-4g",
                     "gce-a2-ultragpu-8g", "gce-a2-ultragpu-2g", "gce-a3-highgpu-8g", "workstation-rtx5090" })
            Assert.Contains(c.Entries, e => e.Id == id);
        Assert.All(c.Entries, e =>
        {
            Assert.False(string.IsNullOrWhiteSpace(e.PriceSource));
            Assert.Matches(@"^\d{4}-\d{2}", e.PriceDate);
        });
        var spark = c.Entries.Single(e => e.Id == "dgx-spark-x1");
        Assert.Equal(128e9, spark.TotalBytes);
        Assert.Equal(22_391, spark.PriceBrl);
        var a2 = c.Entries.Single(e => e.Id == "gce-a2-ultragpu-4g");
        Assert.Equal(4 * 80.0 * (1L << 30), a2.TotalBytes);       // 80 GiB per A100, as the device reports it
        Assert.Equal(20.28, a2.Cloud!.OnDemandUsdPerHour);
        Assert.Contains("southamerica-east1", a2.UnavailableRegions);
    }

    private const string Good = """
        {"entries":[{"id":"box","name":"Box","kind":"purchase","units":1,"split":"single",
          "tiers":[{"name":"ram","size":64,"unit":"GB","bandwidth_gb_s":100,"bf16_tflops":10}],
          "price_brl":1000,"price_source":"quote","price_date":"2025-01"}]}
        """;

    [Fact]
    public void A_user_catalog_file_replaces_the_built_in_one()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("my.json"), Good);
        var c = HardwareCatalog.Load(dir.File("my.json"));
        var e = Assert.Single(c.Entries);
        Assert.Equal(("box", 64e9, 1000.0), (e.Id, e.TotalBytes, e.PriceBrl!.Value));
    }

    [Theory]
    [InlineData("{\"entries\": [", "not valid JSON")]
    [InlineData("[]", "'entries' array")]
    [InlineData("{\"entries\": []}", "'entries' is empty")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"purchase","units":1,"price_brl":1,"price_source":"s","price_date":"d"}]}""", "entry 0 ('x'): missing field 'tiers'")]
    [InlineData("""{"entries":[{"name":"X"}]}""", "entry 0: missing field 'id'")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"lease","units":1}]}""", "'kind' is 'lease'")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"purchase","units":1,"tiers":[{"size":-1,"unit":"GB","bandwidth_gb_s":1,"bf16_tflops":1}],"price_brl":1,"price_source":"s","price_date":"d"}]}""", "'size' must be positive")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"purchase","units":1,"tiers":[{"size":1,"unit":"TB","bandwidth_gb_s":1,"bf16_tflops":1}],"price_brl":1,"price_source":"s","price_date":"d"}]}""", "expected GB or GiB")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"purchase","units":1,"tiers":[{"size":1,"unit":"GB","bandwidth_gb_s":1,"bf16_tflops":1}],"price_source":"s","price_date":"d"}]}""", "needs 'price_brl' or 'price_usd'")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"purchase","units":1,"tiers":[{"size":1,"unit":"GB","bandwidth_gb_s":1,"bf16_tflops":1}],"price_brl":-5,"price_source":"s","price_date":"d"}]}""", "'price_brl' must not be negative")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"cloud","units":1,"tiers":[{"size":1,"unit":"GB","bandwidth_gb_s":1,"bf16_tflops":1}],"price_source":"s","price_date":"d"}]}""", "needs a 'cloud' object")]
    [InlineData("""{"entries":[{"id":"x","name":"X","kind":"purchase","units":1,"tiers":[{"size":1,"unit":"GB","bandwidth_gb_s":1,"bf16_tflops":1}],"price_brl":1,"price_date":"d"}]}""", "missing field 'price_source'")]
    public void Malformed_catalogs_give_one_clear_message(string json, string expected)
    {
        var e = Assert.Throws<HarpiaException>(() => HardwareCatalog.Parse(json, "bad.json"));
        Assert.StartsWith("catalog bad.json", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Missing_catalog_file_is_a_clear_error()
    {
        var e = Assert.Throws<HarpiaException>(() => HardwareCatalog.Load("/nonexistent/catalog.json"));
        Assert.Contains("/nonexistent/catalog.json", e.Message);
    }

    [Fact]
    public void Duplicate_ids_are_rejected()
    {
        string two = Good.Replace("}]}", "},{\"id\":\"box\",\"name\":\"B\",\"kind\":\"purchase\",\"units\":1,\"tiers\":[{\"size\":1,\"unit\":\"GB\",\"bandwidth_gb_s\":1,\"bf16_tflops\":1}],\"price_brl\":1,\"price_source\":\"s\",\"price_date\":\"d\"}]}");
        Assert.Contains("'box' appears more than once", Assert.Throws<HarpiaException>(() => HardwareCatalog.Parse(two, "dup.json")).Message);
    }
}

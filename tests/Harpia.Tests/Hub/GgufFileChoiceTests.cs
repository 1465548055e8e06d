using Harpia.Hub;

namespace Harpia.Tests.Hub;

public class GgufFileChoiceTests
{
    private static readonly string[] Repo =
    [
        "README.md", "falcon-180b.Q2_K.gguf",
        "falcon-180b.Q4_K_M.gguf-split-b", "falcon-180b.Q4_K_M.gguf-split-a",
        "falcon-180b.Q4_K_S.gguf-split-a", "falcon-180b.Q4_K_S.gguf-split-b",
        "Q8_0/falcon-180b-Q8_0-00002-of-00003.gguf", "Q8_0/falcon-180b-Q8_0-00001-of-00003.gguf", "Q8_0/falcon-180b-Q8_0-00003-of-00003.gguf",
    ];

    [Fact]
    public void PicksEveryPartOfOneQuantizationInOrder()
    {
        Assert.Equal(["falcon-180b.Q4_K_M.gguf-split-a", "falcon-180b.Q4_K_M.gguf-split-b"], GgufFileChoice.Select(Repo, "Q4_K_M", "o/r"));
        Assert.Equal(["Q8_0/falcon-180b-Q8_0-00001-of-00003.gguf", "Q8_0/falcon-180b-Q8_0-00002-of-00003.gguf", "Q8_0/falcon-180b-Q8_0-00003-of-00003.gguf"],
            GgufFileChoice.Select(Repo, "q8_0", "o/r"));
        Assert.Equal(["falcon-180b.Q2_K.gguf"], GgufFileChoice.Select(Repo, "Q2_K", "o/r"));
    }

    [Fact]
    public void ATagIsAWholeWordBeforeItIsAPrefix()
    {
        // "Q4_K" names the file tagged Q4_K, not Q4_K_M beside it; with no such file, '_' may border the tag.
        string[] repo = ["m.Q4_K.gguf", "m.Q4_K_M.gguf", "other/model_q5_k_m.gguf"];
        Assert.Equal(["m.Q4_K.gguf"], GgufFileChoice.Select(repo, "Q4_K", "o/r"));
        Assert.Equal(["m.Q4_K_M.gguf"], GgufFileChoice.Select(repo, "q4_k_m", "o/r"));
        Assert.Equal(["other/model_q5_k_m.gguf"], GgufFileChoice.Select(repo, "Q5_K_M", "o/r"));
    }

    [Fact]
    public void MissingOrIncompleteQuantizationsAreClearErrors()
    {
        Assert.Contains("no GGUF file for quantization 'Q5_K_M'", Assert.Throws<HarpiaException>(() => GgufFileChoice.Select(Repo, "Q5_K_M", "o/r")).Message);
        var e = Assert.Throws<HarpiaException>(() => GgufFileChoice.Select(Repo.Where(f => !f.Contains("00002")), "Q8_0", "o/r"));
        Assert.Contains("3 shards", e.Message);
    }
}

using System.Text.Json;
using Harpia.Tokenization;

namespace Harpia.Tests.Tokenization;

/// <summary>The 167 reference cases: ids and both decodes exactly as the Rust tokenizers library produced them.</summary>
public class FalconConformanceTests
{
    public sealed record Case(string Text, int[] Ids, string Decoded, string DecodedSkipSpecial);

    internal static readonly Lazy<HfTokenizer> Falcon = new(() => HfTokenizer.Load(FalconTokenizerPath));
    internal static string FalconTokenizerPath => Fixtures.Path_("falcon", "tokenizer.json");

    internal static readonly Lazy<Case[]> Cases = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Path_("tokenizer", "falcon-cases.json")));
        Assert.False(doc.RootElement.GetProperty("add_special_tokens").GetBoolean());
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => new Case(
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
            c.GetProperty("decoded").GetString()!,
            c.GetProperty("decoded_skip_special").GetString()!)).ToArray();
    });

    public static TheoryData<int> CaseIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < Cases.Value.Length; i++) data.Add(i);
        return data;
    }

    [Fact]
    public void FixtureHasAll167Cases() => Assert.Equal(167, Cases.Value.Length);

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void EncodeMatchesReferenceIds(int index)
    {
        var c = Cases.Value[index];
        Assert.Equal(c.Ids, Falcon.Value.Encode(c.Text, addSpecialTokens: false));
        // Falcon has no post-processor: adding special tokens changes nothing.
        Assert.Equal(c.Ids, Falcon.Value.Encode(c.Text, addSpecialTokens: true));
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void DecodeMatchesReferenceText(int index)
    {
        var c = Cases.Value[index];
        Assert.Equal(c.Decoded, Falcon.Value.Decode(c.Ids, skipSpecialTokens: false));
        Assert.Equal(c.DecodedSkipSpecial, Falcon.Value.Decode(c.Ids, skipSpecialTokens: true));
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void StreamingDecodeOfEveryPrefixEqualsFullDecode(int index)
    {
        var c = Cases.Value[index];
        foreach (bool skip in new[] { false, true })
        {
            var stream = Falcon.Value.CreateStreamingDecoder(skip);
            var emitted = new System.Text.StringBuilder();
            for (int n = 1; n <= c.Ids.Length; n++)
            {
                string piece = stream.Push(c.Ids[n - 1]);
                Assert.False(piece.Length > 0 && char.IsHighSurrogate(piece[^1]), "a piece ends inside a surrogate pair");
                emitted.Append(piece);
                // What has been emitted so far is a prefix of the full decode of this prefix of ids.
                Assert.StartsWith(emitted.ToString(), Falcon.Value.Decode(c.Ids.AsSpan(0, n), skip), StringComparison.Ordinal);
            }
            emitted.Append(stream.Flush());
            Assert.Equal(skip ? c.DecodedSkipSpecial : c.Decoded, emitted.ToString());
        }
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void OffsetsCoverTheInputBytes(int index)
    {
        var c = Cases.Value[index];
        var spans = Falcon.Value.EncodeWithOffsets(c.Text);
        Assert.Equal(c.Ids, spans.Select(s => s.Id));
        byte[] utf8 = System.Text.Encoding.UTF8.GetBytes(c.Text);
        int pos = 0;
        var bytes = new List<byte>();
        foreach (var s in spans)
        {
            Assert.Equal(pos, s.Start);
            Assert.True(s.Stop > s.Start);
            Assert.Equal(Falcon.Value.IdToToken(s.Id), s.Text);
            pos = s.Stop;
        }
        Assert.Equal(utf8.Length, pos);
    }
}

public class LargeInputTests
{
    [Fact]
    public void LargeTextRoundTripsAndEncodesTheSameTwice()
    {
        var falcon = FalconConformanceTests.Falcon.Value;
        string text = string.Join("\n", Enumerable.Repeat(string.Join("\n", FalconConformanceTests.Cases.Value.Select(c => c.Text)), 12));
        var first = falcon.Encode(text);
        Assert.True(first.Count > 1 << 16, $"only {first.Count} tokens");
        Assert.Equal(text, falcon.Decode(first.ToArray()));
        Assert.Equal(first, falcon.Encode(text));
        Assert.Equal(first, falcon.EncodeWithOffsets(text).Select(s => s.Id));
        // A long run with no split point (one huge word) stays linearithmic and exact.
        string word = string.Concat(Enumerable.Repeat("abcdefghij", 20_000));
        Assert.Equal(word, falcon.Decode(falcon.Encode(word).ToArray()));
    }
}

public class ConcurrencyTests
{
    [Fact]
    public void ParallelEncodesShareTheWordCacheSafely()
    {
        // A fresh instance so that every thread races to fill the same empty cache.
        var tok = HfTokenizer.Load(FalconConformanceTests.FalconTokenizerPath);
        var cases = FalconConformanceTests.Cases.Value;
        var failures = new System.Collections.Concurrent.ConcurrentBag<int>();
        Parallel.For(0, 4 * cases.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            var c = cases[i % cases.Length];
            if (!tok.Encode(c.Text).SequenceEqual(c.Ids)) failures.Add(i % cases.Length);
        });
        Assert.Empty(failures);
    }
}

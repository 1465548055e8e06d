using Harpia.Runtime;

namespace Harpia.Tests.Runtime;

public class StopSequenceMatcherTests
{
    private static (string Emitted, string? Matched) Run(string[] pieces, params string[] stops)
    {
        var m = new StopSequenceMatcher(stops);
        var sb = new System.Text.StringBuilder();
        foreach (var p in pieces)
        {
            sb.Append(m.Push(p));
            if (m.Stopped) break;
        }
        sb.Append(m.Flush());
        return (sb.ToString(), m.Matched);
    }

    [Fact]
    public void Stop_split_across_pieces_is_found_and_not_emitted()
    {
        Assert.Equal(("Hello ", "STOP"), Run(["Hel", "lo S", "T", "OP and more"], "STOP"));
    }

    [Fact]
    public void Held_back_text_is_released_when_the_stop_does_not_complete()
    {
        var m = new StopSequenceMatcher(["STOP"]);
        Assert.Equal("ab", m.Push("abST"));
        Assert.Equal("STx", m.Push("x"));
        Assert.Equal("", m.Push("S"));
        Assert.Equal("S", m.Flush());
        Assert.False(m.Stopped);
    }

    [Fact]
    public void Earliest_of_several_stops_wins_and_text_after_it_is_dropped()
    {
        Assert.Equal(("x", "\n"), Run(["x\nyy###"], "###", "\n"));
        Assert.Equal(("a", "bcd"), Run(["ab", "cd"], "bcd", "cde"));
    }

    [Fact]
    public void Overlapping_prefixes_are_handled()
    {
        // "aab" arrives as "a","a","b": after "aa" the held tail must be "aa"'s suffix "a"… and then "aab" is found.
        Assert.Equal(("", "aab"), Run(["a", "a", "b"], "aab"));
        Assert.Equal(("a", "aab"), Run(["a", "a", "a", "b"], "aab"));
    }

    [Fact]
    public void Kept_stop_is_emitted_whole_and_what_follows_it_is_not()
    {
        var m = new StopSequenceMatcher(["STOP", "\n"], keepStop: true);
        var sb = new System.Text.StringBuilder();
        foreach (var p in new[] { "Hel", "lo S", "T", "OP and more" }) { sb.Append(m.Push(p)); if (m.Stopped) break; }
        sb.Append(m.Flush());
        Assert.Equal("Hello STOP", sb.ToString());
        Assert.Equal("STOP", m.Matched);
        Assert.Equal("", m.Push("later"));
    }

    [Fact]
    public void Without_stops_everything_passes_through()
    {
        var m = new StopSequenceMatcher([]);
        Assert.Equal("abc", m.Push("abc"));
        Assert.Equal("", m.Flush());
    }

    [Fact]
    public void Concatenated_output_equals_text_up_to_the_first_stop_for_random_splits()
    {
        var rng = new Random(3);
        string[] stops = ["ab", "bca", "cc"];
        for (int trial = 0; trial < 500; trial++)
        {
            string text = new(Enumerable.Range(0, rng.Next(1, 30)).Select(_ => "abcd"[rng.Next(4)]).ToArray());
            var pieces = new List<string>();
            for (int i = 0; i < text.Length;) { int n = rng.Next(1, 4); pieces.Add(text.Substring(i, Math.Min(n, text.Length - i))); i += n; }
            var (emitted, matched) = Run([.. pieces], stops);
            int first = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
            Assert.Equal(first < 0 ? text : text[..first], emitted);
            Assert.Equal(first >= 0, matched is not null);
        }
    }
}

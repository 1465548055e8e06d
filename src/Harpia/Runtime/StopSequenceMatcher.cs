namespace Harpia.Runtime;

/// <summary>
/// Finds stop sequences in a stream of decoded text pieces that may split them anywhere. <see cref="Push"/> returns
/// the text that is safe to show: it holds back the longest tail that is still the start of some stop string, and
/// when a stop string appears it returns the text before it (and the stop string itself when asked to keep it) and
/// reports the match; anything after it is never returned. Matching is ordinal; the earliest occurrence wins (the
/// longest stop on a tie).
/// </summary>
public sealed class StopSequenceMatcher
{
    private readonly string[] _stops;
    private readonly bool _keepStop;
    private readonly System.Text.StringBuilder _held = new();

    public StopSequenceMatcher(IReadOnlyList<string> stopSequences, bool keepStop = false)
    {
        _keepStop = keepStop;
        foreach (var s in stopSequences)
            if (string.IsNullOrEmpty(s)) throw new ArgumentException("stop sequences must not be empty", nameof(stopSequences));
        _stops = [.. stopSequences];
    }

    /// <summary>The stop string that ended the text, once one matched.</summary>
    public string? Matched { get; private set; }
    public bool Stopped => Matched is not null;

    /// <summary>Adds decoded text; returns what may be emitted now. After a match, returns "" for ever.</summary>
    public string Push(string text)
    {
        if (Stopped) return "";
        if (_stops.Length == 0) return text;
        _held.Append(text);
        string buffer = _held.ToString();
        // Every earlier start was already ruled out: the held tail begins at the earliest possible match.
        int bestAt = -1;
        foreach (var stop in _stops)
        {
            int at = buffer.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (bestAt < 0 || at < bestAt || (at == bestAt && stop.Length > Matched!.Length)))
            {
                bestAt = at;
                Matched = stop;
            }
        }
        if (bestAt >= 0)
        {
            _held.Clear();
            return buffer[..(_keepStop ? bestAt + Matched!.Length : bestAt)];
        }
        int keep = LongestTailThatStartsAStop(buffer);
        _held.Clear().Append(buffer, buffer.Length - keep, keep);
        return buffer[..^keep];
    }

    /// <summary>Releases the held-back tail at the end of the stream (no stop can complete any more).</summary>
    public string Flush()
    {
        if (Stopped) return "";
        string rest = _held.ToString();
        _held.Clear();
        return rest;
    }

    private int LongestTailThatStartsAStop(string buffer)
    {
        int best = 0;
        foreach (var stop in _stops)
            for (int len = Math.Min(stop.Length - 1, buffer.Length); len > best; len--)
                if (string.CompareOrdinal(buffer, buffer.Length - len, stop, 0, len) == 0) { best = len; break; }
        return best;
    }
}

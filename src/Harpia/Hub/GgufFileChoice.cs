using System.Text.RegularExpressions;

namespace Harpia.Hub;

/// <summary>
/// Which files of a repository holding many GGUF quantizations make up one of them (llama.cpp's <c>owner/repo:Q4_K_M</c>):
/// a single <c>*Q4_K_M.gguf</c>, every gguf-split shard <c>*Q4_K_M-0000i-of-0000n.gguf</c>, or every byte piece
/// <c>*Q4_K_M.gguf-split-a</c>, <c>-b</c>, …. Kept apart from the download itself: it only decides the list.
/// </summary>
public static partial class GgufFileChoice
{
    [GeneratedRegex(@"-(?<no>\d{5})-of-(?<count>\d{5})\.gguf$", RegexOptions.IgnoreCase)]
    private static partial Regex Shard();

    [GeneratedRegex(@"\.gguf-split-[a-z]$")]
    private static partial Regex BytePiece();

    /// <summary>The files of quantization <paramref name="quant"/> among <paramref name="repoFiles"/>, in reading order.</summary>
    public static IReadOnlyList<string> Select(IEnumerable<string> repoFiles, string quant, string repo)
    {
        if (string.IsNullOrWhiteSpace(quant)) throw new HarpiaException($"{repo}: give a quantization after ':' (e.g. {repo}:Q4_K_M)");
        var tag = new Regex(@"(^|[^A-Za-z0-9])" + Regex.Escape(quant) + @"([^A-Za-z0-9]|$)", RegexOptions.IgnoreCase);
        var matching = repoFiles.Where(f => (f.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) || BytePiece().IsMatch(f))
                                           && tag.IsMatch(Path.GetFileName(StripPart(f)))).ToList();
        if (matching.Count == 0) throw new HarpiaException($"{repo}: no GGUF file for quantization '{quant}'");
        var groups = matching.GroupBy(StripPart, StringComparer.Ordinal).ToList();
        if (groups.Count > 1)
            throw new HarpiaException($"{repo}: '{quant}' matches several models ({string.Join(", ", groups.Select(g => g.Key))}); name one file");
        var files = groups[0].Order(StringComparer.Ordinal).ToList();
        var shard = Shard().Match(files[0]);
        if (shard.Success)
        {
            int count = int.Parse(shard.Groups["count"].Value);
            if (files.Count != count) throw new HarpiaException($"{repo}: '{quant}' is split into {count} shards but the repository lists {files.Count}");
        }
        return files;
    }

    /// <summary>A part's name without its part suffix: the name the whole model goes by.</summary>
    private static string StripPart(string f)
    {
        var m = Shard().Match(f);
        if (m.Success) return f[..m.Index] + ".gguf";
        var b = BytePiece().Match(f);
        return b.Success ? f[..b.Index] + ".gguf" : f;
    }
}

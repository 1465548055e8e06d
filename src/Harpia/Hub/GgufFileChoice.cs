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

    /// <summary>The quantization tag of a model id (llama.cpp's and ollama's <c>owner/repo:Q4_K_M</c>).</summary>
    [GeneratedRegex(@"^(?<repo>[^:]+):(?<quant>[A-Za-z0-9_.\-]*)$")]
    private static partial Regex QuantTag();

    /// <summary>
    /// Splits <c>owner/repo:Q4_K_M</c> into the repository and the quantization; an id without a tag gives null for the
    /// quantization. Anything else (two colons, a tag with a slash) is left whole for the repository check to refuse.
    /// </summary>
    public static (string Repo, string? Quant) SplitModelId(string modelId)
    {
        var m = QuantTag().Match(modelId);
        return m.Success ? (m.Groups["repo"].Value, m.Groups["quant"].Value) : (modelId, null);
    }

    /// <summary>Whether <paramref name="path"/> is a GGUF file or a part of one (a shard or a byte piece).</summary>
    public static bool IsGgufPart(string path) => path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) || BytePiece().IsMatch(path);

    /// <summary>The files of quantization <paramref name="quant"/> among <paramref name="repoFiles"/>, in reading order.</summary>
    public static IReadOnlyList<string> Select(IEnumerable<string> repoFiles, string quant, string repo)
    {
        var all = repoFiles.ToList();
        if (string.IsNullOrWhiteSpace(quant))
            throw new HarpiaException($"{repo}: give a quantization after ':' (e.g. {repo}:Q4_K_M); {OfferedText(all)}");
        // The tag as a whole word first ("Q4_K" is not "Q4_K_M"); then allowing '_' around it (model_q4_k_m.gguf).
        var matching = Matching(all, @"(^|[^A-Za-z0-9_])", @"([^A-Za-z0-9_]|$)");
        if (matching.Count == 0) matching = Matching(all, @"(^|[^A-Za-z0-9])", @"([^A-Za-z0-9]|$)");
        if (matching.Count == 0) throw new HarpiaException($"{repo}: no GGUF file for quantization '{quant}'; {OfferedText(all)}");
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

        List<string> Matching(List<string> files, string before, string after)
        {
            var tag = new Regex(before + Regex.Escape(quant) + after, RegexOptions.IgnoreCase);
            return files.Where(f => IsGgufPart(f) && tag.IsMatch(Path.GetFileName(StripPart(f)))).ToList();
        }
    }

    /// <summary>
    /// The GGUF models among <paramref name="repoFiles"/>, each as its whole-model name with its parts in reading order
    /// (a single file is one part).
    /// </summary>
    public static IReadOnlyList<(string Model, IReadOnlyList<string> Parts)> Models(IEnumerable<string> repoFiles) =>
        repoFiles.Where(IsGgufPart).GroupBy(StripPart, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => (g.Key, (IReadOnlyList<string>)g.Order(StringComparer.Ordinal).ToList())).ToList();

    /// <summary>"the repository offers: a.Q2_K.gguf, a.Q4_K_M.gguf (2 parts)" — what a user can pick from.</summary>
    public static string OfferedText(IEnumerable<string> repoFiles)
    {
        var models = Models(repoFiles);
        if (models.Count == 0) return "the repository holds no GGUF file";
        const int shown = 24;
        return "the repository offers: " + string.Join(", ", models.Take(shown).Select(m => m.Parts.Count == 1 ? m.Parts[0] : $"{m.Model} ({m.Parts.Count} parts)"))
               + (models.Count > shown ? $", … ({models.Count} in all)" : "");
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

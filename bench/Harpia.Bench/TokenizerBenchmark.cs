using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Harpia.Tokenization;

namespace Harpia.Bench;

/// <summary>
/// Encodes ≥ 1 MiB of mixed text with Harpia's tokenizer and with Hugging Face tokenizers (Rust, Node binding), on
/// one thread each, and prints MB/s and tokens/s for both; the two id sequences must agree (count and checksum).
/// usage: tokenizer [--tokenizer PATH] [--runs N] [--no-node]
/// </summary>
public static class TokenizerBenchmark
{
    public static int Run(string[] args)
    {
        string repo = FindRepoRoot();
        string tokenizerPath = Path.GetFullPath(Path.Combine(repo, "..", "shared", "fixtures", "falcon", "tokenizer.json"));
        int runs = 5;
        bool node = true;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--tokenizer": tokenizerPath = args[++i]; break;
                case "--runs": runs = int.Parse(args[++i]); break;
                case "--no-node": node = false; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        string textPath = WriteBenchmarkText(repo);
        string text = File.ReadAllText(textPath, Encoding.UTF8);
        long bytes = Encoding.UTF8.GetByteCount(text);
        Console.WriteLine($"text: {textPath} — {bytes:N0} bytes, {text.Split('\n').Length:N0} lines");

        var sw = Stopwatch.StartNew();
        var tokenizer = HfTokenizer.Load(tokenizerPath);
        Console.WriteLine($"harpia: loaded {tokenizerPath} in {sw.Elapsed.TotalMilliseconds:F0} ms");
        var lines = text.Split('\n');

        sw.Restart();
        var ids = tokenizer.Encode(text);
        double coldMs = sw.Elapsed.TotalMilliseconds;
        // Warm-up beyond the first call: a few thousand short calls let the JIT promote the hot paths to tier 1
        // (a long-running server is in that state; the Rust library is compiled ahead of time).
        foreach (var line in lines) tokenizer.Encode(line);
        tokenizer.Encode(text);
        var documentMs = new List<double>();
        for (int r = 0; r < runs; r++)
        {
            sw.Restart();
            ids = tokenizer.Encode(text);
            documentMs.Add(sw.Elapsed.TotalMilliseconds);
        }
        var linesMs = new List<double>();
        long lineTokens = 0;
        for (int r = 0; r < runs; r++)
        {
            lineTokens = 0;
            sw.Restart();
            foreach (var line in lines) lineTokens += tokenizer.Encode(line).Count;
            linesMs.Add(sw.Elapsed.TotalMilliseconds);
        }
        uint checksum = Checksum(ids);
        Report("harpia  document", bytes, ids.Count, documentMs);
        Console.WriteLine($"harpia  document (cold, first call, empty word cache): {bytes / 1e6 / (coldMs / 1e3):F2} MB/s");
        Report("harpia  per line", bytes, lineTokens, linesMs);

        // Microsoft.ML.Tokenizers (evaluated first, see docs/TOKENIZER.md): same text, document mode.
        var ml = MlTokenizersPeer.Create(tokenizerPath);
        var mlIds = ml.EncodeToIds(text);
        var mlMs = new List<double>();
        for (int r = 0; r < runs; r++)
        {
            sw.Restart();
            mlIds = ml.EncodeToIds(text);
            mlMs.Add(sw.Elapsed.TotalMilliseconds);
        }
        Report("ml-tokenizers document", bytes, mlIds.Count, mlMs);
        string differential = Path.Combine(repo, "tests", "Harpia.Tests", "Tokenization", "Data", "falcon-differential.jsonl");
        var (equal, total) = MlTokenizersPeer.Agreement(ml, differential);
        Console.WriteLine($"ml-tokenizers: benchmark ids {(mlIds.SequenceEqual(ids) ? "identical" : "DIFFER")}; " +
                          $"stress cases (falcon-differential.jsonl) exact: {equal}/{total}");

        if (!node) return 0;
        var peer = RunNode(repo, tokenizerPath, textPath, runs);
        if (peer is null) return 1;
        Report("hf-rust document", peer.Value.Bytes, peer.Value.Tokens, peer.Value.DocumentMs);
        Report("hf-rust per line", peer.Value.Bytes, peer.Value.LineTokens, peer.Value.LinesMs);
        bool same = peer.Value.Tokens == ids.Count && peer.Value.Checksum == checksum;
        Console.WriteLine(same ? $"ids: identical ({ids.Count:N0} tokens, checksum {checksum})"
            : $"ids: DIFFER (harpia {ids.Count} / {checksum}, hf {peer.Value.Tokens} / {peer.Value.Checksum})");
        return same ? 0 : 1;
    }

    /// <summary>
    /// The benchmark text: the 167 texts of falcon-cases.json (the Portuguese guide, license prose, code, numbers,
    /// whitespace runs, CJK, emoji, accents, inline special tokens), shuffled with a fixed seed, repeated until the
    /// text reaches 1 MiB, one text per line.
    /// </summary>
    private static string WriteBenchmarkText(string repo)
    {
        string cases = Path.GetFullPath(Path.Combine(repo, "..", "shared", "fixtures", "tokenizer", "falcon-cases.json"));
        using var doc = JsonDocument.Parse(File.ReadAllBytes(cases));
        var texts = doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => c.GetProperty("text").GetString()!).ToArray();
        var rng = new Random(42);
        var sb = new StringBuilder();
        long size = 0;
        while (size < 1 << 20)
        {
            foreach (var t in texts.OrderBy(_ => rng.Next()))
            {
                if (sb.Length > 0) { sb.Append('\n'); size++; }
                // Newlines inside a case would break the per-line mode; keep them as spaces there.
                string line = t.Replace('\n', ' ');
                sb.Append(line);
                size += Encoding.UTF8.GetByteCount(line);
            }
        }
        string dir = Path.Combine(repo, "artifacts", "bench");
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "tokenizer-text.txt");
        File.WriteAllText(path, sb.ToString(), new UTF8Encoding(false));
        return path;
    }

    private static uint Checksum(IReadOnlyList<int> ids)
    {
        uint sum = 0;
        for (int i = 0; i < ids.Count; i++) sum = unchecked(sum + (uint)ids[i] * (uint)(i + 1));
        return sum;
    }

    private static void Report(string name, long bytes, long tokens, List<double> ms)
    {
        double best = ms.Min(), median = ms.Order().ElementAt(ms.Count / 2);
        Console.WriteLine($"{name}: median {bytes / 1e6 / (median / 1e3),7:F2} MB/s {tokens / (median / 1e3) / 1e6,6:F2} M tokens/s" +
                          $"  (best {bytes / 1e6 / (best / 1e3):F2} MB/s; runs ms: {string.Join(", ", ms.Select(m => m.ToString("F0")))})");
    }

    private readonly record struct NodeResult(long Bytes, long Tokens, uint Checksum, List<double> DocumentMs, long LineTokens, List<double> LinesMs);

    private static NodeResult? RunNode(string repo, string tokenizerPath, string textPath, int runs)
    {
        string dir = Path.Combine(repo, "bench", "tokenizers-node");
        if (!Directory.Exists(Path.Combine(dir, "node_modules")))
        {
            Console.Error.WriteLine($"hf-rust: run `npm install` in {dir} first (or pass --no-node)");
            return null;
        }
        var psi = new ProcessStartInfo("node", [Path.Combine(dir, "bench.mjs"), tokenizerPath, textPath, runs.ToString()])
        {
            WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        psi.Environment["TOKENIZERS_PARALLELISM"] = "false";
        psi.Environment["RAYON_NUM_THREADS"] = "1";
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        string errors = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) { Console.Error.WriteLine($"hf-rust: node failed ({p.ExitCode}): {errors}"); return null; }
        using var json = JsonDocument.Parse(output.Trim().Split('\n')[^1]);
        var r = json.RootElement;
        List<double> Ms(string name) => r.GetProperty(name).EnumerateArray().Select(x => x.GetDouble()).ToList();
        return new NodeResult(r.GetProperty("bytes").GetInt64(), r.GetProperty("tokens").GetInt64(), r.GetProperty("checksum").GetUInt32(),
            Ms("runs_ms"), r.GetProperty("line_tokens").GetInt64(), Ms("lines_ms"));
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Harpia.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? Directory.GetCurrentDirectory();
    }
}

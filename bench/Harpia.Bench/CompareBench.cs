using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Runtime;
using Harpia.Tensors;

namespace Harpia.Bench;

/// <summary>
/// `compare MODEL.gguf`: llama.cpp (LLamaSharp) and Harpia on the same GGUF file in one run, llama-bench style
/// (pp P = one forward of P random tokens on an empty cache, tg G = G single-token steps), with the machine's read
/// bandwidth and the decode roofline (weight bytes per token ÷ bandwidth).
/// <para>
/// Each repetition runs each engine in a fresh child process of this harness (`llamacpp-json` / `harpia-json`, one
/// JSON line on stdout) so that peak RSS is the engine's own; the order alternates from rep to rep so that noise on a
/// shared machine hits both engines alike. Each child warms up (llama.cpp: one prompt and a 4-token decode, as in
/// llama-bench; Harpia: rounds of both for at least --warmup seconds, for the tiered JIT) and then times one pp and
/// one tg. Means ± sd are over the reps; peak RSS is the largest of an engine's children.
/// </para>
/// </summary>
public static class CompareBench
{
    private sealed record Options(string Model, int PromptTokens, int GenTokens, int Threads, int Reps, double Warmup, long BandwidthMb, bool Json, bool Markdown);

    /// <summary>One engine's numbers from one child process.</summary>
    private sealed record EngineRun(string Engine, string Library, double PrefillTokS, double DecodeTokS, long? PeakRssBytes, long? WeightBytesPerToken);

    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public static int Run(string[] args) => Entry(args, "compare", o => Compare(o));

    /// <summary>Child: llama.cpp measured in this (fresh) process; one JSON line.</summary>
    public static int RunLlamaCppJson(string[] args) => Entry(args, "llamacpp-json", o =>
    {
        var r = LlamaCppBench.Measure(o.Model, o.PromptTokens, o.GenTokens, o.Threads, o.Reps, verbose: false);
        WriteChild(new EngineRun("llama.cpp", r.Library, r.PromptTokS, r.GenTokS, Math.Max(r.PeakRssBytes, ModelBenchmark.ResidentMemory().PeakBytes ?? 0), null));
        return 0;
    });

    /// <summary>Child: Harpia's <see cref="ModelBenchmark"/> in this (fresh) process; one JSON line.</summary>
    public static int RunHarpiaJson(string[] args) => Entry(args, "harpia-json", o =>
    {
        ComputePool.Threads = o.Threads;
        using var model = ModelHost.LoadModel(o.Model);
        var r = ModelBenchmark.Run(model, o.PromptTokens, o.GenTokens, o.Reps, o.Warmup);
        WriteChild(new EngineRun("harpia", $"Harpia (.NET {Environment.Version})", r.PrefillTokensPerSecond, r.DecodeTokensPerSecond,
            r.PeakRssBytes, r.WeightBytesPerToken));
        return 0;
    });

    private static void WriteChild(EngineRun r) => Console.WriteLine(JsonSerializer.Serialize(r));

    private static int Entry(string[] args, string name, Func<Options, int> body)
    {
        Options o;
        try { o = Parse(args, name); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"{name}: {e.Message}");
            Console.Error.WriteLine($"usage: {name} MODEL.gguf [--prompt-tokens 512] [--gen-tokens 128] [--threads 2] [--reps 3] [--warmup 1.5] [--bw-mb 1024] [--json] [--markdown]");
            return 2;
        }
        try { return body(o); }
        catch (HarpiaException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static Options Parse(string[] args, string name)
    {
        if (args.Length == 0 || args[0].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException("give the GGUF file first");
        string model = args[0];
        int pp = 512, tg = 128, threads = 2, reps = 3;
        double warmup = ModelBenchmark.DefaultWarmupSeconds;
        long bwMb = 1024;
        bool json = false, markdown = false;
        for (int i = 1; i < args.Length; i++)
        {
            string flag = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{flag} needs a value");
            int Positive() => int.TryParse(Next(), NumberStyles.None, C, out int v) && v >= 1 ? v : throw new ArgumentException($"{flag} must be a positive integer, got '{args[i]}'");
            switch (flag)
            {
                case "--prompt-tokens": pp = Positive(); break;
                case "--gen-tokens": tg = Positive(); break;
                case "--threads": threads = Positive(); break;
                case "--reps": reps = Positive(); break;
                case "--bw-mb": bwMb = Positive(); break;
                case "--warmup":
                    warmup = double.TryParse(Next(), NumberStyles.Float, C, out double w) && w >= 0 && double.IsFinite(w) ? w
                        : throw new ArgumentException($"--warmup must be a number of seconds ≥ 0, got '{args[i]}'");
                    break;
                case "--json" when name == "compare": json = true; break;
                case "--markdown" when name == "compare": markdown = true; break;
                default: throw new ArgumentException($"unknown option {flag}");
            }
        }
        if (json && markdown) throw new ArgumentException("give --json or --markdown, not both");
        if (!File.Exists(model)) throw new ArgumentException($"{model}: no such file");
        return new Options(model, pp, tg, threads, reps, warmup, bwMb, json, markdown);
    }

    private static int Compare(Options o)
    {
        string load0 = LoadAverage();
        Console.Error.WriteLine($"compare: read bandwidth over {o.BandwidthMb} MB, {o.Threads} threads…");
        double bandwidth = MatVecBench.ReadBandwidth(o.BandwidthMb << 20, o.Threads); // GB/s, fastest pass over ~2 s

        var llama = new List<EngineRun>();
        var harpia = new List<EngineRun>();
        for (int rep = 0; rep < o.Reps; rep++)
        {
            bool llamaFirst = rep % 2 == 0;
            foreach (bool isLlama in llamaFirst ? new[] { true, false } : [false, true])
            {
                string mode = isLlama ? "llamacpp-json" : "harpia-json";
                Console.Error.WriteLine($"compare: rep {rep + 1}/{o.Reps}: {(isLlama ? "llama.cpp" : "Harpia")}…");
                (isLlama ? llama : harpia).Add(RunChild(mode, o));
            }
        }
        string load1 = LoadAverage();

        long bytesPerToken = harpia[0].WeightBytesPerToken ?? throw new InvalidOperationException("Harpia's child did not report weight bytes per token");
        double bound = bandwidth * 1e9 / bytesPerToken;
        var l = Summary.Of(llama, bound);
        var h = Summary.Of(harpia, bound);
        var ratios = new Ratios(h.Prefill / l.Prefill, h.Decode / l.Decode, h.PeakRss is long hr && l.PeakRss is long lr && lr > 0 ? (double)hr / lr : null);

        if (o.Json)
        {
            var json = new JsonObject
            {
                ["model"] = o.Model,
                ["prompt_tokens"] = o.PromptTokens,
                ["gen_tokens"] = o.GenTokens,
                ["threads"] = o.Threads,
                ["reps"] = o.Reps,
                ["load_average_start"] = load0,
                ["load_average_end"] = load1,
                ["read_bandwidth_gb_s"] = bandwidth,
                ["read_bandwidth_buffer_mb"] = o.BandwidthMb,
                ["weight_bytes_per_token"] = bytesPerToken,
                ["decode_upper_bound_tokens_per_s"] = bound,
                ["llamacpp"] = l.ToJson(),
                ["harpia"] = h.ToJson(),
                ["ratios"] = new JsonObject { ["prefill"] = ratios.Prefill, ["decode"] = ratios.Decode, ["peak_rss"] = ratios.PeakRss },
            };
            Console.WriteLine(json.ToJsonString());
        }
        else if (o.Markdown)
        {
            // One row for docs/BENCHMARKS.md; the header is printed too so the columns can be checked.
            Console.WriteLine($"| model | threads | pp{o.PromptTokens} llama.cpp | pp{o.PromptTokens} Harpia | ratio | tg{o.GenTokens} llama.cpp | tg{o.GenTokens} Harpia | ratio | " +
                              "peak RSS MB llama.cpp / Harpia | ratio | read GB/s | decode roofline tok/s | llama.cpp % | Harpia % |");
            Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            Console.WriteLine(string.Create(C, $"| {Path.GetFileName(o.Model)} | {o.Threads} | {l.PrefillText} | {h.PrefillText} | {ratios.Prefill:F2}× | " +
                $"{l.DecodeText} | {h.DecodeText} | {ratios.Decode:F2}× | {Mb(l.PeakRss)} / {Mb(h.PeakRss)} | {Ratio(ratios.PeakRss)} | " +
                $"{bandwidth:F1} | {bound:F0} | {l.RooflinePct:F1}% | {h.RooflinePct:F1}% |"));
            Console.WriteLine();
            Console.WriteLine(string.Create(C, $"({o.Reps} reps, engines alternating, each rep a fresh process per engine; read bandwidth = streaming sum over " +
                $"{o.BandwidthMb} MB, {o.Threads} threads, fastest pass; {bytesPerToken / 1e6:F2} MB of weights per decoded token; load average {load0} → {load1})"));
        }
        else
        {
            Console.WriteLine($"compare {Path.GetFileName(o.Model)}: pp{o.PromptTokens}, tg{o.GenTokens}, {o.Threads} threads, {o.Reps} reps " +
                              "(engines alternate; each rep is a fresh process per engine)");
            Console.WriteLine($"load average: {load0} → {load1}");
            Console.WriteLine();
            Console.WriteLine($"{"engine",-20} {"pp" + o.PromptTokens + " tok/s",22} {"tg" + o.GenTokens + " tok/s",20} {"peak RSS MB",12} {"% roofline",11}");
            Console.WriteLine($"{"llama.cpp",-20} {l.PrefillText,22} {l.DecodeText,20} {Mb(l.PeakRss),12} {l.RooflinePct,10:F1}%");
            Console.WriteLine($"{"Harpia",-20} {h.PrefillText,22} {h.DecodeText,20} {Mb(h.PeakRss),12} {h.RooflinePct,10:F1}%");
            Console.WriteLine(string.Create(C, $"{"Harpia / llama.cpp",-20} {ratios.Prefill,21:F2}× {ratios.Decode,19:F2}× {Ratio(ratios.PeakRss),12}"));
            Console.WriteLine();
            Console.WriteLine(string.Create(C, $"read bandwidth: {bandwidth:F1} GB/s (streaming sum over {o.BandwidthMb} MB, {o.Threads} threads, fastest pass over ~2 s)"));
            Console.WriteLine(string.Create(C, $"weights read per decoded token: {bytesPerToken / 1e6:F2} MB → decode upper bound {bound:F0} tok/s"));
            Console.WriteLine($"llama.cpp: {llama[0].Library}; Harpia: {harpia[0].Library}");
        }
        return 0;
    }

    private sealed record Ratios(double Prefill, double Decode, double? PeakRss);

    private sealed record Summary(double Prefill, double PrefillSd, double Decode, double DecodeSd, long? PeakRss, double RooflinePct, IReadOnlyList<EngineRun> Runs)
    {
        public static Summary Of(IReadOnlyList<EngineRun> runs, double bound)
        {
            var pp = runs.Select(r => r.PrefillTokS).ToArray();
            var tg = runs.Select(r => r.DecodeTokS).ToArray();
            long? rss = runs.All(r => r.PeakRssBytes is null) ? null : runs.Max(r => r.PeakRssBytes ?? 0);
            return new Summary(pp.Average(), ModelBenchmark.StandardDeviation(pp), tg.Average(), ModelBenchmark.StandardDeviation(tg), rss, 100 * tg.Average() / bound, runs);
        }

        public string PrefillText => string.Create(C, $"{Prefill:F1} ± {PrefillSd:F1}");
        public string DecodeText => string.Create(C, $"{Decode:F1} ± {DecodeSd:F1}");

        public JsonObject ToJson() => new()
        {
            ["library"] = Runs[0].Library,
            ["prefill_tokens_per_s"] = Prefill,
            ["prefill_tokens_per_s_sd"] = PrefillSd,
            ["decode_tokens_per_s"] = Decode,
            ["decode_tokens_per_s_sd"] = DecodeSd,
            ["prefill_samples"] = new JsonArray(Runs.Select(r => (JsonNode?)r.PrefillTokS).ToArray()),
            ["decode_samples"] = new JsonArray(Runs.Select(r => (JsonNode?)r.DecodeTokS).ToArray()),
            ["peak_rss_bytes"] = PeakRss,
            ["decode_roofline_pct"] = RooflinePct,
        };
    }

    /// <summary>Runs this harness again as <paramref name="mode"/> with one timed rep and parses its JSON line.</summary>
    private static EngineRun RunChild(string mode, Options o)
    {
        var psi = new ProcessStartInfo { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this process's executable");
        psi.FileName = host;
        if (Path.GetFileNameWithoutExtension(host).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            psi.ArgumentList.Add(typeof(CompareBench).Assembly.Location);
        foreach (var a in new[] { mode, o.Model, "--prompt-tokens", Str(o.PromptTokens), "--gen-tokens", Str(o.GenTokens),
                     "--threads", Str(o.Threads), "--reps", "1", "--warmup", o.Warmup.ToString("R", C) })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {host}");
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        string err = stderr.GetAwaiter().GetResult();
        string? line = stdout.Split('\n').Select(s => s.Trim()).LastOrDefault(s => s.StartsWith('{'));
        if (p.ExitCode != 0 || line is null)
            throw new HarpiaException($"{mode} exited with {p.ExitCode}: {(err.Trim().Length > 0 ? err.Trim() : stdout.Trim())}");
        return JsonSerializer.Deserialize<EngineRun>(line) ?? throw new HarpiaException($"{mode}: empty result line");
    }

    private static string Str(int v) => v.ToString(C);
    private static string Mb(long? bytes) => bytes is long b ? (b / 1e6).ToString("F0", C) : "n/a";
    private static string Ratio(double? r) => r is double v ? v.ToString("F2", C) + "×" : "n/a";
    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}

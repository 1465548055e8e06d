using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Runtime;

namespace Harpia.Operations;

public sealed record BatchJobOptions
{
    /// <summary>Requests in flight at once (the runtime batches their decode steps).</summary>
    public int Concurrency { get; init; } = 8;
    public int DefaultMaxNewTokens { get; init; } = 256;
}

public sealed record BatchJobResult(int Total, int AlreadyDone, int Completed, int Failed, bool Interrupted);

/// <summary>
/// Offline generation over a JSONL file of prompts that survives spot preemption: every finished item is appended
/// to the output file as one JSON line and flushed to disk before the next is reported, so a killed job loses at
/// most the items in flight. Running the same command again skips ids already in the output (a torn last line from
/// a hard kill is cut off first). Stopping (SIGTERM on a preempted VM) stops admitting new items and lets those in
/// flight finish.
/// Input line: <c>{"id": "q1", "inputs": "text", "parameters": {TGI parameters}}</c> (<c>prompt</c> is accepted for
/// <c>inputs</c>; a missing id becomes the line number). Output line: <c>{"id", "generated_text", "finish_reason",
/// "generated_tokens", "prompt_tokens", "seed"}</c>, or <c>{"id", "error"}</c> for an item that failed validation.
/// Sampled items without a seed get one derived from the id, so a re-run reproduces them.
/// </summary>
public sealed class BatchJob(ITextGenerator generator, BatchJobOptions? options = null)
{
    private readonly BatchJobOptions _options = options ?? new BatchJobOptions();

    public async Task<BatchJobResult> RunAsync(string inputPath, string outputPath, CancellationToken stopAdmitting,
        IProgress<int>? progress = null, CancellationToken abort = default)
    {
        if (!File.Exists(inputPath)) throw new HarpiaException($"{inputPath}: input file not found");
        var items = ReadInput(inputPath);
        var done = RecoverOutput(outputPath);
        var todo = items.Where(i => !done.Contains(i.Id)).ToList();
        int completed = 0, failed = 0;
        var writeLock = new SemaphoreSlim(1, 1);
        await using var output = new FileStream(outputPath, FileMode.Append, FileAccess.Write, FileShare.Read);

        async Task WriteLineAsync(JsonObject line)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(line.ToJsonString() + "\n");
            await writeLock.WaitAsync(abort);
            try
            {
                await output.WriteAsync(bytes, abort);
                await output.FlushAsync(abort);
                output.Flush(flushToDisk: true);
            }
            finally { writeLock.Release(); }
        }

        using var slots = new SemaphoreSlim(Math.Max(1, _options.Concurrency));
        var running = new List<Task>();
        bool interrupted = false;
        foreach (var item in todo)
        {
            try { await slots.WaitAsync(stopAdmitting); }
            catch (OperationCanceledException) { interrupted = true; break; }
            running.Add(Task.Run(async () =>
            {
                try
                {
                    var line = await RunItemAsync(item, abort);
                    await WriteLineAsync(line);
                    if (line.ContainsKey("error")) Interlocked.Increment(ref failed); else Interlocked.Increment(ref completed);
                    progress?.Report(done.Count + completed + failed);
                }
                finally { slots.Release(); }
            }, abort));
        }
        await Task.WhenAll(running);
        return new BatchJobResult(items.Count, done.Count, completed, failed, interrupted);
    }

    private async Task<JsonObject> RunItemAsync(BatchItem item, CancellationToken ct)
    {
        GenerationRequest request;
        try { request = BuildRequest(item); }
        catch (HarpiaException e) { return new JsonObject { ["id"] = item.Id, ["error"] = e.Message }; }
        var text = new StringBuilder();
        GenerationEvent? last = null;
        try
        {
            await foreach (var ev in generator.GenerateAsync(request, ct))
            {
                text.Append(ev.TextDelta);
                last = ev;
            }
        }
        catch (HarpiaException e) { return new JsonObject { ["id"] = item.Id, ["error"] = e.Message }; }
        return new JsonObject
        {
            ["id"] = item.Id,
            ["generated_text"] = text.ToString(),
            ["finish_reason"] = last?.Finish switch
            {
                FinishReason.EosToken => "eos_token", FinishReason.StopSequence => "stop_sequence", _ => "length",
            },
            ["generated_tokens"] = last?.GeneratedTokens ?? 0,
            ["prompt_tokens"] = last?.PromptTokens ?? request.PromptIds.Count,
            ["seed"] = request.Sampling.DoSample ? request.Sampling.Seed : null,
        };
    }

    private GenerationRequest BuildRequest(BatchItem item)
    {
        var p = item.Parameters;
        float? Num(string name) => p?[name] is JsonValue v && v.TryGetValue(out double d) ? (float)d : null;
        int? Int(string name) => p?[name] is JsonValue v && v.TryGetValue(out int i) ? i : null;
        float? temperature = Num("temperature"), topP = Num("top_p"), typicalP = Num("typical_p");
        int? topK = Int("top_k");
        bool doSample = (p?["do_sample"] is JsonValue ds && ds.TryGetValue(out bool b) && b)
                        || temperature is not null || topP is not null || topK is not null || typicalP is not null;
        ulong? seed = p?["seed"] is JsonValue sv && sv.TryGetValue(out ulong s) ? s : null;
        if (doSample) seed ??= StableSeed(item.Id);
        var stop = p?["stop"] is JsonArray arr ? arr.Select(n => n?.GetValue<string>() ?? "").Where(x => x.Length > 0).ToList() : [];
        int maxNew = Int("max_new_tokens") ?? _options.DefaultMaxNewTokens;
        if (maxNew <= 0) throw new HarpiaException("`max_new_tokens` must be strictly positive");
        if (item.Inputs.Length == 0) throw new HarpiaException("`inputs` cannot be empty");
        return new GenerationRequest
        {
            PromptIds = generator.Tokenizer.Encode(item.Inputs),
            MaxNewTokens = maxNew,
            StopSequences = stop,
            Sampling = new SamplingParameters
            {
                DoSample = doSample,
                Temperature = temperature ?? 1f,
                TopK = topK ?? 0,
                TopP = topP ?? 1f,
                TypicalP = typicalP ?? 1f,
                RepetitionPenalty = Num("repetition_penalty") ?? 1f,
                FrequencyPenalty = Num("frequency_penalty") ?? 0f,
                PresencePenalty = Num("presence_penalty") ?? 0f,
                Seed = seed,
            },
        };
    }

    /// <summary>FNV-1a of the id: a seed that is the same on every run and every machine.</summary>
    internal static ulong StableSeed(string id)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte c in Encoding.UTF8.GetBytes(id)) { h ^= c; h *= 1099511628211UL; }
        return h;
    }

    private sealed record BatchItem(string Id, string Inputs, JsonObject? Parameters);

    private static List<BatchItem> ReadInput(string path)
    {
        var items = new List<BatchItem>();
        var ids = new HashSet<string>();
        int lineNo = 0;
        foreach (string raw in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(raw)) continue;
            JsonObject obj;
            try { obj = JsonNode.Parse(raw) as JsonObject ?? throw new JsonException("not an object"); }
            catch (JsonException e) { throw new HarpiaException($"{path}:{lineNo}: not a JSON object ({e.Message})"); }
            string id = obj["id"] switch
            {
                null => lineNo.ToString(),
                JsonValue v when v.TryGetValue(out string? s) => s!,
                JsonValue v => v.ToJsonString(),
                _ => throw new HarpiaException($"{path}:{lineNo}: `id` must be a string or number"),
            };
            string? inputs = (obj["inputs"] ?? obj["prompt"]) is JsonValue iv && iv.TryGetValue(out string? t) ? t : null;
            if (inputs is null) throw new HarpiaException($"{path}:{lineNo}: needs a string `inputs` (or `prompt`)");
            if (!ids.Add(id)) throw new HarpiaException($"{path}:{lineNo}: duplicate id '{id}'");
            items.Add(new BatchItem(id, inputs, obj["parameters"] as JsonObject));
        }
        return items;
    }

    /// <summary>Ids already answered in the output; cuts off a torn last line left by a hard kill.</summary>
    private static HashSet<string> RecoverOutput(string path)
    {
        var done = new HashSet<string>();
        if (!File.Exists(path)) return done;
        byte[] bytes = File.ReadAllBytes(path);
        int end = bytes.Length;
        if (end > 0 && bytes[end - 1] != (byte)'\n')
        {
            int lastNl = Array.LastIndexOf(bytes, (byte)'\n');
            end = lastNl + 1;
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Write);
            fs.SetLength(end);
        }
        int lineNo = 0;
        foreach (string line in Encoding.UTF8.GetString(bytes, 0, end).Split('\n'))
        {
            lineNo++;
            if (line.Length == 0) continue;
            try
            {
                if (JsonNode.Parse(line)?["id"] is JsonValue v && v.TryGetValue(out string? id)) done.Add(id!);
            }
            catch (JsonException e) { throw new HarpiaException($"{path}:{lineNo}: existing output line is not JSON ({e.Message}); refusing to append to it"); }
        }
        return done;
    }
}

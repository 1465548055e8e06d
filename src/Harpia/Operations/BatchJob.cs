using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Harpia.Chat;
using Harpia.Runtime;

namespace Harpia.Operations;

public sealed record BatchJobOptions
{
    /// <summary>Requests in flight at once (the runtime batches their decode steps).</summary>
    public int Concurrency { get; init; } = 8;
    /// <summary>Tokens to generate when a TGI line or a chat request names no limit (cut to fit the context).</summary>
    public int DefaultMaxNewTokens { get; init; } = 256;
}

public sealed record BatchJobResult(int Total, int AlreadyDone, int Completed, int Failed, bool Interrupted);

/// <summary>Where a running job stands: <see cref="Done"/> of <see cref="Total"/> lines have a record in the output.</summary>
public readonly record struct BatchProgress(int Total, int AlreadyDone, int Completed, int Failed)
{
    public int Done => AlreadyDone + Completed + Failed;
}

/// <summary>
/// Offline generation over a JSONL file of requests that survives spot preemption: every finished request is appended
/// to the output file as one JSON line, written in one call and fsynced before the next is reported, so a killed job
/// loses at most the requests in flight. Running the same command again skips keys already in the output (a torn last
/// line from a hard kill is cut off first). Stopping (SIGTERM on a preempted VM) stops admitting new requests and lets
/// those in flight finish.
/// <para>Two line formats, one per line (a file may mix them):</para>
/// <list type="bullet">
/// <item>OpenAI's Batch API: <c>{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions",
/// "body": {request}}</c>, answered as OpenAI's batch output <c>{"id": "batch_req_…", "custom_id", "response":
/// {"status_code", "request_id", "body"}, "error"}</c>; a request the body makes invalid gets status 400 and an
/// OpenAI error body. Its key is <c>custom_id</c>.</item>
/// <item>TGI's: <c>{"id", "inputs", "parameters": {TGI parameters}}</c> (<c>prompt</c> is accepted for
/// <c>inputs</c>; a missing id becomes the line number), answered as <c>{"id", "generated_text", "finish_reason",
/// "generated_tokens", "prompt_tokens", "seed"}</c> or <c>{"id", "error"}</c>. Its key is <c>id</c>.</item>
/// </list>
/// A line that is not a request at all (not JSON, no key) gets an error record keyed <c>line-N</c>, shaped like the
/// file's first request; it never stops the job. Two lines with one key do: the output could not tell them apart.
/// Output records are in completion order, not input order. Sampled requests without a seed get one derived from
/// their key, so a re-run reproduces them; record and response ids are derived from the key too.
/// </summary>
public sealed class BatchJob(ITextGenerator generator, BatchJobOptions? options = null)
{
    private readonly BatchJobOptions _options = options ?? new BatchJobOptions();
    private readonly ChatPromptFormatter _chat = new(generator.Model.ChatTemplate, generator.Model.BosToken, generator.Model.EosToken);

    /// <summary>Text as it is (no \u003E for '>'): the output is JSONL for programs and people, never HTML.</summary>
    private static readonly JsonSerializerOptions OutputJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public const string ChatCompletionsUrl = "/v1/chat/completions";
    public const string CompletionsUrl = "/v1/completions";

    public async Task<BatchJobResult> RunAsync(string inputPath, string outputPath, CancellationToken stopAdmitting,
        IProgress<BatchProgress>? progress = null, CancellationToken abort = default)
    {
        if (!File.Exists(inputPath)) throw new HarpiaException($"{inputPath}: input file not found");
        var items = ReadInput(inputPath);
        var done = RecoverOutput(outputPath);
        var todo = items.Where(i => !done.Contains(i.Key)).ToList();
        int alreadyDone = items.Count - todo.Count;
        int completed = 0, failed = 0;
        var writeLock = new SemaphoreSlim(1, 1);
        await using var output = new FileStream(outputPath, FileMode.Append, FileAccess.Write, FileShare.Read);
        progress?.Report(new BatchProgress(items.Count, alreadyDone, 0, 0));

        async Task WriteLineAsync(JsonObject line)
        {
            // One write of the whole line, then fsync: a kill leaves whole lines and at most one torn last line.
            byte[] bytes = Encoding.UTF8.GetBytes(line.ToJsonString(OutputJson) + "\n");
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
                    var (line, ok) = await RunItemAsync(item, abort);
                    await WriteLineAsync(line);
                    if (ok) Interlocked.Increment(ref completed); else Interlocked.Increment(ref failed);
                    progress?.Report(new BatchProgress(items.Count, alreadyDone, Volatile.Read(ref completed), Volatile.Read(ref failed)));
                }
                finally { slots.Release(); }
            }, abort));
        }
        await Task.WhenAll(running);
        return new BatchJobResult(items.Count, alreadyDone, completed, failed, interrupted);
    }

    // ------------------------------------------------------------------ one request

    private async Task<(JsonObject Line, bool Ok)> RunItemAsync(BatchItem item, CancellationToken ct)
    {
        if (item.LineError is { } lineError) return (ErrorRecord(item, lineError), false);
        Planned plan;
        try { plan = item.Kind == LineKind.OpenAi ? PlanOpenAi(item) : PlanTgi(item); }
        catch (HarpiaException e) { return (ErrorRecord(item, e.Message), false); }
        var text = new StringBuilder();
        GenerationEvent? last = null;
        try
        {
            await foreach (var ev in generator.GenerateAsync(plan.Request, ct))
            {
                text.Append(ev.TextDelta);
                last = ev;
            }
        }
        catch (HarpiaException e) { return (ErrorRecord(item, e.Message), false); }
        int promptTokens = last?.PromptTokens is > 0 ? last.PromptTokens : plan.Request.PromptIds.Count;
        int generated = last?.GeneratedTokens ?? 0;
        var finish = last?.Finish ?? FinishReason.Length;
        if (item.Kind == LineKind.Tgi)
        {
            return (new JsonObject
            {
                ["id"] = item.Key,
                ["generated_text"] = text.ToString(),
                ["finish_reason"] = finish switch
                {
                    FinishReason.EosToken => "eos_token", FinishReason.StopSequence => "stop_sequence", _ => "length",
                },
                ["generated_tokens"] = generated,
                ["prompt_tokens"] = promptTokens,
                ["seed"] = plan.Request.Sampling.DoSample ? plan.Request.Sampling.Seed : null,
            }, true);
        }
        string hex = KeyHex(item.Key);
        string openAiFinish = finish == FinishReason.Length ? "length" : "stop";
        bool chat = plan.Url == ChatCompletionsUrl;
        var choice = chat
            ? new JsonObject { ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text.ToString() }, ["logprobs"] = null, ["finish_reason"] = openAiFinish }
            : new JsonObject { ["index"] = 0, ["text"] = text.ToString(), ["logprobs"] = null, ["finish_reason"] = openAiFinish };
        var body = new JsonObject
        {
            ["id"] = (chat ? "chatcmpl-" : "cmpl-") + hex,
            ["object"] = chat ? "chat.completion" : "text_completion",
            ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            ["model"] = generator.Model.ModelId,
            ["choices"] = new JsonArray(choice),
            ["usage"] = new JsonObject { ["prompt_tokens"] = promptTokens, ["completion_tokens"] = generated, ["total_tokens"] = promptTokens + generated },
        };
        return (OpenAiRecord(item.Key, new JsonObject { ["status_code"] = 200, ["request_id"] = "req_" + hex, ["body"] = body }, null), true);
    }

    private static JsonObject OpenAiRecord(string? customId, JsonObject? response, JsonObject? error) => new()
    {
        ["id"] = customId is null ? null : "batch_req_" + KeyHex(customId),
        ["custom_id"] = customId,
        ["response"] = response,
        ["error"] = error,
    };

    /// <summary>The failure record in the line's format (the file's first format for a line that is no request).</summary>
    private static JsonObject ErrorRecord(BatchItem item, string message)
    {
        if (item.Kind == LineKind.Tgi) return new JsonObject { ["id"] = item.Key, ["error"] = message };
        if (item.LineError is not null && !item.HasOwnKey)
        {
            // No custom_id to answer under: OpenAI's batch-level error, keyed by the line so a re-run skips it.
            var record = OpenAiRecord(null, null, new JsonObject { ["code"] = "invalid_request_line", ["message"] = message });
            record["id"] = item.Key;
            return record;
        }
        string hex = KeyHex(item.Key);
        return OpenAiRecord(item.Key, new JsonObject
        {
            ["status_code"] = 400,
            ["request_id"] = "req_" + hex,
            ["body"] = new JsonObject
            {
                ["error"] = new JsonObject { ["message"] = message, ["type"] = "invalid_request_error", ["param"] = null, ["code"] = null },
            },
        }, null);
    }

    private sealed record Planned(GenerationRequest Request, string? Url);

    private Planned PlanTgi(BatchItem item)
    {
        var p = item.Line!["parameters"] switch
        {
            null => null,
            JsonObject o => o,
            _ => throw new HarpiaException("`parameters` must be an object"),
        };
        float? temperature = Number(p, "temperature"), topP = Number(p, "top_p"), typicalP = Number(p, "typical_p");
        int? topK = Integer(p, "top_k");
        bool doSample = Bool(p, "do_sample") == true || temperature is not null || topP is not null || topK is not null || typicalP is not null;
        ulong? seed = Seed(p, "seed");
        if (doSample) seed ??= StableSeed(item.Key);
        string inputs = item.Inputs!;
        if (inputs.Length == 0) throw new HarpiaException("`inputs` cannot be empty");
        var prompt = generator.Tokenizer.Encode(inputs);
        int maxNew = Integer(p, "max_new_tokens") ?? DefaultMaxNew(prompt.Count);
        if (maxNew <= 0) throw new HarpiaException("`max_new_tokens` must be strictly positive");
        return new Planned(new GenerationRequest
        {
            PromptIds = prompt,
            MaxNewTokens = maxNew,
            StopSequences = Stops(p?["stop"], "stop"),
            KeepStopSequence = true, // TGI's generated_text keeps the stop text
            Sampling = new SamplingParameters
            {
                DoSample = doSample,
                Temperature = temperature ?? 1f,
                TopK = topK ?? 0,
                TopP = topP ?? 1f,
                TypicalP = typicalP ?? 1f,
                RepetitionPenalty = Number(p, "repetition_penalty") ?? 1f,
                FrequencyPenalty = Number(p, "frequency_penalty") ?? 0f,
                PresencePenalty = Number(p, "presence_penalty") ?? 0f,
                Seed = seed,
            },
        }, null);
    }

    /// <summary>
    /// An OpenAI request body as the server reads it: temperature 0 is greedy, anything else (the default 1 included)
    /// samples; <c>n</c> must be 1 and <c>stream</c> false (a batch record holds one whole answer).
    /// </summary>
    private Planned PlanOpenAi(BatchItem item)
    {
        var body = (JsonObject)item.Line!["body"]!;
        string url = item.Url!;
        if (Bool(body, "stream") == true) throw new HarpiaException("`stream` is not supported in a batch");
        if (Integer(body, "n") is { } n && n != 1) throw new HarpiaException($"`n` must be 1 in a batch. Given: {n}");
        if (body["tools"] is JsonArray { Count: > 0 }) throw new HarpiaException("`tools` are not supported by this server");
        float? temperature = Number(body, "temperature"), topP = Number(body, "top_p");
        float? frequency = Number(body, "frequency_penalty"), presence = Number(body, "presence_penalty");
        if (temperature is { } t && !(t >= 0 && t <= 2)) throw new HarpiaException("`temperature` must be >= 0.0 and <= 2.0");
        if (topP is { } tp && !(tp > 0 && tp <= 1)) throw new HarpiaException("`top_p` must be > 0.0 and <= 1.0");
        if (presence is { } pp && !(pp >= -2 && pp <= 2)) throw new HarpiaException("`presence_penalty` must be >= -2.0 and <= 2.0");
        if (frequency is { } fp && !(fp >= -2 && fp <= 2)) throw new HarpiaException("`frequency_penalty` must be >= -2.0 and <= 2.0");
        bool doSample = temperature != 0;
        ulong? seed = Seed(body, "seed");
        if (doSample) seed ??= StableSeed(item.Key);
        var stops = Stops(body["stop"], "stop");

        string prompt;
        int? maxTokens;
        if (url == ChatCompletionsUrl)
        {
            prompt = _chat.Format(ReadMessages(body["messages"]), addGenerationPrompt: true);
            stops = [.. stops, .. _chat.ImplicitStopSequences];
            maxTokens = Integer(body, "max_completion_tokens") ?? Integer(body, "max_tokens");
        }
        else
        {
            prompt = body["prompt"] switch
            {
                JsonValue v when v.TryGetValue(out string? s) => s!,
                JsonArray { Count: 1 } a when a[0] is JsonValue v && v.TryGetValue(out string? s) => s!,
                JsonArray => throw new HarpiaException("`prompt` must be one string in a batch (one request per line)"),
                null => throw new HarpiaException("missing field `prompt`"),
                _ => throw new HarpiaException("`prompt` must be a string"),
            };
            if (!string.IsNullOrEmpty(body["suffix"]?.ToString())) throw new HarpiaException("`suffix` is not supported by this server");
            maxTokens = Integer(body, "max_tokens") ?? 16; // OpenAI's legacy completions default
        }
        if (prompt.Length == 0) throw new HarpiaException("the prompt cannot be empty");
        var ids = generator.Tokenizer.Encode(prompt);
        int maxNew = maxTokens ?? DefaultMaxNew(ids.Count);
        if (maxNew <= 0) throw new HarpiaException("`max_tokens` must be strictly positive");
        return new Planned(new GenerationRequest
        {
            PromptIds = ids,
            MaxNewTokens = maxNew,
            StopSequences = stops,
            Sampling = new SamplingParameters
            {
                DoSample = doSample,
                Temperature = temperature is { } tt && tt > 0 ? tt : 1f,
                TopP = topP ?? 1f,
                FrequencyPenalty = frequency ?? 0f,
                PresencePenalty = presence ?? 0f,
                Seed = seed,
            },
        }, url);
    }

    /// <summary>The default limit, cut so that prompt + answer fit the model's context.</summary>
    private int DefaultMaxNew(int promptTokens) =>
        Math.Max(1, Math.Min(_options.DefaultMaxNewTokens, generator.Model.MaxPositionEmbeddings - promptTokens));

    private static List<ChatTurn> ReadMessages(JsonNode? node)
    {
        if (node is not JsonArray { Count: > 0 } messages) throw new HarpiaException("`messages` must be a non-empty array");
        var turns = new List<ChatTurn>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not JsonObject m) throw new HarpiaException($"`messages[{i}]` must be an object");
            string role = m["role"] is JsonValue rv && rv.TryGetValue(out string? r) ? r! : throw new HarpiaException($"`messages[{i}].role` is missing");
            if (role is not ("system" or "user" or "assistant" or "developer"))
                throw new HarpiaException($"`messages[{i}].role` '{role}' is not supported (system, user, assistant)");
            if (role == "developer") role = "system";
            string content = m["content"] switch
            {
                null => "",
                JsonValue cv when cv.TryGetValue(out string? s) => s!,
                JsonArray parts => string.Concat(parts.Select(part =>
                    part is JsonObject po && po["type"]?.GetValueKind() == JsonValueKind.String && (string?)po["type"] == "text"
                    && po["text"] is JsonValue tv && tv.TryGetValue(out string? text)
                        ? text
                        : throw new HarpiaException($"`messages[{i}].content`: only text parts ({{\"type\": \"text\", \"text\": …}}) are supported"))),
                _ => throw new HarpiaException($"`messages[{i}].content` must be a string or an array of text parts"),
            };
            turns.Add(new ChatTurn(role, content));
        }
        return turns;
    }

    // ------------------------------------------------------------------ typed reads of a JSON object, with named errors

    private static float? Number(JsonObject? o, string name) => o?[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => (float)v.GetValue<double>(),
        _ => throw new HarpiaException($"`{name}` must be a number"),
    };

    private static int? Integer(JsonObject? o, string name) => o?[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out int i) => i,
        _ => throw new HarpiaException($"`{name}` must be a whole number"),
    };

    private static bool? Bool(JsonObject? o, string name) => o?[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        _ => throw new HarpiaException($"`{name}` must be true or false"),
    };

    private static ulong? Seed(JsonObject? o, string name) => o?[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out ulong s) => s,
        _ => throw new HarpiaException($"`{name}` must be a whole number >= 0"),
    };

    private static List<string> Stops(JsonNode? node, string name) => node switch
    {
        null => [],
        JsonValue v when v.TryGetValue(out string? s) => s!.Length > 0 ? [s] : [],
        JsonArray a => a.Select(e => e is JsonValue ev && ev.TryGetValue(out string? s)
            ? s! : throw new HarpiaException($"`{name}` must be a string or an array of strings")).Where(s => s.Length > 0).ToList(),
        _ => throw new HarpiaException($"`{name}` must be a string or an array of strings"),
    };

    /// <summary>FNV-1a of the id: a seed that is the same on every run and every machine.</summary>
    internal static ulong StableSeed(string id)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte c in Encoding.UTF8.GetBytes(id)) { h ^= c; h *= 1099511628211UL; }
        return h;
    }

    private static string KeyHex(string key) => StableSeed(key).ToString("x16", CultureInfo.InvariantCulture);

    // ------------------------------------------------------------------ reading the input

    private enum LineKind { Tgi, OpenAi }

    /// <param name="Key">What the output record is found by on resume: custom_id, id, or line-N.</param>
    /// <param name="HasOwnKey">False when the line named no usable key (its key is line-N).</param>
    /// <param name="LineError">Why the line is no request (answered with an error record, never run).</param>
    private sealed record BatchItem(string Key, LineKind Kind, bool HasOwnKey, JsonObject? Line, string? Inputs, string? Url, string? LineError);

    private static List<BatchItem> ReadInput(string path)
    {
        var items = new List<BatchItem>();
        var keys = new Dictionary<string, int>();
        LineKind? fileKind = null;
        var pendingShape = new List<int>(); // lines with no request before the first request: shaped once the file's format is known
        int lineNo = 0;
        foreach (string raw in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(raw)) continue;
            var item = ReadLine(path, lineNo, raw);
            if (item.HasOwnKey) fileKind ??= item.Kind;
            else pendingShape.Add(items.Count);
            if (keys.TryGetValue(item.Key, out int first))
                throw new HarpiaException($"{path}:{lineNo}: duplicate id '{item.Key}' (first on line {first}); every request needs its own id");
            keys[item.Key] = lineNo;
            items.Add(item);
        }
        foreach (int i in pendingShape) items[i] = items[i] with { Kind = fileKind ?? LineKind.Tgi };
        return items;
    }

    private static BatchItem ReadLine(string path, int lineNo, string raw)
    {
        string where = $"{path}:{lineNo}";
        string lineKey = $"line-{lineNo}";
        BatchItem Broken(string why) => new(lineKey, LineKind.Tgi, false, null, null, null, $"{where}: {why}");
        JsonObject obj;
        try
        {
            if (JsonNode.Parse(raw) is not JsonObject o) return Broken("not a JSON object");
            obj = o;
        }
        catch (JsonException e) { return Broken($"not a JSON object ({e.Message})"); }

        if (obj.ContainsKey("custom_id"))
        {
            if (obj["custom_id"] is not JsonValue cv || !cv.TryGetValue(out string? customId) || customId!.Length == 0)
                return Broken("`custom_id` must be a non-empty string") with { Kind = LineKind.OpenAi };
            BatchItem OpenAi(string? url, string? error) => new(customId, LineKind.OpenAi, true, obj, null, url, error is null ? null : $"{where}: {error}");
            string? method = obj["method"] is JsonValue mv && mv.TryGetValue(out string? m) ? m : null;
            if (method != "POST") return OpenAi(null, $"`method` must be \"POST\"");
            string? url = obj["url"] is JsonValue uv && uv.TryGetValue(out string? u) ? u : null;
            if (url is not (ChatCompletionsUrl or CompletionsUrl))
                return OpenAi(null, $"`url` '{url}' is not supported ({ChatCompletionsUrl} or {CompletionsUrl})");
            if (obj["body"] is not JsonObject) return OpenAi(url, "`body` must be an object");
            return OpenAi(url, null);
        }

        string? id = obj["id"] switch
        {
            null => lineNo.ToString(CultureInfo.InvariantCulture),
            JsonValue v when v.TryGetValue(out string? s) => s!,
            JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.ToJsonString(),
            _ => null,
        };
        if (id is null) return Broken("`id` must be a string or number");
        string? inputs = (obj["inputs"] ?? obj["prompt"]) is JsonValue iv && iv.TryGetValue(out string? t) ? t : null;
        return new BatchItem(id, LineKind.Tgi, true, obj, inputs, null,
            inputs is null ? $"{where}: needs a string `inputs` (or `prompt`), or an OpenAI batch line with `custom_id`" : null);
    }

    /// <summary>Keys already answered in the output; cuts off a torn last line left by a hard kill.</summary>
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
            fs.Flush(flushToDisk: true);
        }
        int lineNo = 0;
        foreach (string line in Encoding.UTF8.GetString(bytes, 0, end).Split('\n'))
        {
            lineNo++;
            if (line.Length == 0) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { throw new HarpiaException($"{path}:{lineNo}: existing output line is not JSON ({e.Message}); refusing to append to it"); }
            // OpenAI records are keyed by custom_id; TGI records and records of lines with no key by id.
            string? key = node?["custom_id"] is JsonValue cv && cv.TryGetValue(out string? c) ? c
                : node?["id"] is JsonValue iv && iv.TryGetValue(out string? i) ? i : null;
            if (key is null) throw new HarpiaException($"{path}:{lineNo}: existing output line has neither `custom_id` nor `id`; is this a batch output file?");
            done.Add(key);
        }
        return done;
    }
}

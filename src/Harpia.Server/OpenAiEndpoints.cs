using System.Text;
using System.Text.Json;
using Harpia.Chat;
using Harpia.Runtime;
using Microsoft.AspNetCore.Http;

namespace Harpia.Server;

/// <summary>OpenAI's routes: /v1/chat/completions, /v1/completions, /v1/models.</summary>
internal sealed partial class HarpiaEndpoints
{
    string SystemFingerprint => $"{Version}-harpia";

    static long Now() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    static GenerationValidationException Invalid(string message) => new(message);

    static List<string> ReadStops(JsonElement? stop)
    {
        if (stop is not { } s || s.ValueKind == JsonValueKind.Null) return [];
        if (s.ValueKind == JsonValueKind.String) return [s.GetString()!];
        if (s.ValueKind == JsonValueKind.Array && s.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
            return s.EnumerateArray().Select(e => e.GetString()!).ToList();
        throw Invalid("`stop` must be a string or an array of strings");
    }

    /// <summary>OpenAI sampling onto TGI parameters, as TGI's chat route does: temperature 0 means greedy, otherwise sample.</summary>
    GenerateParametersDto OpenAiParameters(float? temperature, float? topP, long? seed, float? frequencyPenalty, float? presencePenalty,
        int? maxTokens, List<string> stops, int topN)
    {
        if (temperature is { } t && !(t >= 0 && t <= 2)) throw Invalid("`temperature` must be >= 0.0 and <= 2.0");
        if (presencePenalty is { } pp && !(pp >= -2 && pp <= 2)) throw Invalid("`presence_penalty` must be >= -2.0 and <= 2.0");
        if (seed is < 0) throw Invalid("`seed` must not be negative");
        bool greedy = temperature == 0;
        return new GenerateParametersDto
        {
            DoSample = !greedy,
            Temperature = greedy ? null : temperature,
            TopP = greedy ? null : topP,
            Seed = seed is { } s ? (ulong)s : null,
            FrequencyPenalty = frequencyPenalty,
            MaxNewTokens = maxTokens,
            Stop = stops,
            TopNTokens = topN,
            Details = true,
        };
    }

    static List<ChatTurn> ReadMessages(List<ChatMessageDto>? messages)
    {
        if (messages is null || messages.Count == 0) throw Invalid("`messages` cannot be empty");
        var turns = new List<ChatTurn>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            string role = m.Role ?? throw Invalid($"`messages[{i}].role` is missing");
            if (role is not ("system" or "user" or "assistant" or "developer" or "tool"))
                throw Invalid($"`messages[{i}].role` '{role}' is not supported (system, user, assistant, tool)");
            if (role == "developer") role = "system";
            string content;
            if (m.Content is not { } c || c.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
            {
                // Only an assistant turn may go without text (OpenAI: one that made tool calls); a user or system
                // turn without it is a client bug, not an empty prompt.
                if (role != "assistant") throw Invalid($"`messages[{i}].content` is required for role '{m.Role}' (got null)");
                content = "";
            }
            else if (c.ValueKind == JsonValueKind.String) content = c.GetString()!;
            else if (c.ValueKind == JsonValueKind.Array)
            {
                var sb = new StringBuilder();
                foreach (var part in c.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.GetString() != "text"
                        || !part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                        throw Invalid($"`messages[{i}].content`: only text parts ({{\"type\": \"text\", \"text\": …}}) are supported");
                    sb.Append(text.GetString());
                }
                content = sb.ToString();
            }
            else throw Invalid($"`messages[{i}].content` must be a string or an array of text parts");
            var calls = ReadToolCalls(m.ToolCalls, i);
            if (calls is not null && role != "assistant") throw Invalid($"`messages[{i}].tool_calls` is only allowed on an assistant message");
            if (role == "tool" && string.IsNullOrEmpty(m.ToolCallId)) throw Invalid($"`messages[{i}].tool_call_id` is required for role 'tool'");
            turns.Add(new ChatTurn(role, content, calls, role == "tool" ? m.ToolCallId : null, role == "tool" ? m.Name : null));
        }
        return turns;
    }

    /// <summary>An assistant message's <c>tool_calls</c>: <c>[{id, type: "function", function: {name, arguments}}]</c>.</summary>
    static List<ChatToolCall>? ReadToolCalls(JsonElement? toolCalls, int message)
    {
        if (IsAbsentOrEmpty(toolCalls)) return null;
        if (toolCalls!.Value.ValueKind != JsonValueKind.Array) throw Invalid($"`messages[{message}].tool_calls` must be an array");
        var calls = new List<ChatToolCall>();
        int j = 0;
        foreach (var c in toolCalls.Value.EnumerateArray())
        {
            string where = $"`messages[{message}].tool_calls[{j++}]";
            if (c.ValueKind != JsonValueKind.Object || !c.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object)
                throw Invalid($"{where}` must be an object with a `function`");
            if (c.TryGetProperty("type", out var type) && type.GetString() != "function") throw Invalid($"{where}.type` must be \"function\"");
            if (!f.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String) throw Invalid($"{where}.function.name` must be a string");
            string arguments = !f.TryGetProperty("arguments", out var args) || args.ValueKind == JsonValueKind.Null ? "{}"
                : args.ValueKind == JsonValueKind.String ? args.GetString()!
                : args.ValueKind == JsonValueKind.Object ? args.GetRawText()
                : throw Invalid($"{where}.function.arguments` must be a string holding a JSON object");
            string id = c.TryGetProperty("id", out var idValue) && idValue.ValueKind == JsonValueKind.String ? idValue.GetString()! : $"call_{message}_{j}";
            calls.Add(new ChatToolCall(id, name.GetString()!, arguments));
        }
        return calls;
    }

    /// <summary>
    /// OpenAI <c>tools</c>, <c>tool_choice</c> and <c>parallel_tool_calls</c>; null when no tools are given. Each tool
    /// is <c>{type: "function", function: {name, description?, parameters?}}</c>.
    /// </summary>
    static ChatToolOptions? ReadTools(ChatRequestDto dto)
    {
        bool hasTools = !IsAbsentOrEmpty(dto.Tools);
        var choice = ReadToolChoice(dto.ToolChoice, hasTools);
        if (!hasTools) return null;
        if (dto.Tools!.Value.ValueKind != JsonValueKind.Array) throw Invalid("`tools` must be an array of {\"type\": \"function\", \"function\": {…}}");
        var tools = new List<ChatTool>();
        int i = 0;
        foreach (var t in dto.Tools.Value.EnumerateArray())
        {
            string where = $"`tools[{i++}]";
            if (t.ValueKind != JsonValueKind.Object) throw Invalid($"{where}` must be an object");
            if (!t.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                throw Invalid($"{where}.type` must be \"function\" (the only tool type this server runs)");
            if (!t.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object) throw Invalid($"{where}.function` must be an object");
            if (!f.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String) throw Invalid($"{where}.function.name` is required (a string)");
            string? description = f.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString() : null;
            var parameters = f.TryGetProperty("parameters", out var p) && p.ValueKind != JsonValueKind.Null ? p.Clone() : ToolCalling.NoParameters;
            tools.Add(new ChatTool(name.GetString()!, description, parameters));
        }
        try { ToolCalling.Validate(tools); }
        catch (HarpiaException ex) { throw Invalid(ex.Message); }
        if (choice.Mode == ToolChoiceMode.Function && !tools.Any(t => t.Name == choice.FunctionName))
            throw Invalid($"`tool_choice` names the function '{choice.FunctionName}', which is not in `tools` ({string.Join(", ", tools.Select(t => t.Name))})");
        return new ChatToolOptions(tools, choice, dto.ParallelToolCalls ?? true);
    }

    static ToolChoice ReadToolChoice(JsonElement? toolChoice, bool hasTools)
    {
        if (toolChoice is not { } c || c.ValueKind == JsonValueKind.Null) return hasTools ? ToolChoice.Auto : ToolChoice.None;
        ToolChoice choice;
        if (c.ValueKind == JsonValueKind.String)
        {
            choice = c.GetString() switch
            {
                "auto" => ToolChoice.Auto,
                "none" => ToolChoice.None,
                "required" => ToolChoice.Required,
                var other => throw Invalid($"`tool_choice` '{other}' is not supported (auto, none, required, or {{\"type\": \"function\", \"function\": {{\"name\": …}}}})"),
            };
        }
        else if (c.ValueKind == JsonValueKind.Object && c.TryGetProperty("function", out var f) && f.ValueKind == JsonValueKind.Object
            && f.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String
            && (!c.TryGetProperty("type", out var type) || type.GetString() == "function"))
            choice = new ToolChoice(ToolChoiceMode.Function, name.GetString());
        else throw Invalid("`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}");
        if (!hasTools && choice.Mode != ToolChoiceMode.None) throw Invalid("`tool_choice` is only allowed when `tools` are given");
        return choice;
    }

    /// <summary>The grammar that makes every call valid JSON for its function's schema (null: no tools offered).</summary>
    async ValueTask<Harpia.Runtime.Grammar.ByteDfa?> ToolGrammarAsync(ChatToolOptions tools, CancellationToken ct)
    {
        try
        {
            var pattern = ToolCalling.GrammarPattern(tools.Tools, tools.Choice, tools.ParallelToolCalls, _grammars.Limits);
            return pattern is null ? null : await _grammars.SchemaPatternAsync(pattern, ct).ConfigureAwait(false);
        }
        catch (HarpiaException ex) when (ex is not GenerationValidationException)
        {
            throw Invalid($"`tools`: {ex.Message}");
        }
    }

    /// <summary>A reply as OpenAI's message: its text, or (when it is calls) content null and the calls.</summary>
    static (ChatResponseMessageDto Message, bool Called) ReplyMessage(string text, IReadOnlyList<ChatTool> offered)
    {
        var (content, calls) = ToolCalling.Parse(text, offered, NewCallId);
        if (calls.Count == 0) return (new ChatResponseMessageDto("assistant", content), false);
        return (new ChatResponseMessageDto("assistant", null,
            calls.Select(c => new ToolCallDto(c.Id, "function", new ToolCallFunctionDto(c.Name, c.Arguments))).ToList()), true);
    }

    static string NewCallId() => "call_" + Guid.NewGuid().ToString("N")[..24];

    /// <summary>
    /// OpenAI <c>logit_bias</c>: an object from token id (as a string, as JSON keys are) to a bias in [−100, 100].
    /// </summary>
    Dictionary<int, float>? ReadLogitBias(JsonElement? logitBias)
    {
        if (IsAbsentOrEmpty(logitBias)) return null;
        if (logitBias!.Value.ValueKind != JsonValueKind.Object) throw Invalid("`logit_bias` must be an object mapping token ids to numbers");
        int vocab = _generator.Model.VocabSize;
        var bias = new Dictionary<int, float>();
        foreach (var entry in logitBias.Value.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= vocab)
                throw Invalid($"`logit_bias` key '{entry.Name}' is not a token id of this model (0 to {vocab - 1})");
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetSingle(out float b) || !(b >= -100 && b <= 100))
                throw Invalid($"`logit_bias` for token {id} must be a number >= -100 and <= 100");
            bias[id] = b;
        }
        return bias;
    }

    /// <summary>
    /// <c>response_format</c> as a grammar: OpenAI's <c>text</c>, <c>json_object</c> (any object) and
    /// <c>json_schema</c> (<c>{json_schema: {schema}}</c>), and TGI's own <c>{type: "json" | "regex", value}</c>.
    /// </summary>
    async ValueTask<Harpia.Runtime.Grammar.ByteDfa?> ReadResponseFormatAsync(JsonElement? format, CancellationToken ct)
    {
        if (format is not { } f || f.ValueKind == JsonValueKind.Null) return null;
        if (f.ValueKind != JsonValueKind.Object || !f.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw Invalid("`response_format` must be an object with a `type`");
        try
        {
            switch (type.GetString())
            {
                case "text": return null;
                case "json_object": return await _grammars.JsonSchemaAsync(AnyObjectSchema, ct).ConfigureAwait(false);
                case "json_schema":
                    if (!f.TryGetProperty("json_schema", out var js) || js.ValueKind != JsonValueKind.Object)
                        throw Invalid("`response_format.json_schema` must be an object with a `schema`");
                    // OpenAI: a schema-less json_schema is any object
                    return await _grammars.JsonSchemaAsync(js.TryGetProperty("schema", out var schema) ? schema : AnyObjectSchema, ct).ConfigureAwait(false);
                case "json" or "regex": return await _grammars.FromTgiAsync(f, ct).ConfigureAwait(false);
                case var other: throw Invalid($"`response_format` type '{other}' is not supported (text, json_object, json_schema, json, regex)");
            }
        }
        catch (HarpiaException ex) when (ex is not GenerationValidationException)
        {
            throw Invalid($"`response_format` is not valid: {ex.Message}");
        }
    }

    static readonly JsonElement AnyObjectSchema = JsonDocument.Parse("""{"type":"object"}""").RootElement.Clone();

    static bool IsAbsentOrEmpty(JsonElement? e) =>
        e is null || e.Value.ValueKind == JsonValueKind.Null
        || (e.Value.ValueKind == JsonValueKind.Array && e.Value.GetArrayLength() == 0)
        || (e.Value.ValueKind == JsonValueKind.Object && !e.Value.EnumerateObject().Any());

    // ------------------------------------------------------------------ /v1/chat/completions

    public async Task ChatCompletions(HttpContext ctx)
    {
        ChatRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.ChatRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        bool stream = dto.Stream == true;
        await HandleGenerationAsync(ctx, async ct =>
        {
            int n = ReadN(dto.N);
            var tools = ReadTools(dto);
            IReadOnlyList<ChatTool> offered = tools is null ? [] : ToolCalling.Offered(tools.Tools, tools.Choice);
            var grammar = await ReadResponseFormatAsync(dto.ResponseFormat, ct).ConfigureAwait(false);
            if (offered.Count > 0)
            {
                if (grammar is not null) throw Invalid("`response_format` cannot be combined with `tools` (unless `tool_choice` is \"none\")");
                grammar = await ToolGrammarAsync(tools!, ct).ConfigureAwait(false);
            }
            var logitBias = ReadLogitBias(dto.LogitBias);
            int topN = 0;
            if (dto.Logprobs == true)
            {
                topN = dto.TopLogprobs ?? 0;
                if (topN < 0 || topN > _options.MaxTopNTokens)
                    throw Invalid($"`top_logprobs` must be >= 0 and <= {_options.MaxTopNTokens}. Given: {topN}");
            }
            var turns = ReadMessages(dto.Messages);
            string prompt = _chatFormatter.Format(turns, addGenerationPrompt: true, tools);
            var parameters = OpenAiParameters(dto.Temperature, dto.TopP, dto.Seed, dto.FrequencyPenalty, dto.PresencePenalty,
                dto.MaxCompletionTokens ?? dto.MaxTokens, ReadStops(dto.Stop), topN);
            var v = await ValidateAsync(prompt, parameters, stream, ct, defaultMaxNewTokens: null, _chatFormatter.ImplicitStopSequences).ConfigureAwait(false);
            var generation = v.Generation with
            {
                Sampling = v.Generation.Sampling with { PresencePenalty = dto.PresencePenalty ?? 0, LogitBias = logitBias },
                Grammar = grammar,
            };
            var generations = Choices(generation, n);
            using var slots = AcquireMoreSlots(generations.Length - 1);
            bool logprobs = dto.Logprobs == true;
            string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
            long created = Now();

            if (!stream)
            {
                var results = await _runner.CollectManyAsync(generations, _metrics, ct).ConfigureAwait(false);
                var choices = results.Select((r, k) =>
                {
                    var (message, called) = ReplyMessage(r.Text.ToString(), offered);
                    return new ChatChoiceDto(k, message, logprobs ? new ChatLogprobsDto(r.Tokens.Select(ChatLogprob).ToList()) : null,
                        ChatFinishName(r.Finish, called));
                }).ToList();
                int completionTokens = results.Sum(r => r.GeneratedTokens);
                var completion = new ChatCompletionDto(id, "chat.completion", created, _modelId, SystemFingerprint, choices,
                    new UsageDto(v.InputLength, completionTokens, v.InputLength + completionTokens));
                await HttpIo.WriteJsonAsync(ctx, 200, completion, ServerJsonContext.Default.ChatCompletionDto).ConfigureAwait(false);
                return;
            }

            // Each choice's chunks carry its index: its role chunk first, its finish_reason chunk last; then, once all
            // are done, the usage chunk (if asked for) and one [DONE].
            var streamed = generations.Select(g => new GenerationResult { PromptTokens = v.InputLength }).ToArray();
            var roleSent = new bool[generations.Length];
            // With tools offered, a reply's opening decides whether it is text or calls: text streams as it comes,
            // calls are held until the reply ends and then sent as tool_calls deltas (each whole, as they must parse).
            var replies = generations.Select(_ => new StreamedReply()).ToArray();
            bool started = false;
            await foreach (var (k, ev) in _runner.RunManyAsync(generations, _metrics, ct).ConfigureAwait(false))
            {
                if (!started) { HttpIo.StartEventStream(ctx); started = true; }
                if (!roleSent[k])
                {
                    roleSent[k] = true;
                    await SendChunk(k, new ChatDeltaDto("assistant", ""), null, null).ConfigureAwait(false);
                }
                GenerationRunner.Absorb(streamed[k], ev);
                string delta = offered.Count == 0 ? ev.TextDelta : replies[k].Take(ev.TextDelta, ev.Finish is not null);
                if (delta.Length > 0 || (logprobs && ev.Token is not null))
                    await SendChunk(k, new ChatDeltaDto(null, delta),
                        logprobs && ev.Token is not null ? new ChatLogprobsDto([ChatLogprob(ev.Token)]) : null, null).ConfigureAwait(false);
                if (ev.Finish is { } finish)
                {
                    bool called = false;
                    if (replies[k].IsCalls)
                    {
                        var (message, isCall) = ReplyMessage(replies[k].Held, offered);
                        called = isCall;
                        // A call cut short (the length limit) parses to nothing: what was written goes out as text.
                        if (!isCall && message.Content is { Length: > 0 } held)
                            await SendChunk(k, new ChatDeltaDto(null, held), null, null).ConfigureAwait(false);
                        for (int c = 0; c < (message.ToolCalls?.Count ?? 0); c++)
                        {
                            var call = message.ToolCalls![c];
                            await SendChunk(k, new ChatDeltaDto(null, null, [new ToolCallDeltaDto(c, call.Id, "function", new ToolCallDeltaFunctionDto(call.Function.Name, ""))]), null, null).ConfigureAwait(false);
                            await SendChunk(k, new ChatDeltaDto(null, null, [new ToolCallDeltaDto(c, null, null, new ToolCallDeltaFunctionDto(null, call.Function.Arguments))]), null, null).ConfigureAwait(false);
                        }
                    }
                    await SendChunk(k, new ChatDeltaDto(null, null), null, ChatFinishName(finish, called)).ConfigureAwait(false);
                }
            }
            if (dto.StreamOptions?.IncludeUsage == true)
            {
                int completionTokens = streamed.Sum(r => r.GeneratedTokens);
                var usage = new ChatCompletionChunkDto(id, "chat.completion.chunk", created, _modelId, SystemFingerprint, [],
                    new UsageDto(v.InputLength, completionTokens, v.InputLength + completionTokens));
                await HttpIo.WriteEventAsync(ctx, usage, ServerJsonContext.Default.ChatCompletionChunkDto, openAiStyle: true, ct).ConfigureAwait(false);
            }
            await HttpIo.WriteDoneAsync(ctx, ct).ConfigureAwait(false);

            Task SendChunk(int index, ChatDeltaDto delta, ChatLogprobsDto? lp, string? finishReason)
            {
                var chunk = new ChatCompletionChunkDto(id, "chat.completion.chunk", created, _modelId, SystemFingerprint,
                    [new ChatChunkChoiceDto(index, delta, lp, finishReason)], null);
                return HttpIo.WriteEventAsync(ctx, chunk, ServerJsonContext.Default.ChatCompletionChunkDto, openAiStyle: true, ct);
            }
        }).ConfigureAwait(false);
    }

    /// <summary>OpenAI's finish reason: "tool_calls" for a reply that made calls (unless the length limit cut it).</summary>
    static string ChatFinishName(FinishReason finish, bool called) =>
        called && finish != FinishReason.Length ? "tool_calls" : GenerationRunner.OpenAiFinishName(finish);

    /// <summary>
    /// One streamed reply while tools are offered: its opening (whitespace, then a prefix of the call tag) is held
    /// back until it shows whether the reply is text or calls; text then flows, calls are held whole.
    /// </summary>
    sealed class StreamedReply
    {
        readonly StringBuilder _held = new();
        bool? _calls;
        public bool IsCalls => _calls == true;
        public string Held => _held.ToString();

        /// <summary>The text to stream now for <paramref name="delta"/>.</summary>
        public string Take(string delta, bool last)
        {
            if (_calls == false) return delta;
            _held.Append(delta);
            if (_calls == true) return "";
            string opening = _held.ToString().TrimStart(' ', '\n', '\r', '\t');
            if (opening.StartsWith(ToolCalling.CallTag, StringComparison.Ordinal)) { _calls = true; return ""; }
            if (!last && ToolCalling.CallTag.StartsWith(opening, StringComparison.Ordinal)) return "";
            _calls = false;
            string all = _held.ToString();
            _held.Clear();
            return all;
        }
    }

    /// <summary>OpenAI's <c>n</c>: choices per prompt, 1 to <see cref="ServerOptions.MaxN"/>.</summary>
    int ReadN(int? n)
    {
        int value = n ?? 1;
        if (value < 1 || value > _options.MaxN) throw Invalid($"`n` must be >= 1 and <= {_options.MaxN}. Given: {value}");
        return value;
    }

    /// <summary>
    /// <paramref name="n"/> runs of one request, one per choice. With a request seed s, choice k samples with seed
    /// s + k: the choices differ yet the same request gives the same choices again. Greedy choices are all alike, as
    /// OpenAI's and vLLM's are.
    /// </summary>
    static GenerationRequest[] Choices(GenerationRequest generation, int n) =>
        Enumerable.Range(0, n).Select(k => k > 0 && generation.Sampling.Seed is { } s
            ? generation with { Sampling = generation.Sampling with { Seed = unchecked(s + (ulong)k) } }
            : generation).ToArray();

    /// <summary>
    /// A request that runs several generations holds a slot for each (the first was taken on arrival), so
    /// --max-concurrent-requests keeps bounding what reaches the runtime; 429 when they are not free.
    /// </summary>
    IDisposable? AcquireMoreSlots(int count) =>
        count <= 0 ? null : _state.TryAcquireSlots(count) ?? throw new GeneratorOverloadedException("Model is overloaded");

    static List<int> Utf8(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToList();

    static ChatTokenLogprobDto ChatLogprob(GeneratedToken t) =>
        new(t.Text, HttpIo.Logprob(t.Logprob) ?? float.MinValue, Utf8(t.Text),
            t.TopTokens.Select(a => new TopLogprobDto(a.Text, HttpIo.Logprob(a.Logprob) ?? float.MinValue, Utf8(a.Text))).ToList());

    // ------------------------------------------------------------------ /v1/completions

    public async Task Completions(HttpContext ctx)
    {
        CompletionRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.CompletionRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        bool stream = dto.Stream == true;
        await HandleGenerationAsync(ctx, async ct =>
        {
            List<string> prompts;
            if (dto.Prompt is not { } pe || pe.ValueKind == JsonValueKind.Null) throw Invalid("missing field `prompt`");
            else if (pe.ValueKind == JsonValueKind.String) prompts = [pe.GetString()!];
            else if (pe.ValueKind == JsonValueKind.Array && pe.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
                prompts = pe.EnumerateArray().Select(e => e.GetString()!).ToList();
            else throw Invalid("`prompt` must be a string or an array of strings (token-id prompts are not supported)");
            if (prompts.Count == 0) throw Invalid("`prompt` cannot be empty");
            if (prompts.Count > _options.MaxClientBatchSize)
                throw Invalid($"Number of prompts must be <= {_options.MaxClientBatchSize}. Given: {prompts.Count}");
            int n = ReadN(dto.N);
            // best_of: generate best_of per prompt, answer with the n of highest cumulative log-probability.
            int bestOf = dto.BestOf ?? n;
            if (bestOf < n || bestOf > _options.MaxN) throw Invalid($"`best_of` must be >= `n` ({n}) and <= {_options.MaxN}. Given: {bestOf}");
            if (stream && bestOf > n) throw Invalid("`best_of` > `n` is not allowed when streaming: the best are known only at the end");
            if (!string.IsNullOrEmpty(dto.Suffix)) throw Invalid("`suffix` is not supported by this server");
            int topN = dto.Logprobs ?? 0;
            if (topN < 0 || topN > _options.MaxTopNTokens) throw Invalid($"`logprobs` must be >= 0 and <= {_options.MaxTopNTokens}. Given: {topN}");
            bool logprobs = dto.Logprobs is not null;
            var stops = ReadStops(dto.Stop);
            var logitBias = ReadLogitBias(dto.LogitBias);
            var validated = new List<ValidatedRequest>(prompts.Count);
            foreach (var p in prompts)
                validated.Add(await ValidateAsync(p, OpenAiParameters(dto.Temperature, dto.TopP, dto.Seed, dto.FrequencyPenalty,
                    dto.PresencePenalty, dto.MaxTokens, stops, topN), stream, ct).ConfigureAwait(false));
            bool echo = dto.Echo == true;
            // echo with logprobs: the prompt's tokens are part of the answer, so their log-probs are too.
            bool promptLogprobs = echo && logprobs;
            // Prompt i's runs are i*best_of … (all at once); its choices are i*n … i*n+n-1, as OpenAI numbers them.
            var generations = validated.SelectMany(v => Choices(v.Generation with
            {
                Sampling = v.Generation.Sampling with { PresencePenalty = dto.PresencePenalty ?? 0, LogitBias = logitBias },
                PromptLogprobs = promptLogprobs,
            }, bestOf)).ToArray();
            using var slots = AcquireMoreSlots(generations.Length - 1);
            string id = "cmpl-" + Guid.NewGuid().ToString("N");
            long created = Now();
            int promptTokens = validated.Sum(v => v.InputLength); // once per prompt, however many choices
            string Echoed(int choice) => echo ? validated[choice / n].Inputs : "";

            if (!stream)
            {
                var results = await _runner.CollectManyAsync(generations, _metrics, ct).ConfigureAwait(false);
                // Prompt i's best n, best first (in generation order when best_of = n).
                var kept = results.Chunk(bestOf).SelectMany(runs => bestOf > n ? runs.OrderByDescending(r => r.SumLogprob).Take(n) : runs).ToList();
                var choices = kept.Select((r, j) => new CompletionChoiceDto(j, Echoed(j) + r.Text,
                    logprobs ? CompletionLogprobs(promptLogprobs ? r.Prefill : null, topN, r.Tokens, Echoed(j).Length) : null, GenerationRunner.OpenAiFinishName(r.Finish))).ToList();
                // Every generated token counts, kept or not, as OpenAI bills best_of.
                int completionTokens = results.Sum(r => r.GeneratedTokens);
                var completion = new CompletionDto(id, "text_completion", created, _modelId, SystemFingerprint, choices,
                    new UsageDto(promptTokens, completionTokens, promptTokens + completionTokens));
                await HttpIo.WriteJsonAsync(ctx, 200, completion, ServerJsonContext.Default.CompletionDto).ConfigureAwait(false);
                return;
            }

            // Chunks carry their choice's index; each choice starts with its echo (if asked for) and ends with its
            // finish_reason chunk; then the usage chunk (if asked for) and one [DONE].
            var streamed = generations.Select(g => new GenerationResult { PromptTokens = g.PromptIds.Count }).ToArray();
            var offsets = new int[generations.Length];
            var echoSent = new bool[generations.Length];
            bool started = false;
            await foreach (var (j, ev) in _runner.RunManyAsync(generations, _metrics, ct).ConfigureAwait(false))
            {
                if (!started) { HttpIo.StartEventStream(ctx); started = true; }
                if (echo && !echoSent[j])
                {
                    echoSent[j] = true;
                    // The prompt's log-probs ride with the echoed prompt, in the choice's first chunk (as vLLM sends them).
                    await Send(j, Echoed(j), promptLogprobs && ev.Prefill is not null ? CompletionLogprobs(ev.Prefill, topN, [], 0) : null, null)
                        .ConfigureAwait(false);
                    offsets[j] = Echoed(j).Length;
                }
                GenerationRunner.Absorb(streamed[j], ev);
                if (ev.TextDelta.Length > 0 || (logprobs && ev.Token is not null))
                {
                    await Send(j, ev.TextDelta, logprobs && ev.Token is not null ? CompletionLogprobs(null, topN, [ev.Token], offsets[j]) : null, null).ConfigureAwait(false);
                    offsets[j] += ev.TextDelta.Length;
                }
                if (ev.Finish is { } finish)
                    await Send(j, "", null, GenerationRunner.OpenAiFinishName(finish)).ConfigureAwait(false);
            }
            if (dto.StreamOptions?.IncludeUsage == true)
            {
                int completionTokens = streamed.Sum(r => r.GeneratedTokens);
                var usage = new CompletionDto(id, "text_completion", created, _modelId, SystemFingerprint, [],
                    new UsageDto(promptTokens, completionTokens, promptTokens + completionTokens));
                await HttpIo.WriteEventAsync(ctx, usage, ServerJsonContext.Default.CompletionDto, openAiStyle: true, ct).ConfigureAwait(false);
            }
            await HttpIo.WriteDoneAsync(ctx, ct).ConfigureAwait(false);

            Task Send(int index, string text, CompletionLogprobsDto? lp, string? finishReason)
            {
                var chunk = new CompletionDto(id, "text_completion", created, _modelId, SystemFingerprint,
                    [new CompletionChoiceDto(index, text, lp, finishReason)], null);
                return HttpIo.WriteEventAsync(ctx, chunk, ServerJsonContext.Default.CompletionDto, openAiStyle: true, ct);
            }
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Legacy completions' logprobs: the echoed prompt's tokens (when given) from offset 0, then the generated ones
    /// from <paramref name="startOffset"/> (the length of the text before them). The first prompt token has no
    /// log-prob (null, as OpenAI's); the runtime scores each prompt token but lists no alternatives for it, so a prompt
    /// token's top_logprobs holds that token alone (when <paramref name="topN"/> &gt; 0).
    /// </summary>
    static CompletionLogprobsDto CompletionLogprobs(IReadOnlyList<TokenLogprob>? prompt, int topN, IReadOnlyList<GeneratedToken> tokens, int startOffset)
    {
        int count = (prompt?.Count ?? 0) + tokens.Count;
        var texts = new List<string>(count);
        var logprobs = new List<float?>(count);
        var tops = new List<Dictionary<string, float>?>(count);
        var offsets = new List<int>(count);
        if (prompt is not null)
        {
            int promptOffset = 0;
            for (int i = 0; i < prompt.Count; i++)
            {
                var t = prompt[i];
                float? lp = i == 0 ? null : HttpIo.Logprob(t.Logprob) ?? float.MinValue;
                texts.Add(t.Text);
                logprobs.Add(lp);
                tops.Add(lp is { } value && topN > 0 ? new Dictionary<string, float> { [t.Text] = value } : null);
                offsets.Add(promptOffset);
                promptOffset += t.Text.Length;
            }
        }
        int offset = startOffset;
        foreach (var t in tokens)
        {
            texts.Add(t.Text);
            logprobs.Add(HttpIo.Logprob(t.Logprob) ?? float.MinValue);
            tops.Add(t.TopTokens.Count == 0 ? null : t.TopTokens
                .GroupBy(a => a.Text).ToDictionary(g => g.Key, g => HttpIo.Logprob(g.First().Logprob) ?? float.MinValue));
            offsets.Add(offset);
            offset += t.Text.Length;
        }
        return new CompletionLogprobsDto(texts, logprobs, tops, offsets);
    }

    // ------------------------------------------------------------------ /v1/models

    public Task Models(HttpContext ctx) => HttpIo.WriteJsonAsync(ctx, 200,
        new ModelListDto("list", [new ModelDto(_modelId, "model", _startedAt, "harpia")]), ServerJsonContext.Default.ModelListDto);
}

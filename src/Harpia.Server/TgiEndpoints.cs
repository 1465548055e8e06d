using System.Diagnostics;
using System.Text;
using Harpia.Chat;
using Harpia.Runtime;
using Microsoft.AspNetCore.Http;

namespace Harpia.Server;

/// <summary>The HTTP endpoints: TGI's routes here, OpenAI's in OpenAiEndpoints.cs. No model logic.</summary>
internal sealed partial class HarpiaEndpoints
{
    readonly ITextGenerator _generator;
    readonly ServerOptions _options;
    readonly ServerState _state;
    readonly ServerMetrics _metrics;
    readonly RequestValidator _validator;
    readonly Harpia.Runtime.Grammar.GrammarCompiler _grammars;
    readonly GenerationRunner _runner;
    readonly ChatPromptFormatter _chatFormatter;
    readonly string _modelId;
    readonly ITextEmbedder? _embedder;
    readonly long _startedAt = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public static readonly string Version =
        typeof(HarpiaEndpoints).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public HarpiaEndpoints(ITextGenerator generator, ServerOptions options, ServerState state, ServerMetrics metrics,
        int maxInputTokens, int maxTotalTokens, Harpia.Runtime.Grammar.GrammarCompiler grammars, ITextEmbedder? embedder = null)
    {
        _embedder = embedder;
        _generator = generator;
        _options = options;
        _state = state;
        _metrics = metrics;
        _grammars = grammars;
        _validator = new RequestValidator(options, generator.Tokenizer, maxInputTokens, maxTotalTokens, grammars);
        _runner = new GenerationRunner(generator);
        var model = generator.Model;
        _chatFormatter = new ChatPromptFormatter(model.ChatTemplate, model.BosToken, model.EosToken);
        _modelId = options.ModelId ?? model.ModelId;
    }

    // ------------------------------------------------------------------ error handling

    static (int Status, string Type, string Message) MapError(Exception ex) => ex switch
    {
        HttpProblemException p => (p.Status, p.ErrorType, p.Message),
        GenerationValidationException v => (422, "validation", "Input validation error: " + v.Message),
        JinjaException j => (422, "validation", "Input validation error: " + j.Message),
        GeneratorOverloadedException o => (429, "overloaded", o.Message),
        GenerationFailedException g => (424, "generation", "Request failed during generation: " + g.Message),
        IncompleteGenerationException => (500, "incomplete_generation", "Incomplete generation"),
        _ => (500, "generation", $"Internal server error: {ex.GetType().Name}: {ex.Message}"),
    };

    /// <summary>Runs a generation endpoint: slot, cancellation, metrics and the error body when nothing was sent yet.</summary>
    async Task HandleGenerationAsync(HttpContext ctx, Func<CancellationToken, Task> body)
    {
        _metrics.RequestReceived();
        using var slot = _state.TryAcquireSlot();
        if (slot is null)
        {
            _metrics.Failed("overloaded");
            await HttpIo.WriteErrorAsync(ctx, 429, "overloaded", "Model is overloaded").ConfigureAwait(false);
            return;
        }
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, _state.HardStop);
        try
        {
            await body(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            // The client went away (nothing to answer) or the drain ran out of time.
            _metrics.Failed(ctx.RequestAborted.IsCancellationRequested ? "cancelled" : "shutdown");
            // Before any byte went out the server refuses as a draining one does (503 unhealthy); a stream already
            // under way ends as TGI ends one cut short, with an incomplete_generation event (TGI's `unhealthy` is
            // only its health check's answer, never an event inside a started stream).
            if (ctx.RequestAborted.IsCancellationRequested) { }
            else if (ctx.Response.HasStarted)
                await WriteErrorAfterStartAsync(ctx, 500, "incomplete_generation", "Incomplete generation: the server is shutting down").ConfigureAwait(false);
            else
                await HttpIo.WriteErrorAsync(ctx, 503, "unhealthy", "Server is shutting down").ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            var (status, type, message) = MapError(ex);
            _metrics.Failed(type);
            if (!ctx.RequestAborted.IsCancellationRequested)
                await WriteErrorAfterStartAsync(ctx, status, type, message).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// An error as a JSON body while the headers are unsent; once a stream has begun, as a last SSE event, as TGI
    /// does, so a client can tell a cut-short stream from a finished one.
    /// </summary>
    static async Task WriteErrorAfterStartAsync(HttpContext ctx, int status, string type, string message)
    {
        if (!ctx.Response.HasStarted) { await HttpIo.WriteErrorAsync(ctx, status, type, message).ConfigureAwait(false); return; }
        bool openAi = ctx.Request.Path.StartsWithSegments("/v1");
        try
        {
            await HttpIo.WriteEventAsync(ctx, new ErrorResponse(message, type), ServerJsonContext.Default.ErrorResponse, openAi, ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (Exception) when (ctx.RequestAborted.IsCancellationRequested) { }
    }

    async ValueTask<ValidatedRequest> ValidateAsync(string? inputs, GenerateParametersDto? parameters, bool stream, CancellationToken ct,
        int? defaultMaxNewTokens = 100, IReadOnlyList<string>? implicitStops = null)
    {
        var sw = Stopwatch.StartNew();
        var v = await _validator.ValidateAsync(inputs, parameters, stream, ct, defaultMaxNewTokens, implicitStops).ConfigureAwait(false);
        _metrics.ValidationDone(sw.Elapsed, v.InputLength, v.Generation.MaxNewTokens);
        return v;
    }

    /// <summary>TGI's routes: <c>generated_text</c> keeps the stop sequence that ended it, as TGI's does.</summary>
    async ValueTask<ValidatedRequest> ValidateTgiAsync(string? inputs, GenerateParametersDto? parameters, bool stream, CancellationToken ct)
    {
        var v = await ValidateAsync(inputs, parameters, stream, ct).ConfigureAwait(false);
        return v with { Generation = v.Generation with { KeepStopSequence = true } };
    }

    // ------------------------------------------------------------------ TGI routes

    /// <summary>POST / : <c>stream</c> false → <c>[GenerateResponse]</c>, true → the SSE of /generate_stream.</summary>
    public async Task CompatGenerate(HttpContext ctx)
    {
        GenerateRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.GenerateRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        if (dto.Stream == true) await GenerateStreamCore(ctx, dto).ConfigureAwait(false);
        else await GenerateCore(ctx, dto, asArray: true).ConfigureAwait(false);
    }

    public async Task Generate(HttpContext ctx)
    {
        GenerateRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.GenerateRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        await GenerateCore(ctx, dto, asArray: false).ConfigureAwait(false);
    }

    public async Task GenerateStream(HttpContext ctx)
    {
        GenerateRequestDto dto;
        try { dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.GenerateRequestDto).ConfigureAwait(false); }
        catch (HttpProblemException p) { await HttpIo.WriteErrorAsync(ctx, p.Status, p.ErrorType, p.Message).ConfigureAwait(false); return; }
        await GenerateStreamCore(ctx, dto).ConfigureAwait(false);
    }

    Task GenerateCore(HttpContext ctx, GenerateRequestDto dto, bool asArray) => HandleGenerationAsync(ctx, async ct =>
    {
        var v = await ValidateTgiAsync(dto.Inputs, dto.Parameters, stream: false, ct).ConfigureAwait(false);
        // best_of: independent sampled runs (each with its own runtime seed); the best by total log-probability wins.
        var runs = Enumerable.Range(0, v.BestOf).Select(async _ =>
        {
            using var tracker = _metrics.Track();
            var r = await _runner.CollectAsync(v.Generation, tracker, ct).ConfigureAwait(false);
            tracker.Succeeded(r.GeneratedTokens);
            return r;
        }).ToList();
        var results = await Task.WhenAll(runs).ConfigureAwait(false);
        var best = results.MaxBy(r => r.SumLogprob)!;
        string prefix = v.ReturnFullText ? v.Inputs : "";
        DetailsDto? details = null;
        if (v.Details)
        {
            List<BestOfSequenceDto>? others = v.BestOf > 1
                ? results.Where(r => r != best).Select(r => new BestOfSequenceDto(prefix + r.Text, GenerationRunner.FinishName(r.Finish),
                    r.GeneratedTokens, r.Seed, Prefill(r, v), Tokens(r), TopTokens(r, v))).ToList()
                : null;
            details = new DetailsDto(GenerationRunner.FinishName(best.Finish), best.GeneratedTokens, best.Seed, Prefill(best, v),
                Tokens(best), TopTokens(best, v), others);
        }
        var response = new GenerateResponseDto(prefix + best.Text, details);
        ctx.Response.Headers["x-compute-type"] = "cpu";
        ctx.Response.Headers["x-generated-tokens"] = best.GeneratedTokens.ToString(System.Globalization.CultureInfo.InvariantCulture);
        ctx.Response.Headers["x-prompt-tokens"] = v.InputLength.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (asArray) await HttpIo.WriteJsonAsync(ctx, 200, [response], ServerJsonContext.Default.ListGenerateResponseDto).ConfigureAwait(false);
        else await HttpIo.WriteJsonAsync(ctx, 200, response, ServerJsonContext.Default.GenerateResponseDto).ConfigureAwait(false);
    });

    static List<PrefillTokenDto> Prefill(GenerationResult r, ValidatedRequest v) =>
        v.DecoderInputDetails && r.Prefill is not null
            ? r.Prefill.Select(t => new PrefillTokenDto(t.Id, t.Text, HttpIo.Logprob(t.Logprob))).ToList()
            : [];

    static List<TokenDto> Tokens(GenerationResult r) => r.Tokens.Select(ToDto).ToList();

    static List<List<TokenDto>>? TopTokens(GenerationResult r, ValidatedRequest v) =>
        v.Generation.TopNTokens > 0 ? r.Tokens.Select(t => t.TopTokens.Select(ToDto).ToList()).ToList() : null;

    static TokenDto ToDto(GeneratedToken t) => new(t.Id, t.Text, HttpIo.Logprob(t.Logprob), t.Special);
    static TokenDto ToDto(TokenLogprob t) => new(t.Id, t.Text, HttpIo.Logprob(t.Logprob), t.Special);

    /// <summary>
    /// SSE of <c>StreamResponse</c>, one per token, <c>data:{json}\n\n</c>. The last event carries the full
    /// <c>generated_text</c> and <c>details</c>; since the runtime's finishing event may carry no token, each token
    /// is held until the next event shows whether it is the last.
    /// </summary>
    Task GenerateStreamCore(HttpContext ctx, GenerateRequestDto dto) => HandleGenerationAsync(ctx, async ct =>
    {
        var v = await ValidateTgiAsync(dto.Inputs, dto.Parameters, stream: true, ct).ConfigureAwait(false);
        using var tracker = _metrics.Track();
        var result = new GenerationResult { PromptTokens = v.InputLength };
        GeneratedToken? pending = null;
        int index = 0;
        bool started = false;
        await foreach (var ev in _runner.RunAsync(v.Generation, tracker, ct).ConfigureAwait(false))
        {
            if (!started) { HttpIo.StartEventStream(ctx); started = true; }
            GenerationRunner.Absorb(result, ev);
            if (ev.Token is not null)
            {
                if (pending is not null) await SendToken(pending, null, null).ConfigureAwait(false);
                pending = ev.Token;
            }
            if (ev.Finish is { } finish)
            {
                var details = new StreamDetailsDto(GenerationRunner.FinishName(finish), result.GeneratedTokens, v.InputLength, result.Seed);
                string text = (v.ReturnFullText ? v.Inputs : "") + result.Text;
                // A generation that ends without any token (possible only with a token-less finish) still needs a final event.
                await SendToken(pending ?? new GeneratedToken(0, "", 0, true, []), text, details).ConfigureAwait(false);
                tracker.Succeeded(result.GeneratedTokens);
            }
        }

        Task SendToken(GeneratedToken token, string? generatedText, StreamDetailsDto? details)
        {
            index++;
            var top = v.Generation.TopNTokens > 0 ? token.TopTokens.Select(ToDto).ToList() : null;
            var response = new StreamResponseDto(index, ToDto(token), top, generatedText, details);
            return HttpIo.WriteEventAsync(ctx, response, ServerJsonContext.Default.StreamResponseDto, openAiStyle: false, ct);
        }
    });

    public async Task Tokenize(HttpContext ctx)
    {
        try
        {
            var dto = await HttpIo.ReadJsonAsync(ctx, ServerJsonContext.Default.GenerateRequestDto).ConfigureAwait(false);
            if (dto.Inputs is null) throw new GenerationValidationException("missing field `inputs`");
            if (dto.Inputs.Length > (long)_validator.MaxInputTokens * 64)
                throw new GenerationValidationException($"`inputs` must have less than {_validator.MaxInputTokens} tokens. Given: more than {_validator.MaxInputTokens} ({dto.Inputs.Length} characters)");
            var spans = _generator.Tokenizer.EncodeWithOffsets(dto.Inputs, addSpecialTokens: false);
            // TGI's text is the slice of the input the token covers (UTF-8 bytes [start, stop), decoded lossily),
            // not the vocabulary string: "á", not byte-level BPE's "Ã¡".
            byte[] input = Encoding.UTF8.GetBytes(dto.Inputs);
            var list = spans.Select(s => new SimpleTokenDto(s.Id, Encoding.UTF8.GetString(input, s.Start, s.Stop - s.Start), s.Start, s.Stop)).ToList();
            await HttpIo.WriteJsonAsync(ctx, 200, list, ServerJsonContext.Default.ListSimpleTokenDto).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpProblemException or GenerationValidationException)
        {
            var (status, type, message) = MapError(ex);
            await HttpIo.WriteErrorAsync(ctx, status, type, message).ConfigureAwait(false);
        }
    }

    public Task Info(HttpContext ctx) => HttpIo.WriteJsonAsync(ctx, 200, new InfoDto(
        ModelId: _modelId, ModelSha: null, ModelDtype: _generator.Model.Dtype, ModelDeviceType: DeviceType(_generator.Model), ModelPipelineTag: "text-generation",
        MaxConcurrentRequests: _options.MaxConcurrentRequests, MaxBestOf: _options.MaxBestOf,
        MaxStopSequences: _options.MaxStopSequences, MaxInputTokens: _validator.MaxInputTokens,
        MaxTotalTokens: _validator.MaxTotalTokens, ValidationWorkers: 1, MaxClientBatchSize: _options.MaxClientBatchSize,
        Router: "text-generation-router", Version: Version, Sha: null, DockerLabel: null,
        DeviceMap: DeviceMapJson(_generator.Model.DeviceMap), Device: _generator.Model.Device), ServerJsonContext.Default.InfoDto);

    // TGI's model_device_type: "cuda" when a GPU holds part of the model (a CUDA backend runs it, or the device map
    // places part of it on a GPU), else "cpu".
    private static string DeviceType(ModelDescription model) =>
        model.Device?.StartsWith("cuda", StringComparison.Ordinal) == true || model.Device?.Contains(", cuda", StringComparison.Ordinal) == true ? "cuda"
        : model.DeviceMap is { } map && map.Devices.Any(d => d.IsGpu) && Harpia.Runtime.ModelPlacement.CpuStandIns() == 0 ? "cuda" : "cpu";

    private static System.Text.Json.JsonElement? DeviceMapJson(Harpia.Placement.DeviceMap? map)
    {
        if (map is null) return null;
        using var doc = System.Text.Json.JsonDocument.Parse(map.ToJson(includeModules: true));
        return doc.RootElement.Clone();
    }

    public async Task Health(HttpContext ctx)
    {
        if (_state.Draining)
        {
            await HttpIo.WriteErrorAsync(ctx, 503, "healthcheck", "Server is shutting down").ConfigureAwait(false);
            return;
        }
        ctx.Response.StatusCode = 200;
    }

    public async Task Metrics(HttpContext ctx)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await _metrics.Registry.CollectAndExportAsTextAsync(ctx.Response.Body, ctx.RequestAborted).ConfigureAwait(false);
    }
}

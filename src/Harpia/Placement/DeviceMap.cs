using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Harpia.Placement;

/// <summary>How <see cref="DeviceMapper"/> places a model (accelerate's <c>device_map</c> values, plus a file).</summary>
public enum DeviceMapStrategy
{
    /// <summary>As accelerate's "auto": balanced.</summary>
    Auto,
    /// <summary>When the model fits on the GPUs: contiguous layer ranges with the smallest largest per-GPU load; else sequential.</summary>
    Balanced,
    /// <summary>Fill GPU 0 to its budget, then GPU 1, …, then the CPU, then disk.</summary>
    Sequential,
    /// <summary>A JSON file mapping module names to devices.</summary>
    File,
}

/// <summary>A device that exists: its memory and the part of it the runtime keeps for itself (the stated reserve).</summary>
/// <param name="Bytes">Memory of the device (for the CPU: what the model may use of the machine's RAM).</param>
/// <param name="ReserveBytes">Kept back before any model byte: a GPU's runtime context, an OS reserve.</param>
public sealed record DeviceCapacity(DeviceId Device, long Bytes, long ReserveBytes, string ReserveReason);

/// <summary>What to place on: the devices that exist, and the limits that size the KV cache and activations.</summary>
public sealed record DeviceMapSettings
{
    /// <summary>The GPUs and the CPU that exist (disk always exists, unbounded unless <see cref="MaxMemory"/> bounds it).</summary>
    public required IReadOnlyList<DeviceCapacity> Devices { get; init; }
    public DeviceMapStrategy Strategy { get; init; } = DeviceMapStrategy.Auto;
    /// <summary>With <see cref="DeviceMapStrategy.File"/>: module name (or prefix) → device, and the file's name for errors.</summary>
    public IReadOnlyDictionary<string, DeviceId>? FileAssignments { get; init; }
    public string FileName { get; init; } = "--device-map file";
    /// <summary><c>--max-memory</c>: caps per device; a device it names gives at most that, reserve included.</summary>
    public IReadOnlyDictionary<DeviceId, long> MaxMemory { get; init; } = new Dictionary<DeviceId, long>();
    /// <summary><c>--num-shard N</c>: use GPUs 0 … N−1 only. Null: every GPU.</summary>
    public int? NumShard { get; init; }
    /// <summary>KV positions held over all sequences (<c>--max-batch-total-tokens</c>): each layer's KV for this many on its device.</summary>
    public required long MaxBatchTotalTokens { get; init; }
    /// <summary>Tokens in one prefill step (<c>--max-batch-prefill-tokens</c>): sizes each device's activations.</summary>
    public required int MaxBatchPrefillTokens { get; init; }

    /// <summary>Parses <c>--device-map auto|balanced|sequential|FILE.json</c>; null or empty means auto.</summary>
    public static (DeviceMapStrategy Strategy, string? File) ParseStrategy(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => (DeviceMapStrategy.Auto, null),
        "balanced" => (DeviceMapStrategy.Balanced, null),
        "sequential" => (DeviceMapStrategy.Sequential, null),
        _ when value!.EndsWith(".json", StringComparison.OrdinalIgnoreCase) || File.Exists(value) => (DeviceMapStrategy.File, value),
        _ => throw new HarpiaException($"--device-map: '{value}' is not auto, balanced, sequential or a .json map file"),
    };
}

/// <summary>Memory one device gives the model under a map.</summary>
public sealed record DeviceUsage(DeviceId Device, long WeightBytes, long KvBytes, long ActivationBytes, long ReserveBytes, long BudgetBytes)
{
    /// <summary>Everything counted against the budget (weights, KV, activations, reserve).</summary>
    public long TotalBytes => WeightBytes + KvBytes + ActivationBytes + ReserveBytes;
    public bool Unbounded => BudgetBytes == long.MaxValue;
}

/// <summary>
/// Where each part of a model lives: the token embedding, each decoder layer (with its KV blocks), and the head
/// (ln_f + lm_head). Layers on "disk" stay memory-mapped in the checkpoint and run on the CPU, their KV in CPU memory.
/// </summary>
public sealed class DeviceMap
{
    public ModelFootprint Footprint { get; }
    public DeviceMapStrategy Strategy { get; }
    public DeviceId Embedding { get; }
    public IReadOnlyList<DeviceId> Layers { get; }
    public DeviceId Head { get; }
    public long MaxBatchTotalTokens { get; }
    public int MaxBatchPrefillTokens { get; }
    /// <summary>Every device that holds something or whose memory is used, in fill order.</summary>
    public IReadOnlyList<DeviceUsage> Usage { get; }

    internal DeviceMap(ModelFootprint footprint, DeviceMapStrategy strategy, DeviceId embedding, DeviceId[] layers, DeviceId head,
        long totalTokens, int prefillTokens, IReadOnlyList<DeviceUsage> usage)
    {
        Footprint = footprint; Strategy = strategy; Embedding = embedding; Layers = layers; Head = head;
        MaxBatchTotalTokens = totalTokens; MaxBatchPrefillTokens = prefillTokens; Usage = usage;
    }

    /// <summary>Devices that hold a module, in fill order (GPUs, CPU, disk).</summary>
    public IReadOnlyList<DeviceId> Devices => Layers.Append(Embedding).Append(Head).Distinct().Order().ToList();
    public int LayerCountOn(DeviceId device) => Layers.Count(d => d == device);
    public bool UsesDisk => Devices.Contains(DeviceId.Disk);
    /// <summary>True when no weight is left on disk: the model runs from memory.</summary>
    public bool FitsInMemory => !UsesDisk;

    /// <summary>Layer ranges on <paramref name="device"/>: [(0, 19), (40, 41)].</summary>
    public IReadOnlyList<(int First, int Last)> LayerRanges(DeviceId device)
    {
        var ranges = new List<(int, int)>();
        for (int i = 0; i < Layers.Count; i++)
        {
            if (Layers[i] != device) continue;
            int start = i;
            while (i + 1 < Layers.Count && Layers[i + 1] == device) i++;
            ranges.Add((start, i));
        }
        return ranges;
    }

    /// <summary>What a device holds, in words: "embedding, layers 0–19, ln_f/lm_head".</summary>
    public string Contents(DeviceId device)
    {
        var parts = new List<string>();
        if (Embedding == device) parts.Add("embedding");
        var ranges = LayerRanges(device);
        if (ranges.Count > 0)
            parts.Add((ranges.Sum(r => r.Last - r.First + 1) == 1 ? "layer " : "layers ")
                + string.Join(", ", ranges.Select(r => r.First == r.Last ? $"{r.First}" : $"{r.First}–{r.Last}")));
        if (Head == device) parts.Add("ln_f/lm_head");
        return string.Join(", ", parts);
    }

    /// <summary>One line: "GPU 0: embedding, layers 0–19 (27.3 GB) · GPU 1: layers 20–39, ln_f/lm_head (28.0 GB)".</summary>
    public string Summary() => string.Join(" · ", Devices.Select(d =>
    {
        var u = Usage.First(x => x.Device == d);
        return $"{d.Label}: {Contents(d)} ({ByteSize.Format(d.Kind == DeviceKind.Disk ? u.WeightBytes : u.TotalBytes)})";
    }));

    /// <summary>Lines for the runtime to print at start: one per device, with what it holds and its memory against its budget.</summary>
    public IReadOnlyList<string> Describe()
    {
        var lines = new List<string> { $"device map ({Strategy.ToString().ToLowerInvariant()}; KV for {MaxBatchTotalTokens:N0} tokens, activations for {MaxBatchPrefillTokens:N0} prefill tokens):" };
        foreach (var u in Usage)
        {
            string holds = Contents(u.Device);
            string budget = u.Unbounded ? "" : $" of {ByteSize.Format(u.BudgetBytes)}";
            string what = u.Device.Kind == DeviceKind.Disk
                ? $"{ByteSize.Format(u.WeightBytes)} of weights left memory-mapped in the checkpoint (run on the CPU, read from the file each pass)"
                : $"{ByteSize.Format(u.TotalBytes)}{budget} = weights {ByteSize.Format(u.WeightBytes)} + KV {ByteSize.Format(u.KvBytes)} + activations {ByteSize.Format(u.ActivationBytes)} + reserve {ByteSize.Format(u.ReserveBytes)}";
            lines.Add($"  {u.Device.Label,-6} {(holds.Length == 0 ? "(KV and activations of disk layers)" : holds)}: {what}");
        }
        return lines;
    }

    /// <summary>The map as accelerate's <c>hf_device_map</c>: module name → device ("0", "cpu", "disk").</summary>
    public IReadOnlyDictionary<string, string> ToModuleDictionary()
    {
        var n = Footprint.Naming;
        var map = new Dictionary<string, string> { [n.Embedding] = Embedding.ToString() };
        for (int i = 0; i < Layers.Count; i++) map[n.Layer(i)] = Layers[i].ToString();
        map[n.FinalNorm] = Head.ToString();
        map[n.OutputHead] = Head.ToString();
        return map;
    }

    /// <summary>Writes the map as a JSON object (the planner's <c>device_map</c> and the server's <c>/info</c>).</summary>
    public void WriteJson(Utf8JsonWriter w, bool includeModules = false)
    {
        w.WriteStartObject();
        w.WriteString("strategy", Strategy.ToString().ToLowerInvariant());
        w.WriteNumber("max_batch_total_tokens", MaxBatchTotalTokens);
        w.WriteNumber("max_batch_prefill_tokens", MaxBatchPrefillTokens);
        w.WriteBoolean("fits_in_memory", FitsInMemory);
        w.WriteString("summary", Summary());
        w.WriteStartArray("devices");
        foreach (var u in Usage)
        {
            w.WriteStartObject();
            w.WriteString("device", u.Device.ToString());
            w.WriteString("holds", Contents(u.Device));
            w.WriteBoolean("embedding", Embedding == u.Device);
            w.WriteStartArray("layers");
            foreach (var (first, last) in LayerRanges(u.Device))
            {
                w.WriteStartArray();
                w.WriteNumberValue(first);
                w.WriteNumberValue(last);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteBoolean("head", Head == u.Device);
            w.WriteNumber("weights_bytes", u.WeightBytes);
            w.WriteNumber("kv_bytes", u.KvBytes);
            w.WriteNumber("activation_bytes", u.ActivationBytes);
            w.WriteNumber("reserve_bytes", u.ReserveBytes);
            w.WriteNumber("total_bytes", u.TotalBytes);
            if (u.Unbounded) w.WriteNull("budget_bytes"); else w.WriteNumber("budget_bytes", u.BudgetBytes);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (includeModules)
        {
            w.WriteStartObject("modules");
            foreach (var (k, v) in ToModuleDictionary()) w.WriteString(k, v);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    public string ToJson(bool includeModules = true)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true })) WriteJson(w, includeModules);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Reads a map file: a JSON object of module name (or prefix: "transformer.h", "") → device (0, "cuda:1", "cpu", "disk").</summary>
    public static IReadOnlyDictionary<string, DeviceId> ReadFile(string path)
    {
        string text;
        try { text = System.IO.File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new HarpiaException($"--device-map {path}: cannot read: {e.Message}"); }
        return ParseFile(text, path);
    }

    public static IReadOnlyDictionary<string, DeviceId> ParseFile(string json, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new HarpiaException($"{source}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new HarpiaException($"{source}: expected a JSON object of module name → device, e.g. {{\"transformer.h.0\": 0, \"lm_head\": \"cpu\"}}");
            var result = new Dictionary<string, DeviceId>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                string where = $"{source}: module '{p.Name}'";
                var device = p.Value.ValueKind switch
                {
                    JsonValueKind.Number when p.Value.TryGetInt32(out int i) && i >= 0 => DeviceId.Gpu(i),
                    JsonValueKind.String => DeviceId.Parse(p.Value.GetString()!, where),
                    _ => throw new HarpiaException($"{where}: device must be a GPU index (0, 1, …), \"cpu\" or \"disk\""),
                };
                if (!result.TryAdd(p.Name, device)) throw new HarpiaException($"{where} appears twice");
            }
            return result;
        }
    }
}

/// <summary>
/// Builds a <see cref="DeviceMap"/> the way accelerate's <c>infer_auto_device_map</c> does: whole decoder layers (never
/// split), filled in order over the GPUs, then the CPU, then disk, each device holding at most its budget — weights,
/// plus KV for <c>--max-batch-total-tokens</c> positions of each of its layers, plus activations for
/// <c>--max-batch-prefill-tokens</c>, plus the device's reserve. Nothing is allocated: the runtime checks the map before
/// it loads a byte, and a map that cannot work is refused with the shortfall named.
/// </summary>
public static class DeviceMapper
{
    private enum Slot { Embedding, Layer, Head }

    public static DeviceMap Build(ModelFootprint model, DeviceMapSettings settings)
    {
        if (model.Layers < 1) throw new HarpiaException($"{model.ModelName}: the model has no decoder layers to place");
        if (settings.MaxBatchTotalTokens < 1) throw new HarpiaException($"--max-batch-total-tokens must be at least 1 (got {settings.MaxBatchTotalTokens})");
        if (settings.MaxBatchPrefillTokens < 1) throw new HarpiaException($"--max-batch-prefill-tokens must be at least 1 (got {settings.MaxBatchPrefillTokens})");
        var budgets = Budgets(settings);
        var ctx = new Context(model, settings, budgets);
        return settings.Strategy switch
        {
            DeviceMapStrategy.File => FromFile(ctx),
            DeviceMapStrategy.Sequential => Sequential(ctx, FillOrder(ctx), null, DeviceMapStrategy.Sequential)!,
            _ => Balanced(ctx, settings.Strategy),
        };
    }

    /// <summary>The usable budget of every device, after --num-shard and --max-memory; disk last (unbounded unless capped).</summary>
    private static SortedDictionary<DeviceId, (long Budget, long Reserve)> Budgets(DeviceMapSettings s)
    {
        var gpus = s.Devices.Where(d => d.Device.IsGpu).OrderBy(d => d.Device).ToList();
        if (gpus.Select(g => g.Device).Distinct().Count() != gpus.Count) throw new ArgumentException("a GPU is listed twice", nameof(s));
        string have = gpus.Count == 0 ? "this machine has no GPU" : $"this machine has {Plural(gpus.Count, "GPU")} ({string.Join(", ", gpus.Select(g => g.Device))})";
        if (s.NumShard is int n)
        {
            if (n < 1) throw new HarpiaException($"--num-shard must be at least 1 (got {n})");
            if (n > gpus.Count) throw new HarpiaException($"--num-shard {n}: {have}");
            gpus = gpus.Take(n).ToList();
        }
        foreach (var d in s.MaxMemory.Keys.Where(d => d.IsGpu))
        {
            if (!s.Devices.Any(x => x.Device == d)) throw new HarpiaException($"--max-memory: device {d} does not exist: {have}");
            if (!gpus.Any(x => x.Device == d)) throw new HarpiaException($"--max-memory: device {d} is outside --num-shard {s.NumShard} (GPUs 0–{s.NumShard - 1})");
        }
        var result = new SortedDictionary<DeviceId, (long, long)>();
        foreach (var d in gpus.Concat(s.Devices.Where(d => d.Device.Kind == DeviceKind.Cpu).Take(1)))
        {
            long bytes = d.Bytes;
            if (s.MaxMemory.TryGetValue(d.Device, out long cap))
            {
                if (d.Device.IsGpu && d.Bytes > 0 && cap > d.Bytes)
                    throw new HarpiaException($"--max-memory {d.Device}={ByteSize.Format(cap)}: {d.Device.Label} has only {ByteSize.Format(d.Bytes)}");
                bytes = cap;
            }
            result[d.Device] = (bytes, d.ReserveBytes);
        }
        if (!result.ContainsKey(DeviceId.Cpu))
            result[DeviceId.Cpu] = (s.MaxMemory.GetValueOrDefault(DeviceId.Cpu, 0), 0);
        result[DeviceId.Disk] = (s.MaxMemory.TryGetValue(DeviceId.Disk, out long disk) ? disk : long.MaxValue, 0);
        return result;
    }

    private static string Plural(int n, string what) => n == 1 ? $"1 {what}" : $"{n} {what}s";

    /// <summary>The state of a placement in progress: which device holds each module so far, and what that costs each device.</summary>
    private sealed class Context(ModelFootprint model, DeviceMapSettings settings, SortedDictionary<DeviceId, (long Budget, long Reserve)> budgets)
    {
        public ModelFootprint Model { get; } = model;
        public DeviceMapSettings Settings { get; } = settings;
        public SortedDictionary<DeviceId, (long Budget, long Reserve)> Budgets { get; } = budgets;
        public long KvPerLayer { get; } = model.KvBytesPerLayer(settings.MaxBatchTotalTokens);

        /// <summary>What each device would hold with these placements (null = not placed yet).</summary>
        /// <param name="pendingOnCpu">Charge the CPU now with the KV and activations of the modules not placed yet: once
        /// the fill reaches the CPU, whatever is left runs there or from disk, and either way its KV lives in CPU memory.</param>
        public Dictionary<DeviceId, DeviceUsage> Usage(DeviceId? embedding, IReadOnlyList<DeviceId?> layers, DeviceId? head,
            IReadOnlyDictionary<DeviceId, long>? caps = null, bool pendingOnCpu = false)
        {
            var weights = new Dictionary<DeviceId, long>();
            var kv = new Dictionary<DeviceId, long>();
            var runsLayers = new HashSet<DeviceId>();
            var runsHead = new HashSet<DeviceId>();
            var runsEmbedding = new HashSet<DeviceId>();
            void AddWeights(DeviceId d, long b) => weights[d] = weights.GetValueOrDefault(d) + b;
            if (embedding is DeviceId e) { AddWeights(e, Model.EmbeddingBytes); runsEmbedding.Add(e.MemoryDevice); }
            for (int i = 0; i < layers.Count; i++)
            {
                DeviceId d;
                if (layers[i] is DeviceId placed) { d = placed; AddWeights(d, Model.LayerBytes[i]); }
                else if (pendingOnCpu) d = DeviceId.Cpu;
                else continue;
                kv[d.MemoryDevice] = kv.GetValueOrDefault(d.MemoryDevice) + KvPerLayer;
                runsLayers.Add(d.MemoryDevice);
            }
            if (head is DeviceId h)
            {
                AddWeights(h, Model.FinalNormBytes + Model.OutputHeadBytes + (Model.TiedHead && embedding != h ? Model.EmbeddingBytes : 0));
                runsHead.Add(h.MemoryDevice);
            }
            else if (pendingOnCpu) runsHead.Add(DeviceId.Cpu);
            long prefill = Settings.MaxBatchPrefillTokens;
            var result = new Dictionary<DeviceId, DeviceUsage>();
            foreach (var d in weights.Keys.Concat(kv.Keys).Concat(runsHead).Concat(runsEmbedding).Distinct())
            {
                // As DecoderModel allocates: the residual stream on every device the pass visits (with the layers'
                // scratch where layers run), plus the gathered head rows and the logits where the head runs.
                long act = (runsLayers.Contains(d) ? Model.LayerActivationBytesPerToken * prefill
                        : runsHead.Contains(d) || runsEmbedding.Contains(d) ? Model.EmbeddingActivationBytesPerToken * prefill : 0)
                    + (runsHead.Contains(d) ? Model.HeadActivationBytesPerToken * prefill : 0);
                var (budget, reserve) = Budgets.TryGetValue(d, out var b) ? b : (0L, 0L);
                if (caps is not null && caps.TryGetValue(d, out long cap)) budget = Math.Min(budget, cap);
                result[d] = new DeviceUsage(d, weights.GetValueOrDefault(d), kv.GetValueOrDefault(d), act, d.Kind == DeviceKind.Disk ? 0 : reserve, budget);
            }
            return result;
        }

        /// <summary>The device over its budget under these placements, if any.</summary>
        public DeviceUsage? Over(Dictionary<DeviceId, DeviceUsage> usage) =>
            usage.Values.Where(u => !u.Unbounded && (u.Device.Kind == DeviceKind.Disk ? u.WeightBytes : u.TotalBytes) > u.BudgetBytes)
                .OrderBy(u => u.Device).FirstOrDefault();

        public DeviceMap Finish(DeviceId embedding, DeviceId[] layers, DeviceId head, DeviceMapStrategy strategy)
        {
            var usage = Usage(embedding, layers.Cast<DeviceId?>().ToArray(), head);
            return new DeviceMap(Model, strategy, embedding, layers, head, Settings.MaxBatchTotalTokens, Settings.MaxBatchPrefillTokens,
                usage.Values.OrderBy(u => u.Device).ToList());
        }

        public string ModuleName(Slot slot, int layer) => slot switch
        {
            Slot.Embedding => Model.Naming.Embedding,
            Slot.Layer => Model.Naming.Layer(layer),
            _ => $"{Model.Naming.FinalNorm}/{Model.Naming.OutputHead}",
        };
    }

    /// <summary>The devices to fill, in order: the selected GPUs, the CPU, disk; a device with no budget is skipped.</summary>
    private static List<DeviceId> FillOrder(Context ctx) => ctx.Budgets.Where(kv => kv.Value.Budget > 0).Select(kv => kv.Key).ToList();

    /// <summary>
    /// accelerate's sequential fill: each module goes to the current device if the device stays within its budget
    /// (or <paramref name="caps"/>), else to the next one; it never goes back. Returns null when something fits nowhere
    /// and <paramref name="caps"/> is given (a balancing probe); otherwise throws with the shortfall.
    /// </summary>
    private static DeviceMap? Sequential(Context ctx, List<DeviceId> order, IReadOnlyDictionary<DeviceId, long>? caps, DeviceMapStrategy strategy)
    {
        var m = ctx.Model;
        DeviceId? embedding = null, head = null;
        var layers = new DeviceId?[m.Layers];
        int k = 0;
        var skipped = new List<(DeviceId Device, Slot Slot, int Layer, DeviceUsage Over)>();
        for (int step = 0; step < m.Layers + 2; step++)
        {
            var slot = step == 0 ? Slot.Embedding : step <= m.Layers ? Slot.Layer : Slot.Head;
            int layer = step - 1;
            while (true)
            {
                if (k >= order.Count)
                {
                    if (caps is not null) return null;
                    throw NoRoom(ctx, slot, layer, embedding, layers, head, order);
                }
                var device = order[k];
                var (e, h) = (slot == Slot.Embedding ? device : embedding, slot == Slot.Head ? device : head);
                if (slot == Slot.Layer) layers[layer] = device;
                var over = ctx.Over(ctx.Usage(e, layers, h, caps, pendingOnCpu: device.MemoryDevice == DeviceId.Cpu));
                if (over is null) { embedding = e; head = h; break; }
                if (slot == Slot.Layer) layers[layer] = null;
                // A device that received nothing cannot hold even the first module that reached it.
                bool empty = embedding != device && head != device && !layers.Contains(device);
                if (empty) skipped.Add((device, slot, layer, over));
                k++;
            }
        }
        var finalLayers = layers.Select(l => l!.Value).ToArray();
        var map = ctx.Finish(embedding!.Value, finalLayers, head!.Value, strategy);
        if (caps is null)
        {
            // A GPU (or a CPU with an explicit budget) that was passed over while later devices took modules cannot hold
            // one module: that is a configuration error, not a placement.
            foreach (var (device, slot, layer, over) in skipped)
            {
                if (device.Kind == DeviceKind.Disk) continue;
                if (device.Kind == DeviceKind.Cpu && !ctx.Settings.MaxMemory.ContainsKey(DeviceId.Cpu)) continue;
                var need = ctx.Usage(slot == Slot.Embedding ? device : null,
                    Enumerable.Range(0, m.Layers).Select(i => slot == Slot.Layer && i == layer ? device : (DeviceId?)null).ToArray(),
                    slot == Slot.Head ? device : null)[device.MemoryDevice];
                throw new HarpiaException($"{device.Label}'s budget of {ByteSize.Format(need.BudgetBytes)} cannot hold one {(slot == Slot.Layer ? "decoder layer" : "module")}: " +
                    $"{ctx.ModuleName(slot, layer)} needs {Breakdown(need)}, short by {ByteSize.Format(need.TotalBytes - need.BudgetBytes)}" +
                    (ctx.Settings.MaxMemory.ContainsKey(device) ? $" (raise --max-memory {device}=…, or leave {device} out)" : " (leave it out with --num-shard or --max-memory)"));
            }
        }
        return map;
    }

    private static string Breakdown(DeviceUsage u) =>
        $"{ByteSize.Format(u.TotalBytes)} (weights {ByteSize.Format(u.WeightBytes)} + KV {ByteSize.Format(u.KvBytes)} + activations {ByteSize.Format(u.ActivationBytes)} + reserve {ByteSize.Format(u.ReserveBytes)})";

    private static HarpiaException NoRoom(Context ctx, Slot slot, int layer, DeviceId? embedding, DeviceId?[] layers, DeviceId? head, List<DeviceId> order)
    {
        var m = ctx.Model;
        long left = (slot == Slot.Embedding ? m.EmbeddingBytes : 0)
            + Enumerable.Range(0, m.Layers).Where(i => layers[i] is null).Sum(i => m.LayerBytes[i] + ctx.KvPerLayer)
            + m.FinalNormBytes + m.OutputHeadBytes + (m.TiedHead ? m.EmbeddingBytes : 0);
        string devices = string.Join(", ", order.Select(d => d.Kind == DeviceKind.Disk ? $"disk {ByteSize.Format(ctx.Budgets[d].Budget)}"
            : $"{d.Label} {ByteSize.Format(ctx.Budgets[d].Budget)}"));
        string leftover = slot == Slot.Layer ? $"layers {layer}–{m.Layers - 1} and ln_f/lm_head" : ctx.ModuleName(slot, layer);
        return new HarpiaException($"{m.ModelName} does not fit: {leftover} ({ByteSize.Format(left)} with their KV) fit on no device after " +
            $"the budgets are used ({(devices.Length == 0 ? "no device has a budget" : devices)}); raise --max-memory, allow disk offload, or lower --max-batch-total-tokens");
    }

    /// <summary>
    /// When everything fits on the selected GPUs: the contiguous split whose largest per-GPU total is smallest (a binary
    /// search over that cap with the sequential fill as the test). Otherwise the sequential fill over GPUs, CPU, disk —
    /// as accelerate's balanced memory degenerates to each GPU's maximum when the model is larger than the GPUs.
    /// </summary>
    private static DeviceMap Balanced(Context ctx, DeviceMapStrategy strategy)
    {
        var gpus = ctx.Budgets.Keys.Where(d => d.IsGpu && ctx.Budgets[d].Budget > 0).ToList();
        if (gpus.Count > 1)
        {
            long hi = gpus.Max(g => ctx.Budgets[g].Budget);
            var caps = gpus.ToDictionary(g => g, _ => hi);
            var best = Sequential(ctx, gpus, caps, strategy);
            if (best is not null)
            {
                long lo = 0;
                while (hi - lo > 1 << 20)   // to the MiB: finer changes no layer boundary that matters
                {
                    long mid = lo + (hi - lo) / 2;
                    var probe = Sequential(ctx, gpus, gpus.ToDictionary(g => g, _ => mid), strategy);
                    if (probe is not null) { best = probe; hi = mid; } else lo = mid;
                }
                return best;
            }
        }
        return Sequential(ctx, FillOrder(ctx), null, strategy)!;
    }

    private static DeviceMap FromFile(Context ctx)
    {
        var m = ctx.Model;
        var n = m.Naming;
        var file = ctx.Settings.FileAssignments ?? throw new ArgumentException("a file map needs FileAssignments");
        string source = ctx.Settings.FileName;
        var modules = new List<string> { n.Embedding };
        modules.AddRange(Enumerable.Range(0, m.Layers).Select(n.Layer));
        modules.Add(n.FinalNorm);
        modules.Add(n.OutputHead);

        static bool Covers(string key, string module) => key.Length == 0 || module == key || module.StartsWith(key + ".", StringComparison.Ordinal);
        foreach (var key in file.Keys)
        {
            if (modules.Any(mod => Covers(key, mod))) continue;
            if (modules.Any(mod => key.StartsWith(mod + ".", StringComparison.Ordinal)))
                throw new HarpiaException($"{source}: module '{key}' is part of a layer; Harpia places whole modules ({string.Join(", ", modules.Where(mod => key.StartsWith(mod + ".", StringComparison.Ordinal)))})");
            throw new HarpiaException($"{source}: unknown module '{key}' (this model has {n.Embedding}, {n.LayerPrefix}.0–{m.Layers - 1}, {n.FinalNorm}, {n.OutputHead})");
        }
        DeviceId Resolve(string module)
        {
            var key = file.Keys.Where(k => Covers(k, module)).OrderByDescending(k => k.Length).FirstOrDefault()
                ?? throw new HarpiaException($"{source}: module '{module}' has no device");
            var device = file[key];
            if (!ctx.Budgets.ContainsKey(device))
            {
                var gpus = ctx.Settings.Devices.Where(d => d.Device.IsGpu).Select(d => d.Device.ToString()).ToList();
                throw new HarpiaException($"{source}: module '{module}' is mapped to device {device}, which does not exist " +
                    $"({(gpus.Count == 0 ? "no GPU on this machine" : "GPUs: " + string.Join(", ", gpus))}{(ctx.Settings.NumShard is int s ? $"; --num-shard {s}" : "")})");
            }
            return device;
        }
        var embedding = Resolve(n.Embedding);
        var layers = Enumerable.Range(0, m.Layers).Select(i => Resolve(n.Layer(i))).ToArray();
        var head = Resolve(n.FinalNorm);
        if (Resolve(n.OutputHead) != head)
            throw new HarpiaException($"{source}: {n.FinalNorm} and {n.OutputHead} must be on one device (got {head} and {Resolve(n.OutputHead)})");
        var over = ctx.Over(ctx.Usage(embedding, layers.Cast<DeviceId?>().ToArray(), head));
        if (over is not null)
        {
            long used = over.Device.Kind == DeviceKind.Disk ? over.WeightBytes : over.TotalBytes;
            throw new HarpiaException($"{source}: {over.Device.Label} is over its budget: it needs {Breakdown(over)} but has {ByteSize.Format(over.BudgetBytes)}, " +
                $"short by {ByteSize.Format(used - over.BudgetBytes)}");
        }
        return ctx.Finish(embedding, layers, head, DeviceMapStrategy.File);
    }
}

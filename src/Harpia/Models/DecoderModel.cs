using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Formats;

namespace Harpia.Models;

/// <summary>
/// The generic runner of every decoder-only architecture: flattens a batch of sequence chunks into one token
/// list (all tokens of all sequences share each weight read), groups the sequences by KV storage into paged-attention
/// batches, keeps the workspaces, runs embeddings → the layer loop → final norm → lm_head on the backends of the
/// <see cref="BackendMap"/>, and writes the logits. The architecture supplies only the math
/// (<see cref="IDecoderArchitecture"/>).
/// </summary>
public class DecoderModel : ICausalLM, IDisposable
{
    public IDecoderArchitecture Architecture { get; }
    public ModelShape Shape { get; }
    public BackendMap Devices { get; }
    /// <summary>The checkpoint the weights point into; it lives as long as the model.</summary>
    public ITensorSource Source { get; }
    /// <summary>The end-of-sequence token, if the checkpoint names one.</summary>
    public int? EosTokenId { get; }

    private readonly object _forwardLock = new();
    private readonly Dictionary<object, Workspace> _workspaces = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    public DecoderModel(IDecoderArchitecture architecture, BackendMap devices, ITensorSource source, int? eosTokenId)
    {
        if (devices.Layers.Count != architecture.Shape.Layers)
            throw new ArgumentException($"the device map places {devices.Layers.Count} layers; the model has {architecture.Shape.Layers}");
        Architecture = architecture; Devices = devices; Source = source; EosTokenId = eosTokenId;
        Shape = architecture.Shape;
    }

    /// <summary>
    /// For an architecture's model: builds the architecture on <paramref name="devices"/>, or on the CPU alone when none
    /// are given (the architecture places its weights on the devices, so they are settled before it is built).
    /// </summary>
    protected DecoderModel(Func<BackendMap, IDecoderArchitecture> architecture, BackendMap? devices, int layers, ITensorSource source, int? eosTokenId)
        : this(Build(architecture, devices ?? BackendMap.Single(CpuBackend.Default, layers)), source, eosTokenId) { }

    private DecoderModel((IDecoderArchitecture Architecture, BackendMap Devices) built, ITensorSource source, int? eosTokenId)
        : this(built.Architecture, built.Devices, source, eosTokenId) { }

    private static (IDecoderArchitecture, BackendMap) Build(Func<BackendMap, IDecoderArchitecture> architecture, BackendMap devices) =>
        (architecture(devices), devices);

    /// <summary>
    /// Opens <paramref name="folderOrGguf"/> — a llama.cpp GGUF file, or a Hugging Face folder (config.json + safetensors,
    /// single or sharded; a file in it names the folder) — reads its config and binds the weights with
    /// <paramref name="bind"/> (given the folder, or null for a GGUF). Nothing is copied: the weights stay mapped. The
    /// checkpoint is closed if reading or binding fails.
    /// </summary>
    protected static TModel OpenCheckpoint<TModel, TConfig>(string folderOrGguf, Func<GgufFile, TConfig> ggufConfig,
        Func<string, TConfig> folderConfig, Func<TConfig, ITensorSource, string?, TModel> bind)
    {
        ITensorSource? source = null;
        try
        {
            UntrustedFile.CheckModelPath(folderOrGguf);
            if (File.Exists(folderOrGguf) && GgufFile.HasGgufMagic(folderOrGguf))
            {
                var gguf = GgufFile.Open(folderOrGguf);
                source = gguf;
                return bind(ggufConfig(gguf), gguf, null);
            }
            string folder = File.Exists(folderOrGguf) ? Path.GetDirectoryName(Path.GetFullPath(folderOrGguf))! : folderOrGguf;
            if (!Directory.Exists(folder)) throw new HarpiaException($"{folderOrGguf}: no such model folder or GGUF file");
            var config = folderConfig(folder);
            source = SafetensorsCheckpoint.Open(folderOrGguf);
            return bind(config, source, folder);
        }
        catch
        {
            source?.Dispose();
            throw;
        }
    }

    /// <summary>The model's name in placement messages: its folder's or file's name.</summary>
    protected static string NameOf(string path) => Path.GetFileName(Path.TrimEndingDirectorySeparator(path));

    /// <summary>Converts a just-loaded model (quantizing on load), disposing it if the conversion fails.</summary>
    protected static TModel ConvertLoaded<TModel>(TModel model, Func<TModel, TModel> convert) where TModel : DecoderModel
    {
        try { return convert(model); }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Weight bytes one decoded token reads: every layer matrix, lm_head, and one embedding row.</summary>
    public long WeightBytesPerToken =>
        Architecture.LayerMatrices.Sum(w => w.ByteLength) + Architecture.LmHead.Source.ByteLength + Architecture.Embeddings.RowBytes;

    public KvStorage AllocateKv(int blocks, int blockSize, KvCacheDtype dtype) =>
        KvStorage.Allocate(Shape, blocks, blockSize, dtype, l => Devices.Layers[l]);

    public void Forward(IReadOnlyList<SequenceChunk> batch, Span<float> logits)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var plan = BatchPlan.Create(batch, Shape.VocabSize);
        int vocab = Shape.VocabSize, R = plan.LogitRows;
        if (logits.Length < (long)R * vocab)
            throw new ArgumentException($"logits holds {logits.Length} floats; the batch needs {R} × {vocab}");
        lock (_forwardLock)
        {
            var (at, ws) = RunToFinalNorm(plan);
            at.Logits(Architecture.LmHead, ws.Head!, R, logits[..(R * vocab)]);
        }
        foreach (var chunk in batch) chunk.Cache.SetLength(chunk.StartPosition + chunk.Tokens.Length);
    }

    /// <summary>
    /// As <see cref="Forward"/>, but writes the final hidden states (after the final norm, before lm_head) instead of
    /// logits: for each chunk in order, <see cref="SequenceChunk.LogitRows"/> rows of <c>HiddenSize</c> floats.
    /// Embeddings pool these.
    /// </summary>
    public void ForwardHidden(IReadOnlyList<SequenceChunk> batch, Span<float> hidden)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var plan = BatchPlan.Create(batch, Shape.VocabSize);
        int H = Shape.HiddenSize, R = plan.LogitRows;
        if (hidden.Length < (long)R * H)
            throw new ArgumentException($"hidden holds {hidden.Length} floats; the batch needs {R} × {H}");
        lock (_forwardLock)
        {
            var (at, ws) = RunToFinalNorm(plan);
            at.Download(ws.Head!, hidden[..(R * H)]);
        }
        foreach (var chunk in batch) chunk.Cache.SetLength(chunk.StartPosition + chunk.Tokens.Length);
    }

    /// <summary>Embeddings, every layer, then the final norm on the rows asked for (in the head backend's workspace's Head).</summary>
    private (IComputeBackend At, Workspace Ws) RunToFinalNorm(BatchPlan plan)
    {
        int T = plan.TotalTokens, R = plan.LogitRows;
        var at = Devices.Embedding;
        var ws = WorkspaceOn(at, T, R);
        Architecture.Embed(Context(at, plan, ws), ws.Hidden);
        for (int layer = 0; layer < Shape.Layers; layer++)
        {
            ws = MoveTo(Devices.Layers[layer], ref at, ws, plan);
            Architecture.Layer(layer, Context(at, plan, ws), ws.Hidden);
        }
        ws = MoveTo(Devices.Head, ref at, ws, plan);
        // The final norm (and lm_head after it) run only on the rows whose logits were asked for (usually one per
        // sequence), on the head's backend: only its workspace holds the head rows.
        var head = ws.Head!;
        at.GatherRows(ws.Hidden, plan.LogitTokenIndex, head);
        Architecture.FinalNorm(Context(at, plan, ws), head, R);
        return (at, ws);
    }

    /// <summary>
    /// Hands the residual stream to the backend of the next part. Backends over one memory (the CPU and its
    /// disk-offload backend) share the workspace; between memories (devices) the hidden rows are copied through the
    /// receiving backend's <see cref="IComputeBackend.CopyFrom"/>.
    /// </summary>
    private Workspace MoveTo(IComputeBackend next, ref IComputeBackend at, Workspace ws, BatchPlan plan)
    {
        if (ReferenceEquals(next, at)) return ws;
        var target = WorkspaceOn(next, plan.TotalTokens, plan.LogitRows);
        if (!ReferenceEquals(target, ws)) next.CopyFrom(ws.Hidden, plan.TotalTokens, target.Hidden);
        at = next;
        return target;
    }

    private static ForwardContext Context(IComputeBackend backend, BatchPlan plan, Workspace ws) =>
        new(backend, plan.TotalTokens, plan.Tokens, plan.Positions, plan.Groups, ws.Scratch);

    /// <summary>The memory a backend's tensors live in: a CPU backend's host account (shared with its disk backend), else the backend itself.</summary>
    private static object MemoryOf(IComputeBackend backend) => backend is CpuBackend cpu ? cpu.Memory : backend;

    /// <summary>
    /// The workspace of a backend's memory: the residual stream everywhere; the layers' scratch only where layers run;
    /// the gathered head rows only where the head runs (what <see cref="Placement.ModelFootprint"/>'s activation
    /// estimate counts).
    /// </summary>
    private Workspace WorkspaceOn(IComputeBackend backend, int tokens, int logitRows)
    {
        var memory = MemoryOf(backend);
        if (!_workspaces.TryGetValue(memory, out var ws) || ws.Tokens < tokens || ws.LogitRows < logitRows)
        {
            ws?.Dispose();
            bool runsLayers = Devices.Layers.Any(b => MemoryOf(b) == memory), runsHead = MemoryOf(Devices.Head) == memory;
            ws = new Workspace(backend, Math.Max(tokens, ws?.Tokens ?? 0), Math.Max(logitRows, ws?.LogitRows ?? 0), Shape.HiddenSize,
                runsLayers ? Architecture.Scratch : [], runsHead);
            _workspaces[memory] = ws;
        }
        return ws;
    }

    public virtual void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var ws in _workspaces.Values) ws.Dispose();
        _workspaces.Clear();
        Architecture.Dispose();
        Source.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Activation tensors for up to <see cref="Tokens"/> tokens on one memory, reused across passes.</summary>
    private sealed class Workspace : IDisposable
    {
        public readonly int Tokens, LogitRows;
        public readonly DeviceTensor Hidden;
        /// <summary>The rows ln_f and lm_head read; null where the head does not run.</summary>
        public readonly DeviceTensor? Head;
        public readonly DeviceTensor[] Scratch;

        public Workspace(IComputeBackend backend, int tokens, int logitRows, int hidden, IReadOnlyList<int> scratch, bool head)
        {
            Tokens = tokens; LogitRows = logitRows;
            Hidden = backend.Allocate(TensorType.F32, tokens, hidden);
            Head = head ? backend.Allocate(TensorType.F32, logitRows, hidden) : null;
            Scratch = scratch.Select(width => backend.Allocate(TensorType.F32, tokens, width)).ToArray();
        }

        public void Dispose()
        {
            Hidden.Dispose(); Head?.Dispose();
            foreach (var t in Scratch) t.Dispose();
        }
    }

    /// <summary>The batch flattened to tokens and grouped by KV storage, checked before anything is computed.</summary>
    private sealed class BatchPlan
    {
        public required int[] Tokens { get; init; }
        public required int[] Positions { get; init; }
        /// <summary>For each logits row, the token whose hidden state produces it.</summary>
        public required int[] LogitTokenIndex { get; init; }
        public required List<(KvStorage Storage, AttentionBatch Batch)> Groups { get; init; }
        public int TotalTokens => Tokens.Length;
        public int LogitRows => LogitTokenIndex.Length;

        public static BatchPlan Create(IReadOnlyList<SequenceChunk> batch, int vocabSize)
        {
            if (batch.Count == 0) throw new ArgumentException("the batch is empty");
            int total = 0, logitRows = 0;
            var seen = new HashSet<IKvCache>(ReferenceEqualityComparer.Instance);
            foreach (var chunk in batch)
            {
                if (chunk.Tokens.Length == 0) throw new ArgumentException("a sequence chunk has no tokens");
                if (chunk.Cache is null) throw new ArgumentException("a sequence chunk has no KV cache");
                if (!seen.Add(chunk.Cache)) throw new ArgumentException("two chunks of one batch share a KV cache");
                if (chunk.StartPosition != chunk.Cache.Length)
                    throw new ArgumentException($"chunk starts at position {chunk.StartPosition} but its cache holds {chunk.Cache.Length}");
                total = checked(total + chunk.Tokens.Length);
                logitRows += chunk.LogitRows;
                checked { _ = chunk.StartPosition + chunk.Tokens.Length; }
            }
            var tokens = new int[total];
            var positions = new int[total];
            var logitIndex = new int[logitRows];
            var queryStart = new int[batch.Count];
            int t = 0, r = 0;
            for (int c = 0; c < batch.Count; c++)
            {
                var chunk = batch[c];
                chunk.Cache.EnsureCapacity(chunk.StartPosition + chunk.Tokens.Length);
                queryStart[c] = t;
                var ids = chunk.Tokens.Span;
                for (int i = 0; i < ids.Length; i++, t++)
                {
                    if ((uint)ids[i] >= (uint)vocabSize)
                        throw new HarpiaException($"token id {ids[i]} is outside the vocabulary (0..{vocabSize - 1})");
                    tokens[t] = ids[i];
                    positions[t] = chunk.StartPosition + i;
                    if (chunk.AllLogits || i == ids.Length - 1) logitIndex[r++] = t;
                }
            }
            // One paged-attention batch per KV storage (the runtime's pool: one; stand-alone caches: one each).
            var groups = new List<(KvStorage, AttentionBatch)>();
            foreach (var group in Enumerable.Range(0, batch.Count).GroupBy(c => batch[c].Cache.Storage, ReferenceEqualityComparer.Instance))
            {
                var members = group.ToArray();
                var storage = (KvStorage)group.Key!;
                var tableStart = new int[members.Length + 1];
                var tables = new List<int>();
                int maxContext = 0;
                for (int m = 0; m < members.Length; m++)
                {
                    var chunk = batch[members[m]];
                    int end = chunk.StartPosition + chunk.Tokens.Length;
                    int blocks = (end + storage.BlockSize - 1) / storage.BlockSize;
                    var table = chunk.Cache.BlockTable;
                    if (table.Count < blocks) throw new InvalidOperationException($"a KV cache holds {table.Count} blocks for {end} positions");
                    for (int b = 0; b < blocks; b++) tables.Add(table[b]);
                    tableStart[m + 1] = tables.Count;
                    maxContext = Math.Max(maxContext, end);
                }
                groups.Add((storage, new AttentionBatch
                {
                    BlockSize = storage.BlockSize,
                    QueryStart = members.Select(c => queryStart[c]).ToArray(),
                    QueryLength = members.Select(c => batch[c].Tokens.Length).ToArray(),
                    StartPosition = members.Select(c => batch[c].StartPosition).ToArray(),
                    BlockTableStart = tableStart,
                    BlockTables = tables.ToArray(),
                    MaxContext = maxContext,
                }));
            }
            return new BatchPlan { Tokens = tokens, Positions = positions, LogitTokenIndex = logitIndex, Groups = groups };
        }
    }
}

using Harpia.Formats;
using Harpia.Models.Falcon;
using Harpia.Models.Llama;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Models;

/// <summary>
/// <c>harpia quantize</c> for any registered architecture: resolves IN's architecture through
/// <see cref="ModelRegistry"/> and hands the request to that architecture's GGUF writer (each writes llama.cpp's names,
/// metadata and per-tensor type choices for its architecture). The steps that do not depend on the architecture —
/// checking IN and OUT, streaming a plan's rows into the file, re-encoding a plan in memory, the tokenizer metadata —
/// are here, shared by every architecture's quantizer.
/// </summary>
public static unsafe class ModelQuantizer
{
    public static QuantizeResult WriteGguf(QuantizeRequest request, Action<QuantizeProgress>? progress = null)
    {
        if (string.IsNullOrWhiteSpace(request.Input)) throw new HarpiaException("IN: give a Hugging Face model folder or a GGUF file");
        var architecture = ModelRegistry.Resolve(request.Input);
        return architecture.Name switch
        {
            "falcon" => FalconQuantizer.WriteGguf(request, progress),
            "llama" => LlamaQuantizer.WriteGguf(request, progress),
            _ => throw new HarpiaException($"{request.Input}: Harpia cannot write a GGUF for the '{architecture.Name}' architecture"),
        };
    }

    /// <summary>Rows are encoded and written in chunks of about this many output bytes (bounds memory on huge tensors).</summary>
    private const long ChunkBytes = 32L << 20;

    /// <summary>What an architecture's quantizer tells <see cref="WriteGguf{TModel}"/> about its model.</summary>
    /// <param name="Load">Loads IN.</param>
    /// <param name="Plan">Every tensor of the file, in llama.cpp's order, with its type.</param>
    /// <param name="Metadata">The GGUF metadata for a model of this name, given the tokenizer's entries.</param>
    /// <param name="TokenIds">Vocabulary size and BOS/EOS ids, for a tokenizer.json turned into GGUF metadata.</param>
    internal sealed record GgufWriting<TModel>(
        Func<string, TModel> Load,
        Func<TModel, QuantizationScheme, IReadOnlyList<PlannedTensor>> Plan,
        Func<TModel, string, QuantizationScheme, List<KeyValuePair<string, object>>, List<KeyValuePair<string, object>>> Metadata,
        Func<TModel, (int VocabSize, int BosTokenId, int EosTokenId)> TokenIds) where TModel : DecoderModel;

    /// <summary>
    /// <c>harpia quantize IN OUT</c>: checks IN and OUT, loads IN (a Hugging Face folder or an f32/f16/bf16 GGUF), writes
    /// OUT as GGUF through OUT.partial, one tensor at a time, rows encoded in parallel.
    /// </summary>
    internal static QuantizeResult WriteGguf<TModel>(QuantizeRequest request, GgufWriting<TModel> architecture, Action<QuantizeProgress>? progress)
        where TModel : DecoderModel
    {
        string input = request.Input, output = request.Output;
        if (string.IsNullOrWhiteSpace(input)) throw new HarpiaException("IN: give a Hugging Face model folder or a GGUF file");
        if (string.IsNullOrWhiteSpace(output)) throw new HarpiaException("OUT: give the GGUF file to write");
        if (!File.Exists(input) && !Directory.Exists(input)) throw new HarpiaException($"{input}: no such model folder or GGUF file");
        string outFull = Path.GetFullPath(output);
        if (string.Equals(Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar), outFull, StringComparison.Ordinal))
            throw new HarpiaException($"{output}: OUT is the same path as IN; Harpia never overwrites its input");
        if (File.Exists(outFull) && !request.Force) throw new HarpiaException($"{output}: already exists (pass --force to overwrite it)");
        if (request.Threads is <= 0) throw new HarpiaException($"--threads {request.Threads}: must be at least 1");

        using var model = architecture.Load(input);
        var inputFiles = model.Source.Tensors.Values.Select(t => Path.GetFullPath(t.FilePath)).ToHashSet(StringComparer.Ordinal);
        if (inputFiles.Contains(outFull))
            throw new HarpiaException($"{output}: OUT is one of IN's own files; Harpia never overwrites its input");

        var (vocabSize, bos, eos) = architecture.TokenIds(model);
        var tokenizer = TokenizerMetadata(model.Source, input, request.Tokenizer, vocabSize, bos, eos);
        var plan = architecture.Plan(model, request.Scheme);
        foreach (var t in plan)
            if (t.Matrix is { } m && GgmlTypes.IsQuantized(m.Type) && m.Type != t.Type)
                throw new HarpiaException($"{input}: tensor '{m.Name}' is already {m.Type}; quantize from the f32/f16/bf16 checkpoint instead");
        string name = Path.GetFileNameWithoutExtension(Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar));
        var metadata = architecture.Metadata(model, name, request.Scheme, tokenizer);
        var infos = plan.Select(t => new GgufWriter.TensorInfo(t.Name, t.Type, t.Shape)).ToList();

        using var writer = GgufWriter.Create(outFull, metadata, infos, request.Force);
        long maxChunk = plan.Max(t => Math.Min(t.ByteSize, ChunkBytes + RowBytes(t)));
        using var buffer = new NativeBuffer(maxChunk);
        long done = 0, parameters = 0;
        int threads = request.Threads ?? Environment.ProcessorCount;
        for (int i = 0; i < plan.Count; i++)
        {
            var t = plan[i];
            progress?.Invoke(new QuantizeProgress(i, plan.Count, t.Name, t.Type, done, writer.TotalBytes));
            // llama.cpp's rotary frequency factors are derived from the config, not parameters of the model.
            if (t.Name != "rope_freqs.weight") parameters += t.Shape.Aggregate(1L, (x, y) => x * y);
            if (t.Vector is { } v)
            {
                writer.WriteTensorData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
                done += t.ByteSize;
                continue;
            }
            long rowBytes = RowBytes(t);
            int rows = (int)t.Shape[0];
            int chunkRows = (int)Math.Max(1, Math.Min(rows, ChunkBytes / rowBytes));
            for (int r0 = 0; r0 < rows; r0 += chunkRows)
            {
                int n = Math.Min(chunkRows, rows - r0);
                EncodeRows(t, r0, n, buffer.Pointer, threads);
                writer.WriteTensorData(new ReadOnlySpan<byte>(buffer.Pointer, checked((int)(n * rowBytes))));
                done += n * rowBytes;
                progress?.Invoke(new QuantizeProgress(i, plan.Count, t.Name, t.Type, done, writer.TotalBytes));
            }
        }
        writer.Commit();
        progress?.Invoke(new QuantizeProgress(plan.Count, plan.Count, "", GgmlType.F32, writer.TotalBytes, writer.TotalBytes));
        var counts = plan.GroupBy(t => t.Type).ToDictionary(g => g.Key, g => g.Count());
        return new QuantizeResult(outFull, plan.Count, writer.TotalBytes, parameters, counts);
    }

    /// <summary>
    /// Re-encodes every f32/f16/bf16 matrix of <paramref name="plan"/> whose planned type differs, one tensor at a time
    /// into native memory (the source stays mapped); tensors already quantized are left alone. Returns the mapping from
    /// each original matrix to its replacement (identity for the others) and the source that owns the new memory and
    /// <paramref name="source"/>: the caller builds its weights with <c>Swap</c> and its model over that source.
    /// </summary>
    internal static (Func<WeightMatrix, WeightMatrix> Swap, QuantizedTensorSource Source) EncodeOnLoad(
        IReadOnlyList<PlannedTensor> plan, ITensorSource source, QuantizationScheme scheme, int? threads)
    {
        var replaced = new Dictionary<WeightMatrix, WeightMatrix>(ReferenceEqualityComparer.Instance);
        var entries = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        var buffers = new List<NativeBuffer>();
        try
        {
            foreach (var t in plan)
            {
                if (t.Matrix is not { } m || m.Type == t.Type || GgmlTypes.IsQuantized(m.Type) || replaced.ContainsKey(m)) continue;
                var buffer = new NativeBuffer(t.ByteSize);
                buffers.Add(buffer);
                EncodeRows(t, 0, m.Rows, buffer.Pointer, threads ?? Environment.ProcessorCount);
                var q = new WeightMatrix(m.Name, t.Type, m.Rows, m.Cols, buffer.Pointer, buffer);
                replaced[m] = q;
                entries[m.Name] = new TensorEntry(m.Name, t.Type, [m.Rows, m.Cols], buffer.Pointer, t.ByteSize, source.Path + $" ({scheme.Name} on load)", buffer);
            }
        }
        catch
        {
            foreach (var b in buffers) b.Dispose();
            throw;
        }
        return (m => replaced.TryGetValue(m, out var q) ? q : m, new QuantizedTensorSource(source, entries, buffers));
    }

    internal static long RowBytes(PlannedTensor t) => t.Shape.Length == 2 ? GgmlTypes.ByteSize(t.Type, t.Shape[1])!.Value : t.ByteSize;

    /// <summary>Encodes rows [r0, r0 + n) of a planned matrix into dst, rows split across threads.</summary>
    internal static void EncodeRows(PlannedTensor t, int r0, int n, byte* dst, int threads)
    {
        var m = t.Matrix!;
        long rowBytes = RowBytes(t);
        var order = t.RowOrder;
        var type = t.Type;
        nint dstAddress = (nint)dst;
        if (m.Type == type)
        {
            // Same type: the bytes are copied through (a reorder moves whole rows).
            for (int r = 0; r < n; r++)
                Buffer.MemoryCopy(m.Data + (order?[r0 + r] ?? r0 + r) * m.RowBytes, dst + r * rowBytes, rowBytes, rowBytes);
            GC.KeepAlive(m);
            return;
        }
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = threads },
            () => new float[m.Cols],
            (r, _, row) =>
            {
                MatMul.DequantizeRow(m, order?[r0 + r] ?? r0 + (int)r, row);
                RowEncoder.Encode(type, row, new Span<byte>((byte*)dstAddress + r * rowBytes, (int)rowBytes));
                return row;
            },
            _ => { });
        GC.KeepAlive(m);
    }

    /// <summary>The tokenizer metadata for the file: --tokenizer, else IN's GGUF tokenizer, else IN's tokenizer.json.</summary>
    private static List<KeyValuePair<string, object>> TokenizerMetadata(ITensorSource source, string input, string? explicitPath, int vocabSize, int bosTokenId, int eosTokenId)
    {
        if (explicitPath is not null)
        {
            if (!File.Exists(explicitPath)) throw new HarpiaException($"--tokenizer {explicitPath}: file not found");
            if (GgufFile.HasGgufMagic(explicitPath))
            {
                using var g = GgufFile.Open(explicitPath);
                if (!GgufTokenizerJson.HasTokenizer(g)) throw new HarpiaException($"--tokenizer {explicitPath}: this GGUF carries no tokenizer");
                return GgufTokenizerMetadata.FromGguf(g);
            }
            return GgufTokenizerMetadata.FromTokenizerJson(explicitPath, vocabSize, bosTokenId, eosTokenId);
        }
        if (source is GgufFile gguf)
        {
            if (GgufTokenizerJson.HasTokenizer(gguf)) return GgufTokenizerMetadata.FromGguf(gguf);
            throw new HarpiaException($"{input}: this GGUF carries no tokenizer, which llama.cpp needs; pass --tokenizer tokenizer.json");
        }
        string json = Path.Combine(source.Path, "tokenizer.json");
        if (!File.Exists(json))
            throw new HarpiaException($"{input}: no tokenizer.json in the model folder, and llama.cpp needs the tokenizer in the GGUF; pass --tokenizer FILE (a tokenizer.json, or a GGUF that carries one)");
        return GgufTokenizerMetadata.FromTokenizerJson(json, vocabSize, bosTokenId, eosTokenId);
    }
}

using System.Buffers;
using Harpia.Tensors;

namespace Harpia.Backends.Cpu;

/// <summary>
/// Paged attention over <see cref="CpuKvLayer"/> storage. Work is split by (sequence, KV head, slice of that KV
/// head's query heads): the query heads sharing a KV head run together, so with f16 storage a KV head's keys and
/// values are widened once for the whole group (Falcon-180B: 29 query heads per KV head). The group is cut into
/// slices only when there are fewer (sequence, KV head) pairs than threads (multi-query 7B decoding one sequence).
/// </summary>
internal static unsafe class CpuAttention
{
    public static void Store(float[] k, float[] v, CpuKvLayer kv, AttentionBatch batch)
    {
        int row = kv.RowElements;
        for (int s = 0; s < batch.Sequences; s++)
            for (int i = 0; i < batch.QueryLength[s]; i++)
            {
                int t = batch.QueryStart[s] + i, position = batch.StartPosition[s] + i;
                var table = batch.BlockTable(s);
                int block = table[position / batch.BlockSize], slot = position % batch.BlockSize;
                Write(k.AsSpan(t * row, row), kv.RowPointer(block, 0, slot), kv.Dtype);
                Write(v.AsSpan(t * row, row), kv.RowPointer(block, 1, slot), kv.Dtype);
            }
    }

    private static void Write(ReadOnlySpan<float> src, byte* dst, KvCacheDtype dtype)
    {
        if (dtype == KvCacheDtype.F32) src.CopyTo(new Span<float>(dst, src.Length));
        else System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(src, new Span<Half>(dst, src.Length));
    }

    private sealed class Job
    {
        public required float[] Q, Output;
        public required CpuKvLayer Kv;
        public required AttentionBatch Batch;
        public AttentionShape Shape;
        public int Slices;
    }

    public static void Attend(float[] q, CpuKvLayer kv, AttentionBatch batch, AttentionShape shape, float[] output)
    {
        if (shape.HeadDim != kv.HeadDim || shape.KvHeads != kv.KvHeads || shape.Heads % shape.KvHeads != 0)
            throw new ArgumentException($"attention of {shape.Heads} heads over {shape.KvHeads} KV heads of {shape.HeadDim} does not match the KV storage ({kv.KvHeads} × {kv.HeadDim})");
        int pairs = batch.Sequences * shape.KvHeads;
        int slices = Math.Clamp((ComputePool.Threads + pairs - 1) / pairs, 1, shape.QueriesPerKvHead);
        var job = new Job { Q = q, Output = output, Kv = kv, Batch = batch, Shape = shape, Slices = slices };
        ComputePool.For(pairs * slices, (i0, i1) => Run(job, i0, i1));
    }

    private static void Run(Job job, int i0, int i1)
    {
        var shape = job.Shape;
        var batch = job.Batch;
        int D = shape.HeadDim, qPerKv = shape.QueriesPerKvHead, qWidth = shape.Heads * D;
        float[] scores = ArrayPool<float>.Shared.Rent(Math.Max(1, batch.MaxContext));
        float[]? widened = null;
        try
        {
            for (int item = i0; item < i1; item++)
            {
                int slice = item % job.Slices, pair = item / job.Slices;
                int s = pair / shape.KvHeads, g = pair % shape.KvHeads;
                int h0 = g * qPerKv + slice * qPerKv / job.Slices, h1 = g * qPerKv + (slice + 1) * qPerKv / job.Slices;
                int context = batch.StartPosition[s] + batch.QueryLength[s];
                var table = batch.BlockTable(s);
                if (job.Kv.Dtype == KvCacheDtype.F32)
                {
                    var head = new PagedHead(job.Kv, table, g);
                    AttendGroup(job, s, h0, h1, head, scores, qWidth);
                }
                else
                {
                    // Widen this KV head's keys and values once for every query head of the group.
                    long need = 2L * context * D;
                    if (widened is null || widened.Length < need)
                    {
                        if (widened is not null) ArrayPool<float>.Shared.Return(widened);
                        widened = ArrayPool<float>.Shared.Rent(checked((int)need));
                    }
                    for (int p = 0; p < context; p++)
                    {
                        int block = table[p / batch.BlockSize], slot = p % batch.BlockSize;
                        var keys = new ReadOnlySpan<Half>(job.Kv.RowPointer(block, 0, slot), job.Kv.RowElements).Slice(g * D, D);
                        var values = new ReadOnlySpan<Half>(job.Kv.RowPointer(block, 1, slot), job.Kv.RowElements).Slice(g * D, D);
                        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(keys, widened.AsSpan(p * D, D));
                        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(values, widened.AsSpan((context + p) * D, D));
                    }
                    AttendGroup(job, s, h0, h1, new DenseHead(widened, context, D), scores, qWidth);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scores);
            if (widened is not null) ArrayPool<float>.Shared.Return(widened);
        }
    }

    private static void AttendGroup<THead>(Job job, int s, int h0, int h1, THead head, float[] scores, int qWidth)
        where THead : Attention.IHeadVectors, allows ref struct
    {
        var batch = job.Batch;
        int D = job.Shape.HeadDim;
        for (int i = 0; i < batch.QueryLength[s]; i++)
        {
            int t = batch.QueryStart[s] + i, count = batch.StartPosition[s] + i + 1;
            for (int h = h0; h < h1; h++)
                Attention.AttendOneHead(new ReadOnlySpan<float>(job.Q, t * qWidth + h * D, D), count, job.Shape.Scale, head,
                    scores, job.Output.AsSpan(t * qWidth + h * D, D));
        }
    }

    /// <summary>One KV head's vectors in f32 paged storage, read in place through the block table.</summary>
    private readonly ref struct PagedHead(CpuKvLayer kv, ReadOnlySpan<int> table, int kvHead) : Attention.IHeadVectors
    {
        private readonly ReadOnlySpan<int> _table = table;
        private readonly int _offset = kvHead * kv.HeadDim, _dim = kv.HeadDim, _blockSize = kv.BlockSize;

        public ReadOnlySpan<float> Key(int position) =>
            new((float*)kv.RowPointer(_table[position / _blockSize], 0, position % _blockSize) + _offset, _dim);
        public ReadOnlySpan<float> Value(int position) =>
            new((float*)kv.RowPointer(_table[position / _blockSize], 1, position % _blockSize) + _offset, _dim);
    }

    /// <summary>One KV head widened to f32: keys [context, D] then values [context, D].</summary>
    private readonly struct DenseHead(float[] data, int context, int dim) : Attention.IHeadVectors
    {
        public ReadOnlySpan<float> Key(int position) => new(data, position * dim, dim);
        public ReadOnlySpan<float> Value(int position) => new(data, (context + position) * dim, dim);
    }
}

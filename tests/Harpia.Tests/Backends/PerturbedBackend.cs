using Harpia.Backends;
using Harpia.Tensors;

namespace Harpia.Tests.Backends;

/// <summary>
/// A backend that forwards every call to an inner one but gets one op slightly wrong: the last element that op
/// writes is moved by 1e-3 of its size (by 1 where a quantized product's stated bound is a worst case of order 0.1–1).
/// The conformance suite run against it must fail: each comparison is shown able to catch a wrong op.
/// </summary>
internal sealed class PerturbedBackend(IComputeBackend inner, string op) : IComputeBackend
{
    public const string Prefix = "perturbed:";

    public DeviceInfo Device => inner.Device;
    public string Name => Prefix + op;

    private void Nudge(string name, DeviceTensor t, int n, float size = 1e-3f)
    {
        if (name != op) return;
        var values = new float[n * t.Cols];
        inner.Download(t, values);
        values[^1] += size * Math.Max(1f, Math.Abs(values[^1]));
        inner.Upload(values, t);
    }

    public DeviceTensor Allocate(TensorType type, int rows, int cols) => inner.Allocate(type, rows, cols);
    public DeviceTensor Upload(ReadOnlySpan<float> values) => inner.Upload(values);
    public DeviceTensor View(DeviceTensor tensor, int cols) => inner.View(tensor, cols);

    public void Upload(ReadOnlySpan<float> values, DeviceTensor dst)
    {
        inner.Upload(values, dst);
        if (values.Length > 0 && values.Length % dst.Cols == 0) Nudge("Upload", dst, values.Length / dst.Cols);
    }

    public void Download(DeviceTensor src, Span<float> values)
    {
        inner.Download(src, values);
        if (op == "Download" && values.Length > 0) values[^1] += 1e-3f * Math.Max(1f, Math.Abs(values[^1]));
    }

    public void CopyFrom(DeviceTensor src, int rows, DeviceTensor dst) { inner.CopyFrom(src, rows, dst); Nudge("CopyFrom", dst, rows); }
    public DeviceWeight PrepareWeight(WeightMatrix weight, WeightRole role = WeightRole.Linear) => inner.PrepareWeight(weight, role);
    public KvLayerStorage AllocateKv(int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype) =>
        inner.AllocateKv(op == "AllocateKv" ? blocks + 1 : blocks, blockSize, kvHeads, headDim, dtype);

    public void MatMul(DeviceWeight w, DeviceTensor x, int n, DeviceTensor y) { inner.MatMul(w, x, n, y); Nudge("MatMul", y, n, 1f); }
    public void AddBias(DeviceTensor y, int n, DeviceTensor bias) { inner.AddBias(y, n, bias); Nudge("AddBias", y, n); }
    public void Add(DeviceTensor a, DeviceTensor b, int n) { inner.Add(a, b, n); Nudge("Add", a, n); }
    public void LayerNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, DeviceTensor? bias, float eps) { inner.LayerNorm(x, y, n, weight, bias, eps); Nudge("LayerNorm", y, n); }
    public void RmsNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, float eps) { inner.RmsNorm(x, y, n, weight, eps); Nudge("RmsNorm", y, n); }
    public void Gelu(DeviceTensor x, int n) { inner.Gelu(x, n); Nudge("Gelu", x, n); }
    public void Silu(DeviceTensor x, int n) { inner.Silu(x, n); Nudge("Silu", x, n); }
    public void SiluMul(DeviceTensor gate, DeviceTensor up, int n) { inner.SiluMul(gate, up, n); Nudge("SiluMul", gate, n); }
    public void Embed(DeviceWeight table, ReadOnlySpan<int> tokens, DeviceTensor y) { inner.Embed(table, tokens, y); Nudge("Embed", y, tokens.Length); }
    public void GatherRows(DeviceTensor src, ReadOnlySpan<int> rows, DeviceTensor dst) { inner.GatherRows(src, rows, dst); Nudge("GatherRows", dst, rows.Length); }

    public void CopyColumns(DeviceTensor src, int n, int offset, int groups, int groupStride, int width, DeviceTensor dst)
    {
        inner.CopyColumns(src, n, offset, groups, groupStride, width, dst);
        Nudge("CopyColumns", dst, n);
    }

    public void Rope(DeviceTensor q, int qHeads, DeviceTensor k, int kHeads, int headDim, ReadOnlySpan<int> positions, RotaryEmbedding rope)
    {
        inner.Rope(q, qHeads, k, kHeads, headDim, positions, rope);
        Nudge("Rope", k, positions.Length);
    }

    public void StoreKv(DeviceTensor k, DeviceTensor v, KvLayerStorage kv, AttentionBatch batch)
    {
        // Stores a value the caller did not give (the caller's tensor is put back as it was).
        int rows = batch.QueryLength.Sum();
        var saved = new float[rows * v.Cols];
        inner.Download(v, saved);
        Nudge("StoreKv", v, rows, 0.05f);
        inner.StoreKv(k, v, kv, batch);
        inner.Upload(saved, v);
    }

    public void Attention(DeviceTensor q, KvLayerStorage kv, AttentionBatch batch, AttentionShape shape, DeviceTensor output)
    {
        inner.Attention(q, kv, batch, shape, output);
        Nudge("Attention", output, batch.QueryLength.Sum());
    }

    public void Logits(DeviceWeight w, DeviceTensor x, int n, Span<float> logits)
    {
        inner.Logits(w, x, n, logits);
        if (op == "Logits") logits[^1] += Math.Max(1f, Math.Abs(logits[^1]));
    }

    public void Synchronize() => inner.Synchronize();
    public void Dispose() => inner.Dispose();
}

using System.Runtime.CompilerServices;
using Harpia.Tensors;

namespace Harpia.Backends.Cpu;

/// <summary>What a host allocation is for, as a device map counts it.</summary>
public enum MemoryUse { Weights, Kv, Activations }

/// <summary>
/// The accounting of one memory a <see cref="CpuBackend"/> allocates from: bytes of weights (mapped or repacked
/// matrices and uploaded norms/biases, each matrix once), KV storage and activation tensors now held, against an
/// optional budget. Each CPU stand-in for a GPU has its own, so a test can hold every "device" to the budget its
/// device map gives it; the CPU and the disk-offload backend share one (disk layers' KV and activations live in
/// CPU memory, as the map counts them).
/// </summary>
public sealed class HostMemory(string name, long? budgetBytes = null)
{
    private long _weights, _kv, _activations;
    private readonly ConditionalWeakTable<WeightMatrix, object> _charged = new();

    /// <summary>The device this memory stands for, in errors ("cpu", "GPU 1 (CPU stand-in)").</summary>
    public string Name { get; } = name;
    /// <summary>The most bytes it may hold; null: unbounded.</summary>
    public long? BudgetBytes { get; } = budgetBytes;
    public long WeightBytes => Interlocked.Read(ref _weights);
    public long KvBytes => Interlocked.Read(ref _kv);
    public long ActivationBytes => Interlocked.Read(ref _activations);
    public long TotalBytes => WeightBytes + KvBytes + ActivationBytes;

    /// <summary>Counts <paramref name="bytes"/> more of <paramref name="use"/>; past the budget, refuses with the device and the bytes.</summary>
    public void Charge(MemoryUse use, long bytes)
    {
        Interlocked.Add(ref Counter(use), bytes);
        if (BudgetBytes is long budget && TotalBytes > budget)
        {
            Interlocked.Add(ref Counter(use), -bytes);
            throw new HarpiaException($"{Name}: {Describe(use)} of {bytes:N0} bytes would take it past its budget of {budget:N0} bytes " +
                $"({TotalBytes:N0} in use: weights {WeightBytes:N0}, KV {KvBytes:N0}, activations {ActivationBytes:N0})");
        }
    }

    public void Release(MemoryUse use, long bytes) => Interlocked.Add(ref Counter(use), -bytes);

    /// <summary>Charges a weight matrix once however many times it is prepared here (a tied lm_head is the embedding).</summary>
    public bool ChargeMatrix(WeightMatrix matrix)
    {
        lock (_charged)
        {
            if (_charged.TryGetValue(matrix, out _)) return false;
            Charge(MemoryUse.Weights, matrix.ByteLength);
            _charged.Add(matrix, matrix);
            return true;
        }
    }

    /// <summary>Undoes <see cref="ChargeMatrix"/> when the weight prepared here is disposed.</summary>
    public void ReleaseMatrix(WeightMatrix matrix)
    {
        lock (_charged)
            if (_charged.Remove(matrix)) Release(MemoryUse.Weights, matrix.ByteLength);
    }

    private ref long Counter(MemoryUse use)
    {
        if (use == MemoryUse.Weights) return ref _weights;
        if (use == MemoryUse.Kv) return ref _kv;
        return ref _activations;
    }

    private static string Describe(MemoryUse use) => use switch
    {
        MemoryUse.Weights => "a weight",
        MemoryUse.Kv => "KV storage",
        _ => "an activation tensor",
    };

    public override string ToString() => Name;
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Bench;

/// <summary>
/// `matvec`: times matrix × vector (decode) and a small matrix × matrix (prefill) for every weight type at
/// Falcon-40B-like sizes and reports GB/s of weight bytes read next to the machine's measured read bandwidth.
/// </summary>
public static unsafe class MatVecBench
{
    public static int Run(string[] args)
    {
        int rows = 8192, cols = 8192, threads = ComputePool.Threads, prefill = 0;
        bool repack = false;
        double seconds = 0.6;
        long bwMb = 1024;
        var types = new List<GgmlType> { GgmlType.F32, GgmlType.BF16, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0,
            GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K };
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--rows": rows = int.Parse(Next()); break;
                case "--cols": cols = int.Parse(Next()); break;
                case "--threads": threads = int.Parse(Next()); break;
                case "--seconds": seconds = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                case "--prefill": prefill = int.Parse(Next()); break;
                case "--bw-mb": bwMb = long.Parse(Next()); break;
                case "--repack": repack = true; break;
                case "--simd": SimdPaths.Forced = Enum.Parse<SimdPath>(Next(), true); break;
                case "--types": types = Next().Split(',').Select(s => Enum.Parse<GgmlType>(s, true)).ToList(); break;
                default: Console.Error.WriteLine($"matvec: unknown option {args[i]}"); return 2;
            }
        }
        if (cols % 256 != 0) { Console.Error.WriteLine("matvec: --cols must be a multiple of 256"); return 2; }
        ComputePool.Threads = threads;
        Console.WriteLine($"matvec {rows} x {cols}, threads {threads}, kernels {SimdPaths.Describe()}");
        Console.WriteLine($"load average at start: {ReadLoad()}");
        double bw = bwMb > 0 ? ReadBandwidth(bwMb << 20, threads) : double.NaN;
        Console.WriteLine($"memory read bandwidth (streaming sum over {bwMb} MB, {threads} threads): {bw:F1} GB/s");
        Console.WriteLine();
        Console.WriteLine("µs/matvec is the fastest call's wall time; cpu µs is process CPU time per call (all threads), which a loaded");
        Console.WriteLine("machine inflates far less than wall time — compare kernels by it when other work shares the cores.");
        Console.WriteLine($"{"type",-6} {"MB",8} {"µs/matvec",10} {"cpu µs",9} {"GB/s",7} {"% of bw",8}" + (prefill > 0 ? $" {"prefill n=" + prefill + " ms",16} {"cpu ms",8} {"Gop/s",7}" : ""));
        var x = new float[Math.Max(1, prefill) * cols];
        var rng = new Random(1);
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var y = new float[Math.Max(1, prefill) * rows];
        foreach (var type in types)
        {
            long rowBytes = GgmlTypes.ByteSize(type, cols)!.Value;
            long bytes = rowBytes * rows;
            byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            try
            {
                Fill(type, data, rowBytes, rows, cols);
                var w = new WeightMatrix("bench", type, rows, cols, data, null);
                using var repacked = repack && RepackedWeights.Handles(type) && RepackedWeights.Enabled ? RepackedWeights.Create(type, data, rows, cols, false) : null;
                w.Repacked = repacked;
                var (wall, cpu) = Time(() => MatMul.Compute(w, x.AsSpan(0, cols), 1, y), seconds);
                double us = wall * 1e6;
                double gbs = bytes / (us * 1e-6) / 1e9;
                string line = $"{type,-6} {bytes / 1e6,8:F1} {us,10:F0} {cpu * 1e6,9:F0} {gbs,7:F1} {100 * gbs / bw,7:F0}%";
                if (prefill > 0)
                {
                    var (pw, pc) = Time(() => MatMul.Compute(w, x, prefill, y), seconds);
                    line += $" {pw * 1e3,16:F1} {pc * 1e3,8:F1} {2.0 * rows * cols * prefill / pw / 1e9,7:F1}";
                }
                Console.WriteLine(line);
            }
            finally { NativeMemory.AlignedFree(data); }
        }
        Console.WriteLine($"load average at end: {ReadLoad()}");
        return 0;
    }

    /// <summary>Quantizes 64 distinct random rows and tiles them over the matrix (quantizing 67M weights takes too long).</summary>
    private static void Fill(GgmlType type, byte* data, long rowBytes, int rows, int cols)
    {
        int sample = Math.Min(rows, 64);
        var rng = new Random(7);
        var row = new float[cols];
        for (int r = 0; r < sample; r++)
        {
            for (int c = 0; c < cols; c++) row[c] = (float)((rng.NextDouble() * 2 - 1) * 0.05);
            var dst = new Span<byte>(data + r * rowBytes, (int)rowBytes);
            switch (type)
            {
                case GgmlType.F32: MemoryMarshal.AsBytes(row.AsSpan()).CopyTo(dst); break;
                case GgmlType.F16: for (int c = 0; c < cols; c++) ((Half*)(data + r * rowBytes))[c] = (Half)row[c]; break;
                case GgmlType.BF16: for (int c = 0; c < cols; c++) ((ushort*)(data + r * rowBytes))[c] = (ushort)(BitConverter.SingleToUInt32Bits(row[c]) >> 16); break;
                default: QuantFormats.Quantize(type, row, dst); break;
            }
        }
        for (int r = sample; r < rows; r++)
            Buffer.MemoryCopy(data + (r % sample) * rowBytes, data + r * rowBytes, rowBytes, rowBytes);
    }

    /// <summary>Fastest wall seconds per call, and mean process CPU seconds per call, over about <paramref name="seconds"/>.</summary>
    internal static (double Wall, double Cpu) Time(Action a, double seconds)
    {
        // Warm up long enough for tiered compilation to replace the Tier0 kernels with optimized (Tier1) code.
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < 50 || warm.Elapsed.TotalSeconds < 0.3; i++) a();
        var times = new List<double>();
        var proc = Process.GetCurrentProcess();
        var cpu0 = proc.TotalProcessorTime;
        var total = Stopwatch.StartNew();
        while (total.Elapsed.TotalSeconds < seconds || times.Count < 3)
        {
            long t0 = Stopwatch.GetTimestamp();
            a();
            times.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        proc.Refresh();
        double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds / times.Count;
        times.Sort();
        // The fastest call, not the median: on a shared machine the minimum is the best estimate of what the
        // kernel does when it actually has the core; the median mostly measures the neighbours.
        return (times[0], cpu);
    }

    /// <summary>Streaming read bandwidth: each thread sums its slice of a buffer far larger than the caches.</summary>
    internal static double ReadBandwidth(long bytes, int threads)
    {
        byte* buf = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        try
        {
            new Span<byte>(buf, (int)Math.Min(bytes, int.MaxValue)).Fill(0x3c);   // small finite floats
            long n = bytes / sizeof(float);
            var sums = new float[threads];
            var prev = ComputePool.Threads;
            ComputePool.Threads = threads;
            double s = Time(() => ComputePool.For(threads, (c0, c1) =>
            {
                for (int c = c0; c < c1; c++)
                {
                    long lo = n * c / threads, hi = n * (c + 1) / threads;
                    var span = new ReadOnlySpan<float>((float*)buf + lo, (int)(hi - lo));
                    sums[c] = System.Numerics.Tensors.TensorPrimitives.Sum(span);
                }
            }), 2.0).Wall;
            ComputePool.Threads = prev;
            return bytes / s / 1e9;
        }
        finally { NativeMemory.AlignedFree(buf); }
    }

    private static string ReadLoad() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "n/a";
}

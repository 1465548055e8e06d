using System.ComponentModel;
using Harpia.Backends;
using Harpia.Backends.Cuda;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// <c>harpia gpu-selftest</c> (hidden): the backend conformance suite and end-to-end greedy generation on a GPU against
/// the CPU backend, PASS/FAIL per op — what scripts/gpu-check.sh runs on a lent NVIDIA machine that has no .NET SDK.
/// With HARPIA_CUDA_ON_CPU_ACCELERATOR=1 it runs on ILGPU's CPU accelerator (how it is tested without a GPU).
/// </summary>
public sealed class GpuSelfTestCommand : Command<GpuSelfTestCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--device <DEVICE>"), Description("The GPU to check: cuda (GPU 0) or cuda:N")]
        public string Device { get; init; } = "cuda:0";

        [CommandOption("--model <PATH>"), Description("Models to generate with on both backends (repeatable); default: the bundled tiny Falcon")]
        public string[]? Models { get; init; }

        [CommandOption("--new-tokens <N>"), Description("Greedy tokens generated per model")]
        public int NewTokens { get; init; } = 8;

        [CommandOption("--skip-ops"), Description("Only the end-to-end comparison")]
        public bool SkipOps { get; init; }

        [CommandOption("--kv-cache-dtype <TYPE>"), Description("KV cache of the end-to-end runs: f32 or f16 (default: both, one run each)")]
        public string? KvCacheDtype { get; init; }
    }

    /// <summary>A 12-token prompt (the tiled prefill product runs from 8 tokens on).</summary>
    private static readonly int[] Prompt = [11, 204, 9, 1500, 37, 802, 5, 64, 3071, 18, 400, 2];

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken) =>
        Run(settings, Console.Out);

    internal static int Run(Settings settings, TextWriter output)
    {
        var request = DeviceRequest.Parse(settings.Device);
        if (request.Choice != DeviceChoice.Cuda) throw new HarpiaException($"--device {settings.Device}: gpu-selftest checks a GPU; use cuda or cuda:N");
        using var backend = (CudaBackend)DeviceSelection.Open(settings.Device, log: output);
        output.WriteLine($"gpu-selftest on {backend.Name} {backend.Device.Name} ({CudaBackend.Bytes(backend.Device.MemoryBytes)}, " +
            $"sm_{backend.Gpu.ComputeCapability.Major}{backend.Gpu.ComputeCapability.Minor}) against the CPU backend");
        int failed = 0, passed = 0;
        if (!settings.SkipOps)
            foreach (string name in BackendConformance.Cases)
            {
                IReadOnlyList<ConformanceResult> results;
                try { results = BackendConformance.Run(name, backend); }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    output.WriteLine($"FAIL  {name,-34} threw {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
                    failed++;
                    continue;
                }
                foreach (var r in results)
                {
                    output.WriteLine(r.ToString());
                    if (r.Passed) passed++; else failed++;
                }
            }
        var models = settings.Models is { Length: > 0 } m ? m : [TextGeneratorFactory.BundledModel()];
        foreach (string model in models)
            foreach (var kv in settings.KvCacheDtype is { } only ? new[] { KvCacheDtypes.Parse(only) } : new[] { KvCacheDtype.F32, KvCacheDtype.F16 })
            {
                string what = $"end-to-end {Path.GetFileName(Path.TrimEndingDirectorySeparator(model))} kv {KvCacheDtypes.Name(kv)}";
                try
                {
                    var e2e = BackendConformance.EndToEnd(model, backend, Prompt, settings.NewTokens, kv);
                    // Prefill runs the f16 tensor-core tiles (f32 on the CPU): logits agree to about 1e-2 of their range.
                    bool ok = e2e.SameTokens && e2e.RelativeError <= 2e-2;
                    output.WriteLine($"{(ok ? "PASS" : "FAIL")}  {what}: tokens {(e2e.SameTokens ? "equal" : "DIFFER")} " +
                        $"[{string.Join(' ', e2e.CandidateTokens)}] vs cpu [{string.Join(' ', e2e.ReferenceTokens)}], " +
                        $"max logit error {e2e.MaxLogitError:F5} ({e2e.RelativeError:E2} of max |logit| {e2e.LogitScale:F3})");
                    if (ok) passed++; else failed++;
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    output.WriteLine($"FAIL  {what} threw {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
                    failed++;
                }
            }
        output.WriteLine($"gpu-selftest: {passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }
}

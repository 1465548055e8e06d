using Harpia.Backends;
using Harpia.Backends.Cpu;
using Harpia.Backends.Cuda;
using Harpia.Cli.Commands;
using Harpia.Models;

namespace Harpia.Tests.Backends.Cuda;

/// <summary>
/// The CUDA backend behind the seam, on ILGPU's CPU accelerator: every op against the CPU backend (the conformance
/// suite that <c>harpia gpu-selftest</c> runs on a real GPU), greedy generation of a Falcon fixture through
/// <see cref="DecoderModel"/> on both backends, and device selection.
/// </summary>
[Collection(CudaSimulatorCollection.Name)]
public sealed class CudaBackendTests(CudaSimulatorFixture fixture) : IDisposable
{
    private readonly CudaBackend _backend = new(fixture.Device, ownsDevice: false);

    public void Dispose() => _backend.Dispose();

    public static TheoryData<string> Cases => [.. BackendConformance.Cases];

    [Theory]
    [MemberData(nameof(Cases))]
    public void Op_matches_the_cpu_backend(string name)
    {
        var results = BackendConformance.Run(name, _backend);
        Assert.NotEmpty(results);
        Assert.All(results, r => Assert.True(r.Passed, r.ToString()));
    }

    [Fact]
    public void Conformance_fails_a_backend_that_computes_wrong()
    {
        // The suite must be able to fail: a backend whose GELU is SiLU and whose attention ignores the last position.
        using var wrong = new WrongBackend(_backend);
        Assert.Contains(BackendConformance.Run("activations", wrong), r => !r.Passed && r.Op == "gelu");
        Assert.Contains(BackendConformance.Run("matmul-decode", wrong), r => !r.Passed);
    }

    /// <summary>
    /// A Falcon-40B/180B-layout model (ln_attn + ln_mlp, fused QKV per KV group, 4 heads over 2 KV heads, rotary) at
    /// hidden 64 and vocabulary 512, synthesized once (the simulator costs ~60 µs per thread, so the fixtures'
    /// 4,096-token lm_head is kept to one pass below): a 12-token prompt (the tiled prefill product) and 2 greedy
    /// tokens (prefill, one decode step) on the CUDA backend equal the CPU backend's, logits within 2 % of their range
    /// at every step, with f32 and f16 KV on the device.
    /// </summary>
    [Fact]
    public void Falcon_model_generates_the_cpu_backends_greedy_tokens()
    {
        int[] prompt = [11, 204, 9, 150, 37, 302, 5, 64, 71, 18, 400, 2];
        foreach (var kv in new[] { KvCacheDtype.F32, KvCacheDtype.F16 })
        {
            var result = BackendConformance.EndToEnd(TinyFalcon.Folder, _backend, prompt, 2, kv);
            Assert.Equal(result.ReferenceTokens, result.CandidateTokens);
            Assert.True(result.RelativeError <= 2e-2, $"kv {kv}: max logit error {result.MaxLogitError} of {result.LogitScale}");
        }
    }

    /// <summary>
    /// The golden fixture tiny-falcon-180b-h256 (hidden 256, vocabulary 4,096, bf16) on the CUDA backend: a 12-token
    /// prompt's next token and logits equal the CPU backend's. (A prompt under 8 tokens would take the per-row decode
    /// kernel, whose warp shuffles make the simulator several times slower on this width.)
    /// </summary>
    [Fact]
    public void Golden_fixture_prefill_matches_the_cpu_backend()
    {
        int[] prompt = [11, 204, 9, 1500, 37, 802, 5, 64, 3071, 18, 400, 2];
        var result = BackendConformance.EndToEnd(Fixtures.Model("tiny-falcon-180b-h256"), _backend, prompt, 1, KvCacheDtype.F16);
        Assert.Equal(result.ReferenceTokens, result.CandidateTokens);
        Assert.True(result.RelativeError <= 2e-2, $"max logit error {result.MaxLogitError} of {result.LogitScale}");
    }

    [Fact]
    public void Model_loaded_with_device_cuda_runs_on_the_cuda_backend()
    {
        using var simulator = new SimulatorVariable();
        var log = new StringWriter();
        using var model = Harpia.Runtime.ModelHost.LoadModel(TinyFalcon.Folder, device: "cuda", log: log);
        Assert.All(model.Devices.Backends, b => Assert.Equal(DeviceKind.Cuda, b.Device.Kind));
        Assert.StartsWith("cuda:0", Harpia.Runtime.ModelHost.DeviceOf(model));
        Assert.Contains("device: cuda:0", log.ToString());
        using var kv = model.AllocateKv(2, 16, KvCacheDtype.F16);
        Assert.All(kv.Layers, l => Assert.IsType<CudaKvLayer>(l));
    }

    /// <summary>--device cuda loads through the device-map path: the map is the model's plan, its GPU 0 (the CUDA
    /// backend) holds every layer, and the printed map names GPU 0 (not the CPU).</summary>
    [Fact]
    public void Device_cuda_is_the_device_maps_gpu_and_the_printed_map_says_so()
    {
        using var simulator = new SimulatorVariable();
        var log = new StringWriter();
        using var model = Harpia.Runtime.ModelHost.LoadModel(TinyFalcon.Folder, device: "cuda", log: log);
        var plan = Assert.IsType<Harpia.Placement.DeviceMap>(model.Devices.Plan);
        Assert.Equal(model.Shape.Layers, plan.LayerCountOn(Harpia.Placement.DeviceId.Gpu(0)));
        Assert.Equal(0, plan.LayerCountOn(Harpia.Placement.DeviceId.Cpu));
        Assert.Contains("GPU 0", log.ToString());
    }

    [Fact]
    public void Gpu_selftest_command_passes_on_the_simulator()
    {
        using var simulator = new SimulatorVariable();
        var output = new StringWriter();
        int rc = GpuSelfTestCommand.Run(new GpuSelfTestCommand.Settings
        {
            Device = "cuda", Models = [TinyFalcon.Folder], NewTokens = 2, SkipOps = true, KvCacheDtype = "f16",
        }, output);
        Assert.True(rc == 0, output.ToString());
        Assert.Contains($"PASS  end-to-end {Path.GetFileName(TinyFalcon.Folder)} kv f16", output.ToString());
        Assert.Contains("gpu-selftest: 1 passed, 0 failed", output.ToString());
    }

    /// <summary>
    /// The serving path with <c>--device cuda</c>: ModelHost loads onto the CUDA backend, the continuous-batching
    /// runtime drives it unchanged (a /generate of two tokens; "a" is Falcon token 76, inside the model's 512),
    /// and /info reports the device.
    /// </summary>
    [Fact]
    public async Task Server_with_device_cuda_generates_and_info_reports_the_device()
    {
        using var simulator = new SimulatorVariable();
        var generator = Harpia.Runtime.ModelHost.OpenGenerator(TinyFalcon.Folder,
            new Harpia.Runtime.GeneratorOptions { MaxBatchTotalTokens = 256, MaxInputTokens = 16, MaxTotalTokens = 64 }, placement: new Harpia.Placement.PlacementRequest { Device = "cuda" });
        await using var app = Harpia.Server.HarpiaServer.Build(new Harpia.Server.ServerOptions { Port = 0, Hostname = "127.0.0.1" }, generator);
        try
        {
            await app.StartAsync();
            using var http = new HttpClient { BaseAddress = Harpia.Server.HarpiaServer.BoundAddress(app) };
            var info = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync("/info")).RootElement;
            Assert.Equal("cuda", info.GetProperty("model_device_type").GetString());
            Assert.StartsWith("cuda:0", info.GetProperty("device").GetString());
            var response = await http.PostAsync("/generate", new StringContent(
                """{"inputs":"a","parameters":{"max_new_tokens":2,"details":true}}""", System.Text.Encoding.UTF8, "application/json"));
            string body = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, body);
            Assert.Equal(2, System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("details").GetProperty("generated_tokens").GetInt32());
        }
        finally
        {
            await app.StopAsync();
            generator.Dispose();
        }
    }

    [SkippableFact]
    public void Device_cuda_without_a_driver_is_a_one_line_error()
    {
        Skip.If(CudaDriver.IsInstalled(), "this machine has an NVIDIA driver");
        var e = Assert.Throws<HarpiaException>(() => DeviceSelection.Open("cuda:1"));
        Assert.Contains("no NVIDIA driver", e.Message);
        Assert.Contains("--device cpu", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [SkippableFact]
    public void Device_auto_without_a_gpu_takes_the_cpu_and_says_why()
    {
        Skip.If(GpuDevice.List().Count > 0, "this machine has an NVIDIA GPU");
        var log = new StringWriter();
        var backend = DeviceSelection.Open("auto", log: log);
        Assert.Same(CpuBackend.Default, backend);
        Assert.Matches(@"^device: auto → cpu \(.+\)\s*$", log.ToString());
    }

    [Fact]
    public void Device_values_are_checked()
    {
        Assert.Equal(new DeviceRequest(DeviceChoice.Cuda, 3), DeviceRequest.Parse("cuda:3"));
        Assert.Same(CpuBackend.Default, DeviceSelection.Open("cpu"));
        Assert.Contains("unknown device 'tpu'", Assert.Throws<HarpiaException>(() => DeviceSelection.Open("tpu")).Message);
    }

    [Fact]
    public void A_model_too_big_for_the_gpu_is_refused_before_loading()
    {
        string path = Fixtures.Model("tiny-falcon-180b-h256");
        long weights = DeviceSelection.WeightFileBytes(path);
        Assert.Equal(new FileInfo(Path.Combine(path, "model.safetensors")).Length, weights);   // not the GGUF copies beside it
        DeviceSelection.CheckFits(path, weights, freeBytes: 2L << 30, totalBytes: 4L << 30, "cuda:0", "Test GPU");
        var e = Assert.Throws<HarpiaException>(() =>
            DeviceSelection.CheckFits(path, 70L << 30, freeBytes: 39L << 30, totalBytes: 40L << 30, "cuda:0", "NVIDIA A100-SXM4-40GB"));
        Assert.Contains("needs 70.0 GiB of weights", e.Message);
        Assert.Contains("39.0 GiB free of 40.0 GiB", e.Message);
        Assert.Contains("--device cpu", e.Message);
    }

    [Fact]
    public void Tensors_of_another_backend_are_refused()
    {
        var cpuTensor = CpuBackend.Default.Allocate(TensorType.F32, 2, 8);
        Assert.Throws<ArgumentException>(() => _backend.Gelu(cpuTensor, 2));
    }

    /// <summary>A tiny random-weight Falcon (40B/180B layout) with the Falcon tokenizer, written once per test process.</summary>
    private static class TinyFalcon
    {
        private static readonly Lazy<string> Written = new(() =>
        {
            string dir = Path.Combine(Path.GetTempPath(), $"harpia-cuda-tiny-falcon-{Environment.ProcessId}");
            var config = new Harpia.Models.Falcon.FalconConfig
            {
                HiddenSize = 64, NumHeads = 4, NumKvHeads = 2, NumLayers = 2, VocabSize = 512, FfnHiddenSize = 256,
                NewDecoderArchitecture = true, ParallelAttn = true, NumLayerNormsInParallelAttn = 2,
            };
            Harpia.Models.Falcon.FalconSynth.Write(config, dir, seed: 7);
            Fixtures.DeleteAtExit(dir);
            return dir;
        });

        public static string Folder => Written.Value;
    }

    /// <summary>Sets <see cref="DeviceSelection.SimulatorVariable"/> for one test (the collection runs its tests one at a time).</summary>
    private sealed class SimulatorVariable : IDisposable
    {
        private readonly string? _old = Environment.GetEnvironmentVariable(DeviceSelection.SimulatorVariable);
        public SimulatorVariable() => Environment.SetEnvironmentVariable(DeviceSelection.SimulatorVariable, "1");
        public void Dispose() => Environment.SetEnvironmentVariable(DeviceSelection.SimulatorVariable, _old);
    }

    /// <summary>The CUDA backend with two ops broken on purpose, to show the suite detects wrong results.</summary>
    private sealed class WrongBackend(CudaBackend inner) : IComputeBackend
    {
        public DeviceInfo Device => inner.Device;
        public string Name => "wrong";
        public DeviceTensor Allocate(TensorType type, int rows, int cols) => inner.Allocate(type, rows, cols);
        public DeviceTensor Upload(ReadOnlySpan<float> values) => inner.Upload(values);
        public DeviceTensor View(DeviceTensor tensor, int cols) => inner.View(tensor, cols);
        public void Upload(ReadOnlySpan<float> values, DeviceTensor dst) => inner.Upload(values, dst);
        public void Download(DeviceTensor src, Span<float> values) => inner.Download(src, values);
        public void CopyFrom(DeviceTensor src, int rows, DeviceTensor dst) => inner.CopyFrom(src, rows, dst);
        public DeviceWeight PrepareWeight(Harpia.Tensors.WeightMatrix weight, WeightRole role = WeightRole.Linear) => inner.PrepareWeight(weight, role);
        public KvLayerStorage AllocateKv(int blocks, int blockSize, int kvHeads, int headDim, KvCacheDtype dtype) => inner.AllocateKv(blocks, blockSize, kvHeads, headDim, dtype);
        public void MatMul(DeviceWeight w, DeviceTensor x, int n, DeviceTensor y) => inner.MatMul(w, x, Math.Max(1, n - 1), y);   // drops the last token
        public void AddBias(DeviceTensor y, int n, DeviceTensor bias) => inner.AddBias(y, n, bias);
        public void Add(DeviceTensor a, DeviceTensor b, int n) => inner.Add(a, b, n);
        public void LayerNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, DeviceTensor? bias, float eps) => inner.LayerNorm(x, y, n, weight, bias, eps);
        public void RmsNorm(DeviceTensor x, DeviceTensor y, int n, DeviceTensor weight, float eps) => inner.RmsNorm(x, y, n, weight, eps);
        public void Gelu(DeviceTensor x, int n) => inner.Silu(x, n);
        public void Silu(DeviceTensor x, int n) => inner.Silu(x, n);
        public void SiluMul(DeviceTensor gate, DeviceTensor up, int n) => inner.SiluMul(gate, up, n);
        public void Embed(DeviceWeight table, ReadOnlySpan<int> tokens, DeviceTensor y) => inner.Embed(table, tokens, y);
        public void GatherRows(DeviceTensor src, ReadOnlySpan<int> rows, DeviceTensor dst) => inner.GatherRows(src, rows, dst);
        public void CopyColumns(DeviceTensor src, int n, int offset, int groups, int groupStride, int width, DeviceTensor dst) => inner.CopyColumns(src, n, offset, groups, groupStride, width, dst);
        public void Rope(DeviceTensor q, int qHeads, DeviceTensor k, int kHeads, int headDim, ReadOnlySpan<int> positions, RotaryEmbedding rope) => inner.Rope(q, qHeads, k, kHeads, headDim, positions, rope);
        public void StoreKv(DeviceTensor k, DeviceTensor v, KvLayerStorage kv, AttentionBatch batch) => inner.StoreKv(k, v, kv, batch);
        public void Attention(DeviceTensor q, KvLayerStorage kv, AttentionBatch batch, AttentionShape shape, DeviceTensor output) => inner.Attention(q, kv, batch, shape, output);
        public void Logits(DeviceWeight w, DeviceTensor x, int n, Span<float> logits) => inner.Logits(w, x, n, logits);
        public void Synchronize() => inner.Synchronize();
        public void Dispose() { }
    }
}

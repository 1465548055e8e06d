using System.Text.Json;
using Harpia.Models;
using Harpia.Models.Falcon;
using Harpia.Runtime;
using Harpia.Server;
using Microsoft.AspNetCore.Builder;

namespace Harpia.Tests.Server;

/// <summary>
/// /v1/embeddings and /embed over the <see cref="FakeGenerator"/>'s embedder (wire shapes, order, base64, limits), and
/// <see cref="ModelEmbedder"/> on the bundled tiny Falcon (the vectors the model computes, through the real server).
/// </summary>
public sealed class EmbeddingTests
{
    static readonly string ModelPath = Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon");

    static float[] Floats(JsonElement embedding) => embedding.EnumerateArray().Select(x => x.GetSingle()).ToArray();

    [Fact]
    public async Task Openai_shape_keeps_batch_order_counts_usage_and_base64_decodes_to_the_floats()
    {
        await using var server = await TestServer.StartAsync();
        var (status, body) = await server.PostAsync("/v1/embeddings", """{"model":"x","input":["Hello","Hi there","Hello"]}""");
        Assert.Equal(200, status);
        Assert.Equal("list", body.GetProperty("object").GetString());
        Assert.Equal("fake/tiny-falcon", body.GetProperty("model").GetString());
        var data = body.GetProperty("data").EnumerateArray().ToArray();
        Assert.Equal([0, 1, 2], data.Select(d => d.GetProperty("index").GetInt32()));
        Assert.All(data, d => Assert.Equal("embedding", d.GetProperty("object").GetString()));
        var vectors = data.Select(d => Floats(d.GetProperty("embedding"))).ToArray();
        Assert.All(vectors, v => Assert.Equal(8, v.Length));
        Assert.Equal(vectors[0], vectors[2]);               // same text, same vector
        Assert.NotEqual(vectors[0], vectors[1]);
        Assert.Equal(5 + 8 + 5, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(18, body.GetProperty("usage").GetProperty("total_tokens").GetInt32());

        // Each vector is the one its text gets alone: the batch keeps order.
        foreach (var (text, i) in new[] { ("Hello", 0), ("Hi there", 1) })
        {
            (_, body) = await server.PostAsync("/v1/embeddings", $$"""{"input":"{{text}}"}""");
            Assert.Equal(vectors[i], Floats(body.GetProperty("data")[0].GetProperty("embedding")));
        }

        // base64: little-endian float32, the same numbers.
        (status, body) = await server.PostAsync("/v1/embeddings", """{"input":["Hi there"],"encoding_format":"base64","dimensions":8}""");
        Assert.Equal(200, status);
        var bytes = Convert.FromBase64String(body.GetProperty("data")[0].GetProperty("embedding").GetString()!);
        Assert.Equal(vectors[1], System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray());

        // Token arrays: one array, or an array of arrays; "Hi" is ids 72, 105 for the byte tokenizer.
        (_, body) = await server.PostAsync("/v1/embeddings", """{"input":[72,105]}""");
        var fromIds = Floats(body.GetProperty("data")[0].GetProperty("embedding"));
        (_, body) = await server.PostAsync("/v1/embeddings", """{"input":[[72,105],[72]]}""");
        Assert.Equal(fromIds, Floats(body.GetProperty("data")[0].GetProperty("embedding")));
        Assert.Equal(3, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        (_, body) = await server.PostAsync("/v1/embeddings", """{"input":"Hi"}""");
        Assert.Equal(fromIds, Floats(body.GetProperty("data")[0].GetProperty("embedding")));

        // Harpia's pooling extension reaches the embedder.
        (status, _) = await server.PostAsync("/v1/embeddings", """{"input":"Hi","pooling":"last"}""");
        Assert.Equal(200, status);
        Assert.Equal(EmbeddingPooling.LastToken, server.Generator.EmbedCalls[^1].Pooling);
    }

    [Fact]
    public async Task Bad_embedding_requests_are_4xx_with_a_clear_message()
    {
        await using var server = await TestServer.StartAsync(new FakeGenerator(contextLength: 64));
        string tooLong = new('a', 100);
        foreach (var (json, fragment) in new[]
        {
            ($$"""{"input":"{{tooLong}}"}""", "`input` must have at most 63 tokens. Given: 100"),
            ($$"""{"input":["ok","{{tooLong}}"]}""", "`input[1]` must have at most 63 tokens. Given: 100"),
            ("""{"input":""}""", "`input` cannot be empty"),
            ("""{"input":[]}""", "`input` cannot be empty"),
            ("""{}""", "`input` is required"),
            ("""{"input":[5,999]}""", "`input` must hold token ids of this model (integers 0 to 257); got 999"),
            ("""{"input":[["a"]]}""", "`input[0]` must hold token ids"),
            ("""{"input":{"a":1}}""", "`input` must be a string, an array of strings"),
            ("""{"input":"x","encoding_format":"int8"}""", "`encoding_format` 'int8' is not supported (float, base64)"),
            ("""{"input":"x","dimensions":4}""", "`dimensions` 4 is not supported: this model's embeddings have 8 dimensions"),
            ("""{"input":"x","pooling":"max"}""", "`pooling` 'max' is not supported (mean, last)"),
        })
        {
            var (status, body) = await server.PostAsync("/v1/embeddings", json);
            Assert.True(status == 422, $"{json[..Math.Min(60, json.Length)]} → {status}");
            Assert.Equal("validation", body.GetProperty("error_type").GetString());
            Assert.Contains(fragment, body.GetProperty("error").GetString());
        }
        Assert.Empty(server.Generator.EmbedCalls);
    }

    [Fact]
    public async Task Tgi_embed_returns_arrays_and_truncates_on_request()
    {
        await using var server = await TestServer.StartAsync(new FakeGenerator(contextLength: 64));
        using var response = await server.PostJsonAsync("/embed", """{"inputs":["Hello","Hi"]}""");
        Assert.Equal(200, (int)response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(2, body.GetArrayLength());
        Assert.Equal(8, body[0].GetArrayLength());
        var (_, openai) = await server.PostAsync("/v1/embeddings", """{"input":"Hi"}""");
        Assert.Equal(Floats(openai.GetProperty("data")[0].GetProperty("embedding")), Floats(body[1]));

        string tooLong = new('a', 100);
        var (status, error) = await server.PostAsync("/embed", $$"""{"inputs":"{{tooLong}}"}""");
        Assert.Equal(422, status);
        Assert.Contains("`inputs` must have at most 63 tokens. Given: 100", error.GetProperty("error").GetString());
        (status, var truncated) = await server.PostAsync("/embed", $$"""{"inputs":"{{tooLong}}","truncate":true}""");
        Assert.Equal(200, status);
        (_, var first63) = await server.PostAsync("/embed", $$"""{"inputs":"{{new string('a', 63)}}"}""");
        Assert.Equal(Floats(first63[0]), Floats(truncated[0]));
        (status, error) = await server.PostAsync("/embed", """{"inputs":"x","normalize":false}""");
        Assert.Equal(422, status);
        Assert.Contains("`normalize` false is not supported", error.GetProperty("error").GetString());
    }

    static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
        return dot / Math.Sqrt(na * nb);
    }

    [Fact]
    public async Task Model_embeddings_are_the_pooled_final_hidden_states_alone_or_batched()
    {
        using var model = FalconModel.Load(ModelPath);
        var tokenizer = ModelHost.LoadTokenizer(model.Source, ModelPath)!;
        var embedder = new ModelEmbedder(model, tokenizer);
        string[] texts = ["The river flows to the sea.", "Falcons fly high", "The river flows to the sea."];
        var ids = texts.Select(t => (IReadOnlyList<int>)tokenizer.Encode(t)).ToArray();
        var batch = await embedder.EmbedAsync(ids, EmbeddingPooling.Mean);
        Assert.Equal(3, batch.Length);
        Assert.All(batch, v => Assert.Equal(model.Shape.HiddenSize, v.Length));
        Assert.All(batch, v => Assert.Equal(1.0, Math.Sqrt(v.Sum(x => (double)x * x)), 5));
        Assert.Equal(1.0, Cosine(batch[0], batch[2]), 6);
        Assert.True(Cosine(batch[0], batch[1]) < 0.999, "different texts must get different vectors");
        for (int i = 0; i < texts.Length; i++)
        {
            var alone = (await embedder.EmbedAsync([ids[i]], EmbeddingPooling.Mean))[0];
            for (int j = 0; j < alone.Length; j++) Assert.True(Math.Abs(alone[j] - batch[i][j]) <= 1e-5, $"text {i} dim {j}: {alone[j]} vs {batch[i][j]}");
        }

        // Mean pooling is the normalized mean of every position's final hidden state; last-token pooling is the
        // last position's, which is also what a pass that asks for the last row alone returns.
        int H = model.Shape.HiddenSize, n = ids[1].Count;
        var all = new float[n * H];
        using (var cache = new DenseKvCache(model, n)) model.ForwardHidden([new SequenceChunk(ids[1].ToArray(), 0, cache, AllLogits: true)], all);
        var last = new float[H];
        using (var cache = new DenseKvCache(model, n)) model.ForwardHidden([new SequenceChunk(ids[1].ToArray(), 0, cache)], last);
        for (int j = 0; j < H; j++) Assert.Equal(all[(n - 1) * H + j], last[j], 4);
        var mean = Enumerable.Range(0, H).Select(j => Enumerable.Range(0, n).Average(t => (double)all[t * H + j])).ToArray();
        double norm = Math.Sqrt(mean.Sum(x => x * x));
        for (int j = 0; j < H; j++) Assert.Equal(mean[j] / norm, batch[1][j], 4);
        var lastPooled = (await embedder.EmbedAsync([ids[1]], EmbeddingPooling.LastToken))[0];
        double lastNorm = Math.Sqrt(last.Sum(x => (double)x * x));
        for (int j = 0; j < H; j++) Assert.Equal(last[j] / lastNorm, lastPooled[j], 4);

        // The hidden states are what the logits come from: the final norm's output, not the raw residual stream —
        // a pass that cuts the batch in two (MaxBatchTokens) gives the same vectors.
        var small = new ModelEmbedder(model, tokenizer) { MaxBatchTokens = 8 };
        var split = await small.EmbedAsync(ids, EmbeddingPooling.Mean);
        for (int i = 0; i < 3; i++) Assert.True(Cosine(split[i], batch[i]) > 1 - 1e-6);
    }

    [Fact]
    public async Task Serve_wires_the_generators_model_into_v1_embeddings()
    {
        using var generator = ModelHost.OpenGenerator(ModelPath);
        var app = HarpiaServer.Build(new ServerOptions { Port = 0, Hostname = "127.0.0.1" }, generator);
        await app.StartAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = HarpiaServer.BoundAddress(app) };
            using var response = await http.PostAsync("/v1/embeddings", new StringContent("""{"input":["The river flows to the sea.","Falcons fly high"]}""", System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(200, (int)response.StatusCode);
            var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            var served = Floats(body.GetProperty("data")[1].GetProperty("embedding"));
            var model = (DecoderModel)generator.CausalModel;
            var direct = (await new ModelEmbedder(model, generator.Tokenizer).EmbedAsync([generator.Tokenizer.Encode("Falcons fly high")], EmbeddingPooling.Mean))[0];
            Assert.Equal(model.Shape.HiddenSize, served.Length);
            for (int j = 0; j < served.Length; j++) Assert.True(Math.Abs(served[j] - direct[j]) <= 1e-5);
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}

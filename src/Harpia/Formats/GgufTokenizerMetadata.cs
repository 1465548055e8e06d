using System.Text.Json;

namespace Harpia.Formats;

/// <summary>
/// The <c>tokenizer.ggml.*</c> metadata llama.cpp needs to load a Falcon GGUF, built from a Hugging Face
/// <c>tokenizer.json</c> the way llama.cpp's <c>convert_hf_to_gguf.py</c> does for byte-level BPE (the inverse of
/// <see cref="GgufTokenizerJson"/>): model <c>gpt2</c>, pre-tokenizer <c>falcon</c>, the tokens by id, their types
/// (added special tokens are control, other added tokens user-defined, ids the tokenizer lacks padding up to the
/// model's vocabulary size), the merges as "a b" strings, and the bos/eos ids.
/// </summary>
public static class GgufTokenizerMetadata
{
    /// <summary>llama.cpp's llama_token_type.</summary>
    private const int Normal = 1, Control = 3, UserDefined = 4, Unused = 5;

    public static List<KeyValuePair<string, object>> FromTokenizerJson(string path, int vocabSize, int bosId, int eosId)
    {
        if (!File.Exists(path)) throw new HarpiaException($"{path}: tokenizer file not found");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(UntrustedFile.ReadAllBytes(path, "tokenizer file")); }
        catch (JsonException e) { throw new InvalidModelFileException(path, $"not valid JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, "no \"model\" object; not a tokenizer.json");
            string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
            if (type != "BPE")
                throw new HarpiaException($"{path}: tokenizer model '{type}' is not supported for GGUF output (Falcon's is byte-level BPE)");
            if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, "model.vocab is missing");

            var tokens = new string?[vocabSize];
            var types = new int[vocabSize];
            void Put(string token, int id, int tokenType)
            {
                if ((uint)id >= (uint)vocabSize)
                    throw new HarpiaException($"{path}: token '{token}' has id {id}, outside the model's vocabulary of {vocabSize}");
                tokens[id] = token;
                types[id] = tokenType;
            }
            foreach (var p in vocab.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id))
                    throw new InvalidModelFileException(path, $"model.vocab['{p.Name}'] is not a token id");
                Put(p.Name, id, Normal);
            }
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var a in added.EnumerateArray())
                {
                    if (!a.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out int id)
                        || !a.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                        throw new InvalidModelFileException(path, "an added_tokens entry lacks id or content");
                    bool special = a.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                    Put(c.GetString()!, id, special ? Control : UserDefined);
                }
            for (int id = 0; id < vocabSize; id++)
                if (tokens[id] is null) { tokens[id] = $"[PAD{id}]"; types[id] = Unused; }

            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var m) && m.ValueKind == JsonValueKind.Array)
                foreach (var e in m.EnumerateArray())
                    merges.Add(e.ValueKind switch
                    {
                        JsonValueKind.String => e.GetString()!,
                        // Newer tokenizers store a merge as a pair ["a", "b"].
                        JsonValueKind.Array when e.GetArrayLength() == 2 => e[0].GetString() + " " + e[1].GetString(),
                        _ => throw new InvalidModelFileException(path, "a merges entry is neither \"a b\" nor [\"a\", \"b\"]"),
                    });

            return
            [
                new("tokenizer.ggml.model", "gpt2"),
                new("tokenizer.ggml.pre", "falcon"),
                new("tokenizer.ggml.tokens", tokens.Select(x => x!).ToArray()),
                new("tokenizer.ggml.token_type", types),
                new("tokenizer.ggml.merges", merges.ToArray()),
                new("tokenizer.ggml.bos_token_id", (uint)bosId),
                new("tokenizer.ggml.eos_token_id", (uint)eosId),
            ];
        }
    }

    /// <summary>The tokenizer a GGUF file carries, copied through unchanged.</summary>
    public static List<KeyValuePair<string, object>> FromGguf(GgufFile gguf) =>
        gguf.Metadata.Where(kv => kv.Key.StartsWith("tokenizer.", StringComparison.Ordinal)).ToList();
}

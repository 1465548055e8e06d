using System.Text.Json.Nodes;

namespace Harpia.Formats;

/// <summary>
/// Rebuilds a Hugging Face <c>tokenizer.json</c> from the tokenizer a GGUF file carries in its metadata
/// (<c>tokenizer.ggml.*</c>: model, pre, tokens, token_type, merges), so a GGUF checkpoint is self-contained.
/// Supported: byte-level BPE (<c>gpt2</c>) with the <c>falcon</c> pre-tokenizer, and with llama.cpp's <c>default</c>
/// one (what its converter writes when it does not recognize a vocabulary, e.g. a Llama-architecture model over Falcon's
/// tokens); anything else is refused by name.
/// </summary>
public static class GgufTokenizerJson
{
    /// <summary>llama.cpp token types (llama_token_type).</summary>
    private const int Control = 3, UserDefined = 4;

    public static bool HasTokenizer(GgufFile gguf) => gguf.Metadata.ContainsKey("tokenizer.ggml.tokens");

    public static JsonObject Build(GgufFile gguf)
    {
        string model = gguf.GetString("tokenizer.ggml.model") ?? throw new InvalidModelFileException(gguf.Path, "no tokenizer.ggml.model");
        string pre = gguf.GetString("tokenizer.ggml.pre") ?? "default";
        if (model != "gpt2" || pre is not ("falcon" or "default"))
            throw new HarpiaException($"{gguf.Path}: embedded tokenizer '{model}' with pre-tokenizer '{pre}' is not supported (gpt2 with 'falcon' or 'default'); pass --tokenizer tokenizer.json");
        if (gguf.Metadata["tokenizer.ggml.tokens"] is not string[] tokens)
            throw new InvalidModelFileException(gguf.Path, "tokenizer.ggml.tokens is not a string array");
        var merges = gguf.Metadata.TryGetValue("tokenizer.ggml.merges", out var m) ? m as string[]
            ?? throw new InvalidModelFileException(gguf.Path, "tokenizer.ggml.merges is not a string array") : [];
        int[]? types = gguf.Metadata.TryGetValue("tokenizer.ggml.token_type", out var t) ? t as int[]
            ?? throw new InvalidModelFileException(gguf.Path, "tokenizer.ggml.token_type is not an int32 array") : null;
        if (types is not null && types.Length != tokens.Length)
            throw new InvalidModelFileException(gguf.Path, $"tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens");

        var vocab = new JsonObject();
        var added = new JsonArray();
        for (int id = 0; id < tokens.Length; id++)
        {
            if (vocab.ContainsKey(tokens[id])) throw new InvalidModelFileException(gguf.Path, $"token '{tokens[id]}' appears twice in tokenizer.ggml.tokens");
            vocab[tokens[id]] = id;
            if (types is not null && types[id] is Control or UserDefined)
                added.Add(new JsonObject
                {
                    ["id"] = id, ["content"] = tokens[id], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                    ["normalized"] = false, ["special"] = types[id] == Control,
                });
        }

        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = pre == "falcon" ? FalconPreTokenizer() : DefaultPreTokenizer(),
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(x => (JsonNode)JsonValue.Create(x)).ToArray()),
            },
        };
    }

    // Falcon's pre-tokenizer, as in its tokenizer.json (llama.cpp's "falcon" pre-tokenizer type).
    static JsonObject FalconPreTokenizer() => new()
    {
        ["type"] = "Sequence",
        ["pretokenizers"] = new JsonArray(
            new JsonObject { ["type"] = "Punctuation", ["behavior"] = "Contiguous" },
            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            new JsonObject { ["type"] = "Digits", ["individual_digits"] = false },
            Isolate("[0-9][0-9][0-9]")),
    };

    // llama.cpp's "default" pre-tokenizer (llm_tokenizer_bpe's fallback regex list): each expression splits every piece
    // into its matches and the text between them, in order, then bytes map to GPT-2's alphabet without a further regex.
    static JsonObject DefaultPreTokenizer() => new()
    {
        ["type"] = "Sequence",
        ["pretokenizers"] = new JsonArray(
            Isolate(@"[\p{P}\$\+<=>\^~\|]+"),
            Isolate(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"),
            Isolate(@"\p{N}+"),
            Isolate("[0-9][0-9][0-9]"),
            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
    };

    static JsonObject Isolate(string regex) => new()
    {
        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false,
    };
}

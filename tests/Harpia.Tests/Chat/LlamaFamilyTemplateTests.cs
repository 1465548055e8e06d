using Harpia.Chat;

namespace Harpia.Tests.Chat;

/// <summary>
/// The chat templates that Llama-architecture checkpoints publish in their tokenizer_config.json (Meta-Llama-3.1-Instruct,
/// Falcon3-Instruct, Mistral-7B-Instruct-v0.3, Qwen2-Instruct; kept verbatim in Chat/Templates/*.jinja) render as
/// transformers' <c>apply_chat_template</c> renders them: jinja2 with trim_blocks and lstrip_blocks, the tokenizer's
/// bos/eos texts, no tools. The expected strings were written by reading each template and checked with jinja2 3.1.
/// </summary>
public sealed class LlamaFamilyTemplateTests
{
    static readonly ChatTurn[] SystemUser = [new("system", "Sys"), new("user", "Hi")];
    static readonly ChatTurn[] Conversation = [new("system", "Sys"), new("user", "Hi"), new("assistant", "Hello"), new("user", "Bye")];
    static readonly ChatTurn[] UserOnly = [new("user", " Hi\n")];
    static readonly ChatTurn[] EndsWithAssistant = [new("user", "Hi"), new("assistant", "Hello")];

    public static string TemplateText(string name) =>
        File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "tests", "Harpia.Tests", "Chat", "Templates", name + ".jinja"));

    static string Render(string name, IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt, string? bos, string eos) =>
        new ChatPromptFormatter(TemplateText(name), bos, eos).Format(messages, addGenerationPrompt);

    // Llama 3.1: the system block is always there (with the template's fixed knowledge and default dates), contents trimmed.
    const string Llama31System = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";

    static string Llama31(IReadOnlyList<ChatTurn> m, bool gen) => Render("llama-3.1-instruct", m, gen, "<|begin_of_text|>", "<|eot_id|>");

    [Fact]
    public void Llama31_system_message_and_generation_prompt()
    {
        Assert.Equal(Llama31System + "Sys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", Llama31(SystemUser, true));
        Assert.Equal(Llama31System + "Sys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", Llama31(SystemUser, false));
    }

    [Fact]
    public void Llama31_multi_turn()
    {
        const string turns = "Sys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>";
        Assert.Equal(Llama31System + turns + "<|start_header_id|>assistant<|end_header_id|>\n\n", Llama31(Conversation, true));
        Assert.Equal(Llama31System + turns, Llama31(Conversation, false));
    }

    [Fact]
    public void Llama31_without_system_message_keeps_an_empty_system_block_and_trims_content()
    {
        Assert.Equal(Llama31System + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", Llama31(UserOnly, true));
        Assert.Equal(Llama31System + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>", Llama31(EndsWithAssistant, false));
    }

    static string Falcon3(IReadOnlyList<ChatTurn> m, bool gen) => Render("falcon3-instruct", m, gen, "<|begin_of_text|>", "<|endoftext|>");

    [Fact]
    public void Falcon3_system_message_and_generation_prompt()
    {
        Assert.Equal("<|system|>\nSys\n<|user|>\nHi\n<|assistant|>\n", Falcon3(SystemUser, true));
        Assert.Equal("<|system|>\nSys\n<|user|>\nHi\n", Falcon3(SystemUser, false));
    }

    [Fact]
    public void Falcon3_multi_turn_ends_earlier_assistant_turns_with_eos_and_a_newline()
    {
        Assert.Equal("<|system|>\nSys\n<|user|>\nHi\n<|assistant|>\nHello<|endoftext|>\n<|user|>\nBye\n<|assistant|>\n", Falcon3(Conversation, true));
        Assert.Equal("<|system|>\nSys\n<|user|>\nHi\n<|assistant|>\nHello<|endoftext|>\n<|user|>\nBye\n", Falcon3(Conversation, false));
        // A last assistant turn has no newline after its eos; content is not trimmed.
        Assert.Equal("<|user|>\nHi\n<|assistant|>\nHello<|endoftext|>", Falcon3(EndsWithAssistant, false));
        Assert.Equal("<|user|>\nHi\n<|assistant|>\nHello<|endoftext|><|assistant|>\n", Falcon3(EndsWithAssistant, true));
        Assert.Equal("<|user|>\n Hi\n\n<|assistant|>\n", Falcon3(UserOnly, true));
    }

    static string Mistral(IReadOnlyList<ChatTurn> m, bool gen) => Render("mistral-7b-instruct-v0.3", m, gen, "<s>", "</s>");

    [Fact]
    public void Mistral_v03_puts_the_system_message_into_the_last_user_turn()
    {
        Assert.Equal("<s>[INST] Hi[/INST] Hello</s>[INST] Sys\n\nBye[/INST]", Mistral(Conversation, true));
        Assert.Equal(Mistral(Conversation, true), Mistral(Conversation, false)); // the template has no generation prompt
        Assert.Equal("<s>[INST] Sys\n\nHi[/INST]", Mistral(SystemUser, true));
        Assert.Equal("<s>[INST]  Hi\n[/INST]", Mistral(UserOnly, true));
        Assert.Equal("<s>[INST] Hi[/INST] Hello</s>", Mistral(EndsWithAssistant, false));
        var e = Assert.Throws<JinjaException>(() => Mistral([new("user", "a"), new("user", "b")], true));
        Assert.Contains("conversation roles must alternate", e.Message);
    }

    static string Qwen2(IReadOnlyList<ChatTurn> m, bool gen) => Render("qwen2-instruct", m, gen, null, "<|im_end|>");

    [Fact]
    public void Qwen2_adds_its_default_system_message_only_when_none_is_given()
    {
        Assert.Equal("<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", Qwen2(Conversation, true));
        Assert.Equal("<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n", Qwen2(SystemUser, false));
        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n Hi\n<|im_end|>\n<|im_start|>assistant\n", Qwen2(UserOnly, true));
    }
}

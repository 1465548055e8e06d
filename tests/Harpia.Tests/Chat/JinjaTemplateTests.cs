using Harpia.Chat;

namespace Harpia.Tests.Chat;

/// <summary>The Jinja subset against real chat templates (as published in tokenizer_config.json files) and its edges.</summary>
public sealed class JinjaTemplateTests
{
    static readonly ChatTurn[] SystemUser = [new("system", "Sys"), new("user", "Hi")];
    static readonly ChatTurn[] Conversation = [new("system", "Sys"), new("user", "Hi"), new("assistant", "Hello"), new("user", "Bye")];

    static string Render(string template, IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true, string bos = "<s>", string eos = "</s>") =>
        new ChatPromptFormatter(template, bos, eos).Format(messages, addGenerationPrompt);

    const string ChatML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    const string Llama2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    const string Llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

    // Zephyr's template is written over several lines and relies on trim_blocks + lstrip_blocks.
    const string Zephyr = """
        {% for message in messages %}
        {% if message['role'] == 'user' %}
        {{ '<|user|>\n' + message['content'] + eos_token }}
        {% elif message['role'] == 'system' %}
        {{ '<|system|>\n' + message['content'] + eos_token }}
        {% elif message['role'] == 'assistant' %}
        {{ '<|assistant|>\n'  + message['content'] + eos_token }}
        {% endif %}
        {% if loop.last and add_generation_prompt %}
        {{ '<|assistant|>' }}
        {% endif %}
        {% endfor %}
        """;

    const string FalconChat = "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}{% if message['role'] == 'system' %}{{ 'System: ' }}{% elif message['role'] == 'user' %}{{ 'User: ' }}{% elif message['role'] == 'assistant' %}{{ 'Falcon: ' }}{% endif %}{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '\\n' + 'Falcon:' }}{% endif %}";

    [Fact]
    public void ChatML_template() => Assert.Equal("<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", Render(ChatML, SystemUser));

    [Fact]
    public void Llama2_with_system_prompt_and_alternation_check()
    {
        Assert.Equal("<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]", Render(Llama2, Conversation));
        Assert.Equal("<s>[INST] Hi [/INST]", Render(Llama2, [new("user", " Hi ")]));
        var e = Assert.Throws<JinjaException>(() => Render(Llama2, [new("user", "a"), new("user", "b")]));
        Assert.Contains("Conversation roles must alternate", e.Message);
    }

    [Fact]
    public void Llama3_template() => Assert.Equal(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        Render(Llama3, [new("system", "Sys"), new("user", " Hi\n")], bos: "<|begin_of_text|>"));

    [Fact]
    public void Zephyr_multiline_template_with_trim_and_lstrip_blocks()
    {
        Assert.Equal("<|system|>\nSys</s>\n<|user|>\nHi</s>\n<|assistant|>\n", Render(Zephyr, SystemUser));
        Assert.Equal("<|system|>\nSys</s>\n<|user|>\nHi</s>\n", Render(Zephyr, SystemUser, addGenerationPrompt: false));
    }

    [Fact]
    public void Falcon_template_matches_the_built_in_Falcon_format()
    {
        Assert.Equal("System: Sys\nUser: Hi\nFalcon: Hello\nUser: Bye\nFalcon:", Render(FalconChat, Conversation));
        Assert.Equal(Render(FalconChat, Conversation), ChatPromptFormatter.FormatFalcon(Conversation, true));
        var fallback = new ChatPromptFormatter(null);
        Assert.False(fallback.UsesModelTemplate);
        Assert.Equal("User: Hi\nFalcon:", fallback.Format([new("user", "Hi")]));
        Assert.Equal(["\nUser:"], fallback.ImplicitStopSequences);
        Assert.Throws<HarpiaException>(() => fallback.Format([new("robot", "x")]));
    }

    static string R(string template, Dictionary<string, object?>? vars = null) => JinjaTemplate.Parse(template).Render(vars ?? new());

    [Theory]
    [InlineData("{{ 'a' ~ 1 ~ none }}", "a1None")]
    [InlineData("{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ 7 % 3 }}|{{ 7 / 2 }}|{{ -3 }}", "7|3|1|3.5|-3")]
    [InlineData("{{ 'Hello'[1:3] }}{{ 'abc'[::-1] }}{{ [1,2,3][-1] }}", "elcba3")]
    [InlineData("{% if x is defined %}d{% else %}u{% endif %}{% if y is not defined %}!{% endif %}", "u!")]
    [InlineData("{{ 'b' in 'abc' }} {{ 2 in [1,2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}", "True True True True")]
    [InlineData("{% set ns = namespace(found=false) %}{% for i in range(3) %}{% if i == 1 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}", "True")]
    [InlineData("{% for i in [1,2,3] %}{{ loop.index }}{{ '-' if not loop.last }}{% endfor %}", "1-2-3")]
    [InlineData("{% for i in [1,2,3] if i > 1 %}{{ loop.index0 }}:{{ i }}{{ loop.length }} {% endfor %}", "0:22 1:32 ")]
    [InlineData("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;")]
    [InlineData("{{ [1,'x',none,true]|tojson }} {{ {'a': 'é\"'}|tojson }}", "[1, \"x\", null, true] {\"a\": \"é\\\"\"}")]
    [InlineData("{{ '  x '|trim }}|{{ 'aB'|upper }}|{{ 'aB'|lower }}|{{ [1,2]|length }}|{{ 'ab'|length }}", "x|AB|ab|2|2")]
    [InlineData("{{ ['a','b']|join(', ') }}|{{ x|default('d') }}|{{ 'hi'.upper() }}|{{ 'a,b'.split(',')|last }}", "a, b|d|HI|b")]
    [InlineData("{%- if true -%}  x  {%- endif -%}  ", "x")]
    [InlineData("{# comment #}{% for i in [] %}x{% else %}empty{% endfor %}", "empty")]
    [InlineData("{% set t %}in{{ 1 }}{% endset %}{{ t }}", "in1")]
    [InlineData("{% macro m(a, b='z') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(2, b='y') }}", "1z2y")]
    [InlineData("{% for m in msgs|selectattr('role', 'equalto', 'user') %}{{ m.content }}{% endfor %}", "u1u2")]
    [InlineData("{{ msgs|map(attribute='role')|join(',') }}|{{ msgs[0].content|capitalize }}", "user,system,user|U1")]
    [InlineData("{% if msgs[1]['role'] == 'system' and msgs|length > 2 %}ok{% elif false %}no{% endif %}", "ok")]
    [InlineData("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}", "02")]
    public void Expressions_statements_filters_and_tests(string template, string expected)
    {
        var vars = new Dictionary<string, object?>
        {
            ["msgs"] = new List<object?>
            {
                new Dictionary<string, object?> { ["role"] = "user", ["content"] = "u1" },
                new Dictionary<string, object?> { ["role"] = "system", ["content"] = "s" },
                new Dictionary<string, object?> { ["role"] = "user", ["content"] = "u2" },
            },
        };
        Assert.Equal(expected, R(template, vars));
    }

    [Theory]
    [InlineData("{% if x %}unclosed", "missing")]
    [InlineData("{{ 'unterminated }}", "unterminated string")]
    [InlineData("{% frobnicate %}", "unsupported statement 'frobnicate'")]
    [InlineData("{{ x|nosuchfilter }}", "unknown filter 'nosuchfilter'")]
    [InlineData("{{ 1 + 'a' }}", "unsupported operand types")]
    [InlineData("{{ raise_exception('boom') }}", "boom")]
    [InlineData("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "recursed too deeply")]
    public void Bad_templates_fail_with_a_clear_message(string template, string fragment)
    {
        var e = Assert.Throws<JinjaException>(() => R(template));
        Assert.Contains(fragment, e.Message);
    }
}

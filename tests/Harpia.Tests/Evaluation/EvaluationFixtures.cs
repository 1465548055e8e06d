using Harpia.Cli.Commands;
using Harpia.Models.Falcon;

namespace Harpia.Tests.Evaluation;

/// <summary>The h256 fixture in its three GGUF precisions and the committed sample text, tokenized by the GGUF's tokenizer.</summary>
internal static class EvaluationFixtures
{
    public static string Gguf(string type) => Path.Combine(Fixtures.Model("tiny-falcon-180b-h256"), $"model-{type}.gguf");
    public static string TextPath => Path.Combine(Fixtures.RepoRoot, "bench", "text", "harpia-docs.txt");
    public static string TinyModel => Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon");

    public static readonly Lazy<int[]> Tokens = new(() =>
    {
        using var model = FalconModel.Load(Gguf("f32"));
        return GenerateCommand.LoadTokenizer(model, Gguf("f32"), null)!.Encode(File.ReadAllText(TextPath)).ToArray();
    });
}

using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

public sealed class VersionCommand : Command
{
    public override int Execute(CommandContext context, CancellationToken cancellationToken)
    {
        foreach (string line in Describe()) Console.WriteLine(line);
        return 0;
    }

    /// <summary>
    /// Version and commit (the SDK appends the commit to the informational version as <c>+sha</c>), the build target
    /// (the runtime identifier of a self-contained bundle), the runtime and the SIMD paths this CPU takes.
    /// </summary>
    public static IEnumerable<string> Describe()
    {
        var cli = typeof(VersionCommand).Assembly;
        string informational = cli.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
                               ?? cli.GetName().Version?.ToString() ?? "unknown";
        int plus = informational.IndexOf('+');
        string version = plus < 0 ? informational : informational[..plus];
        string commit = plus < 0 ? "unknown" : informational[(plus + 1)..];
        if (commit.Length > 12) commit = commit[..12];
        string Meta(string key) => cli.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == key)?.Value ?? "";
        string target = Meta("HarpiaBuildTarget");
        string build = target.Length == 0
            ? $"framework-dependent ({RuntimeInformation.RuntimeIdentifier}, needs the .NET runtime)"
            : target + (Meta("HarpiaSelfContained") == "true" ? " self-contained" : "") + (Meta("HarpiaSingleFile") == "true" ? " single-file" : "");
        yield return $"harpia {version}";
        yield return $"commit {commit}";
        yield return $"build {build}";
        yield return $"runtime .NET {Environment.Version}, {RuntimeInformation.ProcessArchitecture}, {RuntimeInformation.OSDescription}, {Environment.ProcessorCount} cores";
        yield return $"simd: Vector512 {Vector512.IsHardwareAccelerated}, Vector256 {Vector256.IsHardwareAccelerated}, Vector128 {Vector128.IsHardwareAccelerated}" +
            (RuntimeInformation.ProcessArchitecture == Architecture.Arm64
                ? $", AdvSimd {System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported}, Dp {System.Runtime.Intrinsics.Arm.Dp.IsSupported}"
                : $", Avx2 {System.Runtime.Intrinsics.X86.Avx2.IsSupported}, AvxVnni {System.Runtime.Intrinsics.X86.AvxVnni.IsSupported}");
    }
}

using System.Runtime.Intrinsics;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

public sealed class VersionCommand : Command
{
    public override int Execute(CommandContext context, CancellationToken cancellationToken)
    {
        var version = typeof(Harpia.HarpiaException).Assembly.GetName().Version;
        Console.WriteLine($"harpia {version}");
        Console.WriteLine($"runtime {Environment.Version}, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}, {Environment.ProcessorCount} cores");
        Console.WriteLine($"simd: Vector512 {Vector512.IsHardwareAccelerated}, Vector256 {Vector256.IsHardwareAccelerated}, Vector128 {Vector128.IsHardwareAccelerated}");
        return 0;
    }
}

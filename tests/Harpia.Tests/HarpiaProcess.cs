using System.Diagnostics;
using Harpia.Cli.Commands;

namespace Harpia.Tests;

/// <summary>The <c>harpia</c> CLI run as a process (its own console and its real exit code), for the command tests.</summary>
internal static class HarpiaProcess
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(typeof(PlanCommand).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "harpia did not finish within 120 s");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}

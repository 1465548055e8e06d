using System.Diagnostics;
using System.Runtime.InteropServices;
using Xunit.Runners;

namespace Harpia.ArmRunner;

/// <summary>
/// <c>Harpia.ArmRunner [--class PREFIX]… [--exclude PREFIX]…</c>: runs the Harpia.Tests classes whose full name starts
/// with a PREFIX (all when none) and not with an excluded one, prints each failure and a one-line summary
/// (passed/failed/skipped, seconds), and exits 1 when a test failed or none ran.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var include = new List<string>();
        var exclude = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--class" when i + 1 < args.Length: include.Add(args[++i]); break;
                case "--exclude" when i + 1 < args.Length: exclude.Add(args[++i]); break;
                default: Console.Error.WriteLine($"Harpia.ArmRunner: unknown argument '{args[i]}' (--class PREFIX, --exclude PREFIX)"); return 2;
            }
        }
        string assembly = Path.Combine(AppContext.BaseDirectory, "Harpia.Tests.dll");
        Console.WriteLine($"Harpia.ArmRunner: {RuntimeInformation.ProcessArchitecture}, {RuntimeInformation.OSDescription}; " +
            $"AdvSimd {System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported}, Dp {System.Runtime.Intrinsics.Arm.Dp.IsSupported}");
        int passed = 0, failed = 0, skipped = 0;
        var clock = Stopwatch.StartNew();
        using var finished = new ManualResetEventSlim();
        var gate = new object();
        using var runner = AssemblyRunner.WithoutAppDomain(assembly);
        runner.TestCaseFilter = testCase =>
        {
            string name = testCase.TestMethod.TestClass.Class.Name;
            return (include.Count == 0 || include.Any(name.StartsWith)) && !exclude.Any(name.StartsWith);
        };
        runner.OnTestPassed = _ => Interlocked.Increment(ref passed);
        runner.OnTestSkipped = info =>
        {
            Interlocked.Increment(ref skipped);
            lock (gate) Console.WriteLine($"  skipped {info.TypeName}.{info.MethodName}: {info.SkipReason}");
        };
        runner.OnTestFailed = info =>
        {
            Interlocked.Increment(ref failed);
            lock (gate) Console.WriteLine($"  FAILED {info.TestDisplayName}\n    {info.ExceptionMessage.Replace("\n", "\n    ")}\n    {info.ExceptionStackTrace?.Replace("\n", "\n    ")}");
        };
        runner.OnErrorMessage = info =>
        {
            Interlocked.Increment(ref failed);
            lock (gate) Console.WriteLine($"  ERROR {info.MesssageType}: {info.ExceptionMessage}");
        };
        runner.OnExecutionComplete = _ => finished.Set();
        runner.Start(parallel: true);
        finished.Wait();
        // The runner reports completion a moment before it is idle; Dispose throws while it is still busy.
        while (runner.Status != AssemblyRunnerStatus.Idle) Thread.Sleep(50);
        Console.WriteLine($"Harpia.ArmRunner: {passed} passed, {failed} failed, {skipped} skipped in {clock.Elapsed.TotalSeconds:0} s");
        return failed == 0 && passed > 0 ? 0 : 1;
    }
}

using System.Reflection;
using Xunit;

namespace Harpia.Tests.Safety;

/// <summary>
/// A test that calls <c>Skip.If</c> under a plain <c>[Fact]</c>/<c>[Theory]</c> does not skip: xUnit reports the
/// SkipException as a failure, so the test goes red on exactly the CPUs it meant to excuse (found on an AVX2-only
/// Zen 3, where the VNNI tests failed). Every such test must be a <c>[SkippableFact]</c>/<c>[SkippableTheory]</c>.
/// </summary>
public class SkipAttributeTests
{
    const byte Call = 0x28, CallVirt = 0x6F;

    static bool CallsSkip(MethodInfo method)
    {
        byte[]? il = method.GetMethodBody()?.GetILAsByteArray();
        if (il is null) return false;
        for (int i = 0; i + 4 < il.Length; i++)
        {
            if (il[i] != Call && il[i] != CallVirt) continue;
            int token = BitConverter.ToInt32(il, i + 1);
            try
            {
                if (method.Module.ResolveMethod(token, method.DeclaringType?.GetGenericArguments(), method.GetGenericArguments()) is { } callee
                    && callee.DeclaringType == typeof(Skip))
                    return true;
            }
            catch (ArgumentException) { } // a byte that only looks like a call opcode: its "token" resolves to nothing
        }
        return false;
    }

    [Fact]
    public void Every_test_that_calls_Skip_is_marked_skippable()
    {
        var wrong = typeof(SkipAttributeTests).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => m.GetCustomAttributes<FactAttribute>().Any(a => a.GetType() == typeof(FactAttribute) || a.GetType() == typeof(TheoryAttribute)))
            .Where(CallsSkip)
            .Select(m => $"{m.DeclaringType!.FullName}.{m.Name}")
            .ToList();
        Assert.True(wrong.Count == 0, "these call Skip.If under [Fact]/[Theory], so a skip is reported as a failure:\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void The_scan_finds_a_skip_call()
    {
        // The check above is only worth something if it can see a call to Skip; this method has one.
        var probe = typeof(SkipAttributeTests).GetMethod(nameof(Probe), BindingFlags.NonPublic | BindingFlags.Static)!;
        Assert.True(CallsSkip(probe));
        Assert.False(CallsSkip(typeof(SkipAttributeTests).GetMethod(nameof(The_scan_finds_a_skip_call))!));
    }

    static void Probe(bool condition) => Skip.If(condition, "probe");
}

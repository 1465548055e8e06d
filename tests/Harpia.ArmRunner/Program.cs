using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Harpia.ArmRunner;

/// <summary>
/// <c>Harpia.ArmRunner [--class PREFIX]… [--exclude PREFIX]…</c>: runs the Harpia.Tests classes whose full name starts
/// with a PREFIX and not with an excluded one, without VSTest (which cannot run under qemu-user from an x64 SDK).
/// A small xUnit-compatible runner: [Fact], and [Theory] with any data attribute (InlineData, MemberData, …);
/// a fresh instance per test, disposed after; constructor arguments as xUnit gives them (an
/// <see cref="ITestOutputHelper"/> whose lines are printed with a failure, and class/collection fixtures made once and
/// disposed at the end); skips honoured. Prints each failure and a summary; exit 1 on failure.
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
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
        Console.WriteLine($"Harpia.ArmRunner: {RuntimeInformation.ProcessArchitecture}, {RuntimeInformation.OSDescription}; " +
            $"AdvSimd {System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported}, Dp {System.Runtime.Intrinsics.Arm.Dp.IsSupported}");
        var assembly = Assembly.LoadFrom(Path.Combine(AppContext.BaseDirectory, "Harpia.Tests.dll"));
        var classes = assembly.GetTypes()
            .Where(t => t is { IsClass: true, IsAbstract: false, IsPublic: true } && t.FullName is { } n
                        && (include.Count == 0 || include.Any(n.StartsWith)) && !exclude.Any(n.StartsWith))
            .OrderBy(t => t.FullName, StringComparer.Ordinal).ToList();
        int passed = 0, failed = 0, skipped = 0;
        var clock = Stopwatch.StartNew();
        foreach (var type in classes)
        {
            foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static).OrderBy(m => m.Name, StringComparer.Ordinal))
            {
                var fact = method.GetCustomAttribute<FactAttribute>();
                if (fact is null) continue;
                string name = $"{type.FullName}.{method.Name}";
                if (fact.Skip is { } why) { skipped++; Console.WriteLine($"  skipped {name}: {why}"); continue; }
                if (fact.GetType().Namespace?.StartsWith("FsCheck", StringComparison.Ordinal) == true)
                {
                    // FsCheck's [Property] generates its own arguments through its xUnit extension; this runner has none.
                    skipped++; Console.WriteLine($"  skipped {name}: an FsCheck property (runs under VSTest on x64 only)"); continue;
                }
                IEnumerable<object?[]> cases;
                if (fact is TheoryAttribute)
                {
                    try
                    {
                        cases = method.GetCustomAttributes<DataAttribute>().SelectMany(d => d.GetData(method)).ToList();
                    }
                    catch (Exception e) { failed++; Console.WriteLine($"  FAILED {name}: its data: {e.Message}"); continue; }
                }
                else cases = [[]];
                foreach (var data in cases)
                {
                    try
                    {
                        await RunOne(type, method, data);
                        passed++;
                    }
                    catch (Exception e)
                    {
                        if (e is TargetInvocationException { InnerException: { } inner }) e = inner;
                        if (e.GetType().Name is "SkipException")
                        {
                            skipped++; Console.WriteLine($"  skipped {name}({string.Join(", ", data.Select(d => d?.ToString() ?? "null"))}): {e.Message}"); continue;
                        }
                        failed++;
                        Console.WriteLine($"  FAILED {name}({string.Join(", ", data.Select(d => d?.ToString() ?? "null"))})\n    {e.GetType().Name}: {e.Message.Replace("\n", "\n    ")}");
                        if (LastOutput.ToString() is { Length: > 0 } said) Console.WriteLine("    output: " + said.Replace("\n", "\n    "));
                    }
                }
            }
        }
        foreach (var fixture in Fixtures.Values)
        {
            if (fixture is IAsyncDisposable ad) await ad.DisposeAsync();
            else if (fixture is IDisposable d) d.Dispose();
        }
        Console.WriteLine($"Harpia.ArmRunner: {passed} passed, {failed} failed, {skipped} skipped in {clock.Elapsed.TotalSeconds:0} s");
        return failed == 0 && passed > 0 ? 0 : 1;
    }

    static async Task RunOne(Type type, MethodInfo method, object?[] data)
    {
        LastOutput.Clear();
        object? instance = method.IsStatic ? null : Construct(type);
        try
        {
            var parameters = method.GetParameters();
            var args = new object?[parameters.Length];
            for (int i = 0; i < parameters.Length; i++)
                args[i] = i < data.Length ? Convert(data[i], parameters[i].ParameterType) : parameters[i].DefaultValue;
            var m = method.IsGenericMethodDefinition ? method.MakeGenericMethod(parameters.Select((p, i) => args[i]?.GetType() ?? typeof(object)).ToArray()) : method;
            object? result = m.Invoke(instance, args);
            if (result is Task task) await task;
            else if (result is ValueTask vt) await vt;
        }
        finally
        {
            if (instance is IAsyncDisposable ad) await ad.DisposeAsync();
            else if (instance is IDisposable d) d.Dispose();
        }
    }

    static readonly Dictionary<Type, object> Fixtures = [];
    static readonly System.Text.StringBuilder LastOutput = new();

    /// <summary>The test class through its constructor, as xUnit calls it: output helper and fixtures by type.</summary>
    static object Construct(Type type)
    {
        var ctor = type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).First();
        var args = ctor.GetParameters().Select(p =>
        {
            if (p.ParameterType == typeof(ITestOutputHelper)) return (object)new BufferedOutput();
            if (!Fixtures.TryGetValue(p.ParameterType, out var fixture))
                Fixtures[p.ParameterType] = fixture = Activator.CreateInstance(p.ParameterType)
                    ?? throw new InvalidOperationException($"cannot make the fixture {p.ParameterType}");
            return fixture;
        }).ToArray();
        return ctor.Invoke(args);
    }

    sealed class BufferedOutput : ITestOutputHelper
    {
        public void WriteLine(string message) => LastOutput.AppendLine(message);
        public void WriteLine(string format, params object[] args) => LastOutput.AppendLine(string.Format(format, args));
    }

    /// <summary>xUnit's conversions for InlineData: numbers widen/narrow to the parameter's type, enums from ints.</summary>
    static object? Convert(object? value, Type target)
    {
        if (value is null) return null;
        var t = Nullable.GetUnderlyingType(target) ?? target;
        if (t.IsInstanceOfType(value)) return value;
        if (t.IsEnum) return Enum.ToObject(t, value);
        if (value is IConvertible && typeof(IConvertible).IsAssignableFrom(t)) return System.Convert.ChangeType(value, t, System.Globalization.CultureInfo.InvariantCulture);
        return value;
    }
}

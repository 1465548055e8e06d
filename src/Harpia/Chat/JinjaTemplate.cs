using System.Globalization;
using System.Text;

namespace Harpia.Chat;

/// <summary>Jinja's "undefined": renders as nothing, is falsy, iterates as empty.</summary>
internal sealed class JUndefined
{
    public static readonly JUndefined Instance = new();
    public override string ToString() => "";
}

/// <summary>The object <c>namespace()</c> returns: attributes that <c>{% set ns.x = … %}</c> can change from inside loops.</summary>
internal sealed class JNamespace
{
    public readonly Dictionary<string, object?> Values = new(StringComparer.Ordinal);
}

internal delegate object? JCallable(List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>
/// A compiled template of the Jinja subset that Hugging Face chat templates use (<c>tokenizer_config.json</c>'s
/// <c>chat_template</c>): for/if/elif/else, set (also on namespaces and as a block), macros, loop variables,
/// filters, tests, slicing, string methods, <c>raise_exception</c>. Values follow Python's semantics:
/// null is <c>None</c>, long and double are numbers, <see cref="List{T}"/> and <see cref="Dictionary{TKey,TValue}"/>
/// of <c>object?</c> are lists and dicts.
/// </summary>
public sealed class JinjaTemplate
{
    readonly List<JStmt> _body;

    JinjaTemplate(List<JStmt> body) => _body = body;

    /// <summary>Parses the template; throws <see cref="JinjaException"/> naming the offset of a syntax error.</summary>
    public static JinjaTemplate Parse(string source) => new(JinjaParser.Parse(source));

    /// <summary>Renders with the given variables (values: null, bool, int/long, float/double, string, lists, dicts).</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var interpreter = new JinjaInterpreter();
        var globals = interpreter.Scopes[0];
        foreach (var (name, value) in variables) globals[name] = JinjaInterpreter.Import(value);
        var output = new StringBuilder();
        interpreter.Exec(_body, output);
        return output.ToString();
    }
}

internal sealed class JinjaInterpreter
{
    enum Flow { Normal, Break, Continue }

    public readonly List<Dictionary<string, object?>> Scopes = [new(StringComparer.Ordinal)];
    int _depth;

    public JinjaInterpreter()
    {
        var g = Scopes[0];
        g["raise_exception"] = (JCallable)((a, _) => throw new JinjaException($"chat template raised an error: {Str(Arg(a, 0))}"));
        g["range"] = (JCallable)Range;
        g["namespace"] = (JCallable)((a, kw) => { var ns = new JNamespace(); foreach (var (k, v) in kw) ns.Values[k] = v; return ns; });
        g["dict"] = (JCallable)((_, kw) => new Dictionary<string, object?>(kw, StringComparer.Ordinal));
        g["strftime_now"] = (JCallable)((a, _) => StrFTime(DateTime.Now, Str(Arg(a, 0))));
    }

    /// <summary>Converts caller values (arrays, read-only dictionaries, ints) into the interpreter's representations.</summary>
    public static object? Import(object? value) => value switch
    {
        null or string or bool or long or double or JUndefined or JNamespace or JCallable => value,
        int i => (long)i,
        float f => (double)f,
        IReadOnlyDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => Import(kv.Value), StringComparer.Ordinal),
        IDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => Import(kv.Value), StringComparer.Ordinal),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(Import).ToList(),
        _ => value.ToString(),
    };

    // ---------------------------------------------------------------- statements

    Flow ExecBody(List<JStmt> body, StringBuilder output)
    {
        foreach (var stmt in body)
        {
            var flow = ExecOne(stmt, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    public void Exec(List<JStmt> body, StringBuilder output)
    {
        if (ExecBody(body, output) != Flow.Normal) throw new JinjaException("chat template: break/continue outside a loop");
    }

    Flow ExecOne(JStmt stmt, StringBuilder output)
    {
        switch (stmt)
        {
            case JTextStmt t: output.Append(t.Text); return Flow.Normal;
            case JOutputStmt o: output.Append(Str(Eval(o.Expr))); return Flow.Normal;
            case JIfStmt s:
                foreach (var (cond, body) in s.Branches)
                    if (Truthy(Eval(cond))) return ExecBody(body, output);
                return s.Else is null ? Flow.Normal : ExecBody(s.Else, output);
            case JForStmt f: return ExecFor(f, output);
            case JSetStmt s:
            {
                var value = Eval(s.Value);
                if (s.Attribute is null) Scopes[^1][s.Name] = value;
                else if (Lookup(s.Name) is JNamespace ns) ns.Values[s.Attribute] = value;
                else throw new JinjaException($"chat template: cannot set attribute '{s.Attribute}' on '{s.Name}', which is not a namespace");
                return Flow.Normal;
            }
            case JSetBlockStmt s:
            {
                var captured = new StringBuilder();
                Exec(s.Body, captured);
                Scopes[^1][s.Name] = captured.ToString();
                return Flow.Normal;
            }
            case JMacroStmt m: Scopes[^1][m.Name] = MakeMacro(m, null); return Flow.Normal;
            case JCallBlockStmt c:
            {
                if (c.Call is not JCall call) throw new JinjaException("chat template: {% call %} needs a macro call");
                var caller = MakeMacro(new JMacroStmt("caller", [], c.Body), null);
                var target = Eval(call.Target) as JCallable ?? throw new JinjaException("chat template: {% call %} target is not callable");
                var kwargs = call.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value), StringComparer.Ordinal);
                kwargs["caller"] = caller;
                output.Append(Str(target(call.Args.Select(Eval).ToList(), kwargs)));
                return Flow.Normal;
            }
            case JFilterBlockStmt fb:
            {
                var captured = new StringBuilder();
                Exec(fb.Body, captured);
                output.Append(Str(ApplyFilter(fb.Filter, captured.ToString(), fb.Args.Select(Eval).ToList(), new())));
                return Flow.Normal;
            }
            case JLoopControlStmt lc: return lc.IsBreak ? Flow.Break : Flow.Continue;
            default: throw new JinjaException($"chat template: unknown statement {stmt.GetType().Name}");
        }
    }

    JCallable MakeMacro(JMacroStmt m, object? _) => (args, kwargs) =>
    {
        if (++_depth > 64) throw new JinjaException($"chat template: macro '{m.Name}' recursed too deeply");
        var scope = new Dictionary<string, object?>(StringComparer.Ordinal);
        for (int i = 0; i < m.Parameters.Count; i++)
        {
            var (name, def) = m.Parameters[i];
            scope[name] = i < args.Count ? args[i] : kwargs.TryGetValue(name, out var v) ? v : def is null ? JUndefined.Instance : Eval(def);
        }
        if (kwargs.TryGetValue("caller", out var caller)) scope["caller"] = caller;
        Scopes.Add(scope);
        try
        {
            var sb = new StringBuilder();
            Exec(m.Body, sb);
            return sb.ToString();
        }
        finally { Scopes.RemoveAt(Scopes.Count - 1); _depth--; }
    };

    Flow ExecFor(JForStmt f, StringBuilder output)
    {
        var items = Iterate(Eval(f.Iterable)).ToList();
        var scope = new Dictionary<string, object?>(StringComparer.Ordinal);
        Scopes.Add(scope);
        try
        {
            if (f.Filter is not null)
                items = items.Where(item => { Bind(f.Targets, item, scope); return Truthy(Eval(f.Filter)); }).ToList();
            if (items.Count == 0) return f.Else is null ? Flow.Normal : ExecBody(f.Else, output);
            for (int i = 0; i < items.Count; i++)
            {
                scope.Clear();
                Bind(f.Targets, items[i], scope);
                int index = i;
                scope["loop"] = new Dictionary<string, object?>(StringComparer.Ordinal)
                {
                    ["index"] = (long)(i + 1), ["index0"] = (long)i, ["revindex"] = (long)(items.Count - i),
                    ["revindex0"] = (long)(items.Count - i - 1), ["first"] = i == 0, ["last"] = i == items.Count - 1,
                    ["length"] = (long)items.Count,
                    ["previtem"] = i > 0 ? items[i - 1] : JUndefined.Instance,
                    ["nextitem"] = i + 1 < items.Count ? items[i + 1] : JUndefined.Instance,
                    ["cycle"] = (JCallable)((a, _) => a.Count == 0 ? JUndefined.Instance : a[index % a.Count]),
                };
                if (ExecBody(f.Body, output) == Flow.Break) break;
            }
            return Flow.Normal;
        }
        finally { Scopes.RemoveAt(Scopes.Count - 1); }
    }

    static void Bind(List<string> targets, object? item, Dictionary<string, object?> scope)
    {
        if (targets.Count == 1) { scope[targets[0]] = item; return; }
        var parts = Iterate(item).ToList();
        if (parts.Count != targets.Count)
            throw new JinjaException($"chat template: cannot unpack {parts.Count} values into {targets.Count} loop variables");
        for (int i = 0; i < targets.Count; i++) scope[targets[i]] = parts[i];
    }

    object? Lookup(string name)
    {
        for (int i = Scopes.Count - 1; i >= 0; i--)
            if (Scopes[i].TryGetValue(name, out var v)) return v;
        return JUndefined.Instance;
    }

    // ---------------------------------------------------------------- expressions

    object? Eval(JExpr expr)
    {
        switch (expr)
        {
            case JLiteral l: return l.Value;
            case JName n: return Lookup(n.Name);
            case JListExpr l: return l.Items.Select(Eval).ToList();
            case JDictExpr d:
            {
                var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, v) in d.Items) dict[Str(Eval(k))] = Eval(v);
                return dict;
            }
            case JAttr a: return GetAttr(Eval(a.Target), a.Name);
            case JIndex ix: return GetItem(Eval(ix.Target), Eval(ix.Index));
            case JSlice s: return Slice(Eval(s.Target), s.Start is null ? null : Eval(s.Start), s.Stop is null ? null : Eval(s.Stop), s.Step is null ? null : Eval(s.Step));
            case JCall c:
            {
                var target = Eval(c.Target);
                if (target is not JCallable callable)
                    throw new JinjaException($"chat template: '{Describe(c.Target)}' is not callable");
                return callable(c.Args.Select(Eval).ToList(), c.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value), StringComparer.Ordinal));
            }
            case JFilter f:
                return ApplyFilter(f.Name, Eval(f.Target), f.Args.Select(Eval).ToList(),
                    f.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value), StringComparer.Ordinal));
            case JTest t:
            {
                bool result = ApplyTest(t.Name, Eval(t.Target), t.Args.Select(Eval).ToList());
                return t.Negated ? !result : result;
            }
            case JUnary u:
            {
                var v = Eval(u.Operand);
                return u.Op == "not" ? !Truthy(v) : v switch
                {
                    long i => (object)(-i), double d => -d, bool b => (object)-(b ? 1L : 0L),
                    _ => throw new JinjaException($"chat template: cannot negate {TypeName(v)}"),
                };
            }
            case JBinary b:
                if (b.Op == "and") { var l = Eval(b.Left); return Truthy(l) ? Eval(b.Right) : l; }
                if (b.Op == "or") { var l = Eval(b.Left); return Truthy(l) ? l : Eval(b.Right); }
                return Binary(b.Op, Eval(b.Left), Eval(b.Right));
            case JConditional c:
                return Truthy(Eval(c.Cond)) ? Eval(c.Then) : c.Else is null ? JUndefined.Instance : Eval(c.Else);
            default: throw new JinjaException($"chat template: unknown expression {expr.GetType().Name}");
        }
    }

    static string Describe(JExpr e) => e switch { JName n => n.Name, JAttr a => $"{Describe(a.Target)}.{a.Name}", _ => "expression" };

    static object? Binary(string op, object? l, object? r)
    {
        switch (op)
        {
            case "==": return ValueEquals(l, r);
            case "!=": return !ValueEquals(l, r);
            case "<": return Compare(l, r) < 0;
            case ">": return Compare(l, r) > 0;
            case "<=": return Compare(l, r) <= 0;
            case ">=": return Compare(l, r) >= 0;
            case "in": return Contains(r, l);
            case "not in": return !Contains(r, l);
            case "~": return Str(l) + Str(r);
            case "+":
                if (l is string ls && r is string rs) return ls + rs;
                if (l is List<object?> ll && r is List<object?> rl) return ll.Concat(rl).ToList();
                break;
            case "*":
                if (l is string s1 && r is long n1) return n1 <= 0 ? "" : new StringBuilder().Insert(0, s1, (int)Math.Min(n1, 100_000)).ToString();
                if (l is List<object?> lst && r is long n2) return Enumerable.Repeat(lst, (int)Math.Clamp(n2, 0, 100_000)).SelectMany(x => x).ToList();
                break;
        }
        if (IsNumber(l) && IsNumber(r))
        {
            if (l is double || r is double || op == "/")
            {
                double a = ToDouble(l), b = ToDouble(r);
                return op switch
                {
                    "+" => a + b, "-" => a - b, "*" => a * b,
                    "/" => b == 0 ? throw new JinjaException("chat template: division by zero") : a / b,
                    "//" => b == 0 ? throw new JinjaException("chat template: division by zero") : Math.Floor(a / b),
                    "%" => b == 0 ? throw new JinjaException("chat template: modulo by zero") : a - b * Math.Floor(a / b),
                    "**" => Math.Pow(a, b),
                    _ => throw new JinjaException($"chat template: unknown operator '{op}'"),
                };
            }
            long x = ToLong(l), y = ToLong(r);
            return op switch
            {
                "+" => x + y, "-" => x - y, "*" => x * y,
                "//" => y == 0 ? throw new JinjaException("chat template: division by zero") : (long)Math.Floor((double)x / y),
                "%" => y == 0 ? throw new JinjaException("chat template: modulo by zero") : ((x % y) + y) % y,
                "**" => (long)Math.Pow(x, y),
                _ => throw new JinjaException($"chat template: unknown operator '{op}'"),
            };
        }
        throw new JinjaException($"chat template: unsupported operand types for {op}: {TypeName(l)} and {TypeName(r)}");
    }

    static bool IsNumber(object? v) => v is long or double or bool;
    static double ToDouble(object? v) => v switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => 0 };
    static long ToLong(object? v) => v switch { long l => l, double d => (long)d, bool b => b ? 1 : 0, _ => 0 };

    internal static string TypeName(object? v) => v switch
    {
        null => "None", JUndefined => "undefined", bool => "bool", long => "int", double => "float", string => "str",
        List<object?> => "list", Dictionary<string, object?> => "dict", JNamespace => "namespace", JCallable => "function",
        _ => v.GetType().Name,
    };

    internal static bool Truthy(object? v) => v switch
    {
        null or JUndefined => false,
        bool b => b, long l => l != 0, double d => d != 0, string s => s.Length > 0,
        List<object?> l => l.Count > 0, Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    internal static bool ValueEquals(object? a, object? b)
    {
        if (a is null || b is null) return a is null && b is null;
        if (a is JUndefined || b is JUndefined) return a is JUndefined && b is JUndefined;
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a) == ToDouble(b);
        if (a is string sa && b is string sb) return sa == sb;
        if (a is List<object?> la && b is List<object?> lb) return la.Count == lb.Count && la.Zip(lb).All(p => ValueEquals(p.First, p.Second));
        if (a is Dictionary<string, object?> da && b is Dictionary<string, object?> db)
            return da.Count == db.Count && da.All(kv => db.TryGetValue(kv.Key, out var v) && ValueEquals(kv.Value, v));
        return ReferenceEquals(a, b);
    }

    static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a).CompareTo(ToDouble(b));
        if (a is string sa && b is string sb) return string.CompareOrdinal(sa, sb);
        throw new JinjaException($"chat template: cannot compare {TypeName(a)} with {TypeName(b)}");
    }

    static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new JinjaException($"chat template: 'in <string>' needs a string, not {TypeName(item)}"),
        List<object?> l => l.Any(x => ValueEquals(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        JNamespace ns => item is string k && ns.Values.ContainsKey(k),
        JUndefined or null => false,
        _ => throw new JinjaException($"chat template: argument of type {TypeName(container)} is not iterable"),
    };

    internal static IEnumerable<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys,
        string s => s.Select(c => (object?)c.ToString()),
        JUndefined or null => [],
        _ => throw new JinjaException($"chat template: {TypeName(v)} is not iterable"),
    };

    object? GetAttr(object? target, string name)
    {
        switch (target)
        {
            case Dictionary<string, object?> d:
                if (d.TryGetValue(name, out var v)) return v;
                return name switch
                {
                    "items" => (JCallable)((_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()),
                    "keys" => (JCallable)((_, _) => d.Keys.Cast<object?>().ToList()),
                    "values" => (JCallable)((_, _) => d.Values.ToList()),
                    "get" => (JCallable)((a, _) => d.TryGetValue(Str(Arg(a, 0)), out var got) ? got : a.Count > 1 ? a[1] : null),
                    _ => JUndefined.Instance,
                };
            case JNamespace ns: return ns.Values.TryGetValue(name, out var nv) ? nv : JUndefined.Instance;
            case string s: return StringMethod(s, name);
            case List<object?> l:
                return name switch
                {
                    "append" => (JCallable)((a, _) => { l.Add(Arg(a, 0)); return null; }),
                    "pop" => (JCallable)((a, _) => { int i = a.Count > 0 ? NormIndex(ToLong(a[0]), l.Count) : l.Count - 1; var x = l[i]; l.RemoveAt(i); return x; }),
                    "index" => (JCallable)((a, _) => (long)l.FindIndex(x => ValueEquals(x, Arg(a, 0)))),
                    _ => JUndefined.Instance,
                };
            case JUndefined: return JUndefined.Instance;
            case null: throw new JinjaException($"chat template: None has no attribute '{name}'");
            default: return JUndefined.Instance;
        }
    }

    static int NormIndex(long index, int count)
    {
        long i = index < 0 ? index + count : index;
        if (i < 0 || i >= count) throw new JinjaException($"chat template: index {index} out of range for length {count}");
        return (int)i;
    }

    object? GetItem(object? target, object? key) => target switch
    {
        Dictionary<string, object?> d => key is not null && d.TryGetValue(Str(key), out var v) ? v : JUndefined.Instance,
        JNamespace ns => ns.Values.TryGetValue(Str(key), out var nv) ? nv : JUndefined.Instance,
        List<object?> l when key is long i => i < -l.Count || i >= l.Count ? JUndefined.Instance : l[NormIndex(i, l.Count)],
        string s when key is long i => i < -s.Length || i >= s.Length ? JUndefined.Instance : s[NormIndex(i, s.Length)].ToString(),
        string s when key is string name => StringMethod(s, name),
        JUndefined => JUndefined.Instance,
        _ => throw new JinjaException($"chat template: cannot index {TypeName(target)} with {TypeName(key)}"),
    };

    static object? Slice(object? target, object? start, object? stop, object? step)
    {
        int count = target switch { List<object?> l => l.Count, string s => s.Length, JUndefined => 0, _ => throw new JinjaException($"chat template: cannot slice {TypeName(target)}") };
        long st = step is null ? 1 : ToLong(step);
        if (st == 0) throw new JinjaException("chat template: slice step cannot be zero");
        long Clamp(object? v, long defaultValue, long lo, long hi)
        {
            if (v is null) return defaultValue;
            long i = ToLong(v);
            if (i < 0) i += count;
            return Math.Clamp(i, lo, hi);
        }
        long a = st > 0 ? Clamp(start, 0, 0, count) : Clamp(start, count - 1, -1, count - 1);
        long b = st > 0 ? Clamp(stop, count, 0, count) : Clamp(stop, -1, -1, count - 1);
        var indices = new List<int>();
        for (long i = a; st > 0 ? i < b : i > b; i += st) indices.Add((int)i);
        return target switch
        {
            List<object?> l => indices.Select(i => l[i]).ToList(),
            string s => string.Concat(indices.Select(i => s[i])),
            _ => new List<object?>(),
        };
    }

    static object? StringMethod(string s, string name) => name switch
    {
        "strip" => (JCallable)((a, _) => a.Count > 0 && a[0] is string c ? s.Trim(c.ToCharArray()) : s.Trim()),
        "lstrip" => (JCallable)((a, _) => a.Count > 0 && a[0] is string c ? s.TrimStart(c.ToCharArray()) : s.TrimStart()),
        "rstrip" => (JCallable)((a, _) => a.Count > 0 && a[0] is string c ? s.TrimEnd(c.ToCharArray()) : s.TrimEnd()),
        "upper" => (JCallable)((_, _) => s.ToUpperInvariant()),
        "lower" => (JCallable)((_, _) => s.ToLowerInvariant()),
        "title" => (JCallable)((_, _) => Title(s)),
        "capitalize" => (JCallable)((_, _) => Capitalize(s)),
        "startswith" => (JCallable)((a, _) => Arg(a, 0) is List<object?> l ? l.Any(p => s.StartsWith(Str(p), StringComparison.Ordinal)) : s.StartsWith(Str(Arg(a, 0)), StringComparison.Ordinal)),
        "endswith" => (JCallable)((a, _) => Arg(a, 0) is List<object?> l ? l.Any(p => s.EndsWith(Str(p), StringComparison.Ordinal)) : s.EndsWith(Str(Arg(a, 0)), StringComparison.Ordinal)),
        "split" => (JCallable)((a, _) => Split(s, a.Count > 0 && a[0] is string sep ? sep : null, a.Count > 1 ? ToLong(a[1]) : -1)),
        "replace" => (JCallable)((a, _) => Str(Arg(a, 0)).Length == 0 ? s : s.Replace(Str(Arg(a, 0)), Str(Arg(a, 1)), StringComparison.Ordinal)),
        "find" => (JCallable)((a, _) => (long)s.IndexOf(Str(Arg(a, 0)), StringComparison.Ordinal)),
        "count" => (JCallable)((a, _) => { string sub = Str(Arg(a, 0)); if (sub.Length == 0) return (long)(s.Length + 1); long n = 0; for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++; return n; }),
        "join" => (JCallable)((a, _) => string.Join(s, Iterate(Arg(a, 0)).Select(Str))),
        "format" => (JCallable)((a, _) => PercentFormat(s, a)),
        _ => JUndefined.Instance,
    };

    static List<object?> Split(string s, string? sep, long maxSplit)
    {
        if (sep is null)
            return s.Split((char[]?)null, maxSplit < 0 ? int.MaxValue : (int)maxSplit + 1, StringSplitOptions.RemoveEmptyEntries).Select(x => (object?)x).ToList();
        return s.Split(sep, maxSplit < 0 ? int.MaxValue : (int)maxSplit + 1).Select(x => (object?)x).ToList();
    }

    static string PercentFormat(string s, List<object?> args)
    {
        int next = 0;
        var sb = new StringBuilder();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '{' && i + 1 < s.Length && s[i + 1] == '}') { sb.Append(Str(Arg(args, next++))); i++; }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool startOfWord = true;
        foreach (char c in s)
        {
            sb.Append(startOfWord ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            startOfWord = !char.IsLetterOrDigit(c);
        }
        return sb.ToString();
    }

    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    static object? Arg(List<object?> args, int i) => i < args.Count ? args[i] : JUndefined.Instance;

    static object? Range(List<object?> a, Dictionary<string, object?> _)
    {
        long start = 0, stop, step = 1;
        if (a.Count == 1) stop = ToLong(a[0]);
        else if (a.Count >= 2) { start = ToLong(a[0]); stop = ToLong(a[1]); if (a.Count > 2) step = ToLong(a[2]); }
        else throw new JinjaException("chat template: range() needs arguments");
        if (step == 0) throw new JinjaException("chat template: range() step cannot be zero");
        var list = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (list.Count >= 1_000_000) throw new JinjaException("chat template: range() too long");
            list.Add(i);
        }
        return list;
    }

    static string StrFTime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char c = format[++i];
            sb.Append(c switch
            {
                'd' => t.ToString("dd", CultureInfo.InvariantCulture), 'm' => t.ToString("MM", CultureInfo.InvariantCulture),
                'Y' => t.ToString("yyyy", CultureInfo.InvariantCulture), 'y' => t.ToString("yy", CultureInfo.InvariantCulture),
                'b' => t.ToString("MMM", CultureInfo.InvariantCulture), 'B' => t.ToString("MMMM", CultureInfo.InvariantCulture),
                'H' => t.ToString("HH", CultureInfo.InvariantCulture), 'M' => t.ToString("mm", CultureInfo.InvariantCulture),
                'S' => t.ToString("ss", CultureInfo.InvariantCulture), 'A' => t.ToString("dddd", CultureInfo.InvariantCulture),
                'a' => t.ToString("ddd", CultureInfo.InvariantCulture), '%' => "%",
                _ => "%" + c,
            });
        }
        return sb.ToString();
    }

    // ---------------------------------------------------------------- filters and tests

    object? ApplyFilter(string name, object? v, List<object?> a, Dictionary<string, object?> kw)
    {
        switch (name)
        {
            case "trim": return a.Count > 0 && a[0] is string chars ? Str(v).Trim(chars.ToCharArray()) : Str(v).Trim();
            case "length" or "count":
                return v switch
                {
                    string s => (long)s.Length, List<object?> l => (long)l.Count, Dictionary<string, object?> d => (long)d.Count,
                    JUndefined => 0L, _ => throw new JinjaException($"chat template: {TypeName(v)} has no length"),
                };
            case "tojson":
            {
                var indentArg = kw.TryGetValue("indent", out var ind) ? ind : a.Count > 0 ? a[0] : null;
                var sb = new StringBuilder();
                ToJson(v, sb, indentArg is long n ? (int)n : -1, 0);
                return sb.ToString();
            }
            case "upper": return Str(v).ToUpperInvariant();
            case "lower": return Str(v).ToLowerInvariant();
            case "title": return Title(Str(v));
            case "capitalize": return Capitalize(Str(v));
            case "string": return Str(v);
            case "safe": return v;
            case "e" or "escape": return Str(v).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
            case "first": return v switch { string s => s.Length > 0 ? s[0].ToString() : JUndefined.Instance, _ => Iterate(v).DefaultIfEmpty(JUndefined.Instance).First() };
            case "last": return v switch { string s => s.Length > 0 ? s[^1].ToString() : JUndefined.Instance, _ => Iterate(v).DefaultIfEmpty(JUndefined.Instance).Last() };
            case "list": return Iterate(v).ToList();
            case "reverse": return v is string rs ? new string(rs.Reverse().ToArray()) : Iterate(v).Reverse().ToList();
            case "join":
            {
                string sep = a.Count > 0 ? Str(a[0]) : kw.TryGetValue("d", out var d) ? Str(d) : "";
                var items = Iterate(v);
                if (kw.TryGetValue("attribute", out var attr)) items = items.Select(x => GetItem(x, attr));
                return string.Join(sep, items.Select(Str));
            }
            case "default" or "d":
            {
                bool boolean = (a.Count > 1 && Truthy(a[1])) || (kw.TryGetValue("boolean", out var bo) && Truthy(bo));
                var fallback = a.Count > 0 ? a[0] : kw.TryGetValue("default_value", out var dv) ? dv : "";
                return v is JUndefined || (boolean && !Truthy(v)) ? fallback : v;
            }
            case "int":
                return v switch
                {
                    long l => l, double d => (long)d, bool b => b ? 1L : 0L,
                    string s => long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) ? p
                        : double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var pd) ? (long)pd : 0L,
                    _ => 0L,
                };
            case "float":
                return v switch
                {
                    long l => (double)l, double d => d, bool b => b ? 1.0 : 0.0,
                    string s => double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var p) ? p : 0.0,
                    _ => 0.0,
                };
            case "abs": return v switch { long l => (object)Math.Abs(l), double d => Math.Abs(d), _ => throw new JinjaException($"chat template: abs of {TypeName(v)}") };
            case "round": return Math.Round(ToDouble(v), a.Count > 0 ? (int)ToLong(a[0]) : 0, MidpointRounding.ToEven);
            case "replace": return Str(v).Replace(Str(Arg(a, 0)), Str(Arg(a, 1)), StringComparison.Ordinal);
            case "items": return v is Dictionary<string, object?> dict ? dict.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList() : throw new JinjaException($"chat template: items of {TypeName(v)}");
            case "indent":
            {
                string pad = new(' ', a.Count > 0 ? (int)ToLong(a[0]) : 4);
                bool first = (a.Count > 1 && Truthy(a[1])) || (kw.TryGetValue("first", out var f) && Truthy(f));
                var lines = Str(v).Split('\n');
                for (int i = first ? 0 : 1; i < lines.Length; i++) if (lines[i].Length > 0) lines[i] = pad + lines[i];
                return string.Join('\n', lines);
            }
            case "unique":
            {
                var result = new List<object?>();
                foreach (var x in Iterate(v)) if (!result.Any(y => ValueEquals(x, y))) result.Add(x);
                return result;
            }
            case "map":
                if (kw.TryGetValue("attribute", out var mapAttr))
                    return Iterate(v).Select(x => GetItem(x, mapAttr) is JUndefined && kw.TryGetValue("default", out var md) ? md : GetItem(x, mapAttr)).ToList();
                if (a.Count > 0) return Iterate(v).Select(x => ApplyFilter(Str(a[0]), x, a.Skip(1).ToList(), new())).ToList();
                throw new JinjaException("chat template: map needs a filter name or attribute=");
            case "select" or "reject":
            {
                bool keep = name == "select";
                return Iterate(v).Where(x => (a.Count == 0 ? Truthy(x) : ApplyTest(Str(a[0]), x, a.Skip(1).ToList())) == keep).ToList();
            }
            case "selectattr" or "rejectattr":
            {
                bool keep = name == "selectattr";
                var attrName = Arg(a, 0);
                return Iterate(v).Where(x =>
                {
                    var value = GetItem(x, attrName);
                    return (a.Count < 2 ? Truthy(value) : ApplyTest(Str(a[1]), value, a.Skip(2).ToList())) == keep;
                }).ToList();
            }
            default: throw new JinjaException($"chat template: unknown filter '{name}'");
        }
    }

    static bool ApplyTest(string name, object? v, List<object?> a) => name switch
    {
        "defined" => v is not JUndefined,
        "undefined" => v is JUndefined,
        "none" => v is null,
        "boolean" => v is bool,
        "true" => v is true,
        "false" => v is false,
        "string" => v is string,
        "number" => v is long or double,
        "integer" => v is long,
        "float" => v is double,
        "mapping" => v is Dictionary<string, object?>,
        "iterable" => v is string or List<object?> or Dictionary<string, object?>,
        "sequence" => v is string or List<object?> or Dictionary<string, object?>,
        "callable" => v is JCallable,
        "even" => ToLong(v) % 2 == 0,
        "odd" => ToLong(v) % 2 != 0,
        "divisibleby" => ToLong(Arg(a, 0)) != 0 && ToLong(v) % ToLong(Arg(a, 0)) == 0,
        "equalto" or "eq" or "==" or "sameas" => ValueEquals(v, Arg(a, 0)),
        "ne" or "!=" => !ValueEquals(v, Arg(a, 0)),
        "lt" or "lessthan" => Compare(v, Arg(a, 0)) < 0,
        "gt" or "greaterthan" => Compare(v, Arg(a, 0)) > 0,
        "le" => Compare(v, Arg(a, 0)) <= 0,
        "ge" => Compare(v, Arg(a, 0)) >= 0,
        "in" => Contains(Arg(a, 0), v),
        "lower" => v is string s && s == s.ToLowerInvariant(),
        "upper" => v is string s && s == s.ToUpperInvariant(),
        _ => throw new JinjaException($"chat template: unknown test '{name}'"),
    };

    // ---------------------------------------------------------------- conversions

    /// <summary>Python's <c>str()</c> of a value, which is what <c>{{ }}</c> prints.</summary>
    internal static string Str(object? v) => v switch
    {
        null => "None",
        JUndefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatDouble(d),
        List<object?> or Dictionary<string, object?> => Repr(v),
        _ => v.ToString() ?? "",
    };

    static string FormatDouble(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        string s = d.ToString("R", CultureInfo.InvariantCulture);
        return s.Contains('.') || s.Contains('E') ? s : s + ".0";
    }

    static string Repr(object? v) => v switch
    {
        string s => "'" + s.Replace("\\", "\\\\").Replace("'", "\\'").Replace("\n", "\\n") + "'",
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}",
        _ => Str(v),
    };

    /// <summary>Python's <c>json.dumps(v, ensure_ascii=False)</c>, as Hugging Face's <c>tojson</c> filter calls it.</summary>
    static void ToJson(object? v, StringBuilder sb, int indent, int level)
    {
        switch (v)
        {
            case null or JUndefined: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(double.IsFinite(d) ? FormatDouble(d) : d > 0 ? "Infinity" : d < 0 ? "-Infinity" : "NaN"); break;
            case string s: JsonLiteral.Append(sb, s); break;
            case List<object?> list:
                WriteContainer(sb, '[', ']', list.Count, indent, level, i => ToJson(list[i], sb, indent, level + 1));
                break;
            case Dictionary<string, object?> dict:
            {
                var entries = dict.ToList();
                WriteContainer(sb, '{', '}', entries.Count, indent, level, i =>
                {
                    JsonLiteral.Append(sb, entries[i].Key);
                    sb.Append(": ");
                    ToJson(entries[i].Value, sb, indent, level + 1);
                });
                break;
            }
            case JNamespace ns: ToJson(ns.Values, sb, indent, level); break;
            default: JsonLiteral.Append(sb, Str(v)); break;
        }
    }

    static void WriteContainer(StringBuilder sb, char open, char close, int count, int indent, int level, Action<int> item)
    {
        sb.Append(open);
        if (count == 0) { sb.Append(close); return; }
        for (int i = 0; i < count; i++)
        {
            if (i > 0) sb.Append(indent >= 0 ? "," : ", ");
            if (indent >= 0) sb.Append('\n').Append(' ', indent * (level + 1));
            item(i);
        }
        if (indent >= 0) sb.Append('\n').Append(' ', indent * level);
        sb.Append(close);
    }
}

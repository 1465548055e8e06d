using System.Globalization;

namespace Harpia.Chat;

// The syntax tree of the Jinja subset: statements render text, expressions produce values.

internal abstract record JStmt;
internal sealed record JTextStmt(string Text) : JStmt;
internal sealed record JOutputStmt(JExpr Expr) : JStmt;
internal sealed record JIfStmt(List<(JExpr Cond, List<JStmt> Body)> Branches, List<JStmt>? Else) : JStmt;
internal sealed record JForStmt(List<string> Targets, JExpr Iterable, JExpr? Filter, List<JStmt> Body, List<JStmt>? Else) : JStmt;
internal sealed record JSetStmt(string Name, string? Attribute, JExpr Value) : JStmt;
internal sealed record JSetBlockStmt(string Name, List<JStmt> Body) : JStmt;
internal sealed record JMacroStmt(string Name, List<(string Name, JExpr? Default)> Parameters, List<JStmt> Body) : JStmt;
internal sealed record JCallBlockStmt(JExpr Call, List<JStmt> Body) : JStmt;
internal sealed record JFilterBlockStmt(string Filter, List<JExpr> Args, List<JStmt> Body) : JStmt;
internal sealed record JLoopControlStmt(bool IsBreak) : JStmt;

internal abstract record JExpr;
internal sealed record JLiteral(object? Value) : JExpr;
internal sealed record JName(string Name) : JExpr;
internal sealed record JListExpr(List<JExpr> Items) : JExpr;
internal sealed record JDictExpr(List<(JExpr Key, JExpr Value)> Items) : JExpr;
internal sealed record JAttr(JExpr Target, string Name) : JExpr;
internal sealed record JIndex(JExpr Target, JExpr Index) : JExpr;
internal sealed record JSlice(JExpr Target, JExpr? Start, JExpr? Stop, JExpr? Step) : JExpr;
internal sealed record JCall(JExpr Target, List<JExpr> Args, List<(string Name, JExpr Value)> Kwargs) : JExpr;
internal sealed record JFilter(JExpr Target, string Name, List<JExpr> Args, List<(string Name, JExpr Value)> Kwargs) : JExpr;
internal sealed record JTest(JExpr Target, string Name, List<JExpr> Args, bool Negated) : JExpr;
internal sealed record JUnary(string Op, JExpr Operand) : JExpr;
internal sealed record JBinary(string Op, JExpr Left, JExpr Right) : JExpr;
internal sealed record JConditional(JExpr Cond, JExpr Then, JExpr? Else) : JExpr;

/// <summary>Recursive-descent parser with Jinja2's operator precedence.</summary>
internal sealed class JinjaParser
{
    readonly List<JToken> _t;
    int _i;

    JinjaParser(List<JToken> tokens) => _t = tokens;

    public static List<JStmt> Parse(string source)
    {
        var parser = new JinjaParser(JinjaLexer.Tokenize(source));
        var body = parser.ParseBody(out string? end);
        if (end is not null) throw parser.Error($"unexpected '{{% {end} %}}'");
        return body;
    }

    JToken Peek => _t[_i];
    JToken Next() => _t[_i++];
    JinjaException Error(string what) => new($"chat template: {what} at offset {Peek.Position}");

    bool IsOp(string op) => Peek.Kind == JTok.Op && Peek.Value == op;
    bool IsName(string name) => Peek.Kind == JTok.Name && Peek.Value == name;
    bool IsNameAt(int offset, string name) => _i + offset < _t.Count && _t[_i + offset].Kind == JTok.Name && _t[_i + offset].Value == name;

    void ExpectOp(string op)
    {
        if (!IsOp(op)) throw Error($"expected '{op}' but found '{Peek.Value}'");
        _i++;
    }

    void ExpectName(string name)
    {
        if (!IsName(name)) throw Error($"expected '{name}' but found '{Peek.Value}'");
        _i++;
    }

    string ExpectIdentifier()
    {
        if (Peek.Kind != JTok.Name) throw Error($"expected a name but found '{Peek.Value}'");
        return Next().Value;
    }

    void Expect(JTok kind)
    {
        if (Peek.Kind != kind) throw Error($"expected {kind} but found '{Peek.Value}'");
        _i++;
    }

    /// <summary>Parses statements until end of input or a block tag this level does not own (returned in <paramref name="end"/>).</summary>
    List<JStmt> ParseBody(out string? end, params string[] terminators)
    {
        var body = new List<JStmt>();
        while (true)
        {
            var tok = Peek;
            switch (tok.Kind)
            {
                case JTok.End:
                    if (terminators.Length > 0) throw Error($"missing '{{% {terminators[^1]} %}}'");
                    end = null;
                    return body;
                case JTok.Text:
                    _i++;
                    body.Add(new JTextStmt(tok.Value));
                    break;
                case JTok.VarOpen:
                    _i++;
                    body.Add(new JOutputStmt(ParseExpression()));
                    Expect(JTok.VarClose);
                    break;
                case JTok.BlockOpen:
                    var keyword = _t[_i + 1];
                    if (keyword.Kind == JTok.Name && Array.IndexOf(terminators, keyword.Value) >= 0)
                    {
                        _i += 2;
                        end = keyword.Value;
                        return body;
                    }
                    _i++;
                    body.Add(ParseStatement());
                    break;
                default:
                    throw Error($"unexpected '{tok.Value}'");
            }
        }
    }

    JStmt ParseStatement()
    {
        string keyword = ExpectIdentifier();
        switch (keyword)
        {
            case "if":
            {
                var branches = new List<(JExpr, List<JStmt>)>();
                var cond = ParseExpression();
                Expect(JTok.BlockClose);
                List<JStmt>? elseBody = null;
                while (true)
                {
                    var body = ParseBody(out var end, "elif", "else", "endif");
                    branches.Add((cond, body));
                    if (end == "elif") { cond = ParseExpression(); Expect(JTok.BlockClose); continue; }
                    Expect(JTok.BlockClose);
                    if (end == "else") { elseBody = ParseBody(out _, "endif"); Expect(JTok.BlockClose); }
                    break;
                }
                return new JIfStmt(branches, elseBody);
            }
            case "for":
            {
                var targets = new List<string> { ExpectIdentifier() };
                while (IsOp(",")) { _i++; targets.Add(ExpectIdentifier()); }
                ExpectName("in");
                var iterable = ParseTernaryFree();
                JExpr? filter = null;
                if (IsName("if")) { _i++; filter = ParseTernaryFree(); }
                if (IsName("recursive")) throw Error("recursive loops are not supported");
                Expect(JTok.BlockClose);
                var body = ParseBody(out var end, "else", "endfor");
                Expect(JTok.BlockClose);
                List<JStmt>? elseBody = null;
                if (end == "else") { elseBody = ParseBody(out _, "endfor"); Expect(JTok.BlockClose); }
                return new JForStmt(targets, iterable, filter, body, elseBody);
            }
            case "set":
            {
                string name = ExpectIdentifier();
                string? attribute = null;
                if (IsOp(".")) { _i++; attribute = ExpectIdentifier(); }
                if (Peek.Kind == JTok.BlockClose && attribute is null)
                {
                    _i++;
                    var body = ParseBody(out _, "endset");
                    Expect(JTok.BlockClose);
                    return new JSetBlockStmt(name, body);
                }
                ExpectOp("=");
                var value = ParseExpression();
                Expect(JTok.BlockClose);
                return new JSetStmt(name, attribute, value);
            }
            case "macro":
            {
                string name = ExpectIdentifier();
                ExpectOp("(");
                var parameters = new List<(string, JExpr?)>();
                while (!IsOp(")"))
                {
                    string p = ExpectIdentifier();
                    JExpr? def = null;
                    if (IsOp("=")) { _i++; def = ParseExpression(); }
                    parameters.Add((p, def));
                    if (!IsOp(")")) ExpectOp(",");
                }
                _i++;
                Expect(JTok.BlockClose);
                var body = ParseBody(out _, "endmacro");
                Expect(JTok.BlockClose);
                return new JMacroStmt(name, parameters, body);
            }
            case "call":
            {
                var call = ParseExpression();
                Expect(JTok.BlockClose);
                var body = ParseBody(out _, "endcall");
                Expect(JTok.BlockClose);
                return new JCallBlockStmt(call, body);
            }
            case "filter":
            {
                string filter = ExpectIdentifier();
                var args = new List<JExpr>();
                if (IsOp("(")) { _i++; while (!IsOp(")")) { args.Add(ParseExpression()); if (!IsOp(")")) ExpectOp(","); } _i++; }
                Expect(JTok.BlockClose);
                var body = ParseBody(out _, "endfilter");
                Expect(JTok.BlockClose);
                return new JFilterBlockStmt(filter, args, body);
            }
            case "break" or "continue":
                Expect(JTok.BlockClose);
                return new JLoopControlStmt(keyword == "break");
            case "generation":
            {
                // Hugging Face's marker for assistant-token masks; renders its body unchanged.
                Expect(JTok.BlockClose);
                var body = ParseBody(out _, "endgeneration");
                Expect(JTok.BlockClose);
                return new JIfStmt([(new JLiteral(true), body)], null);
            }
            default:
                throw Error($"unsupported statement '{keyword}'");
        }
    }

    // expression := or ('if' or ('else' expression)?)?
    JExpr ParseExpression()
    {
        var value = ParseOr();
        if (!IsName("if")) return value;
        _i++;
        var cond = ParseOr();
        JExpr? otherwise = null;
        if (IsName("else")) { _i++; otherwise = ParseExpression(); }
        return new JConditional(cond, value, otherwise);
    }

    /// <summary>A for-loop iterable or filter: no inline if (it would clash with the loop filter).</summary>
    JExpr ParseTernaryFree() => ParseOr();

    JExpr ParseOr()
    {
        var left = ParseAnd();
        while (IsName("or")) { _i++; left = new JBinary("or", left, ParseAnd()); }
        return left;
    }

    JExpr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and")) { _i++; left = new JBinary("and", left, ParseNot()); }
        return left;
    }

    JExpr ParseNot()
    {
        if (IsName("not")) { _i++; return new JUnary("not", ParseNot()); }
        return ParseCompare();
    }

    JExpr ParseCompare()
    {
        var left = ParseAdditive();
        while (true)
        {
            if (Peek.Kind == JTok.Op && Peek.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                string op = Next().Value;
                left = new JBinary(op, left, ParseAdditive());
            }
            else if (IsName("in")) { _i++; left = new JBinary("in", left, ParseAdditive()); }
            else if (IsName("not") && IsNameAt(1, "in")) { _i += 2; left = new JBinary("not in", left, ParseAdditive()); }
            else return left;
        }
    }

    JExpr ParseAdditive()
    {
        var left = ParseConcat();
        while (IsOp("+") || IsOp("-")) { string op = Next().Value; left = new JBinary(op, left, ParseConcat()); }
        return left;
    }

    JExpr ParseConcat()
    {
        var left = ParseMultiplicative();
        while (IsOp("~")) { _i++; left = new JBinary("~", left, ParseMultiplicative()); }
        return left;
    }

    JExpr ParseMultiplicative()
    {
        var left = ParsePower();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { string op = Next().Value; left = new JBinary(op, left, ParsePower()); }
        return left;
    }

    JExpr ParsePower()
    {
        var left = ParseUnary();
        while (IsOp("**")) { _i++; left = new JBinary("**", left, ParseUnary()); }
        return left;
    }

    JExpr ParseUnary()
    {
        if (IsOp("-")) { _i++; return new JUnary("-", ParseUnary()); }
        if (IsOp("+")) { _i++; return ParseUnary(); }
        return ParsePostfix(ParsePrimary());
    }

    JExpr ParsePrimary()
    {
        var tok = Next();
        switch (tok.Kind)
        {
            case JTok.String:
            {
                string s = tok.Value;
                while (Peek.Kind == JTok.String) s += Next().Value; // adjacent literals concatenate
                return new JLiteral(s);
            }
            case JTok.Int: return new JLiteral(long.Parse(tok.Value, CultureInfo.InvariantCulture));
            case JTok.Float: return new JLiteral(double.Parse(tok.Value, CultureInfo.InvariantCulture));
            case JTok.Name:
                return tok.Value switch
                {
                    "true" or "True" => new JLiteral(true),
                    "false" or "False" => new JLiteral(false),
                    "none" or "None" => new JLiteral(null),
                    _ => new JName(tok.Value),
                };
            case JTok.Op when tok.Value == "(":
            {
                var first = ParseExpression();
                if (IsOp(")")) { _i++; return first; }
                var items = new List<JExpr> { first }; // a tuple: treat as a list
                while (IsOp(",")) { _i++; if (IsOp(")")) break; items.Add(ParseExpression()); }
                ExpectOp(")");
                return new JListExpr(items);
            }
            case JTok.Op when tok.Value == "[":
            {
                var items = new List<JExpr>();
                while (!IsOp("]")) { items.Add(ParseExpression()); if (!IsOp("]")) ExpectOp(","); }
                _i++;
                return new JListExpr(items);
            }
            case JTok.Op when tok.Value == "{":
            {
                var items = new List<(JExpr, JExpr)>();
                while (!IsOp("}"))
                {
                    var key = ParseExpression();
                    ExpectOp(":");
                    items.Add((key, ParseExpression()));
                    if (!IsOp("}")) ExpectOp(",");
                }
                _i++;
                return new JDictExpr(items);
            }
            default:
                _i--;
                throw Error($"unexpected '{tok.Value}' in expression");
        }
    }

    JExpr ParsePostfix(JExpr target)
    {
        while (true)
        {
            if (IsOp("."))
            {
                _i++;
                var tok = Next();
                target = tok.Kind == JTok.Int ? new JIndex(target, new JLiteral(long.Parse(tok.Value, CultureInfo.InvariantCulture)))
                    : tok.Kind == JTok.Name ? new JAttr(target, tok.Value) : throw Error("expected an attribute name");
            }
            else if (IsOp("["))
            {
                _i++;
                JExpr? start = null, stop = null, step = null;
                bool isSlice = false;
                if (!IsOp(":")) start = ParseExpression();
                if (IsOp(":"))
                {
                    isSlice = true; _i++;
                    if (!IsOp(":") && !IsOp("]")) stop = ParseExpression();
                    if (IsOp(":")) { _i++; if (!IsOp("]")) step = ParseExpression(); }
                }
                ExpectOp("]");
                target = isSlice ? new JSlice(target, start, stop, step) : new JIndex(target, start!);
            }
            else if (IsOp("("))
            {
                _i++;
                var (args, kwargs) = ParseArguments();
                target = new JCall(target, args, kwargs);
            }
            else if (IsOp("|"))
            {
                _i++;
                string name = ExpectIdentifier();
                List<JExpr> args = [];
                List<(string, JExpr)> kwargs = [];
                if (IsOp("(")) { _i++; (args, kwargs) = ParseArguments(); }
                target = new JFilter(target, name, args, kwargs);
            }
            else if (IsName("is"))
            {
                _i++;
                bool negated = false;
                if (IsName("not")) { _i++; negated = true; }
                string name = ExpectIdentifier();
                var args = new List<JExpr>();
                if (IsOp("(")) { _i++; var (a, _) = ParseArguments(); args = a; }
                else if (Peek.Kind is JTok.String or JTok.Int or JTok.Float)
                    args.Add(ParsePrimary()); // `x is divisibleby 3`, `x is equalto 'a'`
                target = new JTest(target, name, args, negated);
            }
            else return target;
        }
    }

    (List<JExpr>, List<(string, JExpr)>) ParseArguments()
    {
        var args = new List<JExpr>();
        var kwargs = new List<(string, JExpr)>();
        while (!IsOp(")"))
        {
            if (Peek.Kind == JTok.Name && _t[_i + 1].Kind == JTok.Op && _t[_i + 1].Value == "=")
            {
                string name = Next().Value;
                _i++;
                kwargs.Add((name, ParseExpression()));
            }
            else args.Add(ParseExpression());
            if (!IsOp(")")) ExpectOp(",");
        }
        _i++;
        return (args, kwargs);
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using Harpia.Cli.Commands;

namespace Harpia.Tests.Operations;

/// <summary>
/// <c>harpia batch</c> as a real process over the bundled model, killed the way a spot VM kills it: SIGKILL at random
/// moments, many times, then run to the end; and SIGTERM (the preemption notice), which must drain and exit 75. The
/// final output must equal an uninterrupted greedy run: every request answered once, no torn line.
/// </summary>
public sealed class BatchKillResumeTests : IDisposable
{
    static readonly string ModelPath = Path.Combine(Fixtures.RepoRoot, "models", "harpia-tiny-falcon");
    readonly Fixtures.TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// 40 greedy requests (chat and completions), a TGI line and two lines that are no request. Enough work (about a
    /// thousand decode steps) that a kill triggered by observed progress lands mid-job even on a loaded machine, where
    /// polling the output file can lag by a second.
    /// </summary>
    string WriteInput()
    {
        var lines = new List<string>();
        for (int i = 0; i < Requests; i++)
        {
            lines.Add(i % 2 == 0
                ? $$$"""{"custom_id":"chat-{{{i}}}","method":"POST","url":"/v1/chat/completions","body":{"model":"tiny","messages":[{"role":"user","content":"Tell me about item {{{i}}}"}],"temperature":0,"max_tokens":24}}"""
                : $$$"""{"custom_id":"cmpl-{{{i}}}","method":"POST","url":"/v1/completions","body":{"prompt":"Once upon a time, number {{{i}}}","temperature":0,"max_tokens":24}}""");
            if (i == 5) lines.Add("{this line is not json");
            if (i == 11) lines.Add("""{"custom_id":"bad-temp","method":"POST","url":"/v1/completions","body":{"prompt":"x","temperature":9}}""");
        }
        lines.Add("""{"id":"tgi-1","inputs":"def fib(n):","parameters":{"max_new_tokens":10}}""");
        string path = _dir.File("in.jsonl");
        File.WriteAllLines(path, lines);
        return path;
    }

    const int Requests = 40;
    const int ExpectedRecords = Requests + 2 + 1;

    static Process StartBatch(string input, string output, int concurrency = 2)
    {
        string dll = typeof(BatchCommand).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { dll, "batch", input, "--output", output, "--model", ModelPath, "--max-concurrency", concurrency.ToString() })
            psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    static int RunToEnd(string input, string output)
    {
        using var p = StartBatch(input, output);
        Assert.True(p.WaitForExit(180_000), "harpia batch did not finish within 180 s");
        return p.ExitCode;
    }

    /// <summary>Records by key, with the one field that differs between runs (the creation time) removed.</summary>
    static Dictionary<string, string> Records(string path)
    {
        var records = new Dictionary<string, string>();
        foreach (string line in File.ReadAllLines(path))
        {
            var o = (JsonObject)JsonNode.Parse(line)!;
            string key = o["custom_id"] is JsonValue c ? (string)c! : (string)o["id"]!;
            if (o["response"]?["body"] is JsonObject body) body.Remove("created");
            Assert.True(records.TryAdd(key, o.ToJsonString()), $"'{key}' answered twice in {path}");
        }
        return records;
    }

    /// <summary>What any kill may leave: whole JSON lines, each key once, and at most one torn last line.</summary>
    static void AssertWholeLinesButTheLast(string path)
    {
        if (!File.Exists(path)) return;
        string text = File.ReadAllText(path, Encoding.UTF8);
        var lines = text.Split('\n');
        var keys = new HashSet<string>();
        for (int i = 0; i < lines.Length - 1; i++)
        {
            var o = JsonNode.Parse(lines[i])!;
            string key = o["custom_id"] is JsonValue c ? (string)c! : (string)o["id"]!;
            Assert.True(keys.Add(key), $"'{key}' written twice");
        }
    }

    [Fact]
    public void Sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run()
    {
        string input = WriteInput();
        string reference = _dir.File("reference.jsonl");
        Assert.Equal(0, RunToEnd(input, reference));
        var expected = Records(reference);
        Assert.Equal(ExpectedRecords, expected.Count);

        string output = _dir.File("killed.jsonl");
        var random = new Random(15);
        const int kills = 8;
        int killed = 0, killedMidJob = 0;
        for (int k = 0; k < kills; k++)
        {
            int before = File.Exists(output) ? File.ReadAllText(output).Count(c => c == '\n') : 0;
            using var p = StartBatch(input, output);
            if (k % 2 == 0) Thread.Sleep(random.Next(50, 1500)); // anywhere from before the model loads to its first answers
            else
            {
                // Mid-job: once 1 to 3 more answers are written, a few milliseconds later (often mid-generation).
                int target = before + random.Next(1, 4);
                var deadline = DateTime.UtcNow.AddSeconds(120);
                while (!p.HasExited && DateTime.UtcNow < deadline
                       && (!File.Exists(output) || File.ReadAllText(output).Count(c => c == '\n') < target)) Thread.Sleep(2);
                Thread.Sleep(random.Next(0, 30));
            }
            if (p.HasExited) break; // finished before this kill: nothing left to interrupt
            p.Kill(); // SIGKILL
            p.WaitForExit();
            killed++;
            AssertWholeLinesButTheLast(output);
            int written = File.Exists(output) ? File.ReadAllText(output).Count(c => c == '\n') : 0;
            if (written is > 0 and < ExpectedRecords) killedMidJob++;
            // Every third kill also leaves what a kill in the middle of write() would: half a line with no newline.
            if (k % 3 == 2 && File.Exists(output) && File.ReadAllLines(output) is { Length: > 0 } done)
                File.AppendAllText(output, done[^1][..(done[^1].Length / 2)]);
        }
        Assert.True(killed >= 3 && killedMidJob >= 1, $"the kills did not interrupt the job mid-way ({killed} kills, {killedMidJob} mid-job)");
        Assert.Equal(0, RunToEnd(input, output));
        string text = File.ReadAllText(output);
        Assert.EndsWith("\n", text);
        var actual = Records(output); // also asserts nothing twice
        Assert.Equal(expected.Count, File.ReadAllLines(output).Length);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (key, record) in expected) Assert.Equal(record, actual[key]);
    }

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int sig);

    [Fact]
    public void Sigterm_drains_the_requests_in_flight_exits_75_and_the_rerun_finishes()
    {
        string input = WriteInput();
        string output = _dir.File("termed.jsonl");
        using (var p = StartBatch(input, output, concurrency: 2))
        {
            var deadline = DateTime.UtcNow.AddSeconds(120);
            while (!p.HasExited && (!File.Exists(output) || File.ReadAllLines(output).Length < 2) && DateTime.UtcNow < deadline) Thread.Sleep(20);
            Assert.False(p.HasExited, "the batch finished before it could be stopped");
            Assert.Equal(0, kill(p.Id, 15)); // SIGTERM
            Assert.True(p.WaitForExit(60_000), "SIGTERM did not stop harpia batch within 60 s");
            Assert.Equal(BatchCommand.ExitInterrupted, p.ExitCode);
        }
        string text = File.ReadAllText(output);
        Assert.EndsWith("\n", text); // drained: whole lines only
        int stoppedAt = Records(output).Count;
        Assert.InRange(stoppedAt, 2, ExpectedRecords - 1);

        Assert.Equal(0, RunToEnd(input, output));
        var final = Records(output);
        Assert.Equal(ExpectedRecords, final.Count);
        Assert.Equal(ExpectedRecords, File.ReadAllLines(output).Length);
    }
}

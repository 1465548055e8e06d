namespace Harpia.Tests;

/// <summary>Locates the repository and the shared fixtures (../shared/fixtures beside the checkout).</summary>
public static class Fixtures
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string SharedFixtures => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "fixtures"));

    public static string Path_(params string[] parts) => Path.Combine([SharedFixtures, .. parts]);

    public static string Model(string name) => Path.Combine(SharedFixtures, "models", name);

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Harpia.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("cannot find Harpia.slnx above " + AppContext.BaseDirectory);
    }

    /// <summary>Deletes a per-process temporary directory when the test process exits (shared by many tests, so no
    /// single test can own it).</summary>
    public static void DeleteAtExit(string directory) => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        try { Directory.Delete(directory, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    };

    /// <summary>A fresh temporary directory, deleted when disposed.</summary>
    public sealed class TempDir : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "harpia-test-" + Guid.NewGuid().ToString("N"));
        public TempDir() => Directory.CreateDirectory(Path);
        public string File(string name) => System.IO.Path.Combine(Path, name);
        public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
    }
}

namespace Harpia;

/// <summary>
/// An error caused by what the user gave us (a file, a flag, a request), with a message that says what is
/// wrong and where. Front ends print <see cref="Exception.Message"/> alone, with no stack trace.
/// </summary>
public class HarpiaException : Exception
{
    public HarpiaException(string message) : base(message) { }
    public HarpiaException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A model or data file that is truncated, corrupt or not what it claims to be.</summary>
public sealed class InvalidModelFileException : HarpiaException
{
    public string FilePath { get; }
    public InvalidModelFileException(string filePath, string problem)
        : base($"{filePath}: {problem}") => FilePath = filePath;
}

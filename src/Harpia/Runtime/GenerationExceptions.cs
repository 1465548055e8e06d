namespace Harpia.Runtime;

// The three ways a generation can be refused or fail, as the runtime reports them to its front ends. The HTTP
// server maps them onto TGI's status codes; the CLI and IChatClient surface the message.

/// <summary>The request is invalid for this model/runtime (HTTP 422, TGI <c>validation</c>).</summary>
public sealed class GenerationValidationException(string message) : HarpiaException(message);

/// <summary>The runtime cannot take more work now (HTTP 429, TGI <c>overloaded</c>).</summary>
public sealed class GeneratorOverloadedException(string message) : HarpiaException(message);

/// <summary>The model failed while generating (HTTP 424, TGI <c>generation</c>).</summary>
public sealed class GenerationFailedException : HarpiaException
{
    public GenerationFailedException(string message) : base(message) { }
    public GenerationFailedException(string message, Exception inner) : base(message, inner) { }
}

using Harpia.Cli.Commands;

namespace Harpia.Tests.Server;

[Collection(ProcessWideStateCollection.Name)]   // sets HARPIA_API_KEY, which every server started meanwhile would read
public sealed class ServeSettingsTests
{
    [Fact]
    public void Api_key_comes_from_the_flag_else_from_HARPIA_API_KEY()
    {
        string? saved = Environment.GetEnvironmentVariable("HARPIA_API_KEY");
        try
        {
            Environment.SetEnvironmentVariable("HARPIA_API_KEY", null);
            Assert.Null(ServeCommand.ToServerOptions(new ServeCommand.Settings()).ApiKey);
            Environment.SetEnvironmentVariable("HARPIA_API_KEY", "from-env");
            Assert.Equal("from-env", ServeCommand.ToServerOptions(new ServeCommand.Settings()).ApiKey);
            Assert.Equal("from-flag", ServeCommand.ToServerOptions(new ServeCommand.Settings { ApiKey = "from-flag" }).ApiKey);
        }
        finally { Environment.SetEnvironmentVariable("HARPIA_API_KEY", saved); }
    }
}

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

[Collection(ProcessWideStateCollection.Name)]   // sets HARPIA_API_KEY
public sealed class ServeBlankApiKeyTests
{
    [Theory]
    [InlineData(" ")]
    [InlineData(" \t ")]
    public void Whitespace_only_api_key_is_refused_from_the_flag_the_variable_and_the_options(string blank)
    {
        string? saved = Environment.GetEnvironmentVariable("HARPIA_API_KEY");
        try
        {
            Environment.SetEnvironmentVariable("HARPIA_API_KEY", null);
            var fromFlag = Assert.Throws<Harpia.HarpiaException>(() => ServeCommand.ToServerOptions(new ServeCommand.Settings { ApiKey = blank }));
            Assert.Contains("--api-key", fromFlag.Message);
            Assert.DoesNotContain('\n', fromFlag.Message);
            Environment.SetEnvironmentVariable("HARPIA_API_KEY", blank);
            var fromEnv = Assert.Throws<Harpia.HarpiaException>(() => ServeCommand.ToServerOptions(new ServeCommand.Settings()));
            Assert.Contains("HARPIA_API_KEY", fromEnv.Message);
            var direct = Assert.Throws<Harpia.HarpiaException>(() => new Harpia.Server.ServerOptions { ApiKey = blank }.Resolve(2048));
            Assert.Contains("--api-key", direct.Message);
        }
        finally { Environment.SetEnvironmentVariable("HARPIA_API_KEY", saved); }
    }
}

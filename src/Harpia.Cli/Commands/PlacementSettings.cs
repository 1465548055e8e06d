using System.ComponentModel;
using Harpia.Placement;
using Spectre.Console.Cli;

namespace Harpia.Cli.Commands;

/// <summary>
/// The flags that say where a model runs, shared by serve, chat, generate, bench and perplexity: accelerate's
/// <c>device_map</c>/<c>max_memory</c> and TGI's <c>--num-shard</c>/<c>--sharded</c>.
/// </summary>
public abstract class PlacementSettings : CommandSettings
{
    [CommandOption("--device-map <MAP>"), Description("Where the embedding, each decoder layer and ln_f/lm_head run: auto (balanced over the GPUs, then CPU, then disk), balanced, sequential (fill device 0 first), or a JSON file of module → device (0, \"cpu\", \"disk\")")]
    public string? DeviceMap { get; init; }

    [CommandOption("--max-memory <LIMITS>"), Description("Most memory each device gives the model (weights + KV + activations + reserve), in accelerate's units: 0=75GiB,1=75GiB,cpu=200GiB,disk=1TB")]
    public string? MaxMemory { get; init; }

    [CommandOption("--num-shard <N>"), Description("Split the layers over GPUs 0…N-1 (TGI's flag); 1 on a machine without GPUs is the CPU")]
    public int? NumShard { get; init; }

    [CommandOption("--sharded [BOOL]"), Description("Split the layers over every GPU (TGI's flag)")]
    public FlagValue<bool>? Sharded { get; init; }

    [CommandOption("--device <DEVICE>"), Description("Where the whole model runs: cpu (default), cuda (GPU 0), cuda:N, or auto (a usable NVIDIA GPU, else the CPU)")]
    public string? Device { get; init; }

    public PlacementRequest Placement => new(DeviceMap, MaxMemory, NumShard, Sharded is { IsSet: true, Value: true }) { Device = Device };
}

using System.Text.Json;
using Harpia.Formats;

namespace Harpia.Quantization;

public sealed class BnbCheckpoint : CheckpointQuantization
{
    public override string Method => "bitsandbytes";
    public static BnbCheckpoint FromConfig(JsonElement qc, string where) => throw new HarpiaException($"{where}: bitsandbytes pending");
    public override QuantizedLinear? BindLinear(ITensorSource source, string stem, int outFeatures, int inFeatures) => null;
}

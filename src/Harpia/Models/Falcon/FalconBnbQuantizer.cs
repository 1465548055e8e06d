using Harpia.Quantization;
using Harpia.Tensors;

namespace Harpia.Models.Falcon;

/// <summary>
/// TGI's <c>--quantize bitsandbytes-nf4</c> / <c>bitsandbytes-fp4</c> for a loaded Falcon: every decoder linear stored in
/// f32/f16/bf16 becomes bitsandbytes 4-bit (blocksize 64, absmax double-quantized in blocks of 256), exactly the indices and
/// absmax blocks <c>quantize_4bit</c> gives; the embeddings, the (tied) output head and the norms stay as they are, as
/// bitsandbytes leaves them.
/// </summary>
public static unsafe class FalconBnbQuantizer
{
    public static FalconModel QuantizeOnLoad(FalconModel model, Bnb4Type type, bool doubleQuant = true)
    {
        var buffers = new List<NativeBuffer>();
        try
        {
            Linear Quantize(Linear linear)
            {
                var m = linear.Weight;
                var dtype = m.Type switch
                {
                    GgmlType.BF16 => Bnb4Dtype.BF16,
                    GgmlType.F16 => Bnb4Dtype.F16,
                    GgmlType.F32 => Bnb4Dtype.F32,
                    _ => (Bnb4Dtype?)null,
                };
                if (dtype is null) return linear; // already quantized: left alone, as for the GGUF schemes
                var w = new float[(long)m.Rows * m.Cols];
                for (int r = 0; r < m.Rows; r++) MatMul.DequantizeRow(m, r, w.AsSpan(r * m.Cols, m.Cols));
                var q = Bnb4Quantizer.Quantize(w, type, doubleQuant);
                var buffer = new NativeBuffer(q.Indices.Length);
                buffers.Add(buffer);
                q.Indices.CopyTo(buffer.Span);
                double bits = 4 + (doubleQuant ? 8.0 / Bnb4Quantizer.BlockSize + 32.0 / (Bnb4Quantizer.BlockSize * Bnb4Quantizer.NestedBlockSize) : 32.0 / Bnb4Quantizer.BlockSize);
                var matrix = new Bnb4Matrix(m.Rows, m.Cols, type, dtype.Value, Bnb4Quantizer.BlockSize, buffer.Pointer, Bnb4Codes.Code(type),
                    q.EffectiveAbsMax(), doubleQuant, bits, buffer);
                return linear with { Weight = new WeightMatrix(m.Name, matrix, buffer) };
            }
            var w = model.Weights;
            var weights = new FalconWeights
            {
                WordEmbeddings = w.WordEmbeddings,
                LmHead = w.LmHead,
                LnF = w.LnF,
                Layers = w.Layers.Select(l => new FalconLayerWeights
                {
                    LnAttn = l.LnAttn, LnMlp = l.LnMlp, InputLayernorm = l.InputLayernorm, PostAttentionLayernorm = l.PostAttentionLayernorm,
                    QueryKeyValue = Quantize(l.QueryKeyValue), Dense = Quantize(l.Dense),
                    DenseHTo4H = Quantize(l.DenseHTo4H), Dense4HToH = Quantize(l.Dense4HToH),
                }).ToArray(),
            };
            return new FalconModel(model.Config, weights, new QuantizedTensorSource(model.Source, new Dictionary<string, Formats.TensorEntry>(), buffers));
        }
        catch
        {
            foreach (var b in buffers) b.Dispose();
            throw;
        }
    }
}

using Harpia.Formats;
using Harpia.Tensors;

namespace Harpia.Models;

/// <summary>
/// A checkpoint's tensors as an architecture's weight binding reads them: by name, each checked against the shape
/// the config implies, so a wrong or missing tensor is an <see cref="InvalidModelFileException"/> naming it.
/// </summary>
public readonly struct CheckedTensors(ITensorSource source)
{
    public TensorEntry Get(string name) => source.Tensors.TryGetValue(name, out var t) ? t
        : throw new InvalidModelFileException(source.Path, $"tensor '{name}' is missing");

    public WeightMatrix Matrix(string name, int rows, int cols)
    {
        var t = Get(name);
        if (t.Shape.Length != 2 || t.Shape[0] != rows || t.Shape[1] != cols)
            throw new InvalidModelFileException(t.FilePath, $"tensor '{name}': shape {t.ShapeText}, expected [{rows}, {cols}] for this config");
        return t.AsMatrix();
    }

    public float[] Vector(string name, int length)
    {
        var t = Get(name);
        if (t.Shape.Length != 1 || t.Shape[0] != length)
            throw new InvalidModelFileException(t.FilePath, $"tensor '{name}': shape {t.ShapeText}, expected [{length}]");
        return t.ToFloatVector();
    }
}

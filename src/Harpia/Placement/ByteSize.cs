using System.Globalization;

namespace Harpia.Placement;

/// <summary>
/// Memory sizes as accelerate writes them in <c>max_memory</c>: a plain number of bytes, or a number with a unit —
/// GiB, MiB, KiB (powers of 2) or GB, MB, KB (powers of 10), case-insensitive; as in accelerate's
/// <c>convert_file_size_to_int</c>, a lower-case final "b" after a decimal unit means bits ("8Gb" = 1 GB). TiB and
/// TB are accepted too (a 200 GiB CPU budget is common; a terabyte of disk is as well).
/// </summary>
public static class ByteSize
{
    private static readonly (string Unit, double Factor)[] Units =
    [
        ("TIB", 1L << 40), ("GIB", 1L << 30), ("MIB", 1L << 20), ("KIB", 1L << 10),
        ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1),
    ];

    /// <summary>Parses <paramref name="text"/>; <paramref name="where"/> names the flag or field in the error.</summary>
    public static long Parse(string text, string where)
    {
        string s = text.Trim();
        string upper = s.ToUpperInvariant();
        double factor = 1;
        string number = s;
        foreach (var (unit, f) in Units)
        {
            if (!upper.EndsWith(unit, StringComparison.Ordinal)) continue;
            number = s[..^unit.Length].Trim();
            factor = f;
            // accelerate: "5Gb" (lower-case b after a decimal prefix) is gigabits.
            if (unit is "TB" or "GB" or "MB" or "KB" && s.EndsWith('b')) factor /= 8;
            break;
        }
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value) || value < 0)
            throw new HarpiaException($"{where}: '{text}' is not a memory size (write e.g. 75GiB, 80GB, 512MiB or a number of bytes)");
        double bytes = Math.Floor(value * factor);
        if (bytes > long.MaxValue / 2) throw new HarpiaException($"{where}: '{text}' is too large");
        return (long)bytes;
    }

    /// <summary>Bytes as GB (1e9) with two decimals below 100 GB, one above: "1.36 GB", "108.4 GB"; MB below 1 GB.</summary>
    public static string Format(long bytes)
    {
        double b = bytes;
        if (Math.Abs(b) >= 100e9) return (b / 1e9).ToString("0.0", CultureInfo.InvariantCulture) + " GB";
        if (Math.Abs(b) >= 1e9) return (b / 1e9).ToString("0.00", CultureInfo.InvariantCulture) + " GB";
        if (Math.Abs(b) >= 1e6) return (b / 1e6).ToString("0.0", CultureInfo.InvariantCulture) + " MB";
        if (Math.Abs(b) >= 1e3) return (b / 1e3).ToString("0.0", CultureInfo.InvariantCulture) + " KB";
        return bytes.ToString(CultureInfo.InvariantCulture) + " B";
    }
}

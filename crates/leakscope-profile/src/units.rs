//! Human-readable quantities, in the style of `go tool pprof`.

/// Formats a value of the given unit: bytes as B/kB/MB/GB (powers of 1024,
/// like pprof), anything else as a plain number.
pub fn format_value(value: i64, unit: &str) -> String {
    if unit != "bytes" {
        return value.to_string();
    }
    let magnitude = value.unsigned_abs() as f64;
    let sign = if value < 0 { "-" } else { "" };
    const UNITS: [(&str, f64); 4] = [
        ("GB", 1024.0 * 1024.0 * 1024.0),
        ("MB", 1024.0 * 1024.0),
        ("kB", 1024.0),
        ("B", 1.0),
    ];
    for (name, size) in UNITS {
        if magnitude >= size && size > 1.0 {
            return format!("{sign}{:.2}{name}", magnitude / size);
        }
    }
    format!("{value}B")
}

/// A share as a percentage with two decimals.
pub fn percent(part: i64, total: i64) -> String {
    if total == 0 {
        return "0.00%".to_string();
    }
    format!("{:.2}%", part as f64 * 100.0 / total as f64)
}

/// A count or size from a file, as the signed value pprof stores: values
/// past `i64::MAX` stay at `i64::MAX` instead of turning negative.
pub fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_like_pprof() {
        assert_eq!(format_value(512, "bytes"), "512B");
        assert_eq!(format_value(2048, "bytes"), "2.00kB");
        assert_eq!(format_value(-3 * 1024 * 1024, "bytes"), "-3.00MB");
        assert_eq!(format_value(42, "count"), "42");
        assert_eq!(percent(1, 4), "25.00%");
        assert_eq!(percent(1, 0), "0.00%");
        assert_eq!(
            format_value(clamp_i64(u64::MAX), "bytes"),
            "8589934592.00GB"
        );
        assert_eq!(clamp_i64(5), 5);
    }
}

//! Durations (`"500ms"`, `"5s"`, `"2m"`) and byte sizes (`"64MiB"`, `"1GB"`) written as strings.
//!
//! Both take a non-negative integer followed by a unit, with optional spaces between. There are
//! no bare numbers: a unit is always required, so `"500"` cannot mean two different things.

use std::fmt;
use std::time::Duration;

/// A number of bytes parsed from a size such as `"64MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, factor) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{name}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Splits `"64 MiB"` into `(64, "MiB")`.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, text[digits..].trim_start()))
}

/// Parses a duration: an integer and one of `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write an integer and a unit, e.g. \"500ms\", \"5s\", \"2m\", \"1h\", \"7d\""
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Parses a size: an integer and one of `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`,
/// `MiB`, `GiB`, `TiB` (powers of 1024); units are case-insensitive.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let bad = || {
        format!(
            "`{text}` is not a size: write an integer and a unit, e.g. \"64MiB\", \"1GB\", \"512KiB\""
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .map(ByteSize)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2 m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5", "s", "5 sec", "-1s", "1.5s", "5S"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(parse_size("1GB"), Ok(ByteSize(1_000_000_000)));
        assert_eq!(parse_size("10 kib"), Ok(ByteSize(10_240)));
        assert_eq!(parse_size("7B"), Ok(ByteSize(7)));
        for bad in ["", "64", "MiB", "1.5GB", "64MB/s", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1_000).to_string(), "1000B");
    }
}

//! Character sets of MySQL/MariaDB collation ids, and exact conversion of stored bytes to UTF-8.
//!
//! Guarantees: a conversion either reproduces exactly the characters the server stored or fails
//! with a [`CharsetError`] naming the charset; it is never lossy (no replacement characters).
//! utf8mb4/utf8mb3 are validated as UTF-8, latin1 is MySQL's latin1 (Windows-1252 with the five
//! undefined bytes mapped to C1 controls, as the server does), ascii must be 7-bit, and
//! ucs2/utf16/utf16le/utf32 are decoded as the server stores them. Other charsets decode only
//! values that are pure ASCII (identical in every ASCII-based charset) and fail otherwise.

/// Why stored bytes cannot be converted to UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// The bytes are not valid in the column's charset.
    #[error("invalid {charset} bytes at offset {offset}")]
    Invalid {
        /// Charset name.
        charset: &'static str,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The charset is one tidemark does not convert, and the value is not pure ASCII.
    #[error(
        "charset {charset} is not supported for non-ASCII values (supported: utf8mb4, utf8mb3, latin1, ascii, ucs2, utf16, utf16le, utf32); convert the column to utf8mb4"
    )]
    Unsupported {
        /// Charset name.
        charset: &'static str,
    },
}

/// A character set as far as decoding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// 4-byte UTF-8.
    Utf8mb4,
    /// 3-byte UTF-8 (`utf8` in older servers).
    Utf8mb3,
    /// MySQL latin1, i.e. Windows-1252.
    Latin1,
    /// 7-bit US-ASCII.
    Ascii,
    /// The `binary` pseudo-charset: bytes, not text.
    Binary,
    /// UCS-2, big-endian, BMP only.
    Ucs2,
    /// UTF-16, big-endian.
    Utf16,
    /// UTF-16, little-endian.
    Utf16le,
    /// UTF-32, big-endian.
    Utf32,
    /// Any other ASCII-based charset, by name: only pure-ASCII values convert.
    Other(&'static str),
}

/// Charset of every collation id from 1 to 323 (MySQL 8 and MariaDB agree on this range)
/// plus MariaDB's 576..=738, as inclusive `(first, last, charset)` ranges.
const RANGES: &[(u16, u16, &str)] = &[
    (1, 1, "big5"),
    (2, 2, "latin2"),
    (3, 3, "dec8"),
    (4, 4, "cp850"),
    (5, 5, "latin1"),
    (6, 6, "hp8"),
    (7, 7, "koi8r"),
    (8, 8, "latin1"),
    (9, 9, "latin2"),
    (10, 10, "swe7"),
    (11, 11, "ascii"),
    (12, 12, "ujis"),
    (13, 13, "sjis"),
    (14, 14, "cp1251"),
    (15, 15, "latin1"),
    (16, 16, "hebrew"),
    (18, 18, "tis620"),
    (19, 19, "euckr"),
    (20, 20, "latin7"),
    (21, 21, "latin2"),
    (22, 22, "koi8u"),
    (23, 23, "cp1251"),
    (24, 24, "gb2312"),
    (25, 25, "greek"),
    (26, 26, "cp1250"),
    (27, 27, "latin2"),
    (28, 28, "gbk"),
    (29, 29, "cp1257"),
    (30, 30, "latin5"),
    (31, 31, "latin1"),
    (32, 32, "armscii8"),
    (33, 33, "utf8mb3"),
    (34, 34, "cp1250"),
    (35, 35, "ucs2"),
    (36, 36, "cp866"),
    (37, 37, "keybcs2"),
    (38, 38, "macce"),
    (39, 39, "macroman"),
    (40, 40, "cp852"),
    (41, 42, "latin7"),
    (43, 43, "macce"),
    (44, 44, "cp1250"),
    (45, 46, "utf8mb4"),
    (47, 49, "latin1"),
    (50, 52, "cp1251"),
    (53, 53, "macroman"),
    (54, 55, "utf16"),
    (56, 56, "utf16le"),
    (57, 57, "cp1256"),
    (58, 59, "cp1257"),
    (60, 61, "utf32"),
    (62, 62, "utf16le"),
    (63, 63, "binary"),
    (64, 64, "armscii8"),
    (65, 65, "ascii"),
    (66, 66, "cp1250"),
    (67, 67, "cp1256"),
    (68, 68, "cp866"),
    (69, 69, "dec8"),
    (70, 70, "greek"),
    (71, 71, "hebrew"),
    (72, 72, "hp8"),
    (73, 73, "keybcs2"),
    (74, 74, "koi8r"),
    (75, 75, "koi8u"),
    (76, 76, "utf8mb3"),
    (77, 77, "latin2"),
    (78, 78, "latin5"),
    (79, 79, "latin7"),
    (80, 80, "cp850"),
    (81, 81, "cp852"),
    (82, 82, "swe7"),
    (83, 83, "utf8mb3"),
    (84, 84, "big5"),
    (85, 85, "euckr"),
    (86, 86, "gb2312"),
    (87, 87, "gbk"),
    (88, 88, "sjis"),
    (89, 89, "tis620"),
    (90, 90, "ucs2"),
    (91, 91, "ujis"),
    (92, 93, "geostd8"),
    (94, 94, "latin1"),
    (95, 96, "cp932"),
    (97, 98, "eucjpms"),
    (99, 99, "cp1250"),
    (101, 124, "utf16"),
    (128, 151, "ucs2"),
    (159, 159, "ucs2"),
    (160, 183, "utf32"),
    (192, 215, "utf8mb3"),
    (223, 223, "utf8mb3"),
    (224, 247, "utf8mb4"),
    (248, 250, "gb18030"),
    (255, 323, "utf8mb4"),
    (576, 578, "utf8mb3"),
    (608, 610, "utf8mb4"),
    (640, 642, "ucs2"),
    (672, 674, "utf16"),
    (736, 738, "utf32"),
];

/// MariaDB's UCA 14.0.0 collations (10.10+): 256 ids per charset from 2048.
const UCA1400_BLOCKS: [&str; 5] = ["utf8mb3", "utf8mb4", "ucs2", "utf16", "utf32"];

/// Charset name of a collation id, or `None` for an id neither MySQL nor MariaDB defines.
pub fn charset_name_of_collation(id: u16) -> Option<&'static str> {
    match id {
        // MariaDB NO PAD variants: 1024 + the id of the PAD SPACE collation of the same charset.
        1024..=1279 => charset_name_of_collation(id - 1024),
        2048..=3327 => Some(UCA1400_BLOCKS[usize::from((id - 2048) / 256)]),
        _ => {
            let i = RANGES.partition_point(|&(_, last, _)| last < id);
            match RANGES.get(i) {
                Some(&(first, _, name)) if first <= id => Some(name),
                _ => None,
            }
        }
    }
}

/// The charset the server calls `name` (`utf8` is `utf8mb3`, as collation ids name it), or
/// `None` when no collation id has it: the catalog's name read with the binlog's spelling.
pub fn charset_named(name: &str) -> Option<Charset> {
    let name = if name.eq_ignore_ascii_case("utf8") {
        "utf8mb3"
    } else {
        name
    };
    RANGES
        .iter()
        .map(|&(_, _, n)| n)
        .chain(UCA1400_BLOCKS)
        .find(|n| n.eq_ignore_ascii_case(name))
        .map(Charset::from_name)
}

impl Charset {
    /// The charset of a collation id, or `None` when the id is unknown.
    pub fn from_collation(id: u16) -> Option<Charset> {
        charset_name_of_collation(id).map(Charset::from_name)
    }

    /// The charset with this (MySQL) name; unknown names become [`Charset::Other`].
    pub fn from_name(name: &'static str) -> Charset {
        match name {
            "utf8mb4" => Charset::Utf8mb4,
            "utf8mb3" | "utf8" => Charset::Utf8mb3,
            "latin1" => Charset::Latin1,
            "ascii" => Charset::Ascii,
            "binary" => Charset::Binary,
            "ucs2" => Charset::Ucs2,
            "utf16" => Charset::Utf16,
            "utf16le" => Charset::Utf16le,
            "utf32" => Charset::Utf32,
            other => Charset::Other(other),
        }
    }

    /// The charset's MySQL name (`utf8mb4`, `latin1`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8mb4 => "utf8mb4",
            Charset::Utf8mb3 => "utf8mb3",
            Charset::Latin1 => "latin1",
            Charset::Ascii => "ascii",
            Charset::Binary => "binary",
            Charset::Ucs2 => "ucs2",
            Charset::Utf16 => "utf16",
            Charset::Utf16le => "utf16le",
            Charset::Utf32 => "utf32",
            Charset::Other(name) => name,
        }
    }

    /// True for the `binary` pseudo-charset (BINARY, VARBINARY, BLOB columns).
    pub fn is_binary(self) -> bool {
        self == Charset::Binary
    }

    /// [`Charset::decode`] of bytes the caller owns: UTF-8 is taken as it is, without a copy.
    pub fn decode_owned(self, bytes: Vec<u8>) -> Result<String, CharsetError> {
        match self {
            Charset::Utf8mb4 | Charset::Utf8mb3 | Charset::Binary => String::from_utf8(bytes)
                .map_err(|e| CharsetError::Invalid {
                    charset: self.name(),
                    offset: e.utf8_error().valid_up_to(),
                }),
            _ => self.decode(&bytes),
        }
    }

    /// Converts bytes stored in this charset to UTF-8, exactly or not at all.
    pub fn decode(self, bytes: &[u8]) -> Result<String, CharsetError> {
        let invalid = |offset| CharsetError::Invalid {
            charset: self.name(),
            offset,
        };
        match self {
            // Binary only reaches here for ENUM/SET labels, which are UTF-8 in practice.
            Charset::Utf8mb4 | Charset::Utf8mb3 | Charset::Binary => {
                match std::str::from_utf8(bytes) {
                    Ok(s) => Ok(s.to_owned()),
                    Err(e) => Err(invalid(e.valid_up_to())),
                }
            }
            Charset::Latin1 => Ok(decode_latin1(bytes)),
            Charset::Ascii => decode_ascii(bytes).map_err(invalid),
            // swe7 reuses ASCII positions for letters, so not even ASCII bytes are safe.
            Charset::Other("swe7") => Err(CharsetError::Unsupported { charset: "swe7" }),
            Charset::Other(charset) => {
                decode_ascii(bytes).map_err(|_| CharsetError::Unsupported { charset })
            }
            Charset::Ucs2 => decode_units(bytes, 2, invalid, |c| {
                let u = u16::from_be_bytes([c[0], c[1]]);
                char::from_u32(u32::from(u)).ok_or(())
            }),
            Charset::Utf32 => decode_units(bytes, 4, invalid, |c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).ok_or(())
            }),
            Charset::Utf16 => decode_utf16(bytes, u16::from_be_bytes).map_err(invalid),
            Charset::Utf16le => decode_utf16(bytes, u16::from_le_bytes).map_err(invalid),
        }
    }
}

/// Windows-1252 code points of bytes 0x80..=0x9F as MySQL's latin1 maps them.
const LATIN1_C1: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

/// MySQL latin1 to UTF-8; every byte is defined, so this cannot fail.
fn decode_latin1(bytes: &[u8]) -> String {
    if bytes.is_ascii() {
        return bytes.iter().map(|&b| char::from(b)).collect();
    }
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 2);
    for &b in bytes {
        match b {
            0x80..=0x9F => out.push(LATIN1_C1[usize::from(b - 0x80)]),
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// 7-bit ASCII to a String; the error is the offset of the first byte above 0x7F.
fn decode_ascii(bytes: &[u8]) -> Result<String, usize> {
    match bytes.iter().position(|b| !b.is_ascii()) {
        None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Some(offset) => Err(offset),
    }
}

/// Fixed-width code units (`width` bytes each) to chars.
fn decode_units(
    bytes: &[u8],
    width: usize,
    invalid: impl Fn(usize) -> CharsetError,
    unit: impl Fn(&[u8]) -> Result<char, ()>,
) -> Result<String, CharsetError> {
    if !bytes.len().is_multiple_of(width) {
        return Err(invalid(bytes.len() - bytes.len() % width));
    }
    let mut out = String::with_capacity(bytes.len());
    for (i, c) in bytes.chunks_exact(width).enumerate() {
        out.push(unit(c).map_err(|()| invalid(i * width))?);
    }
    Ok(out)
}

/// UTF-16 with surrogate pairs; the error is the byte offset of the first bad unit.
fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, usize> {
    if !bytes.len().is_multiple_of(2) {
        return Err(bytes.len() - 1);
    }
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    let mut out = String::with_capacity(bytes.len());
    let mut offset = 0;
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => {
                out.push(c);
                offset += if c.len_utf16() == 2 { 4 } else { 2 };
            }
            Err(_) => return Err(offset),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_charset_names_read_as_collation_ids_name_them() {
        assert_eq!(charset_named("utf8"), Some(Charset::Utf8mb3));
        assert_eq!(charset_named("UTF8MB4"), Some(Charset::Utf8mb4));
        assert_eq!(charset_named("binary"), Some(Charset::Binary));
        assert_eq!(charset_named("cp1251"), Some(Charset::Other("cp1251")));
        assert_eq!(charset_named("klingon"), None);
    }

    #[test]
    fn collation_ids_map_to_charsets() {
        assert_eq!(charset_name_of_collation(8), Some("latin1"));
        assert_eq!(charset_name_of_collation(33), Some("utf8mb3"));
        assert_eq!(charset_name_of_collation(45), Some("utf8mb4"));
        assert_eq!(charset_name_of_collation(63), Some("binary"));
        assert_eq!(charset_name_of_collation(255), Some("utf8mb4"));
        assert_eq!(charset_name_of_collation(309), Some("utf8mb4"));
        assert_eq!(charset_name_of_collation(323), Some("utf8mb4"));
        assert_eq!(charset_name_of_collation(248), Some("gb18030"));
        assert_eq!(charset_name_of_collation(1032), Some("latin1"));
        assert_eq!(charset_name_of_collation(1070), Some("utf8mb4"));
        assert_eq!(charset_name_of_collation(2304), Some("utf8mb4"));
        assert_eq!(charset_name_of_collation(2048), Some("utf8mb3"));
        assert_eq!(charset_name_of_collation(3271), Some("utf32"));
        assert_eq!(charset_name_of_collation(0), None);
        assert_eq!(charset_name_of_collation(17), None);
        assert_eq!(charset_name_of_collation(400), None);
        assert_eq!(charset_name_of_collation(u16::MAX), None);
        assert_eq!(Charset::from_collation(63), Some(Charset::Binary));
    }

    #[test]
    fn utf8_is_validated_never_lossy() {
        assert_eq!(
            Charset::Utf8mb4.decode("héllo 🐬".as_bytes()).unwrap(),
            "héllo 🐬"
        );
        let err = Charset::Utf8mb4.decode(b"ab\xffcd").unwrap_err();
        assert_eq!(
            err,
            CharsetError::Invalid {
                charset: "utf8mb4",
                offset: 2
            }
        );
        assert!(Charset::Utf8mb3.decode(b"\xe2\x82").is_err());
    }

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(Charset::Latin1.decode(b"caf\xe9").unwrap(), "café");
        assert_eq!(
            Charset::Latin1.decode(b"\x80\x81\x9f\xff").unwrap(),
            "€\u{81}Ÿÿ"
        );
        assert_eq!(Charset::Latin1.decode(b"").unwrap(), "");
    }

    #[test]
    fn ascii_rejects_high_bytes() {
        assert_eq!(Charset::Ascii.decode(b"abc").unwrap(), "abc");
        assert!(Charset::Ascii.decode(b"ab\x80").is_err());
    }

    #[test]
    fn other_charsets_decode_only_ascii() {
        let gbk = Charset::from_collation(28).unwrap();
        assert_eq!(gbk.decode(b"plain").unwrap(), "plain");
        let err = gbk.decode(b"\xc4\xe3").unwrap_err();
        assert_eq!(err, CharsetError::Unsupported { charset: "gbk" });
        assert!(err.to_string().contains("gbk"));
        assert!(Charset::from_collation(10).unwrap().decode(b"a").is_err());
    }

    #[test]
    fn wide_unicode_charsets_decode() {
        assert_eq!(Charset::Ucs2.decode(&[0, 0x41, 0x20, 0xac]).unwrap(), "A€");
        assert!(Charset::Ucs2.decode(&[0xd8, 0x00]).is_err());
        assert!(Charset::Ucs2.decode(&[0]).is_err());
        assert_eq!(
            Charset::Utf16
                .decode(&[0xd8, 0x3d, 0xdc, 0x2c, 0, 0x41])
                .unwrap(),
            "🐬A"
        );
        assert_eq!(
            Charset::Utf16le.decode(&[0x41, 0, 0xac, 0x20]).unwrap(),
            "A€"
        );
        assert!(Charset::Utf16.decode(&[0xdc, 0x2c]).is_err());
        assert_eq!(Charset::Utf32.decode(&[0, 1, 0xf4, 0x2c]).unwrap(), "🐬");
        assert!(Charset::Utf32.decode(&[0, 0x11, 0, 0]).is_err());
    }
}

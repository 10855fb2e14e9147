//! Source column types to Redshift column types (the table in docs/warehouse-redshift.md).
//!
//! Redshift sizes character types in bytes, not characters, and caps them: VARCHAR at 65535
//! bytes, VARBYTE at 1,024,000, DECIMAL at 38 digits. Each source type gets the narrowest
//! Redshift type that holds every value the source column can hold; where none can (longer
//! text, a wider DECIMAL), the widest one, and values past it are the oversize policy's
//! business when rows are written, never cut silently. Names are spelled as Redshift's
//! catalog (`format_type`) prints them, so a target column's current type compares as text.

use crate::event::ColumnType;

/// The longest text of a Postgres interval (`-178000000 years -11 mons -2147483648 days
/// -2562047788:00:54.775808` is 66 bytes), with room to spare.
const INTERVAL_TEXT_BYTES: u64 = 80;

/// The longest VARCHAR, in bytes.
pub const MAX_VARCHAR_BYTES: u64 = 65_535;
/// The longest VARBYTE, in bytes.
pub const MAX_VARBYTE_BYTES: u64 = 1_024_000;
/// The most digits a DECIMAL holds.
pub const MAX_DECIMAL_DIGITS: u8 = 38;
/// The most bytes one UTF-8 character takes: a source length in characters times this is
/// its length in bytes.
const UTF8_MAX_CHAR_BYTES: u64 = 4;

/// What a DECIMAL wider than Redshift's 38 digits (or a Postgres `numeric` without a
/// precision) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WideDecimal {
    /// Its exact digits as text (`VARCHAR`): nothing lost, no arithmetic in the warehouse.
    #[default]
    Text,
    /// `DECIMAL(38, s)`, keeping every integer digit and as many fraction digits as fit; a
    /// value with more fraction digits is refused by the oversize policy, not rounded.
    Decimal38,
}

/// The Redshift type that holds every value of `ty`, with `wide` deciding DECIMALs past 38
/// digits.
pub fn redshift_type(ty: &ColumnType, wide: WideDecimal) -> String {
    if let Some(limit) = value_limit(ty, wide) {
        return limit.type_name();
    }
    match ty {
        ColumnType::Bool => "boolean",
        ColumnType::Int { bits, unsigned } => match (bits, unsigned) {
            (8, _) | (16, false) => "smallint",
            (16, true) | (24, _) | (32, false) => "integer",
            // 64 bits unsigned has a limit: numeric(20,0).
            _ => "bigint",
        },
        ColumnType::Year => "smallint",
        ColumnType::Float => "real",
        ColumnType::Double => "double precision",
        ColumnType::Date => "date",
        ColumnType::DateTime { .. } => "timestamp without time zone",
        ColumnType::Timestamp { .. } | ColumnType::TimestampTz { .. } => "timestamp with time zone",
        ColumnType::TimeOfDay { .. } => "time without time zone",
        ColumnType::TimeTz { .. } => "time with time zone",
        // Every other type is sized, so `value_limit` named it.
        _ => "character varying(65535)",
    }
    .to_owned()
}

/// The most UTF-8 bytes a value of at most `source_bytes` bytes in `charset` takes: text is
/// loaded as UTF-8, and a character of a single-byte charset (latin1's `é`, cp1252's `€`)
/// takes up to 3 bytes in UTF-8, a 2-byte character of ucs2, utf16 or a CJK charset up to 3.
fn utf8_bytes(source_bytes: u64, charset: &str) -> u64 {
    let charset = charset.to_ascii_lowercase();
    match charset.as_str() {
        // UTF-8 already, or a subset of ASCII; utf32's 4 bytes a character stay 4 or fewer.
        "utf8mb4" | "utf8mb3" | "utf8" | "utf-8" | "ascii" | "binary" | "utf32" => source_bytes,
        "ucs2" | "utf16" | "utf16le" | "big5" | "gbk" | "gb2312" | "gb18030" | "sjis" | "cp932"
        | "ujis" | "eucjpms" | "euckr" => source_bytes.saturating_mul(3).div_ceil(2),
        // Single-byte charsets (latin1, cp1250, koi8r, ...) and any other.
        _ => source_bytes.saturating_mul(3),
    }
}

/// The byte length of the longest label.
fn longest(labels: &[String]) -> u64 {
    labels.iter().map(|l| l.len() as u64).max().unwrap_or(1)
}

/// The most bytes one SUPER value holds (Redshift's limit for a value loaded by COPY).
pub const MAX_SUPER_BYTES: u64 = 16 * 1024 * 1024;

/// What a value must fit in to load into the Redshift column [`redshift_type`] gives its
/// source column: the bounds the row encoder checks (the oversize policy's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `character varying(n)`: at most `n` bytes of UTF-8.
    Varchar(u64),
    /// `varbyte(n)`: at most `n` bytes.
    Varbyte(u64),
    /// `super`: JSON text of at most [`MAX_SUPER_BYTES`].
    Super,
    /// `numeric(precision, scale)`: at most `precision - scale` integer digits and `scale`
    /// fraction digits.
    Numeric {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
}

impl Limit {
    /// The Redshift type the limit belongs to, as [`redshift_type`] spells it.
    pub fn type_name(self) -> String {
        match self {
            Limit::Varchar(bytes) => format!("character varying({bytes})"),
            Limit::Varbyte(bytes) => format!("varbyte({bytes})"),
            Limit::Super => "super".into(),
            Limit::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
        }
    }
}

/// The size limit of the Redshift column [`redshift_type`] gives `ty` (with `wide` deciding
/// DECIMALs past 38 digits); `None` for the types whose values always fit (integers, floats,
/// booleans, dates and times).
pub fn value_limit(ty: &ColumnType, wide: WideDecimal) -> Option<Limit> {
    let varchar = |max_bytes: Option<u64>| {
        Limit::Varchar(
            max_bytes
                .unwrap_or(MAX_VARCHAR_BYTES)
                .clamp(1, MAX_VARCHAR_BYTES),
        )
    };
    Some(match ty {
        ColumnType::Bool
        | ColumnType::Year
        | ColumnType::Float
        | ColumnType::Double
        | ColumnType::Date
        | ColumnType::DateTime { .. }
        | ColumnType::Timestamp { .. }
        | ColumnType::TimestampTz { .. }
        | ColumnType::TimeOfDay { .. }
        | ColumnType::TimeTz { .. } => return None,
        ColumnType::Int {
            bits: 64,
            unsigned: true,
        } => Limit::Numeric {
            precision: 20,
            scale: 0,
        },
        ColumnType::Int { .. } => return None,
        ColumnType::Decimal { precision, scale } => {
            let (precision, scale) = (*precision, *scale);
            match wide {
                _ if precision > 0 && precision <= MAX_DECIMAL_DIGITS => {
                    Limit::Numeric { precision, scale }
                }
                WideDecimal::Text if precision > 0 => varchar(Some(u64::from(precision) + 2)),
                WideDecimal::Text => varchar(None),
                WideDecimal::Decimal38 if precision == 0 => Limit::Numeric {
                    precision: MAX_DECIMAL_DIGITS,
                    scale: 0,
                },
                WideDecimal::Decimal38 => Limit::Numeric {
                    precision: MAX_DECIMAL_DIGITS,
                    scale: MAX_DECIMAL_DIGITS
                        .saturating_sub(precision.saturating_sub(scale))
                        .min(scale),
                },
            }
        }
        ColumnType::Text { max_bytes, charset } => {
            varchar(max_bytes.map(|b| utf8_bytes(b, charset)))
        }
        ColumnType::Enum { labels } => varchar(Some(longest(labels))),
        ColumnType::Set { labels } => {
            let all: u64 = labels.iter().map(|l| l.len() as u64 + 1).sum();
            varchar(Some(all.saturating_sub(1).max(1)))
        }
        ColumnType::Character { length, .. } => {
            varchar(length.map(|n| u64::from(n) * UTF8_MAX_CHAR_BYTES))
        }
        ColumnType::Binary { max_bytes } => Limit::Varbyte(
            max_bytes
                .unwrap_or(MAX_VARBYTE_BYTES)
                .clamp(1, MAX_VARBYTE_BYTES),
        ),
        ColumnType::Geometry => Limit::Varbyte(MAX_VARBYTE_BYTES),
        ColumnType::Time { .. } => varchar(Some(17)),
        ColumnType::Interval => varchar(Some(INTERVAL_TEXT_BYTES)),
        ColumnType::Bit { width } => varchar(Some(u64::from(*width))),
        ColumnType::BitString { length, .. } => varchar(length.map(u64::from)),
        ColumnType::Json
        | ColumnType::JsonText
        | ColumnType::Array { .. }
        | ColumnType::Vector { .. } => Limit::Super,
        ColumnType::Uuid => varchar(Some(36)),
        ColumnType::Inet | ColumnType::Cidr => varchar(Some(43)),
        ColumnType::MacAddr => varchar(Some(17)),
        ColumnType::MacAddr8 => varchar(Some(23)),
        ColumnType::Money => varchar(Some(64)),
        ColumnType::PgNative { .. } => varchar(None),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn rs(ty: ColumnType) -> String {
        redshift_type(&ty, WideDecimal::Text)
    }

    #[test]
    fn integers_widen_to_hold_unsigned_ranges() {
        let int = |bits, unsigned| rs(ColumnType::Int { bits, unsigned });
        assert_eq!(int(8, true), "smallint");
        assert_eq!(int(16, true), "integer");
        assert_eq!(int(24, true), "integer");
        assert_eq!(int(32, true), "bigint");
        assert_eq!(int(64, false), "bigint");
        assert_eq!(int(64, true), "numeric(20,0)");
    }

    #[test]
    fn text_is_sized_in_bytes_and_capped() {
        let utf8mb4 = |max_bytes| {
            rs(ColumnType::Text {
                max_bytes,
                charset: Arc::from("utf8mb4"),
            })
        };
        // VARCHAR(100) in utf8mb4 holds 400 bytes.
        assert_eq!(utf8mb4(Some(400)), "character varying(400)");
        assert_eq!(utf8mb4(Some(4 * 16_777_215)), "character varying(65535)");
        assert_eq!(utf8mb4(None), "character varying(65535)");
        let pg_varchar = rs(ColumnType::Character {
            length: Some(32),
            varying: true,
        });
        assert_eq!(pg_varchar, "character varying(128)");
        let labels: Arc<[String]> = Arc::from(vec!["small".to_owned(), "medium".to_owned()]);
        assert_eq!(
            rs(ColumnType::Enum {
                labels: labels.clone()
            }),
            "character varying(6)"
        );
        assert_eq!(rs(ColumnType::Set { labels }), "character varying(12)");
    }

    #[test]
    fn decimals_past_38_digits_follow_the_policy() {
        let dec =
            |precision, scale, wide| redshift_type(&ColumnType::Decimal { precision, scale }, wide);
        assert_eq!(dec(12, 2, WideDecimal::Text), "numeric(12,2)");
        assert_eq!(dec(38, 10, WideDecimal::Decimal38), "numeric(38,10)");
        assert_eq!(dec(65, 30, WideDecimal::Text), "character varying(67)");
        // 35 integer digits leave 3 for the fraction.
        assert_eq!(dec(65, 30, WideDecimal::Decimal38), "numeric(38,3)");
        assert_eq!(dec(50, 0, WideDecimal::Decimal38), "numeric(38,0)");
        assert_eq!(dec(0, 0, WideDecimal::Text), "character varying(65535)");
        assert_eq!(dec(0, 0, WideDecimal::Decimal38), "numeric(38,0)");
    }

    #[test]
    fn json_binary_and_times_take_redshift_forms() {
        assert_eq!(rs(ColumnType::Json), "super");
        assert_eq!(rs(ColumnType::JsonText), "super");
        assert_eq!(
            rs(ColumnType::Array {
                element: Box::new(ColumnType::Bool)
            }),
            "super"
        );
        assert_eq!(
            rs(ColumnType::Binary {
                max_bytes: Some(16)
            }),
            "varbyte(16)"
        );
        assert_eq!(
            rs(ColumnType::Binary {
                max_bytes: Some(4_294_967_295)
            }),
            "varbyte(1024000)"
        );
        assert_eq!(rs(ColumnType::Time { fsp: 6 }), "character varying(17)");
        assert_eq!(
            rs(ColumnType::TimeOfDay { fsp: 6 }),
            "time without time zone"
        );
        assert_eq!(
            rs(ColumnType::Timestamp { fsp: 3 }),
            "timestamp with time zone"
        );
        assert_eq!(
            rs(ColumnType::DateTime { fsp: 0 }),
            "timestamp without time zone"
        );
        assert_eq!(rs(ColumnType::Bit { width: 8 }), "character varying(8)");
    }

    #[test]
    fn value_limits_name_the_types_redshift_type_gives() {
        let labels: Arc<[String]> = Arc::from(vec!["small".to_owned(), "medium".to_owned()]);
        let types = [
            ColumnType::Bool,
            ColumnType::Int {
                bits: 64,
                unsigned: true,
            },
            ColumnType::Int {
                bits: 32,
                unsigned: false,
            },
            ColumnType::Year,
            ColumnType::Double,
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
            ColumnType::Decimal {
                precision: 65,
                scale: 30,
            },
            ColumnType::Decimal {
                precision: 50,
                scale: 0,
            },
            ColumnType::Decimal {
                precision: 0,
                scale: 0,
            },
            ColumnType::Text {
                max_bytes: Some(400),
                charset: Arc::from("utf8mb4"),
            },
            ColumnType::Text {
                max_bytes: Some(4 * 16_777_215),
                charset: Arc::from("utf8mb4"),
            },
            ColumnType::Text {
                max_bytes: None,
                charset: Arc::from("utf8mb4"),
            },
            ColumnType::Enum {
                labels: labels.clone(),
            },
            ColumnType::Set { labels },
            ColumnType::Character {
                length: Some(32),
                varying: false,
            },
            ColumnType::Binary {
                max_bytes: Some(16),
            },
            ColumnType::Binary { max_bytes: None },
            ColumnType::Geometry,
            ColumnType::Date,
            ColumnType::DateTime { fsp: 6 },
            ColumnType::Timestamp { fsp: 3 },
            ColumnType::TimestampTz { fsp: 6 },
            ColumnType::Time { fsp: 6 },
            ColumnType::TimeOfDay { fsp: 6 },
            ColumnType::TimeTz { fsp: 6 },
            ColumnType::Interval,
            ColumnType::Bit { width: 8 },
            ColumnType::BitString {
                length: None,
                varying: true,
            },
            ColumnType::Json,
            ColumnType::JsonText,
            ColumnType::Vector { dimensions: None },
            ColumnType::Uuid,
            ColumnType::Inet,
            ColumnType::MacAddr8,
            ColumnType::Money,
            ColumnType::PgNative {
                name: Arc::from("int4range"),
                extension: false,
            },
        ];
        for wide in [WideDecimal::Text, WideDecimal::Decimal38] {
            for ty in &types {
                let name = redshift_type(ty, wide);
                match value_limit(ty, wide) {
                    Some(limit) => assert_eq!(limit.type_name(), name, "{ty:?} {wide:?}"),
                    None => assert!(
                        !name.contains('('),
                        "{ty:?} {wide:?}: {name} has a size but no limit"
                    ),
                }
            }
        }
    }
}

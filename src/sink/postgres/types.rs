//! Source column types to Postgres column types (the table in docs/warehouse-postgres.md).
//!
//! Names are spelled exactly as Postgres' `format_type()` prints them, so a target column's
//! current type can be compared with the wanted one as text.

use crate::event::ColumnType;

/// The Postgres type that holds every value of `ty` exactly.
pub fn postgres_type(ty: &ColumnType) -> String {
    postgres_type_where(ty, &|_| true)
}

/// The extension type `ty` needs in the warehouse (itself or as an array's element), if any.
pub fn extension_type(ty: &ColumnType) -> Option<&str> {
    match ty {
        ColumnType::PgNative {
            name,
            extension: true,
        } => Some(name),
        ColumnType::Array { element } => extension_type(element),
        _ => None,
    }
}

/// [`postgres_type`] in a warehouse that has only the extension types `has_type` accepts: a
/// missing one becomes `text`, which holds its values' text exactly (they lose only the type's
/// own operators).
pub fn postgres_type_where(ty: &ColumnType, has_type: &dyn Fn(&str) -> bool) -> String {
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int { bits, unsigned } => match (bits, unsigned) {
            (8, _) | (16, false) => "smallint",
            (16, true) | (24, _) | (32, false) => "integer",
            (32, true) | (64, false) => "bigint",
            _ => "numeric(20,0)",
        }
        .into(),
        ColumnType::Float => "real".into(),
        ColumnType::Double => "double precision".into(),
        ColumnType::Decimal { precision: 0, .. } => "numeric".into(),
        ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        ColumnType::Text { .. } | ColumnType::Enum { .. } | ColumnType::Set { .. } => "text".into(),
        ColumnType::Binary { .. } | ColumnType::Geometry => "bytea".into(),
        ColumnType::Date => "date".into(),
        ColumnType::DateTime { fsp } => format!("timestamp({fsp}) without time zone"),
        ColumnType::Timestamp { fsp } => format!("timestamp({fsp}) with time zone"),
        ColumnType::Time { .. } => "interval".into(),
        ColumnType::Year => "smallint".into(),
        ColumnType::Bit { .. } => "bit varying(64)".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::TimestampTz { fsp } => format!("timestamp({fsp}) with time zone"),
        ColumnType::TimeOfDay { fsp } => format!("time({fsp}) without time zone"),
        ColumnType::TimeTz { fsp } => format!("time({fsp}) with time zone"),
        ColumnType::Interval => "interval".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::JsonText => "json".into(),
        ColumnType::Inet => "inet".into(),
        ColumnType::Cidr => "cidr".into(),
        ColumnType::MacAddr => "macaddr".into(),
        ColumnType::MacAddr8 => "macaddr8".into(),
        // The text as the source printed it: see `ColumnType::Money`.
        ColumnType::Money => "text".into(),
        ColumnType::BitString {
            length: Some(n),
            varying: false,
        } => format!("bit({n})"),
        ColumnType::BitString {
            length: None,
            varying: false,
        } => "bit".into(),
        ColumnType::BitString {
            length: Some(n),
            varying: true,
        } => format!("bit varying({n})"),
        ColumnType::BitString {
            length: None,
            varying: true,
        } => "bit varying".into(),
        ColumnType::Character {
            length: Some(n),
            varying,
        } => format!("character{}({n})", if *varying { " varying" } else { "" }),
        ColumnType::Character {
            length: None,
            varying: true,
        } => "character varying".into(),
        ColumnType::Character {
            length: None,
            varying: false,
        } => "bpchar".into(),
        ColumnType::PgNative {
            name,
            extension: true,
        } if !has_type(name) => "text".into(),
        ColumnType::PgNative { name, .. } => name.to_string(),
        ColumnType::Array { element } => format!("{}[]", postgres_type_where(element, has_type)),
        ColumnType::Vector { .. } => "real[]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_widen_to_hold_unsigned_ranges() {
        let int = |bits, unsigned| postgres_type(&ColumnType::Int { bits, unsigned });
        assert_eq!(int(8, true), "smallint");
        assert_eq!(int(16, true), "integer");
        assert_eq!(int(32, true), "bigint");
        assert_eq!(int(64, false), "bigint");
        assert_eq!(int(64, true), "numeric(20,0)");
        assert_eq!(
            postgres_type(&ColumnType::Decimal {
                precision: 65,
                scale: 30
            }),
            "numeric(65,30)"
        );
        assert_eq!(
            postgres_type(&ColumnType::DateTime { fsp: 0 }),
            "timestamp(0) without time zone"
        );
    }

    #[test]
    fn postgres_source_types_land_in_the_same_types() {
        let array = |element| ColumnType::Array {
            element: Box::new(element),
        };
        assert_eq!(
            postgres_type(&array(ColumnType::Decimal {
                precision: 10,
                scale: 2
            })),
            "numeric(10,2)[]"
        );
        assert_eq!(
            postgres_type(&array(ColumnType::TimestampTz { fsp: 3 })),
            "timestamp(3) with time zone[]"
        );
        assert_eq!(
            postgres_type(&ColumnType::BitString {
                length: Some(8),
                varying: true
            }),
            "bit varying(8)"
        );
        assert_eq!(postgres_type(&ColumnType::Money), "text");
        assert_eq!(
            postgres_type(&ColumnType::TimeTz { fsp: 6 }),
            "time(6) with time zone"
        );
    }

    #[test]
    fn mysql_vectors_are_real_arrays() {
        let vector = ColumnType::Vector {
            dimensions: Some(3),
        };
        assert_eq!(postgres_type(&vector), "real[]");
    }
}

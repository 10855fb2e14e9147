//! Source column types to Postgres column types (the table in docs/warehouse-postgres.md).
//!
//! Names are spelled exactly as Postgres' `format_type()` prints them, so a target column's
//! current type can be compared with the wanted one as text.

use crate::event::ColumnType;

/// The Postgres type that holds every value of `ty` exactly.
pub fn postgres_type(ty: &ColumnType) -> String {
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
}

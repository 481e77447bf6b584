//! Extracting the `timestamp` range a query asks for from its pushed-down filters.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// An inclusive millisecond range; `(i64::MIN, i64::MAX)` when unconstrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// Narrows the range with every filter of the form `timestamp <op> literal`
    /// (either side), `timestamp BETWEEN a AND b`, and conjunctions of those.
    /// Other filters are ignored: the result is a superset, never too narrow.
    pub fn from_filters(column: &str, filters: &[Expr]) -> TimeRange {
        let mut range = TimeRange::ALL;
        for filter in filters {
            range.narrow(column, filter);
        }
        range
    }

    fn narrow(&mut self, column: &str, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.narrow(column, left);
                    self.narrow(column, right);
                    return;
                }
                if is_column(left, column) {
                    if let Some(bound) = literal_ms(right) {
                        self.apply(*op, bound);
                    }
                } else if is_column(right, column) {
                    if let (Some(bound), Some(op)) = (literal_ms(left), op.swap()) {
                        self.apply(op, bound);
                    }
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr, column) => {
                if let Some(bound) = literal_ms(low) {
                    self.apply(Operator::GtEq, bound);
                }
                if let Some(bound) = literal_ms(high) {
                    self.apply(Operator::LtEq, bound);
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, op: Operator, bound: Bound) {
        let ms = bound.floor_ms;
        let op = match (op, bound.exact) {
            (_, true) => op,
            // A bound between two milliseconds: keep both neighbours.
            (Operator::Gt | Operator::GtEq, false) => Operator::GtEq,
            (Operator::Lt | Operator::LtEq, false) => {
                return self.apply_exact(Operator::LtEq, ms + 1)
            }
            (_, false) => return,
        };
        self.apply_exact(op, ms)
    }

    fn apply_exact(&mut self, op: Operator, ms: i64) {
        match op {
            Operator::Gt => self.start = self.start.max(ms.saturating_add(1)),
            Operator::GtEq => self.start = self.start.max(ms),
            Operator::Lt => self.end = self.end.min(ms.saturating_sub(1)),
            Operator::LtEq => self.end = self.end.min(ms),
            Operator::Eq => {
                self.start = self.start.max(ms);
                self.end = self.end.min(ms);
            }
            _ => {}
        }
    }
}

/// The column itself, or a lossless cast of it to a millisecond-or-finer timestamp.
/// Lossy casts (to dates or seconds) are not looked through: their bounds would be
/// too narrow.
fn is_column(expr: &Expr, column: &str) -> bool {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let lossless = |data_type: &DataType| {
        matches!(
            data_type,
            DataType::Timestamp(
                TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
                _
            )
        )
    };
    match expr {
        Expr::Column(col) => col.name == column,
        Expr::Cast(cast) => lossless(cast.field.data_type()) && is_column(&cast.expr, column),
        Expr::TryCast(cast) => lossless(cast.field.data_type()) && is_column(&cast.expr, column),
        _ => false,
    }
}

/// A literal bound: its millisecond floor and whether it was a whole millisecond.
#[derive(Debug, Clone, Copy)]
struct Bound {
    floor_ms: i64,
    exact: bool,
}

/// A literal timestamp as a [`Bound`]; sub-millisecond literals are widened by `apply`.
fn literal_ms(expr: &Expr) -> Option<Bound> {
    let value = match expr {
        Expr::Literal(value, _) => value,
        Expr::Cast(cast) => return literal_ms(&cast.expr),
        _ => return None,
    };
    let (value, per_ms) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => (v.checked_mul(1000)?, 1),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1_000_000),
        _ => return None,
    };
    Some(Bound {
        floor_ms: value.div_euclid(per_ms),
        exact: value.rem_euclid(per_ms) == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn narrows_from_comparisons() {
        let ts = |ms: i64| lit(ScalarValue::TimestampMillisecond(Some(ms), None));
        let filters = vec![
            col("timestamp").gt_eq(ts(1000)),
            ts(5000).gt(col("timestamp")),
            col("value").gt(lit(1.0)),
        ];
        let range = TimeRange::from_filters("timestamp", &filters);
        assert_eq!(
            range,
            TimeRange {
                start: 1000,
                end: 4999
            }
        );
        assert_eq!(TimeRange::from_filters("timestamp", &[]), TimeRange::ALL);
        let as_date = datafusion::logical_expr::cast(
            col("timestamp"),
            datafusion::arrow::datatypes::DataType::Date32,
        );
        assert_eq!(
            TimeRange::from_filters("timestamp", &[as_date.lt_eq(ts(5))]),
            TimeRange::ALL
        );
        let micros = lit(ScalarValue::TimestampMicrosecond(Some(1500), None));
        let range = TimeRange::from_filters("timestamp", &[col("timestamp").lt(micros)]);
        assert_eq!(range.end, 2);
    }
}

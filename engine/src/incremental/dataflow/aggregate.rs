//! Aggregations. `sum`, `count`, `min`, `max` and `group` (unless the grouping keeps
//! the metric name) go in two levels: partial aggregates per (group, bucket of series),
//! then the group's value from its buckets' partials, so a changed series recomputes
//! its bucket and its group's partials, not the whole group. The rest reduce per group
//! with the ad hoc evaluator's own `aggregate`.

use promql_parser::parser::token::TokenType;
use promql_parser::parser::LabelModifier;
use vigil_queries::promql::{
    aggregate as aggregate_samples, grouping_labels, kahan_add, Sample, Value,
};
use vigil_storage::labels::METRIC_NAME;

use super::{rows_of, sample_of, Rows};
use crate::incremental::Element;

pub(super) fn aggregate<'scope>(
    op: TokenType,
    param: &Option<Value>,
    modifier: &Option<LabelModifier>,
    input: Rows<'scope>,
) -> Rows<'scope> {
    if param.is_none() && Partial::handles(op, modifier.as_ref()) {
        let modifier = modifier.clone();
        return input
            .map(move |row: Element| {
                let group = grouping_labels(&row.labels, modifier.as_ref());
                let bucket = row.labels.series_id() % AGGREGATION_BUCKETS;
                ((group, bucket), row.bits)
            })
            .reduce(|_key, input: &[(&u64, isize)], output| {
                let mut partial = Partial::default();
                for (bits, count) in input {
                    for _ in 0..(*count).max(0) {
                        partial.add(f64::from_bits(**bits));
                    }
                }
                output.push((partial.bits(), 1isize));
            })
            .map(|((group, _bucket), partial)| (group, partial))
            .reduce(move |_group, input: &[(&PartialBits, isize)], output| {
                let mut total = Partial::default();
                for (partial, count) in input {
                    for _ in 0..(*count).max(0) {
                        total.merge(&Partial::from_bits(partial));
                    }
                }
                if let Some(value) = total.value(op) {
                    output.push((value.to_bits(), 1isize));
                }
            })
            .map(|(group, bits)| Element {
                labels: group,
                drop_name: false,
                bits,
            });
    }
    let (param, modifier) = (param.clone(), modifier.clone());
    let group_modifier = modifier.clone();
    input
        .map(move |row: Element| {
            let group = grouping_labels(&row.labels, group_modifier.as_ref());
            (group, row)
        })
        .reduce(move |_group, input: &[(&Element, isize)], output| {
            let samples: Vec<Sample> = input
                .iter()
                .flat_map(|(row, count)| sample_of(row, *count))
                .collect();
            let result = aggregate_samples(op, samples, param.clone(), modifier.as_ref(), 0)
                .map(Value::Vector);
            for row in rows_of(result) {
                output.push((row, 1isize));
            }
        })
        .map(|(_group, row)| row)
}

/// Buckets per aggregation group for the two-level aggregations.
const AGGREGATION_BUCKETS: u64 = 256;

/// A partial `sum`/`count`/`min`/`max`/`group` over some of a group's samples: a
/// compensated sum (as the ad hoc `sum`), the count, and min/max with Prometheus' NaN
/// rule (NaN only if every value is NaN).
#[derive(Debug, Clone, Copy)]
struct Partial {
    sum: f64,
    compensation: f64,
    count: i64,
    min: f64,
    max: f64,
}

/// [`Partial`] as dataflow data (ordered, hashable bits).
type PartialBits = (u64, u64, i64, u64, u64);

impl Default for Partial {
    fn default() -> Self {
        Partial {
            sum: 0.0,
            compensation: 0.0,
            count: 0,
            min: f64::NAN,
            max: f64::NAN,
        }
    }
}

impl Partial {
    /// The aggregations computed from partials: those whose grouping cannot keep the
    /// metric name (with `by (__name__)` the name's delayed removal needs the members).
    fn handles(
        op: promql_parser::parser::token::TokenType,
        modifier: Option<&LabelModifier>,
    ) -> bool {
        use promql_parser::parser::token;
        let keeps_name = matches!(modifier, Some(LabelModifier::Include(list)) if list.labels.iter().any(|l| l == METRIC_NAME));
        !keeps_name
            && matches!(
                op.id(),
                token::T_SUM | token::T_COUNT | token::T_MIN | token::T_MAX | token::T_GROUP
            )
    }

    fn add(&mut self, value: f64) {
        kahan_add(&mut self.sum, &mut self.compensation, value);
        self.count += 1;
        if self.min.is_nan() || value < self.min {
            self.min = value;
        }
        if self.max.is_nan() || value > self.max {
            self.max = value;
        }
    }

    fn merge(&mut self, other: &Partial) {
        kahan_add(&mut self.sum, &mut self.compensation, other.sum);
        kahan_add(&mut self.sum, &mut self.compensation, other.compensation);
        self.count += other.count;
        if self.min.is_nan() || other.min < self.min {
            self.min = other.min;
        }
        if self.max.is_nan() || other.max > self.max {
            self.max = other.max;
        }
    }

    fn value(&self, op: promql_parser::parser::token::TokenType) -> Option<f64> {
        use promql_parser::parser::token;
        if self.count == 0 {
            return None;
        }
        Some(match op.id() {
            token::T_SUM if self.sum.is_infinite() => self.sum,
            token::T_SUM => self.sum + self.compensation,
            token::T_COUNT => self.count as f64,
            token::T_MIN => self.min,
            token::T_MAX => self.max,
            _ => 1.0,
        })
    }

    fn bits(&self) -> PartialBits {
        (
            self.sum.to_bits(),
            self.compensation.to_bits(),
            self.count,
            self.min.to_bits(),
            self.max.to_bits(),
        )
    }

    fn from_bits(bits: &PartialBits) -> Partial {
        Partial {
            sum: f64::from_bits(bits.0),
            compensation: f64::from_bits(bits.1),
            count: bits.2,
            min: f64::from_bits(bits.3),
            max: f64::from_bits(bits.4),
        }
    }
}

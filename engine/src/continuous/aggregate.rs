//! The aggregation operator's arithmetic: one group's current inputs (value rows with
//! their multiplicities, as differential's `reduce` hands them over) → the aggregates.
//! Each value row holds one datum per aggregate: its argument, or `Null` where the
//! aggregate's `FILTER` rejected the record (`count(*)` carries `true`).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;

use super::row::{Datum, Row, F64};
use super::sql::{AggKind, AggSpec};

/// The aggregates of one group.
pub fn aggregate(specs: &[AggSpec], input: &[(&Row, isize)]) -> Row {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| one(spec, input.iter().map(|(row, n)| (&row[i], *n as i64))))
        .collect()
}

fn one<'a>(spec: &AggSpec, values: impl Iterator<Item = (&'a Datum, i64)>) -> Datum {
    let values = values.filter(|(d, n)| !d.is_null() && *n > 0);
    match spec.kind {
        AggKind::Count => Datum::Int(values.map(|(_, n)| n).sum()),
        AggKind::CountDistinct | AggKind::ApproxDistinct => {
            let distinct: std::collections::BTreeSet<&Datum> = values.map(|(d, _)| d).collect();
            match spec.output_type {
                DataType::UInt64 => Datum::UInt(distinct.len() as u64),
                _ => Datum::Int(distinct.len() as i64),
            }
        }
        AggKind::Sum => {
            let integer = spec.output_type.is_integer();
            let (mut int, mut float, mut any) = (0i64, 0.0f64, false);
            for (d, n) in values {
                any = true;
                match d {
                    Datum::Int(v) if integer => int = int.wrapping_add(v.wrapping_mul(n)),
                    Datum::UInt(v) if integer => {
                        int = int.wrapping_add((*v as i64).wrapping_mul(n))
                    }
                    other => float += other.as_f64().unwrap_or(0.0) * n as f64,
                }
            }
            match (any, integer) {
                (false, _) => Datum::Null,
                (true, true) => Datum::Int(int),
                (true, false) => Datum::Float(F64(float)),
            }
        }
        AggKind::Min => values.map(|(d, _)| d).min().cloned().unwrap_or(Datum::Null),
        AggKind::Max => values.map(|(d, _)| d).max().cloned().unwrap_or(Datum::Null),
        AggKind::Avg => {
            let (mut sum, mut count) = (0.0, 0i64);
            for (d, n) in values {
                sum += d.as_f64().unwrap_or(0.0) * n as f64;
                count += n;
            }
            if count == 0 {
                Datum::Null
            } else {
                Datum::Float(F64(sum / count as f64))
            }
        }
        AggKind::Percentile(p) => {
            let mut sorted: BTreeMap<F64, i64> = BTreeMap::new();
            for (d, n) in values {
                if let Some(v) = d.as_f64() {
                    *sorted.entry(F64(v)).or_insert(0) += n;
                }
            }
            percentile(&sorted, p).map_or(Datum::Null, |v| Datum::Float(F64(v)))
        }
    }
}

/// The counting form of a group's values (`Stage::abelian`): the row count (a group
/// exists while it has rows, even if every aggregate's input is null), then per
/// aggregate the count of non-null values and their sum split in a high and a low half
/// (`v = hi·2³² + lo`, so no sum of up to 2³¹ values overflows), as a vector difference
/// that differential adds up.
pub fn totals(values: &Row) -> Vec<isize> {
    let mut out = Vec::with_capacity(1 + values.len() * 3);
    out.push(1);
    for value in values {
        let (count, integer) = match value {
            Datum::Null => (0, 0i64),
            Datum::Int(v) => (1, *v),
            Datum::UInt(v) => (1, (*v).min(i64::MAX as u64) as i64),
            _ => (1, 0),
        };
        out.extend([
            count,
            (integer >> 32) as isize,
            (integer & 0xffff_ffff) as isize,
        ]);
    }
    out
}

/// The aggregates from the running totals of `totals`.
pub fn from_totals(specs: &[AggSpec], totals: &[isize]) -> Row {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let at = |j: usize| totals.get(1 + 3 * i + j).copied().unwrap_or(0) as i128;
            let (count, sum) = (at(0), (at(1) << 32) + at(2));
            match spec.kind {
                AggKind::Count => Datum::Int(count as i64),
                AggKind::Sum if count == 0 => Datum::Null,
                AggKind::Sum => Datum::Int(sum.clamp(i64::MIN as i128, i64::MAX as i128) as i64),
                AggKind::Avg if count == 0 => Datum::Null,
                AggKind::Avg => Datum::Float(F64(sum as f64 / count as f64)),
                _ => Datum::Null,
            }
        })
        .collect()
}

/// The `p` quantile of a sorted multiset, interpolating between the two nearest ranks.
fn percentile(sorted: &BTreeMap<F64, i64>, p: f64) -> Option<f64> {
    let total: i64 = sorted.values().sum();
    if total == 0 {
        return None;
    }
    let rank = p * (total - 1) as f64;
    let (lower, upper) = (rank.floor() as i64, rank.ceil() as i64);
    let (mut seen, mut low, mut high) = (0i64, None, None);
    for (value, n) in sorted {
        if low.is_none() && lower < seen + n {
            low = Some(value.0);
        }
        if upper < seen + n {
            high = Some(value.0);
            break;
        }
        seen += n;
    }
    let (low, high) = (low?, high?);
    Some(low + (high - low) * (rank - lower as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: AggKind, output_type: DataType) -> AggSpec {
        AggSpec {
            kind,
            arg: None,
            filter: None,
            output_type,
            integer_arg: true,
        }
    }

    #[test]
    fn aggregates_honour_multiplicities_and_nulls() {
        let rows: Vec<Row> = [Datum::Int(3), Datum::Int(1), Datum::Null, Datum::Int(3)]
            .into_iter()
            .map(|d| vec![d])
            .collect();
        let input: Vec<(&Row, isize)> = vec![(&rows[0], 2), (&rows[1], 1), (&rows[2], 5)];
        let run = |kind, ty| aggregate(&[spec(kind, ty)], &input)[0].clone();
        assert_eq!(run(AggKind::Count, DataType::Int64), Datum::Int(3));
        assert_eq!(run(AggKind::CountDistinct, DataType::Int64), Datum::Int(2));
        assert_eq!(run(AggKind::Sum, DataType::Int64), Datum::Int(7));
        assert_eq!(run(AggKind::Min, DataType::Int64), Datum::Int(1));
        assert_eq!(run(AggKind::Max, DataType::Int64), Datum::Int(3));
        assert_eq!(
            run(AggKind::Avg, DataType::Float64),
            Datum::Float(F64(7.0 / 3.0))
        );
        assert_eq!(
            run(AggKind::Percentile(0.5), DataType::Float64),
            Datum::Float(F64(3.0))
        );
        assert_eq!(run(AggKind::Sum, DataType::Float64), Datum::Float(F64(7.0)));
        let empty: Vec<(&Row, isize)> = vec![(&rows[2], 1)];
        assert_eq!(
            aggregate(&[spec(AggKind::Sum, DataType::Int64)], &empty)[0],
            Datum::Null
        );
    }

    #[test]
    fn totals_add_up_to_the_aggregates() {
        let specs = [
            spec(AggKind::Count, DataType::Int64),
            spec(AggKind::Sum, DataType::Int64),
            spec(AggKind::Avg, DataType::Float64),
        ];
        let rows: Vec<Row> = [i64::MAX, -5, 7]
            .iter()
            .map(|v| vec![Datum::Int(*v), Datum::Int(*v), Datum::Int(*v)])
            .collect();
        let mut sum = vec![0isize; 10];
        for row in &rows[1..] {
            for (s, t) in sum.iter_mut().zip(totals(row)) {
                *s += t;
            }
        }
        assert_eq!(
            from_totals(&specs, &sum),
            vec![Datum::Int(2), Datum::Int(2), Datum::Float(F64(1.0))]
        );
        // Large values do not overflow the halves.
        let big: Vec<isize> = totals(&rows[0]).iter().map(|t| t * 3).collect();
        assert_eq!(from_totals(&specs[..2], &big)[1], Datum::Int(i64::MAX));
        let null = totals(&vec![Datum::Null, Datum::Null, Datum::Null]);
        assert_eq!(
            from_totals(&specs, &null),
            vec![Datum::Int(0), Datum::Null, Datum::Null]
        );
    }

    #[test]
    fn percentile_interpolates() {
        let sorted: BTreeMap<F64, i64> = [(F64(1.0), 1), (F64(2.0), 1), (F64(4.0), 2)].into();
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&sorted, 1.0), Some(4.0));
        assert_eq!(percentile(&sorted, 0.5), Some(3.0));
    }
}

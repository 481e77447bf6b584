//! Top k per partition (`row_number() OVER (PARTITION BY … ORDER BY …) <= k`): a
//! `reduce` per partition emitting its first k rows with their rank.

use std::sync::Arc;

use super::{Output, Row, Rows};
use crate::continuous::row::Datum;
use crate::continuous::sql::{SqlProgram, Stage};

pub(super) fn first_k<'scope>(program: Arc<SqlProgram>, rows: Rows<'scope>) -> Output<'scope> {
    rows.reduce(move |_key, values: &[(&Row, isize)], output| {
        if let Stage::TopK { order, k, .. } = &program.stage {
            let directions: Vec<(bool, bool)> =
                order.iter().map(|(_, asc, nulls)| (*asc, *nulls)).collect();
            for row in top_k(&directions, *k, values) {
                output.push((row, 1isize));
            }
        }
    })
    .map(|(_partition, row)| row)
}

/// The first `k` rows of a partition in the order of `directions` (ascending, nulls
/// first) over the leading order columns, ties broken by the rows' values; each comes out
/// as the row (the values after the order columns) with its rank appended.
fn top_k(directions: &[(bool, bool)], k: usize, values: &[(&Row, isize)]) -> Vec<Row> {
    use std::cmp::Ordering;
    let n = directions.len();
    let mut sorted: Vec<(&Row, isize)> = values.iter().map(|(r, c)| (*r, *c)).collect();
    sorted.sort_by(|(a, _), (b, _)| {
        for (i, (asc, nulls_first)) in directions.iter().enumerate() {
            let ordering = match (&a[i], &b[i]) {
                (Datum::Null, Datum::Null) => Ordering::Equal,
                (Datum::Null, _) if *nulls_first => Ordering::Less,
                (Datum::Null, _) => Ordering::Greater,
                (_, Datum::Null) if *nulls_first => Ordering::Greater,
                (_, Datum::Null) => Ordering::Less,
                (x, y) if *asc => x.cmp(y),
                (x, y) => y.cmp(x),
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        a[n..].cmp(&b[n..])
    });
    let mut out = Vec::with_capacity(k);
    for (row, count) in sorted {
        for _ in 0..count.max(0) {
            if out.len() == k {
                return out;
            }
            let mut ranked: Row = row[n..].to_vec();
            ranked.push(Datum::UInt(out.len() as u64 + 1));
            out.push(ranked);
        }
    }
    out
}

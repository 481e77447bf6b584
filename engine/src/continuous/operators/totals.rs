//! Counting programs (every aggregate a count, or a sum or average of integers): per
//! group only running totals, a differential `count_total` over the rows' vector
//! differences, so an update costs the same however large its group is.

use std::sync::Arc;

use differential_dataflow::operators::CountTotal;

use super::{Output, Rows};
use crate::continuous::aggregate::{from_totals, totals};
use crate::continuous::sql::{SqlProgram, Stage};

pub(super) fn running_totals<'scope>(
    program: Arc<SqlProgram>,
    rows: Rows<'scope>,
) -> Output<'scope> {
    rows.explode(|(key, values)| Some((key, totals(&values))))
        .count_total()
        .map(move |(mut key, totals)| {
            if let Stage::Aggregate { aggs, .. } = &program.stage {
                key.extend(from_totals(aggs, &totals));
            }
            key
        })
}

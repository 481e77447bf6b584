//! The other aggregations (min, max, distinct counts, percentiles, sums of floats): a
//! differential `reduce` per group over the group's values (`aggregate.rs` computes
//! them).

use std::sync::Arc;

use super::{Output, Row, Rows};
use crate::continuous::aggregate::aggregate as compute;
use crate::continuous::sql::{SqlProgram, Stage};

pub(super) fn aggregate<'scope>(program: Arc<SqlProgram>, rows: Rows<'scope>) -> Output<'scope> {
    rows.reduce(move |_key, values: &[(&Row, isize)], output| {
        if let Stage::Aggregate { aggs, .. } = &program.stage {
            output.push((compute(aggs, values), 1isize));
        }
    })
    .map(|(mut key, aggs)| {
        key.extend(aggs);
        key
    })
}

//! The inner equi-join of two streams: each side's rows keyed by the join keys, joined
//! by differential's `join` (each side keeps its rows for the horizon), and each joined
//! row through the join's filter (the other `ON` conditions and the `WHERE`) and the
//! stage's first half.

use std::sync::Arc;

use datafusion::error::DataFusionError;

use super::{Row, Rows};
use crate::continuous::runner::{filtered, staged};
use crate::continuous::sql::{From, SqlProgram};

pub(super) fn join<'scope>(
    program: Arc<SqlProgram>,
    left: Rows<'scope>,
    right: Rows<'scope>,
) -> Rows<'scope> {
    left.join(right).flat_map(move |(_key, (mut left, right))| {
        left.extend(right);
        joined(&program, left).unwrap_or_default()
    })
}

/// A joined row through the join's filter and the stage's first half.
fn joined(program: &SqlProgram, row: Row) -> Result<Vec<(Row, Row)>, DataFusionError> {
    let From::Join { filter, schema, .. } = &program.from else {
        return Ok(Vec::new());
    };
    let batch = crate::continuous::row::to_batch(schema, std::iter::once(&row))?;
    let batch = filtered(filter, &batch)?;
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    staged(&program.stage, &batch)
}

//! Per-element operators: each output element depends on one input element (and, for
//! `time()`, the epoch's clock), so they are maps and filters with no state.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use promql_parser::parser::BinaryExpr;
use vigil_queries::promql::{eval_binary, LabelRewrite, Sample, Value};
use vigil_storage::LabelSet;

use super::{rows_of, sample_of, Rows};
use crate::incremental::{Element, Elementwise};

/// A constant: one element without labels from the first epoch on.
pub(super) fn constant<'scope>(
    value: f64,
    unit: &VecCollection<'scope, u64, (), isize>,
) -> Rows<'scope> {
    let row = Element {
        labels: LabelSet::default(),
        drop_name: false,
        bits: value.to_bits(),
    };
    unit.clone().map(move |()| row.clone())
}

/// A vector against `time()`: each element with the epoch's evaluation time.
pub(super) fn clock<'scope>(
    binary: &Arc<BinaryExpr>,
    time_left: bool,
    input: Rows<'scope>,
    clock: &VecCollection<'scope, u64, i64, isize>,
) -> Rows<'scope> {
    let binary = binary.clone();
    input
        .map(|row: Element| ((), row))
        .join(clock.clone().map(|at| ((), at)))
        .flat_map(move |((), (row, at))| {
            let now = Value::Scalar(at as f64 / 1000.0);
            let vector = Value::Vector(sample_of(&row, 1).collect());
            rows_of(if time_left {
                eval_binary(&binary, now, vector, 0)
            } else {
                eval_binary(&binary, vector, now, 0)
            })
        })
}

/// `label_replace` / `label_join`.
pub(super) fn relabel<'scope>(rewrite: &Arc<LabelRewrite>, input: Rows<'scope>) -> Rows<'scope> {
    let rewrite = rewrite.clone();
    input.map(move |row: Element| {
        let mut sample = Sample {
            labels: row.labels,
            t: 0,
            f: f64::from_bits(row.bits),
            drop_name: row.drop_name,
        };
        rewrite.apply(&mut sample);
        Element {
            labels: sample.labels,
            drop_name: sample.drop_name,
            bits: row.bits,
        }
    })
}

/// A per-element function (`abs`, `ln`, `clamp` …); it drops the metric name.
pub(super) fn map<'scope>(function: &Elementwise, input: Rows<'scope>) -> Rows<'scope> {
    let function = function.clone();
    input.flat_map(move |row: Element| {
        (!function.empty).then(|| Element {
            labels: row.labels,
            drop_name: true,
            bits: (function.op)(f64::from_bits(row.bits)).to_bits(),
        })
    })
}

/// Vector/scalar arithmetic and comparisons, element by element.
pub(super) fn scalar<'scope>(
    binary: &Arc<BinaryExpr>,
    scalar: f64,
    scalar_left: bool,
    input: Rows<'scope>,
) -> Rows<'scope> {
    let binary = binary.clone();
    input.flat_map(move |row: Element| {
        let vector = Value::Vector(sample_of(&row, 1).collect());
        let result = if scalar_left {
            eval_binary(&binary, Value::Scalar(scalar), vector, 0)
        } else {
            eval_binary(&binary, vector, Value::Scalar(scalar), 0)
        };
        rows_of(result)
    })
}

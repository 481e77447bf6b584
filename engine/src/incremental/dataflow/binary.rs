//! Vector matching and set operators, per matching signature. One-to-one matching is a
//! differential join on the signature (a change touches only its own match); more
//! than one element per signature on a side is Prometheus' matching error (or not,
//! depending on the other side), flagged so the ad hoc evaluator decides at that
//! instant. `group_left`/`group_right` and the set operators reduce per signature with
//! the ad hoc evaluator's own `eval_binary`.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use promql_parser::parser::{BinaryExpr, VectorMatchCardinality};
use vigil_queries::promql::{eval_binary, is_set, matching_signature, Sample, Value};
use vigil_storage::LabelSet;

use super::{error_row, rows_of, sample_of, Rows};
use crate::incremental::Element;

pub(super) fn binary<'scope>(
    binary: &Arc<BinaryExpr>,
    on: bool,
    names: &[String],
    lhs: Rows<'scope>,
    rhs: Rows<'scope>,
) -> Rows<'scope> {
    let binary = binary.clone();
    let names = Arc::new(names.to_vec());
    let (lhs_names, rhs_names) = (names.clone(), names);
    let one_to_one = !is_set(binary.op)
        && binary
            .modifier
            .as_ref()
            .is_none_or(|m| matches!(m.card, VectorMatchCardinality::OneToOne));
    if one_to_one {
        let left =
            lhs.map(move |row: Element| (matching_signature(&row.labels, on, &lhs_names), row));
        let right =
            rhs.map(move |row: Element| (matching_signature(&row.labels, on, &rhs_names), row));
        // Prometheus fails on two samples with one signature on the right ("one") side
        // always, on the left only where the right side matches.
        let duplicated = |side: VecCollection<'scope, u64, (LabelSet, Element), isize>| {
            side.map(|(signature, _row)| signature)
                .count()
                .flat_map(|(signature, n)| (n > 1).then_some((signature, ())))
        };
        let flag = || error_row("several series for one match group".into());
        let right_signatures = right.clone().map(|(signature, _row)| signature).distinct();
        let left_flags = duplicated(left.clone())
            .semijoin(right_signatures)
            .map(move |_| flag());
        let right_flags = duplicated(right.clone()).map(move |_| flag());
        let joined = left
            .join_map(right, move |_signature, l: &Element, r: &Element| {
                rows_of(eval_binary(
                    &binary,
                    Value::Vector(sample_of(l, 1).collect()),
                    Value::Vector(sample_of(r, 1).collect()),
                    0,
                ))
            })
            .flat_map(|rows| rows);
        return joined.concat(left_flags).concat(right_flags);
    }
    let left =
        lhs.map(move |row: Element| (matching_signature(&row.labels, on, &lhs_names), (0u8, row)));
    let right =
        rhs.map(move |row: Element| (matching_signature(&row.labels, on, &rhs_names), (1u8, row)));
    left.concat(right)
        .reduce(
            move |_signature, input: &[(&(u8, Element), isize)], output| {
                let mut sides: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
                for ((side, row), count) in input {
                    sides[usize::from(*side)].extend(sample_of(row, *count));
                }
                let [l, r] = sides;
                let result = eval_binary(&binary, Value::Vector(l), Value::Vector(r), 0);
                for row in rows_of(result) {
                    output.push((row, 1isize));
                }
            },
        )
        .map(|(_signature, row)| row)
}

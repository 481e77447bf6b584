//! `absent(v)` / `absent_over_time(v[r])`: one element with the selector's labels
//! while the input is empty (the unit row, minus the input's existence).

use differential_dataflow::VecCollection;
use vigil_storage::LabelSet;

use super::Rows;
use crate::incremental::Element;

pub(super) fn absent<'scope>(
    labels: &LabelSet,
    input: Rows<'scope>,
    unit: &VecCollection<'scope, u64, (), isize>,
) -> Rows<'scope> {
    let exists = input.map(|_row: Element| ()).distinct();
    let row = Element {
        labels: labels.clone(),
        drop_name: false,
        bits: 1f64.to_bits(),
    };
    unit.clone()
        .map(move |()| ((), row.clone()))
        .antijoin(exists)
        .map(|((), row)| row)
}

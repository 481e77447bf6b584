//! A continuous SQL query's dataflow, one file per operator kind: the inputs (one per
//! table read), the equi-join of two streams (`join.rs`), then one of the stages —
//! projection (a map), running totals per group for counting programs (`totals.rs`), a
//! reduce per group for the other aggregations (`reduce.rs`), the first k rows per
//! partition (`top_k.rs`) — and the output gathered on the feeding worker.

mod join;
mod reduce;
mod top_k;
mod totals;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::input::InputSession;
use timely::dataflow::operators::{Exchange, Inspect, Probe};

use super::row::Row;
use super::sql::{From, SqlProgram, Stage};

/// The dataflow of one query on one worker: its inputs (only the feeding worker's are
/// kept), the probe, and what reached the output (gathered on the feeding worker).
pub(super) struct Dataflow {
    pub inputs: Vec<InputSession<u64, (Row, Row), isize>>,
    pub probe: timely::dataflow::ProbeHandle<u64>,
    pub sink: Rc<RefCell<Vec<(Row, i64)>>>,
}

/// Builds the query's dataflow on `worker`; its output is exchanged to worker `owner`.
pub(super) fn build(
    worker: &mut timely::worker::Worker,
    program: &Arc<SqlProgram>,
    owner: usize,
) -> Dataflow {
    let sides = program.from.sides().len();
    let mut inputs: Vec<InputSession<u64, (Row, Row), isize>> =
        (0..sides).map(|_| InputSession::new()).collect();
    let probe = timely::dataflow::ProbeHandle::new();
    let sink: Rc<RefCell<Vec<(Row, i64)>>> = Rc::default();
    worker.dataflow::<u64, _, _>(|scope| {
        let collections: Vec<_> = inputs.iter_mut().map(|i| i.to_collection(scope)).collect();
        // (key, values) rows: a table's straight from the first stage; a join's from
        // the joined rows, filtered and evaluated one by one.
        let rows = match &program.from {
            From::Table(_) => collections[0].clone(),
            From::Join { .. } => join::join(
                program.clone(),
                collections[0].clone(),
                collections[1].clone(),
            ),
        };
        let output = match &program.stage {
            Stage::Project(_) => rows.map(|(row, _)| row),
            stage @ Stage::Aggregate { .. } if stage.abelian() => {
                totals::running_totals(program.clone(), rows)
            }
            Stage::TopK { .. } => top_k::first_k(program.clone(), rows),
            Stage::Aggregate { .. } => reduce::aggregate(program.clone(), rows),
        };
        let sink = sink.clone();
        output
            .inner
            .exchange(move |_| owner as u64)
            .inspect(move |(row, _time, diff)| {
                sink.borrow_mut().push((row.clone(), *diff as i64));
            })
            .probe_with(&probe);
    });
    Dataflow {
        inputs,
        probe,
        sink,
    }
}

/// (key, values) rows as the stages take them.
type Rows<'scope> = differential_dataflow::VecCollection<'scope, u64, (Row, Row), isize>;
/// Result rows.
type Output<'scope> = differential_dataflow::VecCollection<'scope, u64, Row, isize>;

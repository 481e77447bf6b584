//! The dataflow: how a [`Program`]'s nodes become differential operators, one file per
//! operator kind, and each worker's share of it as the service hosts it.
//!
//! | file | operators |
//! |---|---|
//! | `elementwise.rs` | constants, `time()`, relabelling, per-element functions, vector/scalar arithmetic and comparisons (maps and filters) |
//! | `aggregate.rs` | aggregations: two-level partials for `sum`/`count`/`min`/`max`/`group`, a reduce per group for the rest |
//! | `histogram.rs` | `histogram_quantile`: a reduce per histogram |
//! | `absent.rs` | `absent`: the unit row minus the input's existence |
//! | `binary.rs` | vector matching and set operators: a join, or a reduce, on the matching signature |

mod absent;
mod aggregate;
mod binary;
mod elementwise;
mod histogram;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::InputSession;
use differential_dataflow::VecCollection;
use vigil_queries::promql::{EvalError, Sample, Value};
use vigil_storage::LabelSet;

use super::driver::Driver;
use super::{Command, Element, Node, Program, ERROR_LABEL};

type Rows<'scope> = VecCollection<'scope, u64, Element, isize>;

fn error_row(message: String) -> Element {
    let labels = LabelSet::from_pairs([(ERROR_LABEL, message.as_str())]).unwrap_or_default();
    Element {
        labels,
        drop_name: false,
        bits: 0,
    }
}

/// An element as the ad hoc evaluator's sample, `copies` times.
fn sample_of(row: &Element, copies: isize) -> impl Iterator<Item = Sample> + '_ {
    (0..copies.max(0)).map(move |_| Sample {
        labels: row.labels.clone(),
        t: 0,
        f: f64::from_bits(row.bits),
        drop_name: row.drop_name,
    })
}

/// The ad hoc evaluator's answer as elements (an error as an error row).
fn rows_of(value: Result<Value, EvalError>) -> Vec<Element> {
    match value {
        Ok(Value::Vector(samples)) => samples
            .into_iter()
            .map(|s| Element {
                labels: s.labels,
                drop_name: s.drop_name,
                bits: s.f.to_bits(),
            })
            .collect(),
        Ok(other) => vec![error_row(format!("unexpected {}", other.type_name()))],
        Err(err) => vec![error_row(err.to_string())],
    }
}

/// The dataflow's inputs as `build` sees them.
struct Inputs<'scope> {
    leaves: Vec<Rows<'scope>>,
    /// One `()` from the first epoch on (the source of `absent`'s sample).
    unit: VecCollection<'scope, u64, (), isize>,
    /// One element: the current epoch's evaluation time, ms (`time()`).
    clock: VecCollection<'scope, u64, i64, isize>,
}

/// An operand's rows without its error rows, which go to `errors` (leaves and
/// constants have none).
fn operand<'scope>(
    node: &Node,
    inputs: &Inputs<'scope>,
    memo: &mut HashMap<String, Rows<'scope>>,
    errors: &mut Vec<Rows<'scope>>,
) -> Rows<'scope> {
    let rows = build(node, inputs, memo);
    if matches!(node, Node::Leaf(_) | Node::Constant { .. }) {
        return rows;
    }
    errors.push(
        rows.clone()
            .filter(|row: &Element| row.labels.get(ERROR_LABEL).is_some()),
    );
    rows.filter(|row: &Element| row.labels.get(ERROR_LABEL).is_none())
}

/// Builds `node`'s collection (once per distinct sub-expression).
fn build<'scope>(
    node: &Node,
    inputs: &Inputs<'scope>,
    memo: &mut HashMap<String, Rows<'scope>>,
) -> Rows<'scope> {
    let key = match node {
        Node::Leaf(index) => return inputs.leaves[*index].clone(),
        Node::Constant { key, .. }
        | Node::Clock { key, .. }
        | Node::Relabel { key, .. }
        | Node::HistogramQuantile { key, .. }
        | Node::Map { key, .. }
        | Node::Absent { key, .. }
        | Node::Scalar { key, .. }
        | Node::Aggregate { key, .. }
        | Node::Binary { key, .. } => key,
    };
    if let Some(built) = memo.get(key) {
        return built.clone();
    }
    let mut errors = Vec::new();
    let mut operand_of = |input: &Node| operand(input, inputs, memo, &mut errors);
    let built = match node {
        Node::Leaf(index) => inputs.leaves[*index].clone(),
        Node::Constant { value, .. } => elementwise::constant(*value, &inputs.unit),
        Node::Clock {
            binary,
            time_left,
            input,
            ..
        } => elementwise::clock(binary, *time_left, operand_of(input), &inputs.clock),
        Node::Relabel { rewrite, input, .. } => elementwise::relabel(rewrite, operand_of(input)),
        Node::Map {
            function, input, ..
        } => elementwise::map(function, operand_of(input)),
        Node::Scalar {
            binary,
            scalar,
            scalar_left,
            input,
            ..
        } => elementwise::scalar(binary, *scalar, *scalar_left, operand_of(input)),
        Node::HistogramQuantile { phi, input, .. } => histogram::quantile(*phi, operand_of(input)),
        Node::Absent { labels, input, .. } => {
            absent::absent(labels, operand_of(input), &inputs.unit)
        }
        Node::Aggregate {
            op,
            param,
            modifier,
            input,
            ..
        } => aggregate::aggregate(*op, param, modifier, operand_of(input)),
        Node::Binary {
            binary,
            on,
            names,
            lhs,
            rhs,
            ..
        } => {
            let (left, right) = (operand_of(lhs), operand_of(rhs));
            binary::binary(binary, *on, names, left, right)
        }
    };
    // Errors of the operands pass through to the rule's answer, whatever the
    // operator (a comparison or an aggregation would otherwise drop them).
    let built = errors.into_iter().fold(built, |built, e| built.concat(e));
    memo.insert(key.clone(), built.clone());
    built
}

/// One worker's share of the rules' dataflow, hosted by the service: the driver for
/// the series hashed to this worker, the leaves' inputs and the probe.
pub(super) struct RulesWorker {
    driver: Driver,
    inputs: Vec<InputSession<u64, Element, isize>>,
    unit_input: InputSession<u64, (), isize>,
    clock_input: InputSession<u64, i64, isize>,
    clock: Option<i64>,
    probe: timely::dataflow::ProbeHandle<u64>,
    commands: crossbeam_channel::Receiver<Command>,
    done: crossbeam_channel::Sender<()>,
}

/// Builds the rules' dataflow on `worker`.
pub(super) fn build_worker(
    worker: &mut timely::worker::Worker,
    program: Arc<Program>,
    commands: crossbeam_channel::Receiver<Command>,
    done: crossbeam_channel::Sender<()>,
    sink: Arc<Mutex<Vec<(usize, Element, isize)>>>,
) -> RulesWorker {
    let mut inputs: Vec<InputSession<u64, Element, isize>> =
        program.leaves.iter().map(|_| InputSession::new()).collect();
    let mut unit_input: InputSession<u64, (), isize> = InputSession::new();
    if worker.index() == 0 {
        unit_input.insert(());
    }
    let mut clock_input: InputSession<u64, i64, isize> = InputSession::new();
    let probe = timely::dataflow::ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let dataflow_inputs = Inputs {
            leaves: inputs
                .iter_mut()
                .map(|input| input.to_collection(scope))
                .collect(),
            unit: unit_input.to_collection(scope),
            clock: clock_input.to_collection(scope),
        };
        let mut memo = HashMap::new();
        for (rule, node) in program.rules.iter().enumerate() {
            let Ok(node) = node else {
                continue;
            };
            let sink = sink.clone();
            build(node, &dataflow_inputs, &mut memo)
                .inspect(move |(row, _time, diff)| {
                    if let Ok(mut sink) = sink.lock() {
                        sink.push((rule, row.clone(), *diff));
                    }
                })
                .probe_with(&probe);
        }
    });
    RulesWorker {
        driver: Driver::new(program, worker.index(), worker.peers()),
        inputs,
        unit_input,
        clock_input,
        clock: None,
        probe,
        commands,
        done,
    }
}

impl crate::service::Hosted for RulesWorker {
    fn poll(&mut self, worker: &mut timely::worker::Worker) -> bool {
        loop {
            let command = match self.commands.try_recv() {
                Ok(command) => command,
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            };
            match command {
                Command::Push(batch) => self.driver.receive(&batch),
                Command::Evaluate { epoch, at, refresh } => {
                    self.driver
                        .apply(at, refresh.as_deref().map(Vec::as_slice), &mut self.inputs);
                    for input in &mut self.inputs {
                        input.advance_to(epoch + 1);
                        input.flush();
                    }
                    if worker.index() == 0 && self.clock != Some(at) {
                        if let Some(previous) = self.clock.replace(at) {
                            self.clock_input.remove(previous);
                        }
                        self.clock_input.insert(at);
                    }
                    self.unit_input.advance_to(epoch + 1);
                    self.unit_input.flush();
                    self.clock_input.advance_to(epoch + 1);
                    self.clock_input.flush();
                    while self.probe.less_than(&(epoch + 1)) {
                        worker.step();
                    }
                    if self.done.send(()).is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

//! The dataflow: how a [`Program`]'s nodes become differential operators, and the
//! worker loop that feeds the leaves and closes epochs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::InputSession;
use differential_dataflow::VecCollection;
use promql_parser::parser::{LabelModifier, VectorMatchCardinality};
use vigil_queries::promql::{
    aggregate, bucket_quantile, eval_binary, grouping_labels, is_set, kahan_add,
    matching_signature, parse_go_float, Bucket, EvalError, Sample, Value,
};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::LabelSet;

use super::driver::Driver;
use super::{Command, Node, Program, Row, ERROR_LABEL};

type Rows<'scope> = VecCollection<'scope, u64, Row, isize>;

fn error_row(message: String) -> Row {
    let labels = LabelSet::from_pairs([(ERROR_LABEL, message.as_str())]).unwrap_or_default();
    (labels, false, 0)
}

fn sample_of(row: &Row, copies: isize) -> impl Iterator<Item = Sample> + '_ {
    (0..copies.max(0)).map(move |_| Sample {
        labels: row.0.clone(),
        t: 0,
        f: f64::from_bits(row.2),
        drop_name: row.1,
    })
}

fn rows_of(value: Result<Value, EvalError>) -> Vec<Row> {
    match value {
        Ok(Value::Vector(samples)) => samples
            .into_iter()
            .map(|s| (s.labels, s.drop_name, s.f.to_bits()))
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
            .filter(|row: &Row| row.0.get(ERROR_LABEL).is_some()),
    );
    rows.filter(|row: &Row| row.0.get(ERROR_LABEL).is_none())
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
    let built = match node {
        Node::Leaf(index) => inputs.leaves[*index].clone(),
        Node::Constant { value, .. } => {
            let row: Row = (LabelSet::default(), false, value.to_bits());
            inputs.unit.clone().map(move |()| row.clone())
        }
        Node::Clock {
            binary,
            time_left,
            input,
            ..
        } => {
            let (binary, time_left) = (binary.clone(), *time_left);
            operand(input, inputs, memo, &mut errors)
                .map(|row: Row| ((), row))
                .join(inputs.clock.clone().map(|at| ((), at)))
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
        Node::Relabel { rewrite, input, .. } => {
            let rewrite = rewrite.clone();
            operand(input, inputs, memo, &mut errors).map(move |row: Row| {
                let mut sample = Sample {
                    labels: row.0,
                    t: 0,
                    f: f64::from_bits(row.2),
                    drop_name: row.1,
                };
                rewrite.apply(&mut sample);
                (sample.labels, sample.drop_name, row.2)
            })
        }
        Node::HistogramQuantile { phi, input, .. } => {
            let phi = *phi;
            operand(input, inputs, memo, &mut errors)
                .flat_map(|row: Row| {
                    // Buckets without a parsable `le` are left out (the ad hoc path warns).
                    let upper = parse_go_float(row.0.get("le")?)?;
                    let mut histogram = row.0;
                    histogram.set("le", "");
                    Some((histogram, (upper.to_bits(), row.2)))
                })
                .reduce(move |histogram, input: &[(&(u64, u64), isize)], output| {
                    let mut buckets = Vec::with_capacity(input.len());
                    for ((upper, count), copies) in input {
                        for _ in 0..(*copies).max(0) {
                            buckets.push(Bucket {
                                upper_bound: f64::from_bits(*upper),
                                count: f64::from_bits(*count),
                            });
                        }
                    }
                    let (value, _fixes) = bucket_quantile(phi, buckets);
                    output.push(((histogram.clone(), true, value.to_bits()), 1isize));
                })
                .map(|(_histogram, row)| row)
        }
        Node::Map {
            function, input, ..
        } => {
            let function = function.clone();
            operand(input, inputs, memo, &mut errors).flat_map(move |row: Row| {
                (!function.empty).then(|| {
                    let value = (function.op)(f64::from_bits(row.2));
                    (row.0, true, value.to_bits())
                })
            })
        }
        Node::Absent { labels, input, .. } => {
            let exists = operand(input, inputs, memo, &mut errors)
                .map(|_row: Row| ())
                .distinct();
            let row: Row = (labels.clone(), false, 1f64.to_bits());
            inputs
                .unit
                .clone()
                .map(move |()| ((), row.clone()))
                .antijoin(exists)
                .map(|((), row)| row)
        }
        Node::Scalar {
            binary,
            scalar,
            scalar_left,
            input,
            ..
        } => {
            let binary = binary.clone();
            let (scalar, scalar_left) = (*scalar, *scalar_left);
            operand(input, inputs, memo, &mut errors).flat_map(move |row: Row| {
                let vector = Value::Vector(sample_of(&row, 1).collect());
                let result = if scalar_left {
                    eval_binary(&binary, Value::Scalar(scalar), vector, 0)
                } else {
                    eval_binary(&binary, vector, Value::Scalar(scalar), 0)
                };
                rows_of(result)
            })
        }
        Node::Aggregate {
            op,
            param: None,
            modifier,
            input,
            ..
        } if Partial::handles(*op, modifier.as_ref()) => {
            let (op, modifier) = (*op, modifier.clone());
            // Two levels: partial aggregates per (group, bucket of series), then the
            // group's value from its buckets' partials. A changed series recomputes its
            // bucket and its group's partials, not the whole group.
            operand(input, inputs, memo, &mut errors)
                .map(move |row: Row| {
                    let group = grouping_labels(&row.0, modifier.as_ref());
                    let bucket = row.0.series_id() % AGGREGATION_BUCKETS;
                    ((group, bucket), row.2)
                })
                .reduce(|_key, input: &[(&u64, isize)], output| {
                    let mut partial = Partial::default();
                    for (bits, count) in input {
                        for _ in 0..(*count).max(0) {
                            partial.add(f64::from_bits(**bits));
                        }
                    }
                    output.push((partial.bits(), 1isize));
                })
                .map(|((group, _bucket), partial)| (group, partial))
                .reduce(move |_group, input: &[(&PartialBits, isize)], output| {
                    let mut total = Partial::default();
                    for (partial, count) in input {
                        for _ in 0..(*count).max(0) {
                            total.merge(&Partial::from_bits(partial));
                        }
                    }
                    if let Some(value) = total.value(op) {
                        output.push((value.to_bits(), 1isize));
                    }
                })
                .map(|(group, bits)| (group, false, bits))
        }
        Node::Aggregate {
            op,
            param,
            modifier,
            input,
            ..
        } => {
            let (op, param, modifier) = (*op, param.clone(), modifier.clone());
            let group_modifier = modifier.clone();
            operand(input, inputs, memo, &mut errors)
                .map(move |row: Row| {
                    let group = grouping_labels(&row.0, group_modifier.as_ref());
                    (group, row)
                })
                .reduce(move |_group, input: &[(&Row, isize)], output| {
                    let samples: Vec<Sample> = input
                        .iter()
                        .flat_map(|(row, count)| sample_of(row, *count))
                        .collect();
                    let result = aggregate(op, samples, param.clone(), modifier.as_ref(), 0)
                        .map(Value::Vector);
                    for row in rows_of(result) {
                        output.push((row, 1isize));
                    }
                })
                .map(|(_group, row)| row)
        }
        Node::Binary {
            binary,
            on,
            names,
            lhs,
            rhs,
            ..
        } => {
            let binary = binary.clone();
            let (on, names) = (*on, Arc::new(names.clone()));
            let (lhs_names, rhs_names) = (names.clone(), names);
            let one_to_one = !is_set(binary.op)
                && binary
                    .modifier
                    .as_ref()
                    .is_none_or(|m| matches!(m.card, VectorMatchCardinality::OneToOne));
            if one_to_one {
                // A differential join on the matching signature: a change touches only
                // its own match. More than one sample per signature on a side is
                // Prometheus' matching error (or not, depending on the other side):
                // flagged, so the ad hoc evaluator decides at that instant.
                let left = operand(lhs, inputs, memo, &mut errors)
                    .map(move |row: Row| (matching_signature(&row.0, on, &lhs_names), row));
                let right = operand(rhs, inputs, memo, &mut errors)
                    .map(move |row: Row| (matching_signature(&row.0, on, &rhs_names), row));
                // Prometheus fails on two samples with one signature on the right
                // ("one") side always, on the left only where the right side matches.
                let duplicated = |side: VecCollection<'scope, u64, (LabelSet, Row), isize>| {
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
                    .join_map(right, move |_signature, l: &Row, r: &Row| {
                        rows_of(eval_binary(
                            &binary,
                            Value::Vector(sample_of(l, 1).collect()),
                            Value::Vector(sample_of(r, 1).collect()),
                            0,
                        ))
                    })
                    .flat_map(|rows| rows);
                joined.concat(left_flags).concat(right_flags)
            } else {
                let left = operand(lhs, inputs, memo, &mut errors)
                    .map(move |row: Row| (matching_signature(&row.0, on, &lhs_names), (0u8, row)));
                let right = operand(rhs, inputs, memo, &mut errors)
                    .map(move |row: Row| (matching_signature(&row.0, on, &rhs_names), (1u8, row)));
                left.concat(right)
                    .reduce(move |_signature, input: &[(&(u8, Row), isize)], output| {
                        let mut sides: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
                        for ((side, row), count) in input {
                            sides[usize::from(*side)].extend(sample_of(row, *count));
                        }
                        let [l, r] = sides;
                        let result = eval_binary(&binary, Value::Vector(l), Value::Vector(r), 0);
                        for row in rows_of(result) {
                            output.push((row, 1isize));
                        }
                    })
                    .map(|(_signature, row)| row)
            }
        }
    };
    // Errors of the operands pass through to the rule's answer, whatever the
    // operator (a comparison or an aggregation would otherwise drop them).
    let built = errors.into_iter().fold(built, |built, e| built.concat(e));
    memo.insert(key.clone(), built.clone());
    built
}

/// Buckets per aggregation group for the two-level aggregations.
const AGGREGATION_BUCKETS: u64 = 256;

/// A partial `sum`/`count`/`min`/`max`/`group` over some of a group's samples: a
/// compensated sum (as the ad hoc `sum`), the count, and min/max with Prometheus' NaN
/// rule (NaN only if every value is NaN).
#[derive(Debug, Clone, Copy)]
struct Partial {
    sum: f64,
    compensation: f64,
    count: i64,
    min: f64,
    max: f64,
}

/// [`Partial`] as dataflow data (ordered, hashable bits).
type PartialBits = (u64, u64, i64, u64, u64);

impl Default for Partial {
    fn default() -> Self {
        Partial {
            sum: 0.0,
            compensation: 0.0,
            count: 0,
            min: f64::NAN,
            max: f64::NAN,
        }
    }
}

impl Partial {
    /// The aggregations computed from partials: those whose grouping cannot keep the
    /// metric name (with `by (__name__)` the name's delayed removal needs the members).
    fn handles(
        op: promql_parser::parser::token::TokenType,
        modifier: Option<&LabelModifier>,
    ) -> bool {
        use promql_parser::parser::token;
        let keeps_name = matches!(modifier, Some(LabelModifier::Include(list)) if list.labels.iter().any(|l| l == METRIC_NAME));
        !keeps_name
            && matches!(
                op.id(),
                token::T_SUM | token::T_COUNT | token::T_MIN | token::T_MAX | token::T_GROUP
            )
    }

    fn add(&mut self, value: f64) {
        kahan_add(&mut self.sum, &mut self.compensation, value);
        self.count += 1;
        if self.min.is_nan() || value < self.min {
            self.min = value;
        }
        if self.max.is_nan() || value > self.max {
            self.max = value;
        }
    }

    fn merge(&mut self, other: &Partial) {
        kahan_add(&mut self.sum, &mut self.compensation, other.sum);
        kahan_add(&mut self.sum, &mut self.compensation, other.compensation);
        self.count += other.count;
        if self.min.is_nan() || other.min < self.min {
            self.min = other.min;
        }
        if self.max.is_nan() || other.max > self.max {
            self.max = other.max;
        }
    }

    fn value(&self, op: promql_parser::parser::token::TokenType) -> Option<f64> {
        use promql_parser::parser::token;
        if self.count == 0 {
            return None;
        }
        Some(match op.id() {
            token::T_SUM if self.sum.is_infinite() => self.sum,
            token::T_SUM => self.sum + self.compensation,
            token::T_COUNT => self.count as f64,
            token::T_MIN => self.min,
            token::T_MAX => self.max,
            _ => 1.0,
        })
    }

    fn bits(&self) -> PartialBits {
        (
            self.sum.to_bits(),
            self.compensation.to_bits(),
            self.count,
            self.min.to_bits(),
            self.max.to_bits(),
        )
    }

    fn from_bits(bits: &PartialBits) -> Partial {
        Partial {
            sum: f64::from_bits(bits.0),
            compensation: f64::from_bits(bits.1),
            count: bits.2,
            min: f64::from_bits(bits.3),
            max: f64::from_bits(bits.4),
        }
    }
}

/// One worker's share of the rules' dataflow, hosted by the service: the driver for
/// the series hashed to this worker, the leaves' inputs and the probe.
pub(super) struct RulesWorker {
    driver: Driver,
    inputs: Vec<InputSession<u64, Row, isize>>,
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
    sink: Arc<Mutex<Vec<(usize, Row, isize)>>>,
) -> RulesWorker {
    let mut inputs: Vec<InputSession<u64, Row, isize>> =
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

//! The incremental path: rule expressions maintained by a timely/differential dataflow
//! as samples arrive, instead of re-evaluated from storage.
//!
//! Dataflow time is an *evaluation epoch*: each [`Engine::evaluate`] at event time `at`
//! closes one epoch, and the collection a rule's plan maintains then equals the
//! instant query at `at` over every sample received so far. That is exactly what the
//! ad hoc evaluator answers from storage, including for samples that arrive late (a
//! late sample counts if it is still the newest in its lookback or window).
//!
//! - The **driver** (per worker, for the series hashed to it) turns samples into
//!   differential updates of the leaves: a selector's instant vector (retract the old
//!   value and insert the new one; unchanged values send nothing; retract at staleness
//!   or when the value leaves the 5m lookback), and range functions over per-series
//!   windows (recomputed with the shared pure functions only for series whose window
//!   changed, or for all windowed series when the function extrapolates to the
//!   window's edges, like `rate`). Only changed values become updates.
//! - **Operators**: vector/constant arithmetic and comparisons are per-element maps
//!   and filters; aggregations are reductions keyed by the grouping labels; vector
//!   matching and set operators are reductions keyed by the matching signature (a
//!   join). Both call the ad hoc evaluator's own `aggregate` and `eval_binary` on the
//!   group that changed, so the semantics are one implementation. Identical
//!   sub-expressions across rules are built once.
//! - An error inside a group (many-to-many matching, a duplicate output label set) is
//!   reported as a fallback: the caller evaluates that rule ad hoc at that instant and
//!   gets Prometheus' exact error.

mod compile;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

pub use compile::{Leaf, Node, Program, Unsupported};
use differential_dataflow::input::InputSession;
use differential_dataflow::VecCollection;
use promql_parser::parser::Expr;
use promql_parser::parser::LabelModifier;
use vigil_queries::promql::aggregate::aggregate;
use vigil_queries::promql::binary::eval_binary;
use vigil_queries::promql::call::parse_go_float;
use vigil_queries::promql::eval::{matches, matching_signature, DEFAULT_LOOKBACK_MS};
use vigil_queries::promql::functions::{bucket_quantile, kahan_add, Bucket, Point, Window};
use vigil_queries::promql::{Sample, Value};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::record::is_stale_marker;
use vigil_storage::{Appended, BatchSample, LabelSet, SeriesId};

/// One element of a maintained vector: labels, "drop the metric name at the end"
/// (Prometheus 3's delayed name removal), value bits.
pub type Row = (LabelSet, bool, u64);

/// The label an operator uses to report an error inside a group.
const ERROR_LABEL: &str = "__vigil_error__";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the dataflow workers: {0}")]
    Start(String),
}

enum Command {
    Push(Arc<Appended>),
    Evaluate {
        epoch: u64,
        at: i64,
        refresh: Option<Arc<Vec<bool>>>,
    },
}

/// The dataflow of a [`Program`] on its own timely worker threads.
pub struct Engine {
    program: Arc<Program>,
    workers: Vec<crossbeam_channel::Sender<Command>>,
    done: crossbeam_channel::Receiver<()>,
    sink: Arc<Mutex<Vec<(usize, Row, isize)>>>,
    counts: Vec<HashMap<Row, isize>>,
    epoch: u64,
    /// A worker stopped answering (it died, or an epoch overran the limit): every
    /// answer is a fallback from then on.
    failed: bool,
    guards: Option<timely::communication::initialize::WorkerGuards<()>>,
}

/// How long an epoch may take before the engine is declared failed.
const EPOCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channels ends the workers' loops; the guards join them.
        self.workers.clear();
        self.guards.take();
    }
}

impl Engine {
    /// Starts `threads` timely workers (series are shared among them by id).
    pub fn start(program: Program, threads: usize) -> Result<Engine, EngineError> {
        let threads = threads.max(1);
        let program = Arc::new(program);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut workers = Vec::with_capacity(threads);
        let mut receivers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = crossbeam_channel::unbounded();
            workers.push(tx);
            receivers.push(Mutex::new(Some(rx)));
        }
        let sink: Arc<Mutex<Vec<(usize, Row, isize)>>> = Arc::default();
        let shared = (program.clone(), Arc::new(receivers), done_tx, sink.clone());
        let guards = timely::execute(timely::Config::process(threads), move |worker| {
            let (program, receivers, done, sink) = &shared;
            let receiver = receivers
                .get(worker.index())
                .and_then(|slot| slot.lock().ok().and_then(|mut slot| slot.take()));
            if let Some(receiver) = receiver {
                work(worker, program, receiver, done.clone(), sink.clone());
            }
        })
        .map_err(EngineError::Start)?;
        Ok(Engine {
            counts: vec![HashMap::new(); program.rules.len()],
            program,
            workers,
            done,
            sink,
            epoch: 0,
            failed: false,
            guards: Some(guards),
        })
    }

    /// Whether a worker stopped answering (then every answer is a fallback).
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Hands an appended batch to the workers (applied at the next evaluation whose
    /// time reaches each sample).
    pub fn push(&self, batch: Arc<Appended>) {
        for worker in &self.workers {
            let _ = worker.send(Command::Push(batch.clone()));
        }
    }

    /// Hands samples given by labels to the workers.
    pub fn push_samples(&self, samples: Vec<(LabelSet, i64, f64)>) {
        let mut index: HashMap<LabelSet, u32> = HashMap::new();
        let mut appended = Appended {
            ids: Vec::new(),
            series: Vec::new(),
            samples: Vec::with_capacity(samples.len()),
        };
        for (labels, t, f) in samples {
            let idx = *index.entry(labels.clone()).or_insert_with(|| {
                appended.ids.push(labels.series_id());
                appended.series.push(labels);
                (appended.series.len() - 1) as u32
            });
            appended.samples.push(BatchSample {
                series_idx: idx,
                timestamp_ms: t,
                value: f,
            });
        }
        self.push(Arc::new(appended));
    }

    /// Closes one epoch at event time `at` (never earlier than the last): every rule's
    /// maintained vector is then the instant query at `at`.
    pub fn evaluate(&mut self, at: i64) {
        self.evaluate_refreshing(at, None);
    }

    /// As [`Engine::evaluate`], but the windows whose value moves with time alone
    /// (`rate` …) are recomputed only for the leaves marked in `refresh`; the rules
    /// reading other leaves are not exact at this epoch and must not be read until an
    /// epoch that refreshes them. (The rule manager refreshes only the alerting rules'
    /// leaves at ingest epochs; recording rules are read at ticks, which refresh all.)
    pub fn evaluate_refreshing(&mut self, at: i64, refresh: Option<Arc<Vec<bool>>>) {
        let epoch = self.epoch;
        self.epoch += 1;
        for worker in &self.workers {
            let _ = worker.send(Command::Evaluate {
                epoch,
                at,
                refresh: refresh.clone(),
            });
        }
        if self.failed {
            return;
        }
        for _ in 0..self.workers.len() {
            if self.done.recv_timeout(EPOCH_LIMIT).is_err() {
                self.failed = true;
                return;
            }
        }
        let fresh = self
            .sink
            .lock()
            .map(|mut sink| std::mem::take(&mut *sink))
            .unwrap_or_default();
        for (rule, row, diff) in fresh {
            let Some(counts) = self.counts.get_mut(rule) else {
                continue;
            };
            let count = counts.entry(row.clone()).or_default();
            *count += diff;
            if *count == 0 {
                counts.remove(&row);
            }
        }
    }

    /// Rule `rule`'s vector as of the last evaluation, or why it must be evaluated ad hoc
    /// at this instant (it is not incremental, or a group is in error).
    pub fn answer(&self, rule: usize) -> Result<Vec<(LabelSet, f64)>, Unsupported> {
        if let Some(Err(reason)) = self.program.rules.get(rule) {
            return Err(reason.clone());
        }
        if self.failed {
            return Err(Unsupported("the dataflow workers stopped answering".into()));
        }
        let counts = self
            .counts
            .get(rule)
            .ok_or_else(|| Unsupported("no such rule".into()))?;
        let mut out = Vec::with_capacity(counts.len());
        let mut seen = HashSet::with_capacity(counts.len());
        for ((labels, drop_name, bits), count) in counts {
            if *count <= 0 {
                continue;
            }
            if let Some(message) = labels.get(ERROR_LABEL) {
                return Err(Unsupported(message.to_string()));
            }
            let mut labels = labels.clone();
            if *drop_name {
                labels.set(METRIC_NAME, "");
            }
            if *count > 1 || !seen.insert(labels.clone()) {
                return Err(Unsupported(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
            out.push((labels, f64::from_bits(*bits)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// A rule's vector at one tick, or why it fell back to the ad hoc evaluator.
pub type TickAnswer = Result<BTreeMap<LabelSet, f64>, Unsupported>;

/// Compiles `expr`, feeds `samples` and answers at each of `ticks` (ascending).
pub fn run(
    expr: &Expr,
    samples: &[(LabelSet, i64, f64)],
    ticks: &[i64],
    threads: usize,
) -> Result<Vec<(i64, TickAnswer)>, EngineError> {
    let mut program = Program::default();
    let rule = program.add(expr);
    let mut engine = Engine::start(program, threads)?;
    engine.push_samples(samples.to_vec());
    Ok(ticks
        .iter()
        .map(|&tick| {
            engine.evaluate(tick);
            (tick, engine.answer(rule).map(|v| v.into_iter().collect()))
        })
        .collect())
}

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

fn rows_of(value: Result<Value, vigil_queries::promql::EvalError>) -> Vec<Row> {
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
            build(input, inputs, memo)
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
            build(input, inputs, memo).map(move |row: Row| {
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
            build(input, inputs, memo)
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
            build(input, inputs, memo).flat_map(move |row: Row| {
                (!function.empty).then(|| {
                    let value = (function.op)(f64::from_bits(row.2));
                    (row.0, true, value.to_bits())
                })
            })
        }
        Node::Absent { labels, input, .. } => {
            let exists = build(input, inputs, memo).map(|_row: Row| ()).distinct();
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
            build(input, inputs, memo).flat_map(move |row: Row| {
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
            build(input, inputs, memo)
                .map(move |row: Row| {
                    let group =
                        vigil_queries::promql::eval::grouping_labels(&row.0, modifier.as_ref());
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
            build(input, inputs, memo)
                .map(move |row: Row| {
                    let group = vigil_queries::promql::eval::grouping_labels(
                        &row.0,
                        group_modifier.as_ref(),
                    );
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
            let left = build(lhs, inputs, memo)
                .map(move |row: Row| (matching_signature(&row.0, on, &lhs_names), (0u8, row)));
            let right = build(rhs, inputs, memo)
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
    };
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

fn work(
    worker: &mut timely::worker::Worker,
    program: &Program,
    commands: crossbeam_channel::Receiver<Command>,
    done: crossbeam_channel::Sender<()>,
    sink: Arc<Mutex<Vec<(usize, Row, isize)>>>,
) {
    let mut inputs: Vec<InputSession<u64, Row, isize>> =
        program.leaves.iter().map(|_| InputSession::new()).collect();
    let mut unit_input: InputSession<u64, (), isize> = InputSession::new();
    if worker.index() == 0 {
        unit_input.insert(());
    }
    let mut clock_input: InputSession<u64, i64, isize> = InputSession::new();
    let mut clock: Option<i64> = None;
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
    let mut driver = Driver::new(program, worker.index(), worker.peers());
    while let Ok(command) = commands.recv() {
        match command {
            Command::Push(batch) => driver.receive(&batch),
            Command::Evaluate { epoch, at, refresh } => {
                driver.apply(at, refresh.as_deref().map(Vec::as_slice), &mut inputs);
                for input in &mut inputs {
                    input.advance_to(epoch + 1);
                    input.flush();
                }
                if worker.index() == 0 && clock != Some(at) {
                    if let Some(previous) = clock.replace(at) {
                        clock_input.remove(previous);
                    }
                    clock_input.insert(at);
                }
                unit_input.advance_to(epoch + 1);
                unit_input.flush();
                clock_input.advance_to(epoch + 1);
                clock_input.flush();
                while probe.less_than(&(epoch + 1)) {
                    worker.step();
                }
                if done.send(()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Series ids are already xxh3 hashes of the label set: hash maps keyed by them use
/// the id itself.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type IdMap<V> = HashMap<SeriesId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A series' latest sample as a selector's instant vector sees it.
struct Latest {
    t: i64,
    bits: u64,
    /// In the vector now (not stale, not expired).
    present: bool,
}

/// A series' window under a range function.
struct SeriesWindow {
    points: VecDeque<Point>,
    /// The value in the output now.
    emitted: Option<u64>,
    changed: bool,
    /// Every point has the same value (then `rate`, `increase` and `delta` do not
    /// depend on where the window lies or how many points it has, beyond two).
    flat: bool,
    /// The flat value the emitted result was computed from, when that result holds for
    /// any flat window of that value (so new equal points need no recomputation).
    constant_of: Option<u64>,
}

#[derive(Default)]
struct LeafState {
    latest: IdMap<Latest>,
    /// When values may leave the lookback (re-checked when due).
    expiries: BTreeMap<i64, Vec<SeriesId>>,
    windows: IdMap<SeriesWindow>,
}

struct SeriesInfo {
    labels: LabelSet,
    leaves: Vec<usize>,
}

/// One worker's share of the series and the leaves' state for them.
struct Driver<'a> {
    program: &'a Program,
    index: usize,
    peers: usize,
    /// `None` for series no leaf selects.
    series: IdMap<Option<SeriesInfo>>,
    /// Received, waiting for an evaluation at or after their time.
    pending: Vec<(SeriesId, i64, f64)>,
    leaves: Vec<LeafState>,
    epochs: u64,
}

/// Every this many epochs the driver forgets series that hold no state any more
/// (often under test, so the property test runs through it).
const PRUNE_EVERY: u64 = if cfg!(test) { 7 } else { 4096 };

impl<'a> Driver<'a> {
    fn new(program: &'a Program, index: usize, peers: usize) -> Driver<'a> {
        Driver {
            program,
            index,
            peers: peers.max(1),
            series: IdMap::default(),
            pending: Vec::new(),
            leaves: program
                .leaves
                .iter()
                .map(|_| LeafState::default())
                .collect(),
            epochs: 0,
        }
    }

    /// Forgets series without state in any leaf and nothing pending (pods come and
    /// go), and the cache of series no leaf selects.
    fn prune(&mut self) {
        let pending: std::collections::HashSet<SeriesId> =
            self.pending.iter().map(|sample| sample.0).collect();
        let leaves = &self.leaves;
        self.series.retain(|id, info| {
            let Some(info) = info else {
                return false;
            };
            pending.contains(id)
                || info.leaves.iter().any(|&leaf| {
                    leaves[leaf].latest.contains_key(id) || leaves[leaf].windows.contains_key(id)
                })
        });
    }

    fn receive(&mut self, batch: &Appended) {
        for &BatchSample {
            series_idx,
            timestamp_ms,
            value,
        } in &batch.samples
        {
            let idx = series_idx as usize;
            let Some(&id) = batch.ids.get(idx) else {
                continue;
            };
            if id % self.peers as u64 != self.index as u64 {
                continue;
            }
            let program = self.program;
            let info = self.series.entry(id).or_insert_with(|| {
                let labels = batch.series.get(idx)?;
                let leaves: Vec<usize> = program
                    .leaves
                    .iter()
                    .enumerate()
                    .filter(|(_, leaf)| matches(&leaf.matchers, labels))
                    .map(|(index, _)| index)
                    .collect();
                (!leaves.is_empty()).then(|| SeriesInfo {
                    labels: labels.clone(),
                    leaves,
                })
            });
            if info.is_some() {
                self.pending.push((id, timestamp_ms, value));
            }
        }
    }

    /// Applies the samples due at `at`, expires what left the lookback, recomputes the
    /// windows that changed; updates go into `inputs` at the current epoch.
    fn apply(
        &mut self,
        at: i64,
        refresh: Option<&[bool]>,
        inputs: &mut [InputSession<u64, Row, isize>],
    ) {
        self.epochs += 1;
        if self.epochs.is_multiple_of(PRUNE_EVERY) {
            self.prune();
        }
        let mut due = if self.pending.iter().all(|sample| sample.1 <= at) {
            std::mem::take(&mut self.pending)
        } else {
            let mut due = Vec::new();
            self.pending.retain(|sample| {
                if sample.1 <= at {
                    due.push(*sample);
                    false
                } else {
                    true
                }
            });
            due
        };
        if !due.is_sorted_by_key(|sample| sample.1) {
            due.sort_by_key(|sample| sample.1);
        }
        for (id, t, f) in due {
            let Some(Some(info)) = self.series.get(&id) else {
                continue;
            };
            for &leaf in &info.leaves {
                let state = &mut self.leaves[leaf];
                let input = &mut inputs[leaf];
                if self.program.leaves[leaf].range.is_some() {
                    if is_stale_marker(f) {
                        continue;
                    }
                    let window = state.windows.entry(id).or_insert_with(|| SeriesWindow {
                        points: VecDeque::new(),
                        emitted: None,
                        changed: false,
                        flat: true,
                        constant_of: None,
                    });
                    let appended = insert_point(&mut window.points, Point { t, f });
                    window.flat = if appended {
                        window.flat && window.points.front().is_some_and(|p| p.f == f)
                    } else {
                        all_equal(&window.points)
                    };
                    window.changed = true;
                } else {
                    let timestamp = self.program.leaves[leaf].timestamp;
                    latest_sample(state, input, &info.labels, id, t, f, timestamp);
                }
            }
        }
        for (leaf, state) in self.leaves.iter_mut().enumerate() {
            let input = &mut inputs[leaf];
            match self.program.leaves[leaf].range {
                None => {
                    let series = &self.series;
                    let labels = |id: &SeriesId| {
                        series
                            .get(id)
                            .and_then(|info| info.as_ref())
                            .map(|info| info.labels.clone())
                    };
                    expire(
                        state,
                        input,
                        at,
                        labels,
                        self.program.leaves[leaf].timestamp,
                    );
                }
                Some((range, function)) => {
                    let start = at - range;
                    let moves_with_time = function.uses_window()
                        && refresh.is_none_or(|leaves| leaves.get(leaf).copied().unwrap_or(true));
                    let series = &self.series;
                    state.windows.retain(|id, window| {
                        let mut changed = std::mem::take(&mut window.changed);
                        let mut trimmed = false;
                        while window.points.front().is_some_and(|p| p.t <= start) {
                            window.points.pop_front();
                            trimmed = true;
                        }
                        if trimmed {
                            changed = true;
                            if !window.flat {
                                window.flat = all_equal(&window.points);
                            }
                        }
                        let flat_value = (window.flat
                            && window.points.len() >= 2
                            && function.constant_when_flat())
                        .then(|| window.points.front().map(|p| p.f.to_bits()))
                        .flatten();
                        let unchanged = flat_value.is_some() && flat_value == window.constant_of;
                        if !unchanged && (changed || moves_with_time) {
                            window.constant_of = flat_value;
                            let value = function
                                .apply(window.points.make_contiguous(), Window { start, end: at })
                                .map(f64::to_bits);
                            if value != window.emitted {
                                if let Some(labels) = series
                                    .get(id)
                                    .and_then(|info| info.as_ref())
                                    .map(|i| &i.labels)
                                {
                                    let drop_name = !function.keep_name();
                                    if let Some(old) = window.emitted {
                                        input.remove((labels.clone(), drop_name, old));
                                    }
                                    if let Some(new) = value {
                                        input.insert((labels.clone(), drop_name, new));
                                    }
                                }
                                window.emitted = value;
                            }
                        }
                        !window.points.is_empty() || window.emitted.is_some()
                    });
                }
            }
        }
    }
}

/// Inserts in time order; a sample at an existing time replaces it. True when the
/// point was appended at the end (the common case).
fn insert_point(points: &mut VecDeque<Point>, point: Point) -> bool {
    match points.back() {
        None => {
            points.push_back(point);
            true
        }
        Some(last) if last.t < point.t => {
            points.push_back(point);
            true
        }
        _ => {
            match points.binary_search_by_key(&point.t, |p| p.t) {
                Ok(at) => points[at] = point,
                Err(at) => points.insert(at, point),
            }
            false
        }
    }
}

fn all_equal(points: &VecDeque<Point>) -> bool {
    points
        .front()
        .is_none_or(|first| points.iter().all(|p| p.f == first.f))
}

/// A sample for a selector's instant vector: the newest sample wins; an unchanged
/// value only refreshes the time; a staleness marker removes the series.
fn latest_sample(
    state: &mut LeafState,
    input: &mut InputSession<u64, Row, isize>,
    labels: &LabelSet,
    id: SeriesId,
    t: i64,
    f: f64,
    timestamp: bool,
) {
    // `timestamp(v)` carries the sample's time as its value and drops the name.
    let (bits, drop_name) = if timestamp {
        ((t as f64 / 1000.0).to_bits(), true)
    } else {
        (f.to_bits(), false)
    };
    let stale = is_stale_marker(f);
    if let Some(latest) = state.latest.get_mut(&id) {
        if t < latest.t {
            return;
        }
        if latest.present && !stale && latest.bits == bits {
            latest.t = t;
            return;
        }
        if latest.present {
            input.remove((labels.clone(), drop_name, latest.bits));
        }
    }
    if !stale {
        input.insert((labels.clone(), drop_name, bits));
    }
    // A staleness marker is kept for a lookback too (an older late sample must not
    // bring the series back); then the entry goes.
    state
        .expiries
        .entry(t + DEFAULT_LOOKBACK_MS)
        .or_default()
        .push(id);
    state.latest.insert(
        id,
        Latest {
            t,
            bits,
            present: !stale,
        },
    );
}

/// Removes the values whose sample left the lookback by `at`, and forgets series whose
/// latest sample (or staleness marker) is that old, so churned series leave no state.
fn expire(
    state: &mut LeafState,
    input: &mut InputSession<u64, Row, isize>,
    at: i64,
    labels: impl Fn(&SeriesId) -> Option<LabelSet>,
    drop_name: bool,
) {
    while let Some(entry) = state.expiries.first_entry() {
        if *entry.key() > at {
            break;
        }
        for id in entry.remove() {
            let Some(latest) = state.latest.get_mut(&id) else {
                continue;
            };
            if latest.t + DEFAULT_LOOKBACK_MS <= at {
                if latest.present {
                    if let Some(labels) = labels(&id) {
                        input.remove((labels, drop_name, latest.bits));
                    }
                }
                state.latest.remove(&id);
            } else {
                let due = latest.t + DEFAULT_LOOKBACK_MS;
                state.expiries.entry(due).or_default().push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests;

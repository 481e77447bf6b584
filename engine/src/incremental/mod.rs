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
mod dataflow;
mod driver;
pub mod maintained;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub use compile::{Elementwise, GroupPlans, Leaf, Node, Program, Unsupported};
use promql_parser::parser::Expr;
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::{Appended, BatchSample, LabelSet};

/// One element of a maintained vector, as the dataflow carries it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Element {
    pub labels: LabelSet,
    /// Drop the metric name at the end (Prometheus 3's delayed name removal).
    pub drop_name: bool,
    /// The value's bits (so elements are ordered and hashable).
    pub bits: u64,
}

impl Element {
    pub fn new(labels: LabelSet, drop_name: bool, bits: u64) -> Element {
        Element {
            labels,
            drop_name,
            bits,
        }
    }
}

/// The label an operator uses to report an error inside a group.
const ERROR_LABEL: &str = "__vigil_error__";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the dataflow workers: {0}")]
    Start(String),
}

impl From<crate::service::ServiceError> for EngineError {
    fn from(err: crate::service::ServiceError) -> Self {
        EngineError::Start(err.to_string())
    }
}

pub(crate) enum Command {
    Push(Arc<Appended>),
    Evaluate {
        epoch: u64,
        at: i64,
        refresh: Option<Arc<Vec<bool>>>,
    },
}

/// The dataflow of a [`Program`], installed on the service's workers (series are shared
/// among them by id).
pub struct Engine {
    program: Arc<Program>,
    workers: Vec<crossbeam_channel::Sender<Command>>,
    waker: crate::service::Waker,
    done: crossbeam_channel::Receiver<()>,
    sink: Arc<Mutex<Vec<(usize, Element, isize)>>>,
    counts: Vec<HashMap<Element, isize>>,
    epoch: u64,
    /// A worker stopped answering (it died, or an epoch overran the limit): every
    /// answer is a fallback from then on.
    failed: bool,
    /// Removes the program from the workers when the engine is dropped.
    _lease: crate::service::Lease,
}

/// How long an epoch may take before the engine is declared failed.
const EPOCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// Starts `threads` workers of its own and installs `program` on them (tests, the
    /// unit-test runner; the server shares one [`crate::service::Service`]).
    pub fn start(program: Program, threads: usize) -> Result<Engine, EngineError> {
        let service = crate::service::Service::start(threads)?;
        Engine::install(&service, program)
    }

    /// Installs `program` on the service's workers.
    pub fn install(
        service: &crate::service::Service,
        program: Program,
    ) -> Result<Engine, EngineError> {
        let threads = service.workers();
        let program = Arc::new(program);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut workers = Vec::with_capacity(threads);
        let mut receivers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = crossbeam_channel::unbounded();
            workers.push(tx);
            receivers.push(Mutex::new(Some(rx)));
        }
        let sink: Arc<Mutex<Vec<(usize, Element, isize)>>> = Arc::default();
        let shared = (program.clone(), Arc::new(receivers), done_tx, sink.clone());
        let lease = service.install(Arc::new(move |worker: &mut timely::worker::Worker| {
            let (program, receivers, done, sink) = &shared;
            // A worker without its receiver (never: one per worker) gets a closed one
            // and its share ends at once.
            let commands = receivers
                .get(worker.index())
                .and_then(|slot| slot.lock().ok().and_then(|mut slot| slot.take()))
                .unwrap_or_else(|| crossbeam_channel::unbounded().1);
            Box::new(dataflow::build_worker(
                worker,
                program.clone(),
                commands,
                done.clone(),
                sink.clone(),
            ))
        }))?;
        Ok(Engine {
            counts: vec![HashMap::new(); program.rules.len()],
            program,
            workers,
            waker: service.waker(),
            done,
            sink,
            epoch: 0,
            failed: false,
            _lease: lease,
        })
    }

    /// Whether a worker stopped answering (then every answer is a fallback).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Hands an appended batch to the workers (applied at the next evaluation whose
    /// time reaches each sample).
    pub fn push(&self, batch: Arc<Appended>) {
        for worker in &self.workers {
            let _ = worker.send(Command::Push(batch.clone()));
        }
        self.waker.wake();
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
        self.waker.wake();
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
        for (
            Element {
                labels,
                drop_name,
                bits,
            },
            count,
        ) in counts
        {
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

#[cfg(test)]
mod tests;

//! One continuous SQL query at run time: a dataflow on the service's workers
//! (`crate::service`). Input batches (durable log or span batches, appended samples,
//! another query's changes) reach the query's feeding worker through the intake; they
//! go through the linear first stage, into the dataflow (the aggregation as a
//! differential `reduce` or running totals per group, spread over the workers by key),
//! and the dataflow's output differences, gathered on the feeding worker, through the
//! linear last stage to the query's `Hub`.
//!
//! Time: the watermark is the latest event time seen. The result is the query over the
//! rows whose event time is within `horizon` of the watermark: rows that fall behind are
//! retracted (so state is bounded and the result is the same whether it was maintained
//! live or rebuilt from storage after a restart), and rows that arrive already behind it
//! are counted as late and left out. Each dataflow epoch takes every batch waiting in
//! the tap, so under load the epochs grow and the per-batch cost shrinks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Receiver;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::error::DataFusionError;
use differential_dataflow::input::InputSession;

use super::row::{column_datums, rows_of, Datum, Row};
use super::sql::{From, PhysExpr, Side, Source, SqlProgram, Stage};
use super::subscription::{ChangeBatch, Hub};

/// The budget of one continuous query.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Input rows held within the horizon.
    pub max_state_rows: usize,
    /// Rows in the result.
    pub max_result_rows: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_state_rows: 2_000_000,
            max_result_rows: 100_000,
        }
    }
}

/// What a running query reports (`GET /api/v1/continuous`).
#[derive(Default)]
pub struct Stats {
    pub input_rows: AtomicU64,
    pub late_rows: AtomicU64,
    pub state_rows: AtomicU64,
    pub state_bytes: AtomicU64,
    pub epochs: AtomicU64,
    pub watermark_ms: AtomicI64,
    /// Batches waiting in the tap.
    pub pending_batches: AtomicU64,
    /// Microseconds the last epoch took, from taking its batches to publishing.
    pub last_epoch_us: AtomicU64,
    /// Microseconds spent in epochs since the start (the query's CPU time, roughly).
    pub busy_us: AtomicU64,
    /// `None` while running; why it stopped otherwise.
    pub stopped: Mutex<Option<String>>,
    /// Windows at or before this (ms) are written to Parquet (`i64::MIN`: none yet).
    pub closed_until: AtomicI64,
    /// The newest event time the intake has handed over (the seed's included): the
    /// query lags behind its inputs by this minus its watermark.
    pub newest_input_ms: Arc<AtomicI64>,
}

impl Stats {
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stop(&self, reason: String) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}

pub struct Runner {
    /// The newest sample time per series the seed held (appends at or before it are
    /// already counted; remote_write keeps each series in time order).
    pub seen: Mutex<std::collections::HashMap<u64, i64>>,
    pub name: String,
    pub program: Arc<SqlProgram>,
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
    pub horizon_ms: i64,
    pub budget: Budget,
    /// Where closed windows are written (`persist`).
    pub closed: Option<super::closed::ClosedWindows>,
}

/// Batches taken per epoch at most.
const EPOCH_BATCHES: usize = 256;

/// What a table sends: a durable batch of logs or spans, or a batch of another query's
/// changes.
#[derive(Clone)]
pub enum Input {
    Records(Arc<RecordBatch>),
    Changes(Arc<ChangeBatch>),
    /// Samples as appended (the `metrics` view's rows, made a batch by the runner).
    Samples(Arc<vigil_storage::Appended>),
}

pub enum Tap {
    Records(Receiver<Arc<RecordBatch>>),
    Changes(Receiver<Arc<ChangeBatch>>),
    Samples(Receiver<Arc<vigil_storage::Appended>>),
}

/// The input of one table: what it already holds (the seed) and the tap of every later
/// batch.
pub struct Feed {
    pub source: Source,
    pub seed: Vec<Input>,
    pub tap: Tap,
}

use super::operators::{build, Dataflow};

/// A worker that only helps (the query's groups hashed to it): its inputs are closed.
struct Helper {
    _dataflow: Dataflow,
}

impl crate::service::Hosted for Helper {
    fn poll(&mut self, _worker: &mut timely::worker::Worker) -> bool {
        true
    }
}

/// The feeding worker's share: the runner, its state and its batches.
struct Feeder {
    runner: Runner,
    dataflow: Dataflow,
    state: State,
    epoch: u64,
    /// The seed, taken at the first poll.
    seed: Option<Vec<(Source, Input)>>,
    intake: Receiver<(Source, Input)>,
}

impl crate::service::Hosted for Feeder {
    fn poll(&mut self, worker: &mut timely::worker::Worker) -> bool {
        match self.step(worker) {
            Ok(running) => running,
            Err(reason) => {
                tracing::warn!(query = %self.runner.name, %reason, "continuous query stopped");
                self.runner.hub.fail(&reason);
                self.runner.stats.stop(reason);
                false
            }
        }
    }
}

impl Feeder {
    /// The seed at the first poll, then every batch waiting (up to a limit) as one
    /// epoch; false once the input has ended.
    fn step(&mut self, worker: &mut timely::worker::Worker) -> Result<bool, String> {
        if let Some(batches) = self.seed.take() {
            // Seed: everything storage holds within the horizon, as one epoch whose
            // result replaces what subscribers were last told (a restart publishes only
            // the difference).
            let initial = super::subscription::consolidate(self.run_epoch(worker, &batches, true)?);
            drop(batches);
            self.runner.check(&self.state, initial.len())?;
            if let Some(closed) = self.runner.closed.as_mut() {
                closed.observe(&initial);
            }
            self.runner
                .hub
                .reconcile(self.state.watermark, initial)
                .map_err(|e| e.to_string())?;
            self.close_windows()?;
        }
        let mut batches = Vec::new();
        let mut ended = false;
        while batches.len() < EPOCH_BATCHES {
            match self.intake.try_recv() {
                Ok(batch) => batches.push(batch),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        if batches.is_empty() {
            return Ok(!ended);
        }
        let started = Instant::now();
        let stats = self.runner.stats.clone();
        stats
            .pending_batches
            .store(self.intake.len() as u64, Ordering::Relaxed);
        let changes = self.run_epoch(worker, &batches, false)?;
        if let Some(closed) = self.runner.closed.as_mut() {
            closed.observe(&changes);
        }
        let runner = &self.runner;
        runner
            .hub
            .publish(self.state.watermark, changes)
            .map_err(|e| e.to_string())?;
        runner.check(&self.state, runner.hub.row_count())?;
        self.close_windows()?;
        stats.epochs.fetch_add(1, Ordering::Relaxed);
        let spent = started.elapsed().as_micros() as u64;
        stats.last_epoch_us.store(spent, Ordering::Relaxed);
        stats.busy_us.fetch_add(spent, Ordering::Relaxed);
        Ok(true)
    }
}

impl Feeder {
    /// One epoch: `batches` through the first stage into the dataflow (moving the
    /// watermark and retracting what fell behind the horizon), the worker stepped until
    /// the output has the epoch, and the output's changes through the last stage.
    fn run_epoch(
        &mut self,
        worker: &mut timely::worker::Worker,
        batches: &[(Source, Input)],
        seeding: bool,
    ) -> Result<Vec<(Row, i64)>, String> {
        let runner = &self.runner;
        let (newest_seen, prepared) = runner.prepare_all(batches, seeding)?;
        if let Some(newest) = newest_seen {
            runner
                .stats
                .newest_input_ms
                .fetch_max(newest, Ordering::Relaxed);
        }
        runner.admit(
            &mut self.state,
            newest_seen,
            prepared,
            &mut self.dataflow.inputs,
        );
        self.epoch += 1;
        settle(worker, &mut self.dataflow, self.epoch);
        finish(
            &runner.program,
            std::mem::take(&mut *self.dataflow.sink.borrow_mut()),
        )
        .map_err(|e| e.to_string())
    }

    /// Writes the windows the watermark has closed (`persist`).
    fn close_windows(&mut self) -> Result<(), String> {
        let Some(closed) = self.runner.closed.as_mut() else {
            return Ok(());
        };
        let hub = &self.runner.hub;
        closed.advance(self.state.watermark, || hub.rows())?;
        self.runner
            .stats
            .closed_until
            .store(closed.until().unwrap_or(i64::MIN), Ordering::Relaxed);
        Ok(())
    }
}

/// Closes epoch `epoch` and steps the worker until the output has it all.
fn settle(worker: &mut timely::worker::Worker, dataflow: &mut Dataflow, epoch: u64) {
    for input in dataflow.inputs.iter_mut() {
        input.advance_to(epoch);
        input.flush();
    }
    // Waiting for the other workers' shares parks this worker (timely wakes it when
    // their messages arrive) instead of spinning on a core they need.
    while dataflow.probe.less_than(&epoch) {
        worker.step_or_park(Some(std::time::Duration::from_millis(1)));
    }
}

/// A query installed on the service: dropping it stops the query.
pub struct Installed {
    _lease: crate::service::Lease,
    _watching: super::intake::Watching,
}

impl Runner {
    /// Installs the query on the service's workers: every worker builds its dataflow,
    /// one (chosen by the query's name) feeds it — the seed, then the batches the
    /// intake forwards from the taps — and publishes the output to the hub. Runs until
    /// dropped, a tap closes, or the query exceeds its budget (the reason lands in
    /// `stats.stopped`).
    pub(crate) fn install(
        self,
        service: &crate::service::Service,
        intake: &super::intake::Intake,
        feeds: Vec<Feed>,
    ) -> Result<Installed, crate::service::ServiceError> {
        let owner = (xxhash_of(&self.name) % service.workers() as u64) as usize;
        let (to, from) = crossbeam_channel::unbounded();
        let mut seed = Vec::new();
        let mut taps = Vec::new();
        for feed in feeds {
            seed.extend(feed.seed.into_iter().map(|b| (feed.source.clone(), b)));
            taps.push((feed.source, feed.tap));
        }
        let program = self.program.clone();
        let watermark = self.hub.position().1;
        let stats = self.stats.clone();
        let feeder = Arc::new(Mutex::new(Some((self, seed, from))));
        let lease = service.install(Arc::new(move |worker: &mut timely::worker::Worker| {
            let mut dataflow = build(worker, &program, owner);
            let mine = if worker.index() == owner {
                feeder.lock().ok().and_then(|mut slot| slot.take())
            } else {
                None
            };
            match mine {
                Some((runner, seed, intake)) => Box::new(Feeder {
                    runner,
                    dataflow,
                    state: State {
                        watermark,
                        expiry: BTreeMap::new(),
                        rows: 0,
                        bytes: 0,
                    },
                    epoch: 0,
                    seed: Some(seed),
                    intake,
                })
                    as Box<dyn crate::service::Hosted>,
                None => {
                    // Only the feeding worker's inputs stay open.
                    dataflow.inputs.clear();
                    Box::new(Helper {
                        _dataflow: dataflow,
                    })
                }
            }
        }))?;
        let watching = intake.watch(super::intake::Watch {
            taps,
            to,
            waker: service.waker(),
            worker: owner,
            newest: stats.newest_input_ms.clone(),
        });
        Ok(Installed {
            _lease: lease,
            _watching: watching,
        })
    }

    /// The first stage over every batch, for every side that reads its table. A batch the
    /// expressions cannot evaluate (a cast of a bad value) is left out and counted as
    /// late input, unless it is part of the seed (then the query cannot start). Another
    /// query's changes come with their own signs and time.
    fn prepare_all(
        &self,
        batches: &[(Source, Input)],
        seeding: bool,
    ) -> Result<(Option<i64>, Vec<Prepared>), String> {
        let seen = &self.seen;
        let mut newest_seen = None;
        let mut prepared = Vec::new();
        for (source, input) in batches {
            for (index, side) in self.program.from.sides().iter().enumerate() {
                if side.source != *source {
                    continue;
                }
                let converted;
                let input = match input {
                    Input::Samples(appended) => {
                        let batch = metrics_batch(
                            &side.schema,
                            appended,
                            &mut seen.lock().unwrap_or_else(|p| p.into_inner()),
                        )
                        .map_err(|e| e.to_string())?;
                        converted = Input::Records(Arc::new(batch));
                        &converted
                    }
                    other => other,
                };
                let parts: Vec<(RecordBatch, Option<i64>, isize)> = match input {
                    Input::Records(batch) => {
                        if let Ok(time) = newest(side, batch) {
                            newest_seen = newest_seen.max(time);
                        }
                        vec![(batch.as_ref().clone(), None, 1)]
                    }
                    Input::Changes(changes) => {
                        newest_seen = newest_seen.max(Some(changes.time));
                        let mut parts = Vec::new();
                        for sign in [1i64, -1] {
                            let rows: Vec<&Row> = changes
                                .changes
                                .iter()
                                .filter(|(_, diff)| diff.signum() == sign)
                                .flat_map(|(row, diff)| {
                                    std::iter::repeat_n(row, diff.unsigned_abs() as usize)
                                })
                                .collect();
                            if rows.is_empty() {
                                continue;
                            }
                            let batch = super::row::to_batch(&side.schema, rows.into_iter())
                                .map_err(|e| e.to_string())?;
                            parts.push((batch, Some(changes.time), sign as isize));
                        }
                        parts
                    }
                    Input::Samples(_) => Vec::new(),
                };
                let tracked = side.time_index.is_some();
                for (batch, time, diff) in parts {
                    match prepare(&self.program, index, &batch, time) {
                        Ok(rows) => {
                            prepared.extend(rows.into_iter().map(|(t, key, values)| Prepared {
                                side: index,
                                time: t,
                                key,
                                values,
                                diff,
                                tracked,
                            }))
                        }
                        Err(err) if seeding => return Err(err.to_string()),
                        Err(err) => {
                            tracing::debug!(query = %self.name, error = %err, "batch left out");
                            self.stats
                                .late_rows
                                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        Ok((newest_seen, prepared))
    }

    /// Takes prepared rows in, moves the watermark, retracts what fell behind it. Rows of
    /// another query are taken with their signs and never expire here (that query
    /// retracts them).
    fn admit(
        &self,
        state: &mut State,
        newest: Option<i64>,
        rows: Vec<Prepared>,
        inputs: &mut [InputSession<u64, (Row, Row), isize>],
    ) {
        self.stats
            .input_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        if let Some(newest) = newest {
            state.watermark = state.watermark.max(newest);
        }
        let cutoff = state.watermark.saturating_sub(self.horizon_ms);
        let mut late = 0;
        for row in rows {
            let bytes = row_bytes(&row.key) + row_bytes(&row.values);
            if !row.tracked {
                if row.diff > 0 {
                    state.rows += 1;
                    state.bytes += bytes;
                } else {
                    state.rows = state.rows.saturating_sub(1);
                    state.bytes = state.bytes.saturating_sub(bytes);
                }
                inputs[row.side].update((row.key, row.values), row.diff);
                continue;
            }
            if row.time < cutoff {
                late += 1;
                continue;
            }
            state.rows += 1;
            state.bytes += bytes;
            inputs[row.side].insert((row.key.clone(), row.values.clone()));
            state
                .expiry
                .entry(row.time)
                .or_default()
                .push((row.side, row.key, row.values));
        }
        while let Some(entry) = state.expiry.first_entry() {
            if *entry.key() >= cutoff {
                break;
            }
            for (side, key, values) in entry.remove() {
                state.rows -= 1;
                state.bytes = state
                    .bytes
                    .saturating_sub(row_bytes(&key) + row_bytes(&values));
                inputs[side].remove((key, values));
            }
        }
        self.stats.late_rows.fetch_add(late, Ordering::Relaxed);
        self.stats
            .state_rows
            .store(state.rows as u64, Ordering::Relaxed);
        self.stats
            .state_bytes
            .store(state.bytes as u64, Ordering::Relaxed);
        self.stats
            .watermark_ms
            .store(state.watermark, Ordering::Relaxed);
    }

    fn check(&self, state: &State, result_rows: usize) -> Result<(), String> {
        if state.rows > self.budget.max_state_rows {
            return Err(format!(
                "exceeded its budget: {} input rows within the horizon, more than the limit of {}",
                state.rows, self.budget.max_state_rows
            ));
        }
        if result_rows > self.budget.max_result_rows {
            return Err(format!(
                "exceeded its budget: {result_rows} result rows, more than the limit of {}",
                self.budget.max_result_rows
            ));
        }
        Ok(())
    }
}

/// A stable hash of a query's name (which worker feeds it).
fn xxhash_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One row out of the first stage.
pub struct Prepared {
    side: usize,
    time: i64,
    key: Row,
    values: Row,
    diff: isize,
    /// Expires with the horizon (rows of logs and spans), or is retracted by its source
    /// (rows of another query).
    tracked: bool,
}

struct State {
    watermark: i64,
    /// The admitted rows (side, key, values) by event time, to retract when they fall
    /// behind the horizon.
    expiry: BTreeMap<i64, Vec<(usize, Row, Row)>>,
    rows: usize,
    bytes: usize,
}

/// An estimate of a row's memory (twice: the expiry list and the dataflow's trace).
fn row_bytes(row: &Row) -> usize {
    2 * row
        .iter()
        .map(|d| {
            std::mem::size_of::<Datum>()
                + match d {
                    Datum::Str(s) => s.len(),
                    Datum::Map(pairs) => pairs.iter().map(|(k, v)| k.len() + v.len() + 48).sum(),
                    _ => 0,
                }
        })
        .sum::<usize>()
}

fn evaluate(expr: &super::sql::PhysExpr, batch: &RecordBatch) -> Result<ArrayRef, DataFusionError> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

fn mask(expr: &super::sql::PhysExpr, batch: &RecordBatch) -> Result<BooleanArray, DataFusionError> {
    let array = evaluate(expr, batch)?;
    array
        .as_boolean_opt()
        .cloned()
        .ok_or_else(|| DataFusionError::Plan("a predicate is not boolean".into()))
}

/// The newest event time in a batch (every row counts, filtered or not: the watermark
/// follows the input, not the result).
pub fn newest(side: &Side, batch: &RecordBatch) -> Result<Option<i64>, DataFusionError> {
    match side.time_index {
        Some(time_index) => newest_of(batch.column(time_index)),
        None => Ok(None),
    }
}

/// The newest time in a timestamp column, ms.
pub fn newest_of(times: &ArrayRef) -> Result<Option<i64>, DataFusionError> {
    let times = cast(times, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(datafusion::arrow::compute::max(
        times.as_primitive::<TimestampMillisecondType>(),
    ))
}

pub(super) fn filtered(
    filter: &Option<PhysExpr>,
    batch: &RecordBatch,
) -> Result<RecordBatch, DataFusionError> {
    match filter {
        Some(predicate) => Ok(filter_record_batch(batch, &mask(predicate, batch)?)?),
        None => Ok(batch.clone()),
    }
}

/// The first stage for side `index`: its `WHERE`, then (event time, key row, values row)
/// per row: for a single table the grouping key and the aggregate values (or the
/// projected row), for a join side the join key and the whole row.
pub fn prepare(
    program: &SqlProgram,
    index: usize,
    batch: &RecordBatch,
    time: Option<i64>,
) -> Result<Vec<(i64, Row, Row)>, DataFusionError> {
    let sides = program.from.sides();
    let Some(side) = sides.get(index) else {
        return Ok(Vec::new());
    };
    let hopped;
    let batch = match (side.hop, side.time_index) {
        (Some(hop), Some(time_index)) => {
            let schema = vigil_queries::hop::hop_schema(&batch.schema(), time_index);
            hopped = vigil_queries::hop::hop_batch(batch, time_index, hop, &schema)?;
            &hopped
        }
        _ => batch,
    };
    let batch = filtered(&side.filter, batch)?;
    let n = batch.num_rows();
    if n == 0 {
        return Ok(Vec::new());
    }
    let times: Vec<i64> = match side.time_index {
        Some(time_index) => {
            let times = cast(
                batch.column(time_index),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?;
            times
                .as_primitive::<TimestampMillisecondType>()
                .iter()
                .map(|t| t.unwrap_or(i64::MIN))
                .collect()
        }
        None => vec![time.unwrap_or(0); n],
    };
    let rows = match &program.from {
        From::Table(_) => staged(&program.stage, &batch)?,
        From::Join { .. } => {
            let keys = side
                .join_keys
                .iter()
                .map(|e| evaluate(e, &batch))
                .collect::<Result<Vec<_>, _>>()?;
            let mut rows = Vec::with_capacity(n);
            let whole = rows_of(batch.columns(), n)?;
            for (key, row) in rows_of(&keys, n)?.into_iter().zip(whole) {
                // SQL equality: a null key matches nothing.
                if key.iter().any(Datum::is_null) {
                    rows.push(None);
                    continue;
                }
                rows.push(Some((key, row)));
            }
            return Ok(rows
                .into_iter()
                .enumerate()
                .filter_map(|(i, row)| row.map(|(k, v)| (times[i], k, v)))
                .collect());
        }
    };
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, (key, values))| (times[i], key, values))
        .collect())
}

/// Per row of `batch`: (projected row, nothing), or (grouping key, aggregate values).
pub(super) fn staged(
    stage: &Stage,
    batch: &RecordBatch,
) -> Result<Vec<(Row, Row)>, DataFusionError> {
    let n = batch.num_rows();
    let mut out = Vec::with_capacity(n);
    match stage {
        Stage::TopK {
            partition, order, ..
        } => {
            let partition = partition
                .iter()
                .map(|e| evaluate(e, batch))
                .collect::<Result<Vec<_>, _>>()?;
            let order = order
                .iter()
                .map(|(e, _, _)| evaluate(e, batch))
                .collect::<Result<Vec<_>, _>>()?;
            let keys = rows_of(&partition, n)?;
            let orders = rows_of(&order, n)?;
            let whole = rows_of(batch.columns(), n)?;
            for ((key, mut values), row) in keys.into_iter().zip(orders).zip(whole) {
                values.extend(row);
                out.push((key, values));
            }
        }
        Stage::Project(exprs) => {
            let columns = exprs
                .iter()
                .map(|e| evaluate(e, batch))
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(
                rows_of(&columns, n)?
                    .into_iter()
                    .map(|row| (row, Vec::new())),
            );
        }
        Stage::Aggregate { keys, aggs, .. } => {
            let keys = keys
                .iter()
                .map(|e| evaluate(e, batch))
                .collect::<Result<Vec<_>, _>>()?;
            let mut args: Vec<Option<ArrayRef>> = Vec::with_capacity(aggs.len());
            let mut filters: Vec<Option<BooleanArray>> = Vec::with_capacity(aggs.len());
            for spec in aggs {
                args.push(spec.arg.as_ref().map(|e| evaluate(e, batch)).transpose()?);
                filters.push(spec.filter.as_ref().map(|e| mask(e, batch)).transpose()?);
            }
            let mut args = args
                .iter()
                .map(|arg| arg.as_ref().map(column_datums).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            for (i, key) in rows_of(&keys, n)?.into_iter().enumerate() {
                let mut values = Vec::with_capacity(aggs.len());
                for (arg, filter) in args.iter_mut().zip(&filters) {
                    let admitted = filter.as_ref().is_none_or(|f| f.is_valid(i) && f.value(i));
                    values.push(match (admitted, arg) {
                        (false, _) => Datum::Null,
                        (true, None) => Datum::Bool(true),
                        (true, Some(column)) => std::mem::replace(&mut column[i], Datum::Null),
                    });
                }
                out.push((key, values));
            }
        }
    }
    Ok(out)
}

/// Appended samples as rows of the `metrics` view (`schema`): stale markers left out, as
/// the view leaves them out, and samples the seed already held skipped.
fn metrics_batch(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    appended: &vigil_storage::Appended,
    seen: &mut std::collections::HashMap<u64, i64>,
) -> Result<RecordBatch, DataFusionError> {
    let mut rows: Vec<Row> = Vec::with_capacity(appended.samples.len());
    let mut converted: Vec<Option<(Datum, Datum, u64)>> = vec![None; appended.series.len()];
    for sample in &appended.samples {
        if vigil_storage::record::is_stale_marker(sample.value) {
            continue;
        }
        let index = sample.series_idx as usize;
        let (Some(labels), Some(id)) = (appended.series.get(index), appended.ids.get(index)) else {
            continue;
        };
        if seen
            .get(id)
            .is_some_and(|newest| sample.timestamp_ms <= *newest)
        {
            continue;
        }
        let (name, map, id) = converted[index]
            .get_or_insert_with(|| {
                let name = labels.metric_name().unwrap_or_default().to_string();
                (Datum::Str(name), Datum::labels(labels, true), *id)
            })
            .clone();
        let mut row = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            row.push(match field.name().as_str() {
                "name" => name.clone(),
                "labels" => map.clone(),
                "timestamp" => Datum::Time(sample.timestamp_ms.saturating_mul(1_000_000)),
                "value" => Datum::Float(super::row::F64(sample.value)),
                "series_id" => Datum::UInt(id),
                _ => Datum::Null,
            });
        }
        rows.push(row);
    }
    super::row::to_batch(schema, rows.iter())
}

/// The last stage: `HAVING` and the projection over the aggregation's changed rows.
pub fn finish(
    program: &SqlProgram,
    changes: Vec<(Row, i64)>,
) -> Result<Vec<(Row, i64)>, DataFusionError> {
    if let Stage::TopK {
        window_schema,
        inner,
        inner_schema,
        filter,
        project,
        ..
    } = &program.stage
    {
        if changes.is_empty() {
            return Ok(changes);
        }
        let batch = super::row::to_batch(window_schema, changes.iter().map(|(row, _)| row))?;
        let columns = inner
            .iter()
            .map(|e| evaluate(e, &batch))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(inner_schema.clone(), columns)?;
        let keep = mask(filter, &batch)?;
        let columns = project
            .iter()
            .map(|e| evaluate(e, &batch))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = rows_of(&columns, changes.len())?;
        return Ok(rows
            .into_iter()
            .zip(&changes)
            .enumerate()
            .filter(|(i, _)| keep.is_valid(*i) && keep.value(*i))
            .map(|(_, (row, (_, diff)))| (row, *diff))
            .collect());
    }
    let Stage::Aggregate {
        agg_schema,
        having,
        project,
        ..
    } = &program.stage
    else {
        return Ok(changes);
    };
    if changes.is_empty() {
        return Ok(changes);
    }
    let batch = super::row::to_batch(agg_schema, changes.iter().map(|(row, _)| row))?;
    let keep = having.as_ref().map(|h| mask(h, &batch)).transpose()?;
    let columns = project
        .iter()
        .map(|e| evaluate(e, &batch))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(changes.len());
    let rows = rows_of(&columns, changes.len())?;
    for (i, (row, (_, diff))) in rows.into_iter().zip(&changes).enumerate() {
        if keep.as_ref().is_none_or(|k| k.is_valid(i) && k.value(i)) {
            out.push((row, *diff));
        }
    }
    Ok(out)
}

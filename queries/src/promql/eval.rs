//! The ad hoc PromQL evaluator: instant and range queries over a [`SeriesSource`].
//!
//! Semantics follow Prometheus 3 (`promql/engine.go`): left-open range windows, a
//! 5-minute lookback for instant selectors, staleness markers end a series, `offset`
//! and `@` shift the reference time, subqueries evaluate their inner expression at
//! steps aligned to multiples of the subquery step. A range query is an instant query
//! at every step, over selectors and range functions evaluated for all steps at once
//! (`steps.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, Offset, SubqueryExpr, VectorSelector,
};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::record::is_stale_marker;
use vigil_storage::LabelSet;

use super::aggregate;
use super::binary;
use super::call;
use super::error::{EvalError, EvalResult};
use super::functions::{Point, Window};
use super::labels::format_value;
use super::steps::StepTables;
use super::value::{Sample, Series, Value};

/// Where selectors read from.
pub trait SeriesSource: Send + Sync {
    /// Every series matching all `matchers`, with its samples in `(start, end]`
    /// (staleness markers included), in time order.
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> EvalResult<Vec<Series>>;
}

/// Warnings and infos collected during one query, as Prometheus' `annotations`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Annotations {
    pub warnings: std::collections::BTreeSet<String>,
    pub infos: std::collections::BTreeSet<String>,
}

pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// A range query uses up to this many threads (its steps are split between them).
const MAX_QUERY_THREADS: usize = 4;
/// A thread gets at least this many steps of a range query.
const MIN_STEPS_PER_THREAD: i64 = 8;
/// The stack of a range query's evaluation threads: the evaluator recurses over the
/// expression tree, whose depth the entry guard (`guard.rs`) bounds.
pub const EVAL_STACK_BYTES: usize = 64 * 1024 * 1024;
/// The default subquery step when none is given (`evaluation_interval`).
pub(crate) const DEFAULT_SUBQUERY_STEP_MS: i64 = 60 * 1000;

/// One query: the source and the range the `@ start()` / `@ end()` modifiers refer to.
pub struct Evaluator<'a> {
    pub source: &'a dyn SeriesSource,
    pub query_start: i64,
    pub query_end: i64,
    pub lookback_ms: i64,
    pub subquery_step_ms: i64,
    /// The step of the range query (0 for an instant query), for `step()`.
    pub query_step_ms: i64,
    /// At most this many samples loaded by selectors per query (0: unlimited).
    pub max_samples: usize,
    /// Evaluation stops with [`EvalError::Timeout`] after this instant.
    pub deadline: Option<std::time::Instant>,
    annotations: std::sync::Arc<std::sync::Mutex<Annotations>>,
    loaded_samples: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// A range query's selectors and range functions, evaluated for all steps at once.
    steps: Option<std::sync::Arc<StepTables>>,
    /// Grouping keys per aggregation node (by address), kept across steps.
    group_keys: std::sync::Mutex<HashMap<usize, aggregate::GroupKeys>>,
}

pub(crate) fn millis(duration: &Duration) -> i64 {
    duration.as_millis() as i64
}

pub(crate) fn system_time_ms(time: &SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
        None => 0,
    }
}

impl<'a> Evaluator<'a> {
    pub fn new(source: &'a dyn SeriesSource, query_start: i64, query_end: i64) -> Self {
        Evaluator {
            source,
            query_start,
            query_end,
            lookback_ms: DEFAULT_LOOKBACK_MS,
            subquery_step_ms: DEFAULT_SUBQUERY_STEP_MS,
            query_step_ms: 0,
            max_samples: 0,
            deadline: None,
            annotations: Default::default(),
            loaded_samples: Default::default(),
            steps: None,
            group_keys: Default::default(),
        }
    }

    /// An evaluator for a nested evaluation sharing limits and annotations.
    fn derive(&self) -> Evaluator<'a> {
        Evaluator {
            source: self.source,
            query_start: self.query_start,
            query_end: self.query_end,
            lookback_ms: self.lookback_ms,
            subquery_step_ms: self.subquery_step_ms,
            query_step_ms: self.query_step_ms,
            max_samples: self.max_samples,
            deadline: self.deadline,
            annotations: self.annotations.clone(),
            loaded_samples: self.loaded_samples.clone(),
            steps: self.steps.clone(),
            group_keys: Default::default(),
        }
    }

    /// Records a `PromQL warning: …` annotation.
    pub fn warn(&self, message: String) {
        if let Ok(mut annotations) = self.annotations.lock() {
            annotations
                .warnings
                .insert(format!("PromQL warning: {message}"));
        }
    }

    /// Records a `PromQL info: …` annotation.
    pub fn info(&self, message: String) {
        if let Ok(mut annotations) = self.annotations.lock() {
            annotations.infos.insert(format!("PromQL info: {message}"));
        }
    }

    /// The annotations collected so far.
    pub fn annotations(&self) -> Annotations {
        self.annotations
            .lock()
            .map(|annotations| annotations.clone())
            .unwrap_or_default()
    }

    /// Selects from the source, enforcing the deadline.
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> EvalResult<Vec<Series>> {
        self.check_deadline()?;
        self.source.select(matchers, start, end)
    }

    /// Fails with [`EvalError::Timeout`] once the deadline has passed.
    pub(crate) fn check_deadline(&self) -> EvalResult<()> {
        if self
            .deadline
            .is_some_and(|deadline| std::time::Instant::now() > deadline)
        {
            return Err(EvalError::Timeout("query execution"));
        }
        Ok(())
    }

    /// Counts samples a selector brought into the query (one per series for an instant
    /// selector, every point for a range selector), as Prometheus' max-samples does.
    fn count_samples(&self, loaded: usize) -> EvalResult<()> {
        if self.max_samples == 0 {
            return Ok(());
        }
        let total = self
            .loaded_samples
            .fetch_add(loaded, std::sync::atomic::Ordering::Relaxed)
            + loaded;
        if total > self.max_samples {
            return Err(EvalError::TooManySamples);
        }
        Ok(())
    }

    fn at_time(&self, at: &Option<AtModifier>, t: i64) -> i64 {
        match at {
            Some(AtModifier::Start) => self.query_start,
            Some(AtModifier::End) => self.query_end,
            Some(AtModifier::At(time)) => system_time_ms(time),
            None => t,
        }
    }

    /// An instant query at `t`: evaluation, then the delayed removal of metric names.
    pub fn instant_query(&self, expr: &Expr, t: i64) -> EvalResult<Value> {
        match self.eval(expr, t)? {
            Value::Vector(samples) => finalize(samples).map(Value::Vector),
            other => Ok(other),
        }
    }

    /// A range query: the instant query at every step, gathered per series.
    pub fn range_query(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> EvalResult<Vec<Series>> {
        let step = step.max(1);
        let steps = (end - start) / step + 1;
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_QUERY_THREADS) as i64;
        // Steps are independent instant queries: split them over the cores in contiguous
        // chunks, each with its own sample count (the limit holds per chunk, as samples
        // held at once), then join the chunks in time order.
        let chunks = if steps >= MIN_STEPS_PER_THREAD * 2 {
            threads.min(steps / MIN_STEPS_PER_THREAD).max(1)
        } else {
            1
        };
        let per_chunk = (steps + chunks - 1) / chunks;
        let results: Vec<EvalResult<Vec<Series>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..chunks)
                .map(|chunk| {
                    let chunk_start = start + chunk * per_chunk * step;
                    let chunk_end = (chunk_start + (per_chunk - 1) * step).min(end);
                    let mut ranged = self.derive();
                    ranged.query_step_ms = step;
                    ranged.loaded_samples = Default::default();
                    std::thread::Builder::new()
                        .name("promql-range".into())
                        .stack_size(EVAL_STACK_BYTES)
                        .spawn_scoped(scope, move || {
                            // This chunk's selectors and range functions, in one pass each.
                            let tables =
                                StepTables::build(&ranged, expr, chunk_start, chunk_end, step)?;
                            if !tables.is_empty() {
                                ranged.steps = Some(std::sync::Arc::new(tables));
                            }
                            ranged.eval_steps(expr, chunk_start, chunk_end, step, true)
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        Err(EvalError::Execution("query evaluation panicked".into()))
                    }),
                    Err(err) => Err(EvalError::Execution(format!(
                        "cannot start a query thread: {err}"
                    ))),
                })
                .collect()
        });
        let mut merged: BTreeMap<LabelSet, (Vec<Point>, bool)> = BTreeMap::new();
        for result in results {
            for series in result? {
                let entry = merged.entry(series.labels).or_default();
                entry.0.extend(series.points);
                entry.1 |= series.drop_name;
            }
        }
        Ok(into_series(merged))
    }

    /// Evaluates at every step; with `finalize_steps` names are removed per step (a
    /// query), otherwise the removal stays pending in the series (a subquery).
    ///
    /// Steps mostly return the same series again (the same shared label sets, from the
    /// step tables): each distinct label set is resolved once — name removal, its output
    /// series — and later steps find it by identity, not by comparing labels.
    fn eval_steps(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        finalize_steps: bool,
    ) -> EvalResult<Vec<Series>> {
        let step = step.max(1);
        let mut gather = Gather::default();
        let mut t = start;
        let mut step_no = 0usize;
        let mut output_points = 0;
        while t <= end {
            self.check_deadline()?;
            step_no += 1;
            if finalize_steps {
                // Prometheus' max-samples bounds the samples held at once: the output so
                // far plus what the current step loads.
                self.loaded_samples
                    .store(output_points, std::sync::atomic::Ordering::Relaxed);
            }
            match self.eval(expr, t)? {
                Value::Scalar(f) => {
                    if !finalize_steps {
                        self.count_samples(1)?;
                    }
                    let idx = gather.resolve(&LabelSet::default(), false, false);
                    gather.series[idx].1.push(Point { t, f });
                }
                Value::Vector(samples) => {
                    output_points += samples.len();
                    if !finalize_steps {
                        // A subquery's points are held until its function runs.
                        self.count_samples(samples.len())?;
                    }
                    for sample in samples {
                        let idx = gather.resolve(&sample.labels, sample.drop_name, finalize_steps);
                        let series = &mut gather.series[idx];
                        if finalize_steps {
                            if series.3 == step_no {
                                return Err(EvalError::Execution(
                                    "vector cannot contain metrics with the same labelset".into(),
                                ));
                            }
                            series.3 = step_no;
                        } else {
                            series.2 |= sample.drop_name;
                        }
                        series.1.push(Point { t, f: sample.f });
                    }
                }
                other => {
                    return Err(EvalError::Execution(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        other.type_name()
                    )))
                }
            }
            t += step;
        }
        let mut series: Vec<Series> = gather
            .series
            .into_iter()
            .map(|(labels, points, drop_name, _)| Series {
                labels,
                points,
                drop_name,
            })
            .collect();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    /// Evaluates `expr` as an instant query at `t` (milliseconds).
    pub fn eval(&self, expr: &Expr, t: i64) -> EvalResult<Value> {
        if let (Some(steps), Expr::VectorSelector(_) | Expr::Call(_)) = (&self.steps, expr) {
            if let Some((vector, loaded)) = steps.lookup(expr, t) {
                self.count_samples(loaded)?;
                return Ok(Value::Vector(vector.to_vec()));
            }
        }
        match expr {
            Expr::NumberLiteral(number) => Ok(Value::Scalar(number.val)),
            Expr::StringLiteral(string) => Ok(Value::String(string.val.clone())),
            Expr::Paren(paren) => self.eval(&paren.expr, t),
            Expr::Unary(unary) => match self.eval(&unary.expr, t)? {
                Value::Scalar(f) => Ok(Value::Scalar(-f)),
                Value::Vector(samples) => Ok(Value::Vector(
                    samples
                        .into_iter()
                        .map(|mut sample| {
                            sample.drop_name = true;
                            sample.f = -sample.f;
                            sample
                        })
                        .collect(),
                )),
                other => Err(EvalError::Execution(format!(
                    "unary minus on {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(selector) => {
                Ok(Value::Vector(self.instant_selector(selector, t)?))
            }
            Expr::MatrixSelector(matrix) => {
                let reference = self.at_time(&matrix.vs.at, t) - offset_ms(&matrix.vs.offset);
                Ok(Value::Matrix(self.range_selector(
                    &matrix.vs,
                    reference - millis(&matrix.range),
                    reference,
                )?))
            }
            Expr::Subquery(subquery) => Ok(Value::Matrix(self.subquery(subquery, t)?)),
            Expr::Call(call) => call::eval_call(self, call, t),
            Expr::Aggregate(aggregate) => self.aggregate(aggregate, t),
            Expr::Binary(binary) => self.binary(binary, t),
            Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
        }
    }

    /// The matchers of a selector, including the metric name.
    pub fn selector_matchers(selector: &VectorSelector) -> EvalResult<Vec<Matcher>> {
        if !selector.matchers.or_matchers.is_empty() {
            return Err(EvalError::Unsupported("\"or\" in label matchers".into()));
        }
        let mut matchers = selector.matchers.matchers.clone();
        if let Some(name) = &selector.name {
            if !matchers.iter().any(|m| m.name == METRIC_NAME) {
                matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
            }
        }
        Ok(matchers)
    }

    /// Instant vector selector at `t`: each series' latest sample in the lookback window,
    /// unless that sample is a staleness marker. Sample times are kept for `timestamp()`.
    pub fn instant_selector(&self, selector: &VectorSelector, t: i64) -> EvalResult<Vec<Sample>> {
        let reference = self.at_time(&selector.at, t) - offset_ms(&selector.offset);
        let matchers = Self::selector_matchers(selector)?;
        let samples: Vec<Sample> = self
            .select(&matchers, reference - self.lookback_ms, reference)?
            .into_iter()
            .filter_map(|series| {
                let last = series.points.last()?;
                (!is_stale_marker(last.f)).then(|| Sample::new(series.labels, last.t, last.f))
            })
            .collect();
        self.count_samples(samples.len())?;
        Ok(samples)
    }

    /// Range selector: samples in `(start, end]` without staleness markers.
    pub fn range_selector(
        &self,
        selector: &VectorSelector,
        start: i64,
        end: i64,
    ) -> EvalResult<Vec<Series>> {
        let matchers = Self::selector_matchers(selector)?;
        let series: Vec<Series> = self
            .select(&matchers, start, end)?
            .into_iter()
            .filter_map(|mut series| {
                series.points.retain(|point| !is_stale_marker(point.f));
                (!series.points.is_empty()).then_some(series)
            })
            .collect();
        self.count_samples(series.iter().map(|s| s.points.len()).sum())?;
        Ok(series)
    }

    /// Evaluates a subquery at `t` into a range vector.
    pub fn subquery(&self, subquery: &SubqueryExpr, t: i64) -> EvalResult<Vec<Series>> {
        let reference = self.at_time(&subquery.at, t) - offset_ms(&subquery.offset);
        let range = millis(&subquery.range);
        let step = subquery
            .step
            .as_ref()
            .map(millis)
            .filter(|step| *step > 0)
            .unwrap_or(self.subquery_step_ms);
        let window_start = reference - range;
        let mut start = step * (window_start / step);
        if start <= window_start {
            start += step;
        }
        // Every step is an evaluation that holds at least a point per output series:
        // more steps than the sample limit can never succeed, so refuse before looping.
        let steps = (reference - start) / step + 1;
        if self.max_samples > 0 && steps > self.max_samples as i64 {
            return Err(EvalError::TooManySamples);
        }
        let inner = self.derive();
        let mut series = inner.eval_steps(&subquery.expr, start, reference, step, false)?;
        series.retain(|s| !s.points.is_empty());
        Ok(series)
    }

    /// The window a range-vector argument covers at `t`.
    pub fn window_of(&self, expr: &Expr, t: i64) -> Option<Window> {
        match expr {
            Expr::MatrixSelector(matrix) => {
                let end = self.at_time(&matrix.vs.at, t) - offset_ms(&matrix.vs.offset);
                Some(Window {
                    start: end - millis(&matrix.range),
                    end,
                })
            }
            Expr::Subquery(subquery) => {
                let end = self.at_time(&subquery.at, t) - offset_ms(&subquery.offset);
                Some(Window {
                    start: end - millis(&subquery.range),
                    end,
                })
            }
            Expr::Paren(paren) => self.window_of(&paren.expr, t),
            _ => None,
        }
    }

    fn aggregate(&self, aggregate: &AggregateExpr, t: i64) -> EvalResult<Value> {
        let param = match &aggregate.param {
            Some(param) => Some(self.eval(param, t)?),
            None => None,
        };
        if aggregate.op.id() == promql_parser::parser::token::T_QUANTILE {
            if let Some(Value::Scalar(phi)) = &param {
                if !(0.0..=1.0).contains(phi) {
                    self.warn(format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_value(*phi)
                    ));
                }
            }
        }
        let Value::Vector(samples) = self.eval(&aggregate.expr, t)? else {
            return Err(EvalError::Execution("aggregation over a non-vector".into()));
        };
        let mut group_keys = self
            .group_keys
            .lock()
            .map_err(|_| EvalError::Execution("grouping cache poisoned".into()))?;
        let keys = group_keys
            .entry(aggregate as *const AggregateExpr as usize)
            .or_default();
        aggregate::aggregate_with(
            aggregate.op,
            samples,
            param,
            aggregate.modifier.as_ref(),
            t,
            Some(keys),
        )
        .map(Value::Vector)
    }

    fn binary(&self, binary: &BinaryExpr, t: i64) -> EvalResult<Value> {
        let lhs = self.eval(&binary.lhs, t)?;
        let rhs = self.eval(&binary.rhs, t)?;
        binary::eval_binary(binary, lhs, rhs, t)
    }
}

/// Function calls evaluate their arguments through this evaluator.
impl call::CallContext for Evaluator<'_> {
    fn eval(&self, expr: &Expr, t: i64) -> EvalResult<Value> {
        Evaluator::eval(self, expr, t)
    }

    fn window_of(&self, expr: &Expr, t: i64) -> Option<Window> {
        Evaluator::window_of(self, expr, t)
    }

    fn query_start(&self) -> i64 {
        self.query_start
    }

    fn query_end(&self) -> i64 {
        self.query_end
    }

    fn query_step_ms(&self) -> i64 {
        self.query_step_ms
    }

    fn warn(&self, message: String) {
        Evaluator::warn(self, message)
    }

    fn info(&self, message: String) {
        Evaluator::info(self, message)
    }
}

/// Series from points gathered per label set (with "drop the name" if any step said so).
fn into_series(by_labels: BTreeMap<LabelSet, (Vec<Point>, bool)>) -> Vec<Series> {
    by_labels
        .into_iter()
        .map(|(labels, (points, drop_name))| Series {
            labels,
            points,
            drop_name,
        })
        .collect()
}

/// The series a range evaluation gathers, found by label set identity first.
#[derive(Default)]
struct Gather {
    /// (input labels' address, name to drop) → (input labels, kept alive so the address
    /// stays theirs; output series).
    by_identity: HashMap<(usize, bool), (LabelSet, usize)>,
    by_labels: HashMap<LabelSet, usize>,
    /// Output labels, points, pending name removal, last step that wrote a point.
    series: Vec<(LabelSet, Vec<Point>, bool, usize)>,
}

impl Gather {
    fn resolve(&mut self, labels: &LabelSet, drop_name: bool, finalize: bool) -> usize {
        let key = (labels.identity(), drop_name && finalize);
        if let Some((_, idx)) = self.by_identity.get(&key) {
            return *idx;
        }
        let mut output = labels.clone();
        if drop_name && finalize {
            output.set(METRIC_NAME, "");
        }
        let next = self.series.len();
        let idx = *self.by_labels.entry(output.clone()).or_insert(next);
        if idx == next {
            self.series.push((output, Vec::new(), false, 0));
        }
        self.by_identity.insert(key, (labels.clone(), idx));
        idx
    }
}

/// Removes the metric names marked for removal, then checks the labels are unique.
pub fn finalize(mut samples: Vec<Sample>) -> EvalResult<Vec<Sample>> {
    for sample in &mut samples {
        if sample.drop_name {
            sample.labels.set(METRIC_NAME, "");
            sample.drop_name = false;
        }
    }
    check_unique(&samples)?;
    Ok(samples)
}

/// Fails like Prometheus when a vector holds two samples with the same labels.
pub(crate) fn check_unique(samples: &[Sample]) -> EvalResult<()> {
    let mut seen: HashMap<&LabelSet, ()> = HashMap::with_capacity(samples.len());
    for sample in samples {
        if seen.insert(&sample.labels, ()).is_some() {
            return Err(EvalError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

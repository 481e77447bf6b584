//! The incremental path (first slice): instant-vector expressions maintained by a
//! differential dataflow as samples arrive, instead of re-evaluated.
//!
//! Dataflow time is event time (ms). The driver turns the sample stream into updates of
//! the *instant vector* a selector answers: a sample at `t` retracts the series' previous
//! value and inserts the new one at `t`; the value is retracted again when it leaves the
//! 5-minute lookback (at `t + 5m`) or at a staleness marker. Comparison filters are
//! `filter`s and aggregations are `reduce`s keyed by the grouping labels, so an update
//! flows only through the groups it touches. The output collection at time `t` is the
//! instant query at `t`; the property test checks that against the ad hoc evaluator at
//! every tick.
//!
//! Supported so far: `selector`, `selector <cmp> scalar` (without `bool`), and
//! `sum|count|min|max|group by|without (…)` over either. Everything else is
//! [`Unsupported`] and stays on the ad hoc path. Not wired into the rule manager yet.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use differential_dataflow::input::InputSession;
use promql_parser::label::Matcher;
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{Expr, LabelModifier};
use vigil_queries::promql::eval::{matches, DEFAULT_LOOKBACK_MS};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::record::is_stale_marker;
use vigil_storage::LabelSet;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("not incremental yet: {0}")]
pub struct Unsupported(pub String);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Gt => a > b,
            Cmp::Lt => a < b,
            Cmp::Ge => a >= b,
            Cmp::Le => a <= b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    Sum,
    Count,
    Min,
    Max,
    Group,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Plan {
    matchers: Vec<Matcher>,
    filter: Option<(Cmp, f64)>,
    aggregate: Option<(Agg, Option<LabelModifier>)>,
}

fn selector_matchers(expr: &Expr) -> Option<Vec<Matcher>> {
    match expr {
        Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => {
            vigil_queries::promql::Evaluator::selector_matchers(vs).ok()
        }
        Expr::Paren(p) => selector_matchers(&p.expr),
        _ => None,
    }
}

fn comparison(op: TokenType) -> Option<Cmp> {
    Some(match op.id() {
        token::T_EQLC => Cmp::Eq,
        token::T_NEQ => Cmp::Ne,
        token::T_GTR => Cmp::Gt,
        token::T_LSS => Cmp::Lt,
        token::T_GTE => Cmp::Ge,
        token::T_LTE => Cmp::Le,
        _ => return None,
    })
}

/// A selector's matchers and the comparison filter applied to it, if any.
type Filtered = (Vec<Matcher>, Option<(Cmp, f64)>);

fn compile_filtered(expr: &Expr) -> Result<Filtered, Unsupported> {
    if let Some(matchers) = selector_matchers(expr) {
        return Ok((matchers, None));
    }
    match expr {
        Expr::Paren(p) => compile_filtered(&p.expr),
        Expr::Binary(b) => {
            let cmp = comparison(b.op).ok_or_else(|| Unsupported(format!("operator {}", b.op)))?;
            if b.modifier.as_ref().is_some_and(|m| m.return_bool) {
                return Err(Unsupported("comparison with bool".into()));
            }
            let Expr::NumberLiteral(n) = b.rhs.as_ref() else {
                return Err(Unsupported("comparison with a non-literal".into()));
            };
            let matchers = selector_matchers(&b.lhs)
                .ok_or_else(|| Unsupported("comparison of a non-selector".into()))?;
            Ok((matchers, Some((cmp, n.val))))
        }
        other => Err(Unsupported(format!("{other}"))),
    }
}

/// Compiles `expr` into a plan, or says why it stays on the ad hoc path.
pub fn compile(expr: &Expr) -> Result<Plan, Unsupported> {
    if let Expr::Aggregate(agg) = expr {
        let op = match agg.op.id() {
            token::T_SUM => Agg::Sum,
            token::T_COUNT => Agg::Count,
            token::T_MIN => Agg::Min,
            token::T_MAX => Agg::Max,
            token::T_GROUP => Agg::Group,
            _ => return Err(Unsupported(format!("aggregation {}", agg.op))),
        };
        let (matchers, filter) = compile_filtered(&agg.expr)?;
        return Ok(Plan {
            matchers,
            filter,
            aggregate: Some((op, agg.modifier.clone())),
        });
    }
    let (matchers, filter) = compile_filtered(expr)?;
    Ok(Plan {
        matchers,
        filter,
        aggregate: None,
    })
}

/// Grouping labels as the aggregation keeps them (sorted name/value pairs).
fn group_key(labels: &LabelSet, modifier: &Option<LabelModifier>) -> Vec<(String, String)> {
    let keep = |name: &str| match modifier {
        None => false,
        Some(LabelModifier::Include(list)) => list.labels.iter().any(|l| l == name),
        Some(LabelModifier::Exclude(list)) => {
            name != METRIC_NAME && !list.labels.iter().any(|l| l == name)
        }
    };
    labels
        .labels()
        .iter()
        .filter(|label| keep(&label.name))
        .map(|label| (label.name.clone(), label.value.clone()))
        .collect()
}

type Key = Vec<(String, String)>;

/// Runs `plan` over `samples` (any order; they are fed in time order) and returns the
/// maintained result at each of `ticks` (ascending), as label sets and values.
pub fn run(
    plan: &Plan,
    samples: &[(LabelSet, i64, f64)],
    ticks: &[i64],
) -> Vec<(i64, BTreeMap<LabelSet, f64>)> {
    let maintained = Maintained::start(plan.clone());
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|s| s.1);
    maintained.push(sorted);
    ticks
        .iter()
        .map(|&tick| (tick, maintained.advance(tick)))
        .collect()
}

enum Command {
    Push(Vec<(LabelSet, i64, f64)>),
    Advance(i64, std::sync::mpsc::Sender<BTreeMap<LabelSet, f64>>),
}

/// A plan maintained by a timely worker on its own thread. Samples are pushed as they
/// arrive; `advance(t)` closes time `t` and answers the maintained vector at `t`.
pub struct Maintained {
    commands: Option<std::sync::mpsc::Sender<Command>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Maintained {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop.
        self.commands.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Maintained {
    pub fn start(plan: Plan) -> Maintained {
        let (commands, receiver) = std::sync::mpsc::channel::<Command>();
        let worker = std::thread::Builder::new()
            .name("vigil-dataflow".into())
            .spawn(move || {
                // `execute_directly` wants a shareable closure; the worker is the only user.
                let receiver = Mutex::new(receiver);
                timely::execute_directly(move |worker| drive(worker, plan.clone(), &receiver))
            })
            .ok();
        Maintained {
            commands: Some(commands),
            worker,
        }
    }

    /// Samples in time order, none older than the last `advance`.
    pub fn push(&self, samples: Vec<(LabelSet, i64, f64)>) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::Push(samples));
        }
    }

    /// Closes `tick` and returns the maintained result at it.
    pub fn advance(&self, tick: i64) -> BTreeMap<LabelSet, f64> {
        let (reply, answer) = std::sync::mpsc::channel();
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::Advance(tick, reply));
        }
        answer.recv().unwrap_or_default()
    }
}

fn drive(
    worker: &mut timely::worker::Worker,
    plan: Plan,
    receiver: &Mutex<std::sync::mpsc::Receiver<Command>>,
) {
    let Ok(receiver) = receiver.lock() else {
        return;
    };
    let keys: Arc<std::sync::RwLock<Vec<Key>>> = Arc::default();
    let updates: Arc<Mutex<Vec<(Row, u64, isize)>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = updates.clone();
    let mut input: InputSession<u64, (u64, u64), isize> = InputSession::new();
    let dataflow_keys = keys.clone();
    let filter = plan.filter;
    let aggregate = plan.aggregate.as_ref().map(|(agg, _)| *agg);
    let probe = worker.dataflow(|scope| {
        let vector = input.to_collection(scope);
        let filtered = match filter {
            Some((cmp, scalar)) => {
                vector.filter(move |(_, bits)| cmp.holds(f64::from_bits(*bits), scalar))
            }
            None => vector,
        };
        // Output rows: (series id or u64::MAX for groups, group key) → value bits.
        let output = match aggregate {
            None => filtered.map(|(id, bits)| ((id, Vec::new()), bits)),
            Some(agg) => filtered
                .map(move |(id, bits)| {
                    let key = dataflow_keys
                        .read()
                        .ok()
                        .and_then(|keys| keys.get(id as usize).cloned())
                        .unwrap_or_default();
                    (key, bits)
                })
                .reduce(move |_key, inputs, output| {
                    let mut values = Vec::new();
                    for (bits, diff) in inputs {
                        for _ in 0..(*diff).max(0) {
                            values.push(f64::from_bits(**bits));
                        }
                    }
                    if values.is_empty() {
                        return;
                    }
                    let value = match agg {
                        Agg::Sum => values.iter().sum::<f64>(),
                        Agg::Count => values.len() as f64,
                        Agg::Group => 1.0,
                        Agg::Min => values.iter().copied().fold(f64::NAN, |a, v| {
                            if a.is_nan() || v < a {
                                v
                            } else {
                                a
                            }
                        }),
                        Agg::Max => values.iter().copied().fold(f64::NAN, |a, v| {
                            if a.is_nan() || v > a {
                                v
                            } else {
                                a
                            }
                        }),
                    };
                    output.push((value.to_bits(), 1));
                })
                .map(|(key, bits)| ((u64::MAX, key), bits)),
        };
        output
            .inspect(move |(((id, key), bits), time, diff)| {
                if let Ok(mut sink) = sink.lock() {
                    sink.push(((*id, key.clone(), *bits), *time, *diff));
                }
            })
            .probe()
            .0
    });
    // The driver: series ids, each series' value in the instant vector, expiries.
    // Series id by labels; `None` for series the selector does not match.
    let mut ids: HashMap<LabelSet, Option<u64>> = HashMap::new();
    let mut labels_of: Vec<LabelSet> = Vec::new();
    let mut pending: std::collections::VecDeque<(i64, u64, f64)> = Default::default();
    let mut current: HashMap<u64, (u64, i64)> = HashMap::new();
    // When series may leave the lookback; checked (and pushed back if the series was
    // refreshed meanwhile) when the time comes, so unchanged samples cost no scheduling.
    let mut expiries: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    let mut counts: HashMap<Row, isize> = HashMap::new();
    while let Ok(command) = receiver.recv() {
        match command {
            Command::Push(samples) => {
                for (labels, t, f) in samples {
                    let id = match ids.get(&labels) {
                        Some(Some(id)) => *id,
                        Some(None) => continue,
                        None if !matches(&plan.matchers, &labels) => {
                            ids.insert(labels, None);
                            continue;
                        }
                        None => {
                            let id = labels_of.len() as u64;
                            if let Some((_, modifier)) = &plan.aggregate {
                                if let Ok(mut keys) = keys.write() {
                                    keys.push(group_key(&labels, modifier));
                                }
                            }
                            ids.insert(labels.clone(), Some(id));
                            labels_of.push(labels);
                            id
                        }
                    };
                    pending.push_back((t, id, f));
                }
            }
            Command::Advance(tick, reply) => {
                // Everything up to and including `tick`, in time order; at equal times
                // expiries go first (a sample at t replaces what expires at t).
                loop {
                    let next_event = pending.front().map(|e| e.0);
                    let next_expiry = expiries.keys().next().copied();
                    let at = match (next_event, next_expiry) {
                        (Some(e), Some(x)) => e.min(x),
                        (Some(e), None) => e,
                        (None, Some(x)) => x,
                        (None, None) => break,
                    };
                    if at > tick {
                        break;
                    }
                    input.advance_to(at.max(0) as u64);
                    if next_expiry == Some(at) {
                        for id in expiries.remove(&at).unwrap_or_default() {
                            if let Some((bits, t)) = current.get(&id).copied() {
                                if t + DEFAULT_LOOKBACK_MS <= at {
                                    input.remove((id, bits));
                                    current.remove(&id);
                                } else {
                                    expiries
                                        .entry(t + DEFAULT_LOOKBACK_MS)
                                        .or_default()
                                        .push(id);
                                }
                            }
                        }
                    }
                    while let Some(&(t, id, f)) = pending.front() {
                        if t != at {
                            break;
                        }
                        pending.pop_front();
                        if let Some((bits, last)) = current.get_mut(&id) {
                            if *bits == f.to_bits() && !is_stale_marker(f) {
                                // Same value: the vector does not change, only when the
                                // value leaves the lookback does.
                                *last = t;
                                continue;
                            }
                        }
                        if let Some((bits, _)) = current.remove(&id) {
                            input.remove((id, bits));
                        }
                        if !is_stale_marker(f) {
                            input.insert((id, f.to_bits()));
                            current.insert(id, (f.to_bits(), t));
                            expiries
                                .entry(t + DEFAULT_LOOKBACK_MS)
                                .or_default()
                                .push(id);
                        }
                    }
                }
                input.advance_to((tick + 1).max(0) as u64);
                input.flush();
                while probe.less_than(input.time()) {
                    worker.step();
                }
                let fresh = updates
                    .lock()
                    .map(|mut u| std::mem::take(&mut *u))
                    .unwrap_or_default();
                for (row, _, diff) in fresh {
                    let count = counts.entry(row.clone()).or_default();
                    *count += diff;
                    if *count == 0 {
                        counts.remove(&row);
                    }
                }
                let mut result = BTreeMap::new();
                for ((id, key, bits), count) in &counts {
                    if *count <= 0 {
                        continue;
                    }
                    let labels = if *id == u64::MAX {
                        let mut labels = LabelSet::default();
                        for (name, value) in key {
                            labels.set(name, value);
                        }
                        labels
                    } else {
                        labels_of[*id as usize].clone()
                    };
                    result.insert(labels, f64::from_bits(*bits));
                }
                let _ = reply.send(result);
            }
        }
    }
}

/// One output row: series id (`u64::MAX` for an aggregation group), group key, value.
type Row = (u64, Key, u64);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_queries::promql::functions::Point;
    use vigil_queries::promql::memory::MemorySource;
    use vigil_queries::promql::{Evaluator, Value};

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random sample streams: 6 series over 40 minutes with irregular gaps (some
    /// longer than the 5m lookback) and staleness markers; half-integer values, so sums
    /// are exact in any order.
    fn stream(seed: u64) -> Vec<(LabelSet, i64, f64)> {
        let mut rng = Rng(seed);
        let mut samples = Vec::new();
        for s in 0..6 {
            let labels = LabelSet::from_pairs([
                ("__name__", "g"),
                ("job", if s % 2 == 0 { "api" } else { "db" }),
                ("instance", &format!("i{s}")),
            ])
            .expect("labels");
            let mut t = rng.below(60_000) as i64;
            while t < 40 * 60_000 {
                let value = if rng.below(20) == 0 {
                    vigil_storage::record::stale_marker()
                } else if rng.below(3) == 0 {
                    // Repeated values (the common case for scraped gauges).
                    samples
                        .last()
                        .filter(|(l, _, f): &&(LabelSet, i64, f64)| *l == labels && !f.is_nan())
                        .map_or(1.0, |(_, _, f)| *f)
                } else {
                    rng.below(20) as f64 / 2.0
                };
                samples.push((labels.clone(), t, value));
                t += match rng.below(10) {
                    0 => 6 * 60_000 + rng.below(120_000) as i64,
                    _ => 5_000 + rng.below(40_000) as i64,
                };
            }
        }
        samples
    }

    fn ad_hoc(samples: &[(LabelSet, i64, f64)], expr: &Expr, t: i64) -> BTreeMap<LabelSet, f64> {
        let mut source = MemorySource::default();
        for (labels, ts, f) in samples {
            source.add(labels.clone(), [Point { t: *ts, f: *f }]);
        }
        match Evaluator::new(&source, t, t).instant_query(expr, t) {
            Ok(Value::Vector(samples)) => samples.into_iter().map(|s| (s.labels, s.f)).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn incremental_equals_ad_hoc_at_every_tick() {
        let rules = [
            "g",
            "g > 4",
            "g <= 2.5",
            "sum by (job) (g)",
            "count without (instance) (g > 3)",
            "max by (job) (g)",
            "min(g)",
            "group by (job) (g != 0)",
        ];
        let ticks: Vec<i64> = (0..=160).map(|k| k * 15_000).collect();
        for seed in [1u64, 7, 42, 1234, 99_991] {
            let samples = stream(seed);
            for rule in rules {
                let expr = promql_parser::parser::parse(rule).expect("parses");
                let plan = compile(&expr).expect("incremental");
                let maintained = run(&plan, &samples, &ticks);
                assert_eq!(maintained.len(), ticks.len());
                let mut non_empty = 0;
                for (tick, result) in maintained {
                    let expected = ad_hoc(&samples, &expr, tick);
                    non_empty += usize::from(!expected.is_empty());
                    assert_eq!(result, expected, "seed {seed}, {rule} at {tick}");
                }
                // The streams exercise the rule: most ticks have a result.
                assert!(
                    non_empty > ticks.len() / 3,
                    "seed {seed}, {rule}: {non_empty}"
                );
            }
        }
    }

    #[test]
    fn unsupported_constructs_stay_ad_hoc() {
        for rule in [
            "rate(g[5m])",
            "g > bool 1",
            "g offset 5m",
            "topk(1, g)",
            "g + g",
        ] {
            let expr = promql_parser::parser::parse(rule).expect("parses");
            assert!(compile(&expr).is_err(), "{rule}");
        }
    }
}

//! `/api/v1/query`, `/api/v1/query_range`, `format_query`, `parse_query` and `match[]`:
//! the guarded parse (`parse_bounded`, the server's entry point), the JSON tree and the
//! pretty-printed text, then the ad hoc evaluator as an instant and a range query over a
//! small Kubernetes-shaped store, through `PrefetchSource` as the server does, with a
//! deadline and a sample limit.
//!
//! Invariant checked besides "no panic": the range query's last step equals the
//! instant query at the same time (the range path evaluates selectors and range
//! functions for all steps at once, `steps.rs`, a separate implementation), for
//! expressions without `@ start()`/`@ end()` and `step()`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use promql_parser::label::MatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr};
use vigil_queries::promql::{
    parse_bounded, EvalError, Evaluator, MemorySource, Point, PrefetchSource, QueryShape, Series,
    Value, DEFAULT_LOOKBACK_MS,
};
use vigil_storage::LabelSet;

use super::{text, Target};
use crate::features::Features;

pub const TARGET: Target = Target {
    name: "promql",
    init,
    run,
    mutate: None,
    dict: &[
        b"sum",
        b"sum by (job) (",
        b" without (instance)",
        b"rate(",
        b"irate(",
        b"increase(",
        b"histogram_quantile(0.9, ",
        b"label_replace(",
        b"label_join(",
        b"topk(3, ",
        b"bottomk(",
        b"quantile(0.5, ",
        b"count_values(\"v\", ",
        b"absent(",
        b"absent_over_time(",
        b"avg_over_time(",
        b"quantile_over_time(0.9, ",
        b"predict_linear(",
        b"deriv(",
        b"holt_winters(",
        b"double_exponential_smoothing(",
        b"clamp(",
        b"round(",
        b"timestamp(",
        b"time()",
        b"vector(1)",
        b"scalar(",
        b"sort_desc(",
        b"limitk(2, ",
        b"limit_ratio(0.5, ",
        b"[5m]",
        b"[1h:1m]",
        b"[5m:]",
        b"[0s]",
        b" offset 5m",
        b" offset -1h",
        b" @ start()",
        b" @ end()",
        b" @ 1e10",
        b" @ -1e300",
        b" on (job) group_left (pod) ",
        b" ignoring (code) group_right ",
        b" and ",
        b" or ",
        b" unless ",
        b" bool ",
        b" > ",
        b" / ",
        b" ^ ",
        b" % ",
        b" atan2 ",
        b"{job=\"api\"}",
        b"{__name__=~\".+\"}",
        b"{job!~\"a|b\"}",
        b"=~",
        b"!=",
        b"up",
        b"http_requests_total",
        b"http_request_duration_seconds_bucket",
        b"container_cpu_usage_seconds_total",
        b"kube_pod_info",
        b"NaN",
        b"Inf",
        b"0x1f",
        b"1e-300",
        b"# comment\n",
        b"`raw`",
        b"\"\\u00e9\"",
    ],
    nest: &[
        b"(", b"-", b"sum(", b"abs(", b"rate(", b"{", b"[", b"1+", b"x or ",
    ],
    max_len: 16 << 10,
};

const STEP_MS: i64 = 60_000;
/// The store holds samples from 0 to 1 h.
const END_MS: i64 = 3_600_000;
const START_MS: i64 = 1_800_000;
const DEADLINE: Duration = Duration::from_secs(1);
const MAX_SAMPLES: usize = 1_000_000;

fn store() -> &'static MemorySource {
    static STORE: OnceLock<MemorySource> = OnceLock::new();
    STORE.get_or_init(build_store)
}

fn init() {
    store();
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::from_pairs(pairs.iter().copied()).expect("the store's labels are valid")
}

/// Samples every 15 s over an hour: counters (one with a reset), gauges, classic
/// histogram buckets, info metrics, a series that goes stale, NaN and infinities.
fn build_store() -> MemorySource {
    let mut store = MemorySource::default();
    let times = || (0..=END_MS).step_by(15_000);
    let counter = |rate: f64, reset: Option<i64>| {
        times()
            .map(move |t| {
                let base = reset.filter(|r| t >= *r).unwrap_or(0);
                Point {
                    t,
                    f: rate * ((t - base) as f64 / 1000.0),
                }
            })
            .collect::<Vec<_>>()
    };
    for (job, instance, up) in [
        ("node", "a:9100", 1.0),
        ("node", "b:9100", 0.0),
        ("api", "c:8080", 1.0),
    ] {
        let points = times().map(|t| Point { t, f: up });
        store.add(
            labels(&[("__name__", "up"), ("job", job), ("instance", instance)]),
            points,
        );
        store.add(
            labels(&[
                ("__name__", "node_memory_MemAvailable_bytes"),
                ("job", job),
                ("instance", instance),
            ]),
            times().map(|t| Point {
                t,
                f: 1e9 + (t % 600_000) as f64 * 1e3,
            }),
        );
    }
    for (method, code, rate, reset) in [
        ("GET", "200", 10.0, None),
        ("GET", "500", 0.5, Some(1_200_000)),
        ("POST", "200", 2.0, None),
    ] {
        store.add(
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", "c:8080"),
                ("method", method),
                ("code", code),
            ]),
            counter(rate, reset),
        );
    }
    for (le, share) in [("0.1", 0.5), ("0.5", 0.8), ("1", 0.95), ("+Inf", 1.0)] {
        store.add(
            labels(&[
                ("__name__", "http_request_duration_seconds_bucket"),
                ("job", "api"),
                ("le", le),
            ]),
            counter(12.0 * share, None),
        );
    }
    store.add(
        labels(&[
            ("__name__", "http_request_duration_seconds_count"),
            ("job", "api"),
        ]),
        counter(12.0, None),
    );
    store.add(
        labels(&[
            ("__name__", "http_request_duration_seconds_sum"),
            ("job", "api"),
        ]),
        counter(1.7, None),
    );
    for (namespace, pod, node) in [
        ("default", "web-1", "n1"),
        ("default", "web-2", "n2"),
        ("kube-system", "dns-1", "n1"),
    ] {
        store.add(
            labels(&[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("namespace", namespace),
                ("pod", pod),
                ("container", "main"),
            ]),
            counter(0.25, None),
        );
        store.add(
            labels(&[
                ("__name__", "kube_pod_info"),
                ("namespace", namespace),
                ("pod", pod),
                ("node", node),
            ]),
            times().map(|t| Point { t, f: 1.0 }),
        );
    }
    // Goes stale half-way, then odd values.
    let stale = f64::from_bits(vigil_storage::STALE_NAN_BITS);
    store.add(
        labels(&[("__name__", "flappy"), ("job", "batch")]),
        times().map(|t| Point {
            t,
            f: match t {
                t if t == END_MS / 2 => stale,
                t if t > END_MS / 2 && t < END_MS * 3 / 4 => f64::NAN,
                t if t >= END_MS * 3 / 4 && t % 30_000 == 0 => f64::INFINITY,
                t => -(t as f64),
            },
        }),
    );
    store
}

fn run(input: &[u8], features: &mut Features) {
    let query = text(input, features);
    let expr = match parse_bounded(&query, QueryShape::default()) {
        Ok(expr) => expr,
        Err(message) => {
            features.error("parse", &message);
            return;
        }
    };
    let mut shape = Shape::default();
    walk(&expr, features, &mut shape, 0);
    // `format_query` and `parse_query`.
    let pretty = expr.prettify();
    features.add_kv("pretty-lines", pretty.lines().count().min(8));
    if let Err(err) = serde_json::to_string(&expr) {
        features.error("json", &err.to_string());
    }
    let source = store();
    // One deadline for the pair: each query honours it, and together they stay inside
    // the fuzzer's per-input budget (two full deadlines back to back would not).
    let deadline = Instant::now() + DEADLINE;
    let instant = {
        let prefetch = PrefetchSource::new(source, &expr, END_MS, END_MS, DEFAULT_LOOKBACK_MS);
        let mut evaluator = Evaluator::new(&prefetch, END_MS, END_MS);
        evaluator.deadline = Some(deadline);
        evaluator.max_samples = MAX_SAMPLES;
        let result = evaluator.instant_query(&expr, END_MS);
        record("instant", &result, features);
        features.count("warnings", evaluator.annotations().warnings.len());
        result
    };
    // The range API takes instant vectors and scalars only.
    if !matches!(expr.value_type(), ValueType::Vector | ValueType::Scalar) {
        return;
    }
    let prefetch = PrefetchSource::new(source, &expr, START_MS, END_MS, DEFAULT_LOOKBACK_MS);
    let mut evaluator = Evaluator::new(&prefetch, START_MS, END_MS);
    evaluator.deadline = Some(deadline);
    evaluator.max_samples = MAX_SAMPLES;
    let range = evaluator
        .range_query(&expr, START_MS, END_MS, STEP_MS)
        .map(Value::Matrix);
    record("range", &range, features);
    if !shape.query_relative && !query.contains("step") {
        if let (Ok(instant), Ok(Value::Matrix(range))) = (&instant, &range) {
            last_step_agrees(instant, range);
        }
    }
}

fn record(kind: &str, result: &Result<Value, EvalError>, features: &mut Features) {
    match result {
        Ok(value) => {
            let len = match value {
                Value::Vector(samples) => samples.len(),
                Value::Matrix(series) => series.len(),
                Value::Scalar(_) | Value::String(_) => 1,
            };
            features.count(&format!("{kind}-{}", value.type_name()), len);
        }
        Err(err) => {
            let tag = match err {
                EvalError::Unsupported(_) => "unsupported",
                EvalError::Execution(_) => "execution",
                EvalError::Storage(_) => "storage",
                EvalError::TooManySamples => "too-many-samples",
                EvalError::Timeout(_) => "timeout",
            };
            features.error(&format!("{kind}-{tag}"), &err.to_string());
        }
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The range query's point at its last step against the instant query at that time.
fn last_step_agrees(instant: &Value, range: &[Series]) {
    let at_end: HashMap<&LabelSet, f64> = range
        .iter()
        .filter_map(|series| {
            series
                .points
                .iter()
                .find(|p| p.t == END_MS)
                .map(|p| (&series.labels, p.f))
        })
        .collect();
    let expected: Vec<(LabelSet, f64)> = match instant {
        Value::Scalar(f) => vec![(LabelSet::default(), *f)],
        Value::Vector(samples) => samples
            .iter()
            .map(|sample| (sample.labels.clone(), sample.f))
            .collect(),
        Value::Matrix(_) | Value::String(_) => return,
    };
    assert_eq!(
        at_end.len(),
        expected.len(),
        "the range query's last step has {} series, the instant query at that time {}: \
         range {at_end:?}, instant {expected:?}",
        at_end.len(),
        expected.len()
    );
    for (labels, f) in &expected {
        match at_end.get(labels) {
            Some(g) => assert!(
                same(*f, *g),
                "{labels}: the instant query gives {f}, the range query's last step {g}"
            ),
            None => panic!("{labels} is in the instant query's result, not in the range query's last step: {at_end:?}"),
        }
    }
}

#[derive(Default)]
struct Shape {
    /// `@ start()` or `@ end()`: the instant and the range query mean different times.
    query_relative: bool,
}

fn at_feature(at: &Option<AtModifier>, features: &mut Features, shape: &mut Shape) {
    match at {
        Some(AtModifier::Start) | Some(AtModifier::End) => {
            shape.query_relative = true;
            features.add("at-start-end");
        }
        Some(AtModifier::At(_)) => features.add("at-time"),
        None => {}
    }
}

/// Syntax features: node kinds, functions, operators, modifiers, nesting depth.
fn walk(expr: &Expr, features: &mut Features, shape: &mut Shape, depth: usize) {
    features.count("depth", depth);
    match expr {
        Expr::Aggregate(agg) => {
            features.add_kv("agg", agg.op);
            features.add_kv("agg-grouping", agg.modifier.is_some());
            if let Some(param) = &agg.param {
                walk(param, features, shape, depth + 1);
            }
            walk(&agg.expr, features, shape, depth + 1);
        }
        Expr::Unary(unary) => {
            features.add("unary");
            walk(&unary.expr, features, shape, depth + 1);
        }
        Expr::Binary(binary) => {
            features.add_kv("binary", binary.op);
            if let Some(modifier) = &binary.modifier {
                features.add_kv("card", format!("{:?}", modifier.card));
                features.add_kv("bool", modifier.return_bool);
                features.add_kv("matching", modifier.matching.is_some());
            }
            walk(&binary.lhs, features, shape, depth + 1);
            walk(&binary.rhs, features, shape, depth + 1);
        }
        Expr::Paren(paren) => walk(&paren.expr, features, shape, depth + 1),
        Expr::Subquery(subquery) => {
            features.add_kv("subquery-step", subquery.step.is_some());
            features.add_kv("offset", subquery.offset.is_some());
            at_feature(&subquery.at, features, shape);
            walk(&subquery.expr, features, shape, depth + 1);
        }
        Expr::NumberLiteral(number) => {
            features.add_kv("number-finite", number.val.is_finite());
        }
        Expr::StringLiteral(_) => features.add("string"),
        Expr::VectorSelector(selector) => selector_features(selector, features, shape),
        Expr::MatrixSelector(matrix) => {
            features.add("matrix");
            selector_features(&matrix.vs, features, shape);
        }
        Expr::Call(call) => {
            features.add_kv("call", call.func.name);
            for arg in &call.args.args {
                walk(arg, features, shape, depth + 1);
            }
        }
        Expr::Extension(_) => features.add("extension"),
    }
}

fn selector_features(
    selector: &promql_parser::parser::VectorSelector,
    features: &mut Features,
    shape: &mut Shape,
) {
    features.add_kv("selector-name", selector.name.is_some());
    features.add_kv("offset", selector.offset.is_some());
    at_feature(&selector.at, features, shape);
    features.count("or-matchers", selector.matchers.or_matchers.len());
    for matcher in &selector.matchers.matchers {
        let op = match matcher.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Re(_) => "=~",
            MatchOp::NotRe(_) => "!~",
        };
        features.add_kv("matcher", op);
    }
}

//! Function calls: range functions over the shared pure functions, instant functions,
//! and the label functions.
//!
//! Calls evaluate their own arguments (a range argument's window, a scalar parameter
//! before a vector), so they need the evaluator. They reach it through [`CallContext`],
//! the few things a call asks of it, defined here and implemented by `Evaluator` in
//! `eval.rs`: the dispatcher depends on this module, never the reverse.

use promql_parser::parser::{Call, Expr};
use regex::Regex;
use vigil_storage::labels::METRIC_NAME;

use super::error::{EvalError, EvalResult};
use super::functions as f;
use super::functions::Point;
use super::labels::format_value;
use super::value::{Sample, Value};

/// What a function call needs from the evaluator running it.
pub(crate) trait CallContext {
    /// Evaluates an argument as an instant query at `t`.
    fn eval(&self, expr: &Expr, t: i64) -> EvalResult<Value>;
    /// The window a range-vector argument covers at `t`.
    fn window_of(&self, expr: &Expr, t: i64) -> Option<f::Window>;
    /// The query's start (for `start()` and `range()`), in milliseconds.
    fn query_start(&self) -> i64;
    /// The query's end (for `end()` and `range()`), in milliseconds.
    fn query_end(&self) -> i64;
    /// The range query's step (0 for an instant query), in milliseconds.
    fn query_step_ms(&self) -> i64;
    /// Records a `PromQL warning: …` annotation.
    fn warn(&self, message: String);
    /// Records a `PromQL info: …` annotation.
    fn info(&self, message: String);
}

fn scalar_arg(evaluator: &impl CallContext, expr: &Expr, t: i64) -> EvalResult<f64> {
    match evaluator.eval(expr, t)? {
        Value::Scalar(v) => Ok(v),
        other => Err(EvalError::Execution(format!(
            "expected scalar, got {}",
            other.type_name()
        ))),
    }
}

fn string_arg(evaluator: &impl CallContext, expr: &Expr, t: i64) -> EvalResult<String> {
    match evaluator.eval(expr, t)? {
        Value::String(v) => Ok(v),
        other => Err(EvalError::Execution(format!(
            "expected string, got {}",
            other.type_name()
        ))),
    }
}

fn vector_arg(evaluator: &impl CallContext, expr: &Expr, t: i64) -> EvalResult<Vec<Sample>> {
    match evaluator.eval(expr, t)? {
        Value::Vector(v) => Ok(v),
        other => Err(EvalError::Execution(format!(
            "expected instant vector, got {}",
            other.type_name()
        ))),
    }
}

fn drop_name(mut samples: Vec<Sample>) -> EvalResult<Vec<Sample>> {
    for sample in &mut samples {
        sample.drop_name = true;
    }
    Ok(samples)
}

fn map_values(samples: Vec<Sample>, t: i64, op: impl Fn(f64) -> f64) -> EvalResult<Value> {
    let mapped = samples
        .into_iter()
        .map(|mut s| {
            s.f = op(s.f);
            s.t = t;
            s
        })
        .collect();
    drop_name(mapped).map(Value::Vector)
}

/// Evaluates a range function: `op(points, window)` per series of the matrix argument.
fn range_function(
    evaluator: &impl CallContext,
    call: &Call,
    t: i64,
    keep_name: bool,
    op: impl Fn(&[Point], f::Window) -> Option<f64>,
) -> EvalResult<Value> {
    let arg = call
        .args
        .args
        .iter()
        .find(|arg| evaluator.window_of(arg, t).is_some())
        .ok_or_else(|| EvalError::Execution(format!("{} needs a range vector", call.func.name)))?;
    let window = evaluator
        .window_of(arg, t)
        .unwrap_or(f::Window { start: t, end: t });
    let Value::Matrix(series) = evaluator.eval(arg, t)? else {
        return Err(EvalError::Execution("expected range vector".into()));
    };
    let counter_function = matches!(call.func.name, "rate" | "increase");
    let mut out = Vec::new();
    for s in series {
        if counter_function {
            if let Some(info) = not_a_counter(&s.labels) {
                evaluator.info(info);
            }
        }
        if let Some(value) = op(&s.points, window) {
            out.push(Sample {
                labels: s.labels,
                t,
                f: value,
                drop_name: s.drop_name || !keep_name,
            });
        }
    }
    Ok(Value::Vector(out))
}

/// Prometheus' info for `rate`/`increase` over a series whose name does not look like a
/// counter's.
pub(crate) fn not_a_counter(labels: &vigil_storage::LabelSet) -> Option<String> {
    let name = labels.metric_name().unwrap_or("");
    (!["_total", "_sum", "_count", "_bucket"]
        .iter()
        .any(|suffix| name.ends_with(suffix)))
    .then(|| {
        format!(
            "metric might not be a counter, name does not end in \
             _total/_sum/_count/_bucket: {name:?}"
        )
    })
}

/// A range function without parameters: its value from the window's samples.
#[derive(Debug, Clone, Copy)]
pub struct RangeKernel {
    pub apply: fn(&[Point], f::Window) -> Option<f64>,
    /// `last_over_time` and `first_over_time` keep the metric name.
    pub keep_name: bool,
    /// The value depends on where the window lies, not only on its samples
    /// (`rate`, `increase`, `delta` extrapolate to the window's edges).
    pub uses_window: bool,
}

/// The range functions that take only a range vector, shared by the ad hoc evaluator
/// and the incremental engine.
pub fn range_kernel(name: &str) -> Option<RangeKernel> {
    let points_only = |apply: fn(&[Point], f::Window) -> Option<f64>| RangeKernel {
        apply,
        keep_name: false,
        uses_window: false,
    };
    Some(match name {
        "rate" => RangeKernel {
            apply: |p, w| f::extrapolated_rate(p, w, true, true),
            keep_name: false,
            uses_window: true,
        },
        "increase" => RangeKernel {
            apply: |p, w| f::extrapolated_rate(p, w, true, false),
            keep_name: false,
            uses_window: true,
        },
        "delta" => RangeKernel {
            apply: |p, w| f::extrapolated_rate(p, w, false, false),
            keep_name: false,
            uses_window: true,
        },
        "irate" => points_only(|p, _| f::instant_value(p, true)),
        "idelta" => points_only(|p, _| f::instant_value(p, false)),
        "resets" => points_only(|p, _| f::resets(p)),
        "changes" => points_only(|p, _| f::changes(p)),
        "deriv" => points_only(|p, _| f::deriv(p)),
        "sum_over_time" => points_only(|p, _| f::sum_over_time(p)),
        "avg_over_time" => points_only(|p, _| f::avg_over_time(p)),
        "count_over_time" => points_only(|p, _| f::count_over_time(p)),
        "min_over_time" => points_only(|p, _| f::min_over_time(p)),
        "max_over_time" => points_only(|p, _| f::max_over_time(p)),
        "present_over_time" => points_only(|p, _| f::present_over_time(p)),
        "stddev_over_time" => points_only(|p, _| f::stddev_over_time(p)),
        "stdvar_over_time" => points_only(|p, _| f::stdvar_over_time(p)),
        "mad_over_time" => points_only(|p, _| f::mad_over_time(p)),
        "ts_of_min_over_time" => points_only(|p, _| f::ts_of_extreme(p, false)),
        "ts_of_max_over_time" => points_only(|p, _| f::ts_of_extreme(p, true)),
        "ts_of_first_over_time" => {
            points_only(|p, _| p.first().map(|point| point.t as f64 / 1000.0))
        }
        "ts_of_last_over_time" => points_only(|p, _| p.last().map(|point| point.t as f64 / 1000.0)),
        "last_over_time" => RangeKernel {
            keep_name: true,
            ..points_only(|p, _| f::last_over_time(p))
        },
        "first_over_time" => RangeKernel {
            keep_name: true,
            ..points_only(|p, _| f::first_over_time(p))
        },
        _ => return None,
    })
}

pub(crate) fn eval_call(evaluator: &impl CallContext, call: &Call, t: i64) -> EvalResult<Value> {
    let args = &call.args.args;
    let name = call.func.name;
    let arg = |idx: usize| -> EvalResult<&Expr> {
        args.get(idx)
            .map(|boxed| boxed.as_ref())
            .ok_or_else(|| EvalError::Execution(format!("missing argument {idx} of {name}")))
    };
    if name.starts_with("sort") && evaluator.query_step_ms() > 0 {
        evaluator.warn(
            "sort is ineffective for range queries since results are always ordered by labels"
                .into(),
        );
    }
    if let Some(kernel) = range_kernel(name) {
        return range_function(evaluator, call, t, kernel.keep_name, kernel.apply);
    }
    match name {
        "predict_linear" => {
            let seconds = scalar_arg(evaluator, arg(1)?, t)?;
            // The intercept is at the evaluation time, even under `@` (funcPredictLinear).
            range_function(evaluator, call, t, false, |p, _| {
                f::predict_linear(p, t, seconds)
            })
        }
        "quantile_over_time" => {
            let phi = scalar_arg(evaluator, arg(0)?, t)?;
            warn_quantile(evaluator, phi);
            range_function(evaluator, call, t, false, |p, _| {
                f::quantile_over_time(phi, p)
            })
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = scalar_arg(evaluator, arg(1)?, t)?;
            let tf = scalar_arg(evaluator, arg(2)?, t)?;
            if sf <= 0.0 || sf >= 1.0 {
                return Err(EvalError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(EvalError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                )));
            }
            range_function(evaluator, call, t, false, |p, _| {
                f::double_exponential_smoothing(p, sf, tf)
            })
        }
        "histogram_quantile" => {
            let phi = scalar_arg(evaluator, arg(0)?, t)?;
            let samples = vector_arg(evaluator, arg(1)?, t)?;
            warn_quantile(evaluator, phi);
            let groups = bucket_groups(evaluator, samples);
            let mut out = Vec::with_capacity(groups.len());
            for (labels, (name, buckets)) in groups {
                let (value, fixes) = f::bucket_quantile(phi, buckets);
                note_fixes(evaluator, fixes, &name);
                out.push(named_dropped(labels, t, value));
            }
            Ok(Value::Vector(out))
        }
        "histogram_quantiles" => {
            let samples = vector_arg(evaluator, arg(0)?, t)?;
            let label = string_arg(evaluator, arg(1)?, t)?;
            let mut phis = Vec::new();
            for expr in args.iter().skip(2) {
                let phi = scalar_arg(evaluator, expr, t)?;
                warn_quantile(evaluator, phi);
                phis.push(phi);
            }
            let groups = bucket_groups(evaluator, samples);
            let mut out = Vec::with_capacity(groups.len() * phis.len());
            for (labels, (name, buckets)) in groups {
                for phi in &phis {
                    let (value, fixes) = f::bucket_quantile(*phi, buckets.clone());
                    note_fixes(evaluator, fixes, &name);
                    let mut labels = labels.clone();
                    labels.set(&label, &quantile_label(*phi));
                    out.push(named_dropped(labels, t, value));
                }
            }
            Ok(Value::Vector(out))
        }
        "histogram_fraction" => {
            let lower = scalar_arg(evaluator, arg(0)?, t)?;
            let upper = scalar_arg(evaluator, arg(1)?, t)?;
            let samples = vector_arg(evaluator, arg(2)?, t)?;
            let groups = bucket_groups(evaluator, samples);
            let mut out = Vec::with_capacity(groups.len());
            for (labels, (name, buckets)) in groups {
                let (value, fixes) = f::bucket_fraction(lower, upper, buckets);
                note_fixes(evaluator, fixes, &name);
                out.push(named_dropped(labels, t, value));
            }
            Ok(Value::Vector(out))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut samples = vector_arg(evaluator, arg(0)?, t)?;
            let mut names = Vec::new();
            for expr in args.iter().skip(1) {
                names.push(string_arg(evaluator, expr, t)?);
            }
            let descending = name == "sort_by_label_desc";
            samples.sort_by(|a, b| {
                let mut order = std::cmp::Ordering::Equal;
                for label in &names {
                    order = f::natural_cmp(
                        a.labels.get(label).unwrap_or(""),
                        b.labels.get(label).unwrap_or(""),
                    );
                    if order.is_ne() {
                        break;
                    }
                }
                let order = order.then_with(|| a.labels.cmp(&b.labels));
                if descending {
                    order.reverse()
                } else {
                    order
                }
            });
            Ok(Value::Vector(samples))
        }
        "start" => Ok(Value::Scalar(evaluator.query_start() as f64 / 1000.0)),
        "end" => Ok(Value::Scalar(evaluator.query_end() as f64 / 1000.0)),
        "step" => Ok(Value::Scalar(evaluator.query_step_ms() as f64 / 1000.0)),
        "range" => Ok(Value::Scalar(
            (evaluator.query_end() - evaluator.query_start()) as f64 / 1000.0,
        )),
        "min_of" | "max_of" => {
            let a = scalar_arg(evaluator, arg(0)?, t)?;
            let b = scalar_arg(evaluator, arg(1)?, t)?;
            // Go's math.Min/Max: NaN wins.
            Ok(Value::Scalar(if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if name == "min_of" {
                a.min(b)
            } else {
                a.max(b)
            }))
        }
        "absent_over_time" => {
            let Value::Matrix(series) = evaluator.eval(arg(0)?, t)? else {
                return Err(EvalError::Execution("expected range vector".into()));
            };
            Ok(Value::Vector(absent(series.is_empty(), arg(0)?, t)))
        }
        "absent" => {
            let samples = vector_arg(evaluator, arg(0)?, t)?;
            Ok(Value::Vector(absent(samples.is_empty(), arg(0)?, t)))
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "scalar" => {
            let samples = vector_arg(evaluator, arg(0)?, t)?;
            Ok(Value::Scalar(if samples.len() == 1 {
                samples[0].f
            } else {
                f64::NAN
            }))
        }
        "vector" => {
            let value = scalar_arg(evaluator, arg(0)?, t)?;
            Ok(Value::Vector(vec![Sample::new(
                Default::default(),
                t,
                value,
            )]))
        }
        "timestamp" => {
            let samples = vector_arg(evaluator, arg(0)?, t)?;
            let stamped = samples
                .into_iter()
                .map(|mut s| {
                    s.f = s.t as f64 / 1000.0;
                    s.t = t;
                    s
                })
                .collect();
            drop_name(stamped).map(Value::Vector)
        }
        "sort" | "sort_desc" => {
            let mut samples = vector_arg(evaluator, arg(0)?, t)?;
            let descending = name == "sort_desc";
            samples.sort_by(|a, b| f::cmp_nan_last(a.f, b.f, descending));
            Ok(Value::Vector(samples))
        }
        "clamp" | "clamp_min" | "clamp_max" | "round" => {
            let samples = vector_arg(evaluator, arg(0)?, t)?;
            let mut params = Vec::new();
            for expr in args.iter().skip(1) {
                params.push(scalar_arg(evaluator, expr, t)?);
            }
            let Some(op) = elementwise(name, &params) else {
                return Err(EvalError::Execution(format!("wrong arguments to {name}")));
            };
            if name == "clamp" && params.get(1) < params.first() {
                return Ok(Value::Vector(Vec::new()));
            }
            map_values(samples, t, move |v| op(v))
        }
        "label_replace" => label_replace(evaluator, call, t),
        "label_join" => label_join(evaluator, call, t),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let samples = match args.first() {
                Some(expr) => vector_arg(evaluator, expr, t)?,
                None => vec![Sample::new(Default::default(), t, t as f64 / 1000.0)],
            };
            map_values(samples, t, |v| date_part(name, v))
        }
        _ => {
            let Some(op) = math_function(name) else {
                return Err(EvalError::Unsupported(format!("function {name}")));
            };
            let samples = vector_arg(evaluator, arg(0)?, t)?;
            map_values(samples, t, op)
        }
    }
}

/// The quantile label of `histogram_quantiles`: the shortest decimal, with `.0` on
/// whole numbers (`0.0`, `0.25`, `1.0`).
fn quantile_label(phi: f64) -> String {
    let text = format_value(phi);
    if phi.is_finite() && !text.contains(['.', 'e']) {
        format!("{text}.0")
    } else {
        text
    }
}

fn named_dropped(labels: vigil_storage::LabelSet, t: i64, f: f64) -> Sample {
    Sample {
        labels,
        t,
        f,
        drop_name: true,
    }
}

fn warn_quantile(evaluator: &impl CallContext, phi: f64) {
    if !(0.0..=1.0).contains(&phi) {
        evaluator.warn(format!(
            "quantile value should be between 0 and 1, got {}",
            format_value(phi)
        ));
    }
}

fn note_fixes(evaluator: &impl CallContext, fixes: f::BucketFixes, name: &str) {
    if fixes.forced_monotonic {
        evaluator.info(format!(
            "input to histogram_quantile needed to be fixed for monotonicity (see \
             https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) \
             for metric name {name:?}"
        ));
    }
}

/// Classic histogram buckets grouped by their labels without `le`,
/// in label order. Samples without a parsable `le` are dropped with a warning.
fn bucket_groups(
    evaluator: &impl CallContext,
    samples: Vec<Sample>,
) -> std::collections::BTreeMap<vigil_storage::LabelSet, (String, Vec<f::Bucket>)> {
    let mut groups: std::collections::BTreeMap<_, (String, Vec<f::Bucket>)> = Default::default();
    for sample in samples {
        let name = sample.labels.get(METRIC_NAME).unwrap_or("").to_string();
        let le = sample.labels.get("le").unwrap_or("");
        let Some(upper_bound) = parse_go_float(le) else {
            evaluator.warn(format!(
                "bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {name:?}"
            ));
            continue;
        };
        // The name stays in the key (two histograms differing only by name are two
        // groups, and collide when the name is dropped at the end, as in Prometheus).
        let mut labels = sample.labels.clone();
        labels.set("le", "");
        groups
            .entry(labels)
            .or_insert_with(|| (name, Vec::new()))
            .1
            .push(f::Bucket {
                upper_bound,
                count: sample.f,
            });
    }
    groups
}

/// Go's `strconv.ParseFloat`: also accepts `+Inf`, `Inf`, `-Inf`, `NaN` in any case.
pub fn parse_go_float(text: &str) -> Option<f64> {
    let trimmed = text.trim_start_matches('+');
    match trimmed.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Some(if text.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ if text.is_empty() => None,
        _ => text.parse().ok(),
    }
}

/// A per-element function with its scalar parameters fixed (`abs`, `clamp_min(…, 0)`,
/// `round(…, 5)` …), shared by the ad hoc evaluator and the incremental engine.
/// `clamp` with `max < min` maps every element to nothing; callers check that case.
pub fn elementwise(
    name: &str,
    params: &[f64],
) -> Option<std::sync::Arc<dyn Fn(f64) -> f64 + Send + Sync>> {
    use std::sync::Arc;
    Some(match (name, params) {
        ("clamp", &[min, max]) => Arc::new(move |v: f64| v.max(min).min(max)),
        ("clamp_min" | "clamp_max", &[bound]) => {
            let is_min = name == "clamp_min";
            Arc::new(move |v: f64| {
                if bound.is_nan() || v.is_nan() {
                    f64::NAN
                } else if is_min {
                    v.max(bound)
                } else {
                    v.min(bound)
                }
            })
        }
        ("round", &[] | &[_]) => {
            let inverse = 1.0 / params.first().copied().unwrap_or(1.0);
            Arc::new(move |v: f64| (v * inverse + 0.5).floor() / inverse)
        }
        (_, &[]) => {
            let op = math_function(name)?;
            Arc::new(op)
        }
        _ => return None,
    })
}

fn math_function(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

/// `absent(v)`: one sample with the equality matchers' labels when `v` is empty.
pub fn absent(empty: bool, expr: &Expr, t: i64) -> Vec<Sample> {
    if !empty {
        return Vec::new();
    }
    let selector = match expr {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels = vigil_storage::LabelSet::default();
    if let Some(selector) = selector {
        let mut seen = std::collections::HashMap::new();
        for matcher in &selector.matchers.matchers {
            if matcher.name == METRIC_NAME {
                continue;
            }
            *seen.entry(matcher.name.clone()).or_insert(0) += 1;
        }
        for matcher in &selector.matchers.matchers {
            if matcher.name != METRIC_NAME
                && matches!(matcher.op, promql_parser::label::MatchOp::Equal)
                && seen.get(&matcher.name) == Some(&1)
            {
                labels.set(&matcher.name, &matcher.value);
            }
        }
    }
    vec![Sample::new(labels, t, 1.0)]
}

fn label_replace(evaluator: &impl CallContext, call: &Call, t: i64) -> EvalResult<Value> {
    let args = &call.args.args;
    let samples = vector_arg(evaluator, &args[0], t)?;
    let rewrite = LabelRewrite::replace(
        string_arg(evaluator, &args[1], t)?,
        string_arg(evaluator, &args[2], t)?,
        string_arg(evaluator, &args[3], t)?,
        &string_arg(evaluator, &args[4], t)?,
    )?;
    Ok(Value::Vector(rewrite.apply_all(samples)))
}

fn label_join(evaluator: &impl CallContext, call: &Call, t: i64) -> EvalResult<Value> {
    let args = &call.args.args;
    let samples = vector_arg(evaluator, &args[0], t)?;
    let mut sources = Vec::new();
    for expr in &args[3..] {
        sources.push(string_arg(evaluator, expr, t)?);
    }
    let rewrite = LabelRewrite::join(
        string_arg(evaluator, &args[1], t)?,
        string_arg(evaluator, &args[2], t)?,
        sources,
    )?;
    Ok(Value::Vector(rewrite.apply_all(samples)))
}

/// `label_replace` / `label_join` with their arguments fixed: a rewrite of each
/// sample's labels, shared by the ad hoc evaluator and the incremental engine.
#[derive(Debug, Clone)]
pub enum LabelRewrite {
    Replace {
        dst: String,
        replacement: String,
        src: String,
        regex: Regex,
    },
    Join {
        dst: String,
        separator: String,
        sources: Vec<String>,
    },
}

impl LabelRewrite {
    pub fn replace(
        dst: String,
        replacement: String,
        src: String,
        pattern: &str,
    ) -> EvalResult<LabelRewrite> {
        let regex = Regex::new(&format!("^(?s:{pattern})$")).map_err(|err| {
            EvalError::Execution(format!(
                "invalid regular expression in label_replace(): {pattern}: {err}"
            ))
        })?;
        if !vigil_storage::labels::is_valid_label_name(&dst) {
            return Err(EvalError::Execution(format!(
                "invalid destination label name in label_replace(): {dst}"
            )));
        }
        Ok(LabelRewrite::Replace {
            dst,
            replacement,
            src,
            regex,
        })
    }

    pub fn join(dst: String, separator: String, sources: Vec<String>) -> EvalResult<LabelRewrite> {
        if !vigil_storage::labels::is_valid_label_name(&dst) {
            return Err(EvalError::Execution(format!(
                "invalid destination label name in label_join(): {dst}"
            )));
        }
        Ok(LabelRewrite::Join {
            dst,
            separator,
            sources,
        })
    }

    pub fn apply(&self, sample: &mut Sample) {
        let dst = match self {
            LabelRewrite::Replace {
                dst,
                replacement,
                src,
                regex,
            } => {
                let source = sample.labels.get(src).unwrap_or("").to_string();
                let Some(captures) = regex.captures(&source) else {
                    return;
                };
                let mut value = String::new();
                captures.expand(replacement, &mut value);
                sample.labels.set(dst, &value);
                dst
            }
            LabelRewrite::Join {
                dst,
                separator,
                sources,
            } => {
                let joined: Vec<&str> = sources
                    .iter()
                    .map(|src| sample.labels.get(src).unwrap_or(""))
                    .collect();
                let value = joined.join(separator);
                sample.labels.set(dst, &value);
                dst
            }
        };
        if dst == METRIC_NAME {
            sample.drop_name = false;
        }
    }

    fn apply_all(&self, mut samples: Vec<Sample>) -> Vec<Sample> {
        for sample in &mut samples {
            self.apply(sample);
        }
        samples
    }
}

/// Date functions over a Unix time in seconds, in UTC.
fn date_part(name: &str, seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let secs = seconds.floor() as i64;
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_march = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_march + 2) / 153;
    let day = doy_march - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    match name {
        "day_of_month" => day as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (month_days[..(month - 1) as usize].iter().sum::<i64>() + day) as f64,
        "days_in_month" => month_days[(month - 1) as usize] as f64,
        "hour" => (second_of_day / 3600) as f64,
        "minute" => (second_of_day % 3600 / 60) as f64,
        "month" => month as f64,
        "year" => year as f64,
        _ => f64::NAN,
    }
}

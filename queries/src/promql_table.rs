//! PromQL inside SQL: the table functions
//!
//! - `promql(expr, start, end, step)`: a range query, one row per (series, step);
//! - `promql_instant(expr [, time])`: an instant query at `time` (the statement's `now()`
//!   by default), one row per series,
//!
//! both returning `(labels, timestamp, value)` — `labels` the series' label map
//! (`__name__` included when the result keeps it), so a PromQL result joins logs and
//! spans like any table: `JOIN logs l ON l.stream['pod'] = p.labels['pod']`.
//!
//! Times are timestamps (`now() - interval '1 hour'`), RFC 3339 strings or Unix seconds;
//! the step an interval, a Prometheus duration string (`'30s'`) or seconds. Arguments
//! are folded to constants while planning (they may not refer to columns). The query
//! runs on the PromQL evaluator (the same one `/api/v1/query_range` uses), under the
//! same bounds: the parser's shape limits, the sample limit and the SQL timeout.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use vigil_storage::schema::{labels_type, new_labels_builder, timestamp_type};
use vigil_storage::{LabelSet, Storage};

use crate::promql::{
    parse_bounded, PrefetchSource, QueryShape, StorageSource, Value, DEFAULT_LOOKBACK_MS,
    MAX_TIME_MS,
};

/// The schema of both functions' results.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("labels", labels_type(), false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// The bounds a PromQL evaluation inside SQL runs under.
#[derive(Debug, Clone)]
pub struct PromqlLimits {
    pub max_samples: usize,
    pub timeout: std::time::Duration,
    /// Steps of one range query (Prometheus: 11,000).
    pub max_steps: i64,
}

/// `promql(expr, start, end, step)` (range) or `promql_instant(expr [, time])`.
#[derive(Debug)]
pub struct PromqlFunction {
    storage: Arc<Storage>,
    limits: PromqlLimits,
    instant: bool,
}

impl PromqlFunction {
    pub fn range(storage: Arc<Storage>, limits: PromqlLimits) -> Self {
        PromqlFunction {
            storage,
            limits,
            instant: false,
        }
    }

    pub fn instant(storage: Arc<Storage>, limits: PromqlLimits) -> Self {
        PromqlFunction {
            storage,
            limits,
            instant: true,
        }
    }

    fn name(&self) -> &'static str {
        if self.instant {
            "promql_instant"
        } else {
            "promql"
        }
    }

    fn usage(&self) -> String {
        if self.instant {
            "promql_instant(expr [, time])".into()
        } else {
            "promql(expr, start, end, step)".into()
        }
    }
}

fn plan_error(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

impl TableFunctionImpl for PromqlFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let arity_ok = if self.instant {
            (1..=2).contains(&exprs.len())
        } else {
            exprs.len() == 4
        };
        if !arity_ok {
            return Err(plan_error(format!(
                "{} takes {}; got {} arguments",
                self.name(),
                self.usage(),
                exprs.len()
            )));
        }
        let props = args.session().execution_props();
        let now = props
            .query_execution_start_time
            .unwrap_or_else(chrono::Utc::now);
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_query_execution_start_time(Some(now))
                .build(),
        );
        let mut values = Vec::with_capacity(exprs.len());
        for (i, expr) in exprs.iter().enumerate() {
            match simplifier.simplify(expr.clone())? {
                Expr::Literal(value, _) => values.push(value),
                other => {
                    return Err(plan_error(format!(
                        "{}: argument {} ({other}) must be a constant",
                        self.name(),
                        i + 1
                    )))
                }
            }
        }
        let text = match &values[0] {
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)) => text.clone(),
            other => {
                return Err(plan_error(format!(
                    "{}: the expression must be a string, not {other}",
                    self.name()
                )))
            }
        };
        let now_ms = now.timestamp_millis();
        let (start, end, step) = if self.instant {
            let t = match values.get(1) {
                Some(value) => time_of(value, "time")?,
                None => now_ms,
            };
            (t, t, 0)
        } else {
            let start = time_of(&values[1], "start")?;
            let end = time_of(&values[2], "end")?;
            let step = step_of(&values[3])?;
            if end < start {
                return Err(plan_error(
                    "promql: end timestamp must not be before start time".into(),
                ));
            }
            if step <= 0 {
                return Err(plan_error(
                    "promql: zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
                ));
            }
            if (end - start) / step >= self.limits.max_steps {
                return Err(plan_error(format!(
                    "promql: exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                    self.limits.max_steps
                )));
            }
            (start, end, step)
        };
        let expr = parse_bounded(&text, QueryShape::default())
            .map_err(|message| plan_error(format!("{}: {message}", self.name())))?;
        let storage = self.storage.clone();
        let limits = self.limits.clone();
        let evaluate = move || -> Result<RecordBatch> {
            let source = StorageSource { storage: &storage };
            let prefetch = PrefetchSource::new(&source, &expr, start, end, DEFAULT_LOOKBACK_MS);
            let mut evaluator = crate::promql::Evaluator::new(&prefetch, start, end);
            evaluator.max_samples = limits.max_samples;
            evaluator.deadline = Some(std::time::Instant::now() + limits.timeout);
            let rows = if step == 0 {
                match evaluator.instant_query(&expr, start) {
                    Ok(Value::Vector(samples)) => samples
                        .into_iter()
                        .map(|s| (s.labels, vec![(s.t, s.f)]))
                        .collect(),
                    Ok(Value::Scalar(f)) => vec![(LabelSet::default(), vec![(start, f)])],
                    Ok(other) => {
                        return Err(plan_error(format!(
                            "promql_instant: a {} result has no rows",
                            other.type_name()
                        )))
                    }
                    Err(err) => return Err(plan_error(format!("promql_instant: {err}"))),
                }
            } else {
                evaluator
                    .range_query(&expr, start, end, step)
                    .map_err(|err| plan_error(format!("promql: {err}")))?
                    .into_iter()
                    .map(|s| {
                        let points = s.points.iter().map(|p| (p.t, p.f)).collect();
                        (s.labels, points)
                    })
                    .collect()
            };
            to_batch(rows)
        };
        // Evaluation reads storage synchronously: off the async worker, on this thread.
        let batch = tokio::task::block_in_place(evaluate)?;
        Ok(Arc::new(MemTable::try_new(schema(), vec![vec![batch]])?))
    }
}

fn to_batch(rows: Vec<(LabelSet, Vec<(i64, f64)>)>) -> Result<RecordBatch> {
    let mut labels = new_labels_builder();
    let mut times = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut values = Float64Builder::new();
    for (set, points) in rows {
        for (t, f) in points {
            for label in set.labels() {
                labels.keys().append_value(&label.name);
                labels.values().append_value(&label.value);
            }
            labels.append(true)?;
            times.append_value(t);
            values.append_value(f);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(labels.finish()),
        Arc::new(times.finish()),
        Arc::new(values.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// A time argument: a timestamp, an RFC 3339 string, or Unix seconds.
fn time_of(value: &ScalarValue, what: &str) -> Result<i64> {
    let ms = match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1000),
        ScalarValue::TimestampMillisecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
        ScalarValue::Int64(Some(v)) => v.checked_mul(1000),
        ScalarValue::Float64(Some(v)) if v.is_finite() => Some((v * 1000.0).round() as i64),
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)) => parse_time_text(text),
        _ => None,
    };
    match ms {
        Some(ms) if (-MAX_TIME_MS..=MAX_TIME_MS).contains(&ms) => Ok(ms),
        _ => Err(plan_error(format!(
            "promql: invalid {what} {value}: use a timestamp, an RFC 3339 string or Unix seconds"
        ))),
    }
}

fn parse_time_text(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return seconds
            .is_finite()
            .then(|| (seconds * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A step: an interval, a duration string (`30s`, `1m`) or seconds.
pub(crate) fn step_of(value: &ScalarValue) -> Result<i64> {
    let ms = match value {
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1000),
        ScalarValue::Int64(Some(v)) => v.checked_mul(1000),
        ScalarValue::Float64(Some(v)) if v.is_finite() => Some((v * 1000.0).round() as i64),
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)) => match text.trim().parse::<f64>() {
            Ok(seconds) if seconds.is_finite() => Some((seconds * 1000.0).round() as i64),
            // The parser's duration conversion can panic on absurd values: contained.
            _ => std::panic::catch_unwind(|| promql_parser::util::parse_duration(text.trim()))
                .ok()
                .and_then(Result::ok)
                .and_then(|d| i64::try_from(d.as_millis()).ok()),
        },
        _ => None,
    };
    ms.ok_or_else(|| {
        plan_error(format!(
            "promql: invalid step {value}: use an interval, a duration such as '30s', or seconds"
        ))
    })
}

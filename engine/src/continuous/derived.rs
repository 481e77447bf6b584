//! Derived signals, on by default: span RED metrics and error-log counts as Prometheus
//! series, so PromQL, rules and Grafana use them like any metric.
//!
//! Fed by the same storage taps as continuous queries (every durable span and log batch,
//! from start on), counted cumulatively in memory and written as samples every
//! `interval` (and at shutdown), as an exporter would be scraped. At start the counters
//! continue from the values last written (read back from storage), so a restart is not a
//! counter reset; batches acknowledged after the last write before a crash (at most one
//! `interval`) are not counted.
//!
//! Names and labels follow the OpenTelemetry Collector's `spanmetrics` connector (what
//! Grafana's and Tempo's service dashboards read):
//! `traces_span_metrics_calls_total{service_name, span_name, span_kind, status_code}` and
//! the histogram `traces_span_metrics_duration_seconds` (`_bucket{le}`, `_sum`,
//! `_count`); logs give `vigil_log_records_total{namespace, pod, level}` and
//! `vigil_log_errors_total{namespace, pod}` (levels error, fatal, critical and alike).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use vigil_storage::{AppendMode, LabelSet, SampleBatch, Storage};

use super::now_ms;

/// The spanmetrics connector's default buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];
/// Distinct label sets per signal; beyond it new ones are dropped and counted.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct DerivedConfig {
    pub span_metrics: bool,
    pub log_errors: bool,
    pub interval: Duration,
}

impl Default for DerivedConfig {
    fn default() -> Self {
        DerivedConfig {
            span_metrics: true,
            log_errors: true,
            interval: Duration::from_secs(15),
        }
    }
}

#[derive(Default, Clone)]
struct SpanCounters {
    calls: u64,
    sum_seconds: f64,
    buckets: [u64; DURATION_BUCKETS.len()],
}

#[derive(Default)]
struct Counters {
    /// (service, span name, kind, status code).
    spans: BTreeMap<(String, String, String, String), SpanCounters>,
    /// (namespace, pod, level).
    logs: BTreeMap<(String, String, String), u64>,
}

/// The running derived signals.
pub struct Derived {
    counters: Mutex<Counters>,
    /// Label sets dropped over `MAX_KEYS`.
    pub dropped_keys: AtomicU64,
}

impl Derived {
    /// Starts counting (threads per enabled signal) and writing every `interval` on
    /// the current tokio runtime, until `stop` changes to true.
    pub fn start(
        storage: Arc<Storage>,
        config: DerivedConfig,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Derived> {
        let derived = Arc::new(Derived {
            counters: Mutex::default(),
            dropped_keys: AtomicU64::new(0),
        });
        if let Err(err) = derived.restore(&storage) {
            tracing::warn!(error = %err, "derived signals start from zero: their last values cannot be read");
        }
        if config.span_metrics {
            let (_, tap) = storage.spans().tap(i64::MAX);
            let counting = derived.clone();
            let _ = std::thread::Builder::new()
                .name("derived-spans".into())
                .spawn(move || {
                    while let Ok(batch) = tap.recv() {
                        counting.count_spans(&batch);
                    }
                });
        }
        if config.log_errors {
            let (_, tap) = storage.logs().tap(i64::MAX);
            let counting = derived.clone();
            let _ = std::thread::Builder::new()
                .name("derived-logs".into())
                .spawn(move || {
                    while let Ok(batch) = tap.recv() {
                        counting.count_logs(&batch);
                    }
                });
        }
        if config.span_metrics || config.log_errors {
            let writer = derived.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(config.interval.max(Duration::from_secs(1)));
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stop.changed() => {
                            writer.write(&storage).await;
                            return;
                        }
                    }
                    writer.write(&storage).await;
                }
            });
        }
        derived
    }

    /// The counters as last written (the newest sample of each series within a day).
    pub fn restore(&self, storage: &Storage) -> Result<(), String> {
        use promql_parser::label::{MatchOp, Matcher};
        use vigil_queries::promql::{SeriesSource, StorageSource};
        let now = now_ms();
        let source = StorageSource { storage };
        let select = |name: &str| -> Result<Vec<(LabelSet, f64)>, String> {
            let matchers = vec![Matcher::new(MatchOp::Equal, "__name__", name)];
            let series = source
                .select(&matchers, now - 86_400_000, now)
                .map_err(|e| e.to_string())?;
            Ok(series
                .into_iter()
                .filter_map(|s| {
                    let last = s
                        .points
                        .iter()
                        .rev()
                        .find(|p| !vigil_storage::record::is_stale_marker(p.f))?;
                    Some((s.labels, last.f))
                })
                .collect())
        };
        let span_key = |labels: &LabelSet| {
            let get = |name: &str| labels.get(name).unwrap_or_default().to_string();
            (
                get("service_name"),
                get("span_name"),
                get("span_kind"),
                get("status_code"),
            )
        };
        let calls = select("traces_span_metrics_calls_total")?;
        let sums = select("traces_span_metrics_duration_seconds_sum")?;
        let buckets = select("traces_span_metrics_duration_seconds_bucket")?;
        let records = select("vigil_log_records_total")?;
        let mut counters = self.lock();
        for (labels, value) in calls {
            counters.spans.entry(span_key(&labels)).or_default().calls = value as u64;
        }
        for (labels, value) in sums {
            if let Some(c) = counters.spans.get_mut(&span_key(&labels)) {
                c.sum_seconds = value;
            }
        }
        for (labels, value) in buckets {
            let Some(le) = labels.get("le").and_then(|le| le.parse::<f64>().ok()) else {
                continue;
            };
            let Some(index) = DURATION_BUCKETS.iter().position(|b| *b == le) else {
                continue;
            };
            if let Some(c) = counters.spans.get_mut(&span_key(&labels)) {
                c.buckets[index] = value as u64;
            }
        }
        for (labels, value) in records {
            let get = |name: &str| labels.get(name).unwrap_or_default().to_string();
            counters
                .logs
                .insert((get("namespace"), get("pod"), get("level")), value as u64);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count_spans(&self, batch: &RecordBatch) {
        let column = |name: &str| batch.column_by_name(name).cloned();
        let (Some(service), Some(name), Some(kind), Some(status), Some(duration)) = (
            column("service"),
            column("name"),
            column("kind"),
            column("status"),
            column("duration_ns"),
        ) else {
            return;
        };
        let (Some(service), Some(name), Some(kind), Some(status), Some(duration)) = (
            service.as_string_opt::<i32>(),
            name.as_string_opt::<i32>(),
            kind.as_string_opt::<i32>(),
            status.as_string_opt::<i32>(),
            duration.as_primitive_opt::<Int64Type>(),
        ) else {
            return;
        };
        let mut counters = self.lock();
        for i in 0..batch.num_rows() {
            let key = (
                service.value(i).to_string(),
                name.value(i).to_string(),
                format!("SPAN_KIND_{}", kind.value(i).to_ascii_uppercase()),
                format!("STATUS_CODE_{}", status.value(i).to_ascii_uppercase()),
            );
            let len = counters.spans.len();
            let entry = match counters.spans.get_mut(&key) {
                Some(entry) => entry,
                None if len >= MAX_KEYS => {
                    self.dropped_keys.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                None => counters.spans.entry(key).or_default(),
            };
            let seconds = if duration.is_null(i) {
                0.0
            } else {
                duration.value(i).max(0) as f64 / 1e9
            };
            entry.calls += 1;
            entry.sum_seconds += seconds;
            for (bucket, bound) in entry.buckets.iter_mut().zip(DURATION_BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
        }
    }

    pub fn count_logs(&self, batch: &RecordBatch) {
        let (Some(stream), Some(severity)) = (
            batch.column_by_name("stream"),
            batch.column_by_name("severity"),
        ) else {
            return;
        };
        let (Some(stream), Some(severity)) = (stream.as_map_opt(), severity.as_string_opt::<i32>())
        else {
            return;
        };
        let mut counters = self.lock();
        for i in 0..batch.num_rows() {
            let labels = stream.value(i);
            let keys = labels.column(0).as_string_opt::<i32>();
            let values = labels.column(1).as_string_opt::<i32>();
            let (Some(keys), Some(values)) = (keys, values) else {
                continue;
            };
            let get = |names: &[&str]| -> String {
                (0..keys.len())
                    .find(|&j| names.contains(&keys.value(j)))
                    .map(|j| values.value(j).to_string())
                    .unwrap_or_default()
            };
            let namespace = get(&["namespace", "k8s.namespace.name"]);
            let pod = get(&["pod", "k8s.pod.name"]);
            let key = (namespace, pod, level(severity.value(i)).to_string());
            let len = counters.logs.len();
            match counters.logs.get_mut(&key) {
                Some(count) => *count += 1,
                None if len >= MAX_KEYS => {
                    self.dropped_keys.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    counters.logs.insert(key, 1);
                }
            }
        }
    }

    /// The current values as one batch of samples at `t`.
    pub fn samples(&self, t: i64) -> SampleBatch {
        let counters = self.lock();
        let bounds: Vec<String> = DURATION_BUCKETS.iter().map(|b| b.to_string()).collect();
        let mut batch = SampleBatch::default();
        let mut push = |pairs: &[(&str, &str)], value: f64| {
            if let Ok(labels) = LabelSet::from_pairs(pairs.iter().copied()) {
                let idx = batch.push_series(labels);
                batch.push_sample(idx, t, value);
            }
        };
        for ((service, span, kind, status), c) in &counters.spans {
            let base = [
                ("service_name", service.as_str()),
                ("span_name", span.as_str()),
                ("span_kind", kind.as_str()),
                ("status_code", status.as_str()),
            ];
            let with = |name: &'static str| {
                let mut pairs = vec![("__name__", name)];
                pairs.extend(base);
                pairs
            };
            push(&with("traces_span_metrics_calls_total"), c.calls as f64);
            push(
                &with("traces_span_metrics_duration_seconds_count"),
                c.calls as f64,
            );
            push(
                &with("traces_span_metrics_duration_seconds_sum"),
                c.sum_seconds,
            );
            for (bound, count) in bounds.iter().zip(c.buckets) {
                let mut pairs = with("traces_span_metrics_duration_seconds_bucket");
                pairs.push(("le", bound));
                push(&pairs, count as f64);
            }
            let mut pairs = with("traces_span_metrics_duration_seconds_bucket");
            pairs.push(("le", "+Inf"));
            push(&pairs, c.calls as f64);
        }
        let mut errors: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ((namespace, pod, level), count) in &counters.logs {
            push(
                &[
                    ("__name__", "vigil_log_records_total"),
                    ("namespace", namespace),
                    ("pod", pod),
                    ("level", level),
                ],
                *count as f64,
            );
            let errors_of_pod = errors.entry((namespace, pod)).or_insert(0);
            if matches!(level.as_str(), "error" | "critical") {
                *errors_of_pod += count;
            }
        }
        for ((namespace, pod), count) in errors {
            push(
                &[
                    ("__name__", "vigil_log_errors_total"),
                    ("namespace", namespace),
                    ("pod", pod),
                ],
                count as f64,
            );
        }
        batch
    }

    async fn write(&self, storage: &Arc<Storage>) {
        let batch = self.samples(now_ms());
        if batch.is_empty() {
            return;
        }
        if let Err(err) = storage.append(batch, AppendMode::Lenient).await {
            tracing::warn!(error = %err, "derived signals not written");
        }
    }
}

/// A log record's severity as one of a fixed set of levels (Loki's `detected_level`
/// values), so that clients cannot mint label values.
pub fn level(severity: &str) -> &'static str {
    let lower = severity.trim().to_ascii_lowercase();
    match lower.as_str() {
        "trace" | "trace2" | "trace3" | "trace4" => "trace",
        "debug" | "debug2" | "debug3" | "debug4" | "dbg" => "debug",
        "info" | "info2" | "info3" | "info4" | "information" | "notice" | "inf" => "info",
        "warn" | "warn2" | "warn3" | "warn4" | "warning" | "wrn" => "warn",
        "error" | "error2" | "error3" | "error4" | "err" | "eror" => "error",
        "fatal" | "fatal2" | "fatal3" | "fatal4" | "critical" | "crit" | "panic" | "emerg"
        | "alert" => "critical",
        "" => "unknown",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_a_fixed_set() {
        assert_eq!(level("ERROR"), "error");
        assert_eq!(level("Fatal"), "critical");
        assert_eq!(level("warning"), "warn");
        assert_eq!(level("x".repeat(100).as_str()), "unknown");
    }

    #[test]
    fn spans_become_red_series() {
        let spans = vec![
            vigil_storage::SpanRecord {
                trace_id: "01".repeat(16),
                span_id: "02".repeat(8),
                parent_span_id: String::new(),
                service: "api".into(),
                name: "GET /cart".into(),
                kind: "server".into(),
                start_ns: 1_000_000_000,
                end_ns: 1_003_000_000,
                status: "error".into(),
                status_message: String::new(),
                attributes: Default::default(),
                events: "[]".into(),
                resource: Default::default(),
            };
            2
        ];
        let batch = vigil_storage::spans::to_batch(&spans).unwrap();
        let derived = Derived {
            counters: Mutex::default(),
            dropped_keys: AtomicU64::new(0),
        };
        derived.count_spans(&batch);
        let samples = derived.samples(5);
        let text = format!("{samples:?}");
        assert!(text.contains("traces_span_metrics_calls_total"), "{text}");
        assert!(text.contains("STATUS_CODE_ERROR") && text.contains("SPAN_KIND_SERVER"));
        // calls, count, sum and 17 buckets.
        assert_eq!(samples.series.len(), 20);
    }
}

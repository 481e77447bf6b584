//! OTLP metrics → Prometheus series, the way Prometheus' own OTLP receiver translates
//! them (its `otlptranslator`, with suffixes and underscore escaping, Prometheus' default):
//!
//! - names: characters outside `[a-zA-Z0-9_:]` become `_`; the unit becomes a suffix
//!   (`s` → `_seconds`, `By` → `_bytes`, `m/s` → `_meters_per_second`, `{requests}`
//!   dropped); monotonic sums end in `_total`; gauges with unit `1` end in `_ratio`;
//! - data point attributes become labels (invalid characters → `_`, a leading digit gets
//!   `key_`); the resource's `service.namespace/service.name` becomes `job`, its
//!   `service.instance.id` `instance`, and its other attributes go to one `target_info`
//!   series per resource (value 1);
//! - gauges and non-monotonic sums are gauges; cumulative monotonic sums are counters;
//!   cumulative histograms become classic `_bucket{le}` / `_sum` / `_count` series;
//!   summaries `{quantile}` / `_sum` / `_count`;
//! - delta temporality and exponential histograms are not stored (Prometheus does not
//!   accept them either without conversion): their points are counted as rejected, with
//!   a message naming the metric, and the rest of the request is kept;
//! - a point flagged `NO_RECORDED_VALUE` is a staleness marker.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};
use vigil_storage::{Label, LabelSet, SampleBatch};

use crate::otlp::{decode, value_text, Encoding, OtlpError};

/// Prometheus' staleness marker (a NaN with this bit pattern).
const STALE_NAN: u64 = vigil_storage::STALE_NAN_BITS;
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;
/// `AggregationTemporality`.
const CUMULATIVE: i32 = 2;

/// The samples of one request, and the points that were not stored (with the first
/// reason).
#[derive(Debug, Default)]
pub struct DecodedMetrics {
    pub batch: SampleBatch,
    pub rejected: i64,
    pub reason: String,
}

impl DecodedMetrics {
    fn reject(&mut self, points: usize, reason: impl FnOnce() -> String) {
        self.rejected += points as i64;
        if self.reason.is_empty() {
            self.reason = reason();
        }
    }
}

/// `ExportMetricsServiceRequest` (protobuf or JSON) → Prometheus samples.
pub fn decode_metrics(body: &[u8], encoding: Encoding) -> Result<DecodedMetrics, OtlpError> {
    Ok(metrics_of(decode(body, encoding)?))
}

/// A decoded `ExportMetricsServiceRequest` (from OTLP/HTTP or gRPC) → samples.
pub fn metrics_of(request: ExportMetricsServiceRequest) -> DecodedMetrics {
    let mut out = DecodedMetrics::default();
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let target = Target::of(&resource);
        let mut latest_ms = None;
        for scope_metrics in resource_metrics.scope_metrics {
            for metric in scope_metrics.metrics {
                if let Some(ms) = translate(&metric, &target, &mut out) {
                    latest_ms = latest_ms.max(Some(ms));
                }
            }
        }
        if let Some(ms) = latest_ms {
            target.info(ms, &mut out);
        }
    }
    out
}

/// A resource as Prometheus sees a target: `job`, `instance`, and the rest.
struct Target {
    job: String,
    instance: String,
    info: Vec<(String, String)>,
}

impl Target {
    fn of(resource: &[KeyValue]) -> Target {
        let get = |key: &str| {
            resource
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| value_text(&kv.value))
                .unwrap_or_default()
        };
        let (namespace, name) = (get("service.namespace"), get("service.name"));
        let job = match (namespace.is_empty(), name.is_empty()) {
            (_, true) => String::new(),
            (true, false) => name,
            (false, false) => format!("{namespace}/{name}"),
        };
        let info = resource
            .iter()
            .filter(|kv| {
                !matches!(
                    kv.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .map(|kv| (label_name(&kv.key), value_text(&kv.value)))
            .collect();
        Target {
            job,
            instance: get("service.instance.id"),
            info,
        }
    }

    /// The labels of one point: its attributes, then `job` and `instance`.
    fn labels(&self, name: &str, attributes: &[KeyValue], extra: Option<(&str, String)>) -> Labels {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for kv in attributes {
            let key = label_name(&kv.key);
            let value = value_text(&kv.value);
            // Attributes that map to the same label name are joined, as Prometheus does.
            labels
                .entry(key)
                .and_modify(|v| {
                    v.push(';');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        if !self.job.is_empty() {
            labels.insert("job".into(), self.job.clone());
        }
        if !self.instance.is_empty() {
            labels.insert("instance".into(), self.instance.clone());
        }
        if let Some((key, value)) = extra {
            labels.insert(key.into(), value);
        }
        labels.insert("__name__".into(), name.into());
        Labels(labels)
    }

    /// `target_info`: one series per resource with attributes beyond the identifying ones.
    fn info(&self, timestamp_ms: i64, out: &mut DecodedMetrics) {
        if self.info.is_empty() {
            return;
        }
        let attributes: Vec<KeyValue> = Vec::new();
        let mut labels = self.labels("target_info", &attributes, None);
        for (key, value) in &self.info {
            labels.0.entry(key.clone()).or_insert_with(|| value.clone());
        }
        labels.push(out, timestamp_ms, 1.0);
    }
}

struct Labels(BTreeMap<String, String>);

impl Labels {
    fn push(self, out: &mut DecodedMetrics, timestamp_ms: i64, value: f64) {
        let name = self.0.get("__name__").cloned().unwrap_or_default();
        let labels = self
            .0
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect();
        // Invalid series (an empty or unusable name, say) are rejected point by point
        // here rather than failing the whole request in storage.
        match LabelSet::new(labels).and_then(|set| set.validate().map(|()| set)) {
            Ok(set) => {
                let index = out.batch.push_series(set);
                out.batch.push_sample(index, timestamp_ms, value);
            }
            Err(err) => out.reject(1, || format!("metric {name}: {err}")),
        }
    }
}

fn millis(time_unix_nano: u64) -> i64 {
    i64::try_from(time_unix_nano / 1_000_000).unwrap_or(i64::MAX)
}

fn value_of(point: &NumberDataPoint) -> f64 {
    if point.flags & NO_RECORDED_VALUE != 0 {
        return f64::from_bits(STALE_NAN);
    }
    match point.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

fn stale_or(flags: u32, value: f64) -> f64 {
    if flags & NO_RECORDED_VALUE != 0 {
        f64::from_bits(STALE_NAN)
    } else {
        value
    }
}

/// One metric's points into `out`; the latest timestamp it stored.
fn translate(
    metric: &opentelemetry_proto::tonic::metrics::v1::Metric,
    target: &Target,
    out: &mut DecodedMetrics,
) -> Option<i64> {
    if !metric.name.chars().any(|c| c.is_ascii_alphanumeric()) {
        let points = match &metric.data {
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            Some(metric::Data::Summary(s)) => s.data_points.len(),
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
            None => 0,
        };
        out.reject(points, || {
            format!("metric {:?}: a metric needs a name", metric.name)
        });
        return None;
    }
    let mut latest = None;
    let mut note = |ms: i64| latest = latest.max(Some(ms));
    match &metric.data {
        Some(metric::Data::Gauge(gauge)) => {
            let name = metric_name(&metric.name, &metric.unit, Kind::Gauge);
            for point in &gauge.data_points {
                let ms = millis(point.time_unix_nano);
                note(ms);
                target
                    .labels(&name, &point.attributes, None)
                    .push(out, ms, value_of(point));
            }
        }
        Some(metric::Data::Sum(sum)) => {
            if sum.is_monotonic && sum.aggregation_temporality != CUMULATIVE {
                out.reject(sum.data_points.len(), || delta(&metric.name));
                return None;
            }
            let kind = if sum.is_monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let name = metric_name(&metric.name, &metric.unit, kind);
            for point in &sum.data_points {
                let ms = millis(point.time_unix_nano);
                note(ms);
                target
                    .labels(&name, &point.attributes, None)
                    .push(out, ms, value_of(point));
            }
        }
        Some(metric::Data::Histogram(histogram)) => {
            if histogram.aggregation_temporality != CUMULATIVE {
                out.reject(histogram.data_points.len(), || delta(&metric.name));
                return None;
            }
            let base = metric_name(&metric.name, &metric.unit, Kind::Histogram);
            for point in &histogram.data_points {
                let ms = millis(point.time_unix_nano);
                note(ms);
                let flags = point.flags;
                if let Some(sum) = point.sum {
                    target
                        .labels(&format!("{base}_sum"), &point.attributes, None)
                        .push(out, ms, stale_or(flags, sum));
                }
                target
                    .labels(&format!("{base}_count"), &point.attributes, None)
                    .push(out, ms, stale_or(flags, point.count as f64));
                let bucket = format!("{base}_bucket");
                let mut cumulative = 0u64;
                for (i, bound) in point.explicit_bounds.iter().enumerate() {
                    cumulative =
                        cumulative.saturating_add(point.bucket_counts.get(i).copied().unwrap_or(0));
                    target
                        .labels(&bucket, &point.attributes, Some(("le", float_text(*bound))))
                        .push(out, ms, stale_or(flags, cumulative as f64));
                }
                target
                    .labels(&bucket, &point.attributes, Some(("le", "+Inf".into())))
                    .push(out, ms, stale_or(flags, point.count as f64));
            }
        }
        Some(metric::Data::Summary(summary)) => {
            let base = metric_name(&metric.name, &metric.unit, Kind::Summary);
            for point in &summary.data_points {
                let ms = millis(point.time_unix_nano);
                note(ms);
                let flags = point.flags;
                target
                    .labels(&format!("{base}_sum"), &point.attributes, None)
                    .push(out, ms, stale_or(flags, point.sum));
                target
                    .labels(&format!("{base}_count"), &point.attributes, None)
                    .push(out, ms, stale_or(flags, point.count as f64));
                for quantile in &point.quantile_values {
                    target
                        .labels(
                            &base,
                            &point.attributes,
                            Some(("quantile", float_text(quantile.quantile))),
                        )
                        .push(out, ms, stale_or(flags, quantile.value));
                }
            }
        }
        Some(metric::Data::ExponentialHistogram(histogram)) => {
            out.reject(histogram.data_points.len(), || {
                format!(
                    "metric {:?}: exponential histograms are native histograms, which Vigil does not store; configure the SDK's explicit-bucket histogram aggregation",
                    metric.name
                )
            });
        }
        None => {}
    }
    latest
}

fn delta(name: &str) -> String {
    format!(
        "metric {name:?}: delta temporality is not supported; configure the exporter's temporality preference to cumulative"
    )
}

/// A bucket bound or quantile as Prometheus writes it (shortest round-trip form).
fn float_text(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// A metric's Prometheus type, as the naming rules need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    Summary,
}

/// A label name from an attribute key: invalid characters → `_`, a leading digit gets
/// `key_`, a leading single `_` gets `key`.
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        return name;
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "key_");
    } else if name.starts_with('_') && !name.starts_with("__") {
        name.insert_str(0, "key");
    }
    name
}

/// The Prometheus name of an OTLP metric (see the module documentation).
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    // Units in braces are annotations (`{requests}`), not units.
    let unit = unit.trim();
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), per.trim()),
        None => (unit, ""),
    };
    let push_unique = |tokens: &mut Vec<String>, word: &str| {
        for part in word.split('_').filter(|p| !p.is_empty()) {
            if !tokens.iter().any(|t| t == part) {
                tokens.push(part.to_string());
            }
        }
    };
    if !main.contains('{') {
        if let Some(word) = main_unit(main) {
            push_unique(&mut tokens, &word);
        }
    }
    if !per.is_empty() && !per.contains('{') {
        let word = per_unit(per);
        if !word.is_empty() && !tokens.iter().any(|t| t == "per") {
            tokens.push("per".into());
            push_unique(&mut tokens, &word);
        }
    }
    if kind == Kind::Counter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if kind == Kind::Gauge && unit == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The word for a unit: UCUM's common ones spelled out, others sanitized as they are.
fn main_unit(unit: &str) -> Option<String> {
    let word = match unit {
        "" | "1" => return None,
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => {
            let cleaned: String = other
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let cleaned = cleaned.trim_matches('_').to_string();
            return (!cleaned.is_empty()).then_some(cleaned);
        }
    };
    Some(word.into())
}

fn per_unit(unit: &str) -> String {
    match unit {
        "s" => "second".into(),
        "m" => "minute".into(),
        "h" => "hour".into(),
        "d" => "day".into(),
        "w" => "week".into(),
        "mo" => "month".into(),
        "y" => "year".into(),
        other => other
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
            .trim_matches('_')
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_prometheus() {
        let n = |name, unit, kind| metric_name(name, unit, kind);
        assert_eq!(
            n("http.server.duration", "ms", Kind::Histogram),
            "http_server_duration_milliseconds"
        );
        assert_eq!(n("requests", "{requests}", Kind::Counter), "requests_total");
        assert_eq!(
            n("process.cpu.time", "s", Kind::Counter),
            "process_cpu_time_seconds_total"
        );
        assert_eq!(n("speed", "m/s", Kind::Gauge), "speed_meters_per_second");
        assert_eq!(
            n("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            n("queue_bytes_total", "By", Kind::Counter),
            "queue_bytes_total"
        );
        assert_eq!(n("2xx", "", Kind::Gauge), "_2xx");
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0a"), "key_0a");
        assert_eq!(label_name("_x"), "key_x");
    }

    fn request(metrics: Vec<Metric>) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "api"),
                        kv("service.namespace", "shop"),
                        kv("service.instance.id", "pod-1"),
                        kv("k8s.pod.name", "api-7d9f"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec()
    }

    fn series(out: &DecodedMetrics) -> Vec<(String, f64)> {
        let mut rows: Vec<(String, f64)> = out
            .batch
            .samples
            .iter()
            .map(|s| (out.batch.series[s.series_idx as usize].to_string(), s.value))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    #[test]
    fn counters_histograms_and_target_info() {
        let point = |value: i64| NumberDataPoint {
            attributes: vec![kv("http.method", "GET")],
            time_unix_nano: 1_700_000_000_000_000_000,
            value: Some(number_data_point::Value::AsInt(value)),
            ..Default::default()
        };
        let body = request(vec![
            Metric {
                name: "http.requests".into(),
                unit: "{request}".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![point(7)],
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "latency".into(),
                unit: "s".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        count: 6,
                        sum: Some(2.5),
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![0.1, 1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: CUMULATIVE,
                })),
                ..Default::default()
            },
            Metric {
                name: "deltas".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![point(1), point(2)],
                    aggregation_temporality: 1,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "temp".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        flags: NO_RECORDED_VALUE,
                        ..point(0)
                    }],
                })),
                ..Default::default()
            },
        ]);
        let out = decode_metrics(&body, Encoding::Protobuf).expect("decodes");
        assert_eq!(out.rejected, 2);
        assert!(out.reason.contains("delta temporality"), "{}", out.reason);
        let rows = series(&out);
        let names: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            [
                r#"http_requests_total{http_method="GET", instance="pod-1", job="shop/api"}"#,
                r#"latency_seconds_bucket{instance="pod-1", job="shop/api", le="+Inf"}"#,
                r#"latency_seconds_bucket{instance="pod-1", job="shop/api", le="0.1"}"#,
                r#"latency_seconds_bucket{instance="pod-1", job="shop/api", le="1"}"#,
                r#"latency_seconds_count{instance="pod-1", job="shop/api"}"#,
                r#"latency_seconds_sum{instance="pod-1", job="shop/api"}"#,
                r#"target_info{instance="pod-1", job="shop/api", k8s_pod_name="api-7d9f"}"#,
                r#"temp{http_method="GET", instance="pod-1", job="shop/api"}"#,
            ]
        );
        let values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
        assert_eq!(&values[..7], &[7.0, 6.0, 1.0, 3.0, 6.0, 2.5, 1.0]);
        assert_eq!(values[7].to_bits(), STALE_NAN);
        assert_eq!(out.batch.samples[0].timestamp_ms, 1_700_000_000_000);
    }

    #[test]
    fn a_metric_without_a_usable_name_is_rejected_not_stored() {
        let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
          {"name":"","summary":{"dataPoints":[{"timeUnixNano":"1","count":"1","sum":1,"quantileValues":[{"quantile":0.5,"value":1}]}]}},
          {"name":"ok","gauge":{"dataPoints":[{"timeUnixNano":"1","asDouble":1}]}}]}]}]}"#;
        let out = decode_metrics(body, Encoding::Json).expect("decodes");
        assert_eq!(series(&out), [("ok{}".to_string(), 1.0)]);
        assert_eq!(out.rejected, 1);
        assert!(out.reason.contains("needs a name"), "{}", out.reason);
    }

    #[test]
    fn json_encoding() {
        let body = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},
          "scopeMetrics":[{"metrics":[{"name":"up.time","unit":"s","gauge":{"dataPoints":[
            {"timeUnixNano":"1700000000000000000","asDouble":12.5}]}}]}]}]}"#;
        let out = decode_metrics(body, Encoding::Json).expect("decodes");
        assert_eq!(
            series(&out),
            [(r#"up_time_seconds{job="web"}"#.to_string(), 12.5)]
        );
    }
}

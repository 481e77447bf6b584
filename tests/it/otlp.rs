//! OTLP metrics (HTTP and gRPC) and OTLP/gRPC traces and logs from the OpenTelemetry
//! Python SDK, read back through PromQL (Prometheus' OTLP naming), the Jaeger API and
//! SQL — including `promql(…)` joined with logs in one statement; delta temporality and
//! bad bodies answered in OTLP's own way.

use serde_json::Value;

use crate::util::{blocking_get, now_ms, python, ureq_post, Vigil};

const EMIT: &str = r#"
import json, logging, os, time
from opentelemetry import trace, metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

url, grpc = os.environ["VIGIL_URL"], os.environ["VIGIL_GRPC"]
resource = Resource.create({"service.name": "checkout", "service.namespace": "shop",
                            "service.instance.id": "checkout-7d9f8c6b5-x2k4p",
                            "k8s.pod.name": "checkout-7d9f8c6b5-x2k4p"})
provider = TracerProvider(resource=resource)
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=grpc, insecure=True)))
logs = LoggerProvider(resource=resource)
logs.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=grpc, insecure=True)))
log = logging.getLogger("checkout")
log.addHandler(LoggingHandler(logger_provider=logs))
log.setLevel(logging.INFO)

readers = [PeriodicExportingMetricReader(GrpcMetrics(endpoint=grpc, insecure=True), export_interval_millis=3_600_000)]
meters = MeterProvider(resource=resource, metric_readers=readers)
meter = meters.get_meter("checkout")
requests = meter.create_counter("http.server.requests", unit="{request}")
duration = meter.create_histogram("http.server.duration", unit="ms")
inflight = meter.create_up_down_counter("http.server.active_requests", unit="{request}")

http_resource = Resource.create({"service.name": "cart"})
http_meters = MeterProvider(resource=http_resource, metric_readers=[
    PeriodicExportingMetricReader(HttpMetrics(endpoint=url + "/v1/metrics"), export_interval_millis=3_600_000)])
http_meters.get_meter("cart").create_counter("cart.items.added").add(7, {"tier": "gold"})

tracer = provider.get_tracer("vigil-test")
failed = []
for i in range(10):
    with tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER) as root:
        code = "500" if i % 5 == 0 else "200"
        requests.add(1, {"http.method": "POST", "http.status_code": code})
        duration.record(20 + i * 10, {"http.method": "POST"})
        inflight.add(1)
        if i % 5 == 0:
            log.error("payment declined for order %d", i)
            failed.append(format(root.get_span_context().trace_id, "032x"))
        else:
            log.info("order %d placed", i)
meters.force_flush()
http_meters.force_flush()
provider.shutdown()
logs.shutdown()
meters.shutdown()
http_meters.shutdown()
print(json.dumps(failed))
"#;

fn instant(vigil: &Vigil, query: &str) -> Vec<Value> {
    let url = format!(
        "{}/api/v1/query?{}",
        vigil.url,
        serde_urlencoded::to_string([("query", query)]).expect("encode")
    );
    let (status, body) = blocking_get(&url).expect("query");
    assert_eq!(status, 200, "{query}: {body}");
    let value: Value = serde_json::from_str(&body).expect("json");
    value["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn metrics_traces_and_logs_over_otlp_grpc_and_http_from_the_sdk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let grpc = format!("http://{}", vigil.grpc);
    let (stdout, stderr) = python(EMIT, &[("VIGIL_URL", &vigil.url), ("VIGIL_GRPC", &grpc)]);
    assert!(
        !stderr.contains("Failed to export"),
        "an exporter failed: {stderr}"
    );
    let failed: Vec<String> = serde_json::from_str(&stdout).expect("trace ids");
    assert_eq!(failed.len(), 2);

    // Metrics, named and labelled as Prometheus' OTLP receiver names them.
    let job = r#"job="shop/checkout",instance="checkout-7d9f8c6b5-x2k4p""#;
    let errors = instant(
        &vigil,
        &format!(r#"http_server_requests_total{{{job},http_status_code="500"}}"#),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(value_of(&errors[0]), 2.0);
    assert_eq!(errors[0]["metric"]["http_method"], "POST");
    let total = instant(&vigil, &format!("sum(http_server_requests_total{{{job}}})"));
    assert_eq!(value_of(&total[0]), 10.0);
    let count = instant(
        &vigil,
        &format!("http_server_duration_milliseconds_count{{{job}}}"),
    );
    assert_eq!(value_of(&count[0]), 10.0);
    let sum = instant(
        &vigil,
        &format!("http_server_duration_milliseconds_sum{{{job}}}"),
    );
    assert_eq!(value_of(&sum[0]), 650.0);
    // Bucket `le="100"` holds the 9 observations 20..=100 of 20..=110.
    let bucket = instant(
        &vigil,
        &format!(r#"http_server_duration_milliseconds_bucket{{{job},le="100"}}"#),
    );
    assert_eq!(value_of(&bucket[0]), 9.0);
    let inf = instant(
        &vigil,
        &format!(r#"http_server_duration_milliseconds_bucket{{{job},le="+Inf"}}"#),
    );
    assert_eq!(value_of(&inf[0]), 10.0);
    let median = instant(
        &vigil,
        &format!("histogram_quantile(0.5, http_server_duration_milliseconds_bucket{{{job}}})"),
    );
    assert!(value_of(&median[0]) > 25.0 && value_of(&median[0]) <= 75.0);
    // A non-monotonic sum is a gauge (no `_total`).
    let active = instant(&vigil, "http_server_active_requests");
    assert_eq!(value_of(&active[0]), 10.0);
    // Resource attributes beyond job/instance are on target_info.
    let info = instant(&vigil, &format!("target_info{{{job}}}"));
    assert_eq!(
        info[0]["metric"]["k8s_pod_name"],
        "checkout-7d9f8c6b5-x2k4p"
    );
    // Over OTLP/HTTP.
    let added = instant(&vigil, r#"cart_items_added_total{job="cart",tier="gold"}"#);
    assert_eq!(value_of(&added[0]), 7.0);

    // Spans and logs over gRPC.
    assert_eq!(
        vigil.count("SELECT count(*) FROM spans WHERE service = 'checkout'"),
        10
    );
    assert_eq!(
        vigil.count("SELECT count(*) FROM logs WHERE stream['service'] = 'checkout'"),
        10
    );
    let (status, body) =
        blocking_get(&format!("{}/api/traces/{}", vigil.url, failed[0])).expect("jaeger");
    assert_eq!(status, 200, "{body}");

    // PromQL inside SQL, joined with logs: the error count of the service next to its
    // error log lines, in one statement.
    let rows = vigil.sql(
        "SELECT p.value AS errors, count(l.body) AS lines \
         FROM promql_instant('sum by (job) (http_server_requests_total{http_status_code=\"500\"})') p \
         JOIN (SELECT stream['service.namespace'] || '/' || stream['service'] AS job, body \
               FROM logs WHERE severity = 'error') l ON l.job = p.labels['job'] \
         GROUP BY p.value",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["errors"], 2.0);
    assert_eq!(rows[0]["lines"], 2);
    let range = vigil.sql(
        "SELECT count(*) AS points, max(value) AS top \
         FROM promql('sum(http_server_requests_total)', now() - interval '2 minutes', now(), '15s')",
    );
    assert!(range[0]["points"].as_i64().unwrap_or(0) >= 1, "{range:?}");
    assert_eq!(range[0]["top"], 10.0);

    // Durable across kill -9: metrics (WAL), spans and logs (fsynced files).
    let vigil = vigil.kill_and_restart();
    let total = instant(&vigil, "sum(http_server_requests_total)");
    assert_eq!(value_of(&total[0]), 10.0);
    assert_eq!(vigil.count("SELECT count(*) FROM spans"), 10);
}

#[test]
fn otlp_metrics_bad_input_and_partial_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let now_ns = now_ms() * 1_000_000;
    // One cumulative counter kept, one delta counter and one exponential histogram
    // rejected with a reason naming the first.
    let body = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"edge"}}]},
      "scopeMetrics":[{"metrics":[
        {"name":"kept","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"NOW","asInt":"5"}]}},
        {"name":"deltas","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"NOW","asInt":"1"},{"timeUnixNano":"NOW","asInt":"2"}]}},
        {"name":"expo","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"NOW","count":"1","scale":1}]}}
      ]}]}]}"#
        .replace("NOW", &now_ns.to_string());
    let (status, answer) = ureq_post(
        &format!("{}/v1/metrics", vigil.url),
        body.as_bytes(),
        "application/json",
    )
    .expect("post");
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(
        answer["partialSuccess"]["rejectedDataPoints"], 3,
        "{answer}"
    );
    assert!(answer["partialSuccess"]["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("\"deltas\"") && m.contains("delta temporality")));
    assert_eq!(
        value_of(&instant(&vigil, r#"kept_total{job="edge"}"#)[0]),
        5.0
    );
    assert!(instant(&vigil, "deltas_total").is_empty());

    // From the future: the point is rejected, the request answered.
    let future = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"late","gauge":{"dataPoints":[{"timeUnixNano":"T","asDouble":1}]}}]}]}]}"#
        .replace("T", &((now_ms() + 86_400_000) * 1_000_000).to_string());
    let (status, answer) = ureq_post(
        &format!("{}/v1/metrics", vigil.url),
        future.as_bytes(),
        "application/json",
    )
    .expect("post");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("rejectedDataPoints"), "{answer}");
    assert!(instant(&vigil, "late").is_empty());

    // Undecodable protobuf → 400 with a google.rpc.Status.
    let (status, _) = ureq_post(
        &format!("{}/v1/metrics", vigil.url),
        b"\x0a\xff\xff\xff\xff\x0f",
        "application/x-protobuf",
    )
    .expect("post");
    assert_eq!(status, 400);
}

#[test]
fn promql_table_functions_refuse_bad_arguments_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    for (sql, expected) in [
        (
            "SELECT * FROM promql('up')",
            "takes promql(expr, start, end, step)",
        ),
        (
            "SELECT * FROM promql('up', now(), now() - interval '1 hour', '15s')",
            "end timestamp must not be before start",
        ),
        (
            "SELECT * FROM promql('up', now() - interval '1 hour', now(), 0)",
            "zero or negative",
        ),
        (
            "SELECT * FROM promql('up', now() - interval '30 days', now(), '1s')",
            "maximum resolution",
        ),
        (
            "SELECT * FROM promql('up', now() - interval '1 hour', now(), '1e400')",
            "invalid step",
        ),
        (
            "SELECT * FROM promql('sum(', now() - interval '1 hour', now(), '15s')",
            "parse error",
        ),
        ("SELECT * FROM promql_instant(42)", "must be a string"),
        (
            "SELECT * FROM promql_instant('up', 'yesterday')",
            "invalid time",
        ),
        ("SELECT * FROM promql_instant('up', 1e300)", "invalid time"),
    ] {
        let (status, body) = vigil.sql_raw(sql, "json");
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(body.contains(expected), "{sql}: {body}");
    }
    // A scalar is one row without labels.
    let rows = vigil.sql("SELECT value FROM promql_instant('1 + 1')");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["value"], 2.0);
}

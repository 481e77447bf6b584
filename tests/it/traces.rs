//! Traces and logs from the OpenTelemetry Python SDK (OTLP/HTTP exporters) into the
//! `spans` and `logs` tables, read back through the Jaeger query API and joined in SQL;
//! bad OTLP input answered with a `google.rpc.Status`.

use serde_json::Value;

use crate::util::{blocking_get, python, ureq_post, Vigil};

const EMIT: &str = r#"
import json, logging, os
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.trace import Status, StatusCode

url = os.environ["VIGIL_URL"]
resource = Resource.create({"service.name": "checkout", "k8s.namespace.name": "shop"})
provider = TracerProvider(resource=resource)
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
logs = LoggerProvider(resource=resource)
logs.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=url + "/v1/logs")))
log = logging.getLogger("checkout")
log.addHandler(LoggingHandler(logger_provider=logs))
log.setLevel(logging.INFO)
tracer = provider.get_tracer("vigil-test")
failed = []
for i in range(20):
    with tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER) as root:
        root.set_attribute("http.status_code", 500 if i % 5 == 0 else 200)
        with tracer.start_as_current_span("SELECT orders", kind=trace.SpanKind.CLIENT) as child:
            child.add_event("query sent", {"db.rows": 3})
        if i % 5 == 0:
            root.set_status(Status(StatusCode.ERROR, "payment declined"))
            log.error("payment declined for order %d", i)
            failed.append(format(root.get_span_context().trace_id, "032x"))
        else:
            log.info("order %d placed", i)
provider.shutdown()
logs.shutdown()
print(json.dumps(failed))
"#;

fn get(vigil: &Vigil, path: &str) -> (u16, Value) {
    let (status, body) = blocking_get(&format!("{}{path}", vigil.url)).expect("request");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn traces_from_the_opentelemetry_sdk_through_jaeger_and_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (stdout, _) = python(EMIT, &[("VIGIL_URL", &vigil.url)]);
    let failed: Vec<String> = serde_json::from_str(&stdout).expect("trace ids of failed requests");
    assert_eq!(failed.len(), 4);

    assert_eq!(
        vigil.count("SELECT count(*) FROM spans WHERE service = 'checkout'"),
        40
    );
    assert_eq!(
        vigil.count("SELECT count(*) FROM logs WHERE stream['service'] = 'checkout'"),
        20
    );

    // Jaeger API, as Grafana's Jaeger data source calls it.
    let (status, services) = get(&vigil, "/api/services");
    assert_eq!(status, 200, "{services}");
    assert_eq!(services["data"], serde_json::json!(["checkout"]));
    let (_, operations) = get(&vigil, "/api/services/checkout/operations");
    assert_eq!(
        operations["data"],
        serde_json::json!(["POST /checkout", "SELECT orders"])
    );
    let (_, kinds) = get(&vigil, "/api/operations?service=checkout&spanKind=server");
    assert_eq!(kinds["data"][0]["name"], "POST /checkout");
    let (status, errors) = get(
        &vigil,
        "/api/traces?service=checkout&tags=%7B%22error%22%3A%22true%22%7D&limit=50",
    );
    assert_eq!(status, 200, "{errors}");
    let mut found: Vec<String> = errors["data"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["traceID"].as_str().unwrap_or("").to_string())
        .collect();
    found.sort();
    let mut expected = failed.clone();
    expected.sort();
    assert_eq!(found, expected);
    let (_, slow) = get(
        &vigil,
        "/api/traces?service=checkout&operation=SELECT%20orders&minDuration=1us&limit=3",
    );
    assert_eq!(slow["data"].as_array().map(Vec::len), Some(3));

    let (status, one) = get(&vigil, &format!("/api/traces/{}", failed[0]));
    assert_eq!(status, 200, "{one}");
    let trace = &one["data"][0];
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "POST /checkout")
        .expect("root");
    let child = spans
        .iter()
        .find(|s| s["operationName"] == "SELECT orders")
        .expect("child");
    assert_eq!(child["references"][0]["spanID"], root["spanID"]);
    assert!(root["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .any(|t| t["key"] == "error" && t["value"] == true));
    assert_eq!(child["logs"][0]["fields"][0]["value"], "query sent");
    let process = &trace["processes"][root["processID"].as_str().unwrap_or("")];
    assert_eq!(process["serviceName"], "checkout");
    let (status, _) = get(&vigil, "/api/traces/00000000000000000000000000000042");
    assert_eq!(status, 404);

    // One SQL statement across signals: error logs joined to their failed root spans.
    assert_eq!(
        vigil.count(
            "SELECT count(*) FROM logs l JOIN spans s ON l.trace_id = s.trace_id \
             WHERE l.severity = 'error' AND s.status = 'error' AND s.parent_span_id = ''"
        ),
        4
    );

    // Bad input: undecodable → 400 with a google.rpc.Status; unknown type → 415; spans
    // with malformed ids → partial success, the rest kept.
    let (status, body) = ureq_post(
        &format!("{}/v1/traces", vigil.url),
        b"\xff\xff\xff",
        "application/x-protobuf",
    )
    .expect("post");
    assert_eq!(status, 400, "{body}");
    let (status, _) =
        ureq_post(&format!("{}/v1/logs", vigil.url), b"hello", "text/plain").expect("post");
    assert_eq!(status, 415);
    let start_ns = crate::util::now_ms() * 1_000_000;
    let partial = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok","kind":2,"startTimeUnixNano":"START","endTimeUnixNano":"END"},
        {"traceId":"abcd","spanId":"eee19b7ec3c1b174","name":"bad ids"}]}]}]}"#
        .replace("START", &start_ns.to_string())
        .replace("END", &(start_ns + 100_000_000).to_string());
    let (status, body) = ureq_post(
        &format!("{}/v1/traces", vigil.url),
        partial.as_bytes(),
        "application/json",
    )
    .expect("post");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{body}");
    assert_eq!(
        vigil.count("SELECT count(*) FROM spans WHERE service = 'json-svc'"),
        1
    );
    // Durable across kill -9.
    let vigil = vigil.kill_and_restart();
    assert_eq!(vigil.count("SELECT count(*) FROM spans"), 41);
}

/// Count of `.parquet` files under `blocks/<store>/` whose name starts with `prefix`.
fn parquet_files(vigil: &Vigil, store: &str, prefix: &str) -> usize {
    let dir = vigil.data_dir.join("blocks").join(store);
    std::fs::read_dir(&dir)
        .map(|partitions| {
            partitions
                .flatten()
                .filter_map(|p| std::fs::read_dir(p.path()).ok())
                .flat_map(|files| files.flatten())
                .filter(|f| {
                    let name = f.file_name().to_string_lossy().into_owned();
                    name.starts_with(prefix) && name.ends_with(".parquet")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Many small batches are merged by the maintenance loop into sorted files: the tables
/// answer the same before, after, and after a kill -9 right after the merge (the
/// replaced batch files are still on disk then and must not be read twice).
#[test]
fn batch_files_merge_without_losing_or_doubling_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let now = crate::util::now_ms();
    let mut trace_ids = Vec::new();
    for batch in 0..12 {
        let mut bulk = String::new();
        let mut spans = Vec::new();
        for i in 0..50 {
            let n = batch * 50 + i;
            let trace = format!("{:032x}", 0xabc000 + n);
            let ts = now - 60_000 + n as i64;
            bulk.push_str("{\"index\":{\"_index\":\"k8s-2026.12.01\"}}\n");
            bulk.push_str(&format!(
                "{{\"@timestamp\":\"{}\",\"log\":\"request {n}\",\"trace_id\":\"{trace}\",\"kubernetes\":{{\"namespace_name\":\"shop\",\"pod_name\":\"cart-{}\"}}}}\n",
                chrono_millis(ts),
                n % 3
            ));
            let start = ts * 1_000_000;
            spans.push(format!(
                r#"{{"traceId":"{trace}","spanId":"{:016x}","name":"GET /cart","kind":2,"startTimeUnixNano":"{start}","endTimeUnixNano":"{}"}}"#,
                n + 1,
                start + 5_000_000
            ));
            trace_ids.push(trace);
        }
        let (status, body) = ureq_post(
            &format!("{}/_bulk", vigil.url),
            bulk.as_bytes(),
            "application/x-ndjson",
        )
        .expect("bulk");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"errors\":false"), "{body}");
        let otlp = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"cart"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        );
        let (status, body) = ureq_post(
            &format!("{}/v1/traces", vigil.url),
            otlp.as_bytes(),
            "application/json",
        )
        .expect("otlp");
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(parquet_files(&vigil, "logs", ""), 12);
    let check = |vigil: &Vigil| {
        assert_eq!(vigil.count("SELECT count(*) FROM logs"), 600);
        assert_eq!(
            vigil.count("SELECT count(DISTINCT trace_id) FROM logs"),
            600
        );
        assert_eq!(vigil.count("SELECT count(*) FROM spans"), 600);
        let (status, body) =
            blocking_get(&format!("{}/api/traces/{}", vigil.url, trace_ids[321])).expect("get");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            vigil.count(&format!(
                "SELECT count(*) FROM spans s JOIN logs l ON s.trace_id = l.trace_id \
                 WHERE s.trace_id = '{}'",
                trace_ids[599]
            )),
            1
        );
    };
    check(&vigil);
    // Batches settle for 30 s and the loop runs every 30 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
    while parquet_files(&vigil, "logs", "merged-") == 0
        || parquet_files(&vigil, "spans", "merged-") == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no merge within 150 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    check(&vigil);
    let vigil = vigil.kill_and_restart();
    check(&vigil);
    assert_eq!(parquet_files(&vigil, "logs", ""), 1);
    assert_eq!(parquet_files(&vigil, "spans", ""), 1);
}

/// RFC 3339 with milliseconds, UTC.
fn chrono_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

//! Logs in: the official Elasticsearch Python client's `_bulk` (as Fluentd and Fluent
//! Bit ship Kubernetes logs) and Loki push (protobuf and JSON); stored durably, visible
//! at once in SQL, joined with metrics, kept across a kill -9; bad input refused in each
//! protocol's own way.

use std::process::Command;
use std::time::Duration;

use prost::Message;
use serde_json::Value;
use vigil_connectors::loki;

use crate::util::{blocking_get, now_ms, ureq_post, Rng, Vigil};

const NAMESPACES: &[&str] = &["shop", "payments", "monitoring"];

fn python(script: &str, url: &str) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("VIGIL_URL", url)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fluentd-shaped documents (`kubernetes_metadata` fields), shipped with the official
/// client's `helpers.bulk` to a Logstash-style daily index.
const SHIP: &str = r#"
import json, os, random, sys
from datetime import datetime, timezone, timedelta
from elasticsearch import Elasticsearch, helpers

es = Elasticsearch(os.environ["VIGIL_URL"], request_timeout=30)
info = es.info()
assert info["version"]["number"].startswith("8."), info
rng = random.Random(7)
now = datetime.now(timezone.utc)
namespaces = ["shop", "payments", "monitoring"]
counts = {}
docs = []
for i in range(600):
    ns = rng.choice(namespaces)
    pod = f"{ns}-api-{rng.randrange(3)}"
    level = rng.choice(["info", "info", "warn", "error"])
    counts[ns] = counts.get(ns, 0) + 1
    docs.append({
        "_index": "k8s-" + now.strftime("%Y.%m.%d"),
        "_source": {
            "@timestamp": (now - timedelta(seconds=rng.randrange(600))).isoformat(),
            "log": f"{level.upper()} request {i} took {rng.randrange(900)}ms",
            "stream": "stdout",
            "level": level,
            "kubernetes": {
                "namespace_name": ns,
                "pod_name": pod,
                "container_name": "api",
                "host": f"node-{rng.randrange(4)}",
                "labels": {"app": "api", "pod-template-hash": "7d9f"},
            },
            "trace_id": "%032x" % rng.getrandbits(128),
        },
    })
# One document from the future and one that is not an object: refused one by one.
docs.append({"_index": "k8s-bad", "_source": {"@timestamp": (now + timedelta(days=1)).isoformat(), "log": "x"}})
ok, errors = helpers.bulk(es, docs, raise_on_error=False, chunk_size=250)
print(json.dumps({"ok": ok, "errors": [list(e.values())[0]["status"] for e in errors], "counts": counts}))
"#;

#[test]
fn logs_from_elasticsearch_clients_and_loki_are_queryable_and_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);

    // Elasticsearch client.
    let shipped: Value = serde_json::from_str(python(SHIP, &vigil.url).trim()).expect("json");
    assert_eq!(shipped["ok"], 600, "{shipped}");
    assert_eq!(shipped["errors"], serde_json::json!([400]), "{shipped}");
    for ns in NAMESPACES {
        let expected = shipped["counts"][ns].as_i64().unwrap_or(0);
        let got = vigil.count(&format!(
            "SELECT count(*) FROM logs WHERE stream['namespace'] = '{ns}' AND stream['index'] = 'k8s'"
        ));
        assert_eq!(got, expected, "{ns}");
    }
    let rows = vigil.sql(
        "SELECT stream['app'] AS app, attributes['kubernetes.host'] AS host, severity, length(trace_id) AS t \
         FROM logs WHERE body LIKE 'ERROR%' LIMIT 1",
    );
    assert_eq!(rows[0]["app"], "api");
    assert!(rows[0]["host"].as_str().unwrap_or("").starts_with("node-"));
    assert_eq!(rows[0]["severity"], "error");
    assert_eq!(rows[0]["t"], 32);

    // Loki: protobuf (Promtail) and JSON.
    let t = now_ms() - 5_000;
    let request = loki::PushRequest {
        streams: vec![loki::StreamAdapter {
            labels: r#"{namespace="shop", pod="shop-api-0", job="promtail"}"#.into(),
            entries: (0..50)
                .map(|n| loki::EntryAdapter {
                    timestamp: Some(loki::Timestamp {
                        seconds: (t + n) / 1000,
                        nanos: (((t + n) % 1000) * 1_000_000) as i32,
                    }),
                    line: format!("level=error msg=\"payment failed\" n={n}"),
                    structured_metadata: vec![],
                })
                .collect(),
            hash: 0,
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy");
    let url = format!("{}/loki/api/v1/push", vigil.url);
    let (status, text) = ureq_post(&url, &body, "application/x-protobuf").expect("push");
    assert_eq!(status, 204, "{text}");
    let json = format!(
        r#"{{"streams":[{{"stream":{{"namespace":"payments","job":"alloy","level":"warn"}},"values":[["{}","slow checkout",{{"trace_id":"abc"}}]]}}]}}"#,
        t * 1_000_000
    );
    let (status, text) = ureq_post(&url, json.as_bytes(), "application/json").expect("push");
    assert_eq!(status, 204, "{text}");
    assert_eq!(
        vigil.count("SELECT count(*) FROM logs WHERE stream['job'] IN ('promtail', 'alloy')"),
        51
    );
    // A malformed push is refused whole, in Loki's plain-text style.
    let (status, text) = ureq_post(
        &url,
        br#"{"streams":[{"stream":{"a":"b"},"values":[["1","ok"],[2,"bad"]]}]}"#,
        "application/json",
    )
    .expect("push");
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        vigil.count("SELECT count(*) FROM logs WHERE stream['a'] = 'b'"),
        0
    );

    // One query across signals: error logs per pod next to the pod's metric.
    let mut batch = vigil_storage::SampleBatch::default();
    for ns in NAMESPACES {
        for n in 0..3 {
            let labels = vigil_storage::LabelSet::from_pairs([
                ("__name__", "container_restarts"),
                ("namespace", ns),
                ("pod", &format!("{ns}-api-{n}")),
            ])
            .expect("labels");
            let idx = batch.push_series(labels);
            batch.push_sample(idx, now_ms() - 1_000, n as f64);
        }
    }
    let (status, text) = vigil.write(&batch);
    assert_eq!(status, 204, "{text}");
    let joined = vigil.sql(
        "SELECT l.stream['pod'] AS pod, count(*) AS errors, max(m.value) AS restarts \
         FROM logs l JOIN metrics m ON m.name = 'container_restarts' AND m.labels['pod'] = l.stream['pod'] \
         WHERE l.severity = 'error' GROUP BY 1 ORDER BY 1",
    );
    assert!(!joined.is_empty());
    for row in &joined {
        let pod = row["pod"].as_str().unwrap_or("");
        let n: f64 = pod
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1.0);
        assert_eq!(row["restarts"].as_f64(), Some(n), "{row}");
    }

    // Durable: everything acknowledged is there after kill -9.
    let before = vigil.count("SELECT count(*) FROM logs");
    assert_eq!(before, 651);
    let vigil = vigil.kill_and_restart();
    assert_eq!(vigil.count("SELECT count(*) FROM logs"), before);
}

#[test]
fn logs_bad_bulk_requests_get_elasticsearch_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (status, body) = blocking_get(&format!("{}/", vigil.url)).expect("info");
    assert_eq!(status, 200, "{body}");
    let url = format!("{}/_bulk", vigil.url);
    // Not NDJSON at all: 400 with Elasticsearch's error object, nothing stored.
    let (status, body) = ureq_post(&url, b"[1,2]\n{}\n", "application/x-ndjson").expect("bulk");
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(error["status"], 400);
    assert_eq!(error["error"]["type"], "illegal_argument_exception");
    // Random mutations of a valid request never fail the server, and never store half an
    // item: every 201 in the answer is one stored record.
    let valid = format!(
        "{{\"index\":{{\"_index\":\"fuzz\"}}}}\n{{\"@timestamp\":{},\"message\":\"hello\",\"kubernetes\":{{\"pod_name\":\"p\"}}}}\n",
        now_ms() - 1000
    )
    .repeat(3);
    let mut rng = Rng(11);
    let mut created = 0;
    for _ in 0..200 {
        let mut bytes = valid.clone().into_bytes();
        for _ in 0..rng.between(1, 4) {
            let at = rng.below(bytes.len());
            bytes[at] = b"{}[]\":,\n x0"[rng.below(11)];
        }
        let (status, body) = ureq_post(&url, &bytes, "application/x-ndjson").expect("bulk");
        assert!(matches!(status, 200 | 400), "{status}: {body}");
        if status == 200 {
            let answer: Value = serde_json::from_str(&body).expect("json");
            created += answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| {
                    item.as_object()
                        .and_then(|o| o.values().next())
                        .is_some_and(|r| r["status"] == 201)
                })
                .count() as i64;
        }
    }
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(vigil.count("SELECT count(*) FROM logs"), created);
}

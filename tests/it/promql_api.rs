//! `/api/v1/query` and `/api/v1/query_range` over data written by remote_write.

use serde_json::Value;

use crate::util::{blocking_get, now_ms, Vigil};
use vigil_storage::{LabelSet, SampleBatch};

fn get_json(vigil: &Vigil, path_and_query: &str) -> (u16, Value) {
    let (status, body) = blocking_get(&format!("{}{path_and_query}", vigil.url)).expect("http");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not json: {body}")),
    )
}

#[test]
fn instant_and_range_queries_follow_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    // Two counters rising 10/s and 20/s, one sample every 10s for 10 minutes.
    let start = (now_ms() - 600_000) / 10_000 * 10_000;
    let mut batch = SampleBatch::default();
    for (pod, per_second) in [("a", 10.0), ("b", 20.0)] {
        let idx = batch.push_series(
            LabelSet::from_pairs([("__name__", "requests_total"), ("job", "web"), ("pod", pod)])
                .expect("labels"),
        );
        for step in 0..=60 {
            batch.push_sample(idx, start + step * 10_000, per_second * 10.0 * step as f64);
        }
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    let t = (start + 600_000) as f64 / 1000.0;

    let (status, json) = get_json(
        &vigil,
        &format!("/api/v1/query?query=sum%20by%20(job)%20(rate(requests_total%5B1m%5D))&time={t}"),
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["resultType"], "vector");
    let result = &json["data"]["result"][0];
    assert_eq!(result["metric"], serde_json::json!({"job": "web"}));
    assert_eq!(result["value"][0].as_f64(), Some(t));
    assert_eq!(result["value"][1], "30");

    let (status, json) = get_json(
        &vigil,
        &format!("/api/v1/query?query=requests_total%7Bpod%3D%22b%22%7D&time={t}"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        json["data"]["result"][0]["metric"]["__name__"],
        "requests_total"
    );
    assert_eq!(json["data"]["result"][0]["value"][1], "12000");

    let (status, json) = get_json(&vigil, &format!("/api/v1/query?query=1%2B1&time={t}"));
    assert_eq!(status, 200);
    assert_eq!(json["data"]["resultType"], "scalar");
    assert_eq!(json["data"]["result"][1], "2");

    let range_start = t - 120.0;
    let (status, json) = get_json(
        &vigil,
        &format!("/api/v1/query_range?query=rate(requests_total%7Bpod%3D%22a%22%7D%5B1m%5D)&start={range_start}&end={t}&step=30s"),
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["resultType"], "matrix");
    let values = json["data"]["result"][0]["values"]
        .as_array()
        .expect("values");
    assert_eq!(values.len(), 5);
    assert!(values.iter().all(|v| v[1] == "10"), "{values:?}");

    // Errors use Prometheus' envelope and status codes.
    let (status, json) = get_json(&vigil, "/api/v1/query?query=sum(");
    assert_eq!(status, 400);
    assert_eq!(json["errorType"], "bad_data");
    let (status, json) = get_json(
        &vigil,
        &format!("/api/v1/query_range?query=up&start={t}&end={range_start}&step=15"),
    );
    assert_eq!(status, 400);
    assert_eq!(json["errorType"], "bad_data");
    let (status, _) = get_json(
        &vigil,
        "/api/v1/query_range?query=up&start=0&end=100000&step=1",
    );
    assert_eq!(status, 400);
}

#[test]
fn series_labels_and_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (status, _) = vigil.write(&crate::util::batch("meta_metric", 3, 1, now_ms() - 1000));
    assert_eq!(status, 204);
    let (status, json) = get_json(
        &vigil,
        "/api/v1/series?match%5B%5D=meta_metric%7Binstance%3D~%22host-%5B01%5D%22%7D",
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["data"][0]["__name__"], "meta_metric");
    let (_, json) = get_json(&vigil, "/api/v1/labels");
    assert_eq!(
        json["data"],
        serde_json::json!(["__name__", "instance", "job"])
    );
    let (_, json) = get_json(&vigil, "/api/v1/label/instance/values");
    assert_eq!(
        json["data"],
        serde_json::json!(["host-0", "host-1", "host-2"])
    );
    let (status, json) = get_json(&vigil, "/api/v1/series");
    assert_eq!(status, 400);
    assert_eq!(json["errorType"], "bad_data");
    let (status, json) = get_json(&vigil, "/api/v1/status/buildinfo");
    assert_eq!(status, 200);
    assert_eq!(json["data"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn query_command_prints_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let now = now_ms();
    let (status, _) = vigil.write(&crate::util::batch("cli_gauge", 2, 3, now - 3000));
    assert_eq!(status, 204);
    let t = (now as f64 / 1000.0).to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["query", "--url", &vigil.url, "--time", &t, "sum(cli_gauge)"])
        .output()
        .expect("run vigil query");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Latest samples: 2 and 1002.
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("{} => 1004 @["),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["query", "--url", &vigil.url, "sum("])
        .output()
        .expect("run vigil query");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad_data"));
}

#[test]
fn increase_extrapolates_over_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    // A counter rising 100 per second, sampled every second at .123.
    let base = (now_ms() - 120_000) / 1000 * 1000 + 123;
    let mut batch = SampleBatch::default();
    let idx = batch.push_series(
        LabelSet::from_pairs([("__name__", "ctr_total"), ("job", "x")]).expect("labels"),
    );
    for step in 0..100 {
        batch.push_sample(idx, base + step * 1000, 100.0 * step as f64);
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    // At .623 the 10s window holds 10 samples spanning 9s, 0.5s from each edge: 900 → 1000.
    let t = (base + 50_500) as f64 / 1000.0;
    let (status, json) = get_json(
        &vigil,
        &format!("/api/v1/query?query=increase(ctr_total%5B10s%5D)&time={t}"),
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["result"][0]["value"][1], "1000", "{json}");
}

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
    let start = crate::util::write_web_counters(&vigil, "requests_total");
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

/// A histogram family (`latency_seconds_bucket` for two pods) plus a gauge, written at
/// 10s intervals over the last 10 minutes; returns the time of the last sample.
fn write_histograms(vigil: &Vigil) -> i64 {
    let start = (now_ms() - 600_000) / 10_000 * 10_000;
    let mut batch = SampleBatch::default();
    for pod in ["a", "b"] {
        for (le, per_step) in [("0.1", 5.0), ("0.5", 8.0), ("1", 9.0), ("+Inf", 10.0)] {
            let idx = batch.push_series(
                LabelSet::from_pairs([
                    ("__name__", "latency_seconds_bucket"),
                    ("pod", pod),
                    ("le", le),
                ])
                .expect("labels"),
            );
            for step in 0..=60 {
                batch.push_sample(idx, start + step * 10_000, per_step * step as f64);
            }
        }
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    start + 600_000
}

#[test]
fn histogram_quantile_annotations_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(
        &dir.path().join("data"),
        Some("query:\n  max_samples: 100\n"),
    );
    let end = write_histograms(&vigil);
    let t = end as f64 / 1000.0;
    let query = |q: &str| {
        let encoded =
            serde_urlencoded::to_string([("query", q), ("time", &t.to_string())]).expect("encode");
        get_json(&vigil, &format!("/api/v1/query?{encoded}"))
    };
    // Per 10s: 5 of 10 observations ≤ 0.1, 8 ≤ 0.5. The median is the top of the first
    // bucket; the 0.65-quantile is half-way through (0.1, 0.5].
    let (status, json) =
        query("histogram_quantile(0.65, sum by (le) (rate(latency_seconds_bucket[1m])))");
    assert_eq!(status, 200, "{json}");
    let value: f64 = json["data"]["result"][0]["value"][1]
        .as_str()
        .expect("value")
        .parse()
        .expect("float");
    assert!((value - 0.3).abs() < 1e-9, "{json}");
    assert_eq!(json["data"]["result"][0]["metric"], serde_json::json!({}));
    assert!(json.get("warnings").is_none(), "{json}");
    // Out-of-range φ: a result and a warning, as Prometheus reports it.
    let (status, json) = query("histogram_quantile(1.5, rate(latency_seconds_bucket[1m]))");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["result"][0]["value"][1], "+Inf");
    assert!(
        json["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("quantile value should be between 0 and 1")),
        "{json}"
    );
    // rate() over `_bucket` series is fine; over a name without a counter suffix it is
    // answered with Prometheus' info annotation.
    let (_, json) = query("rate(latency_seconds_bucket[1m])");
    assert!(json.get("infos").is_none(), "{json}");
    let (_, json) = query("rate(label_replace(latency_seconds_bucket, \"__name__\", \"latency\", \"\", \"\")[1m:10s])");
    assert!(
        json["infos"][0]
            .as_str()
            .is_some_and(|i| i.contains("metric might not be a counter")),
        "{json}"
    );
    // 8 series × 61 samples is more than max_samples (100): Prometheus' error.
    let (status, json) = query("max_over_time(latency_seconds_bucket[10m])");
    assert_eq!(status, 422, "{json}");
    assert_eq!(json["errorType"], "execution");
    assert!(json["error"]
        .as_str()
        .is_some_and(|e| e.contains("too many samples")));
    // A timeout parameter that cannot be parsed is bad_data.
    let (status, json) = get_json(&vigil, "/api/v1/query?query=1&timeout=soon");
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["errorType"], "bad_data");
}

#[test]
fn format_parse_query_and_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (status, json) = get_json(
        &vigil,
        "/api/v1/format_query?query=sum(rate(foo%7Bbar%3D%22baz%22%7D%5B5m%5D))%20by%20(job)",
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"], "sum by (job) (rate(foo{bar=\"baz\"}[5m]))");
    let (status, json) = get_json(&vigil, "/api/v1/parse_query?query=up%20offset%205m");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["type"], "vectorSelector");
    assert_eq!(json["data"]["name"], "up");
    assert_eq!(json["data"]["offset"], 300_000);
    let (status, json) = get_json(&vigil, "/api/v1/parse_query?query=sum(");
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["errorType"], "bad_data");
    let (status, json) = get_json(&vigil, "/api/v1/metadata");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "success");
    let (status, json) = get_json(&vigil, "/api/v1/metadata?limit=x");
    assert_eq!(status, 400, "{json}");
}

#[test]
fn series_labels_and_values_honour_start_and_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let now = now_ms();
    let mut batch = SampleBatch::default();
    // `old_metric` only an hour ago, `new_metric` only now.
    for (name, ts) in [("old_metric", now - 3_600_000), ("new_metric", now)] {
        let mut labels = LabelSet::from_pairs([("__name__", name), ("job", name)]).expect("labels");
        if name == "old_metric" {
            labels.set("legacy", "yes");
        }
        let idx = batch.push_series(labels);
        batch.push_sample(idx, ts, 1.0);
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    let recent = (now - 600_000) as f64 / 1000.0;
    let (status, json) = get_json(
        &vigil,
        &format!("/api/v1/series?match[]=%7Bjob%3D~%22.%2B_metric%22%7D&start={recent}"),
    );
    assert_eq!(status, 200, "{json}");
    let names: Vec<&str> = json["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["__name__"].as_str())
        .collect();
    assert_eq!(names, ["new_metric"], "{json}");
    let (_, json) = get_json(
        &vigil,
        "/api/v1/series?match[]=%7Bjob%3D~%22.%2B_metric%22%7D",
    );
    assert_eq!(json["data"].as_array().map(Vec::len), Some(2), "{json}");
    let (_, json) = get_json(&vigil, &format!("/api/v1/label/job/values?start={recent}"));
    assert_eq!(json["data"], serde_json::json!(["new_metric"]), "{json}");
    let (_, json) = get_json(&vigil, &format!("/api/v1/labels?end={recent}"));
    assert_eq!(
        json["data"],
        serde_json::json!(["__name__", "job", "legacy"]),
        "{json}"
    );
    // From `start` on only the recent series counts: no `legacy` label.
    let (_, json) = get_json(&vigil, &format!("/api/v1/labels?start={recent}"));
    assert_eq!(
        json["data"],
        serde_json::json!(["__name__", "job"]),
        "{json}"
    );
    let (status, json) = get_json(&vigil, "/api/v1/labels?start=yesterday");
    assert_eq!(status, 400, "{json}");
}

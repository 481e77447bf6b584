//! A real Prometheus scrapes itself and remote-writes to Vigil; Vigil's SQL returns the
//! same samples Prometheus stored.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{blocking_get, free_port, require, Peer, Vigil};

#[test]
fn prometheus_remote_write_matches_prometheus_storage() {
    let prometheus = require("prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("vigil"), None);
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
         remote_write:\n  - url: {}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n    metadata_config:\n      send_interval: 2s\n",
        vigil.url
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write config");
    let _prometheus = Peer(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    // Wait until Vigil has several scrapes of `up` from Prometheus.
    vigil.wait_for_rows(
        "SELECT count(*) AS n FROM metrics WHERE name = 'up' AND labels['job'] = 'prometheus'",
        Duration::from_secs(120),
        // 25 scrapes: every window below (≤ 10s, range queries over the last 10s) lies
        // inside the series' history. At a series' start Prometheus 2.42 and 3.x
        // extrapolate rate() differently (2.42 clamps to the counter's zero point before
        // the 1.1-interval test, 3.x after), so windows never reach back that far.
        |rows| rows.first().and_then(|r| r["n"].as_i64()).unwrap_or(0) >= 25,
    );
    std::thread::sleep(Duration::from_secs(2));
    let metric = "prometheus_tsdb_head_series";
    // Raw samples from Prometheus: a range-vector instant query returns them unaltered.
    let url = format!("http://127.0.0.1:{port}/api/v1/query?query={metric}%5B5m%5D");
    let deadline = Instant::now() + Duration::from_secs(30);
    let prom_samples: BTreeMap<i64, String> = loop {
        let (status, body) = blocking_get(&url).expect("query prometheus");
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        if let Some(values) = value["data"]["result"][0]["values"].as_array() {
            if values.len() >= 3 {
                break values
                    .iter()
                    .map(|pair| {
                        let ts = (pair[0].as_f64().expect("ts") * 1000.0).round() as i64;
                        (ts, pair[1].as_str().expect("value").to_string())
                    })
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus has no samples: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let last_prom = *prom_samples.keys().last().expect("samples");
    // Every sample Prometheus stored up to `last_prom` reaches Vigil with the same value.
    let query = format!(
        "SELECT CAST(timestamp AS BIGINT) AS ts, value FROM metrics WHERE name = '{metric}' \
         AND labels['job'] = 'prometheus' AND timestamp <= to_timestamp_millis({last_prom}) ORDER BY ts"
    );
    let rows = vigil.wait_for_rows(&query, Duration::from_secs(30), |rows| {
        rows.len() >= prom_samples.len()
    });
    let vigil_samples: BTreeMap<i64, f64> = rows
        .iter()
        .map(|row| {
            (
                row["ts"].as_i64().expect("ts"),
                row["value"].as_f64().expect("value"),
            )
        })
        .collect();
    for (ts, value) in &prom_samples {
        let expected: f64 = value.parse().expect("float");
        assert_eq!(
            vigil_samples.get(ts),
            Some(&expected),
            "sample at {ts} differs"
        );
    }

    // Differential PromQL: the same instant queries against both HTTP APIs, at a time
    // whose data has reached Vigil, give the same series and values. The time is half a
    // scrape interval off the sample grid, so window edges never fall on a sample
    // (Prometheus 2.42's windows are closed, Prometheus 3's and Vigil's left-open).
    let at = (last_prom - 1_500) as f64 / 1000.0;
    let queries = [
        "prometheus_tsdb_head_series",
        "max_over_time(scrape_duration_seconds[10s])",
        "count(up == 1)",
        "topk(3, prometheus_http_requests_total)",
        "absent(nonexistent_metric{job=\"x\"})",
        "prometheus_tsdb_head_series offset 3s",
        "count by (handler) (prometheus_http_requests_total) > 0",
        "scrape_samples_scraped / ignoring(__name__) scrape_duration_seconds > 0",
        // Dashboard and alert shapes: rates, a histogram quantile over classic buckets,
        // a group_left join against an info metric.
        "sum by (job) (rate(prometheus_tsdb_head_samples_appended_total[10s]))",
        "increase(prometheus_tsdb_head_samples_appended_total[8s])",
        "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_response_size_bytes_bucket[10s])))",
        "sum by (handler) (prometheus_http_requests_total) * on() group_left(version) (max by (version) (prometheus_build_info))",
        "avg_over_time(prometheus_tsdb_head_chunks[10s]) / on(instance) group_left() prometheus_tsdb_head_series",
        "delta(process_resident_memory_bytes[10s]) > -1e12",
    ];
    for query in queries {
        let encoded = serde_urlencoded::to_string([("query", query), ("time", &at.to_string())])
            .expect("encode");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let prom = vector_result(&format!("http://127.0.0.1:{port}/api/v1/query?{encoded}"));
            let ours = vector_result(&format!("{}/api/v1/query?{encoded}", vigil.url));
            let same = prom.len() == ours.len()
                && prom.iter().all(|(labels, value)| {
                    ours.get(labels).is_some_and(|other| close(*value, *other))
                });
            if same {
                assert!(
                    !prom.is_empty(),
                    "{query}: empty on both sides proves nothing"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{query}: prometheus {prom:?} vs vigil {ours:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    compare_range_queries(
        &format!("http://127.0.0.1:{port}"),
        &vigil.url,
        last_prom - 1_500,
    );
    compare_query_errors(&format!("http://127.0.0.1:{port}"), &vigil.url, at);

    // Metadata sent over remote_write answers /api/v1/metadata as Prometheus does.
    let wanted = "/api/v1/metadata?metric=prometheus_tsdb_head_series";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, prom) = blocking_get(&format!("http://127.0.0.1:{port}{wanted}")).expect("get");
        let (_, ours) = blocking_get(&format!("{}{wanted}", vigil.url)).expect("get");
        let prom: serde_json::Value = serde_json::from_str(&prom).expect("json");
        let ours: serde_json::Value = serde_json::from_str(&ours).expect("json");
        if !ours["data"].as_object().is_none_or(|d| d.is_empty()) {
            assert_eq!(ours["data"], prom["data"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no metadata reached vigil: {ours}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Queries Prometheus refuses: the same status, `errorType` and error text.
fn compare_query_errors(prom_url: &str, vigil_url: &str, at: f64) {
    let start = (at - 60.0).to_string();
    let end = at.to_string();
    let cases: &[(&str, &str)] = &[
        ("query_range", "up[2m]"),
        ("query_range", "\"text\""),
        ("query_range", "rate(up[1m])[5m:1m]"),
        ("query", "sum("),
        ("query", "rate(up)"),
        ("query", "up +"),
        ("query", "foo{"),
        ("query", "sum by (job) (up[5m])"),
        ("query", "up[5m] + 1"),
        ("query", "abs(\"x\")"),
        ("query", "unknown_function(up)"),
        ("query", "1 and 2"),
        ("query", "{}"),
        ("query", "up[5x]"),
    ];
    let mut differ = Vec::new();
    for (endpoint, query) in cases {
        let encoded = serde_urlencoded::to_string([
            ("query", *query),
            ("start", &start),
            ("end", &end),
            ("step", "15"),
            ("time", &end),
        ])
        .expect("encode");
        let answer = |base: &str| {
            let (status, body) =
                blocking_get(&format!("{base}/api/v1/{endpoint}?{encoded}")).expect("get");
            let json: serde_json::Value = serde_json::from_str(&body).expect("json");
            (status, json["errorType"].clone(), json["error"].clone())
        };
        let prom = answer(prom_url);
        let ours = answer(vigil_url);
        assert_eq!(prom.0, 400, "{endpoint} {query}: {prom:?}");
        if prom != ours {
            differ.push(format!(
                "{endpoint} {query}:\n  prometheus {prom:?}\n  vigil      {ours:?}"
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "query errors differ:\n{}",
        differ.join("\n")
    );
}

/// Range queries as Grafana sends them (start, end, step), off the sample grid.
fn compare_range_queries(prom_url: &str, vigil_url: &str, end_ms: i64) {
    let queries = [
        "sum by (job) (rate(prometheus_tsdb_head_samples_appended_total[5s]))",
        "max_over_time(scrape_duration_seconds[5s])",
        "topk(2, prometheus_http_requests_total)",
        "histogram_quantile(0.5, rate(prometheus_http_response_size_bytes_bucket[5s]))",
    ];
    let (start, end) = ((end_ms - 10_000) as f64 / 1000.0, end_ms as f64 / 1000.0);
    for query in queries {
        let encoded = serde_urlencoded::to_string([
            ("query", query),
            ("start", &start.to_string()),
            ("end", &end.to_string()),
            ("step", "2"),
        ])
        .expect("encode");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let prom = matrix_result(&format!("{prom_url}/api/v1/query_range?{encoded}"));
            let ours = matrix_result(&format!("{vigil_url}/api/v1/query_range?{encoded}"));
            let same = prom.len() == ours.len()
                && prom.iter().all(|(labels, points)| {
                    ours.get(labels).is_some_and(|other| {
                        points.len() == other.len()
                            && points
                                .iter()
                                .all(|(t, v)| other.get(t).is_some_and(|o| close(*v, *o)))
                    })
                });
            if same {
                assert!(
                    !prom.is_empty(),
                    "{query}: empty on both sides proves nothing"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{query}: prometheus {prom:?} vs vigil {ours:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A range-query result as labels → (timestamp ms → value).
fn matrix_result(url: &str) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let (status, body) = blocking_get(url).expect("query");
    assert_eq!(status, 200, "{url}: {body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    value["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let points = series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|pair| {
                    (
                        (pair[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64,
                        pair[1]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(f64::NAN),
                    )
                })
                .collect();
            (series["metric"].to_string(), points)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0) || (a.is_nan() && b.is_nan())
}

/// An instant-vector (or scalar) result as labels → value.
fn vector_result(url: &str) -> BTreeMap<String, f64> {
    let (status, body) = blocking_get(url).expect("query");
    assert_eq!(status, 200, "{url}: {body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let data = &value["data"];
    let parse = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sample| (sample["metric"].to_string(), parse(&sample["value"][1])))
            .collect(),
        _ => BTreeMap::from([(String::new(), parse(&data["result"][1]))]),
    }
}

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
         remote_write:\n  - url: {}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n",
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
        Duration::from_secs(90),
        |rows| rows.first().and_then(|r| r["n"].as_i64()).unwrap_or(0) >= 5,
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
        "max_over_time(scrape_duration_seconds[20s])",
        "count(up == 1)",
        "topk(3, prometheus_http_requests_total)",
        "absent(nonexistent_metric{job=\"x\"})",
        "prometheus_tsdb_head_series offset 3s",
        "count by (handler) (prometheus_http_requests_total) > 0",
        "scrape_samples_scraped / ignoring(__name__) scrape_duration_seconds > 0",
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
                    ours.get(labels).is_some_and(|other| {
                        (value - other).abs() <= 1e-9 * value.abs().max(1.0)
                            || (value.is_nan() && other.is_nan())
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

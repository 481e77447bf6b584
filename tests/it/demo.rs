//! `vigil demo` shows the seed's series within seconds, with the scripted problems.

use std::time::Duration;

use crate::util::Vigil;

#[test]
fn demo_cluster_produces_the_seed_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::demo(&dir.path().join("data"));
    let expected = [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "http_requests_total",
        "kube_pod_container_resource_limits",
        "kube_pod_container_status_restarts_total",
        "kubelet_volume_stats_available_bytes",
        "kubelet_volume_stats_capacity_bytes",
    ];
    let rows = vigil.wait_for_rows(
        "SELECT DISTINCT name FROM metrics ORDER BY name",
        Duration::from_secs(20),
        |rows| {
            expected
                .iter()
                .all(|name| rows.iter().any(|row| row["name"] == *name))
        },
    );
    assert!(rows.len() >= expected.len());
    // The backfilled hour is there: 240 steps of 15s per series.
    vigil.wait_for_rows(
        "SELECT min(n) AS n FROM (SELECT series_id, count(*) AS n FROM metrics \
         WHERE name = 'container_memory_working_set_bytes' GROUP BY series_id)",
        Duration::from_secs(20),
        |rows| {
            rows.first()
                .and_then(|row| row["n"].as_i64())
                .is_some_and(|n| n >= 239)
        },
    );
    // One pod is crash-looping: only it restarts.
    let restarting = vigil.sql(
        "SELECT labels['pod'] AS pod, max(value) AS restarts FROM metrics \
         WHERE name = 'kube_pod_container_status_restarts_total' GROUP BY 1 HAVING max(value) > 0",
    );
    assert_eq!(restarting.len(), 1, "{restarting:?}");
    assert!(restarting[0]["pod"]
        .as_str()
        .unwrap_or("")
        .starts_with("worker-"));
    // One volume is filling up: under 10% free at the latest sample.
    let filling = vigil.sql(
        "WITH latest AS (SELECT name, labels['persistentvolumeclaim'] AS pvc, last_value(value ORDER BY timestamp) AS v \
           FROM metrics WHERE name LIKE 'kubelet_volume_stats_%' GROUP BY 1, 2) \
         SELECT a.pvc FROM latest a JOIN latest c ON a.pvc = c.pvc \
         WHERE a.name = 'kubelet_volume_stats_available_bytes' AND c.name = 'kubelet_volume_stats_capacity_bytes' AND a.v / c.v < 0.1",
    );
    assert_eq!(filling.len(), 1, "{filling:?}");
    assert_eq!(filling[0]["pvc"], "prometheus-db-prometheus-0");
}

#[test]
fn demo_rules_fire_on_the_demo_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::demo(&dir.path().join("data"));
    let wanted = [
        "PodCrashLooping",
        "HighCPUUsage",
        "HighMemoryUsage",
        "PersistentVolumeFillingUp",
    ];
    // While data flows, rules are evaluated in event time, so the backfilled hour is
    // evaluated tick by tick as it arrives and the alerts fire during it (`for` is 1m).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) =
            crate::util::blocking_get(&format!("{}/api/v1/alerts", vigil.url)).expect("get");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        let firing: Vec<&str> = json["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|alert| alert["state"] == "firing")
            .filter_map(|alert| alert["labels"]["alertname"].as_str())
            .collect();
        if wanted.iter().all(|name| firing.contains(name)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "firing so far: {firing:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every demo rule is maintained by the dataflow, not re-evaluated ad hoc.
    let (_, body) = crate::util::blocking_get(&format!("{}/api/v1/rules", vigil.url)).expect("get");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let rules: Vec<&serde_json::Value> = json["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(rules.len(), 5, "{body}");
    for rule in rules {
        assert_eq!(rule["incremental"], true, "{rule}");
    }
}

#[test]
fn demo_ships_linked_logs_and_traces_through_the_real_protocols() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::demo(&dir.path().join("data"));
    // The backfilled hour of container logs (over `_bulk`) and traces (over OTLP/HTTP).
    vigil.wait_for_rows(
        "SELECT (SELECT count(*) FROM logs) AS logs, (SELECT count(*) FROM spans) AS spans",
        Duration::from_secs(60),
        |rows| {
            rows.first().is_some_and(|row| {
                row["logs"].as_i64().unwrap_or(0) > 10_000
                    && row["spans"].as_i64().unwrap_or(0) > 20_000
            })
        },
    );
    // Fluentd's Kubernetes metadata became stream labels; the crash-looping worker
    // writes error bursts.
    let errors = vigil.sql(
        "SELECT stream['namespace'] AS ns, stream['pod'] AS pod, count(*) AS n FROM logs \
         WHERE severity = 'error' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1",
    );
    assert_eq!(errors[0]["ns"], "payments", "{errors:?}");
    assert!(errors[0]["pod"]
        .as_str()
        .unwrap_or("")
        .starts_with("worker-"));
    // Logs and spans are linked by trace id, and failed requests have error lines.
    let linked = vigil.count(
        "SELECT count(DISTINCT s.trace_id) FROM spans s JOIN logs l ON l.trace_id = s.trace_id \
         WHERE s.status = 'error' AND l.severity = 'error'",
    );
    assert!(linked > 0);
    // The service graph is visible through the Jaeger API.
    let (status, body) =
        crate::util::blocking_get(&format!("{}/api/services", vigil.url)).expect("jaeger");
    assert_eq!(status, 200);
    for service in ["api", "cart", "frontend"] {
        assert!(body.contains(&format!("\"{service}\"")), "{body}");
    }
    // The demo's continuous query keeps the error counts per minute of the last hour
    // (its horizon) of logs.
    vigil.wait_for_rows(
        "SELECT (SELECT sum(errors) FROM errors_per_minute) AS maintained, \
         (SELECT count(*) FROM logs WHERE severity = 'error' AND timestamp >= \
          (SELECT max(timestamp) FROM logs) - INTERVAL '1 hour') AS stored",
        Duration::from_secs(30),
        |rows| {
            rows.first().is_some_and(|row| {
                row["maintained"].as_i64().is_some_and(|n| n > 0)
                    && row["maintained"] == row["stored"]
            })
        },
    );
}

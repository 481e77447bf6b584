//! Alerting end to end: rules loaded from the config, an alert that turns pending at the
//! ingest of the sample that makes it true and fires after `for` (event time), the
//! websocket stream (a real websocket client), `/api/v1/alerts` and `/api/v1/rules`,
//! and a real Alertmanager (Debian's `prometheus-alertmanager`) receiving the alert.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_storage::{LabelSet, SampleBatch};

use crate::util::{blocking_get, free_port, now_ms, require, Peer, Vigil};

const RULES: &str = r#"groups:
  - name: test
    rules:
      - alert: HighValue
        expr: test_gauge > 10
        for: 2s
        labels:
          severity: critical
        annotations:
          summary: '{{ $labels.instance }} is at {{ $value }}'
      - record: test_gauge:doubled
        expr: test_gauge * 2
      - record: test_gauge:hour_ago
        expr: test_gauge offset 1h
"#;

fn write_gauge(vigil: &Vigil, value: f64) -> Instant {
    let mut batch = SampleBatch::default();
    let idx = batch.push_series(
        LabelSet::from_pairs([("__name__", "test_gauge"), ("instance", "db-1")]).expect("labels"),
    );
    batch.push_sample(idx, now_ms(), value);
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    Instant::now()
}

pub(crate) fn json_get(url: &str) -> Value {
    let (status, body) = blocking_get(url).expect("get");
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// The next alert message (heartbeats skipped), within `timeout`.
pub(crate) fn next_alert(
    socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(Instant::now() < deadline, "no alert message in {timeout:?}");
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).expect("json message");
                if value["type"] != "heartbeat" {
                    return value;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(err))
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut => {}
            Err(err) => panic!("websocket: {err}"),
        }
    }
}

#[test]
fn alerts_reach_websocket_and_alertmanager() {
    let alertmanager = require("prometheus-alertmanager");
    let dir = tempfile::tempdir().expect("tempdir");
    let am_port = free_port();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .expect("write");
    let _am = Peer(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("write rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n",
        rules.display()
    );
    let vigil = Vigil::start(&dir.path().join("vigil"), Some(&config));
    write_gauge(&vigil, 5.0);

    let ws_url = format!(
        "{}/api/v1/alerts/stream?match=severity%3D%22critical%22",
        vigil.url.replace("http://", "ws://")
    );
    let (mut socket, _) = tungstenite::connect(&ws_url).expect("websocket connects");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    // The sample that crosses the threshold: pending at once (ingest-triggered).
    let acked = write_gauge(&vigil, 20.0);
    let pending = next_alert(&mut socket, Duration::from_secs(5));
    let latency = acked.elapsed();
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["labels"]["alertname"], "HighValue");
    assert_eq!(pending["labels"]["instance"], "db-1");
    assert_eq!(pending["annotations"]["summary"], "db-1 is at 20");
    println!("ack → pending message: {latency:?}");
    // Keep the condition true; firing once 2s of event time have passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let firing = loop {
        std::thread::sleep(Duration::from_millis(300));
        write_gauge(&vigil, 21.0);
        if let Ok(tungstenite::Message::Text(text)) = socket.read() {
            let value: Value = serde_json::from_str(&text).expect("json");
            if value["status"] == "firing" {
                break value;
            }
        }
        assert!(Instant::now() < deadline, "alert never fired");
    };
    assert!(firing["seq"].as_u64() > pending["seq"].as_u64());
    // `for` elapses at an exact instant of event time, and the alert fires then (not
    // at the next write or tick after it).
    let instant = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(firing[field].as_str().unwrap_or_default())
            .map(|t| t.timestamp_millis())
            .expect("RFC 3339 time")
    };
    assert_eq!(instant("startsAt") - instant("activeAt"), 2_000, "{firing}");
    assert_eq!(firing["from"], "pending", "{firing}");

    // The stream is a subscription to the alerts hub: a client that reconnects after
    // the pending message resumes there and gets the firing transition again, with
    // the same sequence number; one without `from_seq` gets the snapshot.
    let resume_url = format!("{ws_url}&from_seq={}", pending["seq"]);
    let (mut resumed, _) = tungstenite::connect(&resume_url).expect("websocket reconnects");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = resumed.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    let again = next_alert(&mut resumed, Duration::from_secs(5));
    assert_eq!(again["status"], "firing", "{again}");
    assert_eq!(again["seq"], firing["seq"], "{again}");
    assert_eq!(again["startsAt"], firing["startsAt"], "{again}");
    let (mut fresh, _) = tungstenite::connect(&ws_url).expect("websocket connects");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = fresh.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    let snapshot = next_alert(&mut fresh, Duration::from_secs(5));
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["status"], "firing", "{snapshot}");
    assert_eq!(snapshot["labels"]["instance"], "db-1", "{snapshot}");

    let alerts = json_get(&format!("{}/api/v1/alerts", vigil.url));
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    let rules_json = json_get(&format!("{}/api/v1/rules", vigil.url));
    let group = &rules_json["data"]["groups"][0];
    assert_eq!(group["rules"][0]["name"], "HighValue");
    assert_eq!(group["rules"][0]["state"], "firing");
    // Maintained by the dataflow, except the rule using `offset`, which says why.
    assert_eq!(group["rules"][0]["incremental"], true);
    assert_eq!(group["rules"][1]["type"], "recording");
    assert_eq!(group["rules"][1]["incremental"], true);
    assert_eq!(group["rules"][2]["incremental"], false);
    assert_eq!(
        group["rules"][2]["incrementalFallback"],
        "offset or @ modifier"
    );
    // A sample a minute behind the evaluations (a new series, so storage accepts it)
    // is stored and counted as late.
    let mut late = SampleBatch::default();
    let idx = late.push_series(
        LabelSet::from_pairs([("__name__", "test_gauge"), ("instance", "late-1")]).expect("labels"),
    );
    late.push_sample(idx, now_ms() - 60_000, 1.0);
    assert_eq!(vigil.write(&late).0, 204);
    write_gauge(&vigil, 21.0);
    let metric = |name: &str| {
        let (_, metrics) = blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(metric("vigil_rule_evaluations_total{mode=\"incremental\"}") > 0.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric("vigil_rule_late_samples_total") < 1.0 {
        assert!(Instant::now() < deadline, "late sample not counted");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The real Alertmanager has it, with Vigil's labels and annotations.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let am_alerts = json_get(&format!("http://127.0.0.1:{am_port}/api/v2/alerts"));
        let found = am_alerts.as_array().into_iter().flatten().find(|alert| {
            alert["labels"]["alertname"] == "HighValue" && alert["labels"]["instance"] == "db-1"
        });
        if let Some(alert) = found {
            // Annotations are rendered at each evaluation: the latest value is 21.
            assert_eq!(alert["annotations"]["summary"], "db-1 is at 21");
            assert_eq!(alert["status"]["state"], "active");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager never got the alert: {am_alerts}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Recording rule output and ALERTS were written back at evaluation ticks.
    vigil.wait_for_rows(
        "SELECT count(*) AS n FROM metrics WHERE name = 'ALERTS' AND labels['alertstate'] = 'firing'",
        Duration::from_secs(10),
        |rows| rows.first().and_then(|r| r["n"].as_i64()).unwrap_or(0) >= 1,
    );
    vigil.wait_for_rows(
        "SELECT count(*) AS n FROM metrics WHERE name = 'test_gauge:doubled'",
        Duration::from_secs(10),
        |rows| rows.first().and_then(|r| r["n"].as_i64()).unwrap_or(0) >= 1,
    );

    // A reload with unchanged rules keeps the alert's state; a broken file is refused
    // with Prometheus' message and the running rules stay.
    let active_at = alerts["data"]["alerts"][0]["activeAt"].clone();
    let (status, body) =
        crate::util::ureq_post(&format!("{}/-/reload", vigil.url), b"", "text/plain")
            .expect("reload");
    assert_eq!(status, 200, "{body}");
    let alerts = json_get(&format!("{}/api/v1/alerts", vigil.url));
    assert_eq!(
        alerts["data"]["alerts"][0]["activeAt"], active_at,
        "{alerts}"
    );
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing");
    std::fs::write(
        &rules,
        "groups:\n  - name: broken\n    rules:\n      - alert: X\n        expr: sum(\n",
    )
    .expect("write");
    let (status, body) =
        crate::util::ureq_post(&format!("{}/-/reload", vigil.url), b"", "text/plain")
            .expect("reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("could not parse expression"), "{body}");
    std::fs::write(&rules, RULES).expect("write");
    let rules_json = json_get(&format!("{}/api/v1/rules", vigil.url));
    assert_eq!(
        rules_json["data"]["groups"][0]["rules"][0]["state"],
        "firing"
    );

    // After a restart the alert's activeAt comes back from ALERTS_FOR_STATE.
    drop(socket);
    let vigil = vigil.kill_and_restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = json_get(&format!("{}/api/v1/alerts", vigil.url));
        let alert = &alerts["data"]["alerts"][0];
        if alert["state"] == "firing" {
            assert_eq!(alert["activeAt"], active_at, "{alerts}");
            break;
        }
        assert!(Instant::now() < deadline, "alert not restored: {alerts}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (mut socket, _) = tungstenite::connect(ws_url.replace(
        &ws_url[..ws_url.find("/api").expect("path")],
        &vigil.url.replace("http://", "ws://"),
    ))
    .expect("websocket reconnects");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    // The current alerts come first on connect.
    let snapshot = next_alert(&mut socket, Duration::from_secs(5));
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["status"], "firing");
    // Restored as it was: state, annotations, value and startsAt (no re-fire at the
    // restart time).
    assert_eq!(
        snapshot["annotations"]["summary"], "db-1 is at 21",
        "{snapshot}"
    );
    assert_eq!(snapshot["value"], "21", "{snapshot}");
    assert_eq!(snapshot["startsAt"], firing["startsAt"], "{snapshot}");
    assert_eq!(snapshot["activeAt"], firing["activeAt"], "{snapshot}");

    // `vigil alerts tail` prints the same stream.
    let (tail, lines_rx) =
        crate::util::spawn_lines(Command::new(env!("CARGO_BIN_EXE_vigil")).args([
            "alerts",
            "tail",
            "--url",
            &vigil.url,
            "--match",
            "severity=\"critical\"",
        ]));
    let first = lines_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a line from alerts tail");
    assert!(
        first.contains("firing") && first.contains("HighValue"),
        "{first}"
    );

    // Back below the threshold: resolved on the stream (and on the tail).
    write_gauge(&vigil, 1.0);
    // The restored alert emits no transition of its own (no second `firing`): the
    // next message after the snapshot is the resolution.
    let message = next_alert(&mut socket, Duration::from_secs(10));
    assert_eq!(message["status"], "resolved", "{message}");
    assert_eq!(message["labels"]["alertname"], "HighValue");
    let resolved = lines_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a second line from alerts tail");
    assert!(resolved.contains("resolved"), "{resolved}");
    drop(tail);
    // A bad matcher is a Prometheus-style 400.
    let (status, body) =
        blocking_get(&format!("{}/api/v1/alerts/stream?match=%7B%7B", vigil.url)).expect("get");
    assert_eq!(status, 400, "{body}");
}

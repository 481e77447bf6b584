//! Rule-group semantics in the live server, beyond what Prometheus' PromQL test files
//! cover: rule output marked stale when a rule stops producing a series (and when a
//! reload removes the rule), the engine seeded from Parquet after a restart, and a
//! sample from the future that must not move the rule clock.

use std::time::{Duration, Instant};

use vigil_storage::record::stale_marker;
use vigil_storage::{LabelSet, SampleBatch};

use crate::alerts::{json_get, next_alert};
use crate::remote_write::walk;
use crate::util::{now_ms, ureq_post, Vigil};

/// A sample to write: its labels, time and value.
type Sample<'a> = (&'a [(&'a str, &'a str)], i64, f64);

fn write(vigil: &Vigil, samples: &[Sample]) {
    let mut batch = SampleBatch::default();
    for (labels, t, value) in samples {
        let idx = batch.push_series(LabelSet::from_pairs(labels.iter().copied()).expect("labels"));
        batch.push_sample(idx, *t, *value);
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
}

/// The instant vector of `query` now, as (labels, value) pairs sorted by labels.
fn instant(vigil: &Vigil, query: &str, at: Option<f64>) -> Vec<(String, String)> {
    let mut url = format!("{}/api/v1/query?query={}", vigil.url, urlencoding(query));
    if let Some(at) = at {
        url.push_str(&format!("&time={at}"));
    }
    let body = json_get(&url);
    let mut out: Vec<(String, String)> = body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["metric"].to_string(),
                s["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn urlencoding(text: &str) -> String {
    serde_urlencoded::to_string([("q", text)])
        .expect("encode")
        .trim_start_matches("q=")
        .to_string()
}

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match done() {
            Ok(()) => return,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn socket(
    vigil: &Vigil,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let url = format!(
        "{}/api/v1/alerts/stream",
        vigil.url.replace("http://", "ws://")
    );
    let (socket, _) = tungstenite::connect(&url).expect("websocket connects");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    socket
}

const STALE_RULES: &str = r#"groups:
  - name: g
    rules:
      - record: r
        expr: x > 0
      - alert: A
        expr: r > 0
        for: 2s
  - name: other
    rules:
      - record: r_other
        expr: x * 2
"#;

/// The reproduction of the rules issue, live: a series that ends with a staleness
/// marker takes the recording rule's output, the `ALERTS` series and the alert with it
/// at the next evaluation, not five minutes later; a firing alert leaves no `pending`
/// series behind; a reload that removes a rule marks its output stale.
#[test]
fn rule_output_goes_stale_live_and_on_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, STALE_RULES).expect("write rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
        rules.display()
    );
    let vigil = Vigil::start(&dir.path().join("vigil"), Some(&config));
    let mut socket = socket(&vigil);
    let a: &[(&str, &str)] = &[("__name__", "x"), ("p", "a")];
    let b: &[(&str, &str)] = &[("__name__", "x"), ("p", "b")];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let t = now_ms();
        write(&vigil, &[(a, t, 1.0), (b, t, 1.0)]);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_for(Duration::from_secs(5), "both alerts fire", || {
        let alerts = instant(&vigil, "ALERTS", None);
        let firing = alerts.iter().filter(|(l, _)| l.contains("firing")).count();
        let pending = alerts.iter().filter(|(l, _)| l.contains("pending")).count();
        // A firing alert's pending series is marked stale when it fires.
        if firing == 2 && pending == 0 {
            Ok(())
        } else {
            Err(format!("{alerts:?}"))
        }
    });
    // x{p="a"} ends with a staleness marker (as a scrape target that goes away).
    write(&vigil, &[(a, now_ms(), stale_marker()), (b, now_ms(), 1.0)]);
    let ended = Instant::now();
    while ended.elapsed() < Duration::from_secs(3) {
        write(&vigil, &[(b, now_ms(), 1.0)]);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_for(Duration::from_secs(5), "r{p=\"a\"} goes stale", || {
        let r = instant(&vigil, "r", None);
        let alerts = instant(&vigil, "ALERTS", None);
        if r.len() == 1 && r[0].0.contains("\"b\"") && alerts.len() == 1 {
            Ok(())
        } else {
            Err(format!("r = {r:?}, ALERTS = {alerts:?}"))
        }
    });
    let api = json_get(&format!("{}/api/v1/alerts", vigil.url));
    let alerts = api["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(alerts.len(), 1, "{api}");
    assert_eq!(alerts[0]["labels"]["p"], "b");
    // The stream saw p="a" resolve.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = next_alert(&mut socket, Duration::from_secs(5));
        if message["status"] == "resolved" {
            assert_eq!(message["labels"]["p"], "a", "{message}");
            break;
        }
        assert!(Instant::now() < deadline, "p=a never resolved");
    }

    // A reload that renames the recording rule: `r` is marked stale at the next
    // evaluation, `r2` takes over.
    assert_eq!(
        instant(&vigil, "r_other", None).len(),
        1,
        "r_other before the reload"
    );
    // The group `other` is removed: its `r_other` is marked stale too.
    let renamed = STALE_RULES
        .replace("record: r\n", "record: r2\n")
        .replace("expr: r > 0", "expr: r2 > 0");
    let without_other = &renamed[..renamed.find("  - name: other").expect("group")];
    std::fs::write(&rules, without_other).expect("write rules");
    let (status, body) =
        ureq_post(&format!("{}/-/reload", vigil.url), b"", "text/plain").expect("reload");
    assert_eq!(status, 200, "{body}");
    let reloaded = Instant::now();
    while reloaded.elapsed() < Duration::from_secs(3) {
        write(&vigil, &[(b, now_ms(), 1.0)]);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_for(
        Duration::from_secs(5),
        "r goes stale after the reload",
        || {
            let r = instant(&vigil, "r", None);
            let r2 = instant(&vigil, "r2", None);
            let other = instant(&vigil, "r_other", None);
            if r.is_empty() && r2.len() == 1 && other.is_empty() {
                Ok(())
            } else {
                Err(format!("r = {r:?}, r2 = {r2:?}, r_other = {other:?}"))
            }
        },
    );
}

/// After the samples were flushed to Parquet and the server restarted, the engine is
/// seeded from Parquet: the recording rule's first output after the restart equals the
/// same expression queried ad hoc at that instant, and the rules report healthy and
/// incremental.
#[test]
fn restart_seeds_rules_from_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vigil");
    let rules = dir.path().join("rules.yml");
    let expr = "sum by (job) (rate(c_total[1m]))";
    std::fs::write(
        &rules,
        format!(
            "groups:\n  - name: g\n    rules:\n      - record: job:c:rate\n        expr: {expr}\n      - alert: Rising\n        expr: {expr} > 1\n"
        ),
    )
    .expect("write rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nstorage:\n  block_period: 2s\nrule_files:\n  - {}\n",
        rules.display()
    );
    let vigil = Vigil::start(&data, Some(&config));
    // 90s of history, one sample a second, rising 5/s on two pods.
    let end = now_ms();
    let mut batch = SampleBatch::default();
    for pod in ["a", "b"] {
        let idx = batch.push_series(
            LabelSet::from_pairs([("__name__", "c_total"), ("job", "web"), ("pod", pod)])
                .expect("labels"),
        );
        for k in 0..90 {
            let t = end - (89 - k) * 1000;
            batch.push_sample(idx, t, 5.0 * k as f64);
        }
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    wait_for(
        Duration::from_secs(30),
        "samples flushed to Parquet",
        || {
            let files = walk(&data.join("blocks/metrics"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .count();
            if files >= 10 {
                Ok(())
            } else {
                Err(format!("{files} files"))
            }
        },
    );
    let vigil = vigil.kill_and_restart();
    let restarted = now_ms();
    // The first evaluation after the restart wrote the rule's output.
    let mut first: Option<(i64, f64)> = None;
    wait_for(Duration::from_secs(15), "recorded after restart", || {
        let rows = vigil.sql(&format!(
            "SELECT CAST(timestamp AS BIGINT) AS ts, value FROM metrics \
             WHERE name = 'job:c:rate' AND timestamp > to_timestamp_millis({restarted}) \
             ORDER BY timestamp LIMIT 1"
        ));
        match rows.first() {
            Some(row) => {
                first = Some((
                    row["ts"].as_i64().unwrap_or_default(),
                    row["value"].as_f64().unwrap_or(f64::NAN),
                ));
                Ok(())
            }
            None => Err("no output yet".into()),
        }
    });
    let (ts, maintained) = first.expect("first output");
    let ad_hoc = instant(&vigil, expr, Some(ts as f64 / 1000.0));
    assert_eq!(ad_hoc.len(), 1, "{ad_hoc:?}");
    let ad_hoc: f64 = ad_hoc[0].1.parse().expect("value");
    assert!(
        (maintained - ad_hoc).abs() <= 1e-9 * ad_hoc.abs(),
        "maintained {maintained} vs ad hoc {ad_hoc} at {ts}"
    );
    assert!(
        (ad_hoc - 10.0).abs() < 1.0,
        "rate of two 5/s counters: {ad_hoc}"
    );
    let rules_json = json_get(&format!("{}/api/v1/rules", vigil.url));
    for rule in rules_json["data"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
    {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["incremental"], true, "{rule}");
    }
}

/// One sample a day ahead on an unrelated series: stored, but the rule clock
/// stays on the wall clock, the firing alert stays firing, and real-time samples are
/// not counted late.
#[test]
fn a_sample_from_the_future_does_not_move_rule_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: High\n        expr: y > 10\n        for: 1s\n",
    )
    .expect("write rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
        rules.display()
    );
    let vigil = Vigil::start(&dir.path().join("vigil"), Some(&config));
    let y: &[(&str, &str)] = &[("__name__", "y"), ("instance", "db")];
    let keep_writing = |value: f64, seconds: u64| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(seconds) {
            write(&vigil, &[(y, now_ms(), value)]);
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let state = || {
        let api = json_get(&format!("{}/api/v1/alerts", vigil.url));
        api["data"]["alerts"][0]["state"]
            .as_str()
            .unwrap_or("inactive")
            .to_string()
    };
    keep_writing(20.0, 3);
    assert_eq!(state(), "firing");
    let late = |vigil: &Vigil| {
        let (_, metrics) =
            crate::util::blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("vigil_rule_late_samples_total")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let late_before = late(&vigil);
    let z: &[(&str, &str)] = &[("__name__", "z")];
    // Within the allowed skew (10m by default; further ahead is refused at ingest, see
    // `hostile::hostile_timestamps_from_the_future_are_refused`): stored, but the rule
    // clock stays with the wall clock.
    write(&vigil, &[(z, now_ms() + 540_000, 1.0)]);
    keep_writing(20.0, 3);
    assert_eq!(state(), "firing");
    assert_eq!(late(&vigil), late_before, "real-time samples counted late");
    // The alert still follows the data: below the threshold it resolves, above it
    // turns pending again.
    keep_writing(5.0, 2);
    assert_eq!(state(), "inactive");
    write(&vigil, &[(y, now_ms(), 30.0)]);
    wait_for(Duration::from_secs(2), "pending again", || {
        let s = state();
        if s == "pending" || s == "firing" {
            Ok(())
        } else {
            Err(s)
        }
    });
}

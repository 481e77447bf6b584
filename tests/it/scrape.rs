//! Scraping a target whose exposition changes: staleness markers for vanished series,
//! `honor_labels`, `params`, explicit timestamps, and OpenMetrics.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::Vigil;

/// A tiny HTTP target serving whatever `body` holds, recording request lines.
struct Target {
    port: u16,
    body: Arc<Mutex<(String, String)>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Target {
    fn start(content_type: &str, body: &str) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Mutex::new((content_type.to_string(), body.to_string())));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (serve_body, serve_requests) = (shared.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(line) = request.lines().next() {
                    serve_requests.lock().expect("lock").push(line.to_string());
                }
                let (content_type, body) = serve_body.lock().expect("lock").clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Target {
            port,
            body: shared,
            requests,
        }
    }

    fn set(&self, body: &str) {
        self.body.lock().expect("lock").1 = body.to_string();
    }
}

#[test]
fn vanished_series_get_staleness_markers() {
    let explicit_ts = crate::util::now_ms() - 5_000;
    let target = Target::start(
        "text/plain; version=0.0.4",
        &format!(
            "# TYPE jobs_running gauge\njobs_running{{queue=\"a\"}} 1\njobs_running{{queue=\"b\"}} 2\n\
             clash{{job=\"from-target\",instance=\"x\"}} 7\nwith_ts 5 {explicit_ts}\n"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    params:\n      module: [fast]\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        target.port
    );
    let vigil = Vigil::start(&dir.path().join("data"), Some(&config));
    vigil.wait_for_rows(
        "SELECT value FROM metrics WHERE name = 'jobs_running' AND labels['queue'] = 'b'",
        Duration::from_secs(20),
        |rows| !rows.is_empty(),
    );
    // params reach the target; target labels win and scraped ones become exported_*.
    assert!(target.requests.lock().expect("lock")[0].contains("/metrics?module=fast"));
    let clash = vigil.sql(
        "SELECT labels['job'] AS job, labels['exported_job'] AS exported_job, labels['exported_instance'] AS exported_instance \
         FROM metrics WHERE name = 'clash' LIMIT 1",
    );
    assert_eq!(clash[0]["job"], "app");
    assert_eq!(clash[0]["exported_job"], "from-target");
    assert_eq!(clash[0]["exported_instance"], "x");
    // Explicit timestamps are honoured.
    let with_ts =
        vigil.sql("SELECT CAST(timestamp AS BIGINT) AS ts FROM metrics WHERE name = 'with_ts'");
    assert_eq!(with_ts[0]["ts"], explicit_ts);

    // Queue b disappears: its series gets a staleness marker, queue a does not.
    target.set("jobs_running{queue=\"a\"} 1\n");
    let stale_query =
        "SELECT s.labels['queue'] AS queue FROM samples p JOIN series s USING (series_id) \
         WHERE s.metric_name = 'jobs_running' AND is_stale_marker(p.value)";
    let rows = vigil.wait_for_rows(stale_query, Duration::from_secs(20), |rows| {
        !rows.is_empty()
    });
    assert!(rows.iter().all(|row| row["queue"] == "b"), "{rows:?}");
    // The view hides the marker; `up` stays 1.
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'up' AND value <> 1"),
        0
    );
}

#[test]
fn openmetrics_targets_use_seconds_timestamps() {
    let seconds = crate::util::now_ms() / 1000 - 5;
    let target = Target::start(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        &format!("# TYPE om_metric gauge\nom_metric{{a=\"1\"}} 3.5 {seconds}.250\n# EOF\n"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: om\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        target.port
    );
    let vigil = Vigil::start(&dir.path().join("data"), Some(&config));
    let rows = vigil.wait_for_rows(
        "SELECT CAST(timestamp AS BIGINT) AS ts, value FROM metrics WHERE name = 'om_metric'",
        Duration::from_secs(20),
        |rows| !rows.is_empty(),
    );
    assert_eq!(rows[0]["ts"], seconds * 1000 + 250);
    assert_eq!(rows[0]["value"], 3.5);
}

/// prometheus.yml's `body_size_limit`, `sample_limit` and `label_limit`: a target past
/// one fails its scrape (`up` 0) without storing any of its samples, and recovers when it
/// is back under.
#[test]
fn scrape_limits_fail_the_scrape_as_prometheus_does() {
    let many: String = (0..50).map(|n| format!("many{{n=\"{n}\"}} 1\n")).collect();
    let target = Target::start("text/plain; version=0.0.4", &many);
    let wide = Target::start(
        "text/plain; version=0.0.4",
        "wide{a=\"1\",b=\"2\",c=\"3\",d=\"4\"} 1\n",
    );
    let big = Target::start("text/plain; version=0.0.4", &"# filler\n".repeat(200_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n\
         \x20 - job_name: many\n    sample_limit: 20\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n\
         \x20 - job_name: wide\n    label_limit: 3\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n\
         \x20 - job_name: big\n    body_size_limit: 1MB\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        target.port, wide.port, big.port
    );
    let vigil = Vigil::start(&dir.path().join("data"), Some(&config));
    for job in ["many", "wide", "big"] {
        vigil.wait_for_rows(
            &format!("SELECT value FROM metrics WHERE name = 'up' AND labels['job'] = '{job}'"),
            Duration::from_secs(20),
            |rows| !rows.is_empty(),
        );
    }
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'up' AND value <> 0"),
        0
    );
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name IN ('many', 'wide')"),
        0
    );
    // Under the limit again: scraped.
    target.set("many{n=\"0\"} 1\n");
    vigil.wait_for_rows(
        "SELECT value FROM metrics WHERE name = 'many'",
        Duration::from_secs(20),
        |rows| !rows.is_empty(),
    );
}

//! Vigil scrapes a real node_exporter; stopping it produces `up == 0` and staleness markers.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{free_port, require, Peer, Vigil};

#[test]
fn scrapes_node_exporter_and_marks_stale() {
    let node_exporter = require("prometheus-node-exporter");
    let port = free_port();
    let mut exporter = Peer(
        Command::new(node_exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node_exporter"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels:\n          env: test\n"
    );
    let vigil = Vigil::start(&dir.path().join("data"), Some(&config));
    let instance = format!("127.0.0.1:{port}");
    vigil.wait_for_rows(
        &format!("SELECT value FROM metrics WHERE name = 'up' AND labels['instance'] = '{instance}' AND value = 1"),
        Duration::from_secs(30),
        |rows| !rows.is_empty(),
    );
    let rows = vigil.sql(&format!(
        "SELECT labels['job'] AS job, labels['env'] AS env, count(*) AS n FROM metrics \
         WHERE name = 'node_cpu_seconds_total' AND labels['instance'] = '{instance}' GROUP BY 1, 2"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["job"], "node");
    assert_eq!(rows[0]["env"], "test");
    let scraped =
        vigil.sql("SELECT max(value) AS v FROM metrics WHERE name = 'scrape_samples_scraped'");
    assert!(
        scraped[0]["v"].as_f64().unwrap_or(0.0) > 100.0,
        "{scraped:?}"
    );
    assert!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'scrape_duration_seconds'") >= 1
    );

    // Stop the exporter: the next scrape fails, `up` goes to 0 and the series go stale.
    exporter.0.kill().expect("kill node_exporter");
    let _ = exporter.0.wait();
    vigil.wait_for_rows(
        "SELECT value FROM metrics WHERE name = 'up' AND value = 0",
        Duration::from_secs(30),
        |rows| !rows.is_empty(),
    );
    let stale = vigil.count(
        "SELECT count(*) FROM samples p JOIN series s USING (series_id) \
         WHERE s.metric_name = 'node_cpu_seconds_total' AND is_stale_marker(p.value)",
    );
    assert!(stale > 0, "no staleness markers after the target went down");
}

//! remote_write → ack → SQL, through a real socket.

use crate::util::{batch, now_ms, Vigil};

#[test]
fn acked_samples_are_queryable_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let start = now_ms() - 60_000;
    let (status, body) = vigil.write(&batch("rw_metric", 3, 10, start));
    assert_eq!(status, 204, "{body}");
    let rows = vigil.sql(
        "SELECT labels['instance'] AS instance, count(*) AS n, sum(value) AS total \
         FROM metrics WHERE name = 'rw_metric' GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["instance"], "host-0");
    assert_eq!(rows[0]["n"], 10);
    assert_eq!(
        rows[2]["total"],
        (0..10).map(|i| 2000 + i).sum::<i64>() as f64
    );
    // Series and samples tables agree with the view.
    assert_eq!(
        vigil.count("SELECT count(*) FROM series WHERE metric_name = 'rw_metric'"),
        3
    );
    // Time pruning keeps exactly the rows in range.
    let n = vigil.count(&format!(
        "SELECT count(*) FROM samples WHERE timestamp >= to_timestamp_millis({}) AND timestamp < to_timestamp_millis({})",
        start + 5_000,
        start + 8_000
    ));
    assert_eq!(n, 9);
    // CSV and Arrow formats.
    let (status, csv) = vigil.sql_raw(
        "SELECT value FROM metrics WHERE name = 'rw_metric' ORDER BY value LIMIT 2",
        "csv",
    );
    assert_eq!(status, 200);
    assert_eq!(csv, "value\n0.0\n1.0\n");
    let (status, _) = vigil.sql_raw("SELECT 1", "arrow");
    assert_eq!(status, 200);
}

/// A graceful stop flushes what is older than the head window to Parquet and leaves the
/// recent samples in the WAL (as Prometheus leaves its head); after a restart every
/// sample is there exactly once.
#[test]
fn graceful_shutdown_flushes_old_data_keeps_recent_in_wal_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, None);
    let (status, _) = vigil.write(&batch("shutdown_old", 2, 5, now_ms() - 4 * 3600 * 1000));
    assert_eq!(status, 204);
    let (status, _) = vigil.write(&batch("shutdown_metric", 2, 5, now_ms() - 10_000));
    assert_eq!(status, 204);
    assert_eq!(vigil.terminate(), Some(0));
    let parquet_files = walk(&data.join("blocks/metrics"));
    assert!(
        !parquet_files.is_empty(),
        "old samples not flushed on shutdown"
    );
    assert!(walk(&data.join("wal"))
        .iter()
        .any(|p| p.metadata().is_ok_and(|meta| meta.len() > 8)));
    drop(vigil);
    let vigil = Vigil::start(&data, None);
    for name in ["shutdown_old", "shutdown_metric"] {
        let n = vigil.count(&format!(
            "SELECT count(*) FROM metrics WHERE name = '{name}'"
        ));
        assert_eq!(n, 10, "{name}");
    }
    let rows = vigil.sql(
        "SELECT count(*) AS n FROM samples s JOIN series r USING (series_id) \
         WHERE r.metric_name IN ('shutdown_old', 'shutdown_metric')",
    );
    assert_eq!(rows[0]["n"], 20);
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn sql_command_prints_a_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (status, _) = vigil.write(&batch("cli_metric", 2, 3, now_ms() - 10_000));
    assert_eq!(status, 204);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["sql", "--url", &vigil.url])
        .arg("SELECT labels['instance'] AS instance, count(*) AS n FROM metrics WHERE name = 'cli_metric' GROUP BY 1 ORDER BY 1")
        .output()
        .expect("run vigil sql");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| instance | n |"), "{stdout}");
    assert!(stdout.contains("| host-1   | 3 |"), "{stdout}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["sql", "--url", &vigil.url, "SELECT nope FROM nothing"])
        .output()
        .expect("run vigil sql");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not found"));
}

//! Head → Parquet flush, read back by pyarrow and by SQL; retention deletes old blocks.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::remote_write::walk;
use crate::util::{batch, now_ms, Vigil};

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn flushed_files_are_readable_by_pyarrow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let vigil = Vigil::start(&data, Some("storage:\n  block_period: 2s\n"));
    let start = now_ms() - 20_000;
    let written = batch("pq_metric", 4, 15, start);
    let (status, _) = vigil.write(&written);
    assert_eq!(status, 204);
    let expected_sum: f64 = written.samples.iter().map(|s| s.value).sum();
    // The head spans more than a block, so the maintenance loop flushes it.
    wait_until(Duration::from_secs(30), || {
        walk(&data.join("blocks/metrics"))
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet"))
            && walk(&data.join("blocks/series"))
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "parquet"))
    });
    let files: Vec<String> = walk(&data.join("blocks/metrics"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.display().to_string())
        .collect();
    // Several 2s partitions, each its own directory.
    assert!(files.len() >= 5, "{files:?}");
    let script = r#"
import sys, json, pyarrow.parquet as pq
rows, total, ordered, codecs = 0, 0.0, True, set()
for path in sys.argv[1:]:
    table = pq.read_table(path)
    rows += table.num_rows
    total += sum(table.column("value").to_pylist())
    keys = list(zip(table.column("series_id").to_pylist(), table.column("timestamp").cast("int64").to_pylist()))
    # Rows are sorted by labels, then time: each series one contiguous, time-ordered run.
    runs = [keys[0][0]] + [b[0] for a, b in zip(keys, keys[1:]) if a[0] != b[0]] if keys else []
    ordered = ordered and len(runs) == len(set(runs))
    ordered = ordered and all(a[1] < b[1] for a, b in zip(keys, keys[1:]) if a[0] == b[0])
    meta = pq.ParquetFile(path).metadata
    for rg in range(meta.num_row_groups):
        for col in range(meta.num_columns):
            codecs.add(meta.row_group(rg).column(col).compression)
            assert meta.row_group(rg).column(col).statistics is not None
print(json.dumps({"rows": rows, "sum": total, "ordered": ordered, "codecs": sorted(codecs)}))
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .expect("run python3 (pyarrow is installed by .ci/run)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["rows"], 60);
    assert_eq!(report["sum"].as_f64(), Some(expected_sum));
    assert_eq!(report["ordered"], true);
    assert_eq!(report["codecs"], serde_json::json!(["ZSTD"]));
    // SQL reads the same rows from Parquet (the head is empty now).
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'pq_metric'"),
        60
    );
    let rows = vigil.sql("SELECT sum(value) AS s FROM metrics WHERE name = 'pq_metric'");
    assert_eq!(rows[0]["s"].as_f64(), Some(expected_sum));
    // The WAL was checkpointed after the flush: "<segment> <time>", everything older
    // than that time in earlier segments is in Parquet.
    let checkpoint = std::fs::read_to_string(data.join("wal/checkpoint")).expect("checkpoint");
    let fields: Vec<i64> = checkpoint
        .split_whitespace()
        .map(|field| field.parse().expect("number"))
        .collect();
    assert!(fields[0] >= 2 && fields[1] > start + 15_000, "{checkpoint}");
}

#[test]
fn retention_deletes_expired_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let vigil = Vigil::start(
        &data,
        Some("storage:\n  block_period: 1s\n  retention: 6s\n"),
    );
    let (status, _) = vigil.write(&batch("old_metric", 2, 3, now_ms() - 4_000));
    assert_eq!(status, 204);
    wait_until(Duration::from_secs(20), || {
        !walk(&data.join("blocks/metrics")).is_empty()
    });
    wait_until(Duration::from_secs(20), || {
        walk(&data.join("blocks/metrics"))
            .iter()
            .all(|p| !p.is_file())
    });
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'old_metric'"),
        0
    );
    // Samples older than the retention window are rejected as out of bounds.
    let (status, body) = vigil.write(&batch("old_metric", 1, 1, now_ms() - 60_000));
    assert_eq!(status, 400, "{body}");
}

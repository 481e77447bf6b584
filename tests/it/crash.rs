//! Acknowledged samples survive `kill -9`; a torn WAL tail recovers the intact prefix.

use std::io::Write;

use crate::util::{batch, now_ms, Vigil};

#[test]
fn every_acked_sample_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let vigil = Vigil::start(&data, None);
    let start = now_ms() - 600_000;
    let mut acked = 0;
    for round in 0..20 {
        let (status, body) = vigil.write(&batch(
            &format!("crash_metric_{}", round % 4),
            25,
            10,
            start + round * 10_000,
        ));
        assert_eq!(status, 204, "{body}");
        acked += 250;
    }
    let vigil = vigil.kill_and_restart();
    let n = vigil.count("SELECT count(*) FROM metrics WHERE name LIKE 'crash_metric_%'");
    assert_eq!(n, acked);
    // The restarted server still knows the latest timestamps: old samples are out of
    // order (an exact resend of a stored sample is accepted as a no-op instead).
    let mut old = batch("crash_metric_0", 1, 1, start);
    old.samples[0].value += 0.5;
    let (status, _) = vigil.write(&old);
    assert_eq!(status, 400);
    let (status, _) = vigil.write(&batch("crash_metric_0", 1, 1, start));
    assert_eq!(status, 204);
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name LIKE 'crash_metric_%'"),
        acked
    );
}

#[test]
fn torn_wal_tail_recovers_the_intact_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, None);
    let start = now_ms() - 600_000;
    for round in 0..5 {
        let (status, _) = vigil.write(&batch("torn_metric", 10, 10, start + round * 10_000));
        assert_eq!(status, 204);
    }
    vigil.kill9();
    // Append half a record (a header promising more bytes than follow) to the last segment.
    let last = &last_wal_segment(&data);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(last)
        .expect("open segment");
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9])
        .expect("tear");
    drop(file);
    let vigil = vigil.kill_and_restart();
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'torn_metric'"),
        500
    );
    let (_, metrics) =
        crate::util::blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
    assert!(
        metrics.contains("vigil_wal_corruptions_total 1"),
        "{metrics}"
    );
    // And it keeps accepting writes after the repair.
    let (status, _) = vigil.write(&batch("torn_metric", 10, 1, start + 100_000));
    assert_eq!(status, 204);
    let vigil = vigil.kill_and_restart();
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'torn_metric'"),
        510
    );
}

/// The newest WAL segment of a data directory.
pub fn last_wal_segment(data: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(data.join("wal"))
        .expect("wal dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 8)
        })
        .collect();
    segments.sort();
    segments.pop().expect("a wal segment")
}

//! Vigil's own metrics, served on `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use vigil_storage::Storage;

#[derive(Debug, Default)]
pub struct SelfMetrics {
    pub remote_write_requests: AtomicU64,
    pub exemplars_ignored: AtomicU64,
    pub histograms_ignored: AtomicU64,
    pub sql_queries: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl SelfMetrics {
    pub fn reject(&self, reason: &'static str) {
        *self.rejected.lock().entry(reason).or_default() += 1;
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected.lock().get(reason).copied().unwrap_or(0)
    }

    pub fn render(&self, storage: &Storage) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed) as f64;
        let stats = &storage.stats;
        counter(
            "vigil_ingested_samples_total",
            "Samples made durable and added to the head.",
            load(&stats.samples_appended),
        );
        counter(
            "vigil_remote_write_requests_total",
            "remote_write requests received.",
            load(&self.remote_write_requests),
        );
        counter(
            "vigil_remote_write_exemplars_ignored_total",
            "Exemplars received over remote_write and not stored.",
            load(&self.exemplars_ignored),
        );
        counter(
            "vigil_remote_write_histograms_ignored_total",
            "Native histogram samples received over remote_write and not stored.",
            load(&self.histograms_ignored),
        );
        counter(
            "vigil_wal_bytes_written_total",
            "Bytes appended to the write-ahead log.",
            storage.wal_bytes_written() as f64,
        );
        counter(
            "vigil_wal_corruptions_total",
            "Damaged or torn WAL regions skipped at start-up.",
            load(&stats.wal_corruptions),
        );
        counter(
            "vigil_wal_lost_samples_total",
            "Samples of damaged WAL records that could be identified but not recovered.",
            load(&stats.wal_lost_samples),
        );
        counter(
            "vigil_parquet_files_quarantined_total",
            "Damaged Parquet files moved to the quarantine directory.",
            load(&stats.files_quarantined),
        );
        counter(
            "vigil_head_flushes_total",
            "Head flushes to Parquet.",
            load(&stats.flushes),
        );
        counter(
            "vigil_head_flush_duration_seconds_total",
            "Time spent flushing the head to Parquet.",
            load(&stats.flush_duration_micros) / 1e6,
        );
        counter(
            "vigil_parquet_bytes_written_total",
            "Bytes of Parquet sample files written.",
            load(&stats.parquet_bytes_written),
        );
        counter(
            "vigil_retention_deleted_files_total",
            "Parquet files deleted by retention.",
            load(&stats.partitions_deleted),
        );
        counter(
            "vigil_sql_queries_total",
            "SQL queries run.",
            load(&self.sql_queries),
        );
        counter(
            "vigil_log_records_ingested_total",
            "Log records made durable (every log protocol).",
            load(&storage.logs().rows_appended),
        );
        counter(
            "vigil_spans_ingested_total",
            "Spans made durable.",
            load(&storage.spans().rows_appended),
        );
        counter(
            "vigil_record_attributes_trimmed_total",
            "Log and span attributes dropped or cut, and bodies cut, by the attribute limits.",
            load(&storage.logs().attributes_trimmed) + load(&storage.spans().attributes_trimmed),
        );
        let _ = writeln!(
            out,
            "# HELP vigil_rejected_writes_total Writes rejected, by reason.\n# TYPE vigil_rejected_writes_total counter"
        );
        for (reason, count) in self.rejected.lock().iter() {
            let _ = writeln!(
                out,
                "vigil_rejected_writes_total{{reason=\"{reason}\"}} {count}"
            );
        }
        for (name, help, value) in [
            (
                "vigil_wal_disk_bytes",
                "Size of the WAL segments on disk.",
                storage.wal_disk_bytes() as f64,
            ),
            (
                "vigil_head_samples",
                "Samples in the head.",
                storage.head_samples() as f64,
            ),
            (
                "vigil_series",
                "Series known to storage.",
                storage.n_series() as f64,
            ),
            (
                "vigil_read_cache_bytes",
                "Bytes of series decoded from Parquet held for repeated queries.",
                storage.cache_bytes() as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

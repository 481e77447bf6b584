//! Log records and the batch-file store (logs and spans): each accepted batch becomes one
//! Parquet file, written to
//! a temporary name, fsynced, renamed into `blocks/logs/block=<start>_<end>/` and the
//! directory fsynced before the write is acknowledged — durable and whole-or-nothing
//! (a crash leaves either the whole file or a `.tmp` that the next start deletes), and
//! queryable at once through the `logs` SQL table, which lists the directory per query.
//!
//! This first slice has no head and no compaction: a batch is a file. Batches from log
//! shippers are typically thousands of records; small files are merged by a later
//! compaction (not yet written), and retention deletes whole partitions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::schema::{labels_type, new_labels_builder, timestamp_type};

/// One log record, as every log protocol maps to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    /// When the event happened (the record's own time), milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// When Vigil received it.
    pub observed_ms: i64,
    /// Stream labels: what identifies the source (namespace, pod, container, index…).
    pub stream: BTreeMap<String, String>,
    pub severity: String,
    pub body: String,
    /// Every other field, flattened (`kubernetes.host`, `http.status`…).
    pub attributes: BTreeMap<String, String>,
    /// Hex trace and span ids, empty when absent.
    pub trace_id: String,
    pub span_id: String,
}

/// `logs`: one row per record.
pub static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("observed_timestamp", timestamp_type(), false),
        Field::new("stream", labels_type(), false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("body", DataType::Utf8, false),
        Field::new("attributes", labels_type(), false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
    ]))
});

/// The `blocks/`-relative directory of log files (the `logs` table's URL path).
pub const LOGS_DIR: &str = "logs";

/// A directory of Parquet files, one per acknowledged batch, in time partitions: the
/// store of logs and of spans.
pub struct BatchFiles {
    dir: PathBuf,
    schema: SchemaRef,
    block_ms: i64,
    /// Makes file names unique within this process; the start time makes them unique
    /// across restarts.
    seq: AtomicU64,
    started_ns: u128,
    pub rows_appended: AtomicU64,
}

/// The log store.
pub type LogStore = BatchFiles;

impl BatchFiles {
    /// Opens `blocks/<name>/`, deleting temporary files a crash left behind.
    pub fn open(blocks_dir: &Path, name: &str, schema: SchemaRef, block_ms: i64) -> Result<Self> {
        let dir = blocks_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        for partition in std::fs::read_dir(&dir)? {
            let partition = partition?.path();
            if !partition.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&partition)? {
                let file = file?.path();
                if file.extension().is_some_and(|ext| ext == "tmp") {
                    std::fs::remove_file(&file)?;
                }
            }
        }
        Ok(BatchFiles {
            dir,
            schema,
            block_ms: block_ms.max(1),
            seq: AtomicU64::new(0),
            started_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            rows_appended: AtomicU64::new(0),
        })
    }

    /// The log store: `blocks/logs/`.
    pub fn open_logs(blocks_dir: &Path, block_ms: i64) -> Result<Self> {
        Self::open(blocks_dir, LOGS_DIR, LOGS.clone(), block_ms)
    }

    /// Writes log records as one file and returns once it is durable.
    pub async fn append(self: &Arc<Self>, records: Vec<LogRecord>) -> Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        let min = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
        let batch = to_batch(&records)?;
        self.append_batch(batch, min).await
    }

    /// Writes `batch` (rows of this store's schema; `min_ms` its earliest time, which
    /// picks the partition) as one file and returns once it is durable.
    pub async fn append_batch(self: &Arc<Self>, batch: RecordBatch, min_ms: i64) -> Result<usize> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_file(&batch, min_ms))
            .await
            .map_err(|err| Error::Wal(format!("write task failed: {err}")))?
    }

    fn write_file(&self, batch: &RecordBatch, min_ms: i64) -> Result<usize> {
        let start = min_ms.div_euclid(self.block_ms) * self.block_ms;
        let partition = self
            .dir
            .join(format!("block={start}_{}", start + self.block_ms));
        std::fs::create_dir_all(&partition)?;
        let name = format!(
            "{:x}-{:08x}",
            self.started_ns,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = partition.join(format!("{name}.tmp"));
        let path = partition.join(format!("{name}.parquet"));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let file = std::fs::File::create(&tmp)?;
        let mut writer = ArrowWriter::try_new(file, self.schema.clone(), Some(props))?;
        writer.write(batch)?;
        let file = writer.into_inner()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&partition)?.sync_all()?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.rows_appended
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(batch.num_rows())
    }
}

fn to_batch(records: &[LogRecord]) -> Result<RecordBatch> {
    let mut timestamp = TimestampMillisecondBuilder::with_capacity(records.len());
    let mut observed = TimestampMillisecondBuilder::with_capacity(records.len());
    let mut stream = new_labels_builder();
    let mut severity = StringBuilder::new();
    let mut body = StringBuilder::new();
    let mut attributes = new_labels_builder();
    let mut trace_id = StringBuilder::new();
    let mut span_id = StringBuilder::new();
    for record in records {
        timestamp.append_value(record.timestamp_ms);
        observed.append_value(record.observed_ms);
        for (name, value) in &record.stream {
            stream.keys().append_value(name);
            stream.values().append_value(value);
        }
        stream.append(true)?;
        severity.append_value(&record.severity);
        body.append_value(&record.body);
        for (name, value) in &record.attributes {
            attributes.keys().append_value(name);
            attributes.values().append_value(value);
        }
        attributes.append(true)?;
        trace_id.append_value(&record.trace_id);
        span_id.append_value(&record.span_id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(timestamp.finish().with_timezone("UTC")),
        Arc::new(observed.finish().with_timezone("UTC")),
        Arc::new(stream.finish()),
        Arc::new(severity.finish()),
        Arc::new(body.finish()),
        Arc::new(attributes.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
    ];
    Ok(RecordBatch::try_new(LOGS.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_one_durable_file_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::open_logs(dir.path(), 7_200_000).unwrap());
        let record = LogRecord {
            timestamp_ms: 1_000,
            observed_ms: 2_000,
            stream: BTreeMap::from([("namespace".into(), "shop".into())]),
            body: "hello".into(),
            ..Default::default()
        };
        assert_eq!(store.append(vec![record.clone(), record]).await.unwrap(), 2);
        let partition = dir.path().join("logs/block=0_7200000");
        let files: Vec<_> = std::fs::read_dir(&partition).unwrap().collect();
        assert_eq!(files.len(), 1);
        std::fs::write(partition.join("torn.tmp"), b"half").unwrap();
        drop(store);
        LogStore::open_logs(dir.path(), 7_200_000).unwrap();
        assert_eq!(std::fs::read_dir(&partition).unwrap().count(), 1);
    }
}

//! Log records: the one shape every log protocol maps to, and the `logs` table's schema.
//! They are stored by the batch-file store (`batch_files.rs`): one durable Parquet file
//! per acknowledged batch, merged later.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub use crate::batch_files::BatchFiles;
use crate::error::Result;
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

/// The log store (`batch_files.rs`): sorted by `timestamp` when merged.
pub type LogStore = BatchFiles;

/// Opens the log store, `blocks/logs/`.
pub fn open_logs(blocks_dir: &Path, block_ms: i64) -> Result<LogStore> {
    BatchFiles::open(
        blocks_dir,
        LOGS_DIR,
        LOGS.clone(),
        block_ms,
        vec!["timestamp"],
    )
}

/// Log records → a batch of the `logs` schema.
pub fn to_batch(records: &[LogRecord]) -> Result<RecordBatch> {
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

//! Spans: the `spans` table's record and schema. Stored like logs (one durable Parquet
//! file per accepted batch, `blocks/spans/`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Result;
use crate::schema::{labels_type, new_labels_builder};

/// One span, as OTLP delivers it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRecord {
    /// Lower-case hex.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer`, `internal` or `unspecified`.
    pub kind: String,
    pub start_ns: i64,
    pub end_ns: i64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    pub status_message: String,
    pub attributes: BTreeMap<String, String>,
    /// The span's events as a JSON array of `{time_ns, name, attributes}`.
    pub events: String,
    pub resource: BTreeMap<String, String>,
}

/// The `blocks/`-relative directory of span files.
pub const SPANS_DIR: &str = "spans";

fn nanos() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `spans`: one row per span.
pub static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("start", nanos(), false),
        Field::new("end", nanos(), false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("attributes", labels_type(), false),
        Field::new("events", DataType::Utf8, false),
        Field::new("resource", labels_type(), false),
    ]))
});

/// Opens the span store, `blocks/spans/`: merged files are sorted by trace id, so a
/// trace's spans are neighbours and a lookup by trace id reads a few pages.
pub fn open_spans(blocks_dir: &std::path::Path, block_ms: i64) -> Result<crate::logs::BatchFiles> {
    crate::logs::BatchFiles::open(
        blocks_dir,
        SPANS_DIR,
        SPANS.clone(),
        block_ms,
        vec!["trace_id", "start"],
    )
}

pub fn to_batch(spans: &[SpanRecord]) -> Result<RecordBatch> {
    let mut strings: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut start = TimestampNanosecondBuilder::with_capacity(spans.len());
    let mut end = TimestampNanosecondBuilder::with_capacity(spans.len());
    let mut duration = Int64Builder::with_capacity(spans.len());
    let mut status = StringBuilder::new();
    let mut status_message = StringBuilder::new();
    let mut attributes = new_labels_builder();
    let mut events = StringBuilder::new();
    let mut resource = new_labels_builder();
    for span in spans {
        for (builder, value) in strings.iter_mut().zip([
            &span.trace_id,
            &span.span_id,
            &span.parent_span_id,
            &span.service,
            &span.name,
            &span.kind,
        ]) {
            builder.append_value(value);
        }
        start.append_value(span.start_ns);
        end.append_value(span.end_ns);
        duration.append_value(span.end_ns.saturating_sub(span.start_ns));
        status.append_value(&span.status);
        status_message.append_value(&span.status_message);
        for (name, value) in &span.attributes {
            attributes.keys().append_value(name);
            attributes.values().append_value(value);
        }
        attributes.append(true)?;
        events.append_value(&span.events);
        for (name, value) in &span.resource {
            resource.keys().append_value(name);
            resource.values().append_value(value);
        }
        resource.append(true)?;
    }
    let mut columns: Vec<ArrayRef> = strings
        .into_iter()
        .map(|mut builder| Arc::new(builder.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(start.finish().with_timezone("UTC")));
    columns.push(Arc::new(end.finish().with_timezone("UTC")));
    columns.push(Arc::new(duration.finish()));
    columns.push(Arc::new(status.finish()));
    columns.push(Arc::new(status_message.finish()));
    columns.push(Arc::new(attributes.finish()));
    columns.push(Arc::new(events.finish()));
    columns.push(Arc::new(resource.finish()));
    Ok(RecordBatch::try_new(SPANS.clone(), columns)?)
}

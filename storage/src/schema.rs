//! Arrow schemas of the stored tables. These are the columns SQL users see.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, MapBuilder, MapFieldNames, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const COL_SERIES_ID: &str = "series_id";
pub const COL_TIMESTAMP: &str = "timestamp";
pub const COL_VALUE: &str = "value";
pub const COL_METRIC_NAME: &str = "metric_name";
pub const COL_LABELS: &str = "labels";

/// Timestamps are milliseconds since the epoch, UTC, as in Prometheus.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `samples`: one row per sample, sorted by (series_id, timestamp) in every Parquet file.
pub static SAMPLES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(COL_SERIES_ID, DataType::UInt64, false),
        Field::new(COL_TIMESTAMP, timestamp_type(), false),
        Field::new(COL_VALUE, DataType::Float64, false),
    ]))
});

/// The map type of label columns: `labels['pod']` works in SQL.
pub fn labels_type() -> DataType {
    new_labels_builder().finish().data_type().clone()
}

/// A builder for label map columns, named `entries{key, value}` like the schema above.
pub fn new_labels_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// `series`: one row per series; `labels` excludes `__name__`, which is `metric_name`.
pub static SERIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(COL_SERIES_ID, DataType::UInt64, false),
        Field::new(COL_METRIC_NAME, DataType::Utf8, false),
        Field::new(COL_LABELS, labels_type(), false),
    ]))
});

/// The on-disk series file adds each series' latest sample, so a restart knows which
/// samples would be out of order without scanning the sample files.
pub static SERIES_FILE: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = SERIES.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("last_timestamp", timestamp_type(), false));
    fields.push(Field::new("last_value", DataType::Float64, false));
    Arc::new(Schema::new(fields))
});

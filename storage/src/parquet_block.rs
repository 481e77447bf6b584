//! Parquet encoding of sample blocks and series files.
//!
//! Sample files are sorted by (labels, timestamp) — each series one contiguous row range,
//! a metric's series neighbours — and written with zstd, run-length dictionary ids, delta
//! timestamps, byte-stream-split values, small pages and a page index, so
//! a reader selecting a few series' rows reads only their pages
//! ([`crate::block_reader`]).

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, MapArray, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::labels::{Label, LabelSet, SeriesId, METRIC_NAME};
use crate::schema;

/// Rows per row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;
/// Rows per data page: a read selects series' row ranges, and pages without a selected
/// row are skipped, so pages hold a few series each (about 0.1 byte/sample of headers).
const PAGE_ROWS: usize = 1024;

fn sample_properties() -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        // Rows are sorted by labels: a series' id repeats for its whole range (RLE).
        .set_column_dictionary_enabled(ColumnPath::from(schema::COL_SERIES_ID), true)
        .set_column_dictionary_enabled(ColumnPath::from(schema::COL_TIMESTAMP), false)
        .set_column_encoding(
            ColumnPath::from(schema::COL_TIMESTAMP),
            Encoding::DELTA_BINARY_PACKED,
        )
        // Byte-stream-split: zstd then sees each byte position of the doubles as its own
        // stream (exponents and high mantissa bytes repeat within a series). A value
        // dictionary costs more than it saves on counters, and runs of one value (0/1
        // gauges, flat counters) compress to almost nothing either way.
        .set_column_dictionary_enabled(ColumnPath::from(schema::COL_VALUE), false)
        .set_column_encoding(
            ColumnPath::from(schema::COL_VALUE),
            Encoding::BYTE_STREAM_SPLIT,
        )
        .build())
}

/// Encodes a batch as a complete Parquet file.
pub fn encode(batch: &RecordBatch) -> Result<Bytes> {
    let properties = if batch.schema() == *schema::SAMPLES {
        sample_properties()?
    } else {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .build()
    };
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

/// Reads every batch of a Parquet file held in memory.
pub fn decode(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch?);
    }
    Ok(batches)
}

/// One row of a series file.
#[derive(Debug, Clone)]
pub struct SeriesRow {
    pub id: SeriesId,
    pub labels: Arc<LabelSet>,
    pub last_timestamp: i64,
    pub last_value: f64,
}

/// Builds a `series` batch (the SQL table) from label sets.
pub fn series_table_batch<'a>(
    rows: impl Iterator<Item = (SeriesId, &'a LabelSet)>,
) -> Result<RecordBatch> {
    let (ids, names, labels) = series_columns(rows)?;
    Ok(RecordBatch::try_new(
        schema::SERIES.clone(),
        vec![Arc::new(ids), Arc::new(names), Arc::new(labels)],
    )?)
}

fn series_columns<'a>(
    rows: impl Iterator<Item = (SeriesId, &'a LabelSet)>,
) -> Result<(UInt64Array, StringArray, MapArray)> {
    let mut ids = Vec::new();
    let mut names = StringBuilder::new();
    let mut labels = schema::new_labels_builder();
    for (id, set) in rows {
        ids.push(id);
        names.append_value(set.metric_name().unwrap_or_default());
        for label in set
            .labels()
            .iter()
            .filter(|label| label.name != METRIC_NAME)
        {
            labels.keys().append_value(&label.name);
            labels.values().append_value(&label.value);
        }
        labels.append(true)?;
    }
    Ok((UInt64Array::from(ids), names.finish(), labels.finish()))
}

/// Builds a series file batch.
pub fn series_file_batch(rows: &[SeriesRow]) -> Result<RecordBatch> {
    let (ids, names, labels) =
        series_columns(rows.iter().map(|row| (row.id, row.labels.as_ref())))?;
    let last_ts =
        TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.last_timestamp))
            .with_timezone("UTC");
    let last_values = Float64Array::from_iter_values(rows.iter().map(|r| r.last_value));
    Ok(RecordBatch::try_new(
        schema::SERIES_FILE.clone(),
        vec![
            Arc::new(ids),
            Arc::new(names),
            Arc::new(labels),
            Arc::new(last_ts),
            Arc::new(last_values),
        ],
    )?)
}

/// Reads a series file back into rows.
pub fn read_series_file(bytes: Bytes) -> Result<Vec<SeriesRow>> {
    let mut rows = Vec::new();
    for batch in decode(bytes)? {
        if batch.num_columns() < 5 {
            return Err(Error::Wal("series file has too few columns".into()));
        }
        let ids = batch.column(0).as_primitive::<UInt64Type>();
        let names = batch.column(1).as_string::<i32>();
        let maps = batch.column(2).as_map();
        let last_ts = batch.column(3).as_primitive::<TimestampMillisecondType>();
        let last_values = batch
            .column(4)
            .as_primitive::<arrow::datatypes::Float64Type>();
        for row in 0..batch.num_rows() {
            let entries = maps.value(row);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            let mut labels = vec![Label {
                name: METRIC_NAME.to_string(),
                value: names.value(row).to_string(),
            }];
            for idx in 0..keys.len() {
                labels.push(Label {
                    name: keys.value(idx).to_string(),
                    value: values.value(idx).to_string(),
                });
            }
            rows.push(SeriesRow {
                id: ids.value(row),
                labels: Arc::new(LabelSet::new(labels)?),
                last_timestamp: last_ts.value(row),
                last_value: last_values.value(row),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_file_round_trip() {
        let labels = Arc::new(LabelSet::from_pairs([("__name__", "up"), ("job", "x")]).unwrap());
        let rows = vec![SeriesRow {
            id: labels.series_id(),
            labels: labels.clone(),
            last_timestamp: 5,
            last_value: 1.0,
        }];
        let bytes = encode(&series_file_batch(&rows).unwrap()).unwrap();
        let back = read_series_file(bytes).unwrap();
        assert_eq!(back[0].labels, labels);
        assert_eq!(back[0].last_timestamp, 5);
    }
}

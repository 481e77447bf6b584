//! The head: recent samples in memory, queryable as soon as a write is acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, TimestampMillisecondArray, UInt64Array};

use crate::labels::{LabelSet, SeriesId};
use crate::record::SampleBatch;
use crate::schema;

/// One series' samples in the head, in timestamp order.
#[derive(Debug, Clone)]
pub struct HeadSeries {
    pub labels: Arc<LabelSet>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Sample columns under construction: series ids, timestamps, values.
type Columns = (Vec<u64>, Vec<i64>, Vec<f64>);

#[derive(Debug, Default)]
pub struct Head {
    pub series: HashMap<SeriesId, HeadSeries>,
    pub n_samples: usize,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
}

impl Head {
    /// Adds an already-validated batch ([`crate::Storage`] rejects out-of-order samples
    /// before the WAL, so inserting rather than appending is the rare case).
    pub fn apply(&mut self, batch: &SampleBatch, ids: &[SeriesId], labels: &[Arc<LabelSet>]) {
        for sample in &batch.samples {
            let idx = sample.series_idx as usize;
            let entry = self.series.entry(ids[idx]).or_insert_with(|| HeadSeries {
                labels: labels[idx].clone(),
                timestamps: Vec::new(),
                values: Vec::new(),
            });
            // Concurrent appends may reach the head in another order than their
            // timestamps were reserved in; keep each series sorted.
            if entry
                .timestamps
                .last()
                .is_none_or(|&last| last < sample.timestamp_ms)
            {
                entry.timestamps.push(sample.timestamp_ms);
                entry.values.push(sample.value);
            } else {
                let at = entry
                    .timestamps
                    .partition_point(|&ts| ts < sample.timestamp_ms);
                entry.timestamps.insert(at, sample.timestamp_ms);
                entry.values.insert(at, sample.value);
            }
            self.n_samples += 1;
            self.min_timestamp = Some(
                self.min_timestamp
                    .map_or(sample.timestamp_ms, |min| min.min(sample.timestamp_ms)),
            );
            self.max_timestamp = Some(
                self.max_timestamp
                    .map_or(sample.timestamp_ms, |max| max.max(sample.timestamp_ms)),
            );
        }
    }

    /// The samples with `start <= timestamp <= end` as one batch of the `samples` schema.
    pub fn samples_in_range(&self, start: i64, end: i64) -> RecordBatch {
        let mut ids = Vec::new();
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        for (&id, series) in &self.series {
            let from = series.timestamps.partition_point(|&ts| ts < start);
            let to = series.timestamps.partition_point(|&ts| ts <= end);
            for idx in from..to {
                ids.push(id);
                timestamps.push(series.timestamps[idx]);
                values.push(series.values[idx]);
            }
        }
        sample_batch(ids, timestamps, values)
    }

    /// All samples, sorted by (series, time), split by block: `(block_start, batch)`.
    pub fn blocks(&self, block_ms: i64) -> Vec<(i64, RecordBatch)> {
        let mut by_block: std::collections::BTreeMap<i64, Columns> = Default::default();
        let mut ids: Vec<&SeriesId> = self.series.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let series = &self.series[id];
            for (&ts, &value) in series.timestamps.iter().zip(&series.values) {
                let block = ts.div_euclid(block_ms) * block_ms;
                let columns = by_block.entry(block).or_default();
                columns.0.push(*id);
                columns.1.push(ts);
                columns.2.push(value);
            }
        }
        by_block
            .into_iter()
            .map(|(block, (ids, timestamps, values))| {
                (block, sample_batch(ids, timestamps, values))
            })
            .collect()
    }
}

pub fn sample_batch(ids: Vec<u64>, timestamps: Vec<i64>, values: Vec<f64>) -> RecordBatch {
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(UInt64Array::from(ids)),
        Arc::new(TimestampMillisecondArray::from(timestamps).with_timezone("UTC")),
        Arc::new(Float64Array::from(values)),
    ];
    // The columns match the schema by construction.
    RecordBatch::try_new(schema::SAMPLES.clone(), columns)
        .unwrap_or_else(|_| RecordBatch::new_empty(schema::SAMPLES.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_series_sorted_when_batches_arrive_out_of_order() {
        let labels = Arc::new(LabelSet::from_pairs([("__name__", "m")]).unwrap());
        let mut head = Head::default();
        for ts in [20, 10, 30] {
            let mut batch = SampleBatch::default();
            let idx = batch.push_series((*labels).clone());
            batch.push_sample(idx, ts, ts as f64);
            head.apply(&batch, &[labels.series_id()], std::slice::from_ref(&labels));
        }
        let series = &head.series[&labels.series_id()];
        assert_eq!(series.timestamps, vec![10, 20, 30]);
        assert_eq!(head.samples_in_range(15, 30).num_rows(), 2);
    }
}

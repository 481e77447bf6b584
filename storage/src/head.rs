//! The head: recent samples in memory, queryable as soon as a write is acknowledged.

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, TimestampMillisecondArray, UInt64Array};

use crate::labels::{IdMap, LabelSet, SeriesId};
use crate::record::BatchSample;
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
    pub series: IdMap<HeadSeries>,
    pub n_samples: usize,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
}

impl Head {
    /// Adds already-validated samples ([`crate::Storage`] rejects out-of-order samples
    /// before the WAL, so inserting rather than appending is the rare case). `ids` and
    /// `labels` are indexed by each sample's `series_idx`.
    pub fn apply(&mut self, samples: &[BatchSample], ids: &[SeriesId], labels: &[Arc<LabelSet>]) {
        for sample in samples {
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

    /// Whether the series holds exactly this sample (same timestamp, same value bits).
    pub fn contains(&self, id: SeriesId, timestamp: i64, value: f64) -> bool {
        self.series.get(&id).is_some_and(|series| {
            let at = series.timestamps.partition_point(|&ts| ts < timestamp);
            series.timestamps.get(at) == Some(&timestamp)
                && series.values.get(at).map(|v| v.to_bits()) == Some(value.to_bits())
        })
    }

    /// Moves every sample older than `cutoff` into a new head, which is returned; this
    /// head keeps the rest (series left without samples are dropped).
    pub fn split_before(&mut self, cutoff: i64) -> Head {
        let mut old = Head::default();
        self.series.retain(|&id, series| {
            let at = series.timestamps.partition_point(|&ts| ts < cutoff);
            if at == 0 {
                return true;
            }
            let recent_ts = series.timestamps.split_off(at);
            let recent_values = series.values.split_off(at);
            let moved = HeadSeries {
                labels: series.labels.clone(),
                timestamps: std::mem::replace(&mut series.timestamps, recent_ts),
                values: std::mem::replace(&mut series.values, recent_values),
            };
            old.n_samples += moved.timestamps.len();
            old.series.insert(id, moved);
            !series.timestamps.is_empty()
        });
        self.n_samples -= old.n_samples;
        old.recompute_bounds();
        self.recompute_bounds();
        old
    }

    fn recompute_bounds(&mut self) {
        self.min_timestamp = self
            .series
            .values()
            .filter_map(|series| series.timestamps.first().copied())
            .min();
        self.max_timestamp = self
            .series
            .values()
            .filter_map(|series| series.timestamps.last().copied())
            .max();
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

    /// All samples, sorted by (labels, time) — a metric's series are neighbours, so a
    /// selector reads a few contiguous row ranges — split by block: for each block, its
    /// start, the batch, and each series' row range in it.
    pub fn blocks(&self, block_ms: i64) -> Vec<(i64, RecordBatch, SeriesIndex)> {
        let mut by_block: std::collections::BTreeMap<i64, (Columns, SeriesIndex)> =
            Default::default();
        let mut ordered: Vec<(&SeriesId, &HeadSeries)> = self.series.iter().collect();
        ordered.sort_unstable_by(|a, b| a.1.labels.cmp(&b.1.labels));
        for (id, series) in ordered {
            let mut from = 0;
            while from < series.timestamps.len() {
                let block = series.timestamps[from].div_euclid(block_ms) * block_ms;
                let end = block.saturating_add(block_ms);
                let to = from + series.timestamps[from..].partition_point(|&ts| ts < end);
                let ((ids, timestamps, values), index) = by_block.entry(block).or_default();
                index.insert(
                    *id,
                    RowRange {
                        start: ids.len() as u32,
                        len: (to - from) as u32,
                    },
                );
                ids.extend(std::iter::repeat_n(*id, to - from));
                timestamps.extend_from_slice(&series.timestamps[from..to]);
                values.extend_from_slice(&series.values[from..to]);
                from = to;
            }
        }
        by_block
            .into_iter()
            .map(|(block, ((ids, timestamps, values), index))| {
                (block, sample_batch(ids, timestamps, values), index)
            })
            .collect()
    }
}

/// Where a series' rows are in a sample file (files are sorted by labels, then time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRange {
    pub start: u32,
    pub len: u32,
}

/// Each series' row range in one sample file.
pub type SeriesIndex = IdMap<RowRange>;

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
            let sample = BatchSample {
                series_idx: 0,
                timestamp_ms: ts,
                value: ts as f64,
            };
            head.apply(
                &[sample],
                &[labels.series_id()],
                std::slice::from_ref(&labels),
            );
        }
        let series = &head.series[&labels.series_id()];
        assert_eq!(series.timestamps, vec![10, 20, 30]);
        assert_eq!(head.samples_in_range(15, 30).num_rows(), 2);
        let old = head.split_before(25);
        assert_eq!((old.n_samples, head.n_samples), (2, 1));
        assert_eq!((old.min_timestamp, old.max_timestamp), (Some(10), Some(20)));
        assert_eq!(
            (head.min_timestamp, head.max_timestamp),
            (Some(30), Some(30))
        );
        let blocks = old.blocks(15);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[1].2[&labels.series_id()],
            RowRange { start: 0, len: 1 }
        );
    }
}

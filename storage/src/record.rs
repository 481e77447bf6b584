//! Record types shared by every crate: metric samples and the batches that carry them.

use crate::labels::{LabelSet, SeriesId};

/// Prometheus' staleness marker: a NaN with this exact bit pattern
/// (`value.StaleNaN` in `prometheus/model/value`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// One sample of a batch, pointing at its series by index into [`SampleBatch::series`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSample {
    pub series_idx: u32,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// The unit of ingestion: series label sets and the samples that refer to them.
/// A batch is validated, logged and applied as a whole, or not at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleBatch {
    pub series: Vec<LabelSet>,
    pub samples: Vec<BatchSample>,
}

impl SampleBatch {
    pub fn push_series(&mut self, labels: LabelSet) -> u32 {
        self.series.push(labels);
        (self.series.len() - 1) as u32
    }

    pub fn push_sample(&mut self, series_idx: u32, timestamp_ms: i64, value: f64) {
        self.samples.push(BatchSample {
            series_idx,
            timestamp_ms,
            value,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// One durable append, as the WAL logs it and the taps see it: series (with their ids)
/// and samples.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    pub ids: Vec<SeriesId>,
    pub series: Vec<LabelSet>,
    pub samples: Vec<BatchSample>,
}

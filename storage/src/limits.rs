//! Per-write limits, checked before anything is written.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::record::SampleBatch;

/// Limits applied to every write; `0` disables a limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body in bytes (after decompression for remote_write).
    pub max_body_bytes: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_series_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_labels_per_series: 64,
            max_label_name_length: 1024,
            max_label_value_length: 4096,
            max_series_per_request: 100_000,
        }
    }
}

impl Limits {
    /// Checks a batch against the limits and label validity, reporting the first violation.
    pub fn check(&self, batch: &SampleBatch) -> Result<()> {
        self.check_request(batch)?;
        for series in &batch.series {
            self.check_series(series)?;
        }
        Ok(())
    }

    /// The per-request limits only (the series count).
    pub fn check_request(&self, batch: &SampleBatch) -> Result<()> {
        if self.max_series_per_request > 0 && batch.series.len() > self.max_series_per_request {
            return Err(Error::LimitExceeded(format!(
                "request has {} series, more than the limit of {}",
                batch.series.len(),
                self.max_series_per_request
            )));
        }
        Ok(())
    }

    pub fn check_series(&self, series: &crate::LabelSet) -> Result<()> {
        series.validate()?;
        // Hard caps of the WAL encoding, whatever the configured limits.
        if series.len() > u16::MAX as usize
            || series
                .labels()
                .iter()
                .any(|label| label.name.len() > u16::MAX as usize)
        {
            return Err(Error::LimitExceeded(format!(
                "series {series} has too many labels or too long a label name"
            )));
        }
        if self.max_labels_per_series > 0 && series.len() > self.max_labels_per_series {
            return Err(Error::LimitExceeded(format!(
                "series {series} has {} labels, more than the limit of {}",
                series.len(),
                self.max_labels_per_series
            )));
        }
        for label in series.labels() {
            if self.max_label_name_length > 0 && label.name.len() > self.max_label_name_length {
                return Err(Error::LimitExceeded(format!(
                    "label name {:?} is longer than {} bytes",
                    label.name, self.max_label_name_length
                )));
            }
            if self.max_label_value_length > 0 && label.value.len() > self.max_label_value_length {
                return Err(Error::LimitExceeded(format!(
                    "value of label {:?} is {} bytes, longer than {} bytes",
                    label.name,
                    label.value.len(),
                    self.max_label_value_length
                )));
            }
        }
        Ok(())
    }
}

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
    /// Samples later than the server's clock plus this are refused (default 10m).
    /// Timestamps are also bounded to ±2^52 ms whatever this says.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_future_skew: std::time::Duration,
    /// Series the catalog may hold in total (default 5,000,000). Vigil's catalog keeps
    /// every series it has stored, so this bounds the memory of label sets and postings.
    pub max_series: usize,
    /// Series one metric name may have (default 1,000,000).
    pub max_series_per_metric: usize,
    /// Attributes (and stream labels) one log record or span keeps (default 128, the
    /// OpenTelemetry SDKs' attribute count limit); the rest are dropped and counted.
    pub max_attributes_per_record: usize,
    /// Bytes of one attribute value, and of a span's events (default 16 KiB); longer
    /// values are cut at a character boundary and counted.
    pub max_attribute_value_bytes: usize,
    /// Bytes of one log body (default 256 KiB, Loki's `max_line_size`); longer bodies are
    /// cut and counted.
    pub max_log_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_labels_per_series: 64,
            max_label_name_length: 1024,
            max_label_value_length: 4096,
            max_series_per_request: 100_000,
            max_future_skew: std::time::Duration::from_secs(600),
            max_series: 5_000_000,
            max_series_per_metric: 1_000_000,
            max_attributes_per_record: 128,
            max_attribute_value_bytes: 16 << 10,
            max_log_body_bytes: 256 << 10,
        }
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary; whether it cut.
pub fn truncate_text(text: &mut String, max: usize) -> bool {
    if max == 0 || text.len() <= max {
        return false;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    true
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

    /// Fits an attribute map to the attribute limits (OpenTelemetry's attribute limits:
    /// drop what is beyond the count, cut what is too long); returns how many attributes
    /// were dropped or cut.
    pub fn fit_attributes(
        &self,
        attributes: &mut std::collections::BTreeMap<String, String>,
    ) -> u64 {
        let mut trimmed = 0u64;
        if self.max_attributes_per_record > 0 && attributes.len() > self.max_attributes_per_record {
            let excess = attributes.len() - self.max_attributes_per_record;
            let drop: Vec<String> = attributes.keys().rev().take(excess).cloned().collect();
            for key in drop {
                attributes.remove(&key);
            }
            trimmed += excess as u64;
        }
        let max = self.max_attribute_value_bytes;
        let too_long_key = attributes.keys().any(|key| max > 0 && key.len() > max);
        if too_long_key {
            let before = attributes.len();
            attributes.retain(|key, _| key.len() <= max);
            trimmed += (before - attributes.len()) as u64;
        }
        for value in attributes.values_mut() {
            if truncate_text(value, max) {
                trimmed += 1;
            }
        }
        trimmed
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

/// Prometheus' duration syntax (`10m`, `1h30m`, `500ms`) for the one duration limit
/// (storage does not depend on the connectors' parser).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("not a valid duration string: {text:?}"))
        })
    }

    pub fn parse(text: &str) -> Option<Duration> {
        if text == "0" {
            return Some(Duration::ZERO);
        }
        let mut rest = text;
        let mut total: u64 = 0;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit())?;
            if digits == 0 {
                return None;
            }
            let number: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_ms: u64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                "y" => 31_536_000_000,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total = total.checked_add(number.checked_mul(unit_ms)?)?;
        }
        Some(Duration::from_millis(total))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_prometheus_durations() {
            assert_eq!(super::parse("10m").map(|d| d.as_secs()), Some(600));
            assert_eq!(super::parse("1h30m").map(|d| d.as_secs()), Some(5400));
            assert_eq!(super::parse("250ms").map(|d| d.as_millis()), Some(250));
            assert!(super::parse("10").is_none());
            assert!(super::parse("m").is_none());
            assert!(super::parse("99999999999999999999y").is_none());
        }
    }
}

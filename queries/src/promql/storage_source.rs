//! A [`SeriesSource`] over Vigil storage: series matched against the catalog (cached
//! selections in label order), samples read by series from the head and the sample files
//! ([`Storage::points`]: series index, page skipping, decoded-series cache).
//!
//! The evaluator is synchronous; this source reads files, so it must run on a blocking
//! thread (`tokio::task::spawn_blocking`).

use promql_parser::label::{MatchOp, Matcher};
use vigil_storage::Storage;

use super::error::{EvalError, EvalResult};
use super::eval::SeriesSource;
use super::functions::Point;
use super::labels::matches;
use super::value::Series;

pub struct StorageSource<'a> {
    pub storage: &'a Storage,
}

impl SeriesSource for StorageSource<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> EvalResult<Vec<Series>> {
        // Cached and already in label order (Prometheus returns series in label order).
        let selected = self.storage.select_series(
            &super::prefetch::key(matchers),
            metric_name(matchers),
            |labels| matches(matchers, labels),
        );
        if selected.is_empty() {
            return Ok(Vec::new());
        }
        // Head, parts being flushed and sample files, read by series (not through SQL).
        let ids: Vec<u64> = selected.iter().map(|(id, _)| *id).collect();
        let mut points = self
            .storage
            .points(&ids, start, end)
            .map_err(|err| EvalError::Storage(format!("reading samples: {err}")))?;
        Ok(selected
            .iter()
            .filter_map(|(id, labels)| {
                let (timestamps, values) = points.remove(id)?;
                Some(Series {
                    labels: (**labels).clone(),
                    points: timestamps
                        .into_iter()
                        .zip(values)
                        .map(|(t, f)| Point { t, f })
                        .collect(),
                    drop_name: false,
                })
            })
            .collect())
    }
}

/// The metric name a selector requires (`__name__="…"`), if any.
fn metric_name(matchers: &[Matcher]) -> Option<&str> {
    matchers
        .iter()
        .find(|m| m.name == vigil_storage::labels::METRIC_NAME && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.as_str())
}

//! A [`SeriesSource`] over Vigil storage: series matched against the catalog, samples read
//! through the `samples` table (head ∪ Parquet, partitions pruned by the time range).
//!
//! The evaluator is synchronous; this source blocks on DataFusion, so it must run on a
//! blocking thread (`tokio::task::spawn_blocking`).

use std::collections::HashMap;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use promql_parser::label::Matcher;
use tokio::runtime::Handle;
use vigil_storage::Storage;

use super::eval::{matches, EvalError, EvalResult, SeriesSource};
use super::functions::Point;
use super::value::Series;
use crate::SqlEngine;

pub struct StorageSource<'a> {
    pub storage: &'a Storage,
    pub sql: &'a SqlEngine,
    pub runtime: Handle,
}

/// Above this many matched series the scan reads every series in the time range and
/// filters afterwards; below it the ids are pushed into the scan (Parquet statistics on
/// the sorted `series_id` column then skip most row groups and pages).
const MAX_PUSHED_IDS: usize = 4096;

/// The last millisecond of year 9999: query bounds beyond it are clamped.
const MAX_MS: i64 = 253_402_300_799_999;

impl SeriesSource for StorageSource<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> EvalResult<Vec<Series>> {
        // Cached and already in label order (Prometheus returns series in label order).
        let selected = self
            .storage
            .select_series(&super::prefetch::key(matchers), |labels| {
                matches(matchers, labels)
            });
        if selected.is_empty() {
            return Ok(Vec::new());
        }
        // Recent data: read the head directly, no Arrow round trip.
        let ids: Vec<u64> = selected.iter().map(|(id, _)| *id).collect();
        if let Some(mut points) = self.storage.head_points(&ids, start, end) {
            return Ok(selected
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
                .collect());
        }
        // Open-ended reads (seeding asks up to i64::MAX) stay inside the range Arrow
        // can convert between time zones.
        let (start, end) = (start.clamp(-MAX_MS, MAX_MS), end.clamp(-MAX_MS, MAX_MS));
        let mut query = format!(
            "SELECT series_id, CAST(timestamp AS BIGINT) AS ts, value FROM samples \
             WHERE timestamp > to_timestamp_millis({start}) AND timestamp <= to_timestamp_millis({end})"
        );
        if selected.len() <= MAX_PUSHED_IDS {
            let ids: Vec<String> = selected.iter().map(|(id, _)| id.to_string()).collect();
            query.push_str(&format!(" AND series_id IN ({})", ids.join(",")));
        }
        let (_, batches) = self
            .runtime
            .block_on(self.sql.query(&query))
            .map_err(|err| EvalError::Storage(format!("reading samples: {err}")))?;
        let mut points: HashMap<u64, Vec<Point>> =
            selected.iter().map(|(id, _)| (*id, Vec::new())).collect();
        for batch in &batches {
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let timestamps = batch.column(1).as_primitive::<Int64Type>();
            let values = batch.column(2).as_primitive::<Float64Type>();
            for row in 0..batch.num_rows() {
                if let Some(series) = points.get_mut(&ids.value(row)) {
                    series.push(Point {
                        t: timestamps.value(row),
                        f: values.value(row),
                    });
                }
            }
        }
        Ok(selected
            .iter()
            .filter_map(|(id, labels)| {
                let mut series_points = points.remove(id)?;
                if series_points.is_empty() {
                    return None;
                }
                series_points.sort_by_key(|point| point.t);
                Some(Series {
                    labels: (**labels).clone(),
                    points: series_points,
                    drop_name: false,
                })
            })
            .collect())
    }
}

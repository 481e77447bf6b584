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
use tracing::warn;
use vigil_storage::Storage;

use super::eval::{matches, SeriesSource};
use super::functions::Point;
use super::value::Series;
use crate::SqlEngine;

pub struct StorageSource<'a> {
    pub storage: &'a Storage,
    pub sql: &'a SqlEngine,
    pub runtime: Handle,
}

impl SeriesSource for StorageSource<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let selected = self
            .storage
            .series_matching(|labels| matches(matchers, labels));
        if selected.is_empty() {
            return Vec::new();
        }
        let query = format!(
            "SELECT series_id, CAST(timestamp AS BIGINT) AS ts, value FROM samples \
             WHERE timestamp > to_timestamp_millis({start}) AND timestamp <= to_timestamp_millis({end})"
        );
        let batches = match self.runtime.block_on(self.sql.query(&query)) {
            Ok((_, batches)) => batches,
            Err(err) => {
                warn!(error = %err, "promql selector scan failed");
                return Vec::new();
            }
        };
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
        selected
            .into_iter()
            .filter_map(|(id, labels)| {
                let mut series_points = points.remove(&id)?;
                if series_points.is_empty() {
                    return None;
                }
                series_points.sort_by_key(|point| point.t);
                Some(Series {
                    labels: (*labels).clone(),
                    points: series_points,
                    drop_name: false,
                })
            })
            .collect()
    }
}

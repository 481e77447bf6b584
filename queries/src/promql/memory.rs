//! An in-memory [`SeriesSource`]: the conformance runner loads `.test` data into it.

use promql_parser::label::Matcher;
use vigil_storage::LabelSet;

use super::error::EvalResult;
use super::eval::SeriesSource;
use super::functions::Point;
use super::labels::matches;
use super::value::Series;

#[derive(Debug, Default)]
pub struct MemorySource {
    series: Vec<Series>,
    index: std::collections::HashMap<LabelSet, usize>,
}

impl MemorySource {
    /// Adds samples to a series, creating it if needed; keeps points sorted by time.
    pub fn add(&mut self, labels: LabelSet, points: impl IntoIterator<Item = Point>) {
        let index = match self.index.get(&labels) {
            Some(&index) => index,
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(Series {
                    labels,
                    points: Vec::new(),
                    drop_name: false,
                });
                self.series.len() - 1
            }
        };
        let series = &mut self.series[index];
        for point in points {
            // A later sample at the same time replaces the earlier one.
            match series.points.binary_search_by_key(&point.t, |p| p.t) {
                Ok(at) => series.points[at] = point,
                Err(at) => series.points.insert(at, point),
            }
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
        self.index.clear();
    }

    /// The samples of the series with exactly these labels.
    pub fn points(&self, labels: &LabelSet) -> Option<&[Point]> {
        self.index
            .get(labels)
            .map(|&index| self.series[index].points.as_slice())
    }
}

impl SeriesSource for MemorySource {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> EvalResult<Vec<Series>> {
        Ok(self
            .series
            .iter()
            .filter(|series| matches(matchers, &series.labels))
            .filter_map(|series| {
                let from = series.points.partition_point(|p| p.t <= start);
                let to = series.points.partition_point(|p| p.t <= end);
                (from < to).then(|| Series {
                    labels: series.labels.clone(),
                    points: series.points[from..to].to_vec(),
                    drop_name: false,
                })
            })
            .collect())
    }
}

//! Loads each selector's samples once per query.
//!
//! The evaluator asks its source for every selector at every step of a range query.
//! [`PrefetchSource`] works out, from the expression, the whole time span each selector
//! needs over the query (offsets, `@`, ranges, subqueries and the lookback included),
//! reads that span once, and answers every later request by slicing it. A request
//! outside the planned span (it cannot happen for spans computed here, but the cache
//! does not rely on it) goes to the underlying source.

use std::collections::HashMap;
use std::sync::Mutex;

use promql_parser::label::Matcher;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::error::{EvalError, EvalResult};
use super::eval::{millis, offset_ms, system_time_ms, Evaluator, SeriesSource};
use super::value::Series;

/// A loaded span `(start, end]` and its series.
type Loaded = (i64, i64, std::sync::Arc<Vec<Series>>);

/// Half-open `(start, end]` spans of sample time, per selector.
type Spans = HashMap<String, (i64, i64)>;

pub struct PrefetchSource<'a> {
    inner: &'a dyn SeriesSource,
    spans: Spans,
    loaded: Mutex<HashMap<String, Loaded>>,
}

/// A selector's identity: its matchers, in a stable order.
pub(crate) fn key(matchers: &[Matcher]) -> String {
    let mut parts: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
    parts.sort();
    parts.join(",")
}

impl<'a> PrefetchSource<'a> {
    /// Plans the spans of `expr` evaluated at every time in `[start, end]` under the
    /// settings of `evaluator` (lookback, subquery step, query range for `@`).
    pub fn new(
        inner: &'a dyn SeriesSource,
        expr: &Expr,
        start: i64,
        end: i64,
        lookback_ms: i64,
    ) -> Self {
        let mut spans = Spans::new();
        plan(expr, start, end, start, end, lookback_ms, &mut spans);
        PrefetchSource {
            inner,
            spans,
            loaded: Mutex::new(HashMap::new()),
        }
    }
}

/// The reference-time interval of a selector evaluated over `[a, b]`.
fn reference(
    at: &Option<AtModifier>,
    offset: &Option<Offset>,
    a: i64,
    b: i64,
    query: (i64, i64),
) -> (i64, i64) {
    let (lo, hi) = match at {
        Some(AtModifier::Start) => (query.0, query.0),
        Some(AtModifier::End) => (query.1, query.1),
        Some(AtModifier::At(time)) => {
            let t = system_time_ms(time);
            (t, t)
        }
        None => (a, b),
    };
    let shift = offset_ms(offset);
    (lo - shift, hi - shift)
}

fn widen(spans: &mut Spans, selector: &VectorSelector, lo: i64, hi: i64) {
    let Ok(matchers) = Evaluator::selector_matchers(selector) else {
        return;
    };
    spans
        .entry(key(&matchers))
        .and_modify(|span| {
            span.0 = span.0.min(lo);
            span.1 = span.1.max(hi);
        })
        .or_insert((lo, hi));
}

fn plan(
    expr: &Expr,
    a: i64,
    b: i64,
    query_start: i64,
    query_end: i64,
    lookback: i64,
    spans: &mut Spans,
) {
    let query = (query_start, query_end);
    let recurse = |child: &Expr, a: i64, b: i64, spans: &mut Spans| {
        plan(child, a, b, query_start, query_end, lookback, spans)
    };
    match expr {
        Expr::VectorSelector(vs) => {
            let (lo, hi) = reference(&vs.at, &vs.offset, a, b, query);
            widen(spans, vs, lo - lookback, hi);
        }
        Expr::MatrixSelector(ms) => {
            let (lo, hi) = reference(&ms.vs.at, &ms.vs.offset, a, b, query);
            widen(spans, &ms.vs, lo - millis(&ms.range), hi);
        }
        Expr::Subquery(sq) => {
            let (lo, hi) = reference(&sq.at, &sq.offset, a, b, query);
            recurse(&sq.expr, lo - millis(&sq.range), hi, spans);
        }
        Expr::Paren(p) => recurse(&p.expr, a, b, spans),
        Expr::Unary(u) => recurse(&u.expr, a, b, spans),
        Expr::Binary(bin) => {
            recurse(&bin.lhs, a, b, spans);
            recurse(&bin.rhs, a, b, spans);
        }
        Expr::Aggregate(agg) => {
            recurse(&agg.expr, a, b, spans);
            if let Some(param) = &agg.param {
                recurse(param, a, b, spans);
            }
        }
        Expr::Call(call) => {
            for arg in &call.args.args {
                recurse(arg, a, b, spans);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn slice(series: &[Series], start: i64, end: i64) -> Vec<Series> {
    series
        .iter()
        .filter_map(|s| {
            let from = s.points.partition_point(|p| p.t <= start);
            let to = s.points.partition_point(|p| p.t <= end);
            (from < to).then(|| Series {
                labels: s.labels.clone(),
                points: s.points[from..to].to_vec(),
                drop_name: false,
            })
        })
        .collect()
}

impl SeriesSource for PrefetchSource<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> EvalResult<Vec<Series>> {
        let key = key(matchers);
        let planned = match self.spans.get(&key) {
            Some(&(lo, hi)) if lo <= start && end <= hi => (lo, hi),
            _ => return self.inner.select(matchers, start, end),
        };
        // Loads happen under the lock, so threads sharing a query read a span once.
        let series = {
            let mut loaded = self
                .loaded
                .lock()
                .map_err(|_| EvalError::Execution("prefetch cache poisoned".into()))?;
            match loaded.get(&key) {
                Some((_, _, series)) => series.clone(),
                None => {
                    let series =
                        std::sync::Arc::new(self.inner.select(matchers, planned.0, planned.1)?);
                    loaded.insert(key, (planned.0, planned.1, series.clone()));
                    series
                }
            }
        };
        Ok(slice(&series, start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::functions::Point;
    use crate::promql::memory::MemorySource;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting<'a>(&'a MemorySource, AtomicUsize);

    impl SeriesSource for Counting<'_> {
        fn select(&self, m: &[Matcher], start: i64, end: i64) -> EvalResult<Vec<Series>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.select(m, start, end)
        }
    }

    #[test]
    fn range_query_reads_each_selector_once_with_identical_results() {
        let mut memory = MemorySource::default();
        for i in 0..3 {
            let mut labels = vigil_storage::LabelSet::default();
            labels.set("__name__", "c");
            labels.set("i", &i.to_string());
            memory.add(
                labels,
                (0..200).map(|k| Point {
                    t: k * 15_000,
                    f: (k * (i + 1)) as f64,
                }),
            );
        }
        let query = "sum(rate(c[1m])) + max_over_time(c[5m:30s] offset 1m) - c @ 600";
        let expr = promql_parser::parser::parse(query).unwrap();
        let (start, end, step) = (600_000, 2_400_000, 15_000);
        let direct = Evaluator::new(&memory, start, end)
            .range_query(&expr, start, end, step)
            .unwrap();
        let counting = Counting(&memory, AtomicUsize::new(0));
        let prefetch = PrefetchSource::new(&counting, &expr, start, end, 300_000);
        let cached = Evaluator::new(&prefetch, start, end)
            .range_query(&expr, start, end, step)
            .unwrap();
        assert_eq!(direct, cached);
        // All three selectors are `c`: one read covers them.
        assert_eq!(counting.1.load(Ordering::Relaxed), 1);
    }
}

//! Range queries in Prometheus' iterator shape: before stepping, every instant selector
//! and every range function over a selector (`rate(x[5m])`, `max_over_time(y[10m])` …) is
//! evaluated for all steps in one pass per series — a cursor (instant selectors) or a
//! sliding window (range functions) moves forward over the series' samples — instead of
//! selecting, copying and scanning the window again at every step. The operators above
//! them (aggregations, binary operators, other functions) then run per step on these
//! precomputed vectors, so their semantics are untouched.
//!
//! A table answers for its node at the query's step times only; other times (subqueries'
//! inner steps) evaluate as before. Nodes with `@` are left alone (their value does not
//! move with the step), as are tables that would exceed [`MAX_TABLE_SAMPLES`].

use std::collections::HashMap;

use promql_parser::parser::{Call, Expr, MatrixSelector, VectorSelector};
use vigil_storage::record::is_stale_marker;

use super::call::{not_a_counter, range_kernel, RangeKernel};
use super::error::EvalResult;
use super::eval::{millis, offset_ms, Evaluator};
use super::functions::{Point, Window};
use super::value::Sample;

/// Above this many (series × steps) a node is evaluated per step (bounded memory).
const MAX_TABLE_SAMPLES: usize = 8_000_000;

/// The precomputed vectors of one node at every step.
#[derive(Debug, Default)]
pub(crate) struct StepTable {
    vectors: Vec<Vec<Sample>>,
    /// Samples the per-step evaluation would have loaded (for max-samples).
    loaded: Vec<usize>,
}

/// The step tables of one range query (or one chunk of its steps), by node address.
#[derive(Debug, Default)]
pub(crate) struct StepTables {
    start: i64,
    step: i64,
    tables: HashMap<usize, StepTable>,
}

fn address(expr: &Expr) -> usize {
    expr as *const Expr as usize
}

impl StepTables {
    /// The node's vector at `t`, with the samples it loaded, if `t` is one of the steps.
    pub(crate) fn lookup(&self, expr: &Expr, t: i64) -> Option<(&[Sample], usize)> {
        let table = self.tables.get(&address(expr))?;
        if t < self.start || (t - self.start) % self.step != 0 {
            return None;
        }
        let idx = usize::try_from((t - self.start) / self.step).ok()?;
        Some((table.vectors.get(idx)?.as_slice(), *table.loaded.get(idx)?))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Builds the tables of every eligible node of `expr` for the steps
    /// `start, start + step, …, end`.
    pub(crate) fn build(
        evaluator: &Evaluator<'_>,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> EvalResult<StepTables> {
        let mut tables = StepTables {
            start,
            step: step.max(1),
            tables: HashMap::new(),
        };
        let steps = usize::try_from((end - start) / tables.step + 1).unwrap_or(0);
        if steps < 2 {
            return Ok(tables);
        }
        let times: Vec<i64> = (0..steps as i64).map(|i| start + i * tables.step).collect();
        let mut nodes = Vec::new();
        collect(expr, &mut nodes);
        for node in nodes {
            let table = match node {
                Expr::VectorSelector(selector) => instant_table(evaluator, selector, &times)?,
                Expr::Call(call) => match range_call(call) {
                    Some((kernel, matrix)) => range_table(evaluator, call, kernel, matrix, &times)?,
                    None => None,
                },
                _ => None,
            };
            if let Some(table) = table {
                tables.tables.insert(address(node), table);
            }
        }
        Ok(tables)
    }
}

/// The eligible nodes: instant selectors and parameterless range functions over a
/// selector, without `@`. Subqueries are not entered (their steps are their own).
fn collect<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::VectorSelector(selector) if selector.at.is_none() => out.push(expr),
        Expr::Call(call) => {
            if range_call(call).is_some() {
                out.push(expr);
                return;
            }
            for arg in &call.args.args {
                collect(arg, out);
            }
        }
        Expr::Aggregate(aggregate) => {
            collect(&aggregate.expr, out);
            if let Some(param) = &aggregate.param {
                collect(param, out);
            }
        }
        Expr::Binary(binary) => {
            collect(&binary.lhs, out);
            collect(&binary.rhs, out);
        }
        Expr::Paren(paren) => collect(&paren.expr, out),
        Expr::Unary(unary) => collect(&unary.expr, out),
        _ => {}
    }
}

/// `f(selector[range])` with `f` a parameterless range function and no `@`.
fn range_call(call: &Call) -> Option<(RangeKernel, &MatrixSelector)> {
    let kernel = range_kernel(call.func.name)?;
    let [arg] = call.args.args.as_slice() else {
        return None;
    };
    let mut arg: &Expr = arg;
    while let Expr::Paren(paren) = arg {
        arg = &paren.expr;
    }
    match arg {
        Expr::MatrixSelector(matrix) if matrix.vs.at.is_none() => Some((kernel, matrix)),
        _ => None,
    }
}

fn too_big(series: usize, steps: usize) -> bool {
    series.saturating_mul(steps) > MAX_TABLE_SAMPLES
}

/// Each series' latest sample in the lookback window at every step (a forward cursor).
fn instant_table(
    evaluator: &Evaluator<'_>,
    selector: &VectorSelector,
    times: &[i64],
) -> EvalResult<Option<StepTable>> {
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return Ok(None);
    };
    let offset = offset_ms(&selector.offset);
    let matchers = Evaluator::selector_matchers(selector)?;
    let lookback = evaluator.lookback_ms;
    let series = evaluator.select(&matchers, first - offset - lookback, last - offset)?;
    if too_big(series.len(), times.len()) {
        return Ok(None);
    }
    let mut table = StepTable {
        vectors: vec![Vec::new(); times.len()],
        loaded: vec![0; times.len()],
    };
    for (n, s) in series.iter().enumerate() {
        if n % 256 == 0 {
            evaluator.check_deadline()?;
        }
        let mut cursor = 0;
        for (idx, &t) in times.iter().enumerate() {
            let reference = t - offset;
            while cursor < s.points.len() && s.points[cursor].t <= reference {
                cursor += 1;
            }
            let Some(point) = cursor.checked_sub(1).map(|at| s.points[at]) else {
                continue;
            };
            if point.t > reference - lookback && !is_stale_marker(point.f) {
                table.vectors[idx].push(Sample::new(s.labels.clone(), point.t, point.f));
                table.loaded[idx] += 1;
            }
        }
    }
    Ok(Some(table))
}

/// The range function over each series' window at every step (a sliding window).
fn range_table(
    evaluator: &Evaluator<'_>,
    call: &Call,
    kernel: RangeKernel,
    matrix: &MatrixSelector,
    times: &[i64],
) -> EvalResult<Option<StepTable>> {
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return Ok(None);
    };
    let offset = offset_ms(&matrix.vs.offset);
    let range = millis(&matrix.range);
    let matchers = Evaluator::selector_matchers(&matrix.vs)?;
    let series = evaluator.select(&matchers, first - offset - range, last - offset)?;
    if too_big(series.len(), times.len()) {
        return Ok(None);
    }
    let counter_function = matches!(call.func.name, "rate" | "increase");
    let mut table = StepTable {
        vectors: vec![Vec::new(); times.len()],
        loaded: vec![0; times.len()],
    };
    for (n, s) in series.into_iter().enumerate() {
        if n % 256 == 0 {
            evaluator.check_deadline()?;
        }
        let points: Vec<Point> = s
            .points
            .into_iter()
            .filter(|point| !is_stale_marker(point.f))
            .collect();
        let (mut lo, mut hi) = (0, 0);
        let mut evaluated = false;
        for (idx, &t) in times.iter().enumerate() {
            let end = t - offset;
            let start = end - range;
            while lo < points.len() && points[lo].t <= start {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < points.len() && points[hi].t <= end {
                hi += 1;
            }
            let window = &points[lo..hi];
            if window.is_empty() {
                continue;
            }
            table.loaded[idx] += window.len();
            evaluated = true;
            if let Some(value) = (kernel.apply)(window, Window { start, end }) {
                table.vectors[idx].push(Sample {
                    labels: s.labels.clone(),
                    t,
                    f: value,
                    drop_name: s.drop_name || !kernel.keep_name,
                });
            }
        }
        if evaluated && counter_function {
            if let Some(info) = not_a_counter(&s.labels) {
                evaluator.info(info);
            }
        }
    }
    Ok(Some(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{finalize, MemorySource, Value};
    use std::collections::BTreeMap;
    use vigil_storage::LabelSet;

    /// Step tables change how a range query is computed, never its answer: compare with
    /// an instant query at every step on irregular series (gaps beyond the lookback,
    /// staleness markers, counter resets).
    #[test]
    fn range_queries_equal_instant_queries_at_every_step() {
        let mut memory = MemorySource::default();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for series in 0..12 {
            let mut labels = LabelSet::default();
            labels.set("__name__", if series % 2 == 0 { "c_total" } else { "g" });
            labels.set("a", &(series % 3).to_string());
            labels.set("i", &series.to_string());
            let mut points = Vec::new();
            let mut t = 0i64;
            let mut value = 0.0;
            while t < 3_600_000 {
                t += 5_000 + (next() % 40_000) as i64;
                if next() % 20 == 0 {
                    t += 400_000;
                }
                let f = if next() % 30 == 0 {
                    f64::from_bits(vigil_storage::STALE_NAN_BITS)
                } else if next() % 25 == 0 {
                    value = 0.0;
                    value
                } else {
                    value += (next() % 100) as f64;
                    value
                };
                points.push(Point { t, f });
            }
            memory.add(labels, points);
        }
        let queries = [
            "c_total",
            "g offset 1m",
            "rate(c_total[2m])",
            "sum by (a) (rate(c_total[5m]))",
            "max_over_time(g[3m] offset 30s)",
            "last_over_time(g[1m]) * 2",
            "increase(c_total[1h]) > 0",
            "g / on (a, i) (c_total or g)",
            "count_over_time(g[10m]) + deriv(g[4m])",
            "sum without (i) (g) / on (a) group_left avg by (a) (c_total)",
            "topk(2, max by (a, __name__) ({__name__=~\"g|c_total\"}))",
        ];
        let (start, end, step) = (300_000, 3_500_000, 15_000);
        for query in queries {
            let expr = promql_parser::parser::parse(query).unwrap();
            let evaluator = Evaluator::new(&memory, start, end);
            let ranged = evaluator.range_query(&expr, start, end, step).unwrap();
            let mut expected: BTreeMap<LabelSet, Vec<Point>> = BTreeMap::new();
            let mut t = start;
            while t <= end {
                let Value::Vector(samples) = evaluator.eval(&expr, t).unwrap() else {
                    panic!("{query}: not a vector");
                };
                for sample in finalize(samples).unwrap() {
                    expected
                        .entry(sample.labels)
                        .or_default()
                        .push(Point { t, f: sample.f });
                }
                t += step;
            }
            let got: BTreeMap<LabelSet, Vec<Point>> = ranged
                .into_iter()
                .map(|series| (series.labels, series.points))
                .collect();
            assert!(!got.is_empty(), "{query}: empty");
            assert_eq!(got.len(), expected.len(), "{query}");
            for (labels, points) in &expected {
                let other = &got[labels];
                assert_eq!(points.len(), other.len(), "{query} {labels}");
                for (a, b) in points.iter().zip(other) {
                    assert_eq!(a.t, b.t, "{query} {labels}");
                    assert!(
                        a.f.to_bits() == b.f.to_bits() || (a.f - b.f).abs() <= 1e-9 * a.f.abs(),
                        "{query} {labels} at {}: {} vs {}",
                        a.t,
                        a.f,
                        b.f
                    );
                }
            }
        }
    }
}

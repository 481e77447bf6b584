//! PromQL range and aggregation semantics as pure functions over a window of samples.
//!
//! Every function takes the samples of one series inside one range-selector window,
//! in time order, and returns `None` where Prometheus returns no sample. The window is
//! left-open, right-closed: `(start, end]` (Prometheus 3). The names follow
//! `promql/functions.go` and `promql/quantile.go`; the code is Vigil's own.

/// One float sample: timestamp in milliseconds and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: i64,
    pub f: f64,
}

/// The window a range function is evaluated over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Exclusive start, milliseconds.
    pub start: i64,
    /// Inclusive end (the evaluation time minus offset), milliseconds.
    pub end: i64,
}

impl Window {
    pub fn range_seconds(&self) -> f64 {
        (self.end - self.start) as f64 / 1000.0
    }
}

/// `rate`, `increase` and `delta`: the difference between the first and last sample,
/// corrected for counter resets, extrapolated towards the window edges
/// (`extrapolatedRate` in functions.go).
pub fn extrapolated_rate(
    points: &[Point],
    window: Window,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let first = points[0];
    let last = points[points.len() - 1];
    let mut result = last.f - first.f;
    if is_counter {
        for pair in points.windows(2) {
            if pair[1].f < pair[0].f {
                result += pair[0].f;
            }
        }
    }
    let mut duration_to_start = (first.t - window.start) as f64 / 1000.0;
    let mut duration_to_end = (window.end - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let average_between = sampled_interval / (points.len() - 1) as f64;
    let threshold = average_between * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter && result > 0.0 && first.f >= 0.0 {
        // A counter cannot be extrapolated below zero.
        let duration_to_zero = sampled_interval * (first.f / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= window.range_seconds();
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples (`instantValue`).
pub fn instant_value(points: &[Point], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let last = points[points.len() - 1];
    let previous = points[points.len() - 2];
    let mut result = if is_rate && last.f < previous.f {
        // A counter reset: the last value is the increase since the reset.
        last.f
    } else {
        last.f - previous.f
    };
    let interval = last.t - previous.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// `resets`: the number of counter resets in the window.
pub fn resets(points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    Some(
        points
            .windows(2)
            .filter(|pair| pair[1].f < pair[0].f)
            .count() as f64,
    )
}

/// `changes`: the number of value changes (NaN to NaN is no change).
pub fn changes(points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    Some(
        points
            .windows(2)
            .filter(|pair| pair[1].f != pair[0].f && !(pair[1].f.is_nan() && pair[0].f.is_nan()))
            .count() as f64,
    )
}

/// Least-squares slope and intercept at `intercept_time` (`linearRegression`).
fn linear_regression(points: &[Point], intercept_time: i64) -> (f64, f64) {
    let n = points.len() as f64;
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    let initial = points[0].f;
    let mut const_y = true;
    for point in points {
        if const_y && point.f != initial {
            const_y = false;
        }
        let x = (point.t - intercept_time) as f64 / 1000.0;
        kahan_add(&mut sum_x, &mut c_x, x);
        kahan_add(&mut sum_y, &mut c_y, point.f);
        kahan_add(&mut sum_xy, &mut c_xy, x * point.f);
        kahan_add(&mut sum_x2, &mut c_x2, x * x);
    }
    if const_y {
        if initial.is_finite() {
            return (0.0, initial);
        }
        return (f64::NAN, f64::NAN);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// `deriv`: per-second slope by simple linear regression.
pub fn deriv(points: &[Point]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    Some(linear_regression(points, points[0].t).0)
}

/// `predict_linear(v, t)`: the value `seconds` after `eval_time` by linear regression.
pub fn predict_linear(points: &[Point], eval_time: i64, seconds: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(points, eval_time);
    Some(slope * seconds + intercept)
}

/// Kahan–Babuška–Neumaier compensated summation step (`kahansum.Inc`).
pub fn kahan_add(sum: &mut f64, compensation: &mut f64, value: f64) {
    let t = *sum + value;
    if t.is_infinite() {
        *compensation = 0.0;
    } else if sum.abs() >= value.abs() {
        *compensation += (*sum - t) + value;
    } else {
        *compensation += (value - t) + *sum;
    }
    *sum = t;
}

pub fn sum_over_time(points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let (mut sum, mut c) = (0.0, 0.0);
    for point in points {
        kahan_add(&mut sum, &mut c, point.f);
    }
    Some(if sum.is_infinite() { sum } else { sum + c })
}

/// `avg_over_time`: a compensated sum, switching to an incremental mean if the sum
/// would overflow.
pub fn avg_over_time(points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let (mut sum, mut c, mut mean) = (0.0, 0.0, 0.0);
    let mut incremental = false;
    for (idx, point) in points.iter().enumerate() {
        let count = (idx + 1) as f64;
        if !incremental {
            let (mut new_sum, mut new_c) = (sum, c);
            kahan_add(&mut new_sum, &mut new_c, point.f);
            if idx == 0 || !new_sum.is_infinite() {
                sum = new_sum;
                c = new_c;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        mean *= q;
        c *= q;
        kahan_add(&mut mean, &mut c, point.f / count);
    }
    let n = points.len() as f64;
    Some(if incremental {
        mean + c
    } else {
        sum / n + c / n
    })
}

pub fn count_over_time(points: &[Point]) -> Option<f64> {
    (!points.is_empty()).then_some(points.len() as f64)
}

/// `min_over_time` / `max_over_time`: NaN only when every sample is NaN.
pub fn min_over_time(points: &[Point]) -> Option<f64> {
    extreme(points, |candidate, best| candidate < best)
}

pub fn max_over_time(points: &[Point]) -> Option<f64> {
    extreme(points, |candidate, best| candidate > best)
}

fn extreme(points: &[Point], better: impl Fn(f64, f64) -> bool) -> Option<f64> {
    let mut best = points.first()?.f;
    for point in &points[1..] {
        if better(point.f, best) || best.is_nan() {
            best = point.f;
        }
    }
    Some(best)
}

pub fn last_over_time(points: &[Point]) -> Option<f64> {
    points.last().map(|point| point.f)
}

pub fn present_over_time(points: &[Point]) -> Option<f64> {
    (!points.is_empty()).then_some(1.0)
}

/// Population variance by Welford's method with compensation (`stdvar_over_time`).
pub fn stdvar_over_time(points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for point in points {
        count += 1.0;
        let delta = point.f - (mean + c_mean);
        kahan_add(&mut mean, &mut c_mean, delta / count);
        kahan_add(&mut aux, &mut c_aux, delta * (point.f - (mean + c_mean)));
    }
    Some((aux + c_aux) / count)
}

pub fn stddev_over_time(points: &[Point]) -> Option<f64> {
    stdvar_over_time(points).map(f64::sqrt)
}

/// `quantile_over_time(φ, …)`, and the φ-quantile of any value set (`quantile`).
pub fn quantile_over_time(phi: f64, points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let mut values: Vec<f64> = points.iter().map(|point| point.f).collect();
    Some(quantile(phi, &mut values))
}

/// The φ-quantile with linear interpolation between closest ranks; NaN for φ outside
/// [0, 1] is ±Inf as Prometheus has it.
pub fn quantile(phi: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    // Prometheus sorts NaN first (sort.Float64s); total_cmp puts positive NaN last.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = phi * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (rank.floor() + 1.0).min(n - 1.0) as usize;
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

/// `double_exponential_smoothing` (formerly `holt_winters`) with smoothing factor `sf`
/// and trend factor `tf`, both in (0, 1).
pub fn double_exponential_smoothing(points: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let mut smoothed_prev = points[0].f;
    let mut trend = points[1].f - points[0].f;
    let mut smoothed = smoothed_prev;
    for (idx, point) in points.iter().enumerate().skip(1) {
        if idx > 1 {
            trend = tf * (smoothed - smoothed_prev) + (1.0 - tf) * trend;
        }
        smoothed_prev = smoothed;
        smoothed = sf * point.f + (1.0 - sf) * (smoothed_prev + trend);
    }
    Some(smoothed)
}

/// Orders values with NaN last in both directions, as Prometheus' `sort`, `sort_desc`,
/// `topk` and `bottomk` do.
pub fn cmp_nan_last(a: f64, b: f64, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if descending => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[(i64, f64)]) -> Vec<Point> {
        values.iter().map(|&(t, f)| Point { t, f }).collect()
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter rising 10 per 10s, sampled at 10..=50s, window (0, 60s].
        let pts = points(&[
            (10_000, 10.0),
            (20_000, 20.0),
            (30_000, 30.0),
            (40_000, 40.0),
            (50_000, 50.0),
        ]);
        let window = Window {
            start: 0,
            end: 60_000,
        };
        let increase = extrapolated_rate(&pts, window, true, false).unwrap();
        // The gaps to the window edges (10s) are within 1.1 sample intervals: extrapolate
        // all the way, 40 over 40s becomes 60 over 60s.
        assert!((increase - 60.0).abs() < 1e-9, "{increase}");
        let rate = extrapolated_rate(&pts, window, true, true).unwrap();
        assert!((rate - 1.0).abs() < 1e-9);
        // With a far window start, extrapolate half an interval, and never below zero.
        let wide = Window {
            start: -100_000,
            end: 60_000,
        };
        let increase = extrapolated_rate(&pts, wide, true, false).unwrap();
        assert!((increase - 55.0).abs() < 1e-9, "{increase}");
        // A reset adds the value before it.
        let reset = points(&[(10_000, 10.0), (20_000, 2.0)]);
        assert_eq!(resets(&reset), Some(1.0));
        assert_eq!(instant_value(&reset, true), Some(0.2));
    }

    #[test]
    fn quantiles_interpolate() {
        let mut values = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(0.5, &mut values), 2.5);
        assert_eq!(quantile(1.5, &mut values), f64::INFINITY);
        let pts = points(&[(1, 1.0), (2, 1.0)]);
        assert_eq!(deriv(&pts), Some(0.0));
        assert_eq!(stdvar_over_time(&points(&[(1, 1.0), (2, 3.0)])), Some(1.0));
        assert_eq!(
            avg_over_time(&points(&[(1, f64::MAX), (2, f64::MAX)])),
            Some(f64::MAX)
        );
    }
}

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
pub(crate) fn extrapolated_rate(
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
pub(crate) fn instant_value(points: &[Point], is_rate: bool) -> Option<f64> {
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
pub(crate) fn resets(points: &[Point]) -> Option<f64> {
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
pub(crate) fn changes(points: &[Point]) -> Option<f64> {
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
pub(crate) fn deriv(points: &[Point]) -> Option<f64> {
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

pub(crate) fn sum_over_time(points: &[Point]) -> Option<f64> {
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
pub(crate) fn avg_over_time(points: &[Point]) -> Option<f64> {
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

pub(crate) fn count_over_time(points: &[Point]) -> Option<f64> {
    (!points.is_empty()).then_some(points.len() as f64)
}

/// `min_over_time` / `max_over_time`: NaN only when every sample is NaN.
pub(crate) fn min_over_time(points: &[Point]) -> Option<f64> {
    extreme(points, |candidate, best| candidate < best)
}

pub(crate) fn max_over_time(points: &[Point]) -> Option<f64> {
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

pub(crate) fn last_over_time(points: &[Point]) -> Option<f64> {
    points.last().map(|point| point.f)
}

pub(crate) fn present_over_time(points: &[Point]) -> Option<f64> {
    (!points.is_empty()).then_some(1.0)
}

/// Population variance by Welford's method with compensation (`stdvar_over_time`).
pub(crate) fn stdvar_over_time(points: &[Point]) -> Option<f64> {
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

pub(crate) fn stddev_over_time(points: &[Point]) -> Option<f64> {
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
pub(crate) fn quantile(phi: f64, values: &mut [f64]) -> f64 {
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

/// `mad_over_time`: the median absolute deviation from the median.
pub(crate) fn mad_over_time(points: &[Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    if points.iter().any(|point| point.f.is_nan()) {
        return Some(f64::NAN);
    }
    let mut values: Vec<f64> = points.iter().map(|point| point.f).collect();
    let median = quantile(0.5, &mut values);
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    Some(quantile(0.5, &mut deviations))
}

pub(crate) fn first_over_time(points: &[Point]) -> Option<f64> {
    points.first().map(|point| point.f)
}

/// The time (seconds) of the sample `pick` chooses: the first of equal extremes, as
/// `ts_of_min_over_time`/`ts_of_max_over_time` do; NaN samples are never chosen unless
/// all are NaN.
pub(crate) fn ts_of_extreme(points: &[Point], max: bool) -> Option<f64> {
    let mut best: Option<&Point> = None;
    for point in points {
        best = match best {
            None => Some(point),
            Some(current) if current.f.is_nan() && !point.f.is_nan() => Some(point),
            Some(current) if max && point.f >= current.f => Some(point),
            Some(current) if !max && point.f <= current.f => Some(point),
            keep => keep,
        };
    }
    best.map(|point| point.t as f64 / 1000.0)
}

/// One classic histogram bucket: its upper bound (`le`) and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// What fixing the buckets of a classic histogram took, for the info annotations.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BucketFixes {
    /// A cumulative count went down and was raised to its predecessor.
    pub forced_monotonic: bool,
}

/// Sorts by upper bound, merges buckets with the same bound, and makes the cumulative
/// counts monotonic (tiny floating-point drops are treated as equal). `None` when the
/// `+Inf` bucket is missing.
fn prepare_buckets(buckets: &mut Vec<Bucket>) -> Option<BucketFixes> {
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    if buckets.last().map(|b| b.upper_bound) != Some(f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for bucket in buckets.drain(..) {
        match merged.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => merged.push(bucket),
        }
    }
    *buckets = merged;
    let mut fixes = BucketFixes::default();
    let mut previous = buckets[0].count;
    for bucket in buckets.iter_mut().skip(1) {
        let current = bucket.count;
        if current == previous {
            continue;
        }
        if nearly_equal(previous, current, 1e-12) {
            bucket.count = previous;
        } else if current < previous {
            bucket.count = previous;
            fixes.forced_monotonic = true;
        } else {
            previous = current;
        }
    }
    Some(fixes)
}

fn nearly_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let sum = a.abs() + b.abs();
    if a == 0.0 || b == 0.0 || sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / sum.min(f64::MAX) < epsilon
}

/// `histogram_quantile(φ, …)` over classic buckets: linear interpolation within the
/// bucket holding the rank; the lowest bucket starts at 0 unless its bound is ≤ 0;
/// a rank in the `+Inf` bucket answers the highest finite bound.
pub fn bucket_quantile(phi: f64, mut buckets: Vec<Bucket>) -> (f64, BucketFixes) {
    if phi.is_nan() {
        return (f64::NAN, BucketFixes::default());
    }
    if phi < 0.0 {
        return (f64::NEG_INFINITY, BucketFixes::default());
    }
    if phi > 1.0 {
        return (f64::INFINITY, BucketFixes::default());
    }
    let Some(fixes) = prepare_buckets(&mut buckets) else {
        return (f64::NAN, BucketFixes::default());
    };
    if buckets.len() < 2 {
        return (f64::NAN, fixes);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 || observations.is_nan() {
        return (f64::NAN, fixes);
    }
    let mut rank = phi * observations;
    let last_finite = buckets.len() - 1;
    let b = buckets[..last_finite].partition_point(|bucket| bucket.count < rank);
    if b == last_finite {
        return (buckets[last_finite - 1].upper_bound, fixes);
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return (buckets[0].upper_bound, fixes);
    }
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (
        bucket_start + (bucket_end - bucket_start) * (rank / count),
        fixes,
    )
}

/// `histogram_fraction(lower, upper, …)` over classic buckets: the share of
/// observations in `[lower, upper]`, interpolating linearly inside finite buckets (the
/// lowest bucket starts at 0 when its bound is positive; infinite-width buckets are not
/// interpolated).
pub(crate) fn bucket_fraction(
    lower: f64,
    upper: f64,
    mut buckets: Vec<Bucket>,
) -> (f64, BucketFixes) {
    let Some(fixes) = prepare_buckets(&mut buckets) else {
        return (f64::NAN, BucketFixes::default());
    };
    let total = buckets[buckets.len() - 1].count;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, fixes);
    }
    if lower >= upper {
        return (0.0, fixes);
    }
    // The cumulative count at value `v`. Infinite-width buckets are not interpolated:
    // a bound inside one counts none of it.
    let rank_at = |v: f64, is_lower: bool| -> f64 {
        let mut below = 0.0;
        for (idx, bucket) in buckets.iter().enumerate() {
            let start = if idx == 0 {
                if bucket.upper_bound > 0.0 {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            } else {
                buckets[idx - 1].upper_bound
            };
            if v >= bucket.upper_bound {
                below = bucket.count;
                continue;
            }
            if v <= start {
                return below;
            }
            if start.is_infinite() && is_lower {
                return bucket.count;
            }
            if start.is_infinite() || bucket.upper_bound.is_infinite() {
                return below;
            }
            return below + (bucket.count - below) * (v - start) / (bucket.upper_bound - start);
        }
        below
    };
    (
        (rank_at(upper, false) - rank_at(lower, true)) / total,
        fixes,
    )
}

/// Natural ordering of label values (`sort_by_label`): runs of digits compare as
/// numbers, everything else byte-wise.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let start_a = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let start_b = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let digits_a = trim_zeros(&a[start_a..i]);
            let digits_b = trim_zeros(&b[start_b..j]);
            let order = digits_a
                .len()
                .cmp(&digits_b.len())
                .then_with(|| digits_a.cmp(digits_b));
            if order != Ordering::Equal {
                return order;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|d| *d != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

/// Orders values with NaN last in both directions, as Prometheus' `sort`, `sort_desc`,
/// `topk` and `bottomk` do.
pub(crate) fn cmp_nan_last(a: f64, b: f64, descending: bool) -> std::cmp::Ordering {
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
    fn classic_histogram_quantile() {
        let buckets = |pairs: &[(f64, f64)]| -> Vec<Bucket> {
            pairs
                .iter()
                .map(|&(upper_bound, count)| Bucket { upper_bound, count })
                .collect()
        };
        let b = buckets(&[
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        // Rank 50 is the top of the first bucket, which starts at 0.
        assert_eq!(bucket_quantile(0.5, b.clone()).0, 0.1);
        // Rank 70 is half-way through (0.1, 0.5].
        assert!((bucket_quantile(0.7, b.clone()).0 - 0.3).abs() < 1e-12);
        // Without +Inf there is no answer; a decreasing count is forced up.
        assert!(bucket_quantile(0.5, buckets(&[(1.0, 5.0)])).0.is_nan());
        let (_, fixes) = bucket_quantile(
            0.5,
            buckets(&[(1.0, 5.0), (2.0, 4.0), (f64::INFINITY, 6.0)]),
        );
        assert!(fixes.forced_monotonic);
        let (fraction, _) = bucket_fraction(0.0, 0.3, b);
        assert!((fraction - 0.7).abs() < 1e-12, "{fraction}");
        assert_eq!(natural_cmp("4m5", "4m600"), std::cmp::Ordering::Less);
        assert_eq!(
            natural_cmp("1.111.3", "1.11.3"),
            std::cmp::Ordering::Greater
        );
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

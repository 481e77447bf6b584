//! Label helpers shared by the evaluator, its operators, the series sources and the
//! incremental engine: matcher application, grouping and vector-matching label sets,
//! and Go's float formatting for label values.
//!
//! A leaf module: it imports nothing from the rest of `promql`, so the operators
//! (`aggregate.rs`, `binary.rs`, `call.rs`) use these without depending on `eval.rs`.

use promql_parser::label::Matcher;
use promql_parser::parser::LabelModifier;
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::LabelSet;

/// Label matchers from the parser, applied to a label set (missing label = "").
pub fn matches(matchers: &[Matcher], labels: &LabelSet) -> bool {
    matchers
        .iter()
        .all(|matcher| matcher.is_match(labels.get(&matcher.name).unwrap_or("")))
}

/// Labels for a grouping key: `by` keeps the listed labels, `without` drops them and
/// the metric name.
pub fn grouping_labels(labels: &LabelSet, modifier: Option<&LabelModifier>) -> LabelSet {
    match modifier {
        None => LabelSet::default(),
        Some(LabelModifier::Include(keep)) => {
            let mut out = LabelSet::default();
            for name in &keep.labels {
                if let Some(value) = labels.get(name) {
                    out.set(name, value);
                }
            }
            out
        }
        Some(LabelModifier::Exclude(drop)) => {
            let mut out = labels.clone();
            out.set(METRIC_NAME, "");
            for name in &drop.labels {
                out.set(name, "");
            }
            out
        }
    }
}

/// Vector matching signature: `on(…)` keeps, `ignoring(…)` drops (and the metric name).
pub fn matching_signature(labels: &LabelSet, on: bool, names: &[String]) -> LabelSet {
    if on {
        let mut out = LabelSet::default();
        for name in names {
            if let Some(value) = labels.get(name) {
                out.set(name, value);
            }
        }
        out
    } else {
        let mut out = labels.clone();
        out.set(METRIC_NAME, "");
        for name in names {
            out.set(name, "");
        }
        out
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` for `count_values` label values.
pub fn format_value(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

//! How rules read each other (`Dependencies`: which recordings alerting rules read),
//! and `OverlaySource`, the storage view an ingest evaluation gives those alerting
//! rules: storage plus the recordings' output as of that instant.

use vigil_engine::alerting::GroupState;
use vigil_engine::rules::RuleKind;
use vigil_storage::LabelSet;

/// How rules read each other, per group and rule: which recording rules alerting rules
/// read (directly or through other recordings), and which alerting rules read one.
/// By name: a rule reads a recording if the recorded name is a token of its expression
/// (over-approximating is safe: it only costs an ad hoc evaluation).
#[derive(Debug, Default, Clone)]
pub(super) struct Dependencies {
    /// Recording rules whose output alerting rules read.
    pub(super) feeds_alerts: Vec<Vec<bool>>,
    /// Alerting rules that read a recording rule's output.
    pub(super) reads_recording: Vec<Vec<bool>>,
}

fn expression_tokens(text: &str) -> std::collections::HashSet<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| !token.is_empty())
        .collect()
}

impl Dependencies {
    pub(super) fn of(groups: &[GroupState]) -> Dependencies {
        let rules = || groups.iter().flat_map(|g| g.rules.iter());
        let recorded: std::collections::HashSet<&str> = rules()
            .filter(|r| r.rule.kind == RuleKind::Recording)
            .map(|r| r.rule.name.as_str())
            .collect();
        // Names alerting rules need, closed over recordings that read recordings.
        let mut needed: std::collections::HashSet<&str> = rules()
            .filter(|r| r.rule.kind == RuleKind::Alerting)
            .flat_map(|r| expression_tokens(&r.rule.expr_text))
            .filter(|token| recorded.contains(token))
            .collect();
        loop {
            let more: Vec<&str> = rules()
                .filter(|r| {
                    r.rule.kind == RuleKind::Recording && needed.contains(r.rule.name.as_str())
                })
                .flat_map(|r| expression_tokens(&r.rule.expr_text))
                .filter(|token| recorded.contains(token) && !needed.contains(token))
                .collect();
            if more.is_empty() {
                break;
            }
            needed.extend(more);
        }
        let per_rule = |f: &dyn Fn(&vigil_engine::alerting::RuleState) -> bool| {
            groups
                .iter()
                .map(|g| g.rules.iter().map(f).collect())
                .collect()
        };
        Dependencies {
            feeds_alerts: per_rule(&|r| {
                r.rule.kind == RuleKind::Recording && needed.contains(r.rule.name.as_str())
            }),
            reads_recording: per_rule(&|r| {
                r.rule.kind == RuleKind::Alerting
                    && expression_tokens(&r.rule.expr_text)
                        .iter()
                        .any(|token| recorded.contains(token))
            }),
        }
    }

    pub(super) fn get(table: &[Vec<bool>], group: usize, rule: usize) -> bool {
        table
            .get(group)
            .and_then(|g| g.get(rule))
            .copied()
            .unwrap_or(false)
    }
}

/// Storage plus the recording rules' output as of an ingest evaluation at `t` (not
/// written: only ticks write): a recorded series gets its value at `t`, or a
/// staleness marker at `t` where the rule no longer produces it.
pub(super) struct OverlaySource<'a> {
    pub(super) inner: &'a dyn vigil_queries::promql::SeriesSource,
    pub(super) at: i64,
    /// Recorded series → value at `at` (`None`: no longer produced).
    pub(super) overlay: &'a std::collections::HashMap<LabelSet, Option<f64>>,
}

impl vigil_queries::promql::SeriesSource for OverlaySource<'_> {
    fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<vigil_queries::promql::Series>, vigil_queries::promql::EvalError> {
        let mut series = self.inner.select(matchers, start, end)?;
        if self.overlay.is_empty() || self.at <= start || self.at > end {
            return Ok(series);
        }
        let point = |value: Option<f64>| vigil_queries::promql::Point {
            t: self.at,
            f: value.unwrap_or_else(vigil_storage::record::stale_marker),
        };
        let mut added = false;
        for (labels, value) in self.overlay {
            if !vigil_queries::promql::matches(matchers, labels) {
                continue;
            }
            match series.iter_mut().find(|s| &s.labels == labels) {
                Some(existing) => {
                    existing.points.retain(|p| p.t < self.at);
                    existing.points.push(point(*value));
                }
                None if value.is_some() => {
                    added = true;
                    series.push(vigil_queries::promql::Series {
                        labels: labels.clone(),
                        points: vec![point(*value)],
                        drop_name: false,
                    });
                }
                None => {}
            }
        }
        if added {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        Ok(series)
    }
}

//! Rule evaluation with Prometheus' semantics (`rules/alerting.go`, `rules/recording.go`):
//! recording rules produce series, alerting rules keep per-alert state
//! (pending → firing after `for`, `keep_firing_for`, resolved alerts kept 15 minutes)
//! and produce the `ALERTS` and `ALERTS_FOR_STATE` series.

use std::collections::{BTreeMap, HashMap, HashSet};

use vigil_queries::promql::{finalize, EvalError, Evaluator, SeriesSource, Value};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::LabelSet;

use crate::rules::{Group, Rule, RuleKind};
use crate::template::{expand, TemplateData};

/// Resolved alerts stay visible (and are re-sent) this long (`resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: LabelSet,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub keep_firing_since: Option<i64>,
}

/// A state change, for the alert stream and the notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub alert: Alert,
    pub from: AlertState,
    pub at: i64,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RuleEvalError {
    #[error("{0}")]
    Query(#[from] EvalError),
    #[error("vector contains metrics with the same labelset after applying rule labels")]
    DuplicateRuleLabels,
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateAlertLabels,
    #[error("exceeded limit of {0} with {1} series")]
    Limit(u64, usize),
    #[error("{0}")]
    Template(String),
    #[error("rule result is not a vector or scalar")]
    NotVector,
}

/// One rule with its evaluation state.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub rule: Rule,
    /// Active alerts by their label set (alerting rules only).
    pub active: HashMap<LabelSet, Alert>,
    pub last_error: Option<String>,
    pub last_evaluation: Option<i64>,
    pub evaluation_ms: f64,
    pub health: &'static str,
    /// The series this rule wrote at its last written evaluation (Prometheus'
    /// `seriesInPreviousEval`): the ones it does not write next time are marked stale.
    pub series_in_previous_eval: HashSet<LabelSet>,
}

/// What one evaluation produced: samples to append (recording output, `ALERTS`,
/// `ALERTS_FOR_STATE`) and alert transitions.
#[derive(Debug, Default)]
pub struct Output {
    pub samples: Vec<(LabelSet, i64, f64)>,
    pub transitions: Vec<Transition>,
}

/// The instant vector a rule's expression answers at `t` (a scalar becomes one sample
/// without labels, as Prometheus' rule query function does).
fn query(
    source: &dyn SeriesSource,
    rule: &Rule,
    t: i64,
    maintained: Option<Vec<(LabelSet, f64)>>,
) -> Result<Vec<(LabelSet, f64)>, RuleEvalError> {
    if let Some(vector) = maintained {
        return Ok(vector);
    }
    let evaluator = Evaluator::new(source, t, t);
    match evaluator.instant_query(&rule.expr, t)? {
        Value::Vector(samples) => Ok(finalize(samples)?
            .into_iter()
            .map(|sample| (sample.labels, sample.f))
            .collect()),
        Value::Scalar(f) => Ok(vec![(LabelSet::default(), f)]),
        _ => Err(RuleEvalError::NotVector),
    }
}

impl RuleState {
    pub fn new(rule: Rule) -> RuleState {
        RuleState {
            rule,
            active: HashMap::new(),
            last_error: None,
            last_evaluation: None,
            evaluation_ms: 0.0,
            health: "unknown",
            series_in_previous_eval: HashSet::new(),
        }
    }

    /// Records the series a successful evaluation wrote (`written`) and returns the
    /// ones the previous written evaluation had and this one has not: they get a
    /// staleness marker at this evaluation's time, as Prometheus' group does, so
    /// recording output and `ALERTS` (pending and firing are two series) end when the
    /// rule stops producing them.
    pub fn track_written(&mut self, written: &[(LabelSet, i64, f64)]) -> Vec<LabelSet> {
        let current: HashSet<LabelSet> = written.iter().map(|(l, _, _)| l.clone()).collect();
        let previous = std::mem::replace(&mut self.series_in_previous_eval, current);
        let mut stale: Vec<LabelSet> = previous
            .into_iter()
            .filter(|labels| !self.series_in_previous_eval.contains(labels))
            .collect();
        stale.sort();
        stale
    }

    /// Evaluates at `t` (the query runs at `t - query_offset`); appends to `out`. The
    /// expression's vector is `maintained` when the incremental engine already knows
    /// it; `None` queries `source`.
    pub fn eval_with(
        &mut self,
        source: &dyn SeriesSource,
        maintained: Option<Vec<(LabelSet, f64)>>,
        group: &Group,
        t: i64,
        external_labels: &BTreeMap<String, String>,
        out: &mut Output,
    ) -> Result<(), RuleEvalError> {
        let started = std::time::Instant::now();
        let written_before = out.samples.len();
        let result = match self.rule.kind {
            RuleKind::Recording => self.eval_recording(source, maintained, group, t, out),
            RuleKind::Alerting => {
                self.eval_alerting(source, maintained, group, t, external_labels, out)
            }
        };
        self.last_evaluation = Some(t);
        self.evaluation_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(()) => {
                self.health = "ok";
                self.last_error = None;
            }
            Err(err) => {
                // A failed evaluation writes nothing (and marks nothing stale).
                out.samples.truncate(written_before);
                self.health = "err";
                self.last_error = Some(err.to_string());
            }
        }
        result
    }

    /// What a recording rule would write at `t`, without touching its state (the rule
    /// manager's ingest evaluations: alerts that read a recording see it as of `t`).
    pub fn recording_output(
        &self,
        source: &dyn SeriesSource,
        maintained: Option<Vec<(LabelSet, f64)>>,
        group: &Group,
        t: i64,
    ) -> Result<Vec<(LabelSet, i64, f64)>, RuleEvalError> {
        let mut out = Output::default();
        self.eval_recording(source, maintained, group, t, &mut out)?;
        Ok(out.samples)
    }

    fn eval_recording(
        &self,
        source: &dyn SeriesSource,
        maintained: Option<Vec<(LabelSet, f64)>>,
        group: &Group,
        t: i64,
        out: &mut Output,
    ) -> Result<(), RuleEvalError> {
        let vector = query(source, &self.rule, t - group.query_offset_ms, maintained)?;
        let mut samples = Vec::with_capacity(vector.len());
        let mut seen = std::collections::HashSet::new();
        for (mut labels, value) in vector {
            labels.set(METRIC_NAME, &self.rule.name);
            for (name, value) in group.labels.iter().chain(&self.rule.labels) {
                labels.set(name, value);
            }
            if !seen.insert(labels.clone()) {
                return Err(RuleEvalError::DuplicateRuleLabels);
            }
            samples.push((labels, t, value));
        }
        if group.limit > 0 && samples.len() as u64 > group.limit {
            return Err(RuleEvalError::Limit(group.limit, samples.len()));
        }
        out.samples.extend(samples);
        Ok(())
    }

    fn eval_alerting(
        &mut self,
        source: &dyn SeriesSource,
        maintained: Option<Vec<(LabelSet, f64)>>,
        group: &Group,
        t: i64,
        external_labels: &BTreeMap<String, String>,
        out: &mut Output,
    ) -> Result<(), RuleEvalError> {
        let vector = query(source, &self.rule, t - group.query_offset_ms, maintained)?;
        let name = format!("__alert_{}", self.rule.name);
        let mut current: HashMap<LabelSet, (f64, BTreeMap<String, String>)> = HashMap::new();
        for (sample_labels, value) in vector {
            let mut sample_labels = sample_labels;
            sample_labels.set(METRIC_NAME, "");
            let data = TemplateData {
                labels: &sample_labels,
                value,
                external_labels,
            };
            let mut labels = sample_labels.clone();
            for (key, text) in group.labels.iter().chain(&self.rule.labels) {
                let rendered = expand(&name, text, &data)
                    .map_err(|e| RuleEvalError::Template(e.to_string()))?;
                labels.set(key, &rendered);
            }
            labels.set("alertname", &self.rule.name);
            let mut annotations = BTreeMap::new();
            for (key, text) in &self.rule.annotations {
                // Prometheus logs a template error and keeps the error text.
                let rendered = expand(&name, text, &data)
                    .unwrap_or_else(|e| format!("<error expanding template: {e}>"));
                annotations.insert(key.clone(), rendered);
            }
            if current.insert(labels, (value, annotations)).is_some() {
                return Err(RuleEvalError::DuplicateAlertLabels);
            }
        }
        // Alerts that are no longer in the result.
        let mut gone = Vec::new();
        for (labels, alert) in self.active.iter_mut() {
            if current.contains_key(labels) {
                continue;
            }
            match alert.state {
                AlertState::Pending => gone.push(labels.clone()),
                AlertState::Firing => {
                    let since = *alert.keep_firing_since.get_or_insert(t);
                    let keep = self.rule.keep_firing_for_ms > 0
                        && t - since < self.rule.keep_firing_for_ms;
                    if !keep {
                        let from = alert.state;
                        alert.state = AlertState::Inactive;
                        alert.resolved_at = Some(t);
                        out.transitions.push(Transition {
                            alert: alert.clone(),
                            from,
                            at: t,
                        });
                    }
                }
                AlertState::Inactive => {
                    if alert
                        .resolved_at
                        .is_some_and(|resolved| t - resolved > RESOLVED_RETENTION_MS)
                    {
                        gone.push(labels.clone());
                    }
                }
            }
        }
        for labels in gone {
            self.active.remove(&labels);
        }
        // Alerts in the result: new ones start pending.
        for (labels, (value, annotations)) in current {
            match self.active.get_mut(&labels) {
                Some(alert) if alert.state != AlertState::Inactive => {
                    alert.value = value;
                    alert.annotations = annotations;
                    alert.keep_firing_since = None;
                }
                _ => {
                    let alert = Alert {
                        labels: labels.clone(),
                        annotations,
                        state: AlertState::Pending,
                        value,
                        active_at: t,
                        fired_at: None,
                        resolved_at: None,
                        keep_firing_since: None,
                    };
                    out.transitions.push(Transition {
                        alert: alert.clone(),
                        from: AlertState::Inactive,
                        at: t,
                    });
                    self.active.insert(labels, alert);
                }
            }
        }
        let mut firing_or_pending = 0;
        for alert in self.active.values_mut() {
            if alert.state == AlertState::Pending && t - alert.active_at >= self.rule.for_ms {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(t);
                out.transitions.push(Transition {
                    alert: alert.clone(),
                    from: AlertState::Pending,
                    at: t,
                });
            }
            if alert.state != AlertState::Inactive {
                // A `for` shortened or lengthened by a reload can move a firing
                // alert back to pending, as in Prometheus.
                if alert.state == AlertState::Firing && t - alert.active_at < self.rule.for_ms {
                    alert.state = AlertState::Pending;
                    alert.fired_at = None;
                    alert.keep_firing_since = None;
                }
                firing_or_pending += 1;
                let mut series = alert.labels.clone();
                series.set(METRIC_NAME, "ALERTS");
                series.set("alertstate", alert.state.as_str());
                out.samples.push((series, t, 1.0));
                let mut for_state = alert.labels.clone();
                for_state.set(METRIC_NAME, "ALERTS_FOR_STATE");
                // Seconds with the milliseconds kept (Prometheus truncates to whole
                // seconds; Vigil's activeAt is an event time a restart must restore).
                out.samples
                    .push((for_state, t, alert.active_at as f64 / 1000.0));
            }
        }
        if group.limit > 0 && firing_or_pending as u64 > group.limit {
            // Prometheus drops all alerts of the rule when the limit is exceeded.
            self.active.clear();
            return Err(RuleEvalError::Limit(group.limit, firing_or_pending));
        }
        Ok(())
    }

    /// The earliest instant after `after` at which an alert changes state by time
    /// alone: a pending alert's `activeAt + for`, or the end of a firing alert's
    /// `keep_firing_for`. Evaluating then makes the transition happen exactly then.
    pub fn next_deadline(&self, after: i64) -> Option<i64> {
        self.active
            .values()
            .filter_map(|alert| match alert.state {
                AlertState::Pending => Some(alert.active_at + self.rule.for_ms),
                AlertState::Firing => alert
                    .keep_firing_since
                    .map(|since| since + self.rule.keep_firing_for_ms),
                AlertState::Inactive => None,
            })
            .filter(|&deadline| deadline > after)
            .min()
    }

    /// Active alerts sorted by labels.
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut alerts: Vec<&Alert> = self.active.values().collect();
        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
        alerts
    }
}

/// A group with its rules' state.
#[derive(Debug, Clone)]
pub struct GroupState {
    pub group: Group,
    pub rules: Vec<RuleState>,
    pub last_evaluation: Option<i64>,
    pub evaluation_ms: f64,
    /// Series of rules a reload removed from this group: marked stale at the group's
    /// next evaluation (Prometheus' `staleSeries`).
    pub stale_series: Vec<LabelSet>,
}

impl GroupState {
    pub fn new(group: Group) -> GroupState {
        let rules = group.rules.iter().cloned().map(RuleState::new).collect();
        GroupState {
            group,
            rules,
            last_evaluation: None,
            evaluation_ms: 0.0,
            stale_series: Vec::new(),
        }
    }

    /// Takes over the state of the group a reload replaces, as Prometheus'
    /// `CopyState`: rules are matched by name and labels (in order, for duplicates)
    /// and keep their alerts and the series they wrote; the series of old rules
    /// without a match are marked stale at this group's next evaluation.
    pub fn copy_state(&mut self, from: &mut GroupState) {
        self.last_evaluation = from.last_evaluation;
        self.evaluation_ms = from.evaluation_ms;
        let mut taken = vec![false; from.rules.len()];
        for rule in &mut self.rules {
            let Some(index) = from.rules.iter().enumerate().position(|(i, old)| {
                !taken[i] && old.rule.name == rule.rule.name && old.rule.labels == rule.rule.labels
            }) else {
                continue;
            };
            taken[index] = true;
            let old = &mut from.rules[index];
            rule.series_in_previous_eval = std::mem::take(&mut old.series_in_previous_eval);
            if rule.rule.kind == RuleKind::Alerting && old.rule.kind == RuleKind::Alerting {
                rule.active = std::mem::take(&mut old.active);
            }
            rule.last_evaluation = old.last_evaluation;
            rule.health = old.health;
            rule.last_error = old.last_error.take();
        }
        self.stale_series = std::mem::take(&mut from.stale_series);
        for (index, old) in from.rules.iter_mut().enumerate() {
            if !taken[index] {
                self.stale_series
                    .extend(std::mem::take(&mut old.series_in_previous_eval));
            }
        }
    }

    /// Every series this group's rules wrote at their last evaluation, and the ones
    /// still waiting for their staleness marker.
    pub fn written_series(&mut self) -> Vec<LabelSet> {
        let mut all: Vec<LabelSet> = self.stale_series.drain(..).collect();
        for rule in &mut self.rules {
            all.extend(rule.series_in_previous_eval.drain());
        }
        all
    }
}

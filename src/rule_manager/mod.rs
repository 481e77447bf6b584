//! The rule manager: evaluates the configured rule groups and publishes alerts.
//!
//! Three triggers, all with instant-query semantics:
//! - **ticks** at multiples of each group's interval, exactly as Prometheus
//!   schedules them (respecting `query_offset`), closed when the watermark passes them;
//!   only tick evaluations write recording rule output and `ALERTS`/`ALERTS_FOR_STATE`
//!   back into storage, so those series have Prometheus' timestamps;
//! - **ingest**: after every durable append, the alerting rules are evaluated at the
//!   ingest watermark (the latest event time acknowledged), so an alert turns pending
//!   within milliseconds of the sample that makes its condition true. The recording
//!   rules that alerting rules read are computed at that instant too (not written), and
//!   those alerts read them over storage (`OverlaySource`), as Prometheus' sequential
//!   group evaluation would;
//! - **alert deadlines**: `for` and `keep_firing_for` are measured in event time, and
//!   the alerting rules are also evaluated at each deadline (`activeAt + for`, the end of
//!   `keep_firing_for`) as soon as the watermark passes it — by ingest, or by the wall
//!   clock once inputs are idle — so an alert fires (or resolves) at exactly that
//!   instant, not at the next ingest or tick.
//!
//! Rule output goes stale as in Prometheus: a series a rule wrote at its previous tick
//! and not at this one gets a staleness marker; a reload hands alerts and written series
//! over by group, name and labels and marks the rest stale.
//!
//! Evaluation times never go backwards. Transitions change the alerts hub (the
//! subscribable `ALERTS` result, which `/api/v1/alerts/stream` renders) and go to the
//! configured Alertmanagers (`POST /api/v2/alerts`), which
//! also get every firing and recently resolved alert again each minute, as Prometheus
//! resends them.
//!
//! Rules whose expression compiles to a dataflow plan (`incremental: true` on
//! `/api/v1/rules`, reported by `vigil rules check`) are maintained by the rules'
//! program on the shared dataflow service (`vigil_engine::incremental::maintained`,
//! installed on the same workers as the continuous queries; compiled and seeded from
//! storage there): every durable append reaches it through the storage tap, and an evaluation at `t` closes one epoch of the dataflow and reads the
//! maintained vectors instead of querying storage. The rest, and any instant where a
//! maintained vector is in error, are evaluated ad hoc. A recording rule's output is
//! written before the next rule of the group reads the engine, which then closes
//! another epoch at the same `t`, so dependent rules see it as Prometheus' sequential
//! group evaluation does.
//!
//! This file holds `RuleManager`: loading and reloads, the scheduler (`run`), evaluation
//! (asking the maintained program, or ad hoc), restoring alert state, publishing the
//! alert rows. The rest:
//! - `notifier.rs`: the Alertmanagers (sends on transitions, the minute re-sends);
//! - `api.rs`: the JSON of `/api/v1/rules`, `/api/v1/alerts`, and the alert stream's
//!   messages from the alerts hub's;
//! - `dependencies.rs`: which rules read which recordings, and the storage view
//!   (`OverlaySource`) ingest evaluations read them through;
//! - `files.rs`: loading rule files (`load_rule_files`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value as JsonValue;
use tracing::{debug, warn};
use vigil_engine::alerting::{Alert, AlertState, GroupState, Transition};
use vigil_engine::continuous::row::{Datum, Row};
use vigil_engine::continuous::{ContinuousQueries, Hub, CONTINUOUS_FILE};
use vigil_engine::incremental::maintained::{Built, Fallbacks, MaintainedRules, MaintainedStats};
use vigil_engine::rules::{Group, RuleKind};
use vigil_queries::promql::StorageSource;
use vigil_storage::{AppendMode, LabelSet, SampleBatch, Storage};

mod api;
mod dependencies;
mod files;
mod notifier;

use dependencies::{Dependencies, OverlaySource};
pub use files::load_rule_files;
use notifier::Notifier;

/// The columns of the alerts hub (`ALERTS` subscriptions and `/api/v1/alerts/stream`):
/// one row per pending or firing alert, as of its latest transition.
const ALERT_COLUMNS: [&str; 6] = [
    "labels",
    "state",
    "active_at",
    "fired_at",
    "value",
    "annotations",
];

/// The state evaluations work on: the loaded groups with their alert state, the rules'
/// maintained program and why the others run ad hoc, which rules read which recordings,
/// and the series of removed groups waiting for their staleness markers. One lock:
/// evaluations (one at a time: ticks, ingest, deadlines), reloads and the API take it in
/// turn, never together with another lock but `last_eval` (taken and released first).
struct Rules {
    groups: Vec<GroupState>,
    maintained: Option<MaintainedRules>,
    fallbacks: Fallbacks,
    dependencies: Dependencies,
    /// Why the program could not be seeded from storage (rules then run ad hoc, report
    /// `health: err`, and seeding is retried at every tick).
    seed_error: Option<String>,
    orphans: Vec<LabelSet>,
}

/// The loaded rule groups and their alert state: evaluated at group ticks (writing
/// output), at every ingest and at each alert deadline (alerting rules only; see the
/// module doc), with the transitions published to the stream and the Alertmanagers.
pub struct RuleManager {
    /// Everything evaluations read and change, under one lock.
    rules: Mutex<Rules>,
    /// The dataflow workers the rules' program is installed on (shared with the
    /// continuous queries).
    dataflows: vigil_engine::service::Service,
    lateness_ms: i64,
    /// Samples that arrived behind the last evaluation minus the allowed lateness.
    /// Late samples and the last epoch's duration (kept by the maintained rules).
    maintained_stats: Arc<MaintainedStats>,
    /// Evaluations answered by the engine / ad hoc (for `/metrics`).
    incremental_evaluations: AtomicU64,
    ad_hoc_evaluations: AtomicU64,
    storage: Arc<Storage>,
    external_labels: BTreeMap<String, String>,
    default_interval_ms: i64,
    /// The latest evaluation time; evaluations never go back in time.
    last_eval: Mutex<i64>,
    /// The Alertmanagers alerts are sent to.
    notifier: Notifier,
    /// Where the rules come from, for reloads: file globs and built-in groups.
    patterns: Vec<String>,
    builtin: Vec<Group>,
    /// The groups of PromQL continuous queries (`set_continuous_groups`).
    continuous: Mutex<Vec<Group>>,
    /// Where those groups' output goes at each tick (besides storage).
    continuous_sink: std::sync::OnceLock<std::sync::Weak<ContinuousQueries>>,
    /// The pending and firing alerts as a subscribable result (`/api/v1/subscribe?name=ALERTS`).
    alerts_hub: Arc<Hub>,
}

impl vigil_engine::continuous::RuleHost for RuleManager {
    fn alerts(&self) -> Arc<Hub> {
        self.alerts_hub.clone()
    }

    fn set_continuous_groups(&self, groups: Vec<Group>) -> Result<(), String> {
        let previous = std::mem::replace(&mut *self.continuous.lock(), groups);
        if let Err(err) = self.reload() {
            *self.continuous.lock() = previous;
            return Err(format!("{err:#}"));
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl RuleManager {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        storage: Arc<Storage>,
        patterns: Vec<String>,
        builtin: Vec<Group>,
        default_interval: Duration,
        external_labels: BTreeMap<String, String>,
        alertmanagers: Vec<String>,
        external_url: String,
        dataflows: vigil_engine::service::Service,
        lateness: Duration,
    ) -> anyhow::Result<Arc<RuleManager>> {
        let mut groups = load_rule_files(&patterns)?;
        groups.extend(builtin.iter().cloned());
        let alerts_hub = Arc::new(Hub::open(
            ALERT_COLUMNS.iter().map(|c| c.to_string()).collect(),
            &storage.config().data_dir.join("alerts-stream"),
        )?);
        let notifier = Notifier::new(alertmanagers, external_url, external_labels.clone())?;
        let manager = Arc::new(RuleManager {
            rules: Mutex::new(Rules {
                groups: groups.into_iter().map(GroupState::new).collect(),
                maintained: None,
                fallbacks: Vec::new(),
                dependencies: Dependencies::default(),
                seed_error: None,
                orphans: Vec::new(),
            }),
            dataflows,
            lateness_ms: lateness.as_millis() as i64,
            maintained_stats: Arc::default(),
            incremental_evaluations: AtomicU64::new(0),
            ad_hoc_evaluations: AtomicU64::new(0),
            storage,
            external_labels,
            default_interval_ms: (default_interval.as_millis() as i64).max(1),
            last_eval: Mutex::new(i64::MIN),
            notifier,
            patterns,
            builtin,
            continuous: Mutex::new(Vec::new()),
            continuous_sink: std::sync::OnceLock::new(),
            alerts_hub,
        });
        let restoring = manager.clone();
        tokio::task::spawn_blocking(move || {
            restoring.restore_for_state();
            // Subscribers resuming after the restart get what changed while it was down.
            let at = (*restoring.last_eval.lock()).max(restoring.alerts_hub.position().1);
            restoring.publish_alert_rows(at, &std::collections::HashSet::new());
            let groups: Vec<GroupState> = restoring.rules.lock().groups.clone();
            let dependencies = Dependencies::of(&groups);
            let (maintained, fallbacks, seed_error) =
                restoring.build_incremental(&groups, &dependencies);
            let mut rules = restoring.rules.lock();
            rules.maintained = maintained;
            rules.fallbacks = fallbacks;
            rules.dependencies = dependencies;
            rules.seed_error = seed_error;
        })
        .await?;
        Ok(manager)
    }

    /// The rules' program on the dataflow service (compiled, seeded from storage,
    /// installed), why each rule that is not maintained runs ad hoc, and why the seed
    /// could not be read, if it could not (the rules report it, and ticks retry). Takes
    /// no lock but `last_eval`. Runs on a blocking thread.
    fn build_incremental(
        &self,
        groups: &[GroupState],
        dependencies: &Dependencies,
    ) -> (Option<MaintainedRules>, Fallbacks, Option<String>) {
        let group_refs: Vec<&Group> = groups.iter().map(|state| &state.group).collect();
        let last = *self.last_eval.lock();
        let lateness_ms = self.lateness_ms;
        let Built {
            rules,
            fallbacks,
            seed_error,
        } = MaintainedRules::build(
            &self.dataflows,
            &self.storage,
            &group_refs,
            |group_index, rule_index| {
                groups
                    .get(group_index)
                    .and_then(|state| state.rules.get(rule_index))
                    .is_some_and(|rule| rule.rule.kind == RuleKind::Alerting)
                    || Dependencies::get(&dependencies.feeds_alerts, group_index, rule_index)
            },
            |max_window| {
                let from = if last == i64::MIN {
                    now_ms()
                } else {
                    last.min(now_ms())
                };
                from - lateness_ms - max_window - 60_000
            },
            self.maintained_stats.clone(),
        );
        if let Some(reason) = &seed_error {
            warn!(error = %reason, "evaluating rules ad hoc until the seed can be read");
        }
        (rules, fallbacks, seed_error)
    }

    /// The rule engine's metrics for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let (incremental, ad_hoc, epoch_us) = self.evaluation_counts();
        format!(
            "# HELP vigil_rule_late_samples_total Samples that arrived behind the rule evaluation watermark minus the allowed lateness (stored and queryable; alert transitions already sent are not revised).\n\
             # TYPE vigil_rule_late_samples_total counter\nvigil_rule_late_samples_total {}\n\
             # HELP vigil_rule_evaluations_total Rule evaluations, by how the expression was answered.\n\
             # TYPE vigil_rule_evaluations_total counter\n\
             vigil_rule_evaluations_total{{mode=\"incremental\"}} {incremental}\n\
             vigil_rule_evaluations_total{{mode=\"ad_hoc\"}} {ad_hoc}\n\
             # HELP vigil_rule_dataflow_epoch_seconds Duration of the last dataflow epoch (feed, step, read).\n\
             # TYPE vigil_rule_dataflow_epoch_seconds gauge\nvigil_rule_dataflow_epoch_seconds {}\n",
            self.late_samples(),
            epoch_us as f64 / 1e6,
        )
    }

    /// Samples that arrived behind the evaluation watermark minus the allowed lateness.
    fn late_samples(&self) -> u64 {
        self.maintained_stats.late_samples.load(Ordering::Relaxed)
    }

    /// (evaluations answered by the dataflow, evaluations run ad hoc, last epoch µs).
    fn evaluation_counts(&self) -> (u64, u64, i64) {
        (
            self.incremental_evaluations.load(Ordering::Relaxed),
            self.ad_hoc_evaluations.load(Ordering::Relaxed),
            self.maintained_stats.last_epoch_us.load(Ordering::Relaxed),
        )
    }

    /// Sends the output of continuous PromQL groups to `sink` at each tick.
    pub fn set_continuous_sink(&self, sink: &Arc<ContinuousQueries>) {
        let _ = self.continuous_sink.set(Arc::downgrade(sink));
    }

    pub fn group_count(&self) -> usize {
        self.rules.lock().groups.len()
    }

    /// Re-reads the rule files (`POST /-/reload`, SIGHUP). As in Prometheus, a rule
    /// that keeps its group (file and name), name and labels keeps its alerts and the
    /// series it wrote; the series of removed rules and groups are marked stale at the
    /// next evaluation. A file that fails to load leaves the running rules untouched.
    /// Runs on a blocking thread (the new dataflow is seeded from storage).
    pub fn reload(&self) -> anyhow::Result<usize> {
        let mut loaded = load_rule_files(&self.patterns)?;
        loaded.extend(self.builtin.iter().cloned());
        loaded.extend(self.continuous.lock().iter().cloned());
        let fresh_states: Vec<GroupState> = loaded.iter().cloned().map(GroupState::new).collect();
        let fresh_dependencies = Dependencies::of(&fresh_states);
        let (fresh_maintained, fresh_fallbacks, seed_error) =
            self.build_incremental(&fresh_states, &fresh_dependencies);
        let mut rules = self.rules.lock();
        let mut old: Vec<GroupState> = std::mem::take(&mut rules.groups);
        let mut fresh = Vec::with_capacity(loaded.len());
        for group in loaded {
            let mut state = GroupState::new(group);
            if let Some(index) = old
                .iter()
                .position(|g| g.group.name == state.group.name && g.group.file == state.group.file)
            {
                let mut previous = old.swap_remove(index);
                state.copy_state(&mut previous);
            }
            fresh.push(state);
        }
        // Groups the reload removed: their series are marked stale at the next tick.
        for removed in &mut old {
            let written = removed.written_series();
            rules.orphans.extend(written);
        }
        old.clear();
        rules.groups = fresh;
        rules.dependencies = fresh_dependencies;
        rules.maintained = fresh_maintained;
        rules.fallbacks = fresh_fallbacks;
        rules.seed_error = seed_error;
        Ok(rules.groups.len())
    }

    /// Restores the alerts that were pending or firing before a restart: `activeAt`
    /// from the latest `ALERTS_FOR_STATE` samples (within the lookback), as Prometheus
    /// does, and, beyond Prometheus, the state from `ALERTS` (a firing alert stays
    /// firing, with `startsAt` = `activeAt + for`, the instant Vigil fired it) and the
    /// value and annotations from the rule evaluated at the last written evaluation.
    /// Restoring emits no transition. Runs on a blocking thread (it reads storage).
    fn restore_for_state(&self) {
        let now = now_ms();
        let mut last_written = i64::MIN;
        let source = StorageSource {
            storage: &self.storage,
        };
        let select = |name: &str, alertname: &str| {
            let matchers = vec![
                promql_parser::label::Matcher::new(
                    promql_parser::label::MatchOp::Equal,
                    "__name__",
                    name,
                ),
                promql_parser::label::Matcher::new(
                    promql_parser::label::MatchOp::Equal,
                    "alertname",
                    alertname,
                ),
            ];
            vigil_queries::promql::SeriesSource::select(
                &source,
                &matchers,
                now - vigil_queries::promql::DEFAULT_LOOKBACK_MS,
                now,
            )
        };
        let mut rules = self.rules.lock();
        for state in rules.groups.iter_mut() {
            let group = state.group.clone();
            for rule in state.rules.iter_mut() {
                if rule.rule.kind != RuleKind::Alerting {
                    continue;
                }
                let (for_state, alerts) = match (
                    select("ALERTS_FOR_STATE", &rule.rule.name),
                    select("ALERTS", &rule.rule.name),
                ) {
                    (Ok(for_state), Ok(alerts)) => (for_state, alerts),
                    (Err(err), _) | (_, Err(err)) => {
                        warn!(rule = %rule.rule.name, error = %err, "cannot restore alert state");
                        continue;
                    }
                };
                // The alerts whose last `ALERTS` sample says firing, and when.
                let mut firing = std::collections::HashMap::new();
                for s in &alerts {
                    let Some(last) = s.points.last() else {
                        continue;
                    };
                    if vigil_storage::record::is_stale_marker(last.f)
                        || s.labels.get("alertstate") != Some("firing")
                    {
                        continue;
                    }
                    let mut labels = s.labels.clone();
                    labels.set("__name__", "");
                    labels.set("alertstate", "");
                    firing.insert(labels, last.t);
                }
                let mut restored_at = i64::MIN;
                for s in for_state {
                    let Some(last) = s.points.last() else {
                        continue;
                    };
                    if vigil_storage::record::is_stale_marker(last.f) {
                        continue;
                    }
                    last_written = last_written.max(last.t);
                    restored_at = restored_at.max(last.t);
                    let mut labels = s.labels.clone();
                    labels.set("__name__", "");
                    let active_at = (last.f * 1000.0).round() as i64;
                    let is_firing = firing.get(&labels) == Some(&last.t);
                    let mut written = labels.clone();
                    written.set("__name__", "ALERTS_FOR_STATE");
                    rule.series_in_previous_eval.insert(written.clone());
                    written.set("__name__", "ALERTS");
                    written.set("alertstate", if is_firing { "firing" } else { "pending" });
                    rule.series_in_previous_eval.insert(written);
                    rule.active.insert(
                        labels.clone(),
                        Alert {
                            labels,
                            annotations: BTreeMap::new(),
                            state: if is_firing {
                                AlertState::Firing
                            } else {
                                AlertState::Pending
                            },
                            value: f64::NAN,
                            active_at,
                            fired_at: is_firing.then_some(active_at + rule.rule.for_ms),
                            resolved_at: None,
                            keep_firing_since: None,
                        },
                    );
                }
                if rule.active.is_empty() {
                    continue;
                }
                // Value and annotations as the last evaluation before the restart saw
                // them (a probe evaluation whose transitions are dropped).
                let mut probe = rule.clone();
                let mut out = vigil_engine::alerting::Output::default();
                if probe
                    .eval_with(
                        &source,
                        None,
                        &group,
                        restored_at,
                        &self.external_labels,
                        &mut out,
                    )
                    .is_ok()
                {
                    for (labels, alert) in rule.active.iter_mut() {
                        if let Some(seen) = probe.active.get(labels) {
                            alert.value = seen.value;
                            alert.annotations = seen.annotations.clone();
                        }
                    }
                }
            }
        }
        // Evaluation resumes after the last evaluation that wrote state, never before
        // (nor after the wall clock).
        let mut last = self.last_eval.lock();
        *last = (*last).max(last_written.min(now));
    }

    /// The pending and firing alerts as a subscribable result.
    pub fn alerts_hub(&self) -> &Arc<Hub> {
        &self.alerts_hub
    }

    /// The alert stream's messages for one message of the alerts hub.
    pub fn stream_messages(
        &self,
        message: &vigil_engine::continuous::Message,
    ) -> Vec<(LabelSet, JsonValue)> {
        api::stream_messages(message, self.notifier.generator_url())
    }

    fn group_interval(&self, group: &Group) -> i64 {
        if group.interval_ms > 0 {
            group.interval_ms
        } else {
            self.default_interval_ms
        }
    }

    /// Runs until `shutdown` resolves: ticks, ingest-triggered evaluations, resends.
    ///
    /// Time is the watermark: the latest event time ingested while data flows, and
    /// wall-clock time minus `lateness` once inputs have been idle for `lateness`. A
    /// tick at `T` closes when the watermark passes it (ticks are caught up in order,
    /// so a backfill is evaluated in event time); an ingest is evaluated at the event
    /// watermark right after the ticks before it.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let lateness = Duration::from_millis(self.lateness_ms.max(0) as u64);
        let mut appends = self.storage.watch_appends();
        let tick_ms = {
            let rules = self.rules.lock();
            rules
                .groups
                .iter()
                .map(|g| self.group_interval(&g.group))
                .min()
                .unwrap_or(self.default_interval_ms)
        };
        let lateness_ms = lateness.as_millis() as i64;
        let mut event_watermark = i64::MIN;
        let mut next_tick: Option<i64> = None;
        let mut last_append: Option<std::time::Instant> = None;
        loop {
            // Appends that happened while the last evaluations ran count now: idleness
            // is measured from the latest append, not from when this loop noticed it
            // (a long catch-up must not make a backfill look idle and jump ahead).
            if appends.has_changed().unwrap_or(false) {
                let (_, latest) = *appends.borrow_and_update();
                observe_append(
                    latest,
                    tick_ms,
                    &mut event_watermark,
                    &mut next_tick,
                    &mut last_append,
                );
            }
            let idle = last_append.is_none_or(|at| at.elapsed() >= lateness);
            let watermark = if idle {
                event_watermark.max(now_ms() - lateness_ms)
            } else {
                event_watermark
            };
            let mut tick = *next_tick.get_or_insert((watermark / tick_ms + 1) * tick_ms);
            while tick <= watermark {
                self.clone().evaluate_deadlines(tick - 1).await;
                let manager = self.clone();
                let _ = tokio::task::spawn_blocking(move || manager.evaluate(tick, true)).await;
                self.notifier.resend(&self.rules.lock().groups, tick);
                tick += tick_ms;
            }
            next_tick = Some(tick);
            self.clone().evaluate_deadlines(watermark).await;
            if event_watermark > *self.last_eval.lock() {
                let manager = self.clone();
                let at = event_watermark;
                let _ = tokio::task::spawn_blocking(move || manager.evaluate(at, false)).await;
            }
            // Wake for the wall-clock bound: when the next tick or alert deadline is due
            // by the clock and the inputs have gone idle.
            let due = self
                .next_deadline()
                .map_or(tick, |deadline| deadline.min(tick));
            let until_due = (due + lateness_ms - now_ms()).max(0) as u64;
            let until_idle = last_append.map_or(0, |at| {
                lateness.saturating_sub(at.elapsed()).as_millis() as u64
            });
            let wait = Duration::from_millis(until_due.max(until_idle).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = appends.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let (_, latest) = *appends.borrow_and_update();
                    observe_append(
                        latest,
                        tick_ms,
                        &mut event_watermark,
                        &mut next_tick,
                        &mut last_append,
                    );
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The earliest alert deadline (`activeAt + for`, end of `keep_firing_for`) after
    /// the last evaluation.
    fn next_deadline(&self) -> Option<i64> {
        let after = *self.last_eval.lock();
        let rules = self.rules.lock();
        rules
            .groups
            .iter()
            .flat_map(|group| group.rules.iter())
            .filter_map(|rule| rule.next_deadline(after))
            .min()
    }

    /// Evaluates the alerting rules at every alert deadline up to `until`, in order, so
    /// `for` and `keep_firing_for` take effect at the exact instant they elapse (in
    /// event time) rather than at the next evaluation.
    async fn evaluate_deadlines(self: Arc<Self>, until: i64) {
        while let Some(deadline) = self.next_deadline().filter(|&deadline| deadline <= until) {
            let manager = self.clone();
            let evaluated =
                tokio::task::spawn_blocking(move || manager.evaluate(deadline, false)).await;
            if evaluated.is_err() || *self.last_eval.lock() < deadline {
                return;
            }
        }
    }

    /// Evaluates at `t`: every due group on a tick (writing its output), or every
    /// alerting rule at an ingest watermark (state and transitions only).
    pub fn evaluate(&self, t: i64, tick: bool) {
        let previous = {
            // Never back in time; a tick may share its time with an ingest evaluation.
            let mut last = self.last_eval.lock();
            if t < *last || (!tick && t == *last) {
                return;
            }
            std::mem::replace(&mut *last, t)
        };
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle,
            Err(_) => return,
        };
        let source = StorageSource {
            storage: &self.storage,
        };
        let mut transitions: Vec<Transition> = Vec::new();
        let retry = {
            let rules = self.rules.lock();
            (tick && rules.seed_error.is_some())
                .then(|| (rules.groups.clone(), rules.dependencies.clone()))
        };
        if let Some((snapshot, dependencies)) = retry {
            let (rebuilt, fallbacks, seed_error) = self.build_incremental(&snapshot, &dependencies);
            let mut rules = self.rules.lock();
            rules.maintained = rebuilt;
            rules.fallbacks = fallbacks;
            rules.seed_error = seed_error;
        }
        let mut rules = self.rules.lock();
        let Rules {
            groups,
            maintained: incremental,
            fallbacks,
            dependencies,
            seed_error,
            orphans,
        } = &mut *rules;
        if let Some(incremental) = incremental.as_mut() {
            incremental.mark_behind();
        }
        let horizon = previous.saturating_sub(self.lateness_ms);
        // Between ticks, the recordings alerting rules read, as of `t` (not written).
        let mut overlay: std::collections::HashMap<LabelSet, Option<f64>> =
            std::collections::HashMap::new();
        for (group_index, state) in groups.iter_mut().enumerate() {
            let interval = self.group_interval(&state.group);
            if tick && t % interval != 0 {
                continue;
            }
            let group = state.group.clone();
            for (rule_index, rule) in state.rules.iter_mut().enumerate() {
                let feeds_alerts =
                    Dependencies::get(&dependencies.feeds_alerts, group_index, rule_index);
                if !tick && rule.rule.kind == RuleKind::Recording && !feeds_alerts {
                    continue;
                }
                // An alert reading a recording between ticks reads it as of `t`, as
                // Prometheus' sequential group evaluation would: evaluated ad hoc over
                // storage plus the recordings' current output.
                let through_overlay = !tick
                    && !overlay.is_empty()
                    && Dependencies::get(&dependencies.reads_recording, group_index, rule_index);
                let source = OverlaySource {
                    inner: &source,
                    at: t,
                    overlay: &overlay,
                };
                let maintained = if through_overlay {
                    None
                } else {
                    incremental.as_mut().and_then(|incremental| {
                        incremental.answer(group_index, rule_index, t, tick, horizon)
                    })
                };
                let counter = if maintained.is_some() {
                    &self.incremental_evaluations
                } else {
                    &self.ad_hoc_evaluations
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if !tick && rule.rule.kind == RuleKind::Recording {
                    // Between ticks: what the recording would write now, for the
                    // alerts that read it (its stopped series as stale).
                    if let Ok(samples) = rule.recording_output(&source, maintained, &group, t) {
                        let produced: std::collections::HashSet<&LabelSet> =
                            samples.iter().map(|(labels, _, _)| labels).collect();
                        let ended: Vec<LabelSet> = rule
                            .series_in_previous_eval
                            .iter()
                            .filter(|labels| !produced.contains(labels))
                            .cloned()
                            .collect();
                        for labels in ended {
                            overlay.insert(labels, None);
                        }
                        for (labels, _, value) in samples {
                            overlay.insert(labels, Some(value));
                        }
                    }
                    continue;
                }
                let mut out = vigil_engine::alerting::Output::default();
                let stale = match rule.eval_with(
                    &source,
                    maintained,
                    &group,
                    t,
                    &self.external_labels,
                    &mut out,
                ) {
                    Ok(()) if tick => rule.track_written(&out.samples),
                    Ok(()) => Vec::new(),
                    Err(err) => {
                        warn!(group = %group.name, rule = %rule.rule.name, error = %err, "rule evaluation failed");
                        Vec::new()
                    }
                };
                if let Some(reason) = &seed_error {
                    let unseeded = fallbacks
                        .get(group_index)
                        .and_then(|g| g.get(rule_index))
                        .is_some_and(|f| f.as_ref() == Some(reason));
                    if unseeded {
                        rule.health = "err";
                        rule.last_error = Some(reason.clone());
                    }
                }
                transitions.extend(out.transitions);
                if tick && group.file == CONTINUOUS_FILE {
                    if let Some(sink) = self.continuous_sink.get().and_then(|w| w.upgrade()) {
                        let vector: Vec<(LabelSet, f64)> = out
                            .samples
                            .iter()
                            .map(|(labels, _, value)| (labels.clone(), *value))
                            .collect();
                        sink.promql_output(&group.name, t, &vector);
                    }
                }
                // Written before the next rule runs, so it sees this output.
                if tick && self.write_output(&runtime, out.samples, stale, t) {
                    if let Some(incremental) = incremental.as_mut() {
                        incremental.mark_behind();
                    }
                }
            }
            if tick {
                state.last_evaluation = Some(t);
                // Series of rules a reload removed from this group.
                let removed = std::mem::take(&mut state.stale_series);
                if self.write_output(&runtime, Vec::new(), removed, t) {
                    if let Some(incremental) = incremental.as_mut() {
                        incremental.mark_behind();
                    }
                }
            }
        }
        if tick {
            // Series of groups a reload removed, unless a rule writes them now.
            let orphans: Vec<LabelSet> = std::mem::take(orphans)
                .into_iter()
                .filter(|labels| {
                    !groups
                        .iter()
                        .flat_map(|g| &g.rules)
                        .any(|r| r.series_in_previous_eval.contains(labels))
                })
                .collect();
            self.write_output(&runtime, Vec::new(), orphans, t);
        }
        if let Some(incremental) = incremental.as_mut() {
            // Keep the tap drained even when no incremental rule was due.
            incremental.feed(horizon);
        }
        drop(rules);
        if !transitions.is_empty() {
            let changed = transitions
                .iter()
                .map(|transition| transition.alert.labels.clone())
                .collect();
            self.publish_alert_rows(t, &changed);
        }
        for transition in transitions {
            self.publish(&transition);
        }
    }

    /// The pending and firing alerts as rows of the alerts hub, published as the changes
    /// since the last time (after transitions, and once restored after a restart). An
    /// alert keeps its row (value and annotations as of its latest transition) unless
    /// it is in `changed`, so a batch holds exactly the transitions.
    fn publish_alert_rows(&self, t: i64, changed: &std::collections::HashSet<LabelSet>) {
        let mut previous: std::collections::HashMap<Datum, Row> = self
            .alerts_hub
            .rows()
            .into_iter()
            .filter(|(row, _)| row.len() == ALERT_COLUMNS.len())
            .filter_map(|(row, _)| Some((row.first()?.clone(), row)))
            .collect();
        let rows: Vec<(Row, i64)> = {
            let rules = self.rules.lock();
            rules
                .groups
                .iter()
                .flat_map(|g| g.rules.iter())
                .flat_map(|r| r.alerts())
                .filter(|a| a.state != AlertState::Inactive)
                .map(|a| {
                    let labels = Datum::labels(&a.labels, false);
                    let state = Datum::Str(a.state.as_str().to_string());
                    let active_at = Datum::Time(a.active_at.saturating_mul(1_000_000));
                    let kept = previous.remove(&labels).filter(|row| {
                        !changed.contains(&a.labels)
                            && row.get(1) == Some(&state)
                            && row.get(2) == Some(&active_at)
                    });
                    let row = kept.unwrap_or_else(|| {
                        vec![
                            labels,
                            state,
                            active_at,
                            a.fired_at.map_or(Datum::Null, |fired| {
                                Datum::Time(fired.saturating_mul(1_000_000))
                            }),
                            Datum::Float(vigil_engine::continuous::row::F64(a.value)),
                            Datum::Map(
                                a.annotations
                                    .iter()
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            ),
                        ]
                    });
                    (row, 1)
                })
                .collect()
        };
        if let Err(err) = self.alerts_hub.reconcile(t, rows) {
            warn!(error = %err, "alert stream changes not published");
        }
    }

    /// Appends rule output and staleness markers (at `t`) for the series in `stale`;
    /// whether anything was written. Lenient, as Prometheus' rule appender: a marker for
    /// a series another rule wrote at `t` is dropped as a duplicate.
    fn write_output(
        &self,
        runtime: &tokio::runtime::Handle,
        samples: Vec<(LabelSet, i64, f64)>,
        stale: Vec<LabelSet>,
        t: i64,
    ) -> bool {
        if samples.is_empty() && stale.is_empty() {
            return false;
        }
        let mut batch = SampleBatch::default();
        for (labels, ts, value) in samples {
            let idx = batch.push_series(labels);
            batch.push_sample(idx, ts, value);
        }
        for labels in stale {
            let idx = batch.push_series(labels);
            batch.push_sample(idx, t, vigil_storage::record::stale_marker());
        }
        if let Err(err) = runtime.block_on(self.storage.append(batch, AppendMode::Lenient)) {
            warn!(error = %err, "cannot store rule output");
        }
        true
    }

    fn publish(&self, transition: &Transition) {
        debug!(labels = %transition.alert.labels, to = transition.alert.state.as_str(), "alert transition");
        self.notifier.notify(transition);
    }

    /// `GET /api/v1/alerts` data.
    pub fn alerts_api(&self) -> JsonValue {
        api::alerts_api(&self.rules.lock().groups)
    }

    /// `GET /api/v1/rules` data (`type` = `alert` or `record` filters).
    pub fn rules_api(&self, kind: Option<&str>) -> JsonValue {
        let rules = self.rules.lock();
        api::rules_api(&rules.groups, &rules.fallbacks, kind, |group| {
            self.group_interval(group)
        })
    }
}

/// An append with event time `latest` arrived: the event watermark moves, inputs are
/// not idle, and if it is the first data (before any tick was planned, or older than
/// the first planned tick: a backfill), ticks start from the data.
fn observe_append(
    latest: i64,
    tick_ms: i64,
    event_watermark: &mut i64,
    next_tick: &mut Option<i64>,
    last_append: &mut Option<std::time::Instant>,
) {
    // The rule clock never runs ahead of the wall clock: one sample from the future
    // (a client's broken clock) must not resolve alerts and make every later sample
    // late. It is stored, and applies when time reaches it.
    let latest = latest.min(now_ms());
    if *event_watermark == i64::MIN && next_tick.is_none_or(|tick| latest < tick - tick_ms) {
        *next_tick = Some((latest / tick_ms + 1) * tick_ms);
    }
    *event_watermark = (*event_watermark).max(latest);
    *last_append = Some(std::time::Instant::now());
}

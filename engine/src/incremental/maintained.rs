//! The rules' program as a client of the dataflow service: compiled from the rule
//! groups into one [`Program`], seeded from storage with what its selectors and
//! windows need, installed on the service's workers, and fed every durable append
//! through the storage tap. The rule manager (the scheduler and the alert state
//! machine) asks it for a rule's vector at an evaluation time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use vigil_queries::promql::{SeriesSource, StorageSource, DEFAULT_LOOKBACK_MS};
use vigil_storage::{Appended, LabelSet, Storage};

use super::{Engine, Program};
use crate::rules::Group;
use crate::service::Service;

/// Per group, per rule: `None` if maintained by the dataflow, else why it is ad hoc.
pub type Fallbacks = Vec<Vec<Option<String>>>;

/// What the rule manager reports on `/metrics`.
#[derive(Default)]
pub struct MaintainedStats {
    /// Samples that arrived behind the evaluation watermark minus the allowed lateness.
    pub late_samples: AtomicU64,
    /// Duration of the last dataflow epoch (feed, step, read), µs.
    pub last_epoch_us: AtomicI64,
}

/// The rules' dataflow on the service.
pub struct MaintainedRules {
    engine: Engine,
    tap: Receiver<Arc<Appended>>,
    /// Per group, per rule: the plan's index in the engine, if the rule is compiled.
    plans: Vec<Vec<Option<usize>>>,
    /// Output was written or appends arrived since the last epoch.
    behind: bool,
    /// The leaves alerting rules (and the recordings they read) depend on: the ones an
    /// ingest epoch must refresh.
    alerting_leaves: Arc<Vec<bool>>,
    stats: Arc<MaintainedStats>,
}

/// The outcome of [`MaintainedRules::build`].
pub struct Built {
    /// `None` when nothing compiles, or the seed or the workers failed.
    pub rules: Option<MaintainedRules>,
    pub fallbacks: Fallbacks,
    /// Why the program could not be seeded from storage (then every rule runs ad hoc,
    /// and the caller retries later).
    pub seed_error: Option<String>,
}

impl MaintainedRules {
    /// Compiles `groups`, reads the seed (samples from `seed_from(longest window)` on),
    /// installs the program on `service` and feeds it the seed. `on_ingest(group,
    /// rule)` says which compiled rules ingest evaluations answer (alerting rules and
    /// the recordings they read): their leaves are the ones ingest epochs refresh.
    /// Reads storage: run on a blocking thread.
    pub fn build(
        service: &Service,
        storage: &Arc<Storage>,
        groups: &[&Group],
        on_ingest: impl Fn(usize, usize) -> bool,
        seed_from: impl FnOnce(i64) -> i64,
        stats: Arc<MaintainedStats>,
    ) -> Built {
        let mut program = Program::default();
        let compiled = program.add_groups(groups.iter().copied());
        let mut alerting_plans = Vec::new();
        for (group_index, group) in compiled.iter().enumerate() {
            for (rule_index, plan) in group.iter().enumerate() {
                if let (Ok(index), true) = (plan, on_ingest(group_index, rule_index)) {
                    alerting_plans.push(*index);
                }
            }
        }
        let plans: Vec<Vec<Option<usize>>> = compiled
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|plan| plan.as_ref().ok().copied())
                    .collect()
            })
            .collect();
        let fallbacks: Fallbacks = compiled
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|plan| plan.as_ref().err().map(|reason| reason.to_string()))
                    .collect()
            })
            .collect();
        let all_ad_hoc = |reason: &str| -> Fallbacks {
            fallbacks
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|f| f.clone().or_else(|| Some(reason.to_string())))
                        .collect()
                })
                .collect()
        };
        if program.leaves.is_empty() {
            // Nothing to maintain (no rules, or none that compile): no dataflow, no tap.
            return Built {
                rules: None,
                fallbacks,
                seed_error: None,
            };
        }
        // Subscribed before the seed is read: a sample in both is applied once.
        let tap = storage.tap_appends();
        let max_window = program
            .leaves
            .iter()
            .map(|leaf| leaf.range.map_or(0, |(range, _)| range))
            .max()
            .unwrap_or(0)
            .max(DEFAULT_LOOKBACK_MS);
        let from = seed_from(max_window);
        let mut alerting_leaves = vec![false; program.leaves.len()];
        for plan in alerting_plans {
            for leaf in program.leaves_of(plan) {
                alerting_leaves[leaf] = true;
            }
        }
        // Each distinct selector is read once (`x` and `rate(x[5m])` share one read),
        // before the dataflow is installed: a failed read costs no dataflow.
        let mut selectors = HashSet::new();
        let source = StorageSource { storage };
        let mut seen = HashSet::new();
        let mut seed: Vec<(LabelSet, i64, f64)> = Vec::new();
        for leaf in &program.leaves {
            let key: Vec<String> = leaf.matchers.iter().map(ToString::to_string).collect();
            if !selectors.insert(key) {
                continue;
            }
            let series = match source.select(&leaf.matchers, from, i64::MAX) {
                Ok(series) => series,
                Err(err) => {
                    // Never silently run on a partial history.
                    let reason = format!("cannot seed the incremental rule engine: {err}");
                    return Built {
                        rules: None,
                        fallbacks: all_ad_hoc(&reason),
                        seed_error: Some(reason),
                    };
                }
            };
            for s in series {
                if seen.insert(s.labels.clone()) {
                    seed.extend(s.points.iter().map(|p| (s.labels.clone(), p.t, p.f)));
                }
            }
        }
        let engine = match Engine::install(service, program) {
            Ok(engine) => engine,
            Err(err) => {
                tracing::warn!(error = %err, "incremental rule engine unavailable; evaluating rules ad hoc");
                let reason = err.to_string();
                return Built {
                    rules: None,
                    fallbacks: fallbacks
                        .iter()
                        .map(|g| g.iter().map(|_| Some(reason.clone())).collect())
                        .collect(),
                    seed_error: None,
                };
            }
        };
        engine.push_samples(seed);
        Built {
            rules: Some(MaintainedRules {
                engine,
                tap,
                plans,
                behind: false,
                alerting_leaves: Arc::new(alerting_leaves),
                stats,
            }),
            fallbacks,
            seed_error: None,
        }
    }

    /// Output was written (or an evaluation begins): the next answer closes an epoch.
    pub fn mark_behind(&mut self) {
        self.behind = true;
    }

    /// Hands the appends since the last call to the dataflow; counts the samples behind
    /// `horizon` as late.
    pub fn feed(&mut self, horizon: i64) {
        while let Ok(batch) = self.tap.try_recv() {
            let late = batch
                .samples
                .iter()
                .filter(|s| s.timestamp_ms < horizon)
                .count();
            if late > 0 {
                self.stats
                    .late_samples
                    .fetch_add(late as u64, Ordering::Relaxed);
            }
            self.engine.push(batch);
        }
    }

    /// The rule's vector as the dataflow maintains it at `t`, if the rule is compiled
    /// (closing an epoch first when output or appends arrived since the last one).
    /// Ingest epochs (`tick` false) refresh only the windows alerting rules and the
    /// recordings they read depend on; ticks refresh every window.
    pub fn answer(
        &mut self,
        group: usize,
        rule: usize,
        t: i64,
        tick: bool,
        horizon: i64,
    ) -> Option<Vec<(LabelSet, f64)>> {
        let plan = (*self.plans.get(group)?.get(rule)?)?;
        if self.behind {
            let started = std::time::Instant::now();
            self.feed(horizon);
            let refresh = (!tick).then(|| self.alerting_leaves.clone());
            let was_failed = self.engine.failed();
            self.engine.evaluate_refreshing(t, refresh);
            if self.engine.failed() && !was_failed {
                tracing::error!(
                    "incremental rule engine stopped answering; evaluating every rule ad hoc"
                );
            }
            self.behind = false;
            self.stats
                .last_epoch_us
                .store(started.elapsed().as_micros() as i64, Ordering::Relaxed);
        }
        self.engine.answer(plan).ok()
    }
}

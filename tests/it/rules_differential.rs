//! A seeded, randomized differential test of `vigil rules test` against the real
//! `promtool test rules` (Debian's Prometheus 2.42).
//!
//! Each run generates rule files and promtool-format unit-test files in the shapes
//! Kubernetes teams write (kubernetes-mixin families: crash looping pods, CPU through a
//! recording rule read by a later group, memory against limits with `group_left`,
//! PVCs filling up with `predict_linear`, `absent(up == 1)`, target-down ratios,
//! stuck rollouts with `changes`, `keep_firing_for` on flapping nodes) with `for` of
//! 0s–3m, `$value`/`$labels` templates, several groups, sometimes two rule files and a
//! group `interval`, and input series that start late, vanish with and without
//! staleness markers, reset and roll over to new pod names.
//!
//! The expectations come from promtool, never from Vigil: every test file is written
//! with empty expectations, promtool runs on all of them in one invocation, its `got:`
//! sections (alerts in Go's `labels.String()` form, samples with Go's `'E'` float
//! formatting, both exact) are written back as the expectations, and a second promtool
//! run must pass every such file (which validates the parser). Files where promtool
//! reports a rule or query evaluation error are kept as they are: Vigil must fail them
//! too. Then `vigil_engine::unittest::run_file` judges every file; any verdict that
//! differs is a disagreement, reduced by a greedy delta loop (dropping checks, input
//! series, rules, groups, labels and annotations, re-deriving expectations with
//! promtool each time) and printed as a minimal reproduction. Files are kept on
//! failure. Each disagreement's one-line summary also says whether the ad hoc
//! evaluator alone (`Mode::AdHoc`) disagrees too, and names the features of the file
//! that are known to make Vigil disagree (`has: …`), so new kinds stand out.
//!
//! Differences between promtool 2.42 and Prometheus 3 (whose semantics Vigil follows)
//! are kept out of the generated files, so that a disagreement means a Vigil bug:
//!
//! - Range windows are closed on the left in 2.42 and open in 3. Every range is 15s
//!   off a multiple of 30s (`[2m15s]`, `[5m15s]`, `[10m15s]`, …) while samples lie
//!   on multiples of the 30s/1m input interval and every evaluation and query instant
//!   on a multiple of 30s, so no sample is ever on a window's left edge.
//! - The 5m lookback is closed in 2.42 and open in 3: a sample exactly 5m before an
//!   instant is seen by one only. Where a sample at `s` has no successor (sample or
//!   staleness marker) within 5m and `s + 5m` is an instant up to the last eval time,
//!   the generator writes a staleness marker right after it.
//! - `sum` adds plainly in 2.42 and with Kahan compensation in 3: sums of non-integral
//!   values (rates) never aggregate more than two series per group, where both round
//!   identically; every other sum is of integers. `avg` and `avg_over_time` use
//!   different algorithms and are not generated.
//! - `rate`/`increase` extrapolate towards zero differently (2.42 takes the zero point
//!   before substituting half an interval for a far window start, 3 after): counters
//!   start at 0 or at least three times their largest step, where both agree.
//! - promtool 2.42 compares samples with `reflect.DeepEqual`, so an expected NaN never
//!   passes: files whose results contain NaN are skipped (counted and printed).
//! - promtool 2.42 orders groups from a map (random for equal ranks): every file with
//!   more than one group sets `group_eval_order` (not always in file order).
//! - The test group `interval` is always given (its default differs between versions).
//!
//! Not avoided, because promtool 2.42 and Prometheus 3 agree on them: a group
//! `interval` longer than `evaluation_interval` (promtool still evaluates every group at
//! every `evaluation_interval`), and `a+bxN` input notation with non-dyadic steps
//! (promtool adds `b` repeatedly).
//!
//! Environment: `VIGIL_DIFF_SEED` (default [`DEFAULT_SEED`], decimal or `0x…`),
//! `VIGIL_DIFF_FILES` (default 220), `VIGIL_DIFF_SHOW` (minimised reproductions
//! printed, default 3), `VIGIL_DIFF_ONLY` (run only the case with this index).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{require, Rng};

/// The seed when `VIGIL_DIFF_SEED` is not set.
const DEFAULT_SEED: u64 = 0x7669_6769_6c5f_6466;
const DEFAULT_FILES: usize = 220;
const DEFAULT_SHOW: usize = 3;

// ---------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64).

/// The generator of case `index`: independent of every other case.
fn case_rng(seed: u64, index: usize) -> Rng {
    let mut mix = Rng(seed ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    Rng(mix.next_u64())
}

// ---------------------------------------------------------------------------------
// The model of one generated test file and its rule files.

/// Input values in promtool's notation: `_xN`, `stale`, `a+bxN` (N+1 values).
#[derive(Clone, Debug)]
enum Seg {
    Gap(usize),
    Stale,
    Run { start: f64, step: f64, n: usize },
}

impl Seg {
    fn slots(&self) -> usize {
        match self {
            Seg::Gap(n) => *n,
            Seg::Stale => 1,
            Seg::Run { n, .. } => n + 1,
        }
    }
}

#[derive(Clone, Debug)]
struct Input {
    series: String,
    segs: Vec<Seg>,
}

#[derive(Clone, Debug)]
enum Rule {
    Record {
        name: String,
        expr: String,
    },
    Alert {
        name: String,
        expr: String,
        for_: Option<&'static str>,
        keep_firing_for: Option<&'static str>,
        labels: Vec<(String, String)>,
        annotations: Vec<(String, String)>,
    },
}

#[derive(Clone, Debug)]
struct Group {
    name: String,
    interval: Option<&'static str>,
    /// Which rule file (0 or 1) holds the group.
    file: usize,
    rules: Vec<Rule>,
}

type Pairs = Vec<(String, String)>;

#[derive(Clone, Debug)]
struct AlertCheck {
    at: u32,
    alertname: String,
    /// (labels without `alertname`, annotations) of each firing alert.
    exp: Vec<(Pairs, Pairs)>,
}

#[derive(Clone, Debug)]
struct ExprCheck {
    at: u32,
    expr: String,
    /// (series in metric notation, value as YAML) of each sample.
    exp: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct Case {
    id: String,
    /// Input sample interval, seconds.
    interval: u32,
    groups: Vec<Group>,
    eval_order: Option<Vec<String>>,
    /// Whether an expected sample without labels is written `{}` (else `""`).
    empty_braces: bool,
    inputs: Vec<Input>,
    alerts: Vec<AlertCheck>,
    exprs: Vec<ExprCheck>,
}

impl Case {
    fn rule_files(&self) -> Vec<usize> {
        let files: BTreeSet<usize> = self.groups.iter().map(|g| g.file).collect();
        files.into_iter().collect()
    }

    fn rule_file_name(&self, file: usize) -> String {
        format!("{}-rules-{file}.yml", self.id)
    }

    fn test_name(&self) -> String {
        format!("{}-test.yml", self.id)
    }

    fn clear_expectations(&mut self) {
        self.alerts.iter_mut().for_each(|a| a.exp.clear());
        self.exprs.iter_mut().for_each(|e| e.exp.clear());
    }

    /// A rough size, for reporting how much minimisation removed.
    fn size(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum::<usize>()
            + self.inputs.len()
            + self.alerts.len()
            + self.exprs.len()
    }

    fn render_rules(&self, file: usize) -> String {
        let mut out = String::from("groups:\n");
        for group in self.groups.iter().filter(|g| g.file == file) {
            out.push_str(&format!("  - name: {}\n", q(&group.name)));
            if let Some(interval) = group.interval {
                out.push_str(&format!("    interval: {interval}\n"));
            }
            out.push_str("    rules:\n");
            for rule in &group.rules {
                match rule {
                    Rule::Record { name, expr } => {
                        out.push_str(&format!("      - record: {}\n", q(name)));
                        out.push_str(&format!("        expr: {}\n", q(expr)));
                    }
                    Rule::Alert {
                        name,
                        expr,
                        for_,
                        keep_firing_for,
                        labels,
                        annotations,
                    } => {
                        out.push_str(&format!("      - alert: {}\n", q(name)));
                        out.push_str(&format!("        expr: {}\n", q(expr)));
                        if let Some(d) = for_ {
                            out.push_str(&format!("        for: {d}\n"));
                        }
                        if let Some(d) = keep_firing_for {
                            out.push_str(&format!("        keep_firing_for: {d}\n"));
                        }
                        for (key, pairs) in [("labels", labels), ("annotations", annotations)] {
                            if pairs.is_empty() {
                                continue;
                            }
                            out.push_str(&format!("        {key}:\n"));
                            for (k, v) in pairs {
                                out.push_str(&format!("          {}: {}\n", q(k), q(v)));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn render_test(&self) -> String {
        let mut out = String::from("rule_files:");
        out.push_str(if self.groups.is_empty() {
            " []\n"
        } else {
            "\n"
        });
        for file in self.rule_files() {
            out.push_str(&format!("  - {}\n", q(&self.rule_file_name(file))));
        }
        out.push_str("evaluation_interval: 1m\n");
        if let Some(order) = &self.eval_order {
            out.push_str("group_eval_order:\n");
            for name in order {
                out.push_str(&format!("  - {}\n", q(name)));
            }
        }
        out.push_str("tests:\n");
        out.push_str(&format!("  - interval: {}\n", fmt_dur(self.interval)));
        if self.inputs.is_empty() {
            out.push_str("    input_series: []\n");
        } else {
            out.push_str("    input_series:\n");
        }
        for input in &self.inputs {
            out.push_str(&format!("      - series: {}\n", q(&input.series)));
            out.push_str(&format!(
                "        values: {}\n",
                q(&render_values(&input.segs))
            ));
        }
        if !self.alerts.is_empty() {
            out.push_str("    alert_rule_test:\n");
        }
        for check in &self.alerts {
            out.push_str(&format!("      - eval_time: {}\n", fmt_dur(check.at)));
            out.push_str(&format!("        alertname: {}\n", q(&check.alertname)));
            if check.exp.is_empty() {
                out.push_str("        exp_alerts: []\n");
                continue;
            }
            out.push_str("        exp_alerts:\n");
            for (labels, annotations) in &check.exp {
                if labels.is_empty() {
                    out.push_str("          - exp_labels: {}\n");
                } else {
                    out.push_str("          - exp_labels:\n");
                    for (k, v) in labels {
                        out.push_str(&format!("              {}: {}\n", q(k), q(v)));
                    }
                }
                if !annotations.is_empty() {
                    out.push_str("            exp_annotations:\n");
                    for (k, v) in annotations {
                        out.push_str(&format!("              {}: {}\n", q(k), q(v)));
                    }
                }
            }
        }
        if !self.exprs.is_empty() {
            out.push_str("    promql_expr_test:\n");
        }
        for check in &self.exprs {
            out.push_str(&format!("      - expr: {}\n", q(&check.expr)));
            out.push_str(&format!("        eval_time: {}\n", fmt_dur(check.at)));
            if check.exp.is_empty() {
                out.push_str("        exp_samples: []\n");
                continue;
            }
            out.push_str("        exp_samples:\n");
            for (labels, value) in &check.exp {
                // promtool prints no labels as `{}` and reads `{}` or `""`.
                let labels = match labels.as_str() {
                    "{}" if !self.empty_braces => "",
                    labels => labels,
                };
                out.push_str(&format!("          - labels: {}\n", q(labels)));
                out.push_str(&format!("            value: {value}\n"));
            }
        }
        out
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// `0s`, `45s`, `5m`, `5m30s` (as Prometheus' `model.Duration` prints them).
fn fmt_dur(seconds: u32) -> String {
    let (m, s) = (seconds / 60, seconds % 60);
    match (m, s) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Seconds of a Go duration as promtool prints it (`0s`, `5m`, `1m30s`, `1h0m0s`).
fn parse_go_duration(text: &str) -> Option<u32> {
    let mut total = 0u32;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u32 = number.parse().ok()?;
        number.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

fn fmt_num(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn render_values(segs: &[Seg]) -> String {
    let tokens: Vec<String> = segs
        .iter()
        .map(|seg| match seg {
            Seg::Gap(1) => "_".to_string(),
            Seg::Gap(n) => format!("_x{n}"),
            Seg::Stale => "stale".to_string(),
            Seg::Run { start, n: 0, .. } => fmt_num(*start),
            Seg::Run { start, step, n } if *step == 0.0 => format!("{}x{n}", fmt_num(*start)),
            Seg::Run { start, step, n } if *step > 0.0 => {
                format!("{}+{}x{n}", fmt_num(*start), fmt_num(*step))
            }
            Seg::Run { start, step, n } => format!("{}-{}x{n}", fmt_num(*start), fmt_num(-step)),
        })
        .collect();
    tokens.join(" ")
}

fn selector(metric: &str, labels: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    format!("{metric}{{{}}}", pairs.join(", "))
}

// ---------------------------------------------------------------------------------
// The generator.

/// Range windows 15s off the 30s grid (see the module comment).
const W_SHORT: &[&str] = &["2m15s", "2m45s", "3m15s"];
const W_MED: &[&str] = &["4m45s", "5m15s", "5m45s"];
const W_LONG: &[&str] = &["9m45s", "10m15s"];
const FOR: &[Option<&str>] = &[None, Some("0s"), Some("1m"), Some("2m"), Some("3m")];
const KEEP_FIRING: &[&str] = &["1m", "2m", "3m", "5m"];
const NAMESPACES: &[&str] = &["default", "payments", "checkout", "monitoring", "search"];
const WORKLOADS: &[&str] = &["api", "worker", "frontend", "redis", "ingest", "billing"];
const NODES: &[&str] = &["node-a", "node-b", "node-c"];
const MIB: f64 = 1_048_576.0;

/// One input series' life in slots: `start..end`; ends with a staleness marker if
/// `stale` (only when it ends before the last slot).
#[derive(Clone, Copy)]
struct Life {
    start: usize,
    end: usize,
    stale: bool,
}

/// What one rule family contributes to a case.
#[derive(Default)]
struct Piece {
    family: &'static str,
    records: Vec<Rule>,
    alerts: Vec<Rule>,
    inputs: Vec<Input>,
    exprs: Vec<String>,
}

struct Gen {
    rng: Rng,
    slots: usize,
    names: BTreeSet<String>,
}

impl Gen {
    fn unique(&mut self, base: &str) -> String {
        const CHARS: &[u8] = b"bcdfghjkmnpqrstvwxz2456789";
        loop {
            let suffix: String = (0..5)
                .map(|_| CHARS[self.rng.below(CHARS.len())] as char)
                .collect();
            let name = format!("{base}-{suffix}");
            if self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    fn namespaces(&mut self, count: usize) -> Vec<&'static str> {
        let mut all = NAMESPACES.to_vec();
        self.rng.shuffle(&mut all);
        all.truncate(count);
        all
    }

    fn window(&mut self, sets: &[&[&'static str]]) -> &'static str {
        let set = sets[self.rng.below(sets.len())];
        self.rng.pick(set)
    }

    fn for_(&mut self) -> Option<&'static str> {
        self.rng.pick(FOR)
    }

    fn keep_firing(&mut self, percent: u64) -> Option<&'static str> {
        self.rng.chance(percent).then(|| self.rng.pick(KEEP_FIRING))
    }

    /// A series' life: mostly the whole test, sometimes starting late, sometimes
    /// vanishing (with or without a staleness marker).
    fn life(&mut self) -> Life {
        let start = if self.rng.chance(20) {
            self.rng.between(1, self.slots / 3)
        } else {
            0
        };
        if self.rng.chance(25) {
            let end = self.rng.between(start + 3, self.slots - 1);
            Life {
                start,
                end,
                stale: self.rng.chance(50),
            }
        } else {
            Life {
                start,
                end: self.slots,
                stale: false,
            }
        }
    }

    /// One life, or (rollover) an old series ending and a new one starting at or
    /// after that slot (`max_gap` slots later at most).
    fn lives(&mut self, rollover_percent: u64, max_gap: usize) -> Vec<Life> {
        if !self.rng.chance(rollover_percent) {
            return vec![self.life()];
        }
        let k = self.rng.between(self.slots / 4, 3 * self.slots / 4);
        let gap = self.rng.between(0, max_gap);
        let stale = self.rng.chance(55);
        vec![
            Life {
                start: 0,
                end: k,
                stale,
            },
            Life {
                start: (k + gap).min(self.slots - 2),
                end: self.slots,
                stale: false,
            },
        ]
    }

    /// Splits `start..end` into 1..=`max` consecutive non-empty pieces.
    fn split(&mut self, start: usize, end: usize, max: usize) -> Vec<(usize, usize)> {
        let len = end - start;
        let pieces = self.rng.between(1, max.min(len).max(1));
        let mut cuts = BTreeSet::new();
        while cuts.len() + 1 < pieces {
            cuts.insert(self.rng.between(start + 1, end - 1));
        }
        let mut bounds = vec![start];
        bounds.extend(cuts);
        bounds.push(end);
        bounds.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Segments of `life`, each piece a run from `piece(rng, previous last value,
    /// piece length)` = (start, step).
    fn series(
        &mut self,
        life: Life,
        max_pieces: usize,
        mut piece: impl FnMut(&mut Rng, Option<f64>, usize) -> (f64, f64),
    ) -> Vec<Seg> {
        let mut segs = Vec::new();
        if life.start > 0 {
            segs.push(Seg::Gap(life.start));
        }
        let mut last = None;
        for (a, b) in self.split(life.start, life.end, max_pieces) {
            let n = b - a - 1;
            let (start, step) = piece(&mut self.rng, last, n);
            segs.push(Seg::Run { start, step, n });
            last = Some(start + step * n as f64);
        }
        if life.end < self.slots && life.stale {
            segs.push(Seg::Stale);
        }
        segs
    }

    /// A counter starting at `v0` (0, or at least three times the largest step),
    /// increasing by one of `steps` per slot, resetting to 0 with `reset` percent.
    fn counter(&mut self, life: Life, v0: f64, steps: &'static [f64], reset: u64) -> Vec<Seg> {
        self.series(life, 3, move |rng, last, _| {
            let step = rng.pick(steps);
            match last {
                None => (v0, step),
                Some(_) if rng.chance(reset) => (0.0, step),
                Some(last) => (last + step, step),
            }
        })
    }

    /// A 0/1 series, 1 in about `one` percent of its pieces.
    fn flag(&mut self, life: Life, one: u64) -> Vec<Seg> {
        self.series(life, 4, move |rng, _, _| {
            (if rng.chance(one) { 1.0 } else { 0.0 }, 0.0)
        })
    }

    /// A constant series.
    fn constant(&mut self, life: Life, value: f64) -> Vec<Seg> {
        self.series(life, 1, move |_, _, _| (value, 0.0))
    }

    fn severity(&mut self) -> Vec<(String, String)> {
        let mut labels = vec![(
            "severity".to_string(),
            self.rng.pick(&["warning", "critical"]).to_string(),
        )];
        if self.rng.chance(20) {
            labels.push(("team".to_string(), "platform".to_string()));
        }
        labels
    }

    // --- the families -----------------------------------------------------------

    fn crashloop(&mut self) -> Piece {
        let mut piece = Piece {
            family: "crashloop",
            ..Piece::default()
        };
        let w = self.window(&[W_SHORT, W_MED, W_LONG]);
        let variant = self.rng.below(3);
        let count = self.rng.between(1, 2);
        for ns in self.namespaces(count) {
            for _ in 0..self.rng.between(1, 2) {
                let workload = self.rng.pick(WORKLOADS);
                let lives = self.lives(30, 1);
                for (idx, life) in lives.iter().enumerate() {
                    let pod = self.unique(workload);
                    let mut labels = vec![
                        ("namespace", ns),
                        ("pod", pod.as_str()),
                        ("container", workload),
                        ("job", "kube-state-metrics"),
                    ];
                    if variant < 2 {
                        let v0 = if idx > 0 || life.start > 0 || self.rng.chance(50) {
                            0.0
                        } else {
                            self.rng.between(6, 40) as f64
                        };
                        piece.inputs.push(Input {
                            series: selector("kube_pod_container_status_restarts_total", &labels),
                            segs: self.counter(*life, v0, &[0.0, 0.0, 1.0, 1.0, 2.0], 20),
                        });
                    } else {
                        labels.push(("reason", "CrashLoopBackOff"));
                        piece.inputs.push(Input {
                            series: selector("kube_pod_container_status_waiting_reason", &labels),
                            segs: self.flag(*life, 40),
                        });
                    }
                }
            }
        }
        let expr = match variant {
            0 => format!(
                "increase(kube_pod_container_status_restarts_total{{job=\"kube-state-metrics\"}}[{w}]) > 0"
            ),
            1 => format!(
                "rate(kube_pod_container_status_restarts_total{{job=\"kube-state-metrics\"}}[{w}]) * 60 * 5 > 0"
            ),
            _ => format!(
                "max_over_time(kube_pod_container_status_waiting_reason{{reason=\"CrashLoopBackOff\", job=\"kube-state-metrics\"}}[{w}]) >= 1"
            ),
        };
        let mut labels = self.severity();
        if self.rng.chance(25) {
            labels.push((
                "owner".to_string(),
                "{{ $labels.namespace }}/{{ $labels.container }}".to_string(),
            ));
        }
        let description = if variant < 2 {
            "Pod {{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) is restarting {{ printf \"%.2f\" $value }} times / 5 minutes."
        } else {
            "Pod {{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) is in waiting state (reason: \"CrashLoopBackOff\")."
        };
        piece.alerts.push(Rule::Alert {
            name: "KubePodCrashLooping".into(),
            expr,
            for_: self.for_(),
            keep_firing_for: self.keep_firing(15),
            labels,
            annotations: vec![
                ("description".into(), description.into()),
                (
                    "summary".into(),
                    "Pod {{ $labels.pod }} at {{ $value }}".into(),
                ),
            ],
        });
        let w2 = self.window(&[W_SHORT, W_MED]);
        if variant < 2 {
            piece.exprs = vec![
                format!("increase(kube_pod_container_status_restarts_total[{w}])"),
                format!("changes(kube_pod_container_status_restarts_total[{w2}])"),
                format!("resets(kube_pod_container_status_restarts_total[{w2}])"),
            ];
        } else {
            piece.exprs = vec![
                format!("max_over_time(kube_pod_container_status_waiting_reason[{w}])"),
                "kube_pod_container_status_waiting_reason == 1".into(),
            ];
        }
        piece
    }

    fn cpu(&mut self) -> Piece {
        const RECORD: &str = "namespace:container_cpu:sum_rate";
        let mut piece = Piece {
            family: "cpu",
            ..Piece::default()
        };
        let w = self.window(&[W_SHORT, W_MED]);
        let accumulating = self.rng.chance(15);
        // At most two namespaces, one workload each (at most two series per sum).
        let count = self.rng.between(1, 2);
        for ns in self.namespaces(count) {
            let workload = self.rng.pick(WORKLOADS);
            let lives = self.lives(35, 1);
            for (idx, life) in lives.iter().enumerate() {
                let pod = self.unique(workload);
                let labels = [
                    ("namespace", ns),
                    ("pod", pod.as_str()),
                    ("container", workload),
                    ("job", "cadvisor"),
                ];
                let v0 = if idx > 0 || life.start > 0 || self.rng.chance(40) {
                    0.0
                } else {
                    self.rng.between(100, 5000) as f64
                };
                let steps: &'static [f64] = if accumulating {
                    &[0.1, 0.3, 0.7]
                } else {
                    &[0.25, 0.5, 1.5, 2.0]
                };
                piece.inputs.push(Input {
                    series: selector("container_cpu_usage_seconds_total", &labels),
                    segs: self.counter(*life, v0, steps, 10),
                });
            }
        }
        piece.records.push(Rule::Record {
            name: RECORD.into(),
            expr: format!(
                "sum by (namespace) (rate(container_cpu_usage_seconds_total{{job=\"cadvisor\", container!=\"\"}}[{w}]))"
            ),
        });
        if self.rng.chance(60) {
            let threshold = self.rng.pick(&["0.004", "0.01", "0.02", "0.03"]);
            piece.alerts.push(Rule::Alert {
                name: "NamespaceCPUHigh".into(),
                expr: format!("{RECORD} > {threshold}"),
                for_: self.for_(),
                keep_firing_for: self.keep_firing(15),
                labels: self.severity(),
                annotations: vec![
                    (
                        "summary".into(),
                        "Namespace {{ $labels.namespace }} uses {{ $value | humanize }} cores"
                            .into(),
                    ),
                    (
                        "description".into(),
                        "{{ $value | humanizePercentage }} of one core in {{ $labels.namespace }}"
                            .into(),
                    ),
                ],
            });
        } else {
            for node in &NODES[..self.rng.between(1, 2)] {
                let life = Life {
                    start: 0,
                    end: self.slots,
                    stale: false,
                };
                let cores = self.rng.pick(&[2.0, 4.0, 8.0]);
                piece.inputs.push(Input {
                    series: selector(
                        "kube_node_status_allocatable",
                        &[
                            ("node", node),
                            ("resource", "cpu"),
                            ("job", "kube-state-metrics"),
                        ],
                    ),
                    segs: self.constant(life, cores),
                });
            }
            let threshold = self.rng.pick(&["0.001", "0.003", "0.005"]);
            piece.alerts.push(Rule::Alert {
                name: "KubeCPUOvercommit".into(),
                expr: format!(
                    "sum({RECORD}) / sum(kube_node_status_allocatable{{resource=\"cpu\", job=\"kube-state-metrics\"}}) > {threshold}"
                ),
                for_: self.for_(),
                keep_firing_for: None,
                labels: self.severity(),
                annotations: vec![(
                    "description".into(),
                    "Cluster has overcommitted CPU resource requests: {{ $value | humanizePercentage }}."
                        .into(),
                )],
            });
        }
        let w2 = self.window(&[W_SHORT, W_MED]);
        piece.exprs = vec![
            RECORD.into(),
            format!("rate(container_cpu_usage_seconds_total[{w}])"),
            format!("count_over_time({RECORD}[{w2}])"),
            format!("max_over_time({RECORD}[{w2}])"),
        ];
        piece
    }

    fn memory(&mut self) -> Piece {
        const RECORD: &str = "node_namespace_pod_container:container_memory_working_set_bytes";
        let mut piece = Piece {
            family: "memory",
            ..Piece::default()
        };
        let variant = self.rng.below(3);
        let duplicate_info = variant == 1 && self.rng.chance(25);
        let mut pods = 0;
        let count = self.rng.between(1, 2);
        for ns in self.namespaces(count) {
            for _ in 0..self.rng.between(1, 2) {
                pods += 1;
                let workload = self.rng.pick(WORKLOADS);
                let limit = self.rng.pick(&[512.0, 768.0, 1024.0]) * MIB;
                let lives = if duplicate_info && pods == 1 {
                    vec![Life {
                        start: 0,
                        end: self.slots,
                        stale: false,
                    }]
                } else {
                    self.lives(30, 1)
                };
                for life in lives {
                    let pod = self.unique(workload);
                    let container = [
                        ("namespace", ns),
                        ("pod", pod.as_str()),
                        ("container", workload),
                    ];
                    let memory = self.series(life, 3, move |rng, last, _| {
                        let step = rng.between(0, 24) as f64 - 8.0;
                        let start = match last {
                            Some(last) if rng.chance(70) => last + step * MIB,
                            _ => rng.between(300, 900) as f64 * MIB,
                        };
                        // At most 8 MiB less per slot: never below 300 - 8 * 32 MiB.
                        (start, step * MIB)
                    });
                    let mut labels = container.to_vec();
                    labels.push(("job", "cadvisor"));
                    piece.inputs.push(Input {
                        series: selector("container_memory_working_set_bytes", &labels),
                        segs: memory,
                    });
                    let mut labels = container.to_vec();
                    labels.extend([("resource", "memory"), ("job", "kube-state-metrics")]);
                    piece.inputs.push(Input {
                        series: selector("kube_pod_container_resource_limits", &labels),
                        segs: self.constant(life, limit),
                    });
                    let node = self.rng.pick(NODES);
                    let info = |node: &str| {
                        selector(
                            "kube_pod_info",
                            &[
                                ("namespace", ns),
                                ("pod", pod.as_str()),
                                ("node", node),
                                ("job", "kube-state-metrics"),
                            ],
                        )
                    };
                    if duplicate_info && pods == 1 {
                        // The pod's info from two nodes for two slots: promtool
                        // reports a many-to-one matching error.
                        let k = self.rng.between(self.slots / 4, self.slots / 2);
                        piece.inputs.push(Input {
                            series: info("node-a"),
                            segs: vec![
                                Seg::Run {
                                    start: 1.0,
                                    step: 0.0,
                                    n: k + 1,
                                },
                                Seg::Stale,
                            ],
                        });
                        piece.inputs.push(Input {
                            series: info("node-b"),
                            segs: vec![
                                Seg::Gap(k),
                                Seg::Run {
                                    start: 1.0,
                                    step: 0.0,
                                    n: self.slots - k - 1,
                                },
                            ],
                        });
                    } else {
                        piece.inputs.push(Input {
                            series: info(node),
                            segs: self.constant(life, 1.0),
                        });
                    }
                }
            }
        }
        let threshold = self.rng.pick(&["0.5", "0.7", "0.85"]);
        let expr = match variant {
            0 => format!(
                "sum by (namespace, pod) (container_memory_working_set_bytes{{job=\"cadvisor\", container!=\"\"}}) / on (namespace, pod) group_left sum by (namespace, pod) (kube_pod_container_resource_limits{{resource=\"memory\", job=\"kube-state-metrics\"}}) > {threshold}"
            ),
            1 => format!(
                "container_memory_working_set_bytes{{job=\"cadvisor\", container!=\"\"}} / on (namespace, pod, container) group_left kube_pod_container_resource_limits{{resource=\"memory\", job=\"kube-state-metrics\"}} * on (namespace, pod) group_left (node) kube_pod_info{{job=\"kube-state-metrics\"}} > {threshold}"
            ),
            _ => {
                piece.records.push(Rule::Record {
                    name: RECORD.into(),
                    expr: "container_memory_working_set_bytes{job=\"cadvisor\", container!=\"\"} * on (namespace, pod) group_left (node) topk by (namespace, pod) (1, max by (namespace, pod, node) (kube_pod_info{node!=\"\"}))".into(),
                });
                format!(
                    "{RECORD} / on (namespace, pod, container) group_left kube_pod_container_resource_limits{{resource=\"memory\"}} > {threshold}"
                )
            }
        };
        let mut labels = self.severity();
        if self.rng.chance(30) {
            labels.push((
                "namespace_team".into(),
                "team-{{ $labels.namespace }}".into(),
            ));
        }
        let mut annotations = vec![(
            "summary".to_string(),
            "{{ $labels.namespace }}/{{ $labels.pod }} uses {{ $value | humanizePercentage }} of its memory limit"
                .to_string(),
        )];
        if variant > 0 {
            annotations.push((
                "description".into(),
                "Container {{ $labels.container }} on {{ $labels.node }}: {{ $value }}".into(),
            ));
        }
        piece.alerts.push(Rule::Alert {
            name: "KubeMemoryNearLimit".into(),
            expr,
            for_: self.for_(),
            keep_firing_for: self.keep_firing(10),
            labels,
            annotations,
        });
        piece.exprs = vec![
            "sum by (namespace) (container_memory_working_set_bytes)".into(),
            "kube_pod_info".into(),
            "container_memory_working_set_bytes / on (namespace, pod, container) group_left kube_pod_container_resource_limits".into(),
        ];
        if variant == 2 {
            piece.exprs.push(RECORD.into());
        }
        piece
    }

    fn pvc(&mut self) -> Piece {
        let mut piece = Piece {
            family: "pvc",
            ..Piece::default()
        };
        let w = self.window(&[W_MED, W_LONG]);
        for _ in 0..self.rng.between(1, 2) {
            let ns = self.rng.pick(NAMESPACES);
            let claim = self.unique("data-postgres");
            let labels = [
                ("namespace", ns),
                ("persistentvolumeclaim", claim.as_str()),
                ("job", "kubelet"),
            ];
            let capacity = self.rng.pick(&[10240.0, 20480.0]) * MIB;
            let life = self.life();
            let slots = self.slots as f64;
            let available = self.series(life, 3, move |rng, last, _| {
                let start = match last {
                    Some(last) if rng.chance(75) => last,
                    _ => rng.between(1024, 6144) as f64 * MIB,
                };
                // A step that cannot reach zero within the test.
                let steps: Vec<f64> = [-400.0, -200.0, -100.0, -50.0, 0.0, 30.0]
                    .into_iter()
                    .map(|s| s * MIB)
                    .filter(|s| start + s * slots > 0.0)
                    .collect();
                (start, rng.pick(&steps))
            });
            piece.inputs.push(Input {
                series: selector("kubelet_volume_stats_available_bytes", &labels),
                segs: available,
            });
            piece.inputs.push(Input {
                series: selector("kubelet_volume_stats_capacity_bytes", &labels),
                segs: self.constant(life, capacity),
            });
        }
        let horizon = self.rng.pick(&["3600", "4 * 3600", "14400"]);
        let (expr, description) = if self.rng.chance(50) {
            let ratio = self.rng.pick(&["0.15", "0.3", "0.5"]);
            (
                format!(
                    "kubelet_volume_stats_available_bytes{{job=\"kubelet\"}} / kubelet_volume_stats_capacity_bytes{{job=\"kubelet\"}} < {ratio} and predict_linear(kubelet_volume_stats_available_bytes{{job=\"kubelet\"}}[{w}], {horizon}) < 0"
                ),
                "The PersistentVolume claimed by {{ $labels.persistentvolumeclaim }} in Namespace {{ $labels.namespace }} is expected to fill up. Currently {{ $value | humanizePercentage }} is available.",
            )
        } else {
            (
                format!(
                    "predict_linear(kubelet_volume_stats_available_bytes{{job=\"kubelet\"}}[{w}], {horizon}) < 0"
                ),
                "Volume {{ $labels.persistentvolumeclaim }} is predicted at {{ $value | humanize1024 }}B.",
            )
        };
        piece.alerts.push(Rule::Alert {
            name: "KubePersistentVolumeFillingUp".into(),
            expr,
            for_: self.for_(),
            keep_firing_for: self.keep_firing(10),
            labels: self.severity(),
            annotations: vec![
                ("description".into(), description.into()),
                ("summary".into(), "PersistentVolume is filling up.".into()),
            ],
        });
        piece.exprs = vec![
            format!("predict_linear(kubelet_volume_stats_available_bytes[{w}], 3600)"),
            format!("deriv(kubelet_volume_stats_available_bytes[{w}])"),
            "kubelet_volume_stats_available_bytes / kubelet_volume_stats_capacity_bytes".into(),
        ];
        piece
    }

    fn absent(&mut self) -> Piece {
        let mut piece = Piece {
            family: "absent",
            ..Piece::default()
        };
        let lives = self.lives(40, 4);
        for life in lives {
            let instance = format!(
                "10.0.{}.{}:8080",
                self.rng.between(0, 9),
                self.rng.between(2, 250)
            );
            piece.inputs.push(Input {
                series: selector(
                    "up",
                    &[
                        ("job", "kube-state-metrics"),
                        ("namespace", "monitoring"),
                        ("instance", instance.as_str()),
                    ],
                ),
                segs: self.flag(life, 80),
            });
        }
        piece.alerts.push(Rule::Alert {
            name: "KubeStateMetricsDown".into(),
            expr: "absent(up{job=\"kube-state-metrics\"} == 1)".into(),
            for_: self.for_(),
            keep_firing_for: self.keep_firing(15),
            labels: vec![("severity".into(), "critical".into())],
            annotations: vec![
                (
                    "description".into(),
                    // `absent` of a comparison has no labels (sometimes read anyway).
                    if self.rng.chance(30) {
                        "{{ $labels.job }} has disappeared from Prometheus target discovery ({{ $value }})."
                    } else {
                        "kube-state-metrics has disappeared from Prometheus target discovery ({{ $value }})."
                    }
                    .into(),
                ),
                ("summary".into(), "Target disappeared from Prometheus target discovery.".into()),
            ],
        });
        piece.exprs = vec![
            "absent(up{job=\"kube-state-metrics\"})".into(),
            "up{job=\"kube-state-metrics\"} == 1".into(),
            "count(up{job=\"kube-state-metrics\"} == 1)".into(),
        ];
        piece
    }

    fn target_down(&mut self) -> Piece {
        let mut piece = Piece {
            family: "target_down",
            ..Piece::default()
        };
        let mut jobs = vec![
            ("node-exporter", "monitoring"),
            ("kubelet", "kube-system"),
            ("coredns", "kube-system"),
            ("apiserver", "default"),
        ];
        self.rng.shuffle(&mut jobs);
        for (job, ns) in jobs.into_iter().take(self.rng.between(1, 2)) {
            for idx in 0..self.rng.between(2, 4) {
                let instance = format!("10.1.0.{}:9100", 10 + idx);
                let life = self.life();
                piece.inputs.push(Input {
                    series: selector(
                        "up",
                        &[
                            ("job", job),
                            ("namespace", ns),
                            ("instance", instance.as_str()),
                        ],
                    ),
                    segs: self.flag(life, 70),
                });
            }
        }
        // The mixin's text names `service`, which these targets lack (sometimes).
        let description = if self.rng.chance(30) {
            "{{ printf \"%.4g\" $value }}% of the {{ $labels.job }}/{{ $labels.service }} targets in {{ $labels.namespace }} namespace are down."
        } else {
            "{{ printf \"%.4g\" $value }}% of the {{ $labels.job }} targets in {{ $labels.namespace }} namespace are down."
        };
        let expr = if self.rng.chance(50) {
            "100 * (count by (job, namespace) (up == 0) / count by (job, namespace) (up)) > 10"
                .to_string()
        } else {
            piece.records.push(Rule::Record {
                name: "job_namespace:up:count".into(),
                expr: "count by (job, namespace) (up)".into(),
            });
            piece.records.push(Rule::Record {
                name: "job_namespace:up_down:count".into(),
                expr: "count by (job, namespace) (up == 0)".into(),
            });
            piece.exprs.push("job_namespace:up_down:count".into());
            "100 * job_namespace:up_down:count / job_namespace:up:count > 10".to_string()
        };
        piece.alerts.push(Rule::Alert {
            name: "TargetDown".into(),
            expr,
            for_: self.for_(),
            keep_firing_for: self.keep_firing(15),
            labels: vec![("severity".into(), "warning".into())],
            annotations: vec![
                ("description".into(), description.into()),
                (
                    "summary".into(),
                    "One or more targets are unreachable.".into(),
                ),
            ],
        });
        piece.exprs.extend([
            "count by (job, namespace) (up == 0)".to_string(),
            "sum by (job) (up)".to_string(),
        ]);
        piece
    }

    fn rollout(&mut self) -> Piece {
        let mut piece = Piece {
            family: "rollout",
            ..Piece::default()
        };
        let w = self.window(&[W_MED, W_LONG]);
        for _ in 0..self.rng.between(1, 2) {
            let ns = self.rng.pick(NAMESPACES);
            let workload = self.rng.pick(WORKLOADS);
            let deployment = self.unique(workload);
            let labels = [
                ("namespace", ns),
                ("deployment", deployment.as_str()),
                ("job", "kube-state-metrics"),
            ];
            let life = self.life();
            let spec = self.series(life, 2, |rng, _, _| (rng.pick(&[2.0, 3.0, 4.0]), 0.0));
            let available = self.series(life, 4, |rng, _, _| (rng.between(0, 4) as f64, 0.0));
            let updated = self.series(life, 3, |rng, _, _| (rng.between(0, 4) as f64, 0.0));
            for (metric, segs) in [
                ("kube_deployment_spec_replicas", spec),
                ("kube_deployment_status_replicas_available", available),
                ("kube_deployment_status_replicas_updated", updated),
            ] {
                piece.inputs.push(Input {
                    series: selector(metric, &labels),
                    segs,
                });
            }
        }
        piece.alerts.push(Rule::Alert {
            name: "KubeDeploymentRolloutStuck".into(),
            expr: format!(
                "(kube_deployment_spec_replicas{{job=\"kube-state-metrics\"}} > kube_deployment_status_replicas_available{{job=\"kube-state-metrics\"}}) and (changes(kube_deployment_status_replicas_updated{{job=\"kube-state-metrics\"}}[{w}]) == 0)"
            ),
            for_: self.for_(),
            keep_firing_for: self.keep_firing(20),
            labels: self.severity(),
            annotations: vec![(
                "description".into(),
                "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} rollout is stuck at {{ $value }} desired replicas.".into(),
            )],
        });
        piece.exprs = vec![
            format!("changes(kube_deployment_status_replicas_updated[{w}])"),
            format!("changes(kube_deployment_status_replicas_updated[{w}]) == 0"),
        ];
        piece
    }

    fn node_ready(&mut self) -> Piece {
        let mut piece = Piece {
            family: "node_ready",
            ..Piece::default()
        };
        for node in &NODES[..self.rng.between(1, 3)] {
            let life = self.life();
            piece.inputs.push(Input {
                series: selector(
                    "kube_node_status_condition",
                    &[
                        ("node", node),
                        ("condition", "Ready"),
                        ("status", "true"),
                        ("job", "kube-state-metrics"),
                    ],
                ),
                segs: self.flag(life, 65),
            });
        }
        let mut labels = self.severity();
        if self.rng.chance(10) {
            labels.push((
                "bucket".into(),
                "{{ if gt $value 0.5 }}high{{ else }}low{{ end }}".into(),
            ));
        }
        piece.alerts.push(Rule::Alert {
            name: "KubeNodeNotReady".into(),
            expr: "kube_node_status_condition{job=\"kube-state-metrics\", condition=\"Ready\", status=\"true\"} == 0".into(),
            for_: self.for_(),
            keep_firing_for: self.keep_firing(75),
            labels,
            annotations: vec![(
                "description".into(),
                "{{ $labels.node }} has been unready for more than 15 minutes.".into(),
            )],
        });
        if self.rng.chance(40) {
            for _ in 0..self.rng.between(1, 2) {
                let job_name = self.unique("backup");
                let life = self.life();
                piece.inputs.push(Input {
                    series: selector(
                        "kube_job_failed",
                        &[
                            ("namespace", "default"),
                            ("job_name", job_name.as_str()),
                            ("job", "kube-state-metrics"),
                        ],
                    ),
                    segs: self.flag(life, 40),
                });
            }
            piece.alerts.push(Rule::Alert {
                name: "KubeJobFailed".into(),
                expr: "kube_job_failed{job=\"kube-state-metrics\"} > 0".into(),
                for_: self.for_(),
                keep_firing_for: self.keep_firing(80),
                labels: self.severity(),
                annotations: vec![(
                    "description".into(),
                    "Job {{ $labels.namespace }}/{{ $labels.job_name }} failed to complete.".into(),
                )],
            });
        }
        let w = self.window(&[W_SHORT, W_MED]);
        piece.exprs = vec![
            "kube_node_status_condition == 0".into(),
            "sum(kube_node_status_condition{condition=\"Ready\", status=\"true\"})".into(),
            format!("changes(kube_node_status_condition[{w}])"),
        ];
        piece
    }
}

type Family = fn(&mut Gen) -> Piece;

const FAMILIES: &[Family] = &[
    Gen::crashloop,
    Gen::cpu,
    Gen::memory,
    Gen::pvc,
    Gen::absent,
    Gen::target_down,
    Gen::rollout,
    Gen::node_ready,
];

/// Case `index` of the run with `seed`.
fn generate(seed: u64, index: usize) -> Case {
    let mut rng = case_rng(seed, index);
    let interval = if rng.chance(25) { 30 } else { 60 };
    let horizon = rng.pick(&[600u32, 720, 900]);
    let slots = (horizon / interval) as usize + 2;
    let mut gen = Gen {
        rng,
        slots,
        names: BTreeSet::new(),
    };
    let count = gen.rng.pick(&[1, 2, 2, 2, 3, 3]);
    let mut families = FAMILIES.to_vec();
    gen.rng.shuffle(&mut families);
    let pieces: Vec<Piece> = families
        .into_iter()
        .take(count)
        .map(|family| family(&mut gen))
        .collect();
    let mut rng = gen.rng;
    let empty_braces = rng.chance(25);

    // Groups: the recording rules first (one group, or one per family), then the
    // alerts (one group per family, or together); an alert sometimes shares its
    // family's recording group, after (or, rarely, before) the recording rules.
    let mut groups: Vec<Group> = Vec::new();
    let split_records = rng.chance(40);
    let merge_alerts = rng.chance(30);
    let mut alert_groups: Vec<Group> = Vec::new();
    for piece in &pieces {
        let mut alerts = piece.alerts.clone();
        if !piece.records.is_empty() {
            let mut rules = piece.records.clone();
            match rng.below(10) {
                0..=6 => {}
                7 | 8 => rules.append(&mut alerts),
                _ => {
                    alerts.append(&mut rules);
                    rules = std::mem::take(&mut alerts);
                }
            }
            match groups.last_mut() {
                Some(group) if !split_records => group.rules.extend(rules),
                _ => groups.push(Group {
                    name: format!("k8s.rules.{}", piece.family),
                    interval: None,
                    file: 0,
                    rules,
                }),
            }
        }
        if alerts.is_empty() {
            continue;
        }
        match alert_groups.last_mut() {
            Some(group) if merge_alerts => group.rules.extend(alerts),
            _ => alert_groups.push(Group {
                name: format!("kubernetes-{}", piece.family),
                interval: None,
                file: 0,
                rules: alerts,
            }),
        }
    }
    groups.extend(alert_groups);
    let two_files = groups.len() >= 2 && rng.chance(35);
    let records_in_first = rng.chance(50);
    let groups_len = groups.len();
    for (idx, group) in groups.iter_mut().enumerate() {
        group.interval = match rng.below(100) {
            0..=9 => Some("1m"),
            10..=13 => Some("2m"),
            _ => None,
        };
        if two_files {
            group.file = if records_in_first {
                usize::from(group.name.starts_with("kubernetes-"))
            } else {
                usize::from(idx * 2 >= groups_len)
            };
        }
    }
    normalise_files(&mut groups);
    let eval_order = (groups.len() > 1).then(|| {
        let mut names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        if rng.chance(25) {
            rng.shuffle(&mut names);
        }
        names
    });

    // Checks at whole minutes up to the horizon (sometimes half minutes).
    let minutes = (horizon / 60) as usize;
    let time = |rng: &mut Rng| -> u32 {
        let at = rng.between(0, minutes) as u32 * 60;
        if at < horizon && rng.chance(10) {
            at + 30
        } else {
            at
        }
    };
    let mut alerts = Vec::new();
    let mut alert_keys = BTreeSet::new();
    for group in &groups {
        for rule in &group.rules {
            let Rule::Alert { name, .. } = rule else {
                continue;
            };
            if !rng.chance(85) {
                continue;
            }
            for _ in 0..rng.between(2, 4) {
                let at = time(&mut rng);
                if alert_keys.insert((name.clone(), at)) {
                    alerts.push(AlertCheck {
                        at,
                        alertname: name.clone(),
                        exp: Vec::new(),
                    });
                }
            }
        }
    }
    let mut candidates: Vec<(String, usize)> = Vec::new();
    for group in &groups {
        for rule in &group.rules {
            if let Rule::Record { name, .. } = rule {
                candidates.push((name.clone(), rng.between(1, 2)));
            }
        }
    }
    candidates.push(("ALERTS".into(), rng.between(1, 2)));
    if rng.chance(50) {
        candidates.push(("ALERTS_FOR_STATE".into(), 1));
    }
    if rng.chance(30) {
        let extra = rng.pick(&[
            "ALERTS{alertstate=\"firing\"}",
            "count by (alertname, alertstate) (ALERTS)",
            "ALERTS{alertstate=\"pending\"}",
        ]);
        candidates.push((extra.into(), 1));
    }
    for piece in &pieces {
        let mut raw = piece.exprs.clone();
        rng.shuffle(&mut raw);
        for expr in raw.into_iter().take(rng.between(1, 2)) {
            candidates.push((expr, 1));
        }
    }
    let mut exprs = Vec::new();
    let mut expr_keys = BTreeSet::new();
    for (expr, times) in candidates {
        for _ in 0..times {
            let at = time(&mut rng);
            if expr_keys.insert((expr.clone(), at)) {
                exprs.push(ExprCheck {
                    at,
                    expr: expr.clone(),
                    exp: Vec::new(),
                });
            }
        }
    }
    // The last instant is the horizon, so every file runs the whole timeline.
    match alerts.first_mut() {
        Some(check) if !alert_keys.contains(&(check.alertname.clone(), horizon)) => {
            check.at = horizon
        }
        _ => exprs.push(ExprCheck {
            at: horizon,
            expr: "ALERTS_FOR_STATE".into(),
            exp: Vec::new(),
        }),
    }
    expr_keys.clear();
    exprs.retain(|e| expr_keys.insert((e.expr.clone(), e.at)));

    let mut inputs: Vec<Input> = pieces.into_iter().flat_map(|p| p.inputs).collect();
    let last = alerts
        .iter()
        .map(|a| a.at)
        .chain(exprs.iter().map(|e| e.at))
        .max()
        .unwrap_or(0);
    fix_dangling(&mut inputs, interval, last);
    Case {
        id: format!("c{index:03}"),
        interval,
        groups,
        eval_order,
        empty_braces,
        inputs,
        alerts,
        exprs,
    }
}

/// Rule files are numbered from 0.
fn normalise_files(groups: &mut [Group]) {
    if groups.iter().all(|g| g.file == 1) {
        groups.iter_mut().for_each(|g| g.file = 0);
    }
}

/// Writes a staleness marker after every sample at `s` that has no successor (sample
/// or marker) within 5m when `s + 5m` is no later than `last` (every instant is a
/// multiple of 30s, and so is `s`): lookback is closed in promtool 2.42 and open in
/// Prometheus 3.
fn fix_dangling(inputs: &mut [Input], interval: u32, last: u32) {
    for input in inputs.iter_mut() {
        let segs = std::mem::take(&mut input.segs);
        let mut fixed = Vec::new();
        let mut shrink_gap = false;
        let mut slot = 0usize;
        for (idx, seg) in segs.iter().enumerate() {
            slot += seg.slots();
            match seg {
                Seg::Gap(n) if shrink_gap => {
                    shrink_gap = false;
                    if *n > 1 {
                        fixed.push(Seg::Gap(n - 1));
                    }
                    continue;
                }
                Seg::Run { .. } => {}
                other => {
                    fixed.push(other.clone());
                    continue;
                }
            }
            fixed.push(seg.clone());
            let last_sample = (slot - 1) as u32 * interval;
            let dangling = match segs.get(idx + 1) {
                None => true,
                Some(Seg::Gap(n)) => {
                    segs.get(idx + 2).is_none() || (*n as u32 + 1) * interval > 300
                }
                Some(_) => false,
            };
            if dangling && last_sample + 300 <= last {
                fixed.push(Seg::Stale);
                shrink_gap = true;
            }
        }
        input.segs = fixed;
    }
}

// ---------------------------------------------------------------------------------
// Minimisation: removals and simplifications of a case.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Group(usize),
    Rule(usize, usize),
    Input(usize),
    AlertCheck(usize),
    ExprCheck(usize),
    Interval(usize),
    Labels(usize, usize),
    Annotations(usize, usize),
    For(usize, usize),
    KeepFiring(usize, usize),
    FileOrder,
}

fn ops(case: &Case) -> Vec<Op> {
    let mut ops = Vec::new();
    if case.groups.len() > 1 {
        ops.extend((0..case.groups.len()).map(Op::Group));
    }
    for (g, group) in case.groups.iter().enumerate() {
        if group.rules.len() > 1 || case.groups.len() > 1 {
            ops.extend((0..group.rules.len()).map(|r| Op::Rule(g, r)));
        }
    }
    ops.extend((0..case.inputs.len()).map(Op::Input));
    ops.extend((0..case.alerts.len()).map(Op::AlertCheck));
    ops.extend((0..case.exprs.len()).map(Op::ExprCheck));
    for (g, group) in case.groups.iter().enumerate() {
        if group.interval.is_some() {
            ops.push(Op::Interval(g));
        }
        for (r, rule) in group.rules.iter().enumerate() {
            if let Rule::Alert {
                labels,
                annotations,
                for_,
                keep_firing_for,
                ..
            } = rule
            {
                if !labels.is_empty() {
                    ops.push(Op::Labels(g, r));
                }
                if !annotations.is_empty() {
                    ops.push(Op::Annotations(g, r));
                }
                if for_.is_some() {
                    ops.push(Op::For(g, r));
                }
                if keep_firing_for.is_some() {
                    ops.push(Op::KeepFiring(g, r));
                }
            }
        }
    }
    let file_order: Vec<String> = case.groups.iter().map(|g| g.name.clone()).collect();
    if case.eval_order.as_ref().is_some_and(|o| *o != file_order) {
        ops.push(Op::FileOrder);
    }
    ops
}

fn apply(case: &Case, ops: &[Op], id: String) -> Case {
    let mut out = case.clone();
    out.id = id;
    for op in ops {
        match *op {
            Op::Interval(g) => out.groups[g].interval = None,
            Op::Labels(g, r) | Op::Annotations(g, r) | Op::For(g, r) | Op::KeepFiring(g, r) => {
                if let Rule::Alert {
                    labels,
                    annotations,
                    for_,
                    keep_firing_for,
                    ..
                } = &mut out.groups[g].rules[r]
                {
                    match op {
                        Op::Labels(..) => labels.clear(),
                        Op::Annotations(..) => annotations.clear(),
                        Op::For(..) => *for_ = None,
                        _ => *keep_firing_for = None,
                    }
                }
            }
            Op::FileOrder => {
                out.eval_order = Some(out.groups.iter().map(|g| g.name.clone()).collect())
            }
            _ => {}
        }
    }
    let indices = |wanted: fn(&Op) -> Option<usize>| -> BTreeSet<usize> {
        ops.iter().filter_map(wanted).collect()
    };
    let drop_groups = indices(|op| match op {
        Op::Group(i) => Some(*i),
        _ => None,
    });
    let drop_inputs = indices(|op| match op {
        Op::Input(i) => Some(*i),
        _ => None,
    });
    let drop_alerts = indices(|op| match op {
        Op::AlertCheck(i) => Some(*i),
        _ => None,
    });
    let drop_exprs = indices(|op| match op {
        Op::ExprCheck(i) => Some(*i),
        _ => None,
    });
    for (g, group) in out.groups.iter_mut().enumerate() {
        let drop_rules: BTreeSet<usize> = ops
            .iter()
            .filter_map(|op| match *op {
                Op::Rule(gg, r) if gg == g => Some(r),
                _ => None,
            })
            .collect();
        retain_indices(&mut group.rules, &drop_rules);
    }
    retain_indices(&mut out.groups, &drop_groups);
    out.groups.retain(|g| !g.rules.is_empty());
    retain_indices(&mut out.inputs, &drop_inputs);
    retain_indices(&mut out.alerts, &drop_alerts);
    retain_indices(&mut out.exprs, &drop_exprs);
    let names: BTreeSet<String> = out.groups.iter().map(|g| g.name.clone()).collect();
    out.eval_order = if out.groups.len() > 1 {
        out.eval_order
            .take()
            .map(|order| order.into_iter().filter(|n| names.contains(n)).collect())
    } else {
        None
    };
    normalise_files(&mut out.groups);
    out
}

fn retain_indices<T>(items: &mut Vec<T>, drop: &BTreeSet<usize>) {
    let mut idx = 0;
    items.retain(|_| {
        idx += 1;
        !drop.contains(&(idx - 1))
    });
}

// ---------------------------------------------------------------------------------
// The oracle: promtool's output, parsed.

/// Reads a Go double-quoted string (`strconv.Quote`) at the start of `text`; returns
/// it and the rest.
fn go_unquote(text: &str) -> Option<(String, &str)> {
    let mut chars = text.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut bytes: Vec<u8> = Vec::new();
    let hex = |chars: &mut std::str::CharIndices, n: usize| -> Option<u32> {
        let mut value = 0;
        for _ in 0..n {
            value = value * 16 + chars.next()?.1.to_digit(16)?;
        }
        Some(value)
    };
    while let Some((idx, c)) = chars.next() {
        match c {
            '"' => {
                return Some((
                    String::from_utf8_lossy(&bytes).into_owned(),
                    &text[idx + 1..],
                ))
            }
            '\\' => {
                let escaped = chars.next()?.1;
                let byte = |b: u8, bytes: &mut Vec<u8>| bytes.push(b);
                match escaped {
                    'n' => byte(b'\n', &mut bytes),
                    't' => byte(b'\t', &mut bytes),
                    'r' => byte(b'\r', &mut bytes),
                    'a' => byte(0x07, &mut bytes),
                    'b' => byte(0x08, &mut bytes),
                    'f' => byte(0x0c, &mut bytes),
                    'v' => byte(0x0b, &mut bytes),
                    '\\' | '"' | '\'' => byte(escaped as u8, &mut bytes),
                    'x' => byte(hex(&mut chars, 2)? as u8, &mut bytes),
                    'u' | 'U' => {
                        let code = hex(&mut chars, if escaped == 'u' { 4 } else { 8 })?;
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(
                            char::from_u32(code)?.encode_utf8(&mut buf).as_bytes(),
                        );
                    }
                    '0'..='7' => {
                        let mut value = escaped.to_digit(8)?;
                        for _ in 0..2 {
                            value = value * 8 + chars.next()?.1.to_digit(8)?;
                        }
                        byte(value as u8, &mut bytes);
                    }
                    _ => return None,
                }
            }
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    None
}

/// Reads Go's `labels.String()` (`{a="b", c="d"}`) at the start of `text`.
fn parse_labels(text: &str) -> Option<(Pairs, &str)> {
    let mut rest = text.strip_prefix('{')?;
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].to_string();
        let (value, after) = go_unquote(&rest[eq + 1..])?;
        labels.push((name, value));
        rest = after;
    }
}

/// `nil`, or `{labels} value, {labels} value` (values in Go's `'E'` format).
fn parse_samples(text: &str) -> Option<Vec<(Pairs, String)>> {
    let text = text.trim();
    if text == "nil" {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let (labels, after) = parse_labels(rest)?;
        let after = after.strip_prefix(' ')?;
        let end = after.find(", ").unwrap_or(after.len());
        out.push((labels, after[..end].to_string()));
        rest = &after[end..];
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(", ")?;
    }
}

/// Labels as a series in PromQL notation for `exp_samples`.
fn metric_notation(labels: &Pairs) -> String {
    let name = labels.iter().find(|(k, _)| k == "__name__").map(|(_, v)| v);
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    match (name, rest.is_empty()) {
        (Some(name), true) => name.clone(),
        (Some(name), false) => format!("{name}{{{}}}", rest.join(", ")),
        (None, _) => format!("{{{}}}", rest.join(", ")),
    }
}

/// What promtool printed for one file.
#[derive(Default)]
struct Observed {
    alerts: BTreeMap<(String, u32), Vec<(Pairs, Pairs)>>,
    samples: BTreeMap<(String, u32), Vec<(String, String)>>,
    /// Rule and query evaluation errors.
    errors: Vec<String>,
    /// Why the output cannot be used.
    problems: Vec<String>,
}

fn observe(lines: &[String]) -> Observed {
    let mut obs = Observed::default();
    let mut i = 0;
    while i < lines.len() {
        let text = lines[i].trim();
        if text.is_empty() || text == "SUCCESS" || text == "FAILED:" {
            i += 1;
        } else if let Some(rest) = text.strip_prefix("alertname: ") {
            i = observe_alerts(lines, i, rest, &mut obs);
        } else if let Some(rest) = text.strip_prefix("expr: ") {
            i = observe_samples(lines, i, rest, &mut obs);
        } else if text.starts_with("rule: ") {
            obs.errors.push(text.to_string());
            i += 1;
        } else {
            obs.problems
                .push(format!("unrecognised promtool line: {text}"));
            i += 1;
        }
    }
    obs
}

/// `alertname: X, time: 5m, ` then `exp:…` and `got:[ … ]`; returns the next line.
fn observe_alerts(lines: &[String], start: usize, header: &str, obs: &mut Observed) -> usize {
    let parsed = header.split_once(", time: ").and_then(|(name, time)| {
        Some((
            name.to_string(),
            parse_go_duration(time.trim().trim_end_matches(','))?,
        ))
    });
    let Some(key) = parsed else {
        obs.problems
            .push(format!("unparsed alert header: {header}"));
        return start + 1;
    };
    let mut i = start + 1;
    while i < lines.len() && !lines[i].trim().starts_with("got:") {
        i += 1;
    }
    let Some(line) = lines.get(i) else {
        obs.problems.push(format!("no got: for alert {key:?}"));
        return i;
    };
    let got = line.trim().trim_start_matches("got:");
    let mut alerts = Vec::new();
    i += 1;
    if got.trim_end_matches(',') != "[]" {
        let mut labels = None;
        while i < lines.len() && lines[i].trim() != "]" {
            let text = lines[i].trim();
            if let Some(rest) = text.strip_prefix("Labels:") {
                labels = parse_labels(rest).map(|(l, _)| l);
                if labels.is_none() {
                    obs.problems.push(format!("unparsed labels: {text}"));
                }
            } else if let Some(rest) = text.strip_prefix("Annotations:") {
                match (labels.take(), parse_labels(rest)) {
                    (Some(mut labels), Some((annotations, _))) => {
                        labels.retain(|(k, _)| k != "alertname");
                        alerts.push((labels, annotations));
                    }
                    _ => obs.problems.push(format!("unparsed annotations: {text}")),
                }
            }
            i += 1;
        }
        i += 1;
    }
    obs.alerts.insert(key, alerts);
    i
}

/// `expr: "…", time: 5m,` then `exp: …` and `got: …` (or `, err: …`).
fn observe_samples(lines: &[String], start: usize, header: &str, obs: &mut Observed) -> usize {
    let parsed = go_unquote(header).and_then(|(expr, rest)| {
        let rest = rest.strip_prefix(", time: ")?;
        let (time, tail) = rest.split_once(',')?;
        Some((expr, parse_go_duration(time)?, tail.trim().to_string()))
    });
    let Some((expr, at, tail)) = parsed else {
        obs.problems.push(format!("unparsed expr header: {header}"));
        return start + 1;
    };
    if tail.starts_with("err:") {
        obs.errors.push(lines[start].trim().to_string());
        return start + 1;
    }
    for (offset, line) in lines.iter().enumerate().skip(start + 1).take(3) {
        if let Some(got) = line.trim().strip_prefix("got:") {
            match parse_samples(got) {
                Some(samples) => {
                    let mut exp = Vec::new();
                    for (labels, value) in samples {
                        let value = match value.as_str() {
                            "NaN" => {
                                obs.problems.push(format!("NaN result of {expr:?}"));
                                value
                            }
                            "+Inf" => ".inf".to_string(),
                            "-Inf" => "-.inf".to_string(),
                            _ => value,
                        };
                        exp.push((metric_notation(&labels), value));
                    }
                    obs.samples.insert((expr, at), exp);
                }
                None => obs.problems.push(format!("unparsed samples: {got}")),
            }
            return offset + 1;
        }
    }
    obs.problems.push(format!("no got: for expr {expr:?}"));
    start + 1
}

/// promtool's judgement of a generated file.
#[derive(Clone, Debug)]
enum Status {
    /// Passes with the expectations derived from promtool's output.
    Pass,
    /// promtool reports rule or query evaluation errors: Vigil must fail it too.
    Error(String),
    /// Unusable (NaN results, output not understood, or still failing).
    Skip(String),
}

struct Oracle {
    promtool: PathBuf,
    dir: PathBuf,
}

impl Oracle {
    fn write(&self, case: &Case) {
        for file in case.rule_files() {
            std::fs::write(
                self.dir.join(case.rule_file_name(file)),
                case.render_rules(file),
            )
            .expect("write rule file");
        }
        std::fs::write(self.dir.join(case.test_name()), case.render_test()).expect("write test");
    }

    /// Runs promtool once on every case's test file; its per-file sections (stdout and
    /// stderr share one file, so they stay in order).
    fn run(&self, cases: &[&Case]) -> BTreeMap<String, Vec<String>> {
        if cases.is_empty() {
            return BTreeMap::new();
        }
        let output_path = self.dir.join("promtool-output.txt");
        let output = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&output_path)
            .expect("promtool output file");
        let status = Command::new(&self.promtool)
            .arg("test")
            .arg("rules")
            .args(cases.iter().map(|c| c.test_name()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().expect("clone output file")))
            .stderr(Stdio::from(output))
            .status()
            .expect("run promtool");
        let text = std::fs::read_to_string(&output_path).expect("read promtool output");
        let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("Unit Testing:  ") {
                current = Some(name.trim().to_string());
                sections.insert(name.trim().to_string(), Vec::new());
            } else if let Some(name) = &current {
                sections
                    .get_mut(name)
                    .expect("section exists")
                    .push(line.to_string());
            }
        }
        assert!(
            !sections.is_empty(),
            "promtool ({status}) printed no sections:\n{text}"
        );
        sections
    }

    /// Derives every case's expectations from promtool (see the module comment).
    fn derive(&self, cases: &mut [Case]) -> Vec<Status> {
        for case in cases.iter_mut() {
            case.clear_expectations();
            self.write(case);
        }
        let first = self.run(&cases.iter().collect::<Vec<_>>());
        let mut statuses = Vec::new();
        let mut confirm = Vec::new();
        for (idx, case) in cases.iter_mut().enumerate() {
            let Some(lines) = first.get(&case.test_name()) else {
                statuses.push(Status::Skip("promtool printed no section".into()));
                continue;
            };
            if lines.iter().any(|l| l == "  SUCCESS") {
                statuses.push(Status::Pass);
                continue;
            }
            let mut obs = observe(lines);
            for check in &mut case.alerts {
                if let Some(alerts) = obs.alerts.remove(&(check.alertname.clone(), check.at)) {
                    check.exp = alerts;
                }
            }
            for check in &mut case.exprs {
                if let Some(samples) = obs.samples.remove(&(check.expr.clone(), check.at)) {
                    check.exp = samples;
                }
            }
            if let Some(key) = obs.alerts.keys().next() {
                obs.problems
                    .push(format!("alert check {key:?} not in the file"));
            }
            if let Some(key) = obs.samples.keys().next() {
                obs.problems
                    .push(format!("expr check {key:?} not in the file"));
            }
            if !obs.errors.is_empty() {
                // Evaluation errors: the file fails whatever else it expects, so NaN
                // results do not matter (written as `.nan`).
                for check in &mut case.exprs {
                    for (_, value) in &mut check.exp {
                        if value == "NaN" {
                            *value = ".nan".into();
                        }
                    }
                }
                self.write(case);
                statuses.push(Status::Error(obs.errors.join("\n")));
                continue;
            }
            if let Some(problem) = obs.problems.first() {
                statuses.push(Status::Skip(problem.clone()));
                continue;
            }
            self.write(case);
            confirm.push(idx);
            statuses.push(Status::Pass);
        }
        let second = self.run(&confirm.iter().map(|&i| &cases[i]).collect::<Vec<_>>());
        for idx in confirm {
            let lines = second.get(&cases[idx].test_name());
            if !lines.is_some_and(|lines| lines.iter().any(|l| l == "  SUCCESS")) {
                statuses[idx] = Status::Skip(format!(
                    "promtool still fails with the derived expectations:\n{}",
                    lines.map(|l| l.join("\n")).unwrap_or_default()
                ));
            }
        }
        statuses
    }
}

// ---------------------------------------------------------------------------------
// Vigil's judgement and the comparison.

enum Verdict {
    Passed,
    Failed,
    Panicked,
}

struct VigilRun {
    verdict: Verdict,
    report: String,
}

fn run_vigil(dir: &Path, case: &Case) -> VigilRun {
    let path = dir.join(case.test_name());
    match std::panic::catch_unwind(AssertUnwindSafe(|| vigil_engine::unittest::run_file(&path))) {
        Ok(result) => VigilRun {
            verdict: if result.passed {
                Verdict::Passed
            } else {
                Verdict::Failed
            },
            report: result.report,
        },
        Err(panic) => VigilRun {
            verdict: Verdict::Panicked,
            report: format!(
                "vigil panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        },
    }
}

/// Vigil must pass what promtool passes, and fail with an evaluation error (`err:`)
/// what promtool fails with one (the other expectations are promtool's).
fn disagrees(status: &Status, vigil: &VigilRun) -> bool {
    match (status, &vigil.verdict) {
        (_, Verdict::Panicked) => true,
        (Status::Pass, Verdict::Failed) => true,
        (Status::Error(_), Verdict::Passed) => true,
        (Status::Error(_), Verdict::Failed) => !vigil.report.contains("err:"),
        _ => false,
    }
}

/// Greedy delta loop: applies the removals that keep the disagreement, as many at
/// once as still disagree, until none does.
fn minimise(
    oracle: &Oracle,
    case: &Case,
    status: &Status,
    vigil: VigilRun,
) -> (Case, Status, VigilRun) {
    let mut best = (case.clone(), status.clone(), vigil);
    let started = Instant::now();
    for pass in 0..40 {
        if started.elapsed().as_secs() > 40 {
            break;
        }
        let candidates_ops = ops(&best.0);
        let mut candidates: Vec<Case> = candidates_ops
            .iter()
            .enumerate()
            .map(|(k, op)| apply(&best.0, &[*op], format!("{}-m{pass:02}-{k:02}", case.id)))
            .collect();
        let statuses = oracle.derive(&mut candidates);
        let mut keep = Vec::new();
        for (k, (candidate, status)) in candidates.into_iter().zip(statuses).enumerate() {
            if matches!(status, Status::Skip(_)) {
                continue;
            }
            let vigil = run_vigil(&oracle.dir, &candidate);
            if disagrees(&status, &vigil) {
                keep.push((candidates_ops[k], candidate, status, vigil));
            }
        }
        if keep.is_empty() {
            break;
        }
        // As many of the removals at once as still disagree: all, then halves.
        let mut chunk = keep.len();
        let mut improved = false;
        while chunk > 1 && !improved {
            let some: Vec<Op> = keep[..chunk].iter().map(|k| k.0).collect();
            let mut combined = vec![apply(
                &best.0,
                &some,
                format!("{}-m{pass:02}-c{chunk}", case.id),
            )];
            let status = oracle.derive(&mut combined).remove(0);
            let candidate = combined.remove(0);
            if !matches!(status, Status::Skip(_)) {
                let vigil = run_vigil(&oracle.dir, &candidate);
                if disagrees(&status, &vigil) {
                    best = (candidate, status, vigil);
                    improved = true;
                }
            }
            chunk /= 2;
        }
        if improved {
            continue;
        }
        let (_, candidate, status, vigil) = keep.swap_remove(0);
        best = (candidate, status, vigil);
    }
    // The files of the result, as they were last written.
    oracle.write(&best.0);
    best
}

fn reproduction(oracle: &Oracle, case: &Case, status: &Status, vigil: &VigilRun) -> String {
    let mut out = String::new();
    for file in case.rule_files() {
        let name = case.rule_file_name(file);
        out.push_str(&format!(
            "--- {} ---\n{}",
            oracle.dir.join(&name).display(),
            case.render_rules(file)
        ));
    }
    out.push_str(&format!(
        "--- {} ---\n{}",
        oracle.dir.join(case.test_name()).display(),
        case.render_test()
    ));
    match status {
        Status::Pass => out.push_str("--- promtool: SUCCESS (expectations are promtool's) ---\n"),
        Status::Error(errors) => out.push_str(&format!("--- promtool: FAILED ---\n{errors}\n")),
        Status::Skip(why) => out.push_str(&format!("--- promtool: unusable ---\n{why}\n")),
    }
    out.push_str(&format!(
        "--- vigil{} ---\n{}\n",
        ad_hoc_note(&oracle.dir, case, status),
        vigil.report
    ));
    out
}

/// The first line of Vigil's report that says what failed.
fn first_failure(vigil: &VigilRun) -> String {
    vigil
        .report
        .lines()
        .map(str::trim)
        .find(|l| {
            l.starts_with("name:")
                || l.starts_with("test group")
                || l.starts_with("alertname:")
                || l.starts_with("expr:")
                || l.starts_with("rule:")
                || l.starts_with("vigil panicked")
        })
        .unwrap_or(vigil.report.lines().last().unwrap_or(""))
        .to_string()
}

/// Features of a case known to make Vigil disagree (a hint for the reader).
fn features(case: &Case) -> String {
    let mut found = Vec::new();
    if case.groups.iter().any(|g| g.interval == Some("2m")) {
        found.push("group interval 2m");
    }
    let dyadic = |step: f64| (step * 1024.0).fract() == 0.0;
    if case.inputs.iter().any(|i| {
        i.segs
            .iter()
            .any(|s| matches!(s, Seg::Run { step, n, .. } if *n > 1 && !dyadic(*step)))
    }) {
        found.push("a+bxN with a non-dyadic step");
    }
    let annotations = case.groups.iter().flat_map(|g| &g.rules).any(|r| {
        matches!(r, Rule::Alert { annotations, .. } if annotations.iter().any(|(_, v)| {
            v.contains("$labels.service") || v.contains("{{ $labels.job }} has disappeared")
        }))
    });
    if annotations {
        found.push("template reads a missing label");
    }
    if case.empty_braces
        && case
            .exprs
            .iter()
            .any(|e| e.exp.iter().any(|(l, _)| l == "{}"))
    {
        found.push("exp_samples labels {}");
    }
    if found.is_empty() {
        String::new()
    } else {
        format!(" (has: {})", found.join(", "))
    }
}

/// Whether the ad hoc evaluator alone (no incremental engine) disagrees too.
fn ad_hoc_note(dir: &Path, case: &Case, status: &Status) -> &'static str {
    let path = dir.join(case.test_name());
    let ad_hoc = std::panic::catch_unwind(AssertUnwindSafe(|| {
        vigil_engine::unittest::run_file_with(&path, vigil_engine::unittest::Mode::AdHoc)
    }));
    match ad_hoc {
        Ok(result) => {
            let run = VigilRun {
                verdict: if result.passed {
                    Verdict::Passed
                } else {
                    Verdict::Failed
                },
                report: result.report,
            };
            if disagrees(status, &run) {
                " [ad hoc evaluator disagrees too]"
            } else {
                " [ad hoc evaluator agrees with promtool]"
            }
        }
        Err(_) => " [ad hoc evaluator panics]",
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[test]
fn rules_test_agrees_with_promtool_on_generated_files() {
    let promtool = require("promtool");
    let seed = env_number("VIGIL_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let wanted = env_number("VIGIL_DIFF_FILES").map_or(DEFAULT_FILES, |n| n as usize);
    let show = env_number("VIGIL_DIFF_SHOW").map_or(DEFAULT_SHOW, |n| n as usize);
    let only = env_number("VIGIL_DIFF_ONLY").map(|n| n as usize);
    let temp = tempfile::tempdir().expect("tempdir");
    let oracle = Oracle {
        promtool,
        dir: temp.path().to_path_buf(),
    };
    let started = Instant::now();

    // Generate and derive expectations; top up once or twice for skipped files.
    let mut judged: Vec<(Case, Status)> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut next = 0;
    for _ in 0..3 {
        let need = match only {
            Some(_) if next > 0 => 0,
            Some(_) => 1,
            None => wanted.saturating_sub(judged.len()),
        };
        if need == 0 {
            break;
        }
        let mut cases: Vec<Case> = (next..next + need)
            .map(|i| generate(seed, only.unwrap_or(i)))
            .collect();
        next += need;
        let statuses = oracle.derive(&mut cases);
        for (case, status) in cases.into_iter().zip(statuses) {
            match status {
                Status::Skip(why) => skipped.push((case.id.clone(), why)),
                status => judged.push((case, status)),
            }
        }
    }
    let derived = started.elapsed();

    let mut disagreements = Vec::new();
    for (idx, (case, status)) in judged.iter().enumerate() {
        let vigil = run_vigil(&oracle.dir, case);
        if disagrees(status, &vigil) {
            disagreements.push((idx, vigil));
        }
    }
    let errors = judged
        .iter()
        .filter(|(_, s)| matches!(s, Status::Error(_)))
        .count();
    println!(
        "rules differential: seed {seed:#x}, {} skipped, {errors} with promtool evaluation errors, promtool {:.1}s, vigil {:.1}s",
        skipped.len(),
        derived.as_secs_f64(),
        (started.elapsed() - derived).as_secs_f64()
    );
    for (id, why) in skipped.iter().take(5) {
        println!("  skipped {id}: {}", why.lines().next().unwrap_or(""));
    }
    println!(
        "rules differential: {} files, {} agree",
        judged.len(),
        judged.len() - disagreements.len()
    );
    assert!(
        skipped.len() * 10 <= next,
        "too many skipped files ({} of {next}): {skipped:?}",
        skipped.len()
    );
    if disagreements.is_empty() {
        return;
    }
    for (idx, vigil) in &disagreements {
        let (case, status) = &judged[*idx];
        let theirs = match status {
            Status::Pass => "promtool passes".to_string(),
            Status::Error(e) => format!("promtool: {}", e.lines().next().unwrap_or("")),
            Status::Skip(_) => "skipped".to_string(),
        };
        println!(
            "  {}: {theirs}; vigil: {}{}{}",
            case.id,
            first_failure(vigil),
            ad_hoc_note(&oracle.dir, case, status),
            features(case)
        );
    }
    let disagreeing = disagreements.len();
    let dir = temp.keep();
    let mut shown = String::new();
    for (n, (idx, vigil)) in disagreements.into_iter().take(show).enumerate() {
        let (case, status) = &judged[idx];
        let size = case.size();
        let (small, status, vigil) = minimise(&oracle, case, status, vigil);
        shown.push_str(&format!(
            "\n=== disagreement {} ({}, minimised from {size} to {} rules, series and checks; seed {seed:#x}, VIGIL_DIFF_ONLY={}) ===\n{}",
            n + 1,
            case.id,
            small.size(),
            &case.id[1..],
            reproduction(&oracle, &small, &status, &vigil)
        ));
    }
    println!("{shown}");
    panic!(
        "vigil rules test disagrees with promtool test rules on {} of {} generated files (kept in {})",
        disagreeing,
        judged.len(),
        dir.display()
    );
}

//! Live differential test of the rule engine: the same rule file is loaded into a real
//! Prometheus 2.42 and into `vigil serve`, both receive the same samples over
//! remote_write in real time (one batch a second), and their alerts (`/api/v1/alerts`),
//! their `ALERTS` series and a recording rule's output are compared instant by instant.
//!
//! Timing (what makes the comparison exact). Prometheus evaluates the group at
//! `k + p` (k integer seconds, p the group's phase, a hash of its name and file, read
//! from the timestamps of the first recording rule's output; group names are tried until
//! 0.42s <= p <= 0.98s). Vigil evaluates alerting rules at each ingest (at the sample's
//! event time), at alert deadlines and at its ticks `k` (integer seconds, which write
//! `ALERTS` and recording output). The samples of second `k` all have the timestamp
//! `k + d`, d = p - 0.4s, and are sent just after that instant (to Prometheus first), so
//! that:
//! - Prometheus' evaluation at `k + p` and Vigil's ingest evaluation at `k + d` have seen
//!   the same samples; `/api/v1/alerts` of both is read right after Prometheus'
//!   evaluation, before the next write (0.6s later). Every window of the rules (`[5s]`,
//!   `[10s]`) holds the same samples at `k + p`, `k + d` and `k + 1`. An alert turning
//!   pending gets `activeAt = k0 + p` in Prometheus and `k0 + d` in Vigil (checked: 400ms
//!   apart), so with integral `for` both fire at the same comparison.
//! - Prometheus' `ALERTS` and recording output at `k + p` are compared with Vigil's at its
//!   tick `k + 1` (which saw the same samples), after the run, through `/api/v1/query`
//!   with `time`.
//! - The first rule, `vigil_live:seen = timestamp(up{job="api"}) or vector(0)`, records
//!   at each Prometheus evaluation the newest sample it saw: a write that reached
//!   Prometheus after its evaluation had begun (a loaded machine) shows there, and the
//!   seconds it can affect (`for` and `keep_firing_for` are at most 4s) are left out.
//!
//! The data keeps `rate()` comparisons away from extrapolation differences: counters
//! rise 10/s or stay flat (full windows give 10n/9 on both sides, never 5), new pods
//! start flat for 12s, and only pods whose counter has been flat for 11 samples go away
//! (with a staleness marker).
//!
//! Run alone: `cargo nextest run -p vigil --test it --no-capture rules_live`;
//! `VIGIL_LIVE_SEED` (decimal or 0x hex) and `VIGIL_LIVE_SECONDS` (default 60) vary it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_storage::record::stale_marker;
use vigil_storage::{LabelSet, SampleBatch};

use crate::util::{blocking_get, free_port, now_ms, post_remote_write, require, Peer, Rng, Vigil};

type Labels = BTreeMap<String, String>;

const DEFAULT_SEED: u64 = 0x5EED_2042;
const RECORD: &str = "namespace:container_memory_working_set_mb:sum";
const SEEN: &str = "vigil_live:seen";
/// Samples are written this long before Prometheus evaluates.
const WRITE_MARGIN_MS: i64 = 400;
/// Seconds after a write Prometheus' evaluation missed that are left out of the
/// comparison (the longest `for` plus `keep_firing_for`, and one more).
const AFTER_MISS: i64 = 6;

fn rules_yaml(group: &str) -> String {
    format!(
        r#"groups:
  - name: {group}
    rules:
      - record: vigil_live:seen
        expr: timestamp(up{{job="api"}}) or vector(0)
      - alert: MemoryHigh
        expr: container_memory_working_set_mb > 50
        for: 2s
        labels:
          severity: warning
        annotations:
          summary: '{{{{ $labels.pod }}}} uses {{{{ $value }}}} MB'
      - alert: MemoryCritical
        expr: container_memory_working_set_mb >= 65
        labels:
          severity: critical
        annotations:
          summary: '{{{{ $labels.namespace }}}}/{{{{ $labels.pod }}}} at {{{{ $value }}}} MB'
      - alert: QueueBacklog
        expr: app_queue_depth > 20
        for: 1s
        keep_firing_for: 3s
        annotations:
          summary: 'queue of {{{{ $labels.pod }}}} is {{{{ $value }}}}'
      - record: {RECORD}
        expr: sum by (namespace) (container_memory_working_set_mb)
      - alert: NamespaceMemoryHigh
        expr: {RECORD} > 120
        for: 2s
        annotations:
          summary: 'namespace {{{{ $labels.namespace }}}} uses {{{{ $value }}}} MB'
      - alert: ApiDown
        expr: absent(up{{job="api"}} == 1)
        for: 1s
        labels:
          severity: critical
      - alert: QueueStuck
        expr: changes(app_queue_depth[5s]) == 0 and app_queue_depth > 0
      - alert: MemoryPeak
        expr: max_over_time(container_memory_working_set_mb[5s]) > 60
        for: 1s
      - alert: HighRequestRate
        expr: rate(http_requests_total[10s]) > 5
        for: 1s
        annotations:
          summary: '{{{{ $labels.pod }}}} serves {{{{ $value }}}} requests/s'
"#
    )
}

/// The input metrics of each alert (and of the recording rule), for the history printed
/// with a difference.
fn inputs_of(name: &str) -> &'static [&'static str] {
    match name {
        "QueueBacklog" | "QueueStuck" => &["app_queue_depth"],
        "ApiDown" => &["up"],
        "HighRequestRate" => &["http_requests_total"],
        _ => &["container_memory_working_set_mb"],
    }
}

/// Alerts whose value (and so annotations) is a `rate()`: compared with a tolerance,
/// annotations not compared.
fn is_rate_alert(name: &str) -> bool {
    name == "HighRequestRate"
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn show(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

struct Pod {
    name: String,
    namespace: String,
    ip: String,
    node: String,
    memory: f64,
    queue: f64,
    requests: f64,
    fast: bool,
    /// Consecutive samples without an increment of the counter.
    flat_for: u32,
    age: u32,
}

impl Pod {
    fn memory_labels(&self) -> Labels {
        labels(&[
            ("__name__", "container_memory_working_set_mb"),
            ("namespace", &self.namespace),
            ("pod", &self.name),
            ("container", "app"),
            ("job", "kubelet"),
            ("instance", &self.node),
        ])
    }

    fn queue_labels(&self) -> Labels {
        labels(&[
            ("__name__", "app_queue_depth"),
            ("namespace", &self.namespace),
            ("pod", &self.name),
            ("job", "app"),
            ("instance", &self.ip),
        ])
    }

    fn requests_labels(&self) -> Labels {
        labels(&[
            ("__name__", "http_requests_total"),
            ("namespace", &self.namespace),
            ("pod", &self.name),
            ("job", "app"),
            ("instance", &self.ip),
            ("code", "200"),
        ])
    }
}

/// A small Kubernetes-shaped cluster: pods with a memory gauge, a queue gauge and a
/// request counter, pods going away and new ones appearing, and an `up` series of the
/// API that goes down now and then.
struct World {
    rng: Rng,
    pods: Vec<Pod>,
    api_down_for: u32,
    stats: Stats,
}

/// What the scenario exercised.
#[derive(Default, Debug)]
struct Stats {
    pods_gone: usize,
    pods_new: usize,
    api_down_seconds: usize,
    /// Seconds × namespaces without any pod (the recording rule's output went away).
    empty_namespace_seconds: usize,
    fast_counter_seconds: usize,
}

impl World {
    fn new(seed: u64) -> World {
        let mut world = World {
            rng: Rng(seed),
            pods: Vec::new(),
            api_down_for: 0,
            stats: Stats::default(),
        };
        for namespace in ["prod", "prod", "staging", "staging", "batch"] {
            let pod = world.new_pod(namespace);
            world.pods.push(pod);
        }
        world
    }

    fn new_pod(&mut self, namespace: &str) -> Pod {
        let deployments = ["api", "web", "worker", "cache"];
        let deployment = deployments[self.rng.below(deployments.len())];
        Pod {
            name: format!("{deployment}-{:05x}", self.rng.next_u64() & 0xf_ffff),
            namespace: namespace.to_string(),
            ip: format!(
                "10.0.{}.{}:8080",
                self.rng.below(256),
                1 + self.rng.below(254)
            ),
            node: format!("node-{}:10250", self.rng.below(4)),
            memory: 30.0 + 2.5 * self.rng.below(17) as f64,
            queue: self.rng.below(25) as f64,
            requests: 1000.0 * (1 + self.rng.below(50)) as f64,
            fast: false,
            flat_for: 0,
            age: 0,
        }
    }

    /// The samples of second `second` of the run (staleness markers included).
    fn step(&mut self, second: u32) -> Vec<(Labels, f64)> {
        let mut out = Vec::new();
        // A pod goes away (only one whose counter has been flat for a whole rate window,
        // so no rate() is extrapolated over a series' end).
        if self.pods.len() > 2 && self.rng.unit() < 0.15 {
            let candidates: Vec<usize> = (0..self.pods.len())
                .filter(|&i| !self.pods[i].fast && self.pods[i].flat_for >= 11)
                .collect();
            if !candidates.is_empty() {
                let pod = self
                    .pods
                    .remove(candidates[self.rng.below(candidates.len())]);
                self.stats.pods_gone += 1;
                for series in [
                    pod.memory_labels(),
                    pod.queue_labels(),
                    pod.requests_labels(),
                ] {
                    out.push((series, stale_marker()));
                }
            }
        }
        if self.pods.len() < 8 && self.rng.unit() < 0.12 {
            let namespaces = ["prod", "staging", "batch"];
            let namespace = namespaces[self.rng.below(namespaces.len())];
            let pod = self.new_pod(namespace);
            self.pods.push(pod);
            self.stats.pods_new += 1;
        }
        for i in 0..self.pods.len() {
            if self.pods[i].age > 0 {
                // Memory: a random walk with plateaus, in steps of 2.5.
                if self.rng.unit() >= 0.55 {
                    let steps = [-10.0, -5.0, -2.5, 2.5, 5.0, 10.0];
                    let delta = steps[self.rng.below(steps.len())];
                    self.pods[i].memory = (self.pods[i].memory + delta).clamp(20.0, 80.0);
                }
                if self.rng.unit() >= 0.6 {
                    let steps = [-8.0, -4.0, 4.0, 8.0];
                    let delta = steps[self.rng.below(steps.len())];
                    self.pods[i].queue = (self.pods[i].queue + delta).clamp(0.0, 40.0);
                }
                if self.pods[i].age >= 12 && self.rng.unit() < 0.12 {
                    self.pods[i].fast = !self.pods[i].fast;
                }
                if self.pods[i].fast {
                    self.stats.fast_counter_seconds += 1;
                    self.pods[i].requests += 10.0;
                    self.pods[i].flat_for = 0;
                } else {
                    self.pods[i].flat_for += 1;
                }
            }
            self.pods[i].age += 1;
            let pod = &self.pods[i];
            out.push((pod.memory_labels(), pod.memory));
            out.push((pod.queue_labels(), pod.queue));
            out.push((pod.requests_labels(), pod.requests));
        }
        let up = if self.api_down_for > 0 {
            self.api_down_for -= 1;
            0.0
        } else if second >= 5 && self.rng.unit() < 0.07 {
            self.api_down_for = 2 + self.rng.below(4) as u32;
            0.0
        } else {
            1.0
        };
        out.push((
            labels(&[
                ("__name__", "up"),
                ("job", "api"),
                ("instance", "api-0:8080"),
            ]),
            up,
        ));
        if up == 0.0 {
            self.stats.api_down_seconds += 1;
        }
        self.stats.empty_namespace_seconds += ["prod", "staging", "batch"]
            .iter()
            .filter(|ns| !self.pods.iter().any(|pod| pod.namespace == **ns))
            .count();
        out
    }
}

fn get_json(url: &str) -> Value {
    let (status, body) = blocking_get(url).unwrap_or_else(|err| panic!("GET {url}: {err}"));
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("GET {url}: {err}: {body}"))
}

fn query_url(base: &str, query: &str, time_ms: i64) -> String {
    let time = format!(
        "{}.{:03}",
        time_ms.div_euclid(1000),
        time_ms.rem_euclid(1000)
    );
    let encoded =
        serde_urlencoded::to_string([("query", query), ("time", time.as_str())]).expect("encode");
    format!("{base}/api/v1/query?{encoded}")
}

fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .unwrap_or(i64::MIN)
}

fn labels_of(value: &Value) -> Labels {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// An instant vector as labels → value.
fn instant_vector(base: &str, query: &str, time_ms: i64) -> BTreeMap<Labels, f64> {
    let body = get_json(&query_url(base, query, time_ms));
    body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sample| {
            let value = sample["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            (labels_of(&sample["metric"]), value)
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
struct AlertView {
    state: String,
    value: f64,
    annotations: Labels,
    active_at: String,
}

fn alerts(base: &str) -> BTreeMap<Labels, AlertView> {
    let body = get_json(&format!("{base}/api/v1/alerts"));
    body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|alert| {
            (
                labels_of(&alert["labels"]),
                AlertView {
                    state: alert["state"].as_str().unwrap_or_default().to_string(),
                    value: alert["value"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(f64::NAN),
                    annotations: labels_of(&alert["annotations"]),
                    active_at: alert["activeAt"].as_str().unwrap_or_default().to_string(),
                },
            )
        })
        .collect()
}

/// Prometheus' group `lastEvaluation` (the wall-clock start of its latest evaluation).
fn prometheus_last_evaluation(base: &str) -> i64 {
    let body = get_json(&format!("{base}/api/v1/rules"));
    body["data"]["groups"][0]["lastEvaluation"]
        .as_str()
        .map_or(i64::MIN, rfc3339_ms)
}

/// The instant every alerting rule of Vigil has been evaluated at (ingest evaluations
/// included): the earliest of their `lastEvaluation`s.
fn vigil_last_alert_evaluation(base: &str) -> i64 {
    let body = get_json(&format!("{base}/api/v1/rules"));
    body["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter(|rule| rule["type"] == "alerting")
        .filter_map(|rule| rule["lastEvaluation"].as_str().map(rfc3339_ms))
        .min()
        .unwrap_or(i64::MIN)
}

fn start_prometheus(binary: &Path, dir: &Path, rules: &Path, attempt: usize) -> (Peer, String) {
    let port = free_port();
    let config = dir.join(format!("prometheus-{attempt}.yml"));
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
            rules.display()
        ),
    )
    .expect("write prometheus config");
    let peer = Peer(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("prom-{attempt}")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blocking_get(&format!("{url}/-/ready")).is_ok_and(|(status, _)| status == 200) {
        assert!(Instant::now() < deadline, "prometheus at {url} not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    (peer, url)
}

/// The group's phase in ms: the timestamps of `vigil_live:seen` (before any data, the
/// `vector(0)` series) are Prometheus' evaluation instants, `k*1000 + phase`.
fn prometheus_phase(url: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = get_json(&query_url(url, "vigil_live:seen[30s]", now_ms()));
        let times: Vec<i64> = body["data"]["result"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| pair[0].as_f64())
            .map(|t| (t * 1000.0).round() as i64)
            .collect();
        // A few evaluations in: the rule manager has restored its state.
        if times.len() >= 3 {
            let phases: BTreeSet<i64> = times.iter().map(|t| t.rem_euclid(1000)).collect();
            assert_eq!(phases.len(), 1, "evaluation instants {times:?}");
            return times[0].rem_euclid(1000);
        }
        assert!(
            Instant::now() < deadline,
            "prometheus evaluates no rules: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn sleep_until(ms: i64) {
    let now = now_ms();
    if ms > now {
        std::thread::sleep(Duration::from_millis((ms - now) as u64));
    }
}

/// One second of the run: what was written and what each side said.
struct Observation {
    /// The second (Prometheus evaluated at `k*1000 + phase`).
    k: i64,
    prometheus: BTreeMap<Labels, AlertView>,
    vigil: BTreeMap<Labels, AlertView>,
}

struct Step {
    k: i64,
    samples: Vec<(Labels, f64)>,
}

/// The recent input history of the series an alert (or recorded series) is about: the
/// series of its input metrics whose labels agree with the alert's on every label both
/// have.
fn history(steps: &[Step], k: i64, key: &Labels, metrics: &[&str]) -> String {
    let window: Vec<&Step> = steps.iter().filter(|s| s.k <= k && s.k > k - 8).collect();
    let related = |series: &Labels| {
        metrics.contains(&series.get("__name__").map_or("", String::as_str))
            && key.iter().all(|(name, value)| {
                matches!(name.as_str(), "alertname" | "alertstate" | "severity")
                    || series.get(name).is_none_or(|v| v == value)
            })
    };
    let mut series: BTreeSet<&Labels> = BTreeSet::new();
    for step in &window {
        for (labels, _) in &step.samples {
            if related(labels) {
                series.insert(labels);
            }
        }
    }
    let mut out = String::new();
    if let (Some(first), Some(last)) = (window.first(), window.last()) {
        out.push_str(&format!(
            "      input, seconds {}..={} (timestamp k + d):\n",
            first.k, last.k
        ));
    }
    for labels in series {
        let values: Vec<String> = window
            .iter()
            .map(|step| {
                step.samples
                    .iter()
                    .find(|(l, _)| l == labels)
                    .map_or("-".to_string(), |(_, v)| {
                        if v.to_bits() == stale_marker().to_bits() {
                            "stale".to_string()
                        } else {
                            format!("{v}")
                        }
                    })
            })
            .collect();
        out.push_str(&format!("        {}: {}\n", show(labels), values.join(" ")));
    }
    out
}

/// The same alert on both sides: state, value and annotations, and `activeAt` in the
/// expected relation: Prometheus' is its evaluation `k0 + p`, Vigil's the ingest
/// `k0 + d` of the sample that made the condition true, `WRITE_MARGIN_MS` earlier (or one
/// second more if Prometheus' evaluation at `k0 - 1 + p` missed that second's write).
fn same_alert(
    name: &str,
    prometheus: &AlertView,
    vigil: &AlertView,
    phase: i64,
    missed: &BTreeSet<i64>,
) -> bool {
    let prometheus_active = rfc3339_ms(&prometheus.active_at);
    let offset = prometheus_active - rfc3339_ms(&vigil.active_at);
    let after_miss = missed.contains(&((prometheus_active - phase).div_euclid(1000) - 1));
    if prometheus.state != vigil.state
        || !(offset == WRITE_MARGIN_MS || (after_miss && offset == WRITE_MARGIN_MS + 1000))
    {
        return false;
    }
    if is_rate_alert(name) {
        let (a, b) = (prometheus.value, vigil.value);
        (a - b).abs() <= 1e-9 * a.abs().max(1.0)
    } else {
        prometheus.value == vigil.value && prometheus.annotations == vigil.annotations
    }
}

/// The latest sample of `metric` for the pod of `key` written up to second `k` (`None`
/// once it went stale).
fn latest_input(steps: &[Step], k: i64, metric: &str, key: &Labels) -> Option<f64> {
    steps
        .iter()
        .rev()
        .filter(|step| step.k <= k)
        .find_map(|step| {
            step.samples.iter().find(|(labels, _)| {
                labels.get("__name__").map(String::as_str) == Some(metric)
                    && labels.get("pod") == key.get("pod")
            })
        })
        .map(|(_, value)| *value)
        .filter(|value| value.to_bits() != stale_marker().to_bits())
}

fn describe(view: Option<&AlertView>) -> String {
    match view {
        None => "inactive".to_string(),
        Some(view) => format!(
            "{} value={} activeAt={} annotations={:?}",
            view.state, view.value, view.active_at, view.annotations
        ),
    }
}

#[derive(Default)]
struct Tally {
    agree: usize,
    differ: usize,
    vigil_earlier: usize,
    differences: Vec<String>,
}

#[test]
fn rules_match_prometheus_live() {
    let prometheus_bin = require("prometheus");
    let seed = std::env::var("VIGIL_LIVE_SEED")
        .ok()
        .map(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |hex| u64::from_str_radix(hex, 16))
                .expect("VIGIL_LIVE_SEED: a decimal or 0x hex integer")
        })
        .unwrap_or(DEFAULT_SEED);
    let seconds: i64 = std::env::var("VIGIL_LIVE_SECONDS")
        .ok()
        .map(|s| s.trim().parse().expect("VIGIL_LIVE_SECONDS: an integer"))
        .unwrap_or(60);
    println!("rules live: seed {seed:#x}, {seconds} seconds");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");

    // A group name whose phase leaves room on both sides of the writes.
    let mut chosen = None;
    for attempt in 0..12 {
        let group = format!("live-{attempt}");
        std::fs::write(&rules, rules_yaml(&group)).expect("write rules");
        let (peer, url) = start_prometheus(&prometheus_bin, dir.path(), &rules, attempt);
        let phase = prometheus_phase(&url);
        println!("rules live: group {group} evaluates at k + {phase}ms");
        if (WRITE_MARGIN_MS + 20..=980).contains(&phase) {
            chosen = Some((peer, url, phase, group));
            break;
        }
    }
    let (_prometheus, prom_url, phase, group) =
        chosen.expect("no group name with a phase in 0.42..0.98s in 12 attempts");
    let offset = phase - WRITE_MARGIN_MS;
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
        rules.display()
    );
    let vigil = Vigil::start(&dir.path().join("vigil"), Some(&config));
    println!(
        "rules live: group {group}, Prometheus evaluates at k + {phase}ms, samples at k + {offset}ms"
    );

    let mut world = World::new(seed);
    let mut steps: Vec<Step> = Vec::new();
    let mut observations: Vec<Observation> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let first_k = now_ms().div_euclid(1000) + 2;
    for second in 0..seconds {
        let k = first_k + second;
        let write_at = k * 1000 + offset;
        let eval_at = k * 1000 + phase;
        sleep_until(write_at + 3);
        let samples = world.step(second as u32);
        let mut batch = SampleBatch::default();
        for (labels, value) in &samples {
            let idx = batch.push_series(
                LabelSet::from_pairs(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .expect("labels"),
            );
            batch.push_sample(idx, write_at, *value);
        }
        let body = vigil_connectors::remote_write::encode(&batch);
        // Prometheus first: its evaluation at k + p is on the wall clock.
        for base in [&prom_url, &vigil.url] {
            let (status, text) = post_remote_write(&format!("{base}/api/v1/write"), &body)
                .unwrap_or_else(|err| panic!("remote_write to {base}: {err}"));
            assert_eq!(status, 204, "remote_write to {base}: {text}");
        }
        steps.push(Step { k, samples });
        // Prometheus' evaluation at k + p (and no later one), and Vigil's at k + d; both
        // read before the next write.
        sleep_until(eval_at + 5);
        let read_by = (k + 1) * 1000 + offset - 20;
        let ready = loop {
            let prom_eval = prometheus_last_evaluation(&prom_url);
            let vigil_eval = vigil_last_alert_evaluation(&vigil.url);
            if prom_eval >= eval_at && vigil_eval >= write_at {
                break prom_eval < (k + 1) * 1000 + phase;
            }
            if now_ms() > read_by {
                break false;
            }
            std::thread::sleep(Duration::from_millis(15));
        };
        let prometheus = alerts(&prom_url);
        let vigil_alerts = alerts(&vigil.url);
        if !ready || now_ms() >= read_by {
            skipped.push(format!(
                "second {second}: evaluations not observed in time (now k + {}ms)",
                now_ms() - k * 1000
            ));
            continue;
        }
        observations.push(Observation {
            k,
            prometheus,
            vigil: vigil_alerts,
        });
    }
    let last_written = steps.last().map_or(first_k, |s| s.k);
    let second_of = |k: i64| k - first_k;

    // The seconds whose write Prometheus' evaluation did not see (completely), and the
    // comparisons they can affect.
    let missed: BTreeSet<i64> = steps
        .iter()
        .map(|step| step.k)
        .filter(|&k| {
            let seen = instant_vector(
                &prom_url,
                &format!("{SEEN}{{job=\"api\"}}"),
                k * 1000 + phase,
            );
            seen.values()
                .next()
                .is_none_or(|t| (t * 1000.0).round() as i64 != k * 1000 + offset)
        })
        .collect();
    for &k in &missed {
        skipped.push(format!(
            "second {}: Prometheus' evaluation at k + p missed the write; seconds {}..={} left out",
            second_of(k),
            second_of(k),
            second_of(k + AFTER_MISS)
        ));
    }
    let observations: Vec<Observation> = observations
        .into_iter()
        .filter(|obs| {
            !missed
                .iter()
                .any(|&k| k <= obs.k && obs.k <= k + AFTER_MISS)
        })
        .collect();

    // /api/v1/alerts, instant by instant.
    let mut alerts_tally = Tally::default();
    // What the agreeing comparisons covered: alert name and state → count.
    let mut coverage: BTreeMap<String, usize> = BTreeMap::new();
    for (i, obs) in observations.iter().enumerate() {
        let keys: BTreeSet<&Labels> = obs.prometheus.keys().chain(obs.vigil.keys()).collect();
        for key in keys {
            let name = key.get("alertname").map_or("", String::as_str);
            let (p, v) = (obs.prometheus.get(key), obs.vigil.get(key));
            if let (Some(p), Some(v)) = (p, v) {
                if same_alert(name, p, v, phase, &missed) {
                    alerts_tally.agree += 1;
                    *coverage.entry(format!("{name} {}", p.state)).or_default() += 1;
                    // Firing by keep_firing_for: the condition no longer holds.
                    if name == "QueueBacklog"
                        && p.state == "firing"
                        && latest_input(&steps, obs.k, "app_queue_depth", key)
                            .is_none_or(|depth| depth <= 20.0)
                    {
                        *coverage
                            .entry("QueueBacklog kept firing".to_string())
                            .or_default() += 1;
                    }
                    continue;
                }
            }
            // Vigil's `for` elapsed in event time between two Prometheus evaluations:
            // pending in Prometheus here, firing at its next evaluation.
            let next = observations
                .get(i + 1)
                .filter(|next| next.k == obs.k + 1)
                .and_then(|next| next.prometheus.get(key));
            if p.is_some_and(|p| p.state == "pending")
                && v.is_some_and(|v| v.state == "firing")
                && next.is_some_and(|n| n.state == "firing")
            {
                alerts_tally.vigil_earlier += 1;
                continue;
            }
            alerts_tally.differ += 1;
            alerts_tally.differences.push(format!(
                "  /api/v1/alerts at second {} (Prometheus t={}.{:03}, Vigil after its ingest at t={}.{:03}): {}\n    Prometheus: {}\n    Vigil:      {}\n{}",
                second_of(obs.k),
                obs.k,
                phase,
                obs.k,
                offset,
                show(key),
                describe(p),
                describe(v),
                history(&steps, obs.k, key, inputs_of(name)),
            ));
        }
    }

    // ALERTS and the recording rule's output: Prometheus at k + p, Vigil at its tick
    // k + 1, which saw the same samples. The first instants are skipped: Prometheus 2.42
    // writes ALERTS once its rule manager has restored the alerts' state.
    let mut series_tally = Tally::default();
    for obs in observations.iter().skip(3) {
        if obs.k + 1 > last_written {
            continue;
        }
        for (query, values_matter) in [("ALERTS", false), (RECORD, true), (SEEN, true)] {
            let prom = instant_vector(&prom_url, query, obs.k * 1000 + phase);
            let ours = instant_vector(&vigil.url, query, (obs.k + 1) * 1000);
            let keys: BTreeSet<&Labels> = prom.keys().chain(ours.keys()).collect();
            for key in keys {
                let (p, v) = (prom.get(key), ours.get(key));
                let same = match (p, v) {
                    (Some(a), Some(b)) => !values_matter || a == b,
                    _ => false,
                };
                if same {
                    series_tally.agree += 1;
                    continue;
                }
                series_tally.differ += 1;
                let name = key
                    .get("alertname")
                    .map_or(query, String::as_str)
                    .to_string();
                let metrics = match query {
                    RECORD => inputs_of(""),
                    SEEN => inputs_of("ApiDown"),
                    _ => inputs_of(&name),
                };
                let show_value =
                    |value: Option<&f64>| value.map_or("absent".into(), |v| format!("{v}"));
                series_tally.differences.push(format!(
                    "  {query} at second {} (Prometheus t={}.{:03}, Vigil tick t={}.000): {}\n    Prometheus: {}\n    Vigil:      {}\n{}",
                    second_of(obs.k),
                    obs.k,
                    phase,
                    obs.k + 1,
                    show(key),
                    show_value(p),
                    show_value(v),
                    history(&steps, obs.k, key, metrics),
                ));
            }
        }
    }

    let agree = alerts_tally.agree + series_tally.agree;
    let differ = alerts_tally.differ + series_tally.differ;
    println!(
        "rules live: {} instants compared, {} skipped; /api/v1/alerts: {} agree, {} differ, {} vigil earlier; ALERTS, {RECORD} and {SEEN}: {} agree, {} differ",
        observations.len(),
        seconds - observations.len() as i64,
        alerts_tally.agree,
        alerts_tally.differ,
        alerts_tally.vigil_earlier,
        series_tally.agree,
        series_tally.differ,
    );
    let covered: Vec<String> = coverage
        .iter()
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
    println!("rules live: agreeing alerts: {}", covered.join(", "));
    println!("rules live: scenario {:?}", world.stats);
    for reason in &skipped {
        println!("  skipped {reason}");
    }
    for difference in alerts_tally
        .differences
        .iter()
        .chain(&series_tally.differences)
    {
        print!("{difference}");
    }
    println!("rules live: {agree} agree, {differ} differ");
    assert!(
        observations.len() as i64 >= seconds / 2,
        "too few instants compared: {} of {seconds}",
        observations.len()
    );
    assert!(agree > 0, "nothing compared");
    assert_eq!(
        differ, 0,
        "Vigil's rules disagree with Prometheus' (see above)"
    );
}

//! `vigil demo`: a simulated Kubernetes cluster that feeds the server over its own
//! remote_write endpoint — the same path as real data — and ships its pods' logs over
//! Elasticsearch `_bulk` and its services' traces over OTLP/HTTP (`demo_telemetry.rs`).
//!
//! Three namespaces, five deployments, ten pods. `payments/worker` is crash-looping,
//! `shop/cart` runs close to its memory limit, and the PVC of `monitoring/prometheus-0`
//! is filling up. On start the last hour is backfilled, then a sample of every series
//! is sent every 5s; the backfill uses the same 5s step, so rates do not dip where the
//! two meet (extrapolation depends on the sampling cadence).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{info, warn};
use vigil_connectors::remote_write;
use vigil_storage::{LabelSet, SampleBatch};

use crate::config::Config;

const STEP_MS: i64 = 5_000;
const LIVE_INTERVAL: Duration = Duration::from_secs(5);
const BACKFILL_MS: i64 = 3600 * 1000;
/// Logs and traces of the backfill are shipped in windows of this length (a few MB each).
const TELEMETRY_BACKFILL_MS: i64 = 5 * 60 * 1000;

/// The demo's config: defaults, with 15-minute blocks so Parquet files appear soon.
pub fn config() -> Config {
    let mut config = Config::default();
    config.storage.block_period = Duration::from_secs(15 * 60);
    config.global.evaluation_interval = Duration::from_secs(15);
    config
}

/// The shipped Kubernetes alerting rules (`rules/kubernetes.yml`), embedded.
pub fn rule_groups() -> anyhow::Result<Vec<vigil_engine::rules::Group>> {
    let text = include_str!("../rules/kubernetes.yml");
    let spec =
        vigil_engine::rules::parse_document(text).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    vigil_engine::rules::validate("rules/kubernetes.yml", &spec)
        .map_err(|e| anyhow::anyhow!(e.join("; ")))
}

pub fn print_banner(address: SocketAddr, data_dir: &Path) {
    println!(
        "\nVigil demo: a simulated Kubernetes cluster is writing to http://{address}/api/v1/write\n\
         data directory: {}\n\n\
         Try:\n  \
         cargo run --release -- sql --url http://{address} \"SELECT name, count(*) AS samples FROM metrics GROUP BY name ORDER BY name\"\n  \
         curl -s http://{address}/api/v1/sql --data-urlencode \"query=SELECT labels['pod'] AS pod, max(value) AS restarts FROM metrics WHERE name = 'kube_pod_container_status_restarts_total' GROUP BY 1 ORDER BY 2 DESC\"\n  \
         cargo run --release -- sql --url http://{address} \"SELECT s.service, s.name, s.duration_ns / 1e6 AS ms, l.body FROM spans s JOIN logs l ON l.trace_id = s.trace_id WHERE s.status = 'error' LIMIT 5\"\n  \
         curl -s 'http://{address}/api/traces?service=frontend&limit=5'   # the Jaeger API (Grafana's Jaeger data source)\n  \
         curl -s http://{address}/metrics\n\nPress Ctrl-C to stop.\n",
        data_dir.display()
    );
}

struct Pod {
    namespace: &'static str,
    deployment: &'static str,
    name: String,
    node: &'static str,
    cpu_cores: f64,
    cpu_limit: f64,
    memory_bytes: f64,
    memory_limit: f64,
    crash_looping: bool,
    cpu_seconds: f64,
    rx_bytes: f64,
    restarts: f64,
}

struct Service {
    namespace: &'static str,
    name: &'static str,
    rps: f64,
    error_ratio: f64,
    counts: [f64; 3],
}

struct Volume {
    namespace: &'static str,
    claim: &'static str,
    capacity: f64,
    available: f64,
    /// Bytes consumed per second.
    fill_rate: f64,
}

pub struct Cluster {
    pods: Vec<Pod>,
    services: Vec<Service>,
    volumes: Vec<Volume>,
    rng: u64,
    last_ms: i64,
}

impl Cluster {
    pub fn new(start_ms: i64) -> Cluster {
        let gib = 1024.0 * 1024.0 * 1024.0;
        let mut pods = Vec::new();
        let deployments: [(&str, &str, usize, f64, f64, f64, f64); 5] = [
            ("shop", "frontend", 3, 0.25, 1.0, 0.3 * gib, 1.0 * gib),
            ("shop", "cart", 2, 0.4, 1.0, 0.96 * gib, 1.0 * gib),
            ("payments", "api", 2, 0.95, 1.0, 0.4 * gib, 1.0 * gib),
            ("payments", "worker", 1, 0.1, 0.5, 0.2 * gib, 0.5 * gib),
            (
                "monitoring",
                "prometheus",
                2,
                0.9,
                2.0,
                2.0 * gib,
                4.0 * gib,
            ),
        ];
        let nodes = ["node-a", "node-b", "node-c"];
        for (ns, deployment, replicas, cpu, cpu_limit, memory, memory_limit) in deployments {
            for replica in 0..replicas {
                let name = if deployment == "prometheus" {
                    format!("prometheus-{replica}")
                } else {
                    format!(
                        "{deployment}-7d9f8c6b5-{}",
                        ["x2k4p", "m9qzt", "c8wrn"][replica]
                    )
                };
                pods.push(Pod {
                    namespace: ns,
                    deployment,
                    name,
                    node: nodes[(pods.len()) % nodes.len()],
                    cpu_cores: cpu,
                    cpu_limit,
                    memory_bytes: memory,
                    memory_limit,
                    crash_looping: deployment == "worker",
                    cpu_seconds: 1000.0 * cpu,
                    rx_bytes: 1e9,
                    restarts: 0.0,
                });
            }
        }
        Cluster {
            pods,
            services: vec![
                Service {
                    namespace: "shop",
                    name: "frontend",
                    rps: 120.0,
                    error_ratio: 0.002,
                    counts: [0.0; 3],
                },
                Service {
                    namespace: "payments",
                    name: "api",
                    rps: 40.0,
                    error_ratio: 0.03,
                    counts: [0.0; 3],
                },
            ],
            volumes: vec![
                Volume {
                    namespace: "monitoring",
                    claim: "prometheus-db-prometheus-0",
                    capacity: 50.0 * gib,
                    available: 6.0 * gib,
                    fill_rate: 1.5e6,
                },
                Volume {
                    namespace: "monitoring",
                    claim: "prometheus-db-prometheus-1",
                    capacity: 50.0 * gib,
                    available: 30.0 * gib,
                    fill_rate: 0.0,
                },
                Volume {
                    namespace: "payments",
                    claim: "ledger-data",
                    capacity: 20.0 * gib,
                    available: 15.0 * gib,
                    fill_rate: 0.0,
                },
            ],
            rng: 0x9e37_79b9_7f4a_7c15,
            last_ms: start_ms,
        }
    }

    /// A deterministic value in [0, 1).
    fn noise(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Advances the cluster to `now_ms` and appends one sample of every series.
    pub fn sample(&mut self, now_ms: i64, batch: &mut SampleBatch) {
        let dt = ((now_ms - self.last_ms).max(0) as f64) / 1000.0;
        self.last_ms = now_ms;
        let push = |batch: &mut SampleBatch, pairs: &[(&str, &str)], value: f64| {
            if let Ok(labels) = LabelSet::from_pairs(pairs.iter().copied()) {
                let idx = batch.push_series(labels);
                batch.push_sample(idx, now_ms, value);
            }
        };
        for idx in 0..self.pods.len() {
            let jitter = self.noise();
            let pod = &mut self.pods[idx];
            let cpu = pod.cpu_cores * (0.95 + 0.1 * jitter);
            pod.cpu_seconds += cpu * dt;
            pod.rx_bytes += 2e5 * (0.5 + jitter) * dt;
            if pod.crash_looping && (now_ms / 60_000) % 2 == 0 && dt > 0.0 {
                let before = ((now_ms as f64 - dt * 1000.0) / 120_000.0).floor();
                if (now_ms as f64 / 120_000.0).floor() > before {
                    pod.restarts += 1.0;
                }
            }
            let memory = pod.memory_bytes * (0.98 + 0.04 * jitter);
            let (ns, name, container, node) =
                (pod.namespace, pod.name.as_str(), pod.deployment, pod.node);
            let base = [("namespace", ns), ("pod", name), ("container", container)];
            let kubelet = |name: &'static str| {
                let mut pairs = vec![
                    ("__name__", name),
                    ("job", "kubelet"),
                    ("node", node),
                    ("instance", node),
                ];
                pairs.extend_from_slice(&base);
                pairs
            };
            push(
                batch,
                &kubelet("container_cpu_usage_seconds_total"),
                pod.cpu_seconds,
            );
            push(
                batch,
                &kubelet("container_memory_working_set_bytes"),
                memory,
            );
            let mut rx = kubelet("container_network_receive_bytes_total");
            rx.retain(|(name, _)| *name != "container");
            rx.push(("interface", "eth0"));
            push(batch, &rx, pod.rx_bytes);
            let ksm = |name: &'static str| {
                let mut pairs = vec![
                    ("__name__", name),
                    ("job", "kube-state-metrics"),
                    ("instance", "kube-state-metrics:8080"),
                ];
                pairs.extend_from_slice(&base);
                pairs
            };
            push(
                batch,
                &ksm("kube_pod_container_status_restarts_total"),
                pod.restarts,
            );
            let mut cpu_limit = ksm("kube_pod_container_resource_limits");
            cpu_limit.extend([("resource", "cpu"), ("unit", "core")]);
            push(batch, &cpu_limit, pod.cpu_limit);
            let mut memory_limit = ksm("kube_pod_container_resource_limits");
            memory_limit.extend([("resource", "memory"), ("unit", "byte")]);
            push(batch, &memory_limit, pod.memory_limit);
            let mut waiting = ksm("kube_pod_container_status_waiting_reason");
            waiting.push(("reason", "CrashLoopBackOff"));
            push(batch, &waiting, if pod.crash_looping { 1.0 } else { 0.0 });
        }
        for idx in 0..self.services.len() {
            let jitter = self.noise();
            let service = &mut self.services[idx];
            let requests = service.rps * (0.9 + 0.2 * jitter) * dt;
            service.counts[0] += requests * (1.0 - service.error_ratio) * 0.8;
            service.counts[1] += requests * (1.0 - service.error_ratio) * 0.2;
            service.counts[2] += requests * service.error_ratio;
            for (slot, (method, code)) in [("GET", "200"), ("POST", "200"), ("GET", "500")]
                .into_iter()
                .enumerate()
            {
                push(
                    batch,
                    &[
                        ("__name__", "http_requests_total"),
                        ("job", service.name),
                        ("namespace", service.namespace),
                        ("service", service.name),
                        ("method", method),
                        ("code", code),
                    ],
                    service.counts[slot].floor(),
                );
            }
        }
        for volume in &mut self.volumes {
            volume.available =
                (volume.available - volume.fill_rate * dt).max(volume.capacity * 0.01);
            let labels = |name: &'static str| {
                [
                    ("__name__", name),
                    ("job", "kubelet"),
                    ("namespace", volume.namespace),
                    ("persistentvolumeclaim", volume.claim),
                ]
            };
            push(
                batch,
                &labels("kubelet_volume_stats_available_bytes"),
                volume.available.round(),
            );
            push(
                batch,
                &labels("kubelet_volume_stats_capacity_bytes"),
                volume.capacity,
            );
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn send(client: &reqwest::Client, url: &str, batch: &SampleBatch) -> bool {
    let body = remote_write::encode(batch);
    match client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            warn!(status = %response.status(), "demo write rejected");
            false
        }
        Err(err) => {
            warn!(error = %err, "demo write failed");
            false
        }
    }
}

/// The demo's history is a function of its epoch (stored in the data directory) and the
/// 5s grid: every sample time is `epoch + k·5s`, live ones included. A restarted demo
/// replays the simulation silently up to the newest sample storage already holds and
/// continues from there, so its counters continue exactly (no resets, no rejected
/// backfill).
fn epoch(data_dir: &Path, now: i64) -> i64 {
    let path = data_dir.join("demo-epoch");
    if let Some(epoch) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
    {
        return epoch;
    }
    let epoch = (now - BACKFILL_MS) / STEP_MS * STEP_MS;
    if let Err(err) = std::fs::write(&path, epoch.to_string()) {
        warn!(error = %err, "cannot record the demo's epoch; a restart will start over");
    }
    epoch
}

/// Backfills up to now (the last hour on a fresh data directory, or from where a
/// previous run stopped), then writes live samples on the same 5s grid until `stop`
/// changes.
pub async fn run(
    address: SocketAddr,
    storage: std::sync::Arc<vigil_storage::Storage>,
    data_dir: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!("http://{address}/api/v1/write");
    let client = reqwest::Client::new();
    let now = now_ms();
    let start = epoch(&data_dir, now);
    let mut cluster = Cluster::new(start);
    // The newest demo sample already stored (its series are the ones one step writes).
    let mut probe = SampleBatch::default();
    Cluster::new(start).sample(start, &mut probe);
    let stored = probe
        .series
        .iter()
        .filter_map(|labels| storage.latest_timestamp(labels.series_id()))
        .max();
    let mut ts = start;
    if let Some(stored) = stored {
        let mut skipped = SampleBatch::default();
        while ts <= stored {
            cluster.sample(ts, &mut skipped);
            skipped.series.clear();
            skipped.samples.clear();
            ts += STEP_MS;
        }
        info!(
            resumed_after_ms = stored,
            "demo resumes its simulated cluster"
        );
    }
    // Logs and traces from the same moment on, through `_bulk` and OTLP/HTTP.
    let base = format!("http://{address}");
    let mut telemetry = crate::demo_telemetry::Telemetry::new(start as u64);
    let mut telemetry_from = ts;
    let mut batch = SampleBatch::default();
    let mut sent = 0;
    while ts < now {
        cluster.sample(ts, &mut batch);
        if batch.series.len() >= 2000 {
            sent += batch.samples.len();
            send(&client, &url, &std::mem::take(&mut batch)).await;
        }
        ts += STEP_MS;
    }
    sent += batch.samples.len();
    send(&client, &url, &std::mem::take(&mut batch)).await;
    let (mut records, mut spans) = (0, 0);
    while telemetry_from < ts {
        let to = (telemetry_from + TELEMETRY_BACKFILL_MS).min(ts);
        let shipped = telemetry.between(telemetry_from, to);
        records += shipped.log_records;
        spans += shipped.spans;
        crate::demo_telemetry::ship(&client, &base, &shipped).await;
        telemetry_from = to;
    }
    info!(
        samples = sent,
        log_records = records,
        spans,
        "demo backfilled up to now"
    );
    let mut ticker = tokio::time::interval(LIVE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let mut batch = SampleBatch::default();
        while ts <= now_ms() {
            cluster.sample(ts, &mut batch);
            ts += STEP_MS;
        }
        if !batch.samples.is_empty() {
            send(&client, &url, &batch).await;
        }
        if telemetry_from < ts {
            let shipped = telemetry.between(telemetry_from, ts);
            crate::demo_telemetry::ship(&client, &base, &shipped).await;
            telemetry_from = ts;
        }
    }
}

/// The demo's continuous query: error logs per namespace and minute, maintained as the
/// simulated pods' logs arrive.
pub fn continuous_query() -> vigil_engine::continuous::Definition {
    vigil_engine::continuous::Definition {
        name: "errors_per_minute".into(),
        language: vigil_engine::continuous::Language::Sql,
        query: "SELECT date_bin(INTERVAL '1 minute', timestamp) AS minute, \
                stream['namespace'] AS namespace, count(*) AS errors, \
                count(DISTINCT stream['pod']) AS pods \
                FROM logs WHERE severity = 'error' GROUP BY 1, 2"
            .into(),
        horizon_ms: vigil_engine::continuous::DEFAULT_HORIZON_MS,
        step_ms: None,
        owner: "demo".into(),
        // Each minute's counts go to Parquet (`errors_per_minute_closed`) two minutes
        // after it starts.
        persist: Some(vigil_engine::continuous::closed::Persist {
            window_column: "minute".into(),
            close_after_ms: 120_000,
        }),
    }
}

//! Storage harness (not criterion) on Kubernetes-shaped data: Vigil vs Prometheus 2.42
//! (`prometheus` on PATH, `--web.enable-remote-write-receiver`) vs VictoriaMetrics 1.79
//! (`/usr/bin/victoria-metrics`), every system fed the identical remote_write bodies in
//! the same run.
//!
//! Data: a seeded generator of a cluster, 100 series per pod with ~11 labels each
//! (cadvisor `job="kubelet"`, kube-state-metrics, an application's `http_requests_total`
//! and classic histogram `http_request_duration_seconds`), 20 namespaces, 15s samples
//! ending now. Each scrape target (a node's kubelet, kube-state-metrics, a pod) has a
//! fixed offset in the 15s cycle, as Prometheus spreads its scrapes, so no sample sits
//! on the 15s grid that queries are evaluated on.
//!
//! 1. Ingest: remote_write, 2,000 samples per request, 4 connections, series sharded
//!    over the connections (a series always on the same one, in time order). 10k series
//!    × 3h (`VIGIL_BENCH_HOURS_10K`) and 100k series × 30 min (`VIGIL_BENCH_MINUTES_100K`).
//!    Samples/s (wall), samples per server CPU-second (utime+stime from /proc), ack
//!    latency p50/p99, peak RSS (VmHWM). Any non-2xx answer aborts the run.
//! 2. WAL bytes per sample right after ingest (Vigil `wal`, Prometheus `wal` + `chunks_head`).
//! 3. Bytes per sample on disk after a graceful stop (SIGTERM).
//! 4. Dashboard queries on the 10k data, Vigil vs Prometheus, instant and two ranges:
//!    (a) Vigil as ingested (default config; head-resident), (b) a second Vigil fed the
//!    same data with `storage.head_window: 0s`, queried once its head is flushed to Parquet.
//!
//! Run: `cargo bench --bench storage [-- ingest|query]` (nothing = both).
//! Prints Markdown tables for BENCHMARKS.md on stdout; progress goes to stderr.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use vigil_connectors::remote_write;
use vigil_storage::{LabelSet, SampleBatch};

const SAMPLES_PER_REQUEST: usize = 2000;
const CONNECTIONS: usize = 4;
const SCRAPE_MS: i64 = 15_000;
const SERIES_PER_POD: usize = 100;
const QUERY_RUNS: usize = 5;
const PROMETHEUS_CONFIG: &str = "global:\n  scrape_interval: 1m\n";
const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";
/// The namespace of the single-namespace dashboard query.
const QUERY_NAMESPACE: &str = "checkout";

// ---------------------------------------------------------------------------------------
// Servers

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (up to 10 minutes, then SIGKILL); returns how long it took.
    async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!(
                            "warning: {} exited with {status} after SIGTERM; log tail:\n{}",
                            self.url,
                            log_tail(&self.log)
                        );
                    }
                    return started.elapsed();
                }
                Ok(None) if started.elapsed() < Duration::from_secs(600) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    eprintln!("warning: {} did not stop in 10 minutes: killed", self.url);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return started.elapsed();
                }
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Spawns `command` (stdout and stderr to `log`) and waits until `GET {url}{ready_path}`
/// answers 2xx; an exit before that is an error carrying the log's tail.
async fn spawn_ready(
    mut command: Command,
    port: u16,
    ready_path: &str,
    log: PathBuf,
) -> Result<Server, String> {
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = command
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("spawn {command:?}: {e}"))?;
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let client = reqwest::Client::new();
    for _ in 0..1200 {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "exited with {status} before ready:\n{}",
                log_tail(&server.log)
            ));
        }
        if let Ok(response) = client
            .get(format!("{}{ready_path}", server.url))
            .send()
            .await
        {
            if response.status().is_success() {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{} not ready after 120s", server.url))
}

/// `vigil serve` on a free port with data in `dir` and an optional config file.
async fn start_vigil(dir: &Path, config: Option<&Path>, log: PathBuf) -> Result<Server, String> {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("VIGIL_LOG", "warn");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    spawn_ready(command, port, "/-/ready", log).await
}

/// Prometheus with the remote-write receiver; config in `dir/prometheus.yml`, TSDB in
/// `dir/tsdb`.
async fn start_prometheus(dir: &Path, log: PathBuf) -> Result<Server, String> {
    let port = free_port();
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, PROMETHEUS_CONFIG).expect("config");
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver");
    spawn_ready(command, port, "/-/ready", log).await
}

async fn start_victoria_metrics(dir: &Path, log: PathBuf) -> Result<Server, String> {
    let port = free_port();
    let mut command = Command::new(VICTORIA_METRICS);
    command
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=100y");
    spawn_ready(command, port, "/health", log).await
}

// ---------------------------------------------------------------------------------------
// /proc, disk, machine

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/pid/stat");
    // Fields after the command (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / ticks
}

/// VmHWM of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/pid/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Apparent size of every file under `path`.
fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                dir_bytes(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

fn has_file_with_ext(path: &Path, ext: &str) -> bool {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                has_file_with_ext(&path, ext)
            } else {
                path.extension().is_some_and(|e| e == ext)
            }
        })
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn print_header() {
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = if command_output("git", &["status", "--porcelain"]).is_empty() {
        ""
    } else {
        "-dirty"
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("Commit measured: `{commit}{dirty}`  ");
    println!(
        "Machine: {cpus} × {model}, {mem_gib:.0} GiB RAM (load average at start: {})\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

// ---------------------------------------------------------------------------------------
// Data: a seeded Kubernetes cluster

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.f64().max(1e-12);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with the given median and log-space sigma.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }

    fn hex(&mut self, n: usize) -> String {
        self.chars(b"0123456789abcdef", n)
    }

    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(4),
            self.hex(4),
            self.hex(12)
        )
    }

    /// A scrape target's offset in the 15s cycle, off the grid.
    fn offset_ms(&mut self) -> i64 {
        500 + (self.next_u64() % 14_000) as i64
    }
}

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy)]
enum Model {
    Constant,
    /// A counter rising by `rate` per second, ±`noise` relative, rounded if `integer`.
    Counter {
        rate: f64,
        noise: f64,
        integer: bool,
    },
    /// A counter that rises by one with probability `p` per scrape.
    Rare {
        p: f64,
    },
    /// A gauge wandering around `mean` (relative step `vol`, mean reversion `revert`).
    Gauge {
        mean: f64,
        vol: f64,
        revert: f64,
        max: f64,
        integer: bool,
    },
    /// A gauge that only rises, now and then (max usage, disk usage).
    Ratchet,
    /// The scrape's timestamp in seconds (`container_last_seen`).
    LastSeen,
    /// Set by the pod's application model (requests and histogram).
    App,
}

/// The application of one pod: `http_requests_total` by (handler, method, code) and the
/// latency histogram of `GET /api/v1/items` (log-logistic latencies).
struct AppModel {
    requests: [usize; 6],
    rates: [f64; 6],
    buckets: [usize; 12],
    sum: usize,
    count: usize,
    median_s: f64,
    shape: f64,
}

const BUCKETS: [f64; 12] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];
const REQUEST_KINDS: [(&str, &str, &str, f64); 6] = [
    ("/api/v1/items", "GET", "200", 0.70),
    ("/api/v1/items", "GET", "404", 0.04),
    ("/api/v1/items", "GET", "500", 0.006),
    ("/api/v1/items", "POST", "201", 0.20),
    ("/api/v1/items", "POST", "503", 0.003),
    ("/healthz", "GET", "200", 0.0),
];

impl AppModel {
    fn step(&self, rng: &mut Rng, values: &mut [f64]) {
        let mut get_items = 0.0;
        for k in 0..6 {
            let expected = self.rates[k] * SCRAPE_MS as f64 / 1000.0;
            let inc = (expected * (1.0 + 0.25 * rng.normal())).max(0.0).round();
            values[self.requests[k]] += inc;
            if k < 3 {
                get_items += inc;
            }
        }
        let mut cumulative: f64 = 0.0;
        for (b, le) in BUCKETS.iter().enumerate() {
            let in_bucket = if le.is_infinite() {
                get_items
            } else {
                let cdf = 1.0 / (1.0 + (le / self.median_s).powf(-self.shape));
                (get_items * cdf * rng.range(0.97, 1.03)).round()
            };
            cumulative = in_bucket.clamp(cumulative, get_items);
            values[self.buckets[b]] += cumulative;
        }
        values[self.count] += get_items;
        let mean = self.median_s * 1.3;
        values[self.sum] += (get_items * mean * (1.0 + 0.05 * rng.normal())).max(0.0);
    }
}

struct SeriesSpec {
    labels: LabelSet,
    model: Model,
    initial: f64,
    offset_ms: i64,
}

struct Dataset {
    n_series: usize,
    rounds: usize,
    /// End of the data (ms, on the 15s grid): the last scrape round; every series' last
    /// sample lies within the 15s before it.
    end_ms: i64,
    /// Request bodies per connection, in send order.
    shards: Vec<Vec<Bytes>>,
    wire_bytes: usize,
}

impl Dataset {
    fn samples(&self) -> usize {
        self.n_series * self.rounds
    }
}

const NAMESPACES: [(&str, f64); 20] = [
    ("kube-system", 10.0),
    ("monitoring", 5.0),
    ("ingress-nginx", 2.0),
    ("cert-manager", 1.0),
    ("logging", 4.0),
    ("argocd", 2.0),
    ("checkout", 8.0),
    ("payments", 6.0),
    ("cart", 5.0),
    ("catalog", 7.0),
    ("search", 6.0),
    ("recommendations", 4.0),
    ("users", 5.0),
    ("auth", 3.0),
    ("orders", 6.0),
    ("shipping", 3.0),
    ("notifications", 3.0),
    ("analytics", 4.0),
    ("frontend", 8.0),
    ("batch", 3.0),
];
const APPS: [&str; 6] = ["api", "worker", "web", "consumer", "cache", "gateway"];
const SIDECARS: [(&str, &str); 3] = [
    ("istio-proxy", "docker.io/istio/proxyv2:1.19.3"),
    ("fluent-bit", "cr.fluentbit.io/fluent/fluent-bit:2.1.10"),
    (
        "config-reloader",
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.68.0",
    ),
];
const POD_NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const CADVISOR_CONTAINER: [&str; 18] = [
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_memory_cache",
    "container_memory_usage_bytes",
    "container_memory_max_usage_bytes",
    "container_spec_memory_limit_bytes",
    "container_spec_cpu_shares",
    "container_fs_usage_bytes",
    "container_fs_reads_bytes_total",
    "container_fs_writes_bytes_total",
    "container_threads",
    "container_last_seen",
    "container_oom_events_total",
];
const CADVISOR_POD: [&str; 6] = [
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_cpu_system_seconds_total",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_memory_usage_bytes",
];
const CADVISOR_NETWORK: [&str; 8] = [
    "container_network_receive_bytes_total",
    "container_network_transmit_bytes_total",
    "container_network_receive_packets_total",
    "container_network_transmit_packets_total",
    "container_network_receive_errors_total",
    "container_network_transmit_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_transmit_packets_dropped_total",
];

struct Node {
    name: String,
    instance: String,
    ip: String,
    offset_ms: i64,
}

/// One container's resources and usage profile.
struct Container {
    name: String,
    image: String,
    cid: String,
    cpu_cores: f64,
    memory_bytes: f64,
    cpu_limit: f64,
    memory_limit: f64,
}

/// The series of a cluster of `n_pods` pods (100 each) and their models.
fn cluster(n_pods: usize, rng: &mut Rng) -> (Vec<SeriesSpec>, Vec<AppModel>) {
    let n_nodes = n_pods.div_ceil(30).max(3);
    let nodes: Vec<Node> = (0..n_nodes)
        .map(|i| {
            let ip = format!("10.0.{}.{}", 16 + i / 200, 10 + i % 200);
            Node {
                name: format!("ip-{}.eu-west-1.compute.internal", ip.replace('.', "-")),
                instance: format!("{ip}:10250"),
                ip,
                offset_ms: rng.offset_ms(),
            }
        })
        .collect();
    let ksm_offset = rng.offset_ms();
    let ksm_instance = "10.1.0.17:8080";
    let total_weight: f64 = NAMESPACES.iter().map(|(_, w)| w).sum();
    let mut replica_sets: HashMap<String, String> = HashMap::new();
    let mut pod_names = std::collections::HashSet::new();
    let mut specs = Vec::with_capacity(n_pods * SERIES_PER_POD);
    let mut apps = Vec::with_capacity(n_pods);
    let start_time = (now_ms() / 1000 - 40 * 86_400) as f64;

    for p in 0..n_pods {
        // The first 20 pods cover every namespace; then weighted.
        let namespace = if let Some((first, _)) = NAMESPACES.get(p) {
            first
        } else {
            let mut pick = rng.range(0.0, total_weight);
            NAMESPACES
                .iter()
                .find(|(_, w)| {
                    pick -= w;
                    pick < 0.0
                })
                .map_or(NAMESPACES[0].0, |(n, _)| n)
        };
        let app = format!("{}-{}", namespace, APPS[rng.below(APPS.len())]);
        let rs = replica_sets
            .entry(app.clone())
            .or_insert_with(|| rng.chars(POD_NAME_CHARS, 10))
            .clone();
        let pod = loop {
            let name = format!("{app}-{rs}-{}", rng.chars(POD_NAME_CHARS, 5));
            if pod_names.insert(name.clone()) {
                break name;
            }
        };
        let node = &nodes[rng.below(nodes.len())];
        let uid = rng.uuid();
        let pod_ip = format!("10.244.{}.{}", rng.below(250), 2 + rng.below(250));
        let pod_offset = rng.offset_ms();
        let pending = rng.f64() < 0.03;
        let sidecar = SIDECARS[rng.below(SIDECARS.len())];
        let app_cpu = rng.lognormal(0.08, 1.0).min(3.5);
        let app_memory = rng.lognormal(256.0 * 1024.0 * 1024.0, 0.8).min(3.0e9);
        let containers = [
            Container {
                name: "app".into(),
                image: format!(
                    "registry.example.com/{namespace}/{app}:v1.{}.{}",
                    rng.below(40),
                    rng.below(10)
                ),
                cid: rng.hex(64),
                cpu_cores: app_cpu,
                memory_bytes: app_memory,
                cpu_limit: [0.5f64, 1.0, 2.0, 4.0][rng.below(4)].max((app_cpu * 2.0).ceil()),
                memory_limit: (app_memory * rng.range(1.5, 3.0) / 67_108_864.0).ceil()
                    * 67_108_864.0,
            },
            Container {
                name: sidecar.0.into(),
                image: sidecar.1.into(),
                cid: rng.hex(64),
                cpu_cores: rng.lognormal(0.01, 0.5),
                memory_bytes: rng.lognormal(48.0 * 1024.0 * 1024.0, 0.3),
                cpu_limit: 0.2,
                memory_limit: 128.0 * 1024.0 * 1024.0,
            },
        ];
        let pod_cgroup = format!("/kubepods/burstable/pod{uid}");
        let base = specs.len();

        // cadvisor: 18 series per container.
        let kubelet = |name: &'static str| -> Vec<(&'static str, String)> {
            vec![
                ("__name__", name.to_string()),
                ("endpoint", "https-metrics".into()),
                ("instance", node.instance.clone()),
                ("job", "kubelet".into()),
                ("namespace", namespace.to_string()),
                ("node", node.name.clone()),
                ("pod", pod.clone()),
            ]
        };
        for c in &containers {
            let id = format!("{pod_cgroup}/{}", c.cid);
            for metric in CADVISOR_CONTAINER {
                let mut owned = kubelet(metric);
                owned.push(("container", c.name.clone()));
                owned.push(("id", id.clone()));
                owned.push(("image", c.image.clone()));
                owned.push(("name", c.cid.clone()));
                if metric.starts_with("container_fs_") {
                    owned.push(("device", "/dev/nvme0n1p1".into()));
                }
                let (model, initial) = cadvisor_model(metric, c, rng, start_time);
                push(&mut specs, &owned, model, initial, node.offset_ms);
            }
        }
        // cadvisor: the pod's cgroup (no container, image or name).
        let pod_container = Container {
            name: String::new(),
            image: String::new(),
            cid: String::new(),
            cpu_cores: containers[0].cpu_cores + containers[1].cpu_cores,
            memory_bytes: containers[0].memory_bytes + containers[1].memory_bytes,
            cpu_limit: 0.0,
            memory_limit: 0.0,
        };
        for metric in CADVISOR_POD {
            let mut owned = kubelet(metric);
            owned.push(("id", pod_cgroup.clone()));
            let (model, initial) = cadvisor_model(metric, &pod_container, rng, start_time);
            push(&mut specs, &owned, model, initial, node.offset_ms);
        }
        // cadvisor: the network of the pod's sandbox (pause container).
        let pause = rng.hex(64);
        let rx_bytes = rng.lognormal(40_000.0, 1.2);
        let tx_bytes = rx_bytes * rng.range(0.3, 3.0);
        for metric in CADVISOR_NETWORK {
            let mut owned = kubelet(metric);
            owned.push(("container", "POD".into()));
            owned.push(("id", format!("{pod_cgroup}/{pause}")));
            owned.push(("image", "registry.k8s.io/pause:3.9".into()));
            owned.push(("interface", "eth0".into()));
            owned.push(("name", pause.clone()));
            let bytes = if metric.contains("receive") {
                rx_bytes
            } else {
                tx_bytes
            };
            let model = if metric.ends_with("_bytes_total") {
                Model::Counter {
                    rate: bytes,
                    noise: 0.3,
                    integer: true,
                }
            } else if metric.ends_with("_packets_total") {
                Model::Counter {
                    rate: bytes / rng.range(400.0, 1200.0),
                    noise: 0.3,
                    integer: true,
                }
            } else if metric.contains("dropped") && rng.f64() < 0.2 {
                Model::Rare { p: 0.01 }
            } else {
                Model::Constant
            };
            push(
                &mut specs,
                &owned,
                model,
                (bytes * rng.range(1e4, 1e6)).round(),
                node.offset_ms,
            );
        }

        // kube-state-metrics: 10 pod series, 10 per container.
        let ksm = |name: &'static str| -> Vec<(&'static str, String)> {
            vec![
                ("__name__", name.to_string()),
                ("endpoint", "http".into()),
                ("instance", ksm_instance.into()),
                ("job", "kube-state-metrics".into()),
                ("namespace", namespace.to_string()),
                ("pod", pod.clone()),
                ("service", "kube-state-metrics".into()),
                ("uid", uid.clone()),
            ]
        };
        let mut owned = ksm("kube_pod_info");
        owned.extend([
            ("created_by_kind", "ReplicaSet".to_string()),
            ("created_by_name", format!("{app}-{rs}")),
            ("host_ip", node.ip.clone()),
            ("node", node.name.clone()),
            ("pod_ip", pod_ip.clone()),
        ]);
        push(&mut specs, &owned, Model::Constant, 1.0, ksm_offset);
        let phase = if pending { "Pending" } else { "Running" };
        for candidate in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
            let mut owned = ksm("kube_pod_status_phase");
            owned.push(("phase", candidate.into()));
            push(
                &mut specs,
                &owned,
                Model::Constant,
                if candidate == phase { 1.0 } else { 0.0 },
                ksm_offset,
            );
        }
        let ready = if pending { "false" } else { "true" };
        for condition in ["true", "false", "unknown"] {
            let mut owned = ksm("kube_pod_status_ready");
            owned.push(("condition", condition.into()));
            push(
                &mut specs,
                &owned,
                Model::Constant,
                if condition == ready { 1.0 } else { 0.0 },
                ksm_offset,
            );
        }
        let mut owned = ksm("kube_pod_owner");
        owned.extend([
            ("owner_is_controller", "true".to_string()),
            ("owner_kind", "ReplicaSet".to_string()),
            ("owner_name", format!("{app}-{rs}")),
        ]);
        push(&mut specs, &owned, Model::Constant, 1.0, ksm_offset);
        for c in &containers {
            let restarts = if rng.f64() < 0.05 {
                Model::Rare {
                    p: if rng.f64() < 0.3 { 0.02 } else { 0.003 },
                }
            } else {
                Model::Constant
            };
            let running = if pending { 0.0 } else { 1.0 };
            let resources = [
                (
                    "kube_pod_container_resource_requests",
                    "cpu",
                    "core",
                    c.cpu_limit / 2.0,
                ),
                (
                    "kube_pod_container_resource_requests",
                    "memory",
                    "byte",
                    c.memory_limit / 2.0,
                ),
                (
                    "kube_pod_container_resource_limits",
                    "cpu",
                    "core",
                    c.cpu_limit,
                ),
                (
                    "kube_pod_container_resource_limits",
                    "memory",
                    "byte",
                    c.memory_limit,
                ),
            ];
            let status: [(&'static str, Model, f64); 6] = [
                ("kube_pod_container_info", Model::Constant, 1.0),
                ("kube_pod_container_status_ready", Model::Constant, running),
                (
                    "kube_pod_container_status_running",
                    Model::Constant,
                    running,
                ),
                (
                    "kube_pod_container_status_restarts_total",
                    restarts,
                    rng.below(3) as f64,
                ),
                (
                    "kube_pod_container_status_waiting",
                    Model::Constant,
                    1.0 - running,
                ),
                ("kube_pod_container_status_terminated", Model::Constant, 0.0),
            ];
            for (metric, model, initial) in status {
                let mut owned = ksm(metric);
                owned.push(("container", c.name.clone()));
                if metric == "kube_pod_container_info" {
                    owned.push(("container_id", format!("containerd://{}", c.cid)));
                    owned.push(("image", c.image.clone()));
                }
                push(&mut specs, &owned, model, initial, ksm_offset);
            }
            for (metric, resource, unit, value) in resources {
                let mut owned = ksm(metric);
                owned.push(("container", c.name.clone()));
                owned.push(("resource", resource.into()));
                owned.push(("unit", unit.into()));
                push(&mut specs, &owned, Model::Constant, value, ksm_offset);
            }
        }

        // The application: 6 request counters, a 12-bucket histogram with sum and count.
        let app_labels = |name: &'static str| -> Vec<(&'static str, String)> {
            vec![
                ("__name__", name.to_string()),
                ("container", "app".into()),
                ("endpoint", "http".into()),
                ("instance", format!("{pod_ip}:8080")),
                ("job", app.clone()),
                ("namespace", namespace.to_string()),
                ("pod", pod.clone()),
                ("service", app.clone()),
            ]
        };
        let rps = rng.lognormal(8.0, 1.2);
        let errors = rng.f64() < 0.6;
        let mut requests = [0; 6];
        let mut rates = [0.0; 6];
        for (k, (handler, method, code, share)) in REQUEST_KINDS.iter().enumerate() {
            let mut owned = app_labels("http_requests_total");
            owned.push(("code", code.to_string()));
            owned.push(("handler", handler.to_string()));
            owned.push(("method", method.to_string()));
            requests[k] = specs.len();
            rates[k] = if code.starts_with('5') && !errors {
                0.0
            } else if *handler == "/healthz" {
                0.1
            } else {
                rps * share
            };
            push(
                &mut specs,
                &owned,
                Model::App,
                rng.below(1_000_000) as f64,
                pod_offset,
            );
        }
        let mut buckets = [0; 12];
        let first_bucket = specs.len();
        for (b, le) in BUCKETS.iter().enumerate() {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let mut owned = app_labels("http_request_duration_seconds_bucket");
            owned.push(("handler", "/api/v1/items".into()));
            owned.push(("le", le));
            owned.push(("method", "GET".into()));
            buckets[b] = first_bucket + b;
            push(&mut specs, &owned, Model::App, 0.0, pod_offset);
        }
        for suffix in [
            "http_request_duration_seconds_sum",
            "http_request_duration_seconds_count",
        ] {
            let mut owned = app_labels(suffix);
            owned.push(("handler", "/api/v1/items".into()));
            owned.push(("method", "GET".into()));
            push(&mut specs, &owned, Model::App, 0.0, pod_offset);
        }
        assert_eq!(specs.len() - base, SERIES_PER_POD, "series per pod");
        apps.push(AppModel {
            requests,
            rates,
            buckets,
            sum: first_bucket + 12,
            count: first_bucket + 13,
            median_s: rng.lognormal(0.03, 0.8),
            shape: rng.range(2.5, 5.0),
        });
    }
    (specs, apps)
}

/// Adds one series.
fn push(
    specs: &mut Vec<SeriesSpec>,
    owned: &[(&str, String)],
    model: Model,
    initial: f64,
    offset_ms: i64,
) {
    specs.push(SeriesSpec {
        labels: LabelSet::from_pairs(owned.iter().map(|(k, v)| (*k, v.as_str()))).expect("labels"),
        model,
        initial,
        offset_ms,
    });
}

/// The model and first value of a cadvisor series of container `c` (the pod's cgroup
/// when `c.name` is empty).
fn cadvisor_model(metric: &str, c: &Container, rng: &mut Rng, start_time: f64) -> (Model, f64) {
    let cpu = |share: f64| Model::Counter {
        rate: c.cpu_cores * share,
        noise: 0.3,
        integer: false,
    };
    let gauge = |mean: f64, max: f64| Model::Gauge {
        mean,
        vol: 0.01,
        revert: 0.02,
        max,
        integer: true,
    };
    let memory_max = if c.memory_limit > 0.0 {
        c.memory_limit
    } else {
        f64::MAX
    };
    let uptime = rng.range(3600.0, 30.0 * 86_400.0);
    match metric {
        "container_cpu_usage_seconds_total" => (cpu(1.0), c.cpu_cores * uptime),
        "container_cpu_user_seconds_total" => (cpu(0.7), 0.7 * c.cpu_cores * uptime),
        "container_cpu_system_seconds_total" => (cpu(0.3), 0.3 * c.cpu_cores * uptime),
        "container_cpu_cfs_periods_total" => (
            Model::Counter {
                rate: 10.0,
                noise: 0.02,
                integer: true,
            },
            (10.0 * uptime).round(),
        ),
        "container_cpu_cfs_throttled_periods_total" => {
            if c.cpu_cores > 0.4 * c.cpu_limit && rng.f64() < 0.5 {
                (
                    Model::Counter {
                        rate: rng.range(0.05, 2.0),
                        noise: 0.5,
                        integer: true,
                    },
                    rng.below(100_000) as f64,
                )
            } else {
                (Model::Constant, rng.below(50) as f64)
            }
        }
        "container_memory_working_set_bytes" => {
            (gauge(c.memory_bytes, memory_max), c.memory_bytes.round())
        }
        "container_memory_rss" => (
            gauge(0.8 * c.memory_bytes, memory_max),
            (0.8 * c.memory_bytes).round(),
        ),
        "container_memory_cache" => {
            let cache = c.memory_bytes * rng.range(0.05, 0.6);
            (gauge(cache, f64::MAX), cache.round())
        }
        "container_memory_usage_bytes" => (
            gauge(1.2 * c.memory_bytes, memory_max),
            (1.2 * c.memory_bytes).round(),
        ),
        "container_memory_max_usage_bytes" => (Model::Ratchet, (1.4 * c.memory_bytes).round()),
        "container_spec_memory_limit_bytes" => (Model::Constant, c.memory_limit),
        "container_spec_cpu_shares" => (Model::Constant, (c.cpu_limit * 512.0).round()),
        "container_fs_usage_bytes" => (Model::Ratchet, (rng.lognormal(2e7, 1.0)).round()),
        "container_fs_reads_bytes_total" | "container_fs_writes_bytes_total" => {
            if rng.f64() < 0.4 {
                (Model::Constant, rng.below(1 << 30) as f64)
            } else {
                (
                    Model::Counter {
                        rate: rng.lognormal(2000.0, 1.5),
                        noise: 0.8,
                        integer: true,
                    },
                    rng.below(1 << 34) as f64,
                )
            }
        }
        "container_threads" => (
            Model::Gauge {
                mean: 20.0,
                vol: 0.02,
                revert: 0.1,
                max: 400.0,
                integer: true,
            },
            (5 + rng.below(40)) as f64,
        ),
        "container_last_seen" => (Model::LastSeen, 0.0),
        "container_oom_events_total" => (Model::Constant, 0.0),
        _ => (Model::Constant, start_time),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `n_pods` pods' series (100 each), `rounds` scrapes 15s apart ending now, encoded as
/// remote_write bodies: series sharded over the connections, each shard's samples in
/// time order, 2,000 samples per request.
fn generate(n_pods: usize, rounds: usize) -> Dataset {
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n_pods as u64).wrapping_mul(0x0100_0000_01b3));
    let (specs, apps) = cluster(n_pods, &mut rng);
    let n = specs.len();
    let end_ms = now_ms() / SCRAPE_MS * SCRAPE_MS;
    let round_ms = |r: usize| end_ms - (rounds - 1 - r) as i64 * SCRAPE_MS;
    let mut current: Vec<f64> = specs.iter().map(|s| s.initial).collect();
    let mut values = vec![0.0f64; n * rounds];
    for r in 0..rounds {
        for (s, spec) in specs.iter().enumerate() {
            let v = &mut current[s];
            match spec.model {
                Model::Constant | Model::App => {}
                Model::Counter {
                    rate,
                    noise,
                    integer,
                } => {
                    if r > 0 {
                        let inc = (rate * 15.0 * (1.0 + noise * rng.normal())).max(0.0);
                        *v += if integer { inc.round() } else { inc };
                    }
                }
                Model::Rare { p } => {
                    if r > 0 && rng.f64() < p {
                        *v += 1.0;
                    }
                }
                Model::Gauge {
                    mean,
                    vol,
                    revert,
                    max,
                    integer,
                } => {
                    let next = *v + revert * (mean - *v) + vol * mean * rng.normal();
                    let next = next.clamp(0.0, max);
                    *v = if integer { next.round() } else { next };
                }
                Model::Ratchet => {
                    if rng.f64() < 0.02 {
                        *v = (*v * rng.range(1.0, 1.05)).round();
                    }
                }
                Model::LastSeen => {
                    *v = ((round_ms(r) - spec.offset_ms) / 1000) as f64;
                }
            }
        }
        if r > 0 {
            for app in &apps {
                app.step(&mut rng, &mut current);
            }
        }
        values[r * n..(r + 1) * n].copy_from_slice(&current);
    }
    let series: Vec<LabelSet> = specs.iter().map(|s| s.labels.clone()).collect();
    let offsets: Vec<i64> = specs.iter().map(|s| s.offset_ms).collect();
    let shards: Vec<Vec<Bytes>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|shard| {
                let (series, offsets, values) = (&series, &offsets, &values);
                scope.spawn(move || {
                    let mine: Vec<usize> = (0..n).filter(|s| s % CONNECTIONS == shard).collect();
                    let mut bodies = Vec::new();
                    let mut batch = SampleBatch::default();
                    let mut index: HashMap<usize, u32> = HashMap::new();
                    for r in 0..rounds {
                        for &s in &mine {
                            let idx = *index
                                .entry(s)
                                .or_insert_with(|| batch.push_series(series[s].clone()));
                            batch.push_sample(idx, round_ms(r) - offsets[s], values[r * n + s]);
                            if batch.samples.len() == SAMPLES_PER_REQUEST {
                                bodies.push(Bytes::from(remote_write::encode(&batch)));
                                batch = SampleBatch::default();
                                index.clear();
                            }
                        }
                    }
                    if !batch.is_empty() {
                        bodies.push(Bytes::from(remote_write::encode(&batch)));
                    }
                    bodies
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("encoder thread"))
            .collect()
    });
    let wire_bytes = shards.iter().flatten().map(Bytes::len).sum();
    let data = Dataset {
        n_series: n,
        rounds,
        end_ms,
        shards,
        wire_bytes,
    };
    eprintln!(
        "generated {n} series × {rounds} samples ({} requests, {:.1} MiB snappy) in {:.1}s",
        data.shards.iter().map(Vec::len).sum::<usize>(),
        wire_bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    data
}

// ---------------------------------------------------------------------------------------
// Ingest

struct IngestStats {
    wall_s: f64,
    cpu_s: f64,
    /// Per-request ack latency, ms, sorted.
    latencies: Vec<f64>,
    peak_rss: u64,
}

impl IngestStats {
    fn percentile(&self, p: f64) -> f64 {
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }
}

/// Sends every body of `data` to `url` (`/api/v1/write`), one connection per shard, each
/// request after the previous one's ack; panics on any non-2xx answer.
async fn ingest(system: &str, server: &Server, data: &Dataset, ticks: f64) -> IngestStats {
    let endpoint = format!("{}/api/v1/write", server.url);
    let cpu_before = cpu_seconds(server.pid(), ticks);
    let started = Instant::now();
    let tasks: Vec<_> = data
        .shards
        .iter()
        .map(|bodies| {
            let bodies = bodies.clone();
            let endpoint = endpoint.clone();
            let system = system.to_string();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(300))
                    .build()
                    .expect("client");
                let mut latencies = Vec::with_capacity(bodies.len());
                for (i, body) in bodies.into_iter().enumerate() {
                    let sent = Instant::now();
                    let response = client
                        .post(&endpoint)
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{system}: request {i} failed: {e}"));
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    assert!(
                        status.is_success(),
                        "{system}: request {i} answered {status}: {text}"
                    );
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("ingest connection"));
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(server.pid(), ticks) - cpu_before;
    latencies.sort_by(f64::total_cmp);
    let stats = IngestStats {
        wall_s,
        cpu_s,
        latencies,
        peak_rss: peak_rss(server.pid()),
    };
    eprintln!(
        "{system}: {} samples in {wall_s:.1}s ({:.0}/s), server CPU {cpu_s:.1}s, ack p50 {:.1} ms p99 {:.1} ms, peak RSS {:.0} MiB",
        data.samples(),
        data.samples() as f64 / wall_s,
        stats.percentile(0.5),
        stats.percentile(0.99),
        stats.peak_rss as f64 / 1048576.0
    );
    stats
}

/// Everything measured about one system on one dataset.
struct SystemRun {
    ingest: IngestStats,
    /// WAL (+ Prometheus' chunks_head) bytes right after ingest; None: not applicable.
    wal_bytes: Option<u64>,
    /// Vigil: samples in the head right after ingest.
    head_samples: Option<f64>,
    /// Vigil with queries: samples in the head when the queries ran.
    head_at_query: Option<f64>,
    disk_bytes: u64,
    /// (label, bytes) parts of `disk_bytes`.
    disk_parts: Vec<(&'static str, u64)>,
    stop_s: f64,
}

async fn metrics_text(url: &str) -> String {
    match reqwest::get(format!("{url}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of an unlabelled metric in a /metrics text.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

// ---------------------------------------------------------------------------------------
// Queries

const QUERIES: [&str; 9] = [
    "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
    "histogram_quantile(0.99, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))",
    "sum by (namespace) (rate(http_requests_total{code=~\"5..\"}[5m])) / sum by (namespace) (rate(http_requests_total[5m]))",
    "topk(5, sum by (pod) (rate(container_network_receive_bytes_total[5m])))",
    "increase(kube_pod_container_status_restarts_total[1h]) > 0",
    "sum by (namespace, pod) (container_memory_working_set_bytes) / on (namespace, pod) sum by (namespace, pod) (kube_pod_container_resource_limits{resource=\"memory\"})",
    "max_over_time(container_memory_working_set_bytes[10m])",
    "sum(rate(container_cpu_usage_seconds_total{namespace=\"NAMESPACE\"}[5m])) by (pod)",
    "count by (namespace) (kube_pod_status_phase{phase=\"Running\"} == 1)",
];

/// (label, range seconds, step seconds); range 0 = instant.
const KINDS: [(&str, i64, i64); 3] = [
    ("instant", 0, 0),
    ("range 1h / 15s", 3600, 15),
    ("range 3h / 60s", 10_800, 60),
];

struct QueryResult {
    first_ms: f64,
    median_ms: f64,
    /// The first answer's `data`, or the error.
    data: Result<serde_json::Value, String>,
}

async fn query_once(
    client: &reqwest::Client,
    url: &str,
    query: &str,
    kind: (&str, i64, i64),
    end_s: i64,
) -> Result<serde_json::Value, String> {
    let (_, range, step) = kind;
    let request = if range == 0 {
        client
            .post(format!("{url}/api/v1/query"))
            .form(&[("query", query.to_string()), ("time", end_s.to_string())])
    } else {
        client.post(format!("{url}/api/v1/query_range")).form(&[
            ("query", query.to_string()),
            ("start", (end_s - range).to_string()),
            ("end", end_s.to_string()),
            ("step", step.to_string()),
        ])
    };
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{status}: {e}: {}", String::from_utf8_lossy(&bytes)))?;
    if !status.is_success() || body["status"] != "success" {
        return Err(format!("{status}: {}", body["error"]));
    }
    Ok(body["data"].clone())
}

/// Every query × kind: one cold run, then `QUERY_RUNS` timed runs.
async fn run_queries(system: &str, url: &str, end_s: i64) -> Vec<QueryResult> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    let mut results = Vec::new();
    for query in QUERIES {
        let query = query.replace("NAMESPACE", QUERY_NAMESPACE);
        for kind in KINDS {
            let started = Instant::now();
            let first = query_once(&client, url, &query, kind, end_s).await;
            let first_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut times = Vec::new();
            if first.is_ok() {
                for _ in 0..QUERY_RUNS {
                    let started = Instant::now();
                    if let Err(err) = query_once(&client, url, &query, kind, end_s).await {
                        eprintln!("warning: {system}: `{query}` ({}) failed: {err}", kind.0);
                    }
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            times.sort_by(f64::total_cmp);
            let median_ms = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
            if let Err(err) = &first {
                eprintln!("warning: {system}: `{query}` ({}) failed: {err}", kind.0);
            }
            results.push(QueryResult {
                first_ms,
                median_ms,
                data: first,
            });
        }
    }
    eprintln!("{system}: {} queries timed", results.len());
    results
}

fn parse_sample_value(v: &serde_json::Value) -> f64 {
    match v.as_str().unwrap_or("") {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

/// The series of a query answer, keyed by their sorted labels, with their points.
fn series_of(data: &serde_json::Value) -> BTreeMap<String, Vec<(f64, f64)>> {
    let point =
        |p: &serde_json::Value| (p[0].as_f64().unwrap_or(f64::NAN), parse_sample_value(&p[1]));
    let mut out = BTreeMap::new();
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            out.insert(String::new(), vec![point(&data["result"])]);
        }
        _ => {
            for item in data["result"].as_array().into_iter().flatten() {
                let labels: BTreeMap<String, String> = item["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let key = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let points = if item.get("value").is_some() {
                    vec![point(&item["value"])]
                } else {
                    item["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(point)
                        .collect()
                };
                out.insert(key, points);
            }
        }
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan())
        || a == b
        || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
        || (a - b).abs() <= 1e-12
}

/// A description of how two answers differ (series count; for instant queries, and
/// for ranges too, values within 1e-6 relative), or None.
fn compare(ours: &serde_json::Value, theirs: &serde_json::Value) -> Option<String> {
    let (a, b) = (series_of(ours), series_of(theirs));
    if a.len() != b.len() {
        return Some(format!("{} series vs {}", a.len(), b.len()));
    }
    let mut differing = 0;
    let mut example = String::new();
    for (key, points) in &a {
        let Some(other) = b.get(key) else {
            differing += 1;
            if example.is_empty() {
                example = format!("series {{{key}}} only in Vigil's answer");
            }
            continue;
        };
        let same = points.len() == other.len()
            && points
                .iter()
                .zip(other)
                .all(|(p, q)| p.0 == q.0 && same_value(p.1, q.1));
        if !same {
            differing += 1;
            if example.is_empty() {
                let first = points
                    .iter()
                    .zip(other)
                    .find(|(p, q)| p.0 != q.0 || !same_value(p.1, q.1));
                example = match first {
                    Some((p, q)) => format!("{{{key}}}: ({}, {}) vs ({}, {})", p.0, p.1, q.0, q.1),
                    None => format!("{{{key}}}: {} points vs {}", points.len(), other.len()),
                };
            }
        }
    }
    (differing > 0).then(|| format!("{differing} of {} series differ, e.g. {example}", a.len()))
}

fn geomean(ratios: &[f64]) -> f64 {
    let logs: Vec<f64> = ratios
        .iter()
        .filter(|r| r.is_finite() && **r > 0.0)
        .map(|r| r.ln())
        .collect();
    if logs.is_empty() {
        return f64::NAN;
    }
    (logs.iter().sum::<f64>() / logs.len() as f64).exp()
}

fn print_query_table(title: &str, vigil: &[QueryResult], prometheus: &[QueryResult]) {
    println!("\n#### {title}\n");
    println!("| query | kind | result series (Vigil / Prometheus) | Vigil first ms | Vigil median ms | Prometheus first ms | Prometheus median ms | Vigil / Prometheus (medians) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut ratios: Vec<(bool, f64)> = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    for query in QUERIES {
        let query = query.replace("NAMESPACE", QUERY_NAMESPACE);
        for kind in KINDS {
            let (ours, theirs) = (&vigil[i], &prometheus[i]);
            i += 1;
            let count = |r: &QueryResult| match &r.data {
                Ok(data) => series_of(data).len().to_string(),
                Err(_) => "error".into(),
            };
            let ratio = ours.median_ms / theirs.median_ms;
            let ratio_text = match (&ours.data, &theirs.data) {
                (Ok(a), Ok(b)) => {
                    if let Some(diff) = compare(a, b) {
                        warnings.push(format!("`{query}` ({}): {diff}", kind.0));
                    }
                    ratios.push((kind.1 == 0, ratio));
                    format!("{ratio:.2}")
                }
                (Err(err), _) => {
                    warnings.push(format!("`{query}` ({}): Vigil failed: {err}", kind.0));
                    "—".into()
                }
                (_, Err(err)) => {
                    warnings.push(format!("`{query}` ({}): Prometheus failed: {err}", kind.0));
                    "—".into()
                }
            };
            println!(
                "| `{}` | {} | {} / {} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio_text} |",
                query.replace('|', "\\|"),
                kind.0,
                count(ours),
                count(theirs),
                ours.first_ms,
                ours.median_ms,
                theirs.first_ms,
                theirs.median_ms,
            );
        }
    }
    let pick = |instant: Option<bool>| -> Vec<f64> {
        ratios
            .iter()
            .filter(|(is_instant, _)| instant.is_none_or(|want| want == *is_instant))
            .map(|(_, r)| *r)
            .collect()
    };
    for (label, which) in [
        ("all", None),
        ("instant", Some(true)),
        ("range", Some(false)),
    ] {
        let r = pick(which);
        println!(
            "| **geometric mean ({label}, {} queries)** | | | | | | | **{:.2}** |",
            r.len(),
            geomean(&r)
        );
    }
    for warning in warnings {
        println!("\n> warning: {warning}");
    }
}

// ---------------------------------------------------------------------------------------
// Runs

/// Polls Vigil's /metrics until the head and the flush count stay unchanged for 35s (a
/// maintenance tick is at most 30s), so no flush starts during the queries; at most 5
/// minutes. Returns the head samples then.
async fn vigil_settle(url: &str) -> f64 {
    let started = Instant::now();
    let mut last = (f64::NAN, f64::NAN);
    let mut since = Instant::now();
    loop {
        let text = metrics_text(url).await;
        let now = (
            metric_value(&text, "vigil_head_samples").unwrap_or(f64::NAN),
            metric_value(&text, "vigil_head_flushes_total").unwrap_or(f64::NAN),
        );
        if now.0.to_bits() != last.0.to_bits() || now.1.to_bits() != last.1.to_bits() {
            last = now;
            since = Instant::now();
        }
        if since.elapsed() >= Duration::from_secs(35)
            || started.elapsed() > Duration::from_secs(300)
        {
            return last.0;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits (up to 10 minutes) until Vigil's head is empty and Parquet files exist, then
/// until the flush count has not moved for 3 mean flush durations (at least 5s), so the
/// last frozen head is written. Returns the seconds waited, or an error.
async fn vigil_flushed(url: &str, data_dir: &Path) -> Result<f64, String> {
    let started = Instant::now();
    let blocks = data_dir.join("blocks").join("metrics");
    let mut stable_since: Option<(Instant, f64)> = None;
    loop {
        let text = metrics_text(url).await;
        let head = metric_value(&text, "vigil_head_samples").unwrap_or(f64::NAN);
        let flushes = metric_value(&text, "vigil_head_flushes_total").unwrap_or(0.0);
        let flush_s = metric_value(&text, "vigil_head_flush_duration_seconds_total").unwrap_or(0.0);
        let mean_flush = if flushes > 0.0 {
            flush_s / flushes
        } else {
            0.0
        };
        if head == 0.0 && has_file_with_ext(&blocks, "parquet") {
            match stable_since {
                Some((since, count)) if count == flushes => {
                    if since.elapsed().as_secs_f64() >= (3.0 * mean_flush).max(5.0) {
                        return Ok(started.elapsed().as_secs_f64());
                    }
                }
                _ => stable_since = Some((Instant::now(), flushes)),
            }
        } else {
            stable_since = None;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "after 10 minutes: vigil_head_samples {head}, parquet files: {}",
                has_file_with_ext(&blocks, "parquet")
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum System {
    Vigil,
    Prometheus,
    VictoriaMetrics,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Vigil => "Vigil",
            System::Prometheus => "Prometheus",
            System::VictoriaMetrics => "VictoriaMetrics",
        }
    }
}

/// Starts `system` on a fresh directory, ingests `data`, measures WAL, optionally runs
/// the queries, stops it gracefully and measures the disk.
async fn run_system(
    system: System,
    root: &Path,
    data: &Dataset,
    ticks: f64,
    with_queries: bool,
) -> (SystemRun, Option<Vec<QueryResult>>) {
    let tag = format!("{}-{}", system.name().to_lowercase(), data.n_series);
    let dir = root.join(&tag);
    let log = root.join(format!("{tag}.log"));
    let started = match system {
        System::Vigil => start_vigil(&dir, None, log).await,
        System::Prometheus => start_prometheus(&dir, log).await,
        System::VictoriaMetrics => start_victoria_metrics(&dir, log).await,
    };
    let mut server = started.unwrap_or_else(|e| panic!("{}: {e}", system.name()));
    let ingest = ingest(system.name(), &server, data, ticks).await;
    let (wal_bytes, head_samples) = match system {
        System::Vigil => (
            Some(dir_bytes(&dir.join("wal"))),
            metric_value(&metrics_text(&server.url).await, "vigil_head_samples"),
        ),
        System::Prometheus => (
            Some(dir_bytes(&dir.join("tsdb/wal")) + dir_bytes(&dir.join("tsdb/chunks_head"))),
            None,
        ),
        System::VictoriaMetrics => (None, None),
    };
    let mut head_at_query = None;
    let queries = if with_queries {
        let end_s = data.end_ms / 1000;
        if system == System::Vigil {
            let head = vigil_settle(&server.url).await;
            eprintln!(
                "Vigil (head-resident): {head} of {} samples in the head at query time",
                data.samples()
            );
            head_at_query = Some(head);
        }
        Some(run_queries(system.name(), &server.url, end_s).await)
    } else {
        None
    };
    let stop_s = server.stop().await.as_secs_f64();
    let (disk_bytes, disk_parts) = match system {
        System::Vigil => (
            dir_bytes(&dir),
            vec![
                ("Parquet", dir_bytes(&dir.join("blocks"))),
                ("WAL", dir_bytes(&dir.join("wal"))),
            ],
        ),
        System::Prometheus => {
            let tsdb = dir.join("tsdb");
            let wal = dir_bytes(&tsdb.join("wal"));
            let head_chunks = dir_bytes(&tsdb.join("chunks_head"));
            let total = dir_bytes(&tsdb);
            (
                total,
                vec![
                    ("blocks and other", total.saturating_sub(wal + head_chunks)),
                    ("wal", wal),
                    ("chunks_head", head_chunks),
                ],
            )
        }
        System::VictoriaMetrics => (dir_bytes(&dir), Vec::new()),
    };
    eprintln!(
        "{}: stopped in {stop_s:.1}s, {disk_bytes} bytes on disk",
        system.name()
    );
    let _ = std::fs::remove_dir_all(&dir);
    (
        SystemRun {
            ingest,
            wal_bytes,
            head_samples,
            head_at_query,
            disk_bytes,
            disk_parts,
            stop_s,
        },
        queries,
    )
}

/// The second Vigil: `storage.head_window: 0s`, fed the same data, queried once its
/// head is in Parquet. Err: why it was skipped.
async fn run_flushed_vigil(
    root: &Path,
    data: &Dataset,
    ticks: f64,
) -> Result<(IngestStats, f64, u64, Vec<QueryResult>), String> {
    let config = root.join("vigil-flushed.yaml");
    std::fs::write(&config, "storage:\n  head_window: 0s\n").expect("config");
    let dir = root.join("vigil-flushed");
    let mut server = start_vigil(&dir, Some(&config), root.join("vigil-flushed.log"))
        .await
        .map_err(|e| format!("Vigil rejected `storage.head_window: 0s`: {e}"))?;
    let stats = ingest("Vigil (head_window 0s)", &server, data, ticks).await;
    let waited = vigil_flushed(&server.url, &dir).await;
    let waited = match waited {
        Ok(waited) => waited,
        Err(err) => {
            server.stop().await;
            return Err(err);
        }
    };
    eprintln!("Vigil (head_window 0s): head flushed {waited:.0}s after ingest");
    // Everything is in Parquet now: its size is Vigil's bytes per sample at rest.
    let parquet = dir_bytes(&dir.join("blocks"));
    let queries = run_queries("Vigil (flushed)", &server.url, data.end_ms / 1000).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((stats, waited, parquet, queries))
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn millions(n: usize) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

struct DatasetRuns {
    label: String,
    samples: usize,
    wire_bytes: usize,
    runs: Vec<(System, SystemRun)>,
}

fn print_ingest_tables(all: &[DatasetRuns]) {
    let systems = [System::Vigil, System::Prometheus, System::VictoriaMetrics];
    println!("### Ingest (remote_write, {SAMPLES_PER_REQUEST} samples per request, {CONNECTIONS} connections)\n");
    println!("| data | metric | Vigil | Prometheus | VictoriaMetrics |");
    println!("|---|---|---:|---:|---:|");
    for d in all {
        let get = |s: System| d.runs.iter().find(|(sys, _)| *sys == s).map(|(_, r)| r);
        let row = |metric: &str, f: &dyn Fn(&SystemRun) -> String| {
            let cells: Vec<String> = systems
                .iter()
                .map(|s| get(*s).map_or("—".into(), f))
                .collect();
            println!("| {} | {metric} | {} |", d.label, cells.join(" | "));
        };
        let samples = d.samples as f64;
        row("samples/s (wall)", &|r| {
            format!("{:.0}", samples / r.ingest.wall_s)
        });
        row("samples per server CPU-second", &|r| {
            format!("{:.0}", samples / r.ingest.cpu_s)
        });
        row("ack p50 ms", &|r| {
            format!("{:.1}", r.ingest.percentile(0.5))
        });
        row("ack p99 ms", &|r| {
            format!("{:.1}", r.ingest.percentile(0.99))
        });
        row("peak RSS (VmHWM)", &|r| mib(r.ingest.peak_rss));
    }

    println!("\n### WAL while running (right after ingest)\n");
    println!("| data | Vigil `wal` | Vigil bytes/sample | Vigil samples in head | Prometheus `wal` + `chunks_head` | Prometheus bytes/sample | VictoriaMetrics |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for d in all {
        let get = |s: System| d.runs.iter().find(|(sys, _)| *sys == s).map(|(_, r)| r);
        let wal = |s: System| -> (String, String) {
            match get(s).and_then(|r| r.wal_bytes) {
                Some(b) => (mib(b), format!("{:.2}", b as f64 / d.samples as f64)),
                None => ("—".into(), "—".into()),
            }
        };
        let (vw, vb) = wal(System::Vigil);
        let (pw, pb) = wal(System::Prometheus);
        let head = get(System::Vigil)
            .and_then(|r| r.head_samples)
            .map_or("—".into(), |h| millions(h as usize));
        println!("| {} | {vw} | {vb} | {head} | {pw} | {pb} | n/a |", d.label);
    }

    println!("\n### Bytes on disk after a graceful stop (SIGTERM)\n");
    println!("| data | system | on disk | bytes/sample | parts (bytes/sample) | stop took |");
    println!("|---|---|---:|---:|---|---:|");
    for d in all {
        for (system, r) in &d.runs {
            let per = |b: u64| b as f64 / d.samples as f64;
            let parts = if r.disk_parts.is_empty() {
                "—".to_string()
            } else {
                r.disk_parts
                    .iter()
                    .map(|(name, b)| format!("{name} {:.2}", per(*b)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "| {} | {} | {} | {:.2} | {parts} | {:.1}s |",
                d.label,
                system.name(),
                mib(r.disk_bytes),
                per(r.disk_bytes),
                r.stop_s
            );
        }
        println!(
            "| {} | (remote_write bodies, snappy) | {} | {:.2} | | |",
            d.label,
            mib(d.wire_bytes as u64),
            d.wire_bytes as f64 / d.samples as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only_ingest = args.iter().any(|a| a == "ingest");
    let only_query = args.iter().any(|a| a == "query");
    let (want_ingest, want_query) = match (only_ingest, only_query) {
        (true, false) => (true, false),
        (false, true) => (false, true),
        _ => (true, true),
    };
    let hours_10k = env_f64("VIGIL_BENCH_HOURS_10K", 3.0);
    let minutes_100k = env_f64("VIGIL_BENCH_MINUTES_100K", 30.0);
    let rounds_10k = ((hours_10k * 3600.0 * 1000.0 / SCRAPE_MS as f64).round() as usize).max(1);
    let rounds_100k = ((minutes_100k * 60.0 * 1000.0 / SCRAPE_MS as f64).round() as usize).max(1);
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    print_header();
    runtime.block_on(async {
        let mut all = Vec::new();
        let mut queries = None;
        // 10k series: every system's ingest; Vigil and Prometheus also answer queries.
        {
            let data = generate(100, rounds_10k);
            let label = format!(
                "{}k series × {hours_10k}h ({} samples)",
                data.n_series / 1000,
                millions(data.samples())
            );
            let mut runs = Vec::new();
            let (vigil, vigil_queries) =
                run_system(System::Vigil, root.path(), &data, ticks, want_query).await;
            let head_at_query = vigil.head_at_query.unwrap_or(f64::NAN);
            runs.push((System::Vigil, vigil));
            let (prometheus, prometheus_queries) =
                run_system(System::Prometheus, root.path(), &data, ticks, want_query).await;
            runs.push((System::Prometheus, prometheus));
            if want_ingest {
                let (vm, _) =
                    run_system(System::VictoriaMetrics, root.path(), &data, ticks, false).await;
                runs.push((System::VictoriaMetrics, vm));
            }
            if want_query {
                let flushed = run_flushed_vigil(root.path(), &data, ticks).await;
                if let Err(err) = &flushed {
                    eprintln!("flushed Vigil skipped: {err}");
                }
                queries = Some((
                    vigil_queries.expect("queries"),
                    prometheus_queries.expect("queries"),
                    flushed,
                    (data.samples(), head_at_query),
                    data.end_ms,
                    label.clone(),
                ));
            }
            all.push(DatasetRuns {
                label,
                samples: data.samples(),
                wire_bytes: data.wire_bytes,
                runs,
            });
        }
        if want_ingest {
            let data = generate(1000, rounds_100k);
            let label = format!(
                "{}k series × {minutes_100k} min ({} samples)",
                data.n_series / 1000,
                millions(data.samples())
            );
            let mut runs = Vec::new();
            for system in [System::Vigil, System::Prometheus, System::VictoriaMetrics] {
                let (run, _) = run_system(system, root.path(), &data, ticks, false).await;
                runs.push((system, run));
            }
            all.push(DatasetRuns {
                label,
                samples: data.samples(),
                wire_bytes: data.wire_bytes,
                runs,
            });
            print_ingest_tables(&all);
        }
        if let Some((vigil, prometheus, flushed, (samples, head), end_ms, label)) = queries {
            println!("\n### Dashboard queries ({label})\n");
            println!(
                "Instant queries at the end of the data ({end_ms} ms, the last 15s scrape round; every series' last sample lies in the 15s before it); ranges end there. One cold run, then the median of {QUERY_RUNS}. Prometheus answers from its own data as ingested. Single-namespace query: `{QUERY_NAMESPACE}`. {samples} samples."
            );
            print_query_table(
                &format!(
                    "Vigil head-resident (default config; {} of {} samples in the head at query time)",
                    millions(head as usize),
                    millions(samples)
                ),
                &vigil,
                &prometheus,
            );
            match flushed {
                Ok((stats, waited, parquet, flushed)) => {
                    println!(
                        "\n(flushed instance: ingest {:.0} samples/s, head empty and flushed to Parquet {waited:.0}s after ingest; Parquet {:.1} MiB = {:.2} bytes/sample)",
                        samples as f64 / stats.wall_s,
                        parquet as f64 / (1u64 << 20) as f64,
                        parquet as f64 / samples as f64
                    );
                    print_query_table(
                        "Vigil flushed to Parquet (`storage.head_window: 0s`)",
                        &flushed,
                        &prometheus,
                    );
                }
                Err(err) => println!(
                    "\n#### Vigil flushed to Parquet: skipped\n\n> {}",
                    err.replace('\n', "\n> ")
                ),
            }
        }
    });
}

//! Logs and spans harness (not criterion): ingest, bytes on disk and queries of the
//! `logs` and `spans` stores, in one run on one machine.
//!
//! Data (seeded xorshift, no `rand`): a Kubernetes cluster of ~150 containers in 20
//! namespaces writing container logs (JSON access lines, nginx access and error lines,
//! Spring Boot lines with stack traces, Go logfmt; 80–300 bytes, with trace ids in the
//! JSON lines), timestamps increasing over the 5 minutes before the run; and traces of
//! 5–15 spans (frontend → API → database) over the same window.
//!
//! 1. Log ingest over Elasticsearch `_bulk`, as Fluentd's `elasticsearch` output sends it
//!    (`logstash_format`, `kubernetes_metadata`; a `level` field, and `trace_id` for the
//!    JSON lines, as a parser filter adds them): `VIGIL_BENCH_LOGS` records (default
//!    1,000,000), 5,000 documents per request over 4 connections. Records/s (wall), MB/s
//!    of NDJSON, records per server CPU-second (utime+stime of the server from /proc),
//!    ack latency p50/p99 per request. Every answer must be 200 with `"errors":false`.
//! 2. The same records over OTLP/HTTP protobuf (`/v1/logs`), on a fresh data directory.
//! 3. Bytes on disk per log record, and their ratio to the NDJSON of the documents:
//!    the batch files right after ingest, then after the server's compaction merged
//!    them (polled every 2s until every partition has at most one file left to merge)
//!    and a restart (SIGTERM, start again: the start deletes the replaced files).
//! 4. Span ingest over OTLP/HTTP (`/v1/traces`): `VIGIL_BENCH_SPANS` spans (default
//!    2,000,000), 5,000 per request, 4 connections; spans/s, spans per server
//!    CPU-second, bytes on disk per span after the merge.
//! 5. Queries on the merged `_bulk` logs and the spans, Vigil (`POST /api/v1/sql`, median
//!    of 10 after one warm-up) vs DuckDB (Python `duckdb`, installed with pip when
//!    missing) over the same Parquet files: error count, errors per namespace per
//!    minute, `body LIKE '%timeout%'`, a trace by id (10 different ids), and the trace
//!    through the Jaeger API (Vigil only).
//! 6. Summary lines against the targets.
//!
//! Run: `cargo bench --bench records [-- logs|spans|queries]` (nothing = all; `queries`
//! ingests the `_bulk` logs and the spans it needs). Markdown on stdout, progress on
//! stderr.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};

/// Records (log records or spans) per request.
const BATCH: usize = 5_000;
const CONNECTIONS: usize = 4;
/// Timed runs of each query (after one warm-up).
const QUERY_RUNS: usize = 10;
/// The data covers this much time before the run.
const WINDOW_MS: i64 = 5 * 60 * 1000;
/// How long to wait for the compaction of one store.
const MERGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Files with fewer rows are merge candidates (the server's rule, `batch_files.rs`).
const CANDIDATE_ROWS: i64 = (vigil_storage::batch_files::MERGED_ROWS / 2) as i64;

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

/// `vigil serve` on a free port with data in `dir` (stdout and stderr to `log`), once
/// `GET /-/ready` answers 2xx; panics (with the log's tail) if it exits or is not ready
/// within 120s.
async fn start_vigil(dir: &Path, log: PathBuf) -> Server {
    let port = free_port();
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--otlp.grpc-listen",
            "off",
        ])
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start vigil");
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let client = reqwest::Client::new();
    for _ in 0..1200 {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "vigil exited with {status} before ready:\n{}",
                log_tail(&server.log)
            );
        }
        if let Ok(response) = client.get(format!("{}/-/ready", server.url)).send().await {
            if response.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} not ready after 120s", server.url);
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
    println!("## Logs and spans (`cargo bench --bench records`)\n");
    println!("Commit measured: `{commit}{dirty}`  ");
    println!(
        "Machine: {cpus} × {model}, {mem_gib:.0} GiB RAM (load average at start: {})\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The median as Python's `statistics.median` takes it (the mean of the middle two).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
    }
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

// ---------------------------------------------------------------------------------------
// Random numbers and text

struct Rng(u64);

impl Rng {
    /// A generator from any seed (splitmix64 of it; never the all-zero state).
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

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

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
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

    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        out
    }

    fn ip(&mut self) -> String {
        format!("10.244.{}.{}", self.below(16), 2 + self.below(250))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Appends `text` as a JSON string.
fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC time of day and date.
struct Clock {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
}

impl Clock {
    fn at(ms: i64) -> Clock {
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Clock {
            year,
            month,
            day,
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            milli: in_day % 1000,
        }
    }

    /// `2026-12-01T10:00:00.123` followed by `zone` (`Z`, `+00:00`).
    fn rfc3339(&self, zone: &str) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{zone}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.milli
        )
    }

    /// Spring Boot's `2026-12-01 10:00:00.123`.
    fn java(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.milli
        )
    }

    /// nginx's access log time: `01/Dec/2026:10:00:00 +0000`.
    fn nginx_access(&self) -> String {
        format!(
            "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
            self.day,
            MONTHS[(self.month as usize).clamp(1, 12) - 1],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// nginx's error log time: `2026/12/01 10:00:00`.
    fn nginx_error(&self) -> String {
        format!(
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Runs `make(0..n)` on every core; the results in order.
fn parallel<T: Send>(n: usize, make: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let make = &make;
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, make(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            for (i, value) in handle.join().expect("generator thread") {
                slots[i] = Some(value);
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.expect("every batch generated"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Logs: a cluster and its containers' lines

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn upper(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    fn otlp_number(self) -> i32 {
        match self {
            Level::Debug => 5,
            Level::Info => 9,
            Level::Warn => 13,
            Level::Error => 17,
        }
    }
}

/// What a container's log lines look like.
#[derive(Clone, Copy)]
enum Style {
    /// A Go/Node service's JSON access and application lines, with trace ids.
    JsonAccess,
    /// nginx access lines (combined format) and error-log lines.
    Nginx,
    /// Spring Boot lines; errors with stack frames.
    Java,
    /// Go logfmt (`ts=… level=… msg=…`).
    Logfmt,
}

const NAMESPACES: [&str; 20] = [
    "shop",
    "checkout",
    "payments",
    "identity",
    "search",
    "catalog",
    "inventory",
    "shipping",
    "notifications",
    "recommendations",
    "analytics",
    "ingress-nginx",
    "monitoring",
    "logging",
    "media",
    "cert-manager",
    "argocd",
    "data-pipeline",
    "support",
    "pricing",
];

const APPS: [(&str, Style); 10] = [
    ("api", Style::JsonAccess),
    ("web", Style::Nginx),
    ("worker", Style::Logfmt),
    ("gateway", Style::Nginx),
    ("billing", Style::Java),
    ("consumer", Style::Logfmt),
    ("scheduler", Style::Java),
    ("graphql", Style::JsonAccess),
    ("indexer", Style::Java),
    ("notifier", Style::Logfmt),
];

struct Container {
    namespace: String,
    app: String,
    style: Style,
    /// `"docker":{…},"kubernetes":{…}` of the Fluentd document.
    meta_json: String,
    /// The OTLP resource (the k8sattributes processor's names).
    resource: Resource,
    /// The file the OpenTelemetry Collector's filelog receiver reads.
    log_path: String,
}

struct Cluster {
    containers: Vec<Container>,
    /// Cumulative log-rate weights of the containers.
    cumulative: Vec<f64>,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn string_value(text: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(text.to_string())),
    }
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let mut rng = Rng::new(seed);
        let nodes: Vec<String> = (0..12)
            .map(|_| {
                format!(
                    "ip-10-0-{}-{}.eu-west-1.compute.internal",
                    rng.below(64),
                    1 + rng.below(254)
                )
            })
            .collect();
        let safe = b"bcdfghjklmnpqrstvwxz2456789";
        let mut containers = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (ns_idx, &namespace) in NAMESPACES.iter().enumerate() {
            for k in 0..3 {
                let (app, style) = APPS[(ns_idx + k * 3) % APPS.len()];
                let deployment =
                    format!("{}-{app}", namespace.split('-').next().unwrap_or(namespace));
                let hash = rng.chars(safe, 10);
                let image = format!(
                    "registry.example.com/{namespace}/{app}:1.{}.{}",
                    rng.below(40),
                    rng.below(10)
                );
                // Chatty and quiet deployments; replicas share the rate.
                let rate = rng.lognormal(1.0, 1.2);
                let replicas = 1 + rng.below(4);
                for _ in 0..replicas {
                    let pod = format!("{deployment}-{hash}-{}", rng.chars(safe, 5));
                    let pod_id = rng.uuid();
                    let host = rng.pick(&nodes).clone();
                    let mut meta_json = String::new();
                    let _ = write!(
                        meta_json,
                        r#""docker":{{"container_id":"{}"}},"kubernetes":{{"container_name":"{app}","namespace_name":"{namespace}","pod_name":"{pod}","container_image":"{image}","pod_id":"{pod_id}","host":"{host}","labels":{{"app":"{deployment}","pod-template-hash":"{hash}"}}}}"#,
                        rng.hex(64)
                    );
                    let resource = Resource {
                        attributes: vec![
                            kv("k8s.namespace.name", namespace),
                            kv("k8s.pod.name", &pod),
                            kv("k8s.container.name", app),
                            kv("service.name", &deployment),
                            kv("k8s.node.name", &host),
                            kv("k8s.pod.uid", &pod_id),
                        ],
                        ..Default::default()
                    };
                    total += rate / replicas as f64;
                    cumulative.push(total);
                    containers.push(Container {
                        namespace: namespace.to_string(),
                        app: app.to_string(),
                        style,
                        meta_json,
                        resource,
                        log_path: format!("/var/log/pods/{namespace}_{pod}_{pod_id}/{app}/0.log"),
                    });
                }
            }
        }
        Cluster {
            containers,
            cumulative,
        }
    }

    /// A container, by log rate.
    fn pick(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let at = rng.f64() * total;
        self.cumulative
            .partition_point(|c| *c <= at)
            .min(self.containers.len() - 1)
    }
}

/// One container log line.
struct Line {
    text: String,
    level: Level,
    /// Trace and span id, for lines that carry them.
    trace: Option<([u8; 16], [u8; 8])>,
    stderr: bool,
}

impl Line {
    fn stream(&self) -> &'static str {
        if self.stderr {
            "stderr"
        } else {
            "stdout"
        }
    }
}

const ROUTES: [(&str, &str); 10] = [
    ("GET", "/api/v1/products/{id}"),
    ("GET", "/api/v1/products?page={id}"),
    ("GET", "/api/v1/cart"),
    ("POST", "/api/v1/cart/items"),
    ("GET", "/api/v1/orders/{id}"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/users/{id}/profile"),
    ("GET", "/api/v1/search?q=shoes&page={id}"),
    ("GET", "/healthz"),
    ("GET", "/api/v1/recommendations/{id}"),
];

const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
    "kube-probe/1.29",
    "Prometheus/2.51.0",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
];

const UPSTREAM_ERRORS: [&str; 6] = [
    "upstream timeout after 3000ms",
    "dial tcp 10.0.3.7:5432: connect: connection refused",
    "context canceled",
    "pq: deadlock detected",
    "redis: i/o timeout",
    "circuit breaker open for inventory",
];

const NGINX_ERRORS: [&str; 4] = [
    "upstream timed out (110: Connection timed out) while reading response header from upstream",
    "connect() failed (111: Connection refused) while connecting to upstream",
    "upstream prematurely closed connection while reading response header from upstream",
    "no live upstreams while connecting to upstream",
];

const JAVA_ERRORS: [&str; 5] = [
    "Call to acquirer failed\njava.net.SocketTimeoutException: Read timed out\n\tat java.base/java.net.SocketInputStream.socketRead0(Native Method)\n\tat c.e.billing.AcquirerClient.authorize(AcquirerClient.java:118)",
    "Unhandled exception\njava.lang.NullPointerException: Cannot invoke \"Order.getTotal()\" because \"order\" is null\n\tat c.e.billing.InvoiceService.total(InvoiceService.java:212)",
    "HikariPool-1 - Connection is not available, request timed out after 30000ms.\n\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
    "Send failed: org.apache.kafka.common.errors.TimeoutException: Expiring 3 record(s) for invoices-0: 120001 ms has passed",
    "Lock acquisition timeout for key invoice:77311 after 5000ms",
];

const GO_ERRORS: [&str; 5] = [
    "context deadline exceeded",
    "read tcp 10.244.2.9:43122->10.0.4.12:6379: i/o timeout",
    "kafka: client has run out of available brokers to talk to",
    "rpc error: code = Unavailable desc = connection error",
    "net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
];

fn request(rng: &mut Rng) -> (&'static str, String) {
    let (method, route) = *rng.pick(&ROUTES);
    let id = rng.below(100_000).to_string();
    (method, route.replace("{id}", &id))
}

fn status_for(level: Level, rng: &mut Rng) -> u16 {
    match level {
        Level::Error => *rng.pick(&[500, 502, 503, 504]),
        Level::Warn => *rng.pick(&[400, 401, 404, 404, 409, 429]),
        Level::Info | Level::Debug => *rng.pick(&[200, 200, 200, 200, 200, 201, 204, 304]),
    }
}

fn log_line(container: &Container, rng: &mut Rng, ts_ms: i64) -> Line {
    let draw = rng.f64();
    let level = if draw < 0.05 {
        Level::Error
    } else if draw < 0.13 {
        Level::Warn
    } else if draw < 0.20 {
        Level::Debug
    } else {
        Level::Info
    };
    let clock = Clock::at(ts_ms);
    match container.style {
        Style::JsonAccess => json_line(rng, &clock, level),
        Style::Nginx => nginx_line(container, rng, &clock, level),
        Style::Java => java_line(rng, &clock, level),
        Style::Logfmt => logfmt_line(container, rng, &clock, level),
    }
}

fn json_line(rng: &mut Rng, clock: &Clock, level: Level) -> Line {
    let trace: ([u8; 16], [u8; 8]) = (rng.id(), rng.id());
    let mut text = String::with_capacity(320);
    let _ = write!(
        text,
        r#"{{"ts":"{}","level":"{}","#,
        clock.rfc3339("Z"),
        level.name()
    );
    if level == Level::Debug {
        let _ = write!(
            text,
            r#""msg":"cache lookup","key":"product:{}","hit":{}"#,
            rng.below(100_000),
            rng.below(4) > 0
        );
    } else {
        let (method, path) = request(rng);
        let status = status_for(level, rng);
        let msg = match level {
            Level::Error => "request failed",
            Level::Warn => "request rejected",
            _ => "request completed",
        };
        let duration = rng.lognormal(12.0, 1.0);
        let _ = write!(
            text,
            r#""msg":"{msg}","method":"{method}","path":"{path}","status":{status},"duration_ms":{duration:.1},"bytes":{}"#,
            rng.below(20_000)
        );
        if level == Level::Error {
            let _ = write!(text, r#","error":"{}""#, rng.pick(&UPSTREAM_ERRORS));
        }
    }
    let _ = write!(
        text,
        r#","trace_id":"{}","span_id":"{}"}}"#,
        hex(&trace.0),
        hex(&trace.1)
    );
    Line {
        text,
        level,
        trace: Some(trace),
        stderr: matches!(level, Level::Error | Level::Warn),
    }
}

fn nginx_line(container: &Container, rng: &mut Rng, clock: &Clock, level: Level) -> Line {
    let (method, path) = request(rng);
    if level == Level::Error {
        let text = format!(
            "{} [error] 23#23: *{} {}, client: {}, server: {}.example.com, request: \"{method} {path} HTTP/1.1\", upstream: \"http://10.0.{}.{}:8080{path}\"",
            clock.nginx_error(),
            rng.below(1_000_000),
            rng.pick(&NGINX_ERRORS),
            rng.ip(),
            container.namespace,
            rng.below(16),
            2 + rng.below(250)
        );
        return Line {
            text,
            level,
            trace: None,
            stderr: true,
        };
    }
    // Access lines have no debug level: a debug draw is an ordinary request.
    let level = if level == Level::Debug {
        Level::Info
    } else {
        level
    };
    let status = status_for(level, rng);
    let text = format!(
        "{} - - [{}] \"{method} {path} HTTP/1.1\" {status} {} \"-\" \"{}\" {:.3} [{}-{}-8080] {}",
        rng.ip(),
        clock.nginx_access(),
        rng.below(50_000),
        rng.pick(&USER_AGENTS),
        rng.lognormal(0.02, 1.0),
        container.namespace,
        container.app,
        rng.hex(16)
    );
    Line {
        text,
        level,
        trace: None,
        stderr: false,
    }
}

fn java_line(rng: &mut Rng, clock: &Clock, level: Level) -> Line {
    let thread = *rng.pick(&[
        "nio-8080-exec-3",
        "nio-8080-exec-7",
        "scheduling-1",
        "ntainer#0-0-C-1",
        "pool-3-thread-2",
    ]);
    let (logger, message) = match level {
        Level::Error => (
            "c.e.billing.AcquirerClient",
            rng.pick(&JAVA_ERRORS).to_string(),
        ),
        Level::Warn => match rng.below(2) {
            0 => (
                "c.e.billing.RetryPolicy",
                format!(
                    "Retrying acquirer call attempt={} reason=timeout",
                    2 + rng.below(3)
                ),
            ),
            _ => (
                "o.h.engine.jdbc.spi.SqlStatementLogger",
                format!(
                    "Slow query: {} ms (threshold 500 ms) on invoices",
                    500 + rng.below(5000)
                ),
            ),
        },
        Level::Debug => (
            "c.e.billing.CacheWarmer",
            format!(
                "Refreshed {} exchange rates in {} ms",
                rng.below(2000),
                rng.below(90)
            ),
        ),
        Level::Info => match rng.below(3) {
            0 => (
                "c.e.billing.PaymentService",
                format!(
                    "Authorized payment {} amount={}.{:02} currency=EUR",
                    rng.below(1_000_000),
                    rng.below(500),
                    rng.below(100)
                ),
            ),
            1 => (
                "c.e.billing.InvoiceService",
                format!(
                    "Invoice {} issued for order {} in {} ms",
                    rng.below(1_000_000),
                    rng.below(1_000_000),
                    rng.below(200)
                ),
            ),
            _ => (
                "o.s.web.servlet.DispatcherServlet",
                format!("Completed 200 OK in {} ms", rng.below(300)),
            ),
        },
    };
    let text = format!(
        "{} {:>5} 1 --- [{thread:>15}] {logger:<40} : {message}",
        clock.java(),
        level.upper()
    );
    Line {
        text,
        level,
        trace: None,
        stderr: level == Level::Error,
    }
}

fn logfmt_line(container: &Container, rng: &mut Rng, clock: &Clock, level: Level) -> Line {
    let mut text = format!("ts={} level={} caller=", clock.rfc3339("Z"), level.name());
    let _ = match level {
        Level::Error => write!(
            text,
            "client.go:88 msg=\"request failed\" err=\"{}\" attempt={} target=http://inventory.{}.svc:8080/reserve",
            rng.pick(&GO_ERRORS),
            1 + rng.below(3),
            container.namespace
        ),
        Level::Warn => write!(
            text,
            "consumer.go:77 msg=\"rebalance in progress\" group={}-{} partitions={} lag={}",
            container.namespace,
            container.app,
            1 + rng.below(24),
            rng.below(100_000)
        ),
        Level::Debug => write!(
            text,
            "cache.go:51 msg=\"cache miss\" key=user:{} ttl=300s",
            rng.below(1_000_000)
        ),
        Level::Info => match rng.below(3) {
            0 => write!(
                text,
                "worker.go:142 msg=\"job finished\" job=reindex-{} duration={:.3}s items={}",
                rng.below(10_000),
                rng.lognormal(1.0, 0.8),
                rng.below(20_000)
            ),
            1 => write!(
                text,
                "producer.go:203 msg=\"published batch\" topic=orders size={} bytes={}",
                1 + rng.below(500),
                rng.below(1_000_000)
            ),
            _ => write!(
                text,
                "reconcile.go:64 msg=\"reconciled\" kind=Subscription objects={} duration={}ms",
                rng.below(2000),
                rng.below(800)
            ),
        },
    };
    // Go's log package writes to stderr.
    Line {
        text,
        level,
        trace: None,
        stderr: true,
    }
}

/// One log record: the container that wrote it, its time and line.
struct Rec {
    container: usize,
    ts_ms: i64,
    line: Line,
}

/// The records of batch `batch` of `total` (deterministic: the same for every protocol).
fn log_records(cluster: &Cluster, batch: usize, total: usize, base_ms: i64) -> Vec<Rec> {
    let first = batch * BATCH;
    let n = BATCH.min(total - first);
    let mut rng = Rng::new(0x1065_0000 ^ (batch as u64));
    (0..n)
        .map(|j| {
            let ts_ms = base_ms + ((first + j) as i64 * WINDOW_MS) / total as i64;
            let container = cluster.pick(&mut rng);
            let line = log_line(&cluster.containers[container], &mut rng, ts_ms);
            Rec {
                container,
                ts_ms,
                line,
            }
        })
        .collect()
}

/// The `_bulk` body of `records` as Fluentd's `elasticsearch` output sends it
/// (`logstash_format`, the `kubernetes_metadata` filter's fields), and the bytes of its
/// documents (without the action lines).
fn bulk_body(cluster: &Cluster, records: &[Rec]) -> (String, usize) {
    let mut out = String::with_capacity(records.len() * 900);
    let mut doc_bytes = 0;
    for record in records {
        let container = &cluster.containers[record.container];
        let clock = Clock::at(record.ts_ms);
        let _ = writeln!(
            out,
            r#"{{"index":{{"_index":"k8s-{:04}.{:02}.{:02}"}}}}"#,
            clock.year, clock.month, clock.day
        );
        let start = out.len();
        out.push_str(r#"{"log":"#);
        push_json_str(&mut out, &record.line.text);
        let _ = write!(
            out,
            r#","stream":"{}","level":"{}""#,
            record.line.stream(),
            record.line.level.name()
        );
        if let Some((trace_id, span_id)) = &record.line.trace {
            let _ = write!(
                out,
                r#","trace_id":"{}","span_id":"{}""#,
                hex(trace_id),
                hex(span_id)
            );
        }
        out.push(',');
        out.push_str(&container.meta_json);
        let _ = writeln!(out, r#","@timestamp":"{}"}}"#, clock.rfc3339("+00:00"));
        doc_bytes += out.len() - start;
    }
    (out, doc_bytes)
}

/// The same records as an OTLP `ExportLogsServiceRequest`, one `ResourceLogs` per
/// container (as the Collector's filelog receiver and k8sattributes processor send them).
fn otlp_logs_body(cluster: &Cluster, records: &[Rec]) -> Vec<u8> {
    let mut groups: BTreeMap<usize, Vec<OtlpLogRecord>> = BTreeMap::new();
    for record in records {
        let container = &cluster.containers[record.container];
        let time = record.ts_ms as u64 * 1_000_000;
        let (trace_id, span_id) = match &record.line.trace {
            Some((trace_id, span_id)) => (trace_id.to_vec(), span_id.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        groups
            .entry(record.container)
            .or_default()
            .push(OtlpLogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: time + 150_000_000,
                severity_number: record.line.level.otlp_number(),
                severity_text: record.line.level.upper().to_string(),
                body: Some(string_value(&record.line.text)),
                attributes: vec![
                    kv("log.iostream", record.line.stream()),
                    kv("log.file.path", &container.log_path),
                ],
                trace_id,
                span_id,
                ..Default::default()
            });
    }
    let resource_logs = groups
        .into_iter()
        .map(|(idx, log_records)| ResourceLogs {
            resource: Some(cluster.containers[idx].resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "filelog".into(),
                    ..Default::default()
                }),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }.encode_to_vec()
}

// ---------------------------------------------------------------------------------------
// Spans: frontend → API → database

struct Api {
    name: &'static str,
    namespace: &'static str,
    routes: &'static [(&'static str, &'static str)],
    db_system: &'static str,
    db_name: &'static str,
    /// (span name, statement)
    statements: &'static [(&'static str, &'static str)],
}

const FRONTEND_ROUTES: [(&str, &str); 5] = [
    ("GET", "/"),
    ("GET", "/products/{id}"),
    ("GET", "/cart"),
    ("POST", "/checkout"),
    ("GET", "/search"),
];

static APIS: [Api; 5] = [
    Api {
        name: "catalog",
        namespace: "catalog",
        routes: &[("GET", "/api/products/{id}"), ("GET", "/api/products")],
        db_system: "postgresql",
        db_name: "catalog",
        statements: &[
            (
                "SELECT catalog.products",
                "SELECT id, name, price, stock FROM products WHERE id = $1",
            ),
            (
                "SELECT catalog.prices",
                "SELECT currency, amount FROM prices WHERE product_id = $1 AND valid_to IS NULL",
            ),
        ],
    },
    Api {
        name: "cart",
        namespace: "shop",
        routes: &[("GET", "/api/cart"), ("POST", "/api/cart/items")],
        db_system: "redis",
        db_name: "0",
        statements: &[("HGETALL", "HGETALL cart:?"), ("HSET", "HSET cart:? ? ?")],
    },
    Api {
        name: "checkout",
        namespace: "checkout",
        routes: &[("POST", "/api/checkout"), ("GET", "/api/orders/{id}")],
        db_system: "postgresql",
        db_name: "orders",
        statements: &[
            (
                "INSERT orders.orders",
                "INSERT INTO orders (id, user_id, total, currency, created_at) VALUES ($1, $2, $3, $4, now())",
            ),
            (
                "SELECT orders.order_items",
                "SELECT product_id, quantity, price FROM order_items WHERE order_id = $1",
            ),
        ],
    },
    Api {
        name: "users",
        namespace: "identity",
        routes: &[("GET", "/api/users/{id}"), ("GET", "/api/session")],
        db_system: "postgresql",
        db_name: "users",
        statements: &[(
            "SELECT users.users",
            "SELECT id, email, locale FROM users WHERE id = $1",
        )],
    },
    Api {
        name: "search",
        namespace: "search",
        routes: &[("GET", "/api/search")],
        db_system: "elasticsearch",
        db_name: "products",
        statements: &[(
            "search products",
            r#"{"query":{"multi_match":{"query":"?","fields":["name","description"]}}}"#,
        )],
    },
];

/// The services' pods as OTLP resources: `[0]` the frontend, `[1 + i]` `APIS[i]`.
struct Topology {
    resources: Vec<Vec<Resource>>,
}

impl Topology {
    fn new(seed: u64) -> Topology {
        let mut rng = Rng::new(seed);
        let safe = b"bcdfghjklmnpqrstvwxz2456789";
        let services = std::iter::once(("frontend", "shop"))
            .chain(APIS.iter().map(|api| (api.name, api.namespace)));
        let resources = services
            .map(|(name, namespace)| {
                let hash = rng.chars(safe, 10);
                (0..3)
                    .map(|_| Resource {
                        attributes: vec![
                            kv("service.name", name),
                            kv(
                                "k8s.pod.name",
                                &format!("{name}-{hash}-{}", rng.chars(safe, 5)),
                            ),
                            kv("k8s.namespace.name", namespace),
                        ],
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Topology { resources }
    }
}

/// A trace id (hex) and its number of spans.
#[derive(Clone)]
struct TraceSample {
    id: String,
    spans: usize,
}

/// Spans grouped by (service, pod).
type SpanGroups = BTreeMap<(usize, usize), Vec<Span>>;

fn span_of(
    ids: (&[u8; 16], [u8; 8], Option<[u8; 8]>),
    name: String,
    kind: span::SpanKind,
    times: (u64, u64),
    attributes: Vec<KeyValue>,
) -> Span {
    let (trace_id, span_id, parent) = ids;
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map_or_else(Vec::new, |p| p.to_vec()),
        name,
        kind: kind as i32,
        start_time_unix_nano: times.0,
        end_time_unix_nano: times.1,
        attributes,
        ..Default::default()
    }
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        message: message.to_string(),
        code: 2,
    })
}

/// One trace of `size` (≥ 5) spans starting at `start_ns` into `groups`; returns its id.
/// The frontend's server span calls 1–3 APIs (a client span and the API's server span
/// each); the rest are the APIs' database client spans. About 3% of traces fail at
/// their last database call, which the callers report as 500s.
fn trace(rng: &mut Rng, size: usize, start_ns: u64, groups: &mut SpanGroups) -> [u8; 16] {
    let trace_id: [u8; 16] = rng.id();
    let failed = rng.f64() < 0.03;
    let calls = 1 + rng.below(((size - 1) / 2).min(3));
    let db_total = size - 1 - 2 * calls;
    let root_id: [u8; 8] = rng.id();
    let (root_method, root_route) = *rng.pick(&FRONTEND_ROUTES);
    let root_pod = rng.below(3);
    // Durations bottom-up.
    struct Call {
        api: usize,
        method: &'static str,
        route: &'static str,
        path: String,
        db: Vec<u64>,
        overhead: u64,
        server: u64,
        client: u64,
    }
    let mut plan = Vec::with_capacity(calls);
    for k in 0..calls {
        let api = rng.below(APIS.len());
        let (method, route) = *rng.pick(APIS[api].routes);
        let path = route.replace("{id}", &rng.below(100_000).to_string());
        let n_db = db_total / calls + usize::from(k < db_total % calls);
        let db: Vec<u64> = (0..n_db)
            .map(|_| rng.lognormal(1.2e6, 0.7) as u64 + 50_000)
            .collect();
        let overhead = rng.lognormal(1.5e6, 0.6) as u64 + 100_000;
        let server = db.iter().sum::<u64>() + overhead;
        let client = server + 300_000 + rng.below(400_000) as u64;
        plan.push(Call {
            api,
            method,
            route,
            path,
            db,
            overhead,
            server,
            client,
        });
    }
    let root_overhead = rng.lognormal(2e6, 0.5) as u64 + 200_000;
    let root_end = start_ns + plan.iter().map(|c| c.client).sum::<u64>() + root_overhead;
    let root_status = if failed { 500 } else { 200 };
    let mut root = span_of(
        (&trace_id, root_id, None),
        format!("{root_method} {root_route}"),
        span::SpanKind::Server,
        (start_ns, root_end),
        vec![
            kv("http.request.method", root_method),
            kv("http.route", root_route),
            kv(
                "url.path",
                &root_route.replace("{id}", &rng.below(100_000).to_string()),
            ),
            kv_int("http.response.status_code", root_status),
        ],
    );
    if failed {
        root.status = error_status("500 Internal Server Error");
    }
    groups.entry((0, root_pod)).or_default().push(root);
    let mut cursor = start_ns + root_overhead / 2;
    for (k, call) in plan.iter().enumerate() {
        let api = &APIS[call.api];
        let fails = failed && k + 1 == plan.len();
        let status = if fails { 500 } else { 200 };
        let client_id: [u8; 8] = rng.id();
        let server_id: [u8; 8] = rng.id();
        let address = format!("{}.{}.svc.cluster.local", api.name, api.namespace);
        let mut client = span_of(
            (&trace_id, client_id, Some(root_id)),
            call.method.to_string(),
            span::SpanKind::Client,
            (cursor, cursor + call.client),
            vec![
                kv("http.request.method", call.method),
                kv("server.address", &address),
                kv_int("server.port", 8080),
                kv("url.full", &format!("http://{address}:8080{}", call.path)),
                kv_int("http.response.status_code", status),
            ],
        );
        let server_start = cursor + 150_000;
        let mut server = span_of(
            (&trace_id, server_id, Some(client_id)),
            format!("{} {}", call.method, call.route),
            span::SpanKind::Server,
            (server_start, server_start + call.server),
            vec![
                kv("http.request.method", call.method),
                kv("http.route", call.route),
                kv("url.path", &call.path),
                kv_int("http.response.status_code", status),
            ],
        );
        if fails {
            client.status = error_status("500 Internal Server Error");
            server.status = error_status("upstream database error");
        }
        let pod = rng.below(3);
        let mut db_cursor = server_start + call.overhead / 2;
        for (j, duration) in call.db.iter().enumerate() {
            let (name, statement) = *rng.pick(api.statements);
            let mut db = span_of(
                (&trace_id, rng.id(), Some(server_id)),
                name.to_string(),
                span::SpanKind::Client,
                (db_cursor, db_cursor + duration),
                vec![
                    kv("db.system", api.db_system),
                    kv("db.name", api.db_name),
                    kv("db.statement", statement),
                ],
            );
            if fails && j + 1 == call.db.len() {
                db.status = error_status("timeout");
                db.events = vec![span::Event {
                    time_unix_nano: db_cursor + duration,
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", "QueryTimeout"),
                        kv(
                            "exception.message",
                            "canceling statement due to statement timeout",
                        ),
                    ],
                    ..Default::default()
                }];
            }
            groups.entry((1 + call.api, pod)).or_default().push(db);
            db_cursor += duration;
        }
        groups.entry((0, root_pod)).or_default().push(client);
        groups.entry((1 + call.api, pod)).or_default().push(server);
        cursor += call.client;
    }
    trace_id
}

/// One request of about `target` spans (whole traces of 5–15 spans) starting in
/// `[slot_start, slot_start + slot_ns)`; its body, span count and first trace.
fn span_batch(
    topology: &Topology,
    batch: usize,
    target: usize,
    slot: (u64, u64),
) -> (Bytes, usize, Option<TraceSample>) {
    let (slot_start, slot_ns) = slot;
    let mut rng = Rng::new(0x5fa7_0000 ^ (batch as u64));
    let mut groups = SpanGroups::new();
    let mut spans = 0;
    let mut first = None;
    while target - spans >= 5 {
        let remaining = target - spans;
        let mut size = 5 + rng.below(11);
        if remaining <= 15 {
            size = remaining;
        } else if remaining - size < 5 {
            size = remaining - 5;
        }
        let start = slot_start + (spans as u64 * slot_ns) / target as u64;
        let id = trace(&mut rng, size, start, &mut groups);
        if first.is_none() {
            first = Some(TraceSample {
                id: hex(&id),
                spans: size,
            });
        }
        spans += size;
    }
    let resource_spans = groups
        .into_iter()
        .map(|((service, pod), group)| ResourceSpans {
            resource: Some(topology.resources[service][pod].clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    ..Default::default()
                }),
                spans: group,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let body = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
    (Bytes::from(body), spans, first)
}

// ---------------------------------------------------------------------------------------
// Payloads and ingest

/// How records reach the server.
#[derive(Clone, Copy)]
enum Wire {
    Bulk,
    OtlpLogs,
    OtlpTraces,
}

impl Wire {
    fn path(self) -> &'static str {
        match self {
            Wire::Bulk => "/_bulk",
            Wire::OtlpLogs => "/v1/logs",
            Wire::OtlpTraces => "/v1/traces",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Wire::Bulk => "application/x-ndjson",
            Wire::OtlpLogs | Wire::OtlpTraces => "application/x-protobuf",
        }
    }

    /// The store directory under `blocks/`.
    fn store(self) -> &'static str {
        match self {
            Wire::Bulk | Wire::OtlpLogs => "logs",
            Wire::OtlpTraces => "spans",
        }
    }
}

/// Request bodies and what they hold.
struct Payload {
    wire: Wire,
    bodies: Arc<Vec<Bytes>>,
    items: usize,
    wire_bytes: usize,
    /// The NDJSON documents of the same log records (0 for spans).
    json_bytes: usize,
}

fn log_payload(cluster: &Cluster, wire: Wire, total: usize, base_ms: i64) -> Payload {
    let started = Instant::now();
    let parts = parallel(total.div_ceil(BATCH), |batch| {
        let records = log_records(cluster, batch, total, base_ms);
        let (ndjson, doc_bytes) = bulk_body(cluster, &records);
        let body = match wire {
            Wire::Bulk => Bytes::from(ndjson.into_bytes()),
            _ => Bytes::from(otlp_logs_body(cluster, &records)),
        };
        (body, records.len(), doc_bytes)
    });
    let items: usize = parts.iter().map(|p| p.1).sum();
    let json_bytes: usize = parts.iter().map(|p| p.2).sum();
    let bodies: Vec<Bytes> = parts.into_iter().map(|p| p.0).collect();
    let wire_bytes: usize = bodies.iter().map(Bytes::len).sum();
    eprintln!(
        "generated {items} log records for {} in {:.1}s: {:.1} MB of requests, {:.1} MB of NDJSON documents",
        wire.path(),
        started.elapsed().as_secs_f64(),
        mb(wire_bytes as f64),
        mb(json_bytes as f64)
    );
    Payload {
        wire,
        bodies: Arc::new(bodies),
        items,
        wire_bytes,
        json_bytes,
    }
}

/// Spans in traces of 5–15, and 11 traces spread over the data for lookups.
fn span_payload(topology: &Topology, total: usize, base_ms: i64) -> (Payload, Vec<TraceSample>) {
    let started = Instant::now();
    let n_batches = total.div_ceil(BATCH).max(1);
    let base_ns = base_ms as u64 * 1_000_000;
    let slot_ns = WINDOW_MS as u64 * 1_000_000 / n_batches as u64;
    let parts = parallel(n_batches, |batch| {
        let target = BATCH.min(total - batch * BATCH);
        span_batch(
            topology,
            batch,
            target,
            (base_ns + batch as u64 * slot_ns, slot_ns),
        )
    });
    let mut samples: Vec<TraceSample> = Vec::new();
    for k in 0..11 {
        if let Some(sample) = &parts[k * n_batches / 11].2 {
            if samples.iter().all(|s| s.id != sample.id) {
                samples.push(sample.clone());
            }
        }
    }
    let items: usize = parts.iter().map(|p| p.1).sum();
    let bodies: Vec<Bytes> = parts.into_iter().map(|p| p.0).collect();
    let wire_bytes: usize = bodies.iter().map(Bytes::len).sum();
    eprintln!(
        "generated {items} spans in {:.1}s: {:.1} MB of requests",
        started.elapsed().as_secs_f64(),
        mb(wire_bytes as f64)
    );
    (
        Payload {
            wire: Wire::OtlpTraces,
            bodies: Arc::new(bodies),
            items,
            wire_bytes,
            json_bytes: 0,
        },
        samples,
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether an answer acknowledges every record of its request.
fn check_answer(wire: Wire, status: u16, body: &[u8]) -> Result<(), String> {
    let text = || String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
    if status != 200 {
        return Err(format!("answered {status}: {}", text()));
    }
    match wire {
        Wire::Bulk => {
            if contains(body, br#""errors":false"#) {
                return Ok(());
            }
            let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let first_error = value["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_object().and_then(|o| o.values().next()))
                .find(|result| result.get("error").is_some())
                .map_or_else(text, Value::to_string);
            Err(format!("bulk answer with errors, e.g. {first_error}"))
        }
        Wire::OtlpLogs => {
            let answer = ExportLogsServiceResponse::decode(body)
                .map_err(|err| format!("undecodable answer ({err}): {}", text()))?;
            match answer.partial_success {
                Some(partial) if partial.rejected_log_records > 0 => Err(format!(
                    "{} records rejected: {}",
                    partial.rejected_log_records, partial.error_message
                )),
                _ => Ok(()),
            }
        }
        Wire::OtlpTraces => {
            let answer = ExportTraceServiceResponse::decode(body)
                .map_err(|err| format!("undecodable answer ({err}): {}", text()))?;
            match answer.partial_success {
                Some(partial) if partial.rejected_spans > 0 => Err(format!(
                    "{} spans rejected: {}",
                    partial.rejected_spans, partial.error_message
                )),
                _ => Ok(()),
            }
        }
    }
}

struct IngestStats {
    wall_s: f64,
    cpu_s: f64,
    /// Per-request ack latency, ms, sorted.
    latencies: Vec<f64>,
    peak_rss: u64,
}

/// Sends every body of `payload` over `CONNECTIONS` connections (each request after the
/// previous one's ack on its connection); panics on any answer that does not
/// acknowledge every record.
async fn ingest(server: &Server, payload: &Payload, ticks: f64) -> IngestStats {
    let wire = payload.wire;
    let endpoint = format!("{}{}", server.url, wire.path());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_seconds(server.pid(), ticks);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let bodies = payload.bodies.clone();
            let next = next.clone();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(300))
                    .build()
                    .expect("client");
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        break;
                    };
                    let sent = Instant::now();
                    let response = client
                        .post(&endpoint)
                        .header("Content-Type", wire.content_type())
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{endpoint}: request {i} failed: {e}"));
                    let status = response.status().as_u16();
                    let answer = response
                        .bytes()
                        .await
                        .unwrap_or_else(|e| panic!("{endpoint}: answer {i} failed: {e}"));
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if let Err(why) = check_answer(wire, status, &answer) {
                        panic!("{endpoint}: request {i}: {why}");
                    }
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
        "{}: {} records in {wall_s:.1}s ({:.0}/s), server CPU {cpu_s:.1}s ({:.0} records per CPU-second), ack p50 {:.1} ms p99 {:.1} ms",
        wire.path(),
        payload.items,
        payload.items as f64 / wall_s,
        payload.items as f64 / cpu_s,
        percentile(&stats.latencies, 0.5),
        percentile(&stats.latencies, 0.99)
    );
    stats
}

// ---------------------------------------------------------------------------------------
// Files on disk and the merge

/// What the footer of a Parquet file says: rows, and the files a merged file replaces.
struct FileInfo {
    rows: i64,
    replaces: Vec<String>,
}

fn file_info(path: &Path) -> Option<FileInfo> {
    let file = std::fs::File::open(path).ok()?;
    let reader = SerializedFileReader::new(file).ok()?;
    let meta = reader.metadata().file_metadata();
    let replaces = meta
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|entry| entry.key == "vigil.replaces")
        .filter_map(|entry| entry.value.as_deref())
        .flat_map(|names| names.split(','))
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    Some(FileInfo {
        rows: meta.num_rows(),
        replaces,
    })
}

/// The files of one store (`blocks/logs` or `blocks/spans`) as the server sees them.
#[derive(Clone, Copy, Default)]
struct StoreState {
    /// Files not replaced by a merged file (what a restart keeps).
    live_files: usize,
    live_bytes: u64,
    live_rows: i64,
    merged_files: usize,
    /// Every batch (not merged) file on disk, replaced or not.
    batch_files: usize,
    batch_bytes: u64,
    /// No partition has two files the compaction would still merge, and no merge is
    /// being written.
    settled: bool,
}

fn store_state(dir: &Path, cache: &mut HashMap<PathBuf, FileInfo>) -> StoreState {
    let mut state = StoreState {
        settled: true,
        ..StoreState::default()
    };
    let Ok(partitions) = std::fs::read_dir(dir) else {
        return state;
    };
    for partition in partitions.flatten() {
        let partition = partition.path();
        if !partition.is_dir() {
            continue;
        }
        let mut files: Vec<(PathBuf, String, u64)> = Vec::new();
        for entry in std::fs::read_dir(partition).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                state.settled = false;
            } else if name.ends_with(".parquet") {
                let size = entry.metadata().map_or(0, |m| m.len());
                files.push((path, name, size));
            }
        }
        let mut replaced: HashSet<String> = HashSet::new();
        for (path, name, _) in &files {
            let info = match cache.entry(path.clone()) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(slot) => match file_info(path) {
                    Some(info) => slot.insert(info),
                    None => {
                        state.settled = false;
                        continue;
                    }
                },
            };
            if name.starts_with("merged-") {
                replaced.extend(info.replaces.iter().cloned());
            }
        }
        let mut candidates = 0;
        for (path, name, size) in &files {
            let merged = name.starts_with("merged-");
            if !merged {
                state.batch_files += 1;
                state.batch_bytes += size;
            }
            if replaced.contains(name) {
                continue;
            }
            let rows = cache.get(path).map_or(0, |info| info.rows);
            state.live_files += 1;
            state.live_bytes += size;
            state.live_rows += rows;
            if merged {
                state.merged_files += 1;
            }
            if rows < CANDIDATE_ROWS {
                candidates += 1;
            }
        }
        if candidates >= 2 {
            state.settled = false;
        }
    }
    state
}

/// Every `.parquet` file under `dir`: (count, bytes).
fn parquet_totals(dir: &Path) -> (usize, u64) {
    let mut totals = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (n, bytes) = parquet_totals(&path);
            totals.0 += n;
            totals.1 += bytes;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            totals.0 += 1;
            totals.1 += entry.metadata().map_or(0, |m| m.len());
        }
    }
    totals
}

struct MergeWait {
    waited_s: f64,
    /// Server CPU from the end of ingest until the merge was done.
    cpu_s: f64,
    state: StoreState,
}

/// Polls the store every 2s until the server's compaction has nothing left to merge
/// (files settle for 30s, the maintenance loop runs every 30s), at most
/// `MERGE_TIMEOUT`.
async fn wait_merged(server: &Server, dir: &Path, ticks: f64) -> MergeWait {
    let started = Instant::now();
    let cpu_before = cpu_seconds(server.pid(), ticks);
    let mut cache = HashMap::new();
    loop {
        let state = store_state(dir, &mut cache);
        let timed_out = started.elapsed() > MERGE_TIMEOUT;
        if state.settled || timed_out {
            if !state.settled {
                eprintln!(
                    "warning: {} not merged after {}s; measuring it as it is",
                    dir.display(),
                    MERGE_TIMEOUT.as_secs()
                );
            }
            return MergeWait {
                waited_s: started.elapsed().as_secs_f64(),
                cpu_s: cpu_seconds(server.pid(), ticks) - cpu_before,
                state,
            };
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

// ---------------------------------------------------------------------------------------
// One store's run: ingest, batch files, merge, restart

struct StoreRun {
    label: &'static str,
    items: usize,
    wire_bytes: usize,
    json_bytes: usize,
    ingest: IngestStats,
    /// Batch files right after ingest: (files, bytes).
    batch: (usize, u64),
    /// Merged files already there right after ingest (a merge ran during it).
    merged_during_ingest: usize,
    merge: MergeWait,
    /// `.parquet` files after the merge and a restart: (files, bytes).
    after: (usize, u64),
}

/// Starts Vigil on `dir`, ingests `payload`, waits for the merge, restarts it (which
/// deletes the replaced files) and measures the store; the server is stopped after.
async fn store_run(
    root: &Path,
    dir: &Path,
    tag: &str,
    label: &'static str,
    payload: Payload,
    ticks: f64,
) -> StoreRun {
    let store_dir = dir.join("blocks").join(payload.wire.store());
    let mut server = start_vigil(dir, root.join(format!("{tag}-ingest.log"))).await;
    let ingest = ingest(&server, &payload, ticks).await;
    let right_after = store_state(&store_dir, &mut HashMap::new());
    let (items, wire_bytes, json_bytes) = (payload.items, payload.wire_bytes, payload.json_bytes);
    drop(payload);
    eprintln!(
        "{label}: {} batch files ({:.1} MB) right after ingest; waiting for the merge…",
        right_after.batch_files,
        mb(right_after.batch_bytes as f64)
    );
    let merge = wait_merged(&server, &store_dir, ticks).await;
    eprintln!(
        "{label}: merged in {:.0}s ({:.1} CPU-s): {} live files ({} merged), {:.1} MB, {} rows",
        merge.waited_s,
        merge.cpu_s,
        merge.state.live_files,
        merge.state.merged_files,
        mb(merge.state.live_bytes as f64),
        merge.state.live_rows
    );
    server.stop().await;
    let mut server = start_vigil(dir, root.join(format!("{tag}-restart.log"))).await;
    let after = parquet_totals(&store_dir);
    if after.1 != merge.state.live_bytes {
        eprintln!(
            "warning: {label}: {} bytes on disk after the restart, {} expected from the merged files' footers",
            after.1, merge.state.live_bytes
        );
    }
    if merge.state.live_rows != items as i64 {
        eprintln!(
            "warning: {label}: {} rows in the live files, {items} records sent",
            merge.state.live_rows
        );
    }
    server.stop().await;
    StoreRun {
        label,
        items,
        wire_bytes,
        json_bytes,
        ingest,
        batch: (right_after.batch_files, right_after.batch_bytes),
        merged_during_ingest: right_after.merged_files,
        merge,
        after,
    }
}

// ---------------------------------------------------------------------------------------
// Queries

/// The rows of an answer and the sum of its last column (`None` unless all numeric).
#[derive(Clone, Copy, PartialEq, Debug)]
struct Check {
    rows: usize,
    sum: Option<f64>,
}

impl Check {
    fn same(self, other: Check) -> bool {
        self.rows == other.rows
            && match (self.sum, other.sum) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                (None, None) => true,
                _ => false,
            }
    }
}

struct Timing {
    median_ms: f64,
    /// One per timed run.
    checks: Vec<Check>,
}

/// A query as both engines run it: `sqls[0]` alone (warm-up, then `QUERY_RUNS` runs), or
/// a warm-up with `sqls[0]` and one run of each other.
struct QuerySpec {
    name: String,
    vigil: Vec<String>,
    duckdb: Vec<String>,
    /// The rows each timed run must return (lookups), if known.
    expected_rows: Vec<usize>,
}

fn timed_sqls(sqls: &[String]) -> Vec<&String> {
    if sqls.len() == 1 {
        std::iter::repeat_n(&sqls[0], QUERY_RUNS).collect()
    } else {
        sqls[1..].iter().collect()
    }
}

async fn vigil_sql(client: &reqwest::Client, url: &str, sql: &str) -> Result<(f64, Check), String> {
    let started = Instant::now();
    let response = client
        .post(format!("{url}/api/v1/sql"))
        .form(&[("query", sql), ("format", "json")])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{status}: {e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if !status.is_success() || value["status"] != "success" {
        return Err(format!("{status}: {}", value["error"]));
    }
    let rows = value["data"]["rows"]
        .as_array()
        .ok_or("no rows in the answer")?;
    let last = value["data"]["columns"]
        .as_array()
        .and_then(|columns| columns.last())
        .and_then(|column| column["name"].as_str())
        .unwrap_or("");
    let sum = if rows.is_empty() {
        None
    } else {
        rows.iter()
            .map(|row| row.get(last).and_then(Value::as_f64))
            .sum::<Option<f64>>()
    };
    Ok((
        ms,
        Check {
            rows: rows.len(),
            sum,
        },
    ))
}

async fn time_vigil(
    client: &reqwest::Client,
    url: &str,
    sqls: &[String],
) -> Result<Timing, String> {
    vigil_sql(client, url, &sqls[0]).await?;
    let mut times = Vec::new();
    let mut checks = Vec::new();
    for sql in timed_sqls(sqls) {
        let (ms, check) = vigil_sql(client, url, sql).await?;
        times.push(ms);
        checks.push(check);
    }
    Ok(Timing {
        median_ms: median(&times),
        checks,
    })
}

/// `GET /api/traces/{id}`: the time and the number of spans in the answer.
async fn jaeger_trace(
    client: &reqwest::Client,
    url: &str,
    id: &str,
) -> Result<(f64, usize), String> {
    let started = Instant::now();
    let response = client
        .get(format!("{url}/api/traces/{id}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok((ms, value["data"][0]["spans"].as_array().map_or(0, Vec::len)))
}

async fn time_jaeger(
    client: &reqwest::Client,
    url: &str,
    samples: &[TraceSample],
) -> Result<Timing, String> {
    let Some((warm_up, timed)) = samples.split_first() else {
        return Err("no trace ids".into());
    };
    jaeger_trace(client, url, &warm_up.id).await?;
    let mut times = Vec::new();
    let mut checks = Vec::new();
    for sample in timed {
        let (ms, spans) = jaeger_trace(client, url, &sample.id).await?;
        times.push(ms);
        checks.push(Check {
            rows: spans,
            sum: None,
        });
    }
    Ok(Timing {
        median_ms: median(&times),
        checks,
    })
}

const DUCKDB_SCRIPT: &str = r#"
import json, statistics, sys, time
import duckdb

spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
try:
    con.execute("SET TimeZone = 'UTC'")
except Exception:
    pass
try:
    kind = con.execute("SELECT typeof(MAP(['a'], ['b'])['a'])").fetchone()[0]
    direct = kind.upper() == "VARCHAR"
except Exception:
    direct = False
ns = spec["ns"]["direct" if direct else "list"]
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]


def run(sql):
    started = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return (time.perf_counter() - started) * 1000.0, rows


def as_text(sql):
    # Every column as text, as Vigil's JSON answer has it (no Python datetime or pytz).
    return "SELECT COLUMNS(*)::VARCHAR FROM (" + sql + ")"


def warm_up(sql):
    try:
        con.execute(as_text(sql)).fetchall()
        return as_text
    except Exception:
        con.execute(sql).fetchall()
        return lambda s: s


def summary(rows):
    total = 0.0
    for row in rows:
        try:
            total += float(row[-1])
        except (TypeError, ValueError):
            return {"rows": len(rows), "sum": None}
    return {"rows": len(rows), "sum": total if rows else None}


out = {"version": duckdb.__version__, "map_access": ns, "threads": str(threads), "queries": []}
for query in spec["queries"]:
    sqls = [s.replace("@NS@", ns) for s in query["sql"]]
    try:
        wrap = warm_up(sqls[0])
        timed = sqls * spec["runs"] if len(sqls) == 1 else sqls[1:]
        times, checks = [], []
        for sql in timed:
            ms, rows = run(wrap(sql))
            times.append(ms)
            checks.append(summary(rows))
        out["queries"].append(
            {"name": query["name"], "median_ms": statistics.median(times), "checks": checks}
        )
    except Exception as err:
        out["queries"].append({"name": query["name"], "error": str(err)})
print(json.dumps(out))
"#;

fn python_ok(args: &[&str]) -> bool {
    Command::new("python3")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `import duckdb`, installing it with pip first if needed.
fn duckdb_available() -> bool {
    if python_ok(&["-c", "import duckdb"]) {
        return true;
    }
    eprintln!("python3 has no duckdb: python3 -m pip install -q duckdb");
    python_ok(&["-m", "pip", "install", "-q", "duckdb"]) && python_ok(&["-c", "import duckdb"])
}

struct DuckOutcome {
    version: String,
    threads: String,
    map_access: String,
    results: Vec<Result<Timing, String>>,
}

fn run_duckdb(root: &Path, specs: &[QuerySpec]) -> Result<DuckOutcome, String> {
    let spec = json!({
        "runs": QUERY_RUNS,
        "ns": {
            "direct": "stream['namespace']",
            "list": "element_at(stream, 'namespace')[1]",
        },
        "queries": specs
            .iter()
            .map(|q| json!({"name": q.name, "sql": q.duckdb}))
            .collect::<Vec<_>>(),
    });
    let path = root.join("duckdb-queries.json");
    std::fs::write(&path, spec.to_string()).map_err(|e| e.to_string())?;
    let output = Command::new("python3")
        .arg("-c")
        .arg(DUCKDB_SCRIPT)
        .arg(path)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let value: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "unreadable DuckDB output ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let results = value["queries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            if let Some(err) = q["error"].as_str() {
                return Err(err.to_string());
            }
            let checks = q["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Check {
                    rows: c["rows"].as_u64().unwrap_or(0) as usize,
                    sum: c["sum"].as_f64(),
                })
                .collect();
            Ok(Timing {
                median_ms: q["median_ms"].as_f64().unwrap_or(f64::NAN),
                checks,
            })
        })
        .collect();
    let text = |key: &str| value[key].as_str().unwrap_or("?").to_string();
    Ok(DuckOutcome {
        version: text("version"),
        threads: text("threads"),
        map_access: text("map_access"),
        results,
    })
}

/// The queries over the live files of `dir` (Vigil's `logs` and `spans` tables).
fn query_specs(dir: &Path, samples: &[TraceSample]) -> Vec<QuerySpec> {
    let logs = format!(
        "read_parquet('{}/*/*.parquet', hive_partitioning=false)",
        dir.join("blocks").join("logs").display()
    );
    let spans = format!(
        "read_parquet('{}/*/*.parquet', hive_partitioning=false)",
        dir.join("blocks").join("spans").display()
    );
    let templates = [
        (
            "(a) `count(*) WHERE severity = 'error'`",
            "SELECT count(*) AS n FROM {logs} WHERE severity = 'error'",
        ),
        (
            "(b) errors per namespace per minute",
            "SELECT {ns} AS ns, date_trunc('minute', {ts}) AS at_minute, count(*) AS errors FROM {logs} WHERE severity = 'error' GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        (
            "(c) `count(*) WHERE body LIKE '%timeout%'`",
            "SELECT count(*) AS n FROM {logs} WHERE body LIKE '%timeout%'",
        ),
    ];
    let mut specs: Vec<QuerySpec> = templates
        .iter()
        .map(|(name, template)| QuerySpec {
            name: name.to_string(),
            vigil: vec![template
                .replace("{logs}", "logs")
                .replace("{ns}", "stream['namespace']")
                .replace("{ts}", "timestamp")],
            duckdb: vec![template
                .replace("{logs}", &logs)
                .replace("{ns}", "@NS@")
                .replace("{ts}", "\"timestamp\"")],
            expected_rows: Vec::new(),
        })
        .collect();
    if samples.len() >= 2 {
        let lookup = |table: &str| -> Vec<String> {
            samples
                .iter()
                .map(|s| format!("SELECT * FROM {table} WHERE trace_id = '{}'", s.id))
                .collect()
        };
        specs.push(QuerySpec {
            name: format!(
                "(d) `SELECT * FROM spans WHERE trace_id = …` ({} ids)",
                samples.len() - 1
            ),
            vigil: lookup("spans"),
            duckdb: lookup(&spans),
            expected_rows: samples[1..].iter().map(|s| s.spans).collect(),
        });
    }
    specs
}

/// How a timing's answers compare: with the expected row counts, else with the other
/// engine's first answer.
fn describe(timing: &Timing, expected: &[usize]) -> String {
    if !expected.is_empty() {
        let complete = timing
            .checks
            .iter()
            .zip(expected)
            .filter(|(check, want)| check.rows == **want)
            .count();
        return format!("{complete}/{} traces complete", expected.len());
    }
    match timing.checks.first() {
        Some(Check {
            rows: 1,
            sum: Some(sum),
        }) => format!("{sum:.0}"),
        Some(check) => match check.sum {
            Some(sum) => format!("{} rows, total {sum:.0}", check.rows),
            None => format!("{} rows", check.rows),
        },
        None => "—".into(),
    }
}

struct QueryReport {
    logs_rows: Result<(f64, Check), String>,
    spans_rows: Result<(f64, Check), String>,
    specs: Vec<QuerySpec>,
    vigil: Vec<Result<Timing, String>>,
    jaeger: Result<Timing, String>,
    jaeger_expected: Vec<usize>,
    duckdb: Result<DuckOutcome, String>,
}

async fn run_queries(root: &Path, dir: &Path, samples: &[TraceSample]) -> QueryReport {
    let mut server = start_vigil(dir, root.join("queries.log")).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let logs_rows = vigil_sql(&client, &server.url, "SELECT count(*) AS n FROM logs").await;
    let spans_rows = vigil_sql(&client, &server.url, "SELECT count(*) AS n FROM spans").await;
    let specs = query_specs(dir, samples);
    let mut vigil = Vec::new();
    for spec in &specs {
        eprintln!("Vigil: {}", spec.name);
        vigil.push(time_vigil(&client, &server.url, &spec.vigil).await);
    }
    eprintln!("Vigil: Jaeger /api/traces/{{id}}");
    let jaeger = time_jaeger(&client, &server.url, samples).await;
    server.stop().await;
    // The server is stopped: DuckDB reads the files alone.
    let duckdb = if duckdb_available() {
        eprintln!("DuckDB: the same queries");
        run_duckdb(root, &specs)
    } else {
        Err("DuckDB unavailable".into())
    };
    QueryReport {
        logs_rows,
        spans_rows,
        specs,
        vigil,
        jaeger,
        jaeger_expected: samples.iter().skip(1).map(|s| s.spans).collect(),
        duckdb,
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn print_ingest(runs: &[StoreRun]) {
    println!("### Ingest ({BATCH} records per request, {CONNECTIONS} connections, acknowledged after fsync)\n");
    println!("| protocol | records | request MB | wall s | records/s | request MB/s | server CPU s | records per server CPU-second | ack p50 ms | ack p99 ms | server peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let i = &run.ingest;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} |",
            run.label,
            run.items,
            mb(run.wire_bytes as f64),
            i.wall_s,
            run.items as f64 / i.wall_s,
            mb(run.wire_bytes as f64) / i.wall_s,
            i.cpu_s,
            run.items as f64 / i.cpu_s,
            percentile(&i.latencies, 0.5),
            percentile(&i.latencies, 0.99),
            i.peak_rss as f64 / 1048576.0
        );
    }
    for run in runs.iter().filter(|r| r.merged_during_ingest > 0) {
        println!(
            "\n{}: the server's compaction already merged batch files during ingest ({} merged files right after it); its CPU is in the ingest's server CPU.",
            run.label, run.merged_during_ingest
        );
    }
}

fn print_storage(runs: &[StoreRun]) {
    println!("\n### Bytes on disk (Parquet, zstd)\n");
    println!("Raw: the NDJSON documents of the log records (without `_bulk` action lines); for spans, the OTLP protobuf request bytes. After the merge: the server's compaction merged the batch files, then a restart deleted the files they replace.\n");
    println!("| data | records | raw MB | batch files | batch MB | batch bytes/record | after merge: files | after merge MB | bytes/record | after merge / raw | merge wait s | merge server CPU s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let raw = if run.json_bytes > 0 {
            run.json_bytes
        } else {
            run.wire_bytes
        };
        let n = run.items as f64;
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1}% | {:.0} | {:.1} |",
            run.label,
            run.items,
            mb(raw as f64),
            run.batch.0,
            mb(run.batch.1 as f64),
            run.batch.1 as f64 / n,
            run.after.0,
            mb(run.after.1 as f64),
            run.after.1 as f64 / n,
            100.0 * run.after.1 as f64 / raw as f64,
            run.merge.waited_s,
            run.merge.cpu_s
        );
    }
}

fn ms_cell(result: &Result<Timing, String>) -> String {
    match result {
        Ok(timing) => format!("{:.1}", timing.median_ms),
        Err(_) => "error".into(),
    }
}

fn print_queries(report: &QueryReport, n_logs: usize, n_spans: usize) {
    println!("\n### Queries: Vigil vs DuckDB on the same Parquet files\n");
    let count = |result: &Result<(f64, Check), String>| match result {
        Ok((_, check)) => format!("{:.0}", check.sum.unwrap_or(f64::NAN)),
        Err(err) => format!("error: {err}"),
    };
    println!(
        "Data: the merged `_bulk` logs ({n_logs} sent; `logs` has {}) and spans ({n_spans} sent; `spans` has {}). Vigil: `POST /api/v1/sql` (`format=json`, the whole answer read), one warm-up then the median of {QUERY_RUNS}; lookups: a warm-up id, then the median over the other ids, one run each. The server is stopped while DuckDB runs.",
        count(&report.logs_rows),
        count(&report.spans_rows)
    );
    let duck_results = match &report.duckdb {
        Ok(outcome) => {
            println!(
                "DuckDB {} (Python, {} threads, `read_parquet(…, hive_partitioning=false)`, map access `{}`, every column cast to VARCHAR for the fetch), timed in Python, one warm-up then the median of {QUERY_RUNS}.\n",
                outcome.version, outcome.threads, outcome.map_access
            );
            (0..report.specs.len())
                .map(|i| outcome.results.get(i))
                .collect::<Vec<_>>()
        }
        Err(err) => {
            println!("{err}\n");
            report.specs.iter().map(|_| None).collect::<Vec<_>>()
        }
    };
    println!("| query | Vigil ms | DuckDB ms | Vigil / DuckDB | result (Vigil / DuckDB) |");
    println!("|---|---:|---:|---:|---|");
    let mut warnings = Vec::new();
    for ((spec, ours), theirs) in report.specs.iter().zip(&report.vigil).zip(duck_results) {
        let ratio = match (ours, theirs) {
            (Ok(a), Some(Ok(b))) => format!("{:.2}", a.median_ms / b.median_ms),
            _ => "—".into(),
        };
        let ours_text = match ours {
            Ok(timing) => describe(timing, &spec.expected_rows),
            Err(err) => {
                warnings.push(format!("{}: Vigil failed: {err}", spec.name));
                "error".into()
            }
        };
        let theirs_text = match theirs {
            Some(Ok(timing)) => describe(timing, &spec.expected_rows),
            Some(Err(err)) => {
                warnings.push(format!("{}: DuckDB failed: {err}", spec.name));
                "error".into()
            }
            None => "—".into(),
        };
        if let (Ok(a), Some(Ok(b))) = (ours, theirs) {
            let agree = match (a.checks.first(), b.checks.first()) {
                (Some(x), Some(y)) => x.same(*y),
                _ => false,
            };
            if spec.expected_rows.is_empty() && !agree {
                warnings.push(format!(
                    "{}: the engines' answers differ ({:?} vs {:?})",
                    spec.name,
                    a.checks.first(),
                    b.checks.first()
                ));
            }
        }
        println!(
            "| {} | {} | {} | {ratio} | {ours_text} / {theirs_text} |",
            spec.name,
            ms_cell(ours),
            theirs.map_or_else(|| "—".to_string(), ms_cell),
        );
    }
    let jaeger_text = match &report.jaeger {
        Ok(timing) => describe(timing, &report.jaeger_expected),
        Err(err) => {
            warnings.push(format!("Jaeger API failed: {err}"));
            "error".into()
        }
    };
    println!(
        "| (e) Jaeger `GET /api/traces/{{id}}` ({} ids) | {} | — | — | {jaeger_text} |",
        report.jaeger_expected.len(),
        ms_cell(&report.jaeger)
    );
    for warning in warnings {
        println!("\n> warning: {warning}");
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

fn print_targets(runs: &[StoreRun], report: Option<&QueryReport>, n_spans: usize) {
    println!("\n### Targets\n");
    for run in runs.iter().filter(|r| r.json_bytes > 0) {
        let per_cpu = run.items as f64 / run.ingest.cpu_s;
        println!(
            "- Log ingest ≥ 150,000 records/s per core with fsync'd acks — {}: {per_cpu:.0} records per server CPU-second ({:.0} records/s wall on this machine): {}",
            run.label,
            run.items as f64 / run.ingest.wall_s,
            verdict(per_cpu >= 150_000.0)
        );
    }
    for run in runs.iter().filter(|r| r.json_bytes > 0) {
        let ratio = run.after.1 as f64 / run.json_bytes as f64;
        println!(
            "- Stored size ≤ 10% of the raw JSON — {}: {:.1}% ({:.1} bytes per record on disk vs {:.1} bytes of JSON): {}",
            run.label,
            100.0 * ratio,
            run.after.1 as f64 / run.items as f64,
            run.json_bytes as f64 / run.items as f64,
            verdict(ratio <= 0.10)
        );
    }
    if let Some(report) = report {
        let lookup = report
            .specs
            .iter()
            .zip(&report.vigil)
            .find(|(spec, _)| !spec.expected_rows.is_empty())
            .map(|(_, timing)| timing);
        if let Some(Ok(sql)) = lookup {
            println!(
                "- trace_id lookup < 50 ms over {n_spans} spans — SQL: {:.1} ms median: {}",
                sql.median_ms,
                verdict(sql.median_ms < 50.0)
            );
        }
        if let Ok(jaeger) = &report.jaeger {
            println!(
                "- trace_id lookup < 50 ms over {n_spans} spans — Jaeger API: {:.1} ms median: {}",
                jaeger.median_ms,
                verdict(jaeger.median_ms < 50.0)
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |name: &str| args.iter().any(|a| a == name);
    let all = has("all") || !(has("logs") || has("spans") || has("queries"));
    let want_queries = all || has("queries");
    let want_bulk = all || has("logs") || want_queries;
    let want_otlp_logs = all || has("logs");
    let want_spans = all || has("spans") || want_queries;
    let n_logs = env_usize("VIGIL_BENCH_LOGS", 1_000_000);
    let n_spans = env_usize("VIGIL_BENCH_SPANS", 2_000_000);
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // The `_bulk` logs and the spans share a data directory (the queries read both); the
    // OTLP logs get their own.
    let main_dir = root.join("vigil");
    let otlp_dir = root.join("vigil-otlp-logs");
    // Every timestamp lies in the WINDOW_MS before the run.
    let base_ms = now_ms() - WINDOW_MS - 10_000;
    print_header();
    println!(
        "Data: {n_logs} Kubernetes container log records (~150 containers in 20 namespaces; JSON access, nginx, Spring Boot and logfmt lines of 80–300 bytes) as Fluentd sends them to Elasticsearch (`logstash_format`, `kubernetes_metadata`) and the same records over OTLP; {n_spans} spans in traces of 5–15 (frontend → API → database). Timestamps increase over the {} minutes before the run.\n",
        WINDOW_MS / 60_000
    );
    runtime.block_on(async {
        let mut runs = Vec::new();
        let mut samples = Vec::new();
        if want_bulk || want_otlp_logs {
            let cluster = Cluster::new(0xc1a5_7e12);
            if want_bulk {
                let payload = log_payload(&cluster, Wire::Bulk, n_logs, base_ms);
                runs.push(
                    store_run(root, &main_dir, "bulk", "logs, `_bulk`", payload, ticks).await,
                );
            }
            if want_otlp_logs {
                let payload = log_payload(&cluster, Wire::OtlpLogs, n_logs, base_ms);
                runs.push(
                    store_run(root, &otlp_dir, "otlp-logs", "logs, OTLP", payload, ticks).await,
                );
                let _ = std::fs::remove_dir_all(otlp_dir.as_path());
            }
        }
        if want_spans {
            let topology = Topology::new(0x7ace_5eed);
            let (payload, picked) = span_payload(&topology, n_spans, base_ms);
            samples = picked;
            runs.push(store_run(root, &main_dir, "spans", "spans, OTLP", payload, ticks).await);
        }
        let report = if want_queries {
            Some(run_queries(root, &main_dir, &samples).await)
        } else {
            None
        };
        print_ingest(&runs);
        print_storage(&runs);
        if let Some(report) = &report {
            print_queries(report, n_logs, n_spans);
        }
        print_targets(&runs, report.as_ref(), n_spans);
    });
}

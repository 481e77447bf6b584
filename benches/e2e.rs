//! End-to-end harness (not criterion): measures, in one run and on one machine,
//!
//! 1. remote_write ingest throughput with a durable ack, 10k and 100k active series,
//!    Vigil (`vigil serve`, release) vs Prometheus (`--web.enable-remote-write-receiver`);
//! 2. bytes per sample on disk for a realistic series mix (counters, gauges, near-constant
//!    0/1 series; 1000 series × 720 samples at 15s): Vigil's Parquet vs the Prometheus TSDB
//!    blocks that `promtool tsdb create-blocks-from openmetrics` builds from the same data.
//!
//! 3. with `-- query`: PromQL latency of dashboard queries (instant and 30-minute range)
//!    at 10k and 100k series, Vigil vs Prometheus on the same remote-written data.
//!
//! Run: `cargo bench --bench e2e [-- query]` (needs `prometheus` and `promtool` on PATH).
//! Prints a Markdown table for BENCHMARKS.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use vigil_connectors::remote_write;
use vigil_storage::{LabelSet, SampleBatch};

const SERIES_PER_REQUEST: usize = 2000;
const CONCURRENCY: usize = 4;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(response) = client.get(format!("{url}/-/ready")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} not ready");
}

async fn start_vigil(dir: &Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start vigil");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&server.url).await;
    server
}

async fn start_prometheus(dir: &Path) -> Server {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (is it installed?)");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&server.url).await;
    server
}

fn labels(n: usize) -> Vec<LabelSet> {
    (0..n)
        .map(|idx| {
            let pod = format!("pod-{}", idx / 10);
            let container = format!("c{}", idx % 10);
            let namespace = format!("ns-{}", idx % 20);
            LabelSet::from_pairs([
                ("__name__", "container_cpu_usage_seconds_total"),
                ("job", "kubelet"),
                ("namespace", namespace.as_str()),
                ("pod", pod.as_str()),
                ("container", container.as_str()),
            ])
            .expect("labels")
        })
        .collect()
}

/// Sends `rounds` samples of every series, `SERIES_PER_REQUEST` series per request and
/// `CONCURRENCY` requests in flight; returns samples per second (bodies prebuilt).
async fn ingest(url: &str, series: &[LabelSet], rounds: usize) -> f64 {
    ingest_from(url, series, rounds, now_ms() - rounds as i64 * 15_000).await
}

/// [`ingest`] with the first round at `start_ts` (ms), one round every 15s; counters
/// rise by 100 per round.
async fn ingest_from(url: &str, series: &[LabelSet], rounds: usize, start_ts: i64) -> f64 {
    let mut bodies = Vec::new();
    for round in 0..rounds {
        for chunk in series.chunks(SERIES_PER_REQUEST) {
            let mut batch = SampleBatch::default();
            for (offset, labels) in chunk.iter().enumerate() {
                let idx = batch.push_series(labels.clone());
                batch.push_sample(
                    idx,
                    start_ts + round as i64 * 15_000,
                    (round * 100 + offset) as f64,
                );
            }
            bodies.push((round, remote_write::encode(&batch)));
        }
    }
    let client = reqwest::Client::new();
    let endpoint = format!("{url}/api/v1/write");
    let started = Instant::now();
    // Rounds go one after another so each series stays in time order.
    for round in 0..rounds {
        let round_bodies: Vec<_> = bodies.iter().filter(|(r, _)| *r == round).collect();
        futures::stream::iter(round_bodies)
            .map(|(_, body)| {
                let request = client
                    .post(&endpoint)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body.clone());
                async move {
                    let response = request.send().await.expect("send");
                    assert!(
                        response.status().is_success(),
                        "write failed: {}",
                        response.status()
                    );
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
    }
    (series.len() * rounds) as f64 / started.elapsed().as_secs_f64()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
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

/// A realistic mix: a third counters (integer increments), a third float gauges
/// (random walk), a third near-constant 0/1 series; 15s scrape interval.
fn realistic_mix(
    n_series: usize,
    n_samples: usize,
    start_ms: i64,
) -> Vec<(LabelSet, Vec<(i64, f64)>)> {
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n_series)
        .map(|idx| {
            let kind = [
                "http_requests_total",
                "node_memory_free_bytes_ratio",
                "kube_pod_status_ready",
            ][idx % 3];
            let pod = format!("pod-{idx}");
            let labels =
                LabelSet::from_pairs([("__name__", kind), ("job", "bench"), ("pod", pod.as_str())])
                    .expect("labels");
            let mut value = 0.0f64;
            let samples = (0..n_samples)
                .map(|step| {
                    value = match idx % 3 {
                        0 => value + (next() * 100.0).floor(),
                        1 => (value + next() - 0.5).clamp(-1000.0, 1000.0),
                        _ => {
                            if next() < 0.01 {
                                1.0 - value
                            } else {
                                value
                            }
                        }
                    };
                    (start_ms + step as i64 * 15_000, value)
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

async fn bytes_per_sample(root: &Path) -> (f64, f64, usize) {
    let n_series = 1000;
    let n_samples = 720;
    let start = (now_ms() - 4 * 3600 * 1000) / 15_000 * 15_000;
    let data = realistic_mix(n_series, n_samples, start);
    let total = n_series * n_samples;

    // Vigil: remote_write in time order, then a clean shutdown flushes to Parquet.
    let vigil_dir = root.join("vigil-bytes");
    let mut vigil = start_vigil(&vigil_dir).await;
    let client = reqwest::Client::new();
    for steps in (0..n_samples).collect::<Vec<_>>().chunks(30) {
        let mut batch = SampleBatch::default();
        for (labels, samples) in &data {
            let idx = batch.push_series(labels.clone());
            for &step in steps {
                batch.push_sample(idx, samples[step].0, samples[step].1);
            }
        }
        let response = client
            .post(format!("{}/api/v1/write", vigil.url))
            .body(remote_write::encode(&batch))
            .send()
            .await
            .expect("send");
        assert!(response.status().is_success());
    }
    vigil.terminate();
    let vigil_bytes = dir_bytes(&vigil_dir.join("blocks"));

    // Prometheus: the same samples as OpenMetrics, turned into TSDB blocks by promtool.
    let mut text = String::new();
    for family in [
        "http_requests_total",
        "node_memory_free_bytes_ratio",
        "kube_pod_status_ready",
    ] {
        text.push_str(&format!("# TYPE {family} gauge\n"));
        for (labels, samples) in data.iter().filter(|(l, _)| l.metric_name() == Some(family)) {
            let pod = labels.get("pod").unwrap_or_default();
            for (ts, value) in samples {
                text.push_str(&format!(
                    "{family}{{job=\"bench\",pod=\"{pod}\"}} {value} {}.{:03}\n",
                    ts / 1000,
                    ts % 1000
                ));
            }
        }
    }
    text.push_str("# EOF\n");
    let om = root.join("data.om");
    std::fs::write(&om, text).expect("write openmetrics");
    let blocks = root.join("prom-blocks");
    let status = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&blocks)
        .stdout(Stdio::null())
        .status()
        .expect("promtool");
    assert!(status.success());
    let prom_bytes = dir_bytes(&blocks);
    (
        vigil_bytes as f64 / total as f64,
        prom_bytes as f64 / total as f64,
        total,
    )
}

/// Dashboard-style queries: instant at the end of the data, range over the last 30
/// minutes at a 60s step (Grafana's shape).
const INSTANT_QUERIES: &[&str] = &[
    "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
    "topk(5, rate(container_cpu_usage_seconds_total[5m]))",
    "count(container_cpu_usage_seconds_total)",
    "container_cpu_usage_seconds_total{pod=\"pod-7\"}",
];
const RANGE_QUERIES: &[&str] = &[
    "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
    "rate(container_cpu_usage_seconds_total{namespace=\"ns-3\",pod=~\"pod-1.*\"}[5m])",
    "max by (namespace) (container_cpu_usage_seconds_total)",
];

/// Median latency (ms) of `runs` executions of one query, after one warm-up, and the
/// number of series in the answer.
async fn time_query(url: &str, params: &[(&str, String)], runs: usize) -> (f64, usize) {
    let client = reqwest::Client::new();
    let mut times = Vec::with_capacity(runs);
    let mut series = 0;
    for run in 0..=runs {
        let started = Instant::now();
        let response = client
            .post(format!("{url}{}", params[0].1))
            .form(&params[1..])
            .send()
            .await
            .expect("query");
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        series = body["data"]["result"].as_array().map_or(1, Vec::len);
        if run > 0 {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], series)
}

/// Query latency, Vigil vs Prometheus on the same data: 30 minutes of 15s samples for
/// `n_series` counters written to both over remote_write, then each query timed on both.
async fn query_latency(root: &Path, n_series: usize) {
    let series = labels(n_series);
    let rounds = 120;
    let start_ts = (now_ms() - rounds as i64 * 15_000) / 15_000 * 15_000;
    let vigil = start_vigil(&root.join(format!("q-vigil-{n_series}"))).await;
    ingest_from(&vigil.url, &series, rounds, start_ts).await;
    let prometheus = start_prometheus(&root.join(format!("q-prom-{n_series}"))).await;
    ingest_from(&prometheus.url, &series, rounds, start_ts).await;
    // Off the sample grid, so both versions' window edges agree.
    let end = (start_ts + (rounds as i64 - 1) * 15_000 + 7_500) as f64 / 1000.0;
    let runs = 5;
    for (kind, queries) in [("instant", INSTANT_QUERIES), ("range", RANGE_QUERIES)] {
        for query in queries {
            let params: Vec<(&str, String)> = if kind == "instant" {
                vec![
                    ("path", "/api/v1/query".into()),
                    ("query", query.to_string()),
                    ("time", end.to_string()),
                ]
            } else {
                vec![
                    ("path", "/api/v1/query_range".into()),
                    ("query", query.to_string()),
                    ("start", (end - 1800.0).to_string()),
                    ("end", end.to_string()),
                    ("step", "60".into()),
                ]
            };
            let (ours, our_series) = time_query(&vigil.url, &params, runs).await;
            let (theirs, their_series) = time_query(&prometheus.url, &params, runs).await;
            let note = if our_series == their_series {
                ""
            } else {
                " (series count differs!)"
            };
            println!(
                "| {n_series} | {kind} | `{}` | {our_series} | {ours:.1} | {theirs:.1} | {:.2}{note} |",
                query.replace('|', "\\|"),
                ours / theirs
            );
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    if std::env::args().any(|arg| arg == "query") {
        runtime.block_on(async {
            println!("| series | kind | query | result series | Vigil ms (median of 5) | Prometheus ms | Vigil / Prometheus |");
            println!("|---:|---|---|---:|---:|---:|---:|");
            // VIGIL_BENCH_SERIES=100000 runs one size only (for profiling).
            let sizes: Vec<usize> = match std::env::var("VIGIL_BENCH_SERIES") {
                Ok(n) => vec![n.parse().expect("VIGIL_BENCH_SERIES is a number")],
                Err(_) => vec![10_000, 100_000],
            };
            for n_series in sizes {
                query_latency(root.path(), n_series).await;
            }
        });
        return;
    }
    runtime.block_on(async {
        println!("| active series | samples sent | Vigil samples/s (fsync ack) | Prometheus samples/s | Vigil / Prometheus |");
        println!("|---:|---:|---:|---:|---:|");
        for (n_series, rounds) in [(10_000usize, 20usize), (100_000, 5)] {
            let series = labels(n_series);
            let vigil = start_vigil(&root.path().join(format!("vigil-{n_series}"))).await;
            let vigil_rate = ingest(&vigil.url, &series, rounds).await;
            drop(vigil);
            let prometheus = start_prometheus(&root.path().join(format!("prom-{n_series}"))).await;
            let prom_rate = ingest(&prometheus.url, &series, rounds).await;
            drop(prometheus);
            println!(
                "| {n_series} | {} | {vigil_rate:.0} | {prom_rate:.0} | {:.2} |",
                n_series * rounds,
                vigil_rate / prom_rate
            );
        }
        let (vigil_bps, prom_bps, total) = bytes_per_sample(root.path()).await;
        println!("\n| data | samples | Vigil Parquet bytes/sample | Prometheus TSDB bytes/sample | ratio |");
        println!("|---|---:|---:|---:|---:|");
        println!("| 1000 series × 720 samples (counters, gauges, 0/1) | {total} | {vigil_bps:.2} | {prom_bps:.2} | {:.2} |", vigil_bps / prom_bps);
    });
}

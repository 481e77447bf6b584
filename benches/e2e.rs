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
//! 4. with `-- alerts`: alert latency from the remote_write ack of the sample that
//!    crosses a threshold to the alert (Vigil: websocket message; Prometheus 2.42 with
//!    `evaluation_interval: 15s`: `/api/v1/alerts`), 10k and 100k series, 100 rules.
//!
//! 5. with `-- incremental`: time per evaluation tick of `sum by (job) (g)` when 1% of
//!    the series change, maintained by the dataflow vs evaluated ad hoc (10k/100k/1M).
//!
//! Run: `cargo bench --bench e2e [-- query|alerts|incremental]` (needs `prometheus` and `promtool` on PATH).
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

/// `vigil serve` on a free port with data in `dir` and an optional config file.
/// The Prometheus config of the ingest and query runs (it scrapes nothing).
const PROMETHEUS_CONFIG: &str = "global:\n  scrape_interval: 1m\n";

async fn start_vigil(dir: &Path, config: Option<&Path>) -> Server {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let child = command
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

/// Prometheus with the remote-write receiver on a free port, data in `dir`, config text
/// `config` (written to `dir/prometheus.yml`).
async fn start_prometheus(dir: &Path, config_text: &str) -> Server {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(&config, config_text).expect("config");
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
    let mut vigil = start_vigil(&vigil_dir, None).await;
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
    let vigil = start_vigil(&root.join(format!("q-vigil-{n_series}")), None).await;
    ingest_from(&vigil.url, &series, rounds, start_ts).await;
    let prometheus =
        start_prometheus(&root.join(format!("q-prom-{n_series}")), PROMETHEUS_CONFIG).await;
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

/// 100 alerting rules, each over 1% of the series (`shard` label), `for: 0s`.
fn alert_rules() -> String {
    let mut text = String::from("groups:\n  - name: bench\n    rules:\n");
    for shard in 0..100 {
        text.push_str(&format!(
            "      - alert: Bench{shard}\n        expr: bench_gauge{{shard=\"{shard}\"}} > 100\n        labels:\n          severity: critical\n"
        ));
    }
    text
}

fn gauge_labels(n: usize) -> Vec<LabelSet> {
    (0..n)
        .map(|idx| {
            let shard = (idx % 100).to_string();
            let id = idx.to_string();
            LabelSet::from_pairs([
                ("__name__", "bench_gauge"),
                ("shard", shard.as_str()),
                ("id", id.as_str()),
            ])
            .expect("labels")
        })
        .collect()
}

/// Sends one remote_write request and checks it was accepted.
async fn post_batch(client: &reqwest::Client, url: &str, batch: &SampleBatch) {
    let response = client
        .post(format!("{url}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(remote_write::encode(batch))
        .send()
        .await
        .expect("write");
    assert!(response.status().is_success(), "{}", response.status());
}

async fn write_one(client: &reqwest::Client, url: &str, labels: &LabelSet, ts: i64, value: f64) {
    let mut batch = SampleBatch::default();
    let idx = batch.push_series(labels.clone());
    batch.push_sample(idx, ts, value);
    post_batch(client, url, &batch).await;
}

/// `rounds` samples of value 1 (below every threshold) for every series, 15s apart.
async fn baseline(
    client: &reqwest::Client,
    url: &str,
    series: &[LabelSet],
    rounds: usize,
    start_ts: i64,
) {
    for round in 0..rounds {
        for chunk in series.chunks(SERIES_PER_REQUEST) {
            let mut batch = SampleBatch::default();
            for labels in chunk {
                let idx = batch.push_series(labels.clone());
                batch.push_sample(idx, start_ts + round as i64 * 15_000, 1.0);
            }
            post_batch(client, url, &batch).await;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Alert latency: from the remote_write ack of the sample that crosses a threshold to
/// the alert, with `n_series` active series and 100 rules. Vigil: the websocket
/// message; Prometheus (evaluation_interval 15s): the alert on `/api/v1/alerts`,
/// polled every 20 ms.
async fn alert_latency(root: &Path, n_series: usize) {
    let series = gauge_labels(n_series);
    let dir = root.join(format!("alerts-{n_series}"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("rules.yml"), alert_rules()).expect("rules");
    let client = reqwest::Client::new();

    // Vigil, with the rules and a websocket subscriber.
    let config = dir.join("vigil.yaml");
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 15s\nrule_files:\n  - {}\n",
            dir.join("rules.yml").display()
        ),
    )
    .expect("config");
    let vigil = start_vigil(&dir.join("vigil"), Some(&config)).await;
    let rounds = 4;
    let start_ts = now_ms() - 60_000;
    baseline(&client, &vigil.url, &series, rounds, start_ts).await;
    let (tx, rx) = std::sync::mpsc::channel::<(String, String, Instant)>();
    let ws_url = format!(
        "{}/api/v1/alerts/stream",
        vigil.url.replace("http://", "ws://")
    );
    std::thread::spawn(move || {
        let (mut socket, _) = tungstenite::connect(&ws_url).expect("websocket");
        loop {
            let text = match socket.read() {
                Ok(tungstenite::Message::Text(text)) => text,
                Ok(_) => continue,
                Err(err) => {
                    eprintln!("websocket: {err}");
                    return;
                }
            };
            let at = Instant::now();
            let message: serde_json::Value = serde_json::from_str(&text).expect("json");
            let id = message["labels"]["id"].as_str().unwrap_or("").to_string();
            let status = message["status"].as_str().unwrap_or("").to_string();
            if tx.send((id, status, at)).is_err() {
                return;
            }
        }
    });
    let trials = 40;
    let mut vigil_ms = Vec::new();
    // The alert can arrive within the same millisecond as the write: keep each series'
    // timestamps strictly increasing.
    let mut last_ts = 0i64;
    let mut next_ts = move || {
        last_ts = now_ms().max(last_ts + 1);
        last_ts
    };
    for trial in 0..trials {
        let target = &series[(trial * 7919) % n_series];
        let id = target.get("id").unwrap_or("").to_string();
        // From the moment the write is sent: the alert may reach the websocket before
        // the HTTP response reaches the client.
        let acked = Instant::now();
        write_one(&client, &vigil.url, target, next_ts(), 1000.0).await;
        loop {
            let (got_id, status, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("alert message");
            if got_id == id && status == "firing" {
                vigil_ms.push(at.saturating_duration_since(acked).as_secs_f64() * 1000.0);
                break;
            }
        }
        write_one(&client, &vigil.url, target, next_ts(), 1.0).await;
        loop {
            let (got_id, status, _) = rx.recv_timeout(Duration::from_secs(30)).expect("resolve");
            if got_id == id && status == "resolved" {
                break;
            }
        }
    }
    drop(vigil);

    // Prometheus with the same rules, evaluation_interval 15s.
    let prometheus = start_prometheus(
        &dir.join("prom"),
        &format!(
            "global:\n  scrape_interval: 1m\n  evaluation_interval: 15s\nrule_files:\n  - {}\n",
            dir.join("rules.yml").display()
        ),
    )
    .await;
    baseline(&client, &prometheus.url, &series, rounds, start_ts).await;
    let prom_trials = 8;
    let mut prom_ms = Vec::new();
    for trial in 0..prom_trials {
        // Writes land at a pseudo-random phase of the 15s evaluation cycle (each trial
        // would otherwise start right after an evaluation and wait a full interval).
        let phase_ms = (trial as u64 * 7_919 + 3_571) % 15_000;
        tokio::time::sleep(Duration::from_millis(phase_ms)).await;
        let target = &series[(trial * 7919) % n_series];
        let id = target.get("id").unwrap_or("").to_string();
        let acked = Instant::now();
        write_one(&client, &prometheus.url, target, now_ms(), 1000.0).await;
        loop {
            let body = client
                .get(format!("{}/api/v1/alerts", prometheus.url))
                .send()
                .await
                .expect("alerts")
                .bytes()
                .await
                .expect("body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let firing = json["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["labels"]["id"] == id.as_str() && a["state"] == "firing");
            if firing {
                prom_ms.push(acked.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(60),
                "prometheus never fired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Resolve before the next trial.
        write_one(&client, &prometheus.url, target, now_ms(), 1.0).await;
    }
    drop(prometheus);
    vigil_ms.sort_by(f64::total_cmp);
    prom_ms.sort_by(f64::total_cmp);
    println!(
        "| {n_series} | 100 | {:.2} | {:.2} | {:.0} | {:.0} | {} / {} |",
        percentile(&vigil_ms, 0.5),
        percentile(&vigil_ms, 0.99),
        percentile(&prom_ms, 0.5),
        percentile(&prom_ms, 0.99),
        vigil_ms.len(),
        prom_ms.len()
    );
}

/// The latest sample of every series, as a head holds it: what an ad hoc evaluation at a
/// tick reads.
/// Every series' samples so far, in memory: what the ad hoc side of the
/// incremental-cost benchmark reads (no storage cost).
struct History {
    series: Vec<(LabelSet, Vec<vigil_queries::promql::Point>)>,
}

impl vigil_queries::promql::SeriesSource for History {
    fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<vigil_queries::promql::Series>, vigil_queries::promql::EvalError> {
        Ok(self
            .series
            .iter()
            .filter(|(labels, _)| vigil_queries::promql::matches(matchers, labels))
            .filter_map(|(labels, points)| {
                let from = points.partition_point(|p| p.t <= start);
                let to = points.partition_point(|p| p.t <= end);
                (from < to).then(|| vigil_queries::promql::Series {
                    labels: labels.clone(),
                    points: points[from..to].to_vec(),
                    drop_name: false,
                })
            })
            .collect())
    }
}

/// Incremental cost: time per evaluation tick of `sum by (job) (g)` when 1% of the
/// series change value, maintained by the dataflow (push the tick's append as storage
/// hands it over, with series ids, then close the epoch) vs evaluated ad hoc over the
/// latest samples. `all_scraped`: every series gets a sample each tick (a scrape), 1%
/// with a new value; otherwise only the 1% that changed get a sample.
fn incremental_cost(n_series: usize, all_scraped: bool, rule_text: &str, metric: &str) {
    let expr = promql_parser::parser::parse(rule_text).expect("parses");
    let mut program = vigil_engine::incremental::Program::default();
    let rule = program.add(&expr);
    let labels: Vec<LabelSet> = (0..n_series)
        .map(|i| {
            let job = format!("job-{}", i % 50);
            let instance = format!("i-{i}");
            LabelSet::from_pairs([
                ("__name__", metric),
                ("job", job.as_str()),
                ("instance", instance.as_str()),
            ])
            .expect("labels")
        })
        .collect();
    let ids: Vec<u64> = labels.iter().map(LabelSet::series_id).collect();
    let mut values: Vec<f64> = (0..n_series).map(|i| (i % 7) as f64).collect();
    let mut engine = vigil_engine::incremental::Engine::start(program, 2).expect("engine");
    let mut history = History {
        series: labels.iter().map(|l| (l.clone(), Vec::new())).collect(),
    };
    let mut incremental_ms = Vec::new();
    let mut ad_hoc_ms = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ticks = 12;
    for tick in 0..=ticks {
        let t = tick as i64 * 15_000;
        let mut changed = Vec::new();
        if tick > 0 {
            for _ in 0..(n_series / 100) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let idx = (state % n_series as u64) as usize;
                values[idx] += 1.0;
                changed.push(idx);
            }
        }
        let sampled: Vec<usize> = if tick == 0 || all_scraped {
            (0..n_series).collect()
        } else {
            changed
        };
        let appended = vigil_storage::Appended {
            ids: sampled.iter().map(|&i| ids[i]).collect(),
            series: sampled.iter().map(|&i| labels[i].clone()).collect(),
            samples: (0..sampled.len())
                .map(|k| vigil_storage::BatchSample {
                    series_idx: k as u32,
                    timestamp_ms: t,
                    value: values[sampled[k]],
                })
                .collect(),
        };
        for &i in &sampled {
            history.series[i]
                .1
                .push(vigil_queries::promql::Point { t, f: values[i] });
        }
        let started = Instant::now();
        engine.push(std::sync::Arc::new(appended));
        engine.evaluate(t);
        let ours = engine.answer(rule).expect("maintained");
        let incremental = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let evaluator = vigil_queries::promql::Evaluator::new(&history, t, t);
        let theirs = evaluator.instant_query(&expr, t).expect("ad hoc");
        let ad_hoc = started.elapsed().as_secs_f64() * 1000.0;
        if let vigil_queries::promql::Value::Vector(samples) = theirs {
            assert_eq!(samples.len(), ours.len(), "same groups");
            let sum = |v: &mut dyn Iterator<Item = f64>| v.sum::<f64>();
            let (a, b) = (
                sum(&mut samples.iter().map(|s| s.f)),
                sum(&mut ours.iter().map(|s| s.1)),
            );
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "same values: {a} vs {b}"
            );
        }
        // Tick 0 loads every series; the steady state is what is measured.
        if tick > 0 {
            incremental_ms.push(incremental);
            ad_hoc_ms.push(ad_hoc);
        }
    }
    incremental_ms.sort_by(f64::total_cmp);
    ad_hoc_ms.sort_by(f64::total_cmp);
    let (ours, theirs) = (
        incremental_ms[incremental_ms.len() / 2],
        ad_hoc_ms[ad_hoc_ms.len() / 2],
    );
    println!(
        "| `{rule_text}` | {n_series} | {} | {} | {ours:.2} | {theirs:.2} | {:.3} |",
        if all_scraped { "all" } else { "changed only" },
        n_series / 100,
        ours / theirs
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    if std::env::args().any(|arg| arg == "incremental") {
        println!("| rule | series | series sampled per tick | changed per tick | incremental ms per tick (push + epoch) | ad hoc ms per tick | ratio |");
        println!("|---|---:|---|---:|---:|---:|---:|");
        let sizes: Vec<usize> = match std::env::var("VIGIL_BENCH_SERIES") {
            Ok(n) => vec![n.parse().expect("VIGIL_BENCH_SERIES is a number")],
            Err(_) => vec![10_000, 100_000, 1_000_000],
        };
        for n_series in sizes {
            for (rule, metric) in [
                ("sum by (job) (g)", "g"),
                ("sum by (job) (rate(c_total[5m]))", "c_total"),
            ] {
                incremental_cost(n_series, true, rule, metric);
                if metric == "g" {
                    // Counters are scraped: "changed only" is the gauge's case.
                    incremental_cost(n_series, false, rule, metric);
                }
            }
        }
        return;
    }
    if std::env::args().any(|arg| arg == "alerts") {
        runtime.block_on(async {
            println!("| series | rules | Vigil p50 ms (write → websocket) | Vigil p99 ms | Prometheus p50 ms (write → /api/v1/alerts, 15s interval) | Prometheus p99 ms | trials (Vigil / Prometheus) |");
            println!("|---:|---:|---:|---:|---:|---:|---|");
            let sizes: Vec<usize> = match std::env::var("VIGIL_BENCH_SERIES") {
                Ok(n) => vec![n.parse().expect("VIGIL_BENCH_SERIES is a number")],
                Err(_) => vec![10_000, 100_000],
            };
            for n_series in sizes {
                alert_latency(root.path(), n_series).await;
            }
        });
        return;
    }
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
            let vigil = start_vigil(&root.path().join(format!("vigil-{n_series}")), None).await;
            let vigil_rate = ingest(&vigil.url, &series, rounds).await;
            drop(vigil);
            let prometheus = start_prometheus(&root.path().join(format!("prom-{n_series}")), PROMETHEUS_CONFIG).await;
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

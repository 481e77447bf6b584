//! Continuous queries harness (not criterion): one `vigil serve`, a windowed GROUP BY
//! over logs maintained as logs arrive, a websocket subscriber, in one run.
//!
//! 1. Update latency: logs pushed over Loki push (JSON) at `VIGIL_BENCH_RATE` records/s
//!    (default 10,000: 100 records every 10 ms, each request awaited) for
//!    `VIGIL_BENCH_SECONDS` (default 30). Each request's newest event time is unique; the
//!    latency of a request is from its acknowledgement (the HTTP answer, after fsync) to
//!    the first websocket message (`changes` or `progress`) whose `time` reaches that
//!    event time. Messages that arrive before the client has read its acknowledgement
//!    count as 0 and are reported separately.
//! 2. Cost as the data grows: every second, the query's last update time
//!    (`last_update_us` of `GET /api/v1/continuous`) next to the same query run ad hoc
//!    through `/api/v1/sql` (DataFusion over the stored files), in the same run.
//! 3. Throughput: a `count`/`sum` GROUP BY without filter while 1,000,000 records are
//!    pushed in requests of 50,000; records per second of the query's own busy time
//!    (`busy_us`), i.e. per core.
//! 4. Memory: the query's own estimate of its state and the server's RSS.
//!
//! Run: `cargo bench --bench continuous` (the release `vigil`; `VIGIL_BIN` picks another
//! binary). Markdown on stdout, progress on stderr.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WINDOWED: &str = "SELECT date_bin(INTERVAL '10 seconds', timestamp) AS window, \
    stream['namespace'] AS namespace, count(*) AS errors, count(DISTINCT stream['pod']) AS pods, \
    max(length(body)) AS longest FROM logs WHERE severity = 'error' OR body LIKE '%timeout%' \
    GROUP BY 1, 2";
const COUNTING: &str = "SELECT stream['namespace'] AS namespace, count(*) AS n, \
    sum(length(body)) AS bytes FROM logs GROUP BY 1";

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vigil.yml");
    std::fs::write(
        &config,
        "derived_signals: { span_metrics: false, log_errors: false }\n",
    )
    .expect("config");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let binary =
        std::env::var("VIGIL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vigil").to_string());
    let child = Command::new(binary)
        .args(["--log", "warn", "serve", "--otlp.grpc-listen", "off"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vigil");
    let server = Server {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(&server.addr, "GET", "/-/ready", "", b"").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "vigil did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn request(
    addr: &SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    // Chunked bodies (SQL answers): drop the chunk sizes.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A xorshift generator (no `rand`).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A Loki push body of `n` records up to event time `newest` (the last record has it).
fn loki_body(rng: &mut Rng, n: usize, newest: i64) -> Vec<u8> {
    let mut streams: std::collections::BTreeMap<(String, String), Vec<Value>> = Default::default();
    for i in 0..n {
        let ns = format!("ns-{}", rng.below(20));
        let pod = format!("{ns}-pod-{}", rng.below(8));
        let level = ["info", "info", "info", "warn", "error"][rng.below(5) as usize];
        let t = if i + 1 == n {
            newest
        } else {
            newest - rng.below(2_000) as i64
        };
        let body = format!(
            "{} GET /api/v1/items/{} took {}ms{}",
            level.to_uppercase(),
            rng.below(10_000),
            rng.below(900),
            if rng.below(50) == 0 { " timeout" } else { "" }
        );
        streams
            .entry((ns, pod))
            .or_default()
            .push(json!([(t * 1_000_000).to_string(), body, {"level": level}]));
    }
    let streams: Vec<Value> = streams
        .into_iter()
        .map(|((ns, pod), values)| json!({"stream": {"namespace": ns, "pod": pod}, "values": values}))
        .collect();
    json!({ "streams": streams }).to_string().into_bytes()
}

fn create(server: &Server, name: &str, query: &str) {
    let body = json!({"name": name, "language": "sql", "query": query, "horizon_ms": 3_600_000});
    let (status, answer) = request(
        &server.addr,
        "POST",
        "/api/v1/continuous",
        "application/json",
        body.to_string().as_bytes(),
    )
    .expect("create");
    assert_eq!(status, 201, "{answer}");
}

fn describe(server: &Server, name: &str) -> Value {
    let (_, body) = request(
        &server.addr,
        "GET",
        &format!("/api/v1/continuous/{name}"),
        "",
        b"",
    )
    .expect("describe");
    serde_json::from_str::<Value>(&body)
        .map(|v| v["data"].clone())
        .unwrap_or(Value::Null)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rate: usize = std::env::var("VIGIL_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seconds: u64 = std::env::var("VIGIL_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let server = start();
    let rss_before = rss_kib(server.child.id());
    create(&server, "windowed", WINDOWED);

    // The subscriber: every message's event time and arrival.
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let (mut socket, _) = tungstenite::connect(format!(
        "ws://{}/api/v1/subscribe?name=windowed",
        server.addr
    ))
    .expect("subscribe");
    {
        let arrivals = arrivals.clone();
        std::thread::spawn(move || {
            while let Ok(message) = socket.read() {
                let at = Instant::now();
                if let tungstenite::Message::Text(text) = message {
                    if let Ok(value) = serde_json::from_str::<Value>(&text) {
                        if let Some(time) = value["time"].as_i64() {
                            arrivals.lock().expect("arrivals").push((time, at));
                        }
                    }
                }
            }
        });
    }

    // 1 + 2: paced pushes; once a second, the query's update cost and the ad hoc query.
    eprintln!("latency: {rate} records/s for {seconds}s");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let per_request = (rate / 100).max(1);
    let mut acks: Vec<(i64, Instant)> = Vec::new();
    let mut growth: Vec<(u64, usize, f64, f64)> = Vec::new();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut last_newest = 0i64;
    let mut next_sample = Duration::from_secs(1);
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let due = Duration::from_millis(tick * 10);
        tick += 1;
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let newest = now_ms().max(last_newest + 1);
        last_newest = newest;
        let body = loki_body(&mut rng, per_request, newest);
        let (status, answer) = request(
            &server.addr,
            "POST",
            "/loki/api/v1/push",
            "application/json",
            &body,
        )
        .expect("push");
        assert_eq!(status, 204, "{answer}");
        acks.push((newest, Instant::now()));
        sent += per_request;
        if started.elapsed() >= next_sample {
            next_sample += Duration::from_secs(1);
            let update_us = describe(&server, "windowed")["last_update_us"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let query = format!("query={}", urlencode(WINDOWED));
            let begun = Instant::now();
            let (status, _) = request(
                &server.addr,
                "POST",
                "/api/v1/sql",
                "application/x-www-form-urlencoded",
                query.as_bytes(),
            )
            .expect("sql");
            assert_eq!(status, 200);
            growth.push((
                started.elapsed().as_secs(),
                sent,
                update_us,
                begun.elapsed().as_secs_f64() * 1e3,
            ));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let arrivals = arrivals.lock().expect("arrivals").clone();
    let mut latencies = Vec::new();
    let mut before_ack = 0;
    let mut missing = 0;
    for (newest, acked) in &acks {
        match arrivals.iter().find(|(time, _)| time >= newest) {
            Some((_, at)) => {
                if at < acked {
                    before_ack += 1;
                    latencies.push(0.0);
                } else {
                    latencies.push(at.duration_since(*acked).as_secs_f64() * 1e3);
                }
            }
            None => missing += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let windowed = describe(&server, "windowed");
    let rss_windowed = rss_kib(server.child.id());

    // 3: throughput of a count/sum program.
    create(&server, "counting", COUNTING);
    let busy_before = describe(&server, "counting")["busy_us"]
        .as_f64()
        .unwrap_or(0.0);
    let rows_before = describe(&server, "counting")["input_rows"]
        .as_f64()
        .unwrap_or(0.0);
    eprintln!("throughput: 1,000,000 records in requests of 50,000");
    let bodies: Vec<Vec<u8>> = (0..20)
        .map(|_| {
            last_newest += 1;
            loki_body(&mut rng, 50_000, last_newest)
        })
        .collect();
    for body in &bodies {
        let (status, answer) = request(
            &server.addr,
            "POST",
            "/loki/api/v1/push",
            "application/json",
            body,
        )
        .expect("push");
        assert_eq!(status, 204, "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let counting = loop {
        let counting = describe(&server, "counting");
        if counting["input_rows"].as_f64().unwrap_or(0.0) >= rows_before + 1_000_000.0
            || Instant::now() > deadline
        {
            break counting;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows = counting["input_rows"].as_f64().unwrap_or(0.0) - rows_before;
    let busy_s = (counting["busy_us"].as_f64().unwrap_or(0.0) - busy_before) / 1e6;
    let rss_after = rss_kib(server.child.id());

    println!("### Continuous queries (`cargo bench --bench continuous`)\n");
    println!("Windowed query: `{WINDOWED}`\n");
    println!("| measure | value |\n|---|---|");
    println!("| records pushed (latency phase) | {sent} in {elapsed:.1} s ({:.0}/s, {per_request} per request) |", sent as f64 / elapsed);
    println!(
        "| ack → websocket change p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "| changes that arrived before the client read its ack | {before_ack} of {} |",
        acks.len()
    );
    println!("| requests with no change or progress seen | {missing} |");
    println!(
        "| windowed query state (own estimate) | {} rows in horizon, {:.1} MiB |",
        windowed["state_rows"],
        windowed["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    println!(
        "| server RSS: start → after the latency phase → after the throughput phase | {:.0} → {:.0} → {:.0} MiB |",
        rss_before as f64 / 1024.0,
        rss_windowed as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "| counting query state (own estimate) | {} rows in horizon, {:.1} MiB |",
        counting["state_rows"],
        counting["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    println!("| `count`/`sum` GROUP BY throughput | {rows:.0} records in {busy_s:.2} s of the query's time = {:.0} records/s per core |", rows / busy_s.max(1e-9));
    println!();
    println!("Cost per update as the data grows, next to the same query ad hoc (DataFusion over the stored files):\n");
    println!("| second | records stored | continuous update (µs) | ad hoc query (ms) | ratio |\n|---|---|---|---|---|");
    for (second, records, update_us, adhoc_ms) in growth.iter().filter(|g| g.0 % 5 == 0 || g.0 == 1)
    {
        println!(
            "| {second} | {records} | {update_us:.0} | {adhoc_ms:.1} | {:.0}× |",
            adhoc_ms * 1000.0 / update_us.max(1.0)
        );
    }
}

fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

//! Hostile and careless clients (issue 12): each row of the issue's table, against the
//! real binary. Nothing here may abort, stall or bloat the process, or lose or double
//! acknowledged data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_storage::SampleBatch;

use crate::util::{batch, blocking_get, now_ms, ureq_post, Vigil};

/// The resident set of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn get(vigil: &Vigil, path_and_query: &str) -> (u16, Value) {
    let (status, body) = blocking_get(&format!("{}{path_and_query}", vigil.url)).expect("request");
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

fn encode(query: &str) -> String {
    serde_urlencoded::to_string([("query", query)]).expect("encode")
}

/// `/-/healthy` answers while `work` runs on other threads; returns the slowest answer.
fn healthy_during<T: Send>(vigil: &Vigil, work: impl FnOnce() -> T + Send) -> (T, Duration) {
    let done = std::sync::atomic::AtomicBool::new(false);
    /// Stops the probe however `work` ends (a failed assertion included).
    struct Done<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let probe = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let (status, _) =
                    blocking_get(&format!("{}/-/healthy", vigil.url)).expect("healthy");
                assert_eq!(status, 200);
                slowest = slowest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            slowest
        });
        let result = {
            let _done = Done(&done);
            work()
        };
        (result, probe.join().expect("probe"))
    })
}

#[test]
fn hostile_long_chains_are_refused_quickly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let sql_chain = format!("SELECT {}", vec!["1"; 10_000].join("+"));
    let promql_chain = vec!["1"; 10_000].join("+");
    let nested = format!("{}1{}", "(".repeat(8000), ")".repeat(8000));
    let ((), slowest) = healthy_during(&vigil, || {
        let started = Instant::now();
        let (status, body) = vigil.sql_raw(&sql_chain, "json");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("operators"), "{body}");
        println!("10k-term SQL refused in {:?}", started.elapsed());
        for endpoint in ["query", "parse_query", "format_query"] {
            for query in [&promql_chain, &nested] {
                let started = Instant::now();
                let (status, body) = get(&vigil, &format!("/api/v1/{endpoint}?{}", encode(query)));
                assert_eq!(status, 400, "{endpoint}: {body}");
                assert_eq!(body["errorType"], "bad_data");
                println!("{endpoint}: refused in {:?}", started.elapsed());
            }
        }
    });
    println!("slowest /-/healthy meanwhile: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    // Chains inside the limits evaluate: deep trees on the evaluation threads' stacks.
    let (status, body) = vigil.sql_raw(
        &format!("SELECT {} AS n", vec!["1"; 1000].join("+")),
        "json",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"n\":1000"), "{body}");
    let (status, body) = get(
        &vigil,
        &format!("/api/v1/query?{}", encode(&vec!["1"; 900].join("+"))),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][1], "900");
    let range_chain = format!(
        "/api/v1/query_range?{}&start=0&end=600&step=15",
        encode(&vec!["vector(1)"; 900].join("+"))
    );
    let (status, body) = get(&vigil, &range_chain);
    assert_eq!(status, 200, "{body}");
    // The process is still there.
    assert!(vigil_alive(&vigil));
}

fn vigil_alive(vigil: &Vigil) -> bool {
    blocking_get(&format!("{}/-/healthy", vigil.url)).is_ok_and(|(status, _)| status == 200)
}

#[test]
fn hostile_range_blowups_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let pid = vigil.child.id();
    let before = rss_bytes(pid);
    let started = Instant::now();
    let (status, body) = get(
        &vigil,
        "/api/v1/query_range?query=1&start=-5e15&end=5e15&step=1&timeout=2s",
    );
    assert_eq!(status, 400, "{body}");
    println!(
        "overflowing range refused in {:?}: {body}",
        started.elapsed()
    );
    let started = Instant::now();
    let (status, body) = get(
        &vigil,
        &format!(
            "/api/v1/query?{}&timeout=1s",
            encode("count_over_time(vector(1)[1y:1ms])")
        ),
    );
    assert!(matches!(status, 422 | 503), "{status}: {body}");
    println!(
        "1y:1ms subquery: {status} in {:?}: {body}",
        started.elapsed()
    );
    // A subquery just under the step bound runs into the deadline or the sample limit.
    let (status, body) = get(
        &vigil,
        &format!(
            "/api/v1/query?{}&timeout=1s",
            encode("count_over_time(vector(1)[12h:1ms])")
        ),
    );
    assert!(matches!(status, 422 | 503), "{status}: {body}");
    for query in [
        "x offset 300000000y",
        "rate(x[300000000y])",
        "x[5m:300000000y]",
    ] {
        let (status, body) = get(&vigil, &format!("/api/v1/query?{}", encode(query)));
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, body) = get(&vigil, "/api/v1/query?query=1&time=1e300");
    assert_eq!(status, 400, "{body}");
    let after = rss_bytes(pid);
    let growth = after.saturating_sub(before);
    println!("RSS {} MB -> {} MB", before >> 20, after >> 20);
    assert!(growth < 100 << 20, "RSS grew by {} MB", growth >> 20);
    assert!(vigil_alive(&vigil));
}

#[test]
fn hostile_sql_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = "query:\n  timeout: 3s\n  sql_memory_bytes: 67108864\n  sql_max_rows: 100000\n";
    let vigil = Vigil::start(&data, Some(config));
    // Results keep their values: maps as label strings in CSV, floats round-trip in JSON.
    let (status, body) = vigil.sql_raw("SELECT 123456789.12345679 AS v, 0.1 AS w", "json");
    assert_eq!(status, 200);
    assert!(body.contains("123456789.12345679"), "{body}");
    let (status, _) = vigil.write(&batch("csv_labels", 2, 1, now_ms() - 1000));
    assert_eq!(status, 204);
    let (status, body) = vigil.sql_raw(
        "SELECT name, labels, value FROM metrics WHERE name = 'csv_labels' ORDER BY labels",
        "csv",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("name,labels,value\n"), "{body}");
    assert!(
        body.contains(r#"csv_labels,"{instance=""host-0"", job=""test""}",0.0"#),
        "{body}"
    );
    let (status, body) = vigil.sql_raw("SELECT 1 AS x WHERE false", "csv");
    assert_eq!((status, body.as_str()), (200, "x\n"));
    let pid = vigil.child.id();
    let before = rss_bytes(pid);
    let ((), slowest) = healthy_during(&vigil, || {
        let (status, body) = vigil.sql_raw("SELECT * FROM generate_series(1, 5000000)", "json");
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("sql_max_rows"), "{body}");
        // An aggregation over 3M distinct padded strings: held within the memory pool
        // (spilled or refused), never the process' memory.
        let (status, body) = vigil.sql_raw(
            "SELECT count(DISTINCT concat(repeat('x', 100), CAST(a.value AS VARCHAR))) AS n FROM generate_series(1, 3000000) a",
            "json",
        );
        assert!(matches!(status, 200 | 422 | 503), "{status}: {body}");
        println!("3M distinct padded strings: {status}: {body}");
        let started = Instant::now();
        let (status, body) = vigil.sql_raw(
            "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b WHERE a.value + b.value = 3",
            "json",
        );
        assert!(matches!(status, 503 | 422), "{status}: {body}");
        println!("cross join: {status} after {:?}: {body}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(20));
    });
    println!("slowest /-/healthy during SQL: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    let growth = rss_bytes(pid).saturating_sub(before);
    println!("RSS growth {} MB", growth >> 20);
    assert!(growth < 400 << 20, "RSS grew by {} MB", growth >> 20);
}

/// Sends a whole remote_write request and closes the connection without reading.
fn write_and_hang_up(vigil: &Vigil, body: &[u8]) {
    let address = vigil.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connect");
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(body).expect("body");
    stream.flush().expect("flush");
    drop(stream);
}

#[test]
fn hostile_disconnected_write_is_applied_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, None);
    let start = now_ms() - 600_000;
    for round in 0..3 {
        let name = format!("hangup_{round}");
        let written: SampleBatch = batch(&name, 100, 100, start);
        let body = vigil_connectors::remote_write::encode(&written);
        write_and_hang_up(&vigil, &body);
        // The retry Prometheus would send (it never saw the answer).
        let (status, text) = vigil.write_raw(&body);
        assert_eq!(status, 204, "{text}");
        let count = vigil.count(&format!(
            "SELECT count(*) AS n FROM metrics WHERE name = '{name}'"
        ));
        assert_eq!(count, 10_000, "round {round}");
    }
    vigil.kill9();
    let vigil = vigil.kill_and_restart();
    for round in 0..3 {
        let count = vigil.count(&format!(
            "SELECT count(*) AS n FROM metrics WHERE name = 'hangup_{round}'"
        ));
        assert_eq!(count, 10_000, "round {round} after restart");
    }
}

#[test]
fn hostile_timestamps_from_the_future_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (status, body) = vigil.write(&batch("future", 1, 1, now_ms() + 86_400_000));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("too far in the future"), "{body}");
    let (status, body) = vigil.write(&batch("far_future", 1, 1, i64::MAX - 10));
    assert_eq!(status, 400, "{body}");
    let (status, body) = vigil.write(&batch("far_past", 1, 1, i64::MIN + 10));
    assert_eq!(status, 400, "{body}");
    // Within the allowed skew (10m by default): accepted.
    let (status, body) = vigil.write(&batch("near_future", 1, 1, now_ms() + 60_000));
    assert_eq!(status, 204, "{body}");
    let (_, metrics) = blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
    let line = metrics
        .lines()
        .find(|line| line.contains("reason=\"too_far_in_future\""))
        .unwrap_or_else(|| panic!("no too_far_in_future counter in {metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    // SQL over everything still answers.
    assert_eq!(vigil.count("SELECT count(*) AS n FROM metrics"), 1);
}

#[test]
fn hostile_series_and_metadata_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "limits:\n  max_series: 500\n  max_series_per_metric: 200\n";
    let vigil = Vigil::start(&dir.path().join("data"), Some(config));
    let now = now_ms() - 1000;
    let (status, body) = vigil.write(&batch("many", 150, 1, now));
    assert_eq!(status, 204, "{body}");
    let (status, body) = vigil.write(&batch("many", 250, 1, now + 1));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_series_per_metric"), "{body}");
    // Known series keep being accepted; other names until the total is reached.
    let (status, body) = vigil.write(&batch("many", 150, 1, now + 2));
    assert_eq!(status, 204, "{body}");
    for n in 0..2 {
        let (status, body) = vigil.write(&batch(&format!("other_{n}"), 150, 1, now));
        assert_eq!(status, 204, "{body}");
    }
    let (status, body) = vigil.write(&batch("other_2", 150, 1, now));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limits.max_series"), "{body}");
    let (_, metrics) = blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
    assert!(
        metrics.contains("reason=\"series_limit\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("reason"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Metadata of a rejected request is not kept.
    let body = {
        use prost::Message;
        use vigil_connectors::remote_write::proto;
        let mut request = proto::WriteRequest::default();
        for n in 0..150 {
            let mut series = proto::TimeSeries::default();
            series.push_label("__name__", "other_3");
            series.push_label("n", &n.to_string());
            series.samples.push(proto::Sample {
                value: 1.0,
                timestamp: now,
            });
            request.timeseries.push(series);
        }
        request.metadata.push(proto::MetricMetadata {
            r#type: 2,
            metric_family_name: "other_3".into(),
            help: "h".repeat(10_000),
            unit: String::new(),
        });
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy")
    };
    let (status, _) = ureq_post(
        &format!("{}/api/v1/write", vigil.url),
        &body,
        "application/x-protobuf",
    )
    .expect("write");
    assert_eq!(status, 400);
    let (_, metadata) = get(&vigil, "/api/v1/metadata");
    assert!(metadata["data"].get("other_3").is_none(), "{metadata}");
}

/// A TCP client that opens the alert stream and then never reads is closed, and the
/// server keeps serving.
#[test]
fn hostile_half_open_connections_do_not_block_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let address = vigil.url.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&address).expect("connect");
        stream
            .write_all(
                b"POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
            )
            .expect("partial");
        idle.push(stream);
    }
    let started = Instant::now();
    let (status, body) = vigil.write(&batch("during_slowloris", 10, 10, now_ms() - 60_000));
    assert_eq!(status, 204, "{body}");
    println!(
        "write during 200 half-sent requests: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A half-sent header is dropped after the header-read timeout.
    let mut slow = TcpStream::connect(&address).expect("connect");
    slow.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
        .expect("partial header");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let read = slow.read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).contains("408"),
        "{read:?}"
    );
    println!("half-sent header closed after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(25));
}

/// A process with few file descriptors (`ulimit -n 256`) and 400 clients that send half
/// a request each: the connection cap is fitted below the limit, idle clients are
/// dropped at the header-read timeout, and a remote_write gets through and is durable.
#[test]
fn hostile_idle_clients_cannot_take_every_descriptor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = crate::util::free_port();
    let command = format!(
        "ulimit -n 256 && exec {} serve --data-dir {} --listen 127.0.0.1:{port} --otlp.grpc-listen off --web.read-header-timeout 2s",
        env!("CARGO_BIN_EXE_vigil"),
        data.display()
    );
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn");
    let vigil = crate::util::Peer(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while blocking_get(&format!("{url}/-/ready")).map_or(true, |(status, _)| status != 200) {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut idle = Vec::new();
    for _ in 0..400 {
        if let Ok(mut stream) = TcpStream::connect(format!("127.0.0.1:{port}")) {
            let _ = stream.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n");
            idle.push(stream);
        }
    }
    let started = Instant::now();
    let body =
        vigil_connectors::remote_write::encode(&batch("fd_pressure", 10, 10, now_ms() - 60_000));
    let (status, text) =
        crate::util::post_remote_write(&format!("{url}/api/v1/write"), &body).expect("write");
    assert_eq!(status, 204, "{text}");
    println!(
        "write behind 400 idle clients answered after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, text) =
        blocking_get(&format!("{url}/api/v1/query?query=count(fd_pressure)")).expect("query");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"10\""), "{text}");
    drop(idle);
    drop(vigil);
}

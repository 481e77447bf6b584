//! One process per data directory, and damaged files lose only what is damaged: a second
//! server on the same directory exits naming the holder; a flipped byte mid-WAL loses one
//! record; a truncated Parquet file is quarantined and the rest keeps serving; a restarted
//! demo continues its counters.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{batch, blocking_get, free_port, now_ms, Vigil};

fn metric(vigil: &Vigil, name: &str) -> f64 {
    let (status, body) = blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn promql(vigil: &Vigil, query: &str) -> serde_json::Value {
    let url = format!(
        "{}/api/v1/query?{}",
        vigil.url,
        serde_urlencoded::to_string([("query", query)]).expect("encode")
    );
    let (status, body) = blocking_get(&url).expect("query");
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn a_second_server_on_the_same_data_dir_exits_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let vigil = Vigil::start(&data, None);
    let (status, _) = vigil.write(&batch("lock_metric", 2, 5, now_ms() - 10_000));
    assert_eq!(status, 204);
    for subcommand in ["serve", "demo"] {
        let mut second = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg(subcommand)
            .arg("--data-dir")
            .arg(&data)
            .env("VIGIL_OTLP_GRPC_LISTEN", "off")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn second vigil");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = second.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = second.kill();
                panic!("a second `vigil {subcommand}` on the same data dir kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains("in use"), "{stderr}");
        assert!(
            stderr.contains(&format!("pid {}", vigil.child.id())),
            "{stderr}"
        );
    }
    // The first server lost nothing: its WAL is intact after a crash.
    let vigil = vigil.kill_and_restart();
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'lock_metric'"),
        10
    );
}

#[test]
fn a_flipped_byte_mid_wal_loses_only_the_damaged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, None);
    let start = now_ms() - 600_000;
    // 100 acknowledged writes of 10 samples each: 100 WAL records.
    for round in 0..100 {
        let (status, body) = vigil.write(&batch("flip_metric", 1, 10, start + round * 10_000));
        assert_eq!(status, 204, "{body}");
    }
    vigil.kill9();
    let segment = &crate::crash::last_wal_segment(&data);
    let mut bytes = std::fs::read(segment).expect("read segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(segment, &bytes).expect("write segment");
    drop(vigil);
    let vigil = Vigil::start(&data, None);
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'flip_metric'"),
        990,
        "only the damaged record's 10 samples may be lost"
    );
    assert_eq!(metric(&vigil, "vigil_wal_corruptions_total"), 1.0);
    // The segment was not cut short: the records after the damage stay on disk.
    assert_eq!(
        std::fs::metadata(segment).expect("segment").len(),
        bytes.len() as u64
    );
}

#[test]
fn a_truncated_parquet_file_is_quarantined_and_the_rest_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = "storage:\n  block_period: 2s\n  head_window: 0s\n";
    let mut vigil = Vigil::start(&data, Some(config));
    let start = now_ms() - 60_000;
    let (status, _) = vigil.write(&batch("quarantine_metric", 3, 30, start));
    assert_eq!(status, 204);
    let files = || -> Vec<std::path::PathBuf> {
        crate::remote_write::walk(&data.join("blocks/metrics"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while files().len() < 10 {
        assert!(Instant::now() < deadline, "not flushed: {:?}", files());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(vigil.terminate(), Some(0));
    let mut all = files();
    all.sort();
    let victim = all[all.len() / 2].clone();
    let len = std::fs::metadata(&victim).expect("victim").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .expect("open victim")
        .set_len(len / 3)
        .expect("truncate");
    drop(vigil);
    let vigil = Vigil::start(&data, Some(config));
    assert_eq!(metric(&vigil, "vigil_parquet_files_quarantined_total"), 1.0);
    assert!(!victim.exists());
    let relative = victim
        .strip_prefix(data.join("blocks"))
        .expect("under blocks");
    assert!(data.join("quarantine").join(relative).exists());
    // Every other partition still answers, through SQL and PromQL.
    let remaining = vigil.count("SELECT count(*) FROM metrics WHERE name = 'quarantine_metric'");
    assert!((60..90).contains(&remaining), "{remaining}");
    let result = promql(
        &vigil,
        &format!(
            "count_over_time(quarantine_metric[10m] @ {})",
            (start + 30_000) / 1000
        ),
    );
    let total: i64 = result["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|sample| {
            sample["value"][1]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .expect("count")
        })
        .sum();
    assert_eq!(total, remaining);
}

#[test]
fn a_restarted_demo_continues_its_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let query =
        "SELECT count(*) AS n FROM metrics WHERE name = 'container_cpu_usage_seconds_total'";
    let mut demo = Vigil::demo(&data);
    let first = demo.wait_for_rows(query, Duration::from_secs(30), |rows| {
        rows.first()
            .and_then(|row| row["n"].as_i64())
            .is_some_and(|n| n > 0)
    })[0]["n"]
        .as_i64()
        .expect("count");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(demo.terminate(), Some(0));
    drop(demo);
    std::thread::sleep(Duration::from_secs(6));
    let demo = Vigil::demo(&data);
    demo.wait_for_rows(query, Duration::from_secs(30), |rows| {
        rows.first()
            .and_then(|row| row["n"].as_i64())
            .is_some_and(|n| n > first)
    });
    // No counter went backwards across the restart, and no write was rejected.
    let resets = promql(&demo, "sum(resets(container_cpu_usage_seconds_total[2h]))");
    assert_eq!(resets["data"]["result"][0]["value"][1], "0", "{resets}");
    let restarts = promql(
        &demo,
        "sum(resets(kube_pod_container_status_restarts_total[2h]))",
    );
    assert_eq!(restarts["data"]["result"][0]["value"][1], "0", "{restarts}");
    let (_, body) = blocking_get(&format!("{}/metrics", demo.url)).expect("metrics");
    assert!(
        !body.contains("vigil_rejected_writes_total{"),
        "writes were rejected: {}",
        body.lines()
            .filter(|l| l.starts_with("vigil_rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The same PromQL answers whether the samples are in the head, were just flushed to
/// Parquet (read cache warm), or are read from Parquet after a restart (cache cold):
/// Kubernetes-shaped counters and gauges with randomized increments, resets and gaps.
#[test]
fn queries_answer_the_same_from_head_fresh_parquet_and_parquet_after_a_restart() {
    use crate::util::Rng;
    use vigil_storage::SampleBatch;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut rng = Rng(0x5eed_1105);
    let end = now_ms() - 60_000;
    let start = end - 40 * 60_000;
    let mut batch = SampleBatch::default();
    for pod in 0..12 {
        let pod_name = format!("api-{pod:02}-{:x}", rng.next_u64() >> 40);
        for (metric, counter) in [
            ("container_cpu_usage_seconds_total", true),
            ("container_memory_working_set_bytes", false),
        ] {
            let labels = vigil_storage::LabelSet::from_pairs([
                ("__name__", metric),
                ("namespace", ["shop", "payments", "monitoring"][pod % 3]),
                ("pod", &pod_name),
                ("container", "app"),
                (
                    "id",
                    &format!(
                        "/kubepods/pod{pod}/{:016x}{:016x}",
                        rng.next_u64(),
                        rng.next_u64()
                    ),
                ),
                ("image", "registry.k8s.io/shop/api:v1.2.3"),
                ("job", "kubelet"),
                ("node", &format!("node-{}", pod % 4)),
            ])
            .expect("labels");
            let idx = batch.push_series(labels);
            let mut value = rng.unit() * 100.0;
            let mut t = start + rng.below(15_000) as i64;
            while t < end {
                if counter && rng.below(50) == 0 {
                    value = 0.0;
                } else if counter {
                    value += rng.unit() * 3.0;
                } else {
                    value = 1e8 + rng.unit() * 1e7;
                }
                batch.push_sample(idx, t, value);
                // Mostly 15s, sometimes a gap longer than the lookback.
                t += if rng.below(40) == 0 { 420_000 } else { 15_000 };
            }
        }
    }
    let queries = [
        "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
        "max_over_time(container_memory_working_set_bytes[10m])",
        "container_memory_working_set_bytes / on (pod) group_left container_cpu_usage_seconds_total",
    ];
    let answers = |vigil: &Vigil| -> Vec<String> {
        queries
            .iter()
            .map(|query| {
                let url = format!(
                    "{}/api/v1/query_range?{}",
                    vigil.url,
                    serde_urlencoded::to_string([
                        ("query", query.to_string()),
                        ("start", ((start + 300_000) / 1000).to_string()),
                        ("end", (end / 1000).to_string()),
                        ("step", "30".to_string()),
                    ])
                    .expect("encode")
                );
                let (status, body) = blocking_get(&url).expect("query_range");
                assert_eq!(status, 200, "{query}: {body}");
                let value: serde_json::Value = serde_json::from_str(&body).expect("json");
                assert!(
                    !value["data"]["result"]
                        .as_array()
                        .expect("matrix")
                        .is_empty(),
                    "{query}: empty"
                );
                value["data"]["result"].to_string()
            })
            .collect()
    };
    // 1. Everything in the head (a window longer than the data).
    let mut vigil = Vigil::start(
        &data,
        Some("storage:\n  block_period: 20s\n  head_window: 2h\n"),
    );
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    let from_head = answers(&vigil);
    assert_eq!(metric(&vigil, "vigil_head_flushes_total"), 0.0);
    assert_eq!(vigil.terminate(), Some(0));
    drop(vigil);
    // 2. Restarted with a zero window: replayed from the WAL, then flushed to Parquet.
    let flush_all = "storage:\n  block_period: 20s\n  head_window: 0s\n";
    let vigil = Vigil::start(&data, Some(flush_all));
    let deadline = Instant::now() + Duration::from_secs(30);
    // Flushed and committed (the flush counter moves after the files are published).
    while metric(&vigil, "vigil_head_samples") > 0.0
        || metric(&vigil, "vigil_head_flushes_total") < 1.0
    {
        assert!(Instant::now() < deadline, "head not flushed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answers(&vigil), from_head, "just flushed");
    // 3. Killed and restarted: only Parquet, nothing decoded yet.
    let vigil = vigil.kill_and_restart();
    assert_eq!(metric(&vigil, "vigil_head_samples"), 0.0);
    assert_eq!(metric(&vigil, "vigil_read_cache_bytes"), 0.0);
    assert_eq!(answers(&vigil), from_head, "from parquet after a restart");
    assert!(metric(&vigil, "vigil_read_cache_bytes") > 0.0);
}

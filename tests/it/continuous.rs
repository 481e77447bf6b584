//! Continuous SQL queries end to end: created over HTTP, fed by Loki pushes, maintained
//! by the dataflow, read as a table and followed by a real websocket client (Python
//! `websockets`) that disconnects, resumes with its last sequence number and checks that
//! every change batch arrives exactly once; the result equals the same query run ad hoc
//! by DataFusion over the stored logs (within the query's horizon), also after a kill -9
//! during ingestion.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{http_request, now_ms, python, ureq_post, Rng, Vigil};

const NAME: &str = "errors_per_minute";
const HORIZON_MS: i64 = 600_000;
/// The grouped, windowed, filtered query under test (its ad hoc form adds the horizon).
const SELECT: &str = "SELECT date_bin(INTERVAL '1 minute', timestamp) AS minute, \
     stream['namespace'] AS namespace, count(*) AS errors, \
     count(DISTINCT stream['pod']) AS pods, max(length(body)) AS longest, \
     avg(CAST(attributes['took_ms'] AS DOUBLE)) AS took \
     FROM logs WHERE severity = 'error' OR body LIKE '%panic%'";
const GROUP: &str = " GROUP BY 1, 2 HAVING count(*) >= 2";

/// The subscriber: pushes logs (Loki JSON, as Promtail does) in rounds and, after each,
/// reads the stream until the watermark covers the round; applies the snapshot and each
/// change batch to its copy of the result, asserting that batches arrive in sequence
/// with no gap and no repeat; optionally disconnects mid-way and resumes with
/// `from_seq`. Its state is saved between runs (`STATE`).
const CLIENT: &str = r#"
import json, os, random, time, urllib.request
from websockets.sync.client import connect

url, name, state_file = os.environ["VIGIL_URL"], os.environ["CQ"], os.environ["STATE"]
rng = random.Random(int(os.environ["SEED"]))
rounds, disconnect = int(os.environ["ROUNDS"]), os.environ.get("DISCONNECT") == "1"
s = {"rows": {}, "seq": None, "watermark": 0, "newest": 0, "messages": 0}
if os.path.exists(state_file):
    s = json.load(open(state_file))

def key(row):
    return json.dumps(row, sort_keys=True)

def apply(msg):
    s["messages"] += 1
    assert "resync" not in msg, ("resync: the server lost our position", msg["seq"], s["seq"])
    if msg["type"] == "snapshot":
        s["rows"] = {}
        for row in msg["rows"]:
            s["rows"][key(row)] = s["rows"].get(key(row), 0) + 1
    elif msg["type"] == "changes":
        if s["seq"] is not None:
            assert msg["seq"] == s["seq"] + 1, ("gap or repeat", s["seq"], msg["seq"])
        for change in msg["changes"]:
            k = key(change["row"])
            s["rows"][k] = s["rows"].get(k, 0) + change["diff"]
            assert s["rows"][k] >= 0, ("negative multiplicity", k)
            if s["rows"][k] == 0:
                del s["rows"][k]
    else:
        assert msg["type"] == "progress", msg
        if s["seq"] is not None:
            assert msg["seq"] == s["seq"], ("progress moved seq", s["seq"], msg["seq"])
    s["seq"] = msg["seq"]
    s["watermark"] = max(s["watermark"], msg["time"])

def subscribe():
    ws_url = url.replace("http://", "ws://") + "/api/v1/subscribe?name=" + name
    if s["seq"] is not None:
        ws_url += "&from_seq=%d" % s["seq"]
    return connect(ws_url, open_timeout=10)

def push():
    newest = max(s["newest"], int(time.time() * 1000) - 30_000) + 1000
    streams = {}
    for i in range(rng.randrange(50, 200)):
        ns = rng.choice(["shop", "payments", "monitoring"])
        pod = "%s-api-%d" % (ns, rng.randrange(4))
        level = rng.choice(["info", "info", "warn", "error", "error"])
        t = newest - rng.randrange(900_000)
        body = "%s %s took %dms" % (level.upper(), rng.choice(["GET /cart", "POST /pay", "panic: nil map"]), rng.randrange(900))
        streams.setdefault((ns, pod), []).append([str(t * 1_000_000), body, {"level": level, "took_ms": str(rng.randrange(900))}])
    streams.setdefault(("shop", "shop-api-0"), []).append([str(newest * 1_000_000), "INFO newest", {"level": "info"}])
    body = json.dumps({"streams": [{"stream": {"namespace": ns, "pod": pod}, "values": v} for (ns, pod), v in streams.items()]})
    req = urllib.request.Request(url + "/loki/api/v1/push", data=body.encode(), headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=30).status == 204
    s["newest"] = newest

def wait(ws):
    deadline = time.time() + 60
    while s["watermark"] < s["newest"]:
        assert time.time() < deadline, ("watermark stuck", s["watermark"], s["newest"])
        apply(json.loads(ws.recv(timeout=60)))

ws = subscribe()
for r in range(rounds):
    if disconnect and r == rounds // 2:
        ws.close()
        push()
        push()
        ws = subscribe()
    else:
        push()
    wait(ws)
ws.close()
json.dump(s, open(state_file, "w"))
print(json.dumps({"rows": s["rows"], "seq": s["seq"], "watermark": s["watermark"], "messages": s["messages"]}))
"#;

fn run_client(
    vigil: &Vigil,
    state: &std::path::Path,
    seed: u64,
    rounds: usize,
    disconnect: bool,
) -> Value {
    let seed = seed.to_string();
    let rounds = rounds.to_string();
    let (stdout, _) = python(
        CLIENT,
        &[
            ("VIGIL_URL", vigil.url.as_str()),
            ("CQ", NAME),
            ("STATE", state.to_str().expect("utf-8 path")),
            ("SEED", &seed),
            ("ROUNDS", &rounds),
            ("DISCONNECT", if disconnect { "1" } else { "0" }),
        ],
    );
    serde_json::from_str(stdout.trim()).expect("client output")
}

/// A GET on `vigil`: (status, body).
fn get(vigil: &Vigil, path: &str) -> (u16, String) {
    http_request(
        "GET",
        &format!("{}{path}", vigil.url),
        b"",
        "text/plain",
        "",
    )
    .expect("GET")
}

fn create(vigil: &Vigil, definition: &Value) -> (u16, Value) {
    let (status, body) = ureq_post(
        &format!("{}/api/v1/continuous", vigil.url),
        definition.to_string().as_bytes(),
        "application/json",
    )
    .expect("create request");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A row with every timestamp as epoch milliseconds (the websocket writes RFC 3339 with
/// `Z`, the SQL API's JSON without), as a canonical string.
fn canonical(row: &Value) -> String {
    let object: BTreeMap<String, Value> = row
        .as_object()
        .expect("row object")
        .iter()
        .map(|(k, v)| {
            let v = match v.as_str().and_then(parse_time) {
                Some(ms) => json!(ms),
                None => match v.as_f64() {
                    // Averages: compare to 9 significant digits.
                    Some(f) if v.is_f64() => json!(format!("{f:.9e}")),
                    _ => v.clone(),
                },
            };
            (k.clone(), v)
        })
        .collect();
    serde_json::to_string(&object).expect("json")
}

fn parse_time(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

fn multiset(rows: impl IntoIterator<Item = (String, i64)>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (row, n) in rows {
        *out.entry(row).or_insert(0) += n;
    }
    out.retain(|_, n| *n != 0);
    out
}

/// The client's copy of the result as a canonical multiset.
fn client_rows(output: &Value) -> BTreeMap<String, i64> {
    multiset(
        output["rows"]
            .as_object()
            .expect("rows")
            .iter()
            .map(|(k, n)| {
                let row: Value = serde_json::from_str(k).expect("row key");
                (canonical(&row), n.as_i64().expect("count"))
            }),
    )
}

fn sql_rows(vigil: &Vigil, query: &str) -> BTreeMap<String, i64> {
    multiset(vigil.sql(query).iter().map(|row| (canonical(row), 1)))
}

/// The same query, ad hoc, over the rows within the horizon of `watermark`.
fn ad_hoc(vigil: &Vigil, watermark: i64) -> BTreeMap<String, i64> {
    let bound = format!(
        " AND timestamp >= to_timestamp_millis({})",
        watermark - HORIZON_MS
    );
    let query = SELECT.replace(
        "WHERE severity = 'error' OR body LIKE '%panic%'",
        &format!("WHERE (severity = 'error' OR body LIKE '%panic%'){bound}"),
    );
    sql_rows(vigil, &format!("{query}{GROUP}"))
}

const TOTALS: &str = "SELECT stream['namespace'] AS namespace, count(*) AS n, \
     sum(length(body)) AS bytes, avg(length(body)) AS mean, count(attributes['none']) AS nulls \
     FROM logs";

fn totals(vigil: &Vigil) -> BTreeMap<String, i64> {
    sql_rows(vigil, "SELECT * FROM totals")
}

fn totals_ad_hoc(vigil: &Vigil, watermark: i64) -> BTreeMap<String, i64> {
    sql_rows(
        vigil,
        &format!(
            "{TOTALS} WHERE timestamp >= to_timestamp_millis({}) GROUP BY 1",
            watermark - HORIZON_MS
        ),
    )
}

fn definition() -> Value {
    json!({"name": NAME, "language": "sql", "query": format!("{SELECT}{GROUP}"), "horizon_ms": HORIZON_MS})
}

#[test]
fn continuous_sql_is_maintained_subscribed_resumed_and_matches_ad_hoc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let state = dir.path().join("client.json");

    // Refused constructs name themselves; nothing is created.
    for (query, construct) in [
        ("SELECT body FROM logs ORDER BY timestamp", "ORDER BY"),
        (
            "SELECT l.body FROM logs l LEFT JOIN spans s ON l.trace_id = s.trace_id",
            "Left JOIN",
        ),
        (
            "SELECT l.body FROM logs l JOIN spans s ON l.timestamp > s.start",
            "JOIN without an equality",
        ),
        ("SELECT count(*) FROM logs WHERE timestamp > now()", "now()"),
        ("SELECT value FROM samples", "table \"samples\""),
        ("SELECT string_agg(body, ',') FROM logs", "string_agg()"),
    ] {
        let (status, body) = create(
            &vigil,
            &json!({"name": "refused", "language": "sql", "query": query}),
        );
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("not supported in a continuous query: ") && error.contains(construct),
            "{query}: {error}"
        );
    }
    let (status, body) = create(
        &vigil,
        &json!({"name": "bad name", "language": "sql", "query": "SELECT 1"}),
    );
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("bad_data")),
        "{body}"
    );

    // Logs before the query exists are its seed.
    push_before_creation(&vigil);
    let (status, body) = create(&vigil, &definition());
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["data"]["columns"],
        json!(["minute", "namespace", "errors", "pods", "longest", "took"])
    );
    // A counting program (count, and sum and avg of integers: running totals per group).
    let (status, body) = create(
        &vigil,
        &json!({"name": "totals", "language": "sql", "query": format!("{TOTALS} GROUP BY 1"), "horizon_ms": HORIZON_MS}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = create(&vigil, &definition());
    assert_eq!(status, 409);
    // The logs pushed before it existed are in its result at once (its seed).
    vigil.wait_for_rows(
        &format!("SELECT count(*) AS n FROM {NAME}"),
        Duration::from_secs(10),
        |rows| {
            rows.first()
                .and_then(|r| r["n"].as_i64())
                .is_some_and(|n| n > 0)
        },
    );

    // Subscribe, push, disconnect, push while away, resume: every batch exactly once.
    let output = run_client(&vigil, &state, 1, 6, true);
    let watermark = output["watermark"].as_i64().expect("watermark");
    let expected = ad_hoc(&vigil, watermark);
    assert!(
        expected.len() >= 5,
        "too few groups to compare: {expected:?}"
    );
    assert_eq!(client_rows(&output), expected, "websocket copy vs ad hoc");
    assert_eq!(
        sql_rows(&vigil, &format!("SELECT * FROM {NAME}")),
        expected,
        "table vs ad hoc"
    );
    assert_eq!(
        totals(&vigil),
        totals_ad_hoc(&vigil, watermark),
        "totals vs ad hoc"
    );

    // The listing reports it.
    let (status, body) = get(&vigil, "/api/v1/continuous");
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).expect("json");
    let entry = &listed["data"][0];
    assert_eq!(entry["name"], NAME);
    assert_eq!(entry["status"], "running");
    assert_eq!(
        entry["rows"].as_u64(),
        Some(expected.values().sum::<i64>() as u64)
    );
    assert!(entry["state_rows"].as_u64().unwrap_or(0) > 0, "{entry}");

    // kill -9 while a writer is pushing; after the restart the client resumes from its
    // last sequence number (no resync), and the result still matches.
    let mut vigil = vigil;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = vigil.url.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(99);
            while !stop.load(Ordering::Relaxed) {
                let _ = push_errors(&url, &mut rng);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    vigil.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let vigil = vigil.kill_and_restart();
    let output = run_client(&vigil, &state, 2, 3, false);
    let watermark = output["watermark"].as_i64().expect("watermark");
    let expected = ad_hoc(&vigil, watermark);
    assert_eq!(
        client_rows(&output),
        expected,
        "after kill -9: websocket copy vs ad hoc"
    );
    assert_eq!(sql_rows(&vigil, &format!("SELECT * FROM {NAME}")), expected);
    assert_eq!(
        totals(&vigil),
        totals_ad_hoc(&vigil, watermark),
        "after kill -9: totals"
    );

    // Dropped: gone from the list, the table and the subscription endpoint.
    let (status, _) = http_request(
        "DELETE",
        &format!("{}/api/v1/continuous/{NAME}", vigil.url),
        b"",
        "text/plain",
        "",
    )
    .expect("drop");
    assert_eq!(status, 200);
    let (status, _) = vigil.sql_raw(&format!("SELECT * FROM {NAME}"), "json");
    assert_ne!(status, 200);
    let (status, _) = get(&vigil, &format!("/api/v1/continuous/{NAME}"));
    assert_eq!(status, 404);
}

/// Pushes one Loki request of error logs from the last ten minutes (before the query
/// exists, and as the background writer of the kill -9 step).
fn push_errors(url: &str, rng: &mut Rng) -> std::io::Result<(u16, String)> {
    let now = now_ms() - 60_000;
    let values: Vec<Value> = (0..50)
        .map(|i| {
            let t = now - rng.below(540_000) as i64;
            json!([(t * 1_000_000).to_string(), format!("ERROR write {i} failed"), {"level": "error", "took_ms": rng.below(500).to_string()}])
        })
        .collect();
    let ns = rng.pick(&["shop", "payments"]);
    let body = json!({"streams": [{"stream": {"namespace": ns, "pod": format!("{ns}-db-{}", rng.below(3))}, "values": values}]});
    ureq_post(
        &format!("{url}/loki/api/v1/push"),
        body.to_string().as_bytes(),
        "application/json",
    )
}

fn push_before_creation(vigil: &Vigil) {
    let mut rng = Rng(5);
    for _ in 0..4 {
        let (status, body) = push_errors(&vigil.url, &mut rng).expect("push");
        assert_eq!(status, 204, "{body}");
    }
}

/// A PromQL continuous query from the config file: a recording rule of the shared rule
/// engine whose output is written back (queryable by name), is a SQL table, and streams
/// over the websocket; each tick's result equals Prometheus' instant query at that tick.
#[test]
fn promql_continuous_query_from_config_is_recorded_tabled_and_streamed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expr = "sum by (code) (rate(http_requests_total[1m]))";
    let config = format!(
        "rules_lateness: 1s\ncontinuous_queries:\n  - name: requests_by_code\n    promql: '{expr}'\n    step: 2s\n  - name: error_lines\n    sql: \"SELECT stream['namespace'] AS namespace, count(*) AS n FROM logs WHERE severity = 'error' GROUP BY 1\"\n    horizon: 30m\n"
    );
    let vigil = Vigil::start(&dir.path().join("data"), Some(&config));
    let (status, body) = get(&vigil, "/api/v1/continuous");
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, ["error_lines", "requests_by_code"]);

    let ws_url = format!(
        "{}/api/v1/subscribe?name=requests_by_code",
        vigil.url.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tungstenite::connect(&ws_url).expect("subscribe");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
    }
    // Three counters at different rates, one sample per second up to now, then more as
    // the test reads, so ticks keep closing.
    let start = now_ms() / 1000 * 1000 - 90_000;
    let write = |from: i64, to: i64| {
        let mut batch = vigil_storage::SampleBatch::default();
        for (code, per_second) in [("200", 10.0), ("404", 1.0), ("500", 0.5)] {
            let idx = batch.push_series(
                vigil_storage::LabelSet::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("job", "api"),
                ])
                .expect("labels"),
            );
            let mut t = from;
            while t < to {
                batch.push_sample(idx, t, per_second * ((t - start) / 1000) as f64);
                t += 1000;
            }
        }
        let (status, body) = vigil.write(&batch);
        assert_eq!(status, 204, "{body}");
    };
    write(start, now_ms());
    let mut state: BTreeMap<String, f64> = BTreeMap::new();
    let mut checked = 0;
    let mut written_to = now_ms() / 1000 * 1000;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while checked < 2 {
        assert!(std::time::Instant::now() < deadline, "no ticks: {state:?}");
        let message = match socket.read().expect("read") {
            tungstenite::Message::Text(text) => serde_json::from_str::<Value>(&text).expect("json"),
            _ => continue,
        };
        let rows: Vec<(&Value, i64)> = match message["type"].as_str() {
            Some("snapshot") => message["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| (r, 1))
                .collect(),
            Some("changes") => message["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .map(|c| (&c["row"], c["diff"].as_i64().expect("diff")))
                .collect(),
            _ => Vec::new(),
        };
        for (row, diff) in rows {
            let code = row["labels"]["code"].as_str().expect("code").to_string();
            let value = row["value"].as_f64().expect("value");
            if diff > 0 {
                state.insert(code, value);
            } else if state.get(&code) == Some(&value) {
                state.remove(&code);
            }
        }
        if message["type"] == "changes" && state.len() == 3 {
            // The maintained result at this tick equals the instant query at the tick.
            let t = message["time"].as_i64().expect("time");
            let (status, body) = get(
                &vigil,
                &format!(
                    "/api/v1/query?query={}&time={}",
                    urlencode(expr),
                    t as f64 / 1000.0
                ),
            );
            assert_eq!(status, 200, "{body}");
            let answer: Value = serde_json::from_str(&body).expect("json");
            let expected: BTreeMap<String, f64> = answer["data"]["result"]
                .as_array()
                .expect("vector")
                .iter()
                .map(|s| {
                    (
                        s["metric"]["code"].as_str().expect("code").to_string(),
                        s["value"][1]
                            .as_str()
                            .expect("value")
                            .parse()
                            .expect("number"),
                    )
                })
                .collect();
            // Equal to the last bits (the dataflow sums in a different order, as
            // promtool's comparisons allow).
            assert_eq!(
                state.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "tick {t}"
            );
            for (code, value) in &state {
                let want = expected[code];
                assert!(
                    (value - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "tick {t}, code {code}: {value} vs {want}"
                );
            }
            checked += 1;
        }
        let now = now_ms() / 1000 * 1000;
        if now > written_to {
            write(written_to, now);
            written_to = now;
        }
    }
    // Written back: the recorded series answer PromQL by name; the result is a table.
    let recorded =
        vigil.sql("SELECT labels['code'] AS code, value FROM requests_by_code ORDER BY code");
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    let (status, body) = get(&vigil, "/api/v1/query?query=count(requests_by_code)");
    assert_eq!(status, 200);
    assert!(body.contains("\"3\""), "{body}");
    drop(socket);

    // After a restart the config's queries are kept, not recreated.
    let vigil = vigil.kill_and_restart();
    let (_, body) = get(&vigil, "/api/v1/continuous");
    let listed: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2), "{listed}");
    assert!(
        listed["data"][1]["seq"].as_u64().unwrap_or(0) >= 2,
        "the PromQL query's history is gone: {listed}"
    );
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("q", text)]).expect("encode")[2..].to_string()
}

/// The derived signals: spans over OTLP/HTTP become the spanmetrics connector's RED
/// series and error logs over Loki push become per-pod counts, usable from PromQL; the
/// config turns them off.
/// The query's description once its watermark has reached `newest` and no batch waits
/// for it (30 s at most).
fn caught_up(vigil: &Vigil, name: &str, newest: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(vigil, &format!("/api/v1/continuous/{name}"));
        let described: Value = serde_json::from_str(&body).expect("json");
        let data = &described["data"];
        if data["watermark_ms"].as_i64().unwrap_or(0) >= newest && data["pending_batches"] == 0 {
            return data.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{described}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An instant query's result vector.
fn prom_query(vigil: &Vigil, expr: &str) -> Vec<Value> {
    let (status, body) = get(vigil, &format!("/api/v1/query?query={}", urlencode(expr)));
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).expect("json");
    value["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The first sample's value of an instant query.
fn prom_scalar(vigil: &Vigil, expr: &str) -> Option<f64> {
    prom_query(vigil, expr)
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
}

#[test]
fn span_red_metrics_and_error_log_counts_are_prometheus_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(
        &dir.path().join("data"),
        Some("derived_signals: { interval: 1s }\n"),
    );
    let now_ns = now_ms() * 1_000_000;
    let mut spans = Vec::new();
    // api: 30 calls of 3 ms, 10 of them errors; db: 5 calls of 300 ms.
    for i in 0..35u64 {
        let (service, name, status, ms) = match i {
            0..=9 => ("api", "GET /cart", 2, 3),
            10..=29 => ("api", "GET /cart", 1, 3),
            _ => ("db", "SELECT", 0, 300),
        };
        spans.push((
            service,
            json!({
                "traceId": format!("{:032x}", i + 1),
                "spanId": format!("{:016x}", i + 1),
                "name": name,
                "kind": 2,
                "startTimeUnixNano": (now_ns - ms * 1_000_000).to_string(),
                "endTimeUnixNano": now_ns.to_string(),
                "status": {"code": status},
            }),
        ));
    }
    let resource_spans: Vec<Value> = ["api", "db"]
        .iter()
        .map(|service| {
            json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": spans.iter().filter(|(s, _)| s == service).map(|(_, span)| span.clone()).collect::<Vec<_>>()}],
            })
        })
        .collect();
    let (status, body) = ureq_post(
        &format!("{}/v1/traces", vigil.url),
        json!({"resourceSpans": resource_spans})
            .to_string()
            .as_bytes(),
        "application/json",
    )
    .expect("otlp");
    assert_eq!(status, 200, "{body}");
    let mut rng = Rng(3);
    for _ in 0..3 {
        let (status, body) = push_errors(&vigil.url, &mut rng).expect("loki");
        assert_eq!(status, 204, "{body}");
    }
    let query = |expr: &str| prom_query(&vigil, expr);
    let scalar = |expr: &str| prom_scalar(&vigil, expr);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scalar("sum(traces_span_metrics_calls_total)") != Some(35.0)
        || scalar("sum(vigil_log_errors_total)") != Some(150.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "derived series never complete: {:?} {:?}",
            query("traces_span_metrics_calls_total"),
            query("vigil_log_errors_total")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        scalar(
            r#"sum(traces_span_metrics_calls_total{service_name="api",span_name="GET /cart",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR"})"#
        ),
        Some(10.0)
    );
    // Error ratio and latency quantiles as dashboards compute them.
    let ratio = scalar(
        r#"sum(traces_span_metrics_calls_total{service_name="api",status_code="STATUS_CODE_ERROR"}) / sum(traces_span_metrics_calls_total{service_name="api"})"#,
    );
    assert_eq!(ratio, Some(10.0 / 30.0));
    let p50_db = scalar(r#"histogram_quantile(0.5, sum by (le) (traces_span_metrics_duration_seconds_bucket{service_name="db"}))"#)
        .expect("db quantile");
    assert!((0.2..=0.4).contains(&p50_db), "{p50_db}");
    let p50_api = scalar(r#"histogram_quantile(0.5, sum by (le) (traces_span_metrics_duration_seconds_bucket{service_name="api"}))"#)
        .expect("api quantile");
    assert!((0.002..=0.004).contains(&p50_api), "{p50_api}");
    let per_pod = query("sum by (namespace, pod) (vigil_log_errors_total)");
    assert!(
        !per_pod.is_empty()
            && per_pod.iter().all(|s| s["metric"]["pod"]
                .as_str()
                .is_some_and(|p| p.contains("-db-"))),
        "{per_pod:?}"
    );
    // A restart is not a counter reset: the counters continue from the values written
    // (the last write is at most an interval old; wait for one with the final counts).
    std::thread::sleep(Duration::from_millis(1500));
    let vigil = vigil.kill_and_restart();
    let (status, body) = push_errors(&vigil.url, &mut rng).expect("loki");
    assert_eq!(status, 204, "{body}");
    let query = |expr: &str| prom_query(&vigil, expr);
    let scalar = |expr: &str| prom_scalar(&vigil, expr);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scalar("sum(vigil_log_errors_total)") != Some(200.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "error counts did not continue: {:?}",
            query("vigil_log_errors_total")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(scalar("sum(traces_span_metrics_calls_total)"), Some(35.0));
    assert_eq!(
        scalar("sum(resets(vigil_log_errors_total[10m])) + sum(resets(traces_span_metrics_calls_total[10m]))"),
        Some(0.0)
    );
    drop(vigil);

    // Turned off: no series.
    let off = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(
        &off.path().join("data"),
        Some("derived_signals: { span_metrics: false, log_errors: false, interval: 1s }\n"),
    );
    let (status, _) = push_errors(&vigil.url, &mut rng).expect("loki");
    assert_eq!(status, 204);
    std::thread::sleep(Duration::from_millis(2500));
    let (_, body) = get(&vigil, "/api/v1/query?query=vigil_log_errors_total");
    assert!(body.contains("\"result\":[]"), "{body}");
}

/// A continuous query is user code running inside the server: over its budget it stops
/// with the reason in the listing (the server and the other queries go on); over the
/// query cap a creation is refused with 429; a non-JSON or unknown-field body is a 400.
#[test]
fn continuous_queries_over_budget_stop_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(
        &dir.path().join("data"),
        Some("continuous_limits: { max_queries: 2, max_result_rows: 5 }\n"),
    );
    let (status, body) = create(
        &vigil,
        &json!({"name": "per_body", "language": "sql", "query": "SELECT body, count(*) AS n FROM logs GROUP BY 1"}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(
        &vigil,
        &json!({"name": "per_namespace", "language": "sql", "query": "SELECT stream['namespace'] AS ns, count(*) AS n FROM logs GROUP BY 1"}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(
        &vigil,
        &json!({"name": "third", "language": "sql", "query": "SELECT count(*) AS n FROM logs"}),
    );
    assert_eq!(status, 429, "{body}");
    for bad in [
        "not json".to_string(),
        json!({"name": "x", "language": "sql", "query": "SELECT 1", "extra": 1}).to_string(),
        json!({"name": "x", "language": "cobol", "query": "x"}).to_string(),
        json!({"name": "x", "language": "sql", "query": "SELEC nonsense"}).to_string(),
        json!({"name": "x", "language": "promql", "query": "sum(rate(x[5m])"}).to_string(),
    ] {
        let (status, answer) = ureq_post(
            &format!("{}/api/v1/continuous", vigil.url),
            bad.as_bytes(),
            "application/json",
        )
        .expect("create");
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer.contains("\"errorType\":\"bad_data\""), "{answer}");
    }
    let (mut socket, _) = tungstenite::connect(format!(
        "{}/api/v1/subscribe?name=per_body",
        vigil.url.replacen("http://", "ws://", 1)
    ))
    .expect("subscribe");
    // Ten distinct bodies: ten result rows, over the budget of five.
    let mut rng = Rng(11);
    let (status, body) = push_errors(&vigil.url, &mut rng).expect("push");
    assert_eq!(status, 204, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(&vigil, "/api/v1/continuous/per_body");
        let described: Value = serde_json::from_str(&body).expect("json");
        if described["data"]["status"] == "stopped" {
            let reason = described["data"]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("result rows, more than the limit of 5"),
                "{reason}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stopped: {described}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its subscribers are told why, and closed.
    let mut told = None;
    while let Ok(message) = socket.read() {
        match message {
            tungstenite::Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "stopped" {
                    told = value["reason"].as_str().map(str::to_string);
                }
            }
            tungstenite::Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1011));
                break;
            }
            _ => {}
        }
    }
    assert!(told.is_some_and(|r| r.contains("result rows")));
    // The other query and the server go on.
    let rows = vigil.wait_for_rows(
        "SELECT n FROM per_namespace",
        Duration::from_secs(10),
        |rows| !rows.is_empty(),
    );
    assert_eq!(rows[0]["n"], 50);
}

/// An equi-join between streams: error logs ⋈ spans on trace_id within a time window
/// (a residual join condition), grouped by service,
/// maintained as either side arrives first; equal to the ad hoc join within the horizon.
#[test]
fn continuous_join_of_logs_and_spans_matches_ad_hoc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let query = "SELECT s.service AS service, count(*) AS error_logs, \
        count(DISTINCT s.trace_id) AS traces, max(s.duration_ns) AS slowest \
        FROM logs l JOIN spans s ON l.trace_id = s.trace_id \
        AND l.timestamp BETWEEN s.start AND s.start + INTERVAL '2 milliseconds' \
        WHERE l.severity = 'error' GROUP BY 1";
    let horizon = 600_000;
    let (status, body) = create(
        &vigil,
        &json!({"name": "errors_by_service", "language": "sql", "query": query, "horizon_ms": horizon}),
    );
    assert_eq!(status, 201, "{body}");
    let mut rng = Rng(21);
    let services = ["frontend", "cart", "payments"];
    let base = now_ms() - 700_000;
    let mut newest = 0;
    for round in 0..6 {
        // 20 traces per round; each has a span and 0–3 logs; half the rounds send the
        // logs first.
        let mut spans = Vec::new();
        let mut logs = Vec::new();
        for i in 0..20 {
            let trace = format!("{:032x}", round * 1000 + i + 1);
            let t = base + round * 120_000 + rng.below(100_000) as i64;
            newest = newest.max(t);
            let service = rng.pick(&services);
            let duration_ms = 1 + rng.below(500) as i64;
            spans.push((
                service,
                json!({
                    "traceId": trace, "spanId": format!("{:016x}", i + 1), "name": "op", "kind": 2,
                    "startTimeUnixNano": (t * 1_000_000).to_string(),
                    "endTimeUnixNano": ((t + duration_ms) * 1_000_000).to_string(),
                }),
            ));
            for j in 0..rng.below(4) {
                let level = rng.pick(&["error", "info"]);
                logs.push(json!([((t + j as i64) * 1_000_000).to_string(), format!("{level} in {trace}"), {"level": level, "trace_id": trace}]));
            }
        }
        let resource_spans: Vec<Value> = services
            .iter()
            .map(|service| json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": spans.iter().filter(|(s, _)| s == service).map(|(_, span)| span.clone()).collect::<Vec<_>>()}],
            }))
            .collect();
        let send_spans = || {
            let (status, body) = ureq_post(
                &format!("{}/v1/traces", vigil.url),
                json!({"resourceSpans": resource_spans})
                    .to_string()
                    .as_bytes(),
                "application/json",
            )
            .expect("otlp");
            assert_eq!(status, 200, "{body}");
        };
        let send_logs = || {
            if logs.is_empty() {
                return;
            }
            let body = json!({"streams": [{"stream": {"namespace": "shop"}, "values": logs}]});
            let (status, answer) = ureq_post(
                &format!("{}/loki/api/v1/push", vigil.url),
                body.to_string().as_bytes(),
                "application/json",
            )
            .expect("loki");
            assert_eq!(status, 204, "{answer}");
        };
        if round % 2 == 0 {
            send_logs();
            send_spans();
        } else {
            send_spans();
            send_logs();
        }
    }
    // Wait until the query has seen the newest event time, then compare.
    let watermark = caught_up(&vigil, "errors_by_service", newest)["watermark_ms"]
        .as_i64()
        .expect("watermark");
    std::thread::sleep(Duration::from_millis(300));
    let bound = watermark - horizon;
    let ad_hoc = query.replace(
        "WHERE l.severity = 'error'",
        &format!("WHERE l.severity = 'error' AND l.timestamp >= to_timestamp_millis({bound}) AND s.start >= to_timestamp_millis({bound})"),
    );
    let expected = sql_rows(&vigil, &ad_hoc);
    assert!(expected.len() >= 2, "too little to compare: {expected:?}");
    assert_eq!(
        sql_rows(&vigil, "SELECT * FROM errors_by_service"),
        expected
    );
}

/// The alert state through the same subscription mechanism: `name=ALERTS` gives a
/// snapshot of the pending and firing alerts, then their changes (pending → firing is
/// one batch: the pending row out, the firing row in); after a restart, a subscriber
/// resuming from its sequence number sees no repeat.
#[test]
fn alerts_are_a_subscribable_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: Hot\n        expr: temperature > 30\n        for: 2s\n",
    )
    .expect("rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
        rules.display()
    );
    let vigil = Vigil::start(&dir.path().join("data"), Some(&config));
    let subscribe = |vigil: &Vigil, from: Option<u64>| {
        let mut url = format!(
            "{}/api/v1/subscribe?name=ALERTS",
            vigil.url.replacen("http://", "ws://", 1)
        );
        if let Some(seq) = from {
            url.push_str(&format!("&from_seq={seq}"));
        }
        let (socket, _) = tungstenite::connect(&url).expect("subscribe");
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
        }
        socket
    };
    let read = |socket: &mut tungstenite::WebSocket<_>| -> Value {
        loop {
            if let tungstenite::Message::Text(text) = socket.read().expect("read") {
                return serde_json::from_str(&text).expect("json");
            }
        }
    };
    let mut socket = subscribe(&vigil, None);
    let snapshot = read(&mut socket);
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["columns"],
        json!([
            "labels",
            "state",
            "active_at",
            "fired_at",
            "value",
            "annotations"
        ])
    );
    assert_eq!(snapshot["rows"], json!([]));
    let write = |vigil: &Vigil, value: f64| {
        let mut batch = vigil_storage::SampleBatch::default();
        let idx = batch.push_series(
            vigil_storage::LabelSet::from_pairs([("__name__", "temperature"), ("room", "a")])
                .expect("labels"),
        );
        batch.push_sample(idx, now_ms(), value);
        let (status, body) = vigil.write(&batch);
        assert_eq!(status, 204, "{body}");
    };
    write(&vigil, 35.0);
    let mut seen = Vec::new();
    let mut last_seq = 0;
    while seen.len() < 3 {
        let message = read(&mut socket);
        if message["type"] == "changes" {
            last_seq = message["seq"].as_u64().expect("seq");
            for change in message["changes"].as_array().expect("changes") {
                seen.push((
                    change["row"]["state"].as_str().expect("state").to_string(),
                    change["diff"].as_i64().expect("diff"),
                ));
            }
        }
        // Keep the condition true and the clock moving until it fires.
        write(&vigil, 35.0);
    }
    assert_eq!(
        seen,
        [
            ("pending".to_string(), 1),
            ("firing".to_string(), 1),
            ("pending".to_string(), -1)
        ]
    );
    drop(socket);
    // Ticks write `ALERTS` (what a restart restores firing alerts from): let two pass.
    for _ in 0..5 {
        write(&vigil, 35.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let vigil = vigil.kill_and_restart();
    let mut socket = subscribe(&vigil, Some(last_seq));
    let first = read(&mut socket);
    assert!(
        first["type"] == "progress" && first["seq"].as_u64() == Some(last_seq),
        "the firing alert came back as it was, so nothing changed: {first}"
    );
}

/// Creating a continuous query is a write-scope operation, and the per-client cap counts
/// per credential.
#[test]
fn continuous_query_creation_needs_write_scope_and_is_capped_per_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "bearer_tokens:\n  - token: alice-token-0123456789\n    scope: write\n  - token: bob-token-0123456789\n    scope: write\n  - token: reader-token-0123456789\n    scope: read\n",
    )
    .expect("web config");
    let config = dir.path().join("vigil.yml");
    std::fs::write(
        &config,
        "continuous_limits: { max_queries_per_client: 1 }\n",
    )
    .expect("config");
    let args = vec![
        "--web.config.file".to_string(),
        web.display().to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    let auth = |token: &str| format!("Authorization: Bearer {token}\r\n");
    let vigil = Vigil::start_args(&dir.path().join("data"), &args, "http", |v| {
        http_request(
            "GET",
            &format!("{}/-/ready", v.url),
            b"",
            "text/plain",
            &auth("reader-token-0123456789"),
        )
        .is_ok_and(|r| r.0 == 200)
    });
    let post = |token: Option<&str>, name: &str| {
        let body = json!({"name": name, "language": "sql", "query": "SELECT count(*) AS n FROM logs", "owner": "someone-else"});
        http_request(
            "POST",
            &format!("{}/api/v1/continuous", vigil.url),
            body.to_string().as_bytes(),
            "application/json",
            &token.map(auth).unwrap_or_default(),
        )
        .expect("create")
        .0
    };
    assert_eq!(post(None, "q0"), 401);
    assert_eq!(post(Some("reader-token-0123456789"), "q0"), 403);
    assert_eq!(post(Some("alice-token-0123456789"), "q1"), 201);
    // The body's `owner` is ignored: the cap is per credential.
    assert_eq!(post(Some("alice-token-0123456789"), "q2"), 429);
    assert_eq!(post(Some("bob-token-0123456789"), "q3"), 201);
}

/// Continuous queries reading each other: per-minute counts, and two queries over them
/// (a reduction and a running total); at every point the downstream tables equal the
/// same queries run ad hoc over the upstream table, also after a kill -9; an upstream is
/// not dropped while a downstream reads it.
#[test]
fn continuous_queries_read_each_others_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let definitions = [
        ("per_minute", "SELECT stream['namespace'] AS ns, date_bin(INTERVAL '1 minute', timestamp) AS minute, count(*) AS n FROM logs GROUP BY 1, 2"),
        ("busiest", "SELECT ns, max(n) AS peak, count(*) AS minutes FROM per_minute GROUP BY ns"),
        ("running_total", "SELECT ns, sum(n) AS total FROM per_minute GROUP BY ns"),
    ];
    for (name, query) in definitions {
        let (status, body) = create(
            &vigil,
            &json!({"name": name, "language": "sql", "query": query, "horizon_ms": HORIZON_MS}),
        );
        assert_eq!(status, 201, "{name}: {body}");
    }
    let check = |vigil: &Vigil, rounds: u64| {
        let mut rng = Rng(rounds);
        for _ in 0..rounds {
            let (status, body) = push_errors(&vigil.url, &mut rng).expect("push");
            assert_eq!(status, 204, "{body}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let upstream = sql_rows(vigil, "SELECT * FROM per_minute");
            let busiest = sql_rows(vigil, "SELECT * FROM busiest");
            let total = sql_rows(vigil, "SELECT * FROM running_total");
            let busiest_ad_hoc = sql_rows(
                vigil,
                "SELECT ns, max(n) AS peak, count(*) AS minutes FROM per_minute GROUP BY ns",
            );
            let total_ad_hoc = sql_rows(
                vigil,
                "SELECT ns, sum(n) AS total FROM per_minute GROUP BY ns",
            );
            let grand: i64 = vigil.count("SELECT COALESCE(sum(total), 0) FROM running_total");
            if busiest == busiest_ad_hoc
                && total == total_ad_hoc
                && !upstream.is_empty()
                && grand > 0
            {
                return grand;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chain inconsistent: {busiest:?} vs {busiest_ad_hoc:?}; {total:?} vs {total_ad_hoc:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = check(&vigil, 4);
    let vigil = vigil.kill_and_restart();
    let after = check(&vigil, 2);
    assert!(after > before, "{before} → {after}");
    let drop = |name: &str| {
        http_request(
            "DELETE",
            &format!("{}/api/v1/continuous/{name}", vigil.url),
            b"",
            "text/plain",
            "",
        )
        .expect("drop")
    };
    let (status, body) = drop("per_minute");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("reads \\\"per_minute\\\""), "{body}");
    assert_eq!(drop("busiest").0, 200);
    assert_eq!(drop("running_total").0, 200);
    assert_eq!(drop("per_minute").0, 200);
}

/// Hostile query texts: deep nesting, a 5,000-term expression, a 1 MiB body, a name
/// with a path in it; each is a 400 and the server goes on.
#[test]
fn hostile_continuous_query_definitions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let deep = format!(
        "SELECT count(*) AS n FROM logs WHERE {}true{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let wide = format!(
        "SELECT count(*) AS n FROM logs WHERE length(body) = {}",
        vec!["1"; 5000].join(" + ")
    );
    let huge = format!("SELECT '{}' AS x FROM logs", "x".repeat(1 << 20));
    for (name, query) in [
        ("deep", deep.as_str()),
        ("wide", wide.as_str()),
        ("huge", huge.as_str()),
        ("../../etc", "SELECT count(*) AS n FROM logs"),
        ("ok", "SELECT read_parquet('/etc/passwd')"),
        ("ok", "SELECT * FROM read_csv('/etc/passwd')"),
        ("ok", "COPY (SELECT 1) TO '/tmp/x'"),
        ("ok", "CREATE TABLE t AS SELECT 1"),
        (
            "ok",
            "SELECT count(*) AS n FROM hop('logs', INTERVAL '0 seconds', INTERVAL '1 hour')",
        ),
        ("ok", "SELECT count(*) AS n FROM hop('logs', '-1s', '1h')"),
        (
            "ok",
            "SELECT count(*) AS n FROM hop('/etc/passwd', '1m', '5m')",
        ),
        ("ok", "SELECT count(*) AS n FROM hop('samples', '1m', '5m')"),
        ("ok", "SELECT count(*) AS n FROM hop('logs', '1m')"),
        ("ok", "SELECT count(*) AS n FROM hop('logs', now(), '5m')"),
        (
            "ok",
            "SELECT count(*) AS n FROM hop('logs', '1ms', '100000000000000000000y')",
        ),
    ] {
        let (status, body) = create(
            &vigil,
            &json!({"name": name, "language": "sql", "query": query}),
        );
        assert_eq!(status, 400, "{name}: {body}");
    }
    let (status, body) = create(
        &vigil,
        &json!({"name": "ok", "language": "sql", "query": "SELECT count(*) AS n FROM logs"}),
    );
    assert_eq!(status, 201, "{body}");
    // The same hops ad hoc: an error in Prometheus' envelope, never a panic or a scan.
    for query in [
        "SELECT count(*) FROM hop('logs', INTERVAL '0 seconds', INTERVAL '1 hour')",
        "SELECT count(*) FROM hop('logs', '1ms', '1d')",
        "SELECT count(*) FROM hop('file:///etc/passwd', '1m', '5m')",
    ] {
        let (status, body) = vigil.sql_raw(query, "json");
        assert!((400..500).contains(&status), "{query}: {status} {body}");
        assert!(body.contains("hop"), "{query}: {body}");
    }
    assert_eq!(get(&vigil, "/-/healthy").0, 200);
}

/// Top k per group: `row_number() OVER (PARTITION BY … ORDER BY …) <= k`, over another
/// query's counts and straight over logs; equal to the same query ad hoc as logs arrive.
#[test]
fn top_k_per_group_is_maintained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let top_pods = "SELECT ns, pod, errors FROM (SELECT ns, pod, errors, row_number() OVER \
        (PARTITION BY ns ORDER BY errors DESC, pod) AS rank FROM per_pod) WHERE rank <= 2";
    let longest = "SELECT ns, body FROM (SELECT stream['namespace'] AS ns, body, row_number() \
        OVER (PARTITION BY stream['namespace'] ORDER BY length(body) DESC, body) AS rank \
        FROM logs) WHERE rank <= 3";
    for (name, query) in [
        ("per_pod", "SELECT stream['namespace'] AS ns, stream['pod'] AS pod, count(*) AS errors FROM logs WHERE severity = 'error' GROUP BY 1, 2"),
        ("top_pods", top_pods),
        ("longest", longest),
    ] {
        let (status, body) = create(
            &vigil,
            &json!({"name": name, "language": "sql", "query": query}),
        );
        assert_eq!(status, 201, "{name}: {body}");
    }
    let (status, body) = create(
        &vigil,
        &json!({"name": "bad_rank", "language": "sql", "query": "SELECT ns FROM (SELECT ns, rank() OVER (PARTITION BY ns ORDER BY errors) AS r FROM per_pod) WHERE r <= 2"}),
    );
    assert_eq!(status, 400, "{body}");
    let mut rng = Rng(77);
    for round in 0..5 {
        for _ in 0..3 {
            let (status, body) = push_errors(&vigil.url, &mut rng).expect("push");
            assert_eq!(status, 204, "{body}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (a, b) = (
                sql_rows(&vigil, "SELECT * FROM top_pods"),
                sql_rows(&vigil, top_pods),
            );
            let (c, d) = (
                sql_rows(&vigil, "SELECT * FROM longest"),
                sql_rows(&vigil, longest),
            );
            if a == b && c == d && !a.is_empty() && !c.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {a:?} vs {b:?}; {c:?} vs {d:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A continuous query over the `metrics` view (samples with their series' name and
/// labels, from remote_write): seeded from what storage holds, then following appends,
/// equal to the ad hoc query within the horizon, also after a kill -9 — with 2-second
/// blocks, so by then the samples have left the head for Parquet and the restarted query
/// is seeded from the files.
#[test]
fn continuous_sql_over_metrics_matches_ad_hoc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let vigil = Vigil::start(&data, Some("storage:\n  block_period: 2s\n"));
    let query = "SELECT labels['code'] AS code, count(*) AS n, max(value) AS peak, \
        min(timestamp) AS first FROM metrics WHERE name = 'http_requests_total' GROUP BY 1";
    let start = now_ms() - 300_000;
    let write = |vigil: &Vigil, from: i64, to: i64| {
        let mut batch = vigil_storage::SampleBatch::default();
        for code in ["200", "404", "500"] {
            let idx = batch.push_series(
                vigil_storage::LabelSet::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("job", "api"),
                ])
                .expect("labels"),
            );
            let mut t = from;
            while t < to {
                batch.push_sample(idx, t, ((t - start) / 1000) as f64);
                t += 1000;
            }
        }
        let other = batch.push_series(
            vigil_storage::LabelSet::from_pairs([("__name__", "up"), ("job", "api")])
                .expect("labels"),
        );
        batch.push_sample(other, to - 1, 1.0);
        let (status, body) = vigil.write(&batch);
        assert_eq!(status, 204, "{body}");
    };
    // Before the query exists (its seed), then after (its tap).
    write(&vigil, start, start + 120_000);
    let (status, body) = create(
        &vigil,
        &json!({"name": "requests", "language": "sql", "query": query, "horizon_ms": HORIZON_MS}),
    );
    assert_eq!(status, 201, "{body}");
    write(&vigil, start + 120_000, start + 200_000);
    let compare = |vigil: &Vigil| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let maintained = sql_rows(vigil, "SELECT * FROM requests");
            let ad_hoc = sql_rows(vigil, query);
            if maintained == ad_hoc && maintained.len() == 3 {
                return maintained;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{maintained:?} vs {ad_hoc:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = compare(&vigil);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while crate::remote_write::walk(&data.join("blocks/metrics"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "samples never flushed to Parquet"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let vigil = vigil.kill_and_restart();
    // Seeded from Parquet: the same result before anything new arrives.
    assert_eq!(compare(&vigil), before);
    write(&vigil, start + 200_000, start + 260_000);
    let after = compare(&vigil);
    assert_ne!(before, after);
}

/// The CLI as a user runs it: `vigil cq create` (SQL and PromQL with `--step`), `list`,
/// a refused query's message, `drop`.
#[test]
fn cq_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let cq = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("cq")
            .args(args)
            .args(["--url", &vigil.url])
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run vigil cq");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cq(&[
        "create",
        "up_jobs",
        "--promql",
        "count by (job) (up)",
        "--step",
        "5s",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("created up_jobs") && out.contains("labels, value"),
        "{out}"
    );
    let (ok, out, err) = cq(&[
        "create",
        "errors",
        "--sql",
        "SELECT stream['namespace'] AS ns, count(*) AS n FROM logs WHERE severity = 'error' GROUP BY 1",
        "--horizon",
        "30m",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cq(&["list", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(listed[1]["step_ms"], 5000, "{listed}");
    assert_eq!(listed[0]["horizon_ms"], 1_800_000, "{listed}");
    let (ok, out, _) = cq(&["list"]);
    assert!(
        ok && out.starts_with("NAME") && out.contains("errors"),
        "{out}"
    );
    let (ok, _, err) = cq(&[
        "create",
        "bad",
        "--sql",
        "SELECT body FROM logs ORDER BY timestamp",
    ]);
    assert!(!ok);
    assert!(
        err.contains("HTTP 400, bad_data") && err.contains("ORDER BY"),
        "{err}"
    );
    let (ok, out, err) = cq(&["drop", "errors"]);
    assert!(ok && out.contains("dropped errors"), "{out}{err}");
    // `vigil cq tail --sql`: an inline query for as long as the command runs.
    let mut rng = Rng(9);
    let (status, body) = push_errors(&vigil.url, &mut rng).expect("push");
    assert_eq!(status, 204, "{body}");
    let (tail, lines_rx) = crate::util::spawn_lines(
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil")).args([
            "cq",
            "tail",
            "--json",
            "--url",
            &vigil.url,
            "--sql",
            "SELECT count(*) AS n FROM logs",
        ]),
    );
    // The snapshot (empty at first), then the seed's rows as a change: 50 records.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while seen != 50 {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a line from cq tail --sql");
        let message: Value = serde_json::from_str(&line).expect("json line");
        for row in message["rows"].as_array().into_iter().flatten() {
            seen = row["n"].as_i64().unwrap_or(seen);
        }
        for change in message["changes"].as_array().into_iter().flatten() {
            if change["diff"] == 1 {
                seen = change["row"]["n"].as_i64().unwrap_or(seen);
            }
        }
    }
    drop(tail);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out, err) = cq(&["list"]);
        assert!(ok, "{err}");
        if !out.contains("inline_") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "inline query outlived cq tail: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Hopping windows: `hop('logs', slide, size)` gives each row once per window that holds
/// it. The maintained result equals the same query run ad hoc by DataFusion (the same
/// table function) within the horizon, also after a kill -9; every row is in exactly
/// size / slide windows; a hop that would put a row in too many windows is refused.
#[test]
fn hopping_windows_are_maintained_and_match_ad_hoc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    const HOPPING: &str = "SELECT window_start, window_end, stream['namespace'] AS ns, \
         count(*) AS n, max(CAST(attributes['took_ms'] AS BIGINT)) AS slowest \
         FROM hop('logs', INTERVAL '1 minute', INTERVAL '5 minutes')";
    let (status, body) = create(
        &vigil,
        &json!({"name": "hopping", "language": "sql", "query": format!("{HOPPING} GROUP BY 1, 2, 3"), "horizon_ms": HORIZON_MS}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(
        &vigil,
        &json!({"name": "too_many", "language": "sql", "query": "SELECT window_start, count(*) FROM hop('logs', INTERVAL '1 millisecond', INTERVAL '1 hour') GROUP BY 1"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("more than 1000 windows"),
        "{body}"
    );
    let check = |vigil: &Vigil, seed: u64| {
        let mut rng = Rng(seed);
        for _ in 0..5 {
            let (status, body) = push_errors(&vigil.url, &mut rng).expect("push");
            assert_eq!(status, 204, "{body}");
        }
        let newest = vigil.count("SELECT CAST(max(timestamp) AS BIGINT) FROM logs");
        let described = caught_up(vigil, "hopping", newest);
        // Caught up: no lag behind what the inputs delivered.
        assert_eq!(described["lag_ms"], 0, "{described}");
        let watermark = described["watermark_ms"].as_i64().expect("watermark");
        let bound = format!(
            "timestamp >= to_timestamp_millis({})",
            watermark - HORIZON_MS
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let maintained = sql_rows(vigil, "SELECT * FROM hopping");
            let expected = sql_rows(vigil, &format!("{HOPPING} WHERE {bound} GROUP BY 1, 2, 3"));
            if maintained == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "maintained {maintained:?}\nad hoc {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let windows = vigil.count("SELECT sum(n) FROM hopping");
        let rows = vigil.count(&format!("SELECT count(*) FROM logs WHERE {bound}"));
        assert!(rows > 0);
        assert_eq!(
            windows,
            5 * rows,
            "every row is in five 5-minute windows a minute apart"
        );
    };
    check(&vigil, 11);
    let vigil = vigil.kill_and_restart();
    check(&vigil, 12);
}

/// Closed windows to Parquet: with `persist`, each minute's rows are written once the
/// watermark is `close_after_ms` past the minute, readable as `<name>_closed`. Logs
/// arriving in time order (a minute at a time, as agents ship them): every closed window
/// equals the live result's rows for it; after a kill -9 nothing is written twice and
/// the later minutes follow; late rows for a closed window change the live result only
/// (emit on close).
#[test]
fn closed_windows_are_persisted_to_parquet_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let query = "SELECT date_bin(INTERVAL '1 minute', timestamp) AS minute, \
         stream['namespace'] AS ns, count(*) AS n, max(length(body)) AS longest \
         FROM logs GROUP BY 1, 2";
    let (status, body) = create(
        &vigil,
        &json!({"name": "per_minute", "language": "sql", "query": query, "horizon_ms": 3_600_000,
                "persist": {"window_column": "minute", "close_after_ms": 60_000}}),
    );
    assert_eq!(status, 201, "{body}");
    for (bad, why) in [
        (
            json!({"window_column": "ns", "close_after_ms": 60_000}),
            "not a timestamp column",
        ),
        (
            json!({"window_column": "minute", "close_after_ms": 3_600_001}),
            "between 1 and the horizon",
        ),
    ] {
        let (status, body) = create(
            &vigil,
            &json!({"name": "bad", "language": "sql", "query": query, "horizon_ms": 3_600_000, "persist": bad}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(why),
            "{body}"
        );
    }
    let base = now_ms() / 60_000 * 60_000 - 12 * 60_000;
    let mut rng = Rng(31);
    let mut push_minute = |vigil: &Vigil, minute: i64| {
        let values: Vec<Value> = (0..20)
            .map(|i| {
                let t = base + minute * 60_000 + i * 2_000;
                json!([
                    (t * 1_000_000).to_string(),
                    format!("GET /{} took {}ms", rng.below(50), rng.below(900))
                ])
            })
            .collect();
        let ns = if minute % 3 == 0 { "payments" } else { "shop" };
        let body =
            json!({"streams": [{"stream": {"namespace": ns, "pod": "p"}, "values": values}]});
        let (status, answer) = ureq_post(
            &format!("{}/loki/api/v1/push", vigil.url),
            body.to_string().as_bytes(),
            "application/json",
        )
        .expect("push");
        assert_eq!(status, 204, "{answer}");
    };
    let closed_until = |vigil: &Vigil, at_least: i64| -> i64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = get(vigil, "/api/v1/continuous/per_minute");
            let described: Value = serde_json::from_str(&body).expect("json");
            let until = described["data"]["closed_until_ms"]
                .as_i64()
                .unwrap_or(i64::MIN);
            if until >= at_least && described["data"]["pending_batches"] == 0 {
                return until;
            }
            assert!(std::time::Instant::now() < deadline, "{described}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let live_up_to = |vigil: &Vigil, until: i64| {
        sql_rows(
            vigil,
            &format!("SELECT * FROM per_minute WHERE minute <= to_timestamp_millis({until})"),
        )
    };
    for minute in 0..7 {
        push_minute(&vigil, minute);
    }
    // Minute 6's rows end at :38, so minutes up to 5 have closed.
    let until = closed_until(&vigil, base + 5 * 60_000);
    let closed = sql_rows(&vigil, "SELECT * FROM per_minute_closed");
    assert_eq!(closed.len(), 6, "{closed:?}");
    assert!(
        closed.values().all(|&n| n == 1),
        "a window written twice: {closed:?}"
    );
    assert_eq!(closed, live_up_to(&vigil, until));

    let vigil = vigil.kill_and_restart();
    assert_eq!(sql_rows(&vigil, "SELECT * FROM per_minute_closed"), closed);
    // A late row for minute 2 (closed), then the next minutes.
    let late = json!({"streams": [{"stream": {"namespace": "shop", "pod": "p"}, "values": [[((base + 2 * 60_000 + 59_000) * 1_000_000).to_string(), "late"]]}]});
    let (status, answer) = ureq_post(
        &format!("{}/loki/api/v1/push", vigil.url),
        late.to_string().as_bytes(),
        "application/json",
    )
    .expect("push");
    assert_eq!(status, 204, "{answer}");
    for minute in 7..11 {
        push_minute(&vigil, minute);
    }
    let later = closed_until(&vigil, base + 9 * 60_000);
    let now_closed = sql_rows(&vigil, "SELECT * FROM per_minute_closed");
    assert_eq!(now_closed.len(), 10, "{now_closed:?}");
    assert!(now_closed.values().all(|&n| n == 1), "{now_closed:?}");
    for row in closed.keys() {
        assert!(
            now_closed.contains_key(row),
            "closed window rewritten: {row}"
        );
    }
    let live = live_up_to(&vigil, later);
    let differing: Vec<&String> = live
        .keys()
        .filter(|row| !now_closed.contains_key(*row))
        .collect();
    assert_eq!(
        differing.len(),
        1,
        "only the late minute differs: {differing:?}"
    );
    assert!(
        differing[0].contains(&format!("{}", base + 2 * 60_000)),
        "{differing:?}"
    );
}

/// An inline subscription: `/api/v1/subscribe?query=SELECT …` runs a continuous query for
/// the connection only: snapshot and changes as for a named one, the result equal to the
/// ad hoc query, listed while connected, dropped when the client goes; with credentials
/// it needs the write scope, as creating a query does.
#[test]
fn inline_subscription_runs_for_the_connection_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "bearer_tokens:\n  - token: writer-token-0123456789\n    scope: write\n  - token: reader-token-0123456789\n    scope: read\n",
    )
    .expect("web config");
    let args = ["--web.config.file".to_string(), web.display().to_string()];
    let vigil = Vigil::start_args(&dir.path().join("data"), &args, "http", |v| {
        http_request(
            "GET",
            &format!("{}/-/ready", v.url),
            b"",
            "text/plain",
            "Authorization: Bearer reader-token-0123456789\r\n",
        )
        .is_ok_and(|r| r.0 == 200)
    });
    let query = "SELECT stream['namespace'] AS ns, count(*) AS n FROM logs GROUP BY 1";
    let connect = |token: &str| {
        use tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/api/v1/subscribe?query={}",
            vigil.url.replacen("http://", "ws://", 1),
            urlencode(query)
        );
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        tungstenite::connect(request)
    };
    match connect("reader-token-0123456789") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!(
            "a read-only token subscribed inline: {:?}",
            other.map(|_| ())
        ),
    }
    let (mut socket, _) = connect("writer-token-0123456789").expect("inline subscription");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
    }
    let auth = "Authorization: Bearer writer-token-0123456789\r\n";
    let listed = || -> Vec<String> {
        let (status, body) = http_request(
            "GET",
            &format!("{}/api/v1/continuous", vigil.url),
            b"",
            "text/plain",
            auth,
        )
        .expect("list");
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).expect("json");
        body["data"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_string))
            .collect()
    };
    assert!(listed().iter().any(|n| n.starts_with("inline_")));
    let mut rng = Rng(41);
    for _ in 0..3 {
        let values: Vec<Value> = (0..30)
            .map(|i| {
                json!([
                    ((now_ms() - 60_000 - i * 1000) * 1_000_000).to_string(),
                    format!("line {i}")
                ])
            })
            .collect();
        let ns = rng.pick(&["shop", "payments"]);
        let body = json!({"streams": [{"stream": {"namespace": ns}, "values": values}]});
        let (status, answer) = http_request(
            "POST",
            &format!("{}/loki/api/v1/push", vigil.url),
            body.to_string().as_bytes(),
            "application/json",
            auth,
        )
        .expect("push");
        assert_eq!(status, 204, "{answer}");
    }
    let total: i64 = 90;
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rows.values().sum::<i64>() != total {
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        let tungstenite::Message::Text(text) = socket.read().expect("read") else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).expect("json");
        let mut apply = |row: &Value, diff: i64| {
            let ns = row["ns"].as_str().unwrap_or_default().to_string();
            let n = row["n"].as_i64().unwrap_or(0);
            *rows.entry(ns).or_default() += diff * n;
        };
        match message["type"].as_str() {
            Some("snapshot") => {
                for row in message["rows"].as_array().expect("rows") {
                    apply(row, 1);
                }
            }
            Some("changes") => {
                for change in message["changes"].as_array().expect("changes") {
                    apply(&change["row"], change["diff"].as_i64().expect("diff"));
                }
            }
            _ => {}
        }
    }
    socket.close(None).expect("close");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while listed().iter().any(|n| n.starts_with("inline_")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the inline query outlived its connection"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dir
        .path()
        .join("data/continuous")
        .read_dir()
        .expect("dir")
        .any(|e| e
            .map(|e| e.file_name().to_string_lossy().starts_with("inline_"))
            .unwrap_or(false)));
}

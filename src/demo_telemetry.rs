//! Logs and traces of `vigil demo`'s simulated cluster, shipped over the same protocols
//! real clusters use: container logs as Fluentd's `elasticsearch` output sends them
//! (`_bulk` NDJSON, `logstash_format` daily indices `k8s-YYYY.MM.DD`, documents shaped
//! by the `kubernetes_metadata` filter), spans as OTLP/HTTP protobuf (`/v1/traces`).
//!
//! The pods are the ones the metrics describe (`src/demo.rs`: same names, same nodes).
//! Requests enter `shop/frontend` (`GET /cart`, `GET /checkout`), which calls
//! `shop/cart` (`GET /api/cart`) and, for a checkout, `payments/api` (`POST /api/pay`);
//! both query PostgreSQL. About 5% of the traces are slow (one query takes 300–1500 ms)
//! and about 3% fail (HTTP 500, status ERROR with an `exception` event). The pods that
//! serve a trace log what they did with its `trace_id` and the `span_id` of the span
//! that was active, so `logs ⋈ spans ON trace_id` pairs them up.
//!
//! `payments/worker` is crash-looping: every 30–60 s it starts, cannot reach (or runs
//! out of memory over) the ledger database, logs a few errors and dies with a
//! multi-line panic on stderr. For a few seconds around each crash `payments/api`'s
//! payments fail much more often — the same database is refusing connections.
//!
//! Everything comes from one xorshift generator seeded by [`Telemetry::new`]: the same
//! seed and the same sequence of windows give the same batches.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use serde_json::{json, Value};
use tracing::warn;

/// Traces per second on average (it swings ±25% over 20 minutes).
const TRACE_RATE: f64 = 2.4;
/// Log lines per second not tied to a request (probes, housekeeping, Prometheus).
const BACKGROUND_RATE: f64 = 0.8;
/// How long after a worker crash the ledger database keeps refusing `payments/api`.
const TROUBLE_MS: i64 = 12_000;
const NS_PER_MS: u64 = 1_000_000;
const NS_PER_US: u64 = 1_000;

/// A pod of the simulated cluster, as `src/demo.rs` lays them out.
struct Pod {
    namespace: &'static str,
    app: &'static str,
    name: String,
    node: &'static str,
    version: &'static str,
}

fn pods() -> Vec<Pod> {
    let deployments: [(&str, &str, usize, &str); 5] = [
        ("shop", "frontend", 3, "1.14.2"),
        ("shop", "cart", 2, "2.7.0"),
        ("payments", "api", 2, "3.2.1"),
        ("payments", "worker", 1, "2.3.1"),
        ("monitoring", "prometheus", 2, "2.53.1"),
    ];
    let nodes = ["node-a", "node-b", "node-c"];
    let mut pods: Vec<Pod> = Vec::new();
    for (namespace, app, replicas, version) in deployments {
        for replica in 0..replicas {
            let name = if app == "prometheus" {
                format!("prometheus-{replica}")
            } else {
                let suffix = ["x2k4p", "m9qzt", "c8wrn"][replica % 3];
                format!("{app}-7d9f8c6b5-{suffix}")
            };
            pods.push(Pod {
                namespace,
                app,
                name,
                node: nodes[pods.len() % nodes.len()],
                version,
            });
        }
    }
    pods
}

/// A service another one calls over HTTP, and the queries it makes.
struct Endpoint {
    app: &'static str,
    method: &'static str,
    route: &'static str,
    host: &'static str,
    queries: &'static [Query],
    /// Why its last query fails when the trace is one of the failing ones.
    failure: &'static str,
}

struct Query {
    /// The span name: operation and table.
    name: &'static str,
    statement: &'static str,
    database: &'static str,
}

const DB_HOST: &str = "postgres.payments.svc.cluster.local";

const CART: Endpoint = Endpoint {
    app: "cart",
    method: "GET",
    route: "/api/cart",
    host: "cart.shop.svc.cluster.local",
    queries: &[Query {
        name: "SELECT cart_items",
        statement: "SELECT id, sku, quantity, price_cents FROM cart_items WHERE cart_id = $1",
        database: "shop",
    }],
    failure: "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)",
};

const PAY: Endpoint = Endpoint {
    app: "api",
    method: "POST",
    route: "/api/pay",
    host: "api.payments.svc.cluster.local",
    queries: &[
        Query {
            name: "SELECT orders",
            statement: "SELECT id, total_cents, status FROM orders WHERE id = $1 FOR UPDATE",
            database: "ledger",
        },
        Query {
            name: "INSERT payments",
            statement: "INSERT INTO payments (order_id, amount_cents, provider, status) VALUES ($1, $2, $3, $4)",
            database: "ledger",
        },
    ],
    failure: "dial tcp 10.96.12.7:5432: connect: connection refused",
};

/// Deterministic randomness: xorshift64* seeded through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, n); 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in [lo, hi).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }

    /// Microseconds in [lo, hi), as nanoseconds.
    fn micros(&mut self, lo: u64, hi: u64) -> u64 {
        self.between(lo, hi) * NS_PER_US
    }

    /// Milliseconds in [lo, hi), as nanoseconds (with microsecond resolution).
    fn millis(&mut self, lo: u64, hi: u64) -> u64 {
        self.micros(lo * 1000, hi * 1000)
    }

    /// Uniform in [lo, hi) for millisecond times.
    fn time(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(u64::try_from(hi - lo).unwrap_or(0)) as i64
    }

    /// A Poisson-distributed count (normal approximation for large means).
    fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            let u1 = 1.0 - self.unit();
            let u2 = self.unit();
            let gauss = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            return (mean + mean.sqrt() * gauss).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let mut product = 1.0;
        let mut count = 0;
        loop {
            product *= self.unit();
            if product <= limit {
                return count;
            }
            count += 1;
        }
    }

    /// A non-zero id of `N` bytes (an all-zero trace or span id is invalid in OTLP).
    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut id = [0u8; N];
        for chunk in id.chunks_mut(8) {
            let bytes = self.next_u64().to_be_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        if id.iter().all(|b| *b == 0) {
            id[N - 1] = 1;
        }
        id
    }
}

/// One container log line, placed in time.
struct LogLine {
    ms: i64,
    pod: usize,
    stderr: bool,
    level: &'static str,
    /// What the container wrote (the document's `log`).
    text: String,
    /// Lower-case hex, empty when the line belongs to no request.
    trace_id: String,
    span_id: String,
}

/// A span of a trace being built; times are nanoseconds from the trace's start.
struct SpanDraft {
    pod: usize,
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: String,
    kind: span::SpanKind,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

/// A log line of a trace being built: logged by `pod` while span `span` was active.
struct LogDraft {
    at: u64,
    pod: usize,
    span: [u8; 8],
    level: &'static str,
    msg: String,
    fields: Vec<(&'static str, Value)>,
}

struct TraceDraft {
    id: [u8; 16],
    spans: Vec<SpanDraft>,
    logs: Vec<LogDraft>,
    /// Queries made so far, and which one (by that count) is the slow one.
    queries: usize,
    slow_query: Option<usize>,
    duration: u64,
}

/// Which part of a request fails, if any.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Cart,
    Ledger,
}

/// The simulated cluster's logs and traces: a generator of [`Batch`]es over consecutive
/// time windows.
pub struct Telemetry {
    rng: Rng,
    pods: Vec<Pod>,
    /// When `payments/worker` next crashes (set on the first window).
    next_crash_ms: Option<i64>,
    /// Recent crash times: `payments/api` fails more often shortly after them.
    crashes: Vec<i64>,
    /// Lines of a crash that fall after the window that started it.
    pending: Vec<LogLine>,
}

/// What happened in one window: the `_bulk` body and the OTLP request.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// NDJSON: an `index` action and a document per log line, each line `\n`-terminated.
    pub bulk: String,
    /// The window's spans, one `ResourceSpans` per pod that served requests.
    pub traces: ExportTraceServiceRequest,
    /// Documents in `bulk`.
    pub log_records: usize,
    /// Spans in `traces`.
    pub spans: usize,
}

impl Telemetry {
    pub fn new(seed: u64) -> Telemetry {
        Telemetry {
            rng: Rng::new(seed),
            pods: pods(),
            next_crash_ms: None,
            crashes: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Everything that happened in [from_ms, to_ms): the `_bulk` body and the OTLP request.
    /// Every log and span time lies in the window; a trace is emitted whole, so one that
    /// would not fit is moved earlier (or, in a window shorter than itself, left out).
    pub fn between(&mut self, from_ms: i64, to_ms: i64) -> Batch {
        if to_ms <= from_ms {
            return Batch::default();
        }
        let mut lines = self.worker(from_ms, to_ms);
        self.background(from_ms, to_ms, &mut lines);
        let mut spans: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
        let seconds = (to_ms - from_ms) as f64 / 1000.0;
        let middle = (from_ms + to_ms) as f64 / 2.0;
        let swing = 1.0 + 0.25 * (std::f64::consts::TAU * middle / 1_200_000.0).sin();
        for _ in 0..self.rng.poisson(TRACE_RATE * swing * seconds) {
            let at = self.rng.time(from_ms, to_ms);
            let trouble = self
                .crashes
                .iter()
                .any(|crash| at >= *crash && at < crash + TROUBLE_MS);
            let draft = self.trace(trouble);
            let duration_ms = (draft.duration / NS_PER_MS) as i64 + 1;
            let start_ms = at.min(to_ms - 1 - duration_ms);
            if start_ms < from_ms {
                continue;
            }
            self.place(draft, start_ms, &mut spans, &mut lines);
        }
        lines.sort_by_key(|line| line.ms);
        let mut bulk = String::new();
        for line in &lines {
            bulk.push_str(&json!({"index": {"_index": index_name(line.ms)}}).to_string());
            bulk.push('\n');
            bulk.push_str(&self.document(line).to_string());
            bulk.push('\n');
        }
        let span_count = spans.values().map(Vec::len).sum();
        let resource_spans = spans
            .into_iter()
            .map(|(pod, spans)| self.resource_spans(pod, spans))
            .collect();
        Batch {
            bulk,
            traces: ExportTraceServiceRequest { resource_spans },
            log_records: lines.len(),
            spans: span_count,
        }
    }

    /// The index of a random pod of deployment `app`.
    fn pick(&mut self, app: &str) -> usize {
        let candidates: Vec<usize> = (0..self.pods.len())
            .filter(|idx| self.pods[*idx].app == app)
            .collect();
        let choice = self.rng.below(candidates.len() as u64) as usize;
        candidates.get(choice).copied().unwrap_or_default()
    }

    /// `payments/worker`'s crash loop: the lines of every crash up to `to_ms` (and those
    /// left over from the previous window) that fall in the window.
    fn worker(&mut self, from_ms: i64, to_ms: i64) -> Vec<LogLine> {
        let mut next = match self.next_crash_ms {
            // After a long gap the loop picks up where the window starts.
            Some(next) if next >= from_ms - 120_000 => next,
            _ => from_ms + self.rng.time(5_000, 35_000),
        };
        while next < to_ms {
            self.crash(next);
            self.crashes.push(next);
            next += self.rng.time(30_000, 60_000);
        }
        self.next_crash_ms = Some(next);
        self.crashes.retain(|crash| crash + TROUBLE_MS > from_ms);
        let (now, later): (Vec<LogLine>, Vec<LogLine>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|line| line.ms < to_ms);
        self.pending = later;
        now.into_iter().filter(|line| line.ms >= from_ms).collect()
    }

    /// One start-fail-die cycle of the worker, starting at `at`, into `pending`.
    fn crash(&mut self, at: i64) {
        let pod = self.pick("worker");
        let version = self.pods[pod].version;
        let mut t = at;
        let mut line = |rng: &mut Rng,
                        step: (i64, i64),
                        level: &'static str,
                        msg: &str,
                        fields: Vec<(&'static str, Value)>| {
            t += rng.time(step.0, step.1);
            LogLine {
                ms: t,
                pod,
                stderr: level == "error",
                level,
                text: json_line(level, t, msg, &fields, None),
                trace_id: String::new(),
                span_id: String::new(),
            }
        };
        let mut lines = vec![
            line(
                &mut self.rng,
                (0, 1),
                "info",
                "starting payments-worker",
                vec![("version", json!(version))],
            ),
            line(
                &mut self.rng,
                (150, 400),
                "info",
                "connecting to ledger database",
                vec![
                    ("host", json!(format!("{DB_HOST}:5432"))),
                    ("database", json!("ledger")),
                ],
            ),
        ];
        let oom = self.rng.chance(0.35);
        let (fatal_at, fatal) = if oom {
            lines.push(line(
                &mut self.rng,
                (80, 200),
                "info",
                "connected to ledger database",
                vec![],
            ));
            let pending = 150_000 + self.rng.below(60_000);
            lines.push(line(
                &mut self.rng,
                (400, 900),
                "info",
                "loading unsettled payments",
                vec![("pending", json!(pending))],
            ));
            for rss in [448, 497, 509] {
                lines.push(line(
                    &mut self.rng,
                    (700, 1500),
                    "error",
                    "memory limit nearly reached, cannot shed settlement batch",
                    vec![
                        ("rss_mib", json!(rss)),
                        ("limit_mib", json!(512)),
                        ("pending", json!(pending)),
                    ],
                ));
            }
            (
                self.rng.time(300, 800),
                "fatal error: runtime: out of memory\n\n\
                 runtime stack:\n\
                 runtime.throw({0x9c1f3e?, 0x2000?})\n\
                 \t/usr/local/go/src/runtime/panic.go:1047 +0x5d fp=0x7ffc6b3e1f08 sp=0x7ffc6b3e1ed8 pc=0x43a19d\n\
                 runtime.sysMapOS(0xc020000000, 0x4000000?)\n\
                 \t/usr/local/go/src/runtime/mem_linux.go:187 +0x11b fp=0x7ffc6b3e1f50 sp=0x7ffc6b3e1f08 pc=0x41a03b\n\n\
                 goroutine 23 [running]:\n\
                 ledger/internal/settle.(*Settler).loadBatch(0xc0001a2000, {0xa4c2d8, 0xc0000b8000})\n\
                 \t/src/internal/settle/batch.go:87 +0x3f1\n\
                 ledger/internal/settle.(*Settler).Run(0xc0001a2000, {0xa4c2d8, 0xc0000b8000})\n\
                 \t/src/internal/settle/settler.go:54 +0x1c5\n\
                 main.main()\n\
                 \t/src/cmd/worker/main.go:61 +0x2e9"
                    .to_string(),
            )
        } else {
            for (attempt, backoff) in [(1, "1s"), (2, "2s"), (3, "4s")] {
                lines.push(line(
                    &mut self.rng,
                    (800, 2200),
                    "error",
                    "ledger db connect failed, retrying",
                    vec![
                        ("attempt", json!(attempt)),
                        ("backoff", json!(backoff)),
                        ("error", json!(PAY.failure)),
                    ],
                ));
            }
            (
                self.rng.time(100, 400),
                format!(
                    "panic: ledger db unreachable after 3 attempts: {}\n\n\
                     goroutine 1 [running]:\n\
                     main.mustConnect({{0xa4c2d8, 0xc0000b8000}}, {{0xc00002a0f0, 0x3c}})\n\
                     \t/src/cmd/worker/main.go:112 +0x2a5\n\
                     main.main()\n\
                     \t/src/cmd/worker/main.go:48 +0x1c9",
                    PAY.failure
                ),
            )
        };
        let last = lines.last().map_or(at, |line| line.ms);
        lines.push(LogLine {
            ms: last + fatal_at,
            pod,
            stderr: true,
            level: "error",
            text: fatal,
            trace_id: String::new(),
            span_id: String::new(),
        });
        self.pending.extend(lines);
    }

    /// Lines no request caused: probes, housekeeping, Prometheus' own logs.
    fn background(&mut self, from_ms: i64, to_ms: i64, lines: &mut Vec<LogLine>) {
        let seconds = (to_ms - from_ms) as f64 / 1000.0;
        for _ in 0..self.rng.poisson(BACKGROUND_RATE * seconds) {
            let ms = self.rng.time(from_ms, to_ms);
            let roll = self.rng.unit();
            let (app, level, text) = if roll < 0.30 {
                let app = ["frontend", "cart", "api"][self.rng.below(3) as usize];
                let fields = [
                    ("method", json!("GET")),
                    ("path", json!("/healthz")),
                    ("status", json!(200)),
                    ("user_agent", json!("kube-probe/1.30")),
                ];
                (
                    app,
                    "info",
                    json_line("info", ms, "GET /healthz 200", &fields, None),
                )
            } else if roll < 0.45 {
                let rss = 950 + self.rng.below(60);
                let fields = [("rss_mib", json!(rss)), ("limit_mib", json!(1024))];
                let msg = "memory usage above 90% of limit, shrinking cart cache";
                ("cart", "warn", json_line("warn", ms, msg, &fields, None))
            } else if roll < 0.55 {
                let fields = [
                    ("hits", json!(800 + self.rng.below(400))),
                    ("misses", json!(20 + self.rng.below(80))),
                ];
                (
                    "cart",
                    "info",
                    json_line("info", ms, "cart cache stats", &fields, None),
                )
            } else if roll < 0.65 {
                let fields = [
                    ("provider", json!("stripe")),
                    ("expires_in", json!("3600s")),
                ];
                let msg = "refreshed payment provider token";
                ("api", "info", json_line("info", ms, msg, &fields, None))
            } else if roll < 0.72 {
                let fields = [("expired", json!(20 + self.rng.below(200)))];
                let msg = "session store: evicted expired sessions";
                (
                    "frontend",
                    "info",
                    json_line("info", ms, msg, &fields, None),
                )
            } else if roll < 0.88 {
                let text = format!(
                    "ts={} caller=head.go:1293 level=info component=tsdb msg=\"Head GC completed\" caller=truncateMemory duration={}.{:03}ms",
                    rfc3339(ms),
                    8 + self.rng.below(40),
                    self.rng.below(1000)
                );
                ("prometheus", "info", text)
            } else {
                let text = format!(
                    "ts={} caller=scrape.go:1777 level=warn component=\"scrape manager\" scrape_pool=kubernetes-pods target=http://10.244.{}.{}:9100/metrics msg=\"Error on ingesting samples that are too old or are too far into the future\" num_dropped={}",
                    rfc3339(ms),
                    self.rng.below(3),
                    10 + self.rng.below(200),
                    1 + self.rng.below(40)
                );
                ("prometheus", "warn", text)
            };
            let pod = self.pick(app);
            lines.push(LogLine {
                ms,
                pod,
                stderr: app == "prometheus",
                level,
                text,
                trace_id: String::new(),
                span_id: String::new(),
            });
        }
    }

    /// One request through frontend → cart (→ api), timed from 0.
    fn trace(&mut self, trouble: bool) -> TraceDraft {
        let checkout = self.rng.chance(0.3);
        let fault = if self.rng.chance(0.015) {
            if checkout && self.rng.chance(0.5) {
                Fault::Ledger
            } else {
                Fault::Cart
            }
        } else if checkout && trouble && self.rng.chance(0.25) {
            Fault::Ledger
        } else {
            Fault::None
        };
        let queries = if checkout { 3 } else { 1 };
        let slow_query = self
            .rng
            .chance(0.05)
            .then(|| self.rng.below(queries) as usize);
        let mut draft = TraceDraft {
            id: self.rng.id(),
            spans: Vec::new(),
            logs: Vec::new(),
            queries: 0,
            slow_query,
            duration: 0,
        };
        let pod = self.pick("frontend");
        let root = self.rng.id();
        let mut t = self.rng.micros(500, 2000);
        let (end, mut ok) = self.call(&mut draft, pod, root, &CART, t, fault == Fault::Cart);
        t = end;
        if checkout && ok {
            t += self.rng.micros(100, 500);
            let (end, paid) = self.call(&mut draft, pod, root, &PAY, t, fault == Fault::Ledger);
            t = end;
            ok = paid;
        }
        let end = t + self.rng.micros(1000, 6000);
        let route = if checkout { "/checkout" } else { "/cart" };
        let code = if ok { 200 } else { 500 };
        let upstream = if checkout && fault == Fault::Ledger {
            "api"
        } else {
            "cart"
        };
        let error = (!ok).then(|| format!("upstream {upstream} returned 500"));
        let mut fields = vec![
            ("method", json!("GET")),
            ("path", json!(route)),
            ("status", json!(code)),
            ("duration_ms", json!(millis(end))),
        ];
        if let Some(error) = &error {
            fields.push(("error", json!(error)));
        }
        draft.logs.push(LogDraft {
            at: end - NS_PER_US * 40,
            pod,
            span: root,
            level: if ok { "info" } else { "error" },
            msg: format!("GET {route} {code}"),
            fields,
        });
        draft.spans.push(SpanDraft {
            pod,
            id: root,
            parent: None,
            name: format!("GET {route}"),
            kind: span::SpanKind::Server,
            start: 0,
            end,
            attributes: vec![
                text("http.request.method", "GET"),
                text("http.route", route),
                text("url.path", route),
                text("url.scheme", "http"),
                int("http.response.status_code", code),
                text(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                ),
            ],
            error,
        });
        draft.duration = end;
        draft
    }

    /// A CLIENT span in `pod` calling `endpoint`, and what the callee does; the end of
    /// the client span and whether the call succeeded.
    fn call(
        &mut self,
        draft: &mut TraceDraft,
        pod: usize,
        parent: [u8; 8],
        endpoint: &Endpoint,
        start: u64,
        fail: bool,
    ) -> (u64, bool) {
        let id = self.rng.id();
        let served = start + self.rng.micros(300, 900);
        let server_end = self.serve(draft, endpoint, id, served, fail);
        let end = server_end + self.rng.micros(300, 900);
        let code = if fail { 500 } else { 200 };
        draft.spans.push(SpanDraft {
            pod,
            id,
            parent: Some(parent),
            name: format!("{} {}", endpoint.method, endpoint.route),
            kind: span::SpanKind::Client,
            start,
            end,
            attributes: vec![
                text("http.request.method", endpoint.method),
                text(
                    "url.full",
                    &format!("http://{}:8080{}", endpoint.host, endpoint.route),
                ),
                text("server.address", endpoint.host),
                int("server.port", 8080),
                int("http.response.status_code", code),
            ],
            error: fail.then(|| "500 Internal Server Error".to_string()),
        });
        (end, !fail)
    }

    /// The SERVER span of `endpoint` (in one of its pods) with its queries; its end.
    fn serve(
        &mut self,
        draft: &mut TraceDraft,
        endpoint: &Endpoint,
        parent: [u8; 8],
        start: u64,
        fail: bool,
    ) -> u64 {
        let pod = self.pick(endpoint.app);
        let id = self.rng.id();
        let mut t = start + self.rng.micros(100, 400);
        for (n, query) in endpoint.queries.iter().enumerate() {
            let query_id = self.rng.id();
            let slow = draft.slow_query == Some(draft.queries);
            draft.queries += 1;
            let fails = fail && n + 1 == endpoint.queries.len();
            let duration = if fails && endpoint.app == "cart" {
                // The statement timeout.
                self.rng.millis(500, 520)
            } else if fails {
                self.rng.micros(800, 3000)
            } else if slow {
                self.rng.millis(300, 1500)
            } else {
                self.rng.micros(800, 6000)
            };
            draft.spans.push(SpanDraft {
                pod,
                id: query_id,
                parent: Some(id),
                name: query.name.to_string(),
                kind: span::SpanKind::Client,
                start: t,
                end: t + duration,
                attributes: vec![
                    text("db.system", "postgresql"),
                    text("db.name", query.database),
                    text("db.statement", query.statement),
                    text("server.address", DB_HOST),
                    int("server.port", 5432),
                ],
                error: fails.then(|| endpoint.failure.to_string()),
            });
            if slow && !fails {
                draft.logs.push(LogDraft {
                    at: t + duration - NS_PER_US * 10,
                    pod,
                    span: query_id,
                    level: "warn",
                    msg: "slow query".into(),
                    fields: vec![
                        ("query", json!(query.name)),
                        ("database", json!(query.database)),
                        ("duration_ms", json!(millis(duration))),
                    ],
                });
            }
            t += duration + self.rng.micros(50, 300);
            if fails {
                break;
            }
        }
        let end = t + self.rng.micros(300, 2000);
        let code = if fail { 500 } else { 200 };
        let mut fields = vec![
            ("method", json!(endpoint.method)),
            ("path", json!(endpoint.route)),
            ("status", json!(code)),
            ("duration_ms", json!(millis(end - start))),
        ];
        if fail {
            fields.push(("error", json!(endpoint.failure)));
        } else if endpoint.app == "api" {
            fields.push((
                "order_id",
                json!(format!("ord_{:08x}", self.rng.below(1 << 32))),
            ));
            fields.push(("amount_cents", json!(500 + self.rng.below(20_000))));
            fields.push(("provider", json!("stripe")));
        } else {
            fields.push(("items", json!(1 + self.rng.below(6))));
        }
        draft.logs.push(LogDraft {
            at: end - NS_PER_US * 30,
            pod,
            span: id,
            level: if fail { "error" } else { "info" },
            msg: format!("{} {} {code}", endpoint.method, endpoint.route),
            fields,
        });
        draft.spans.push(SpanDraft {
            pod,
            id,
            parent: Some(parent),
            name: format!("{} {}", endpoint.method, endpoint.route),
            kind: span::SpanKind::Server,
            start,
            end,
            attributes: vec![
                text("http.request.method", endpoint.method),
                text("http.route", endpoint.route),
                text("url.path", endpoint.route),
                text("url.scheme", "http"),
                int("http.response.status_code", code),
            ],
            error: fail.then(|| {
                format!(
                    "{} {} failed: {}",
                    endpoint.method, endpoint.route, endpoint.failure
                )
            }),
        });
        end
    }

    /// Places a trace at `start_ms` (plus a sub-millisecond offset): its spans by pod,
    /// its log lines among the window's.
    fn place(
        &mut self,
        draft: TraceDraft,
        start_ms: i64,
        spans: &mut BTreeMap<usize, Vec<Span>>,
        lines: &mut Vec<LogLine>,
    ) {
        let base = u64::try_from(start_ms).unwrap_or(0) * NS_PER_MS + self.rng.below(NS_PER_MS);
        let trace_id = hex(&draft.id);
        for log in draft.logs {
            let ms = ((base + log.at) / NS_PER_MS) as i64;
            let span_id = hex(&log.span);
            lines.push(LogLine {
                ms,
                pod: log.pod,
                stderr: log.level == "error",
                level: log.level,
                text: json_line(
                    log.level,
                    ms,
                    &log.msg,
                    &log.fields,
                    Some((&trace_id, &span_id)),
                ),
                trace_id: trace_id.clone(),
                span_id,
            });
        }
        for draft_span in draft.spans {
            let end = base + draft_span.end;
            let (status, events) = match draft_span.error {
                Some(message) => (
                    Status {
                        code: status::StatusCode::Error as i32,
                        message: message.clone(),
                    },
                    vec![span::Event {
                        time_unix_nano: end.saturating_sub(NS_PER_US * 10),
                        name: "exception".into(),
                        attributes: vec![
                            text("exception.type", "error"),
                            text("exception.message", &message),
                        ],
                        ..Default::default()
                    }],
                ),
                None => (Status::default(), Vec::new()),
            };
            spans.entry(draft_span.pod).or_default().push(Span {
                trace_id: draft.id.to_vec(),
                span_id: draft_span.id.to_vec(),
                parent_span_id: draft_span.parent.map(|p| p.to_vec()).unwrap_or_default(),
                flags: 0x101,
                name: draft_span.name,
                kind: draft_span.kind as i32,
                start_time_unix_nano: base + draft_span.start,
                end_time_unix_nano: end,
                attributes: draft_span.attributes,
                events,
                status: Some(status),
                ..Default::default()
            });
        }
    }

    fn resource_spans(&self, pod: usize, spans: Vec<Span>) -> ResourceSpans {
        let attributes = self
            .pods
            .get(pod)
            .map(|pod| {
                vec![
                    text("service.name", pod.app),
                    text("service.namespace", pod.namespace),
                    text("service.version", pod.version),
                    text("service.instance.id", &pod.name),
                    text("k8s.namespace.name", pod.namespace),
                    text("k8s.deployment.name", pod.app),
                    text("k8s.pod.name", &pod.name),
                    text("k8s.node.name", pod.node),
                    text("telemetry.sdk.name", "opentelemetry"),
                    text("telemetry.sdk.language", "go"),
                ]
            })
            .unwrap_or_default();
        ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".into(),
                    version: "0.61.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The document Fluentd's `kubernetes_metadata` filter makes of a container line.
    fn document(&self, line: &LogLine) -> Value {
        let pod = self.pods.get(line.pod);
        let mut document = json!({
            "@timestamp": rfc3339(line.ms),
            "log": line.text,
            "stream": if line.stderr { "stderr" } else { "stdout" },
            "level": line.level,
            "kubernetes": {
                "namespace_name": pod.map_or("", |p| p.namespace),
                "pod_name": pod.map_or("", |p| p.name.as_str()),
                "container_name": pod.map_or("", |p| p.app),
                "container_image": pod.map_or(String::new(), |p| {
                    format!("registry.example.com/{}/{}:{}", p.namespace, p.app, p.version)
                }),
                "host": pod.map_or("", |p| p.node),
                "labels": {"app": pod.map_or("", |p| p.app)},
            },
        });
        if !line.trace_id.is_empty() {
            document["trace_id"] = json!(line.trace_id);
            document["span_id"] = json!(line.span_id);
        }
        document
    }
}

/// POSTs the batch to `base` (e.g. "http://127.0.0.1:9190"): `/_bulk` with
/// `Content-Type: application/x-ndjson`, then `/v1/traces`; logs a `tracing::warn!` on
/// failure and returns whether both were accepted (the `_bulk` response's `errors` must
/// be false, the OTLP response must reject no span). Empty halves are not sent.
pub async fn ship(client: &reqwest::Client, base: &str, batch: &Batch) -> bool {
    let base = base.trim_end_matches('/');
    let logs = batch.log_records == 0 || ship_logs(client, base, &batch.bulk).await;
    let traces = batch.spans == 0 || ship_traces(client, base, &batch.traces).await;
    logs && traces
}

async fn ship_logs(client: &reqwest::Client, base: &str, bulk: &str) -> bool {
    let response = client
        .post(format!("{base}/_bulk"))
        .header("Content-Type", "application/x-ndjson")
        .body(bulk.to_string())
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            warn!(error = %err, "demo logs failed");
            return false;
        }
    };
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        warn!(%status, body = %String::from_utf8_lossy(&body), "demo logs rejected");
        return false;
    }
    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
    if answer.get("errors").and_then(Value::as_bool) == Some(false) {
        return true;
    }
    let first_error = answer
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|item| item.as_object()?.values().next()?.get("error").cloned())
        .unwrap_or(Value::Null);
    warn!(error = %first_error, "demo logs partly rejected");
    false
}

async fn ship_traces(
    client: &reqwest::Client,
    base: &str,
    traces: &ExportTraceServiceRequest,
) -> bool {
    let response = client
        .post(format!("{base}/v1/traces"))
        .header("Content-Type", "application/x-protobuf")
        .body(traces.encode_to_vec())
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            warn!(error = %err, "demo traces failed");
            return false;
        }
    };
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        warn!(%status, body = %String::from_utf8_lossy(&body), "demo traces rejected");
        return false;
    }
    match ExportTraceServiceResponse::decode(body.as_ref())
        .ok()
        .and_then(|answer| answer.partial_success)
    {
        Some(partial) if partial.rejected_spans > 0 => {
            warn!(
                rejected = partial.rejected_spans,
                reason = %partial.error_message,
                "demo traces partly rejected"
            );
            false
        }
        _ => true,
    }
}

/// A Go (zap-style) JSON log line: level, time, message, fields, then the trace context.
fn json_line(
    level: &str,
    ms: i64,
    msg: &str,
    fields: &[(&'static str, Value)],
    trace: Option<(&str, &str)>,
) -> String {
    let mut out = String::from("{");
    let mut push = |key: &str, value: Value| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::from(key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    };
    push("level", json!(level));
    push("ts", json!(rfc3339(ms)));
    push("msg", json!(msg));
    for (key, value) in fields {
        push(key, value.clone());
    }
    if let Some((trace_id, span_id)) = trace {
        push("trace_id", json!(trace_id));
        push("span_id", json!(span_id));
    }
    out.push('}');
    out
}

/// `2026-11-23T10:00:00.123Z`.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `k8s-2026.11.23`: Fluentd's `logstash_format` index of the record's (UTC) day.
fn index_name(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.format("k8s-%Y.%m.%d").to_string())
        .unwrap_or_else(|| "k8s".into())
}

/// Nanoseconds as milliseconds with one decimal.
fn millis(ns: u64) -> f64 {
    (ns / 100_000) as f64 / 10.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use vigil_connectors::elastic::parse_bulk;
    use vigil_connectors::otlp::spans_of;
    use vigil_storage::{LogRecord, SpanRecord};

    use super::*;

    /// 2026-11-23T10:00:00Z.
    const T0: i64 = 1_795_428_000_000;

    fn records(batch: &Batch) -> Vec<LogRecord> {
        let items = parse_bulk(batch.bulk.as_bytes(), None, 0).unwrap();
        assert_eq!(items.len(), batch.log_records);
        items
            .into_iter()
            .map(|item| {
                assert_eq!(item.action, "index");
                item.outcome.unwrap()
            })
            .collect()
    }

    fn spans(batch: &Batch) -> Vec<SpanRecord> {
        let (spans, rejected, reason) = spans_of(batch.traces.clone());
        assert_eq!(rejected, 0, "{reason}");
        assert_eq!(spans.len(), batch.spans);
        spans
    }

    #[test]
    fn bulk_documents_carry_kubernetes_labels_and_trace_ids() {
        let batch = Telemetry::new(7).between(T0, T0 + 60_000);
        let records = records(&batch);
        assert!(records.len() > 100, "{}", records.len());
        for record in &records {
            assert!((T0..T0 + 60_000).contains(&record.timestamp_ms));
            assert_eq!(record.stream["index"], "k8s");
            for label in ["namespace", "pod", "container", "app"] {
                assert!(!record.stream[label].is_empty(), "{label}: {record:?}");
            }
            assert_eq!(record.stream["container"], record.stream["app"]);
            assert!(record.attributes["kubernetes.host"].starts_with("node-"));
            assert!(["stdout", "stderr"].contains(&record.attributes["stream"].as_str()));
            assert!(["info", "warn", "error"].contains(&record.severity.as_str()));
            assert!(!record.body.is_empty());
        }
        let pods: BTreeSet<&str> = records.iter().map(|r| r.stream["pod"].as_str()).collect();
        assert!(pods.contains("frontend-7d9f8c6b5-x2k4p"), "{pods:?}");
        assert!(pods.contains("prometheus-0") || pods.contains("prometheus-1"));
        let traced: Vec<&LogRecord> = records.iter().filter(|r| !r.trace_id.is_empty()).collect();
        assert!(traced.len() > 50, "{}", traced.len());
        for record in traced {
            assert_eq!(record.trace_id.len(), 32);
            assert_eq!(record.span_id.len(), 16);
            // The container's own JSON line carries the same ids.
            let line: Value = serde_json::from_str(&record.body).unwrap();
            assert_eq!(line["trace_id"], record.trace_id.as_str());
            assert_eq!(line["span_id"], record.span_id.as_str());
            assert_eq!(line["level"], record.severity.as_str());
        }
    }

    #[test]
    fn spans_form_trees_within_the_window() {
        let mut telemetry = Telemetry::new(11);
        let mut traces = 0;
        let mut failed = 0;
        let mut slow = 0;
        for step in 0..120 {
            let from = T0 + step * 5_000;
            let batch = telemetry.between(from, from + 5_000);
            let mut by_trace: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
            let spans = spans(&batch);
            for span in &spans {
                assert!(
                    span.start_ns >= from * 1_000_000 && span.end_ns < (from + 5_000) * 1_000_000
                );
                assert!(span.start_ns < span.end_ns);
                assert_eq!(span.resource["service.name"], span.service);
                assert!(span.resource["k8s.pod.name"].starts_with(&format!("{}-", span.service)));
                assert!(
                    span.attributes.contains_key("http.request.method")
                        || span.attributes["db.system"] == "postgresql"
                );
                by_trace.entry(&span.trace_id).or_default().push(span);
            }
            for (trace, members) in &by_trace {
                let ids: BTreeMap<&str, &SpanRecord> =
                    members.iter().map(|s| (s.span_id.as_str(), *s)).collect();
                assert_eq!(ids.len(), members.len(), "duplicate span ids in {trace}");
                let roots: Vec<_> = members
                    .iter()
                    .filter(|s| s.parent_span_id.is_empty())
                    .collect();
                assert_eq!(roots.len(), 1, "{trace}");
                assert_eq!(roots[0].service, "frontend");
                assert_eq!(roots[0].kind, "server");
                for span in members.iter().filter(|s| !s.parent_span_id.is_empty()) {
                    let parent = ids[span.parent_span_id.as_str()];
                    assert!(parent.start_ns <= span.start_ns && span.end_ns <= parent.end_ns);
                }
                if roots[0].status == "error" {
                    failed += 1;
                    assert_eq!(roots[0].attributes["http.response.status_code"], "500");
                }
                let root_ms = (roots[0].end_ns - roots[0].start_ns) / 1_000_000;
                if root_ms >= 300 {
                    slow += 1;
                }
            }
            traces += by_trace.len();
        }
        // Ten minutes: ~1400 traces, ~3% failed, ~5% slow.
        assert!((1000..2000).contains(&traces), "{traces}");
        let ratio = |n: usize| n as f64 / traces as f64;
        assert!((0.01..0.08).contains(&ratio(failed)), "{failed}/{traces}");
        assert!((0.02..0.10).contains(&ratio(slow)), "{slow}/{traces}");
    }

    #[test]
    fn worker_error_burst_within_two_minutes() {
        for seed in 0..20 {
            let mut telemetry = Telemetry::new(seed);
            let mut seen = Vec::new();
            for step in 0..24 {
                let from = T0 + step * 5_000;
                seen.extend(records(&telemetry.between(from, from + 5_000)));
            }
            let worker: Vec<&LogRecord> = seen
                .iter()
                .filter(|r| r.stream["pod"] == "worker-7d9f8c6b5-x2k4p" && r.severity == "error")
                .collect();
            assert!(worker.len() >= 4, "seed {seed}: {}", worker.len());
            assert!(
                worker.iter().any(|r| r.body.contains("\ngoroutine ")
                    && r.attributes["stream"] == "stderr"
                    && (r.body.contains("connection refused") || r.body.contains("out of memory"))),
                "seed {seed}"
            );
            assert!(seen
                .iter()
                .all(|r| (T0..T0 + 120_000).contains(&r.timestamp_ms)));
        }
    }

    #[test]
    fn log_trace_ids_join_spans_of_the_same_batch() {
        let mut telemetry = Telemetry::new(3);
        let mut joined = 0;
        for step in 0..60 {
            let from = T0 + step * 5_000;
            let batch = telemetry.between(from, from + 5_000);
            let spans = spans(&batch);
            let by_id: BTreeMap<(&str, &str), &SpanRecord> = spans
                .iter()
                .map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), s))
                .collect();
            for record in records(&batch) {
                if record.trace_id.is_empty() {
                    continue;
                }
                let span = by_id
                    .get(&(record.trace_id.as_str(), record.span_id.as_str()))
                    .unwrap_or_else(|| panic!("no span for {record:?}"));
                // Logged by the pod that ran the span, while it ran.
                assert_eq!(span.resource["k8s.pod.name"], record.stream["pod"]);
                assert!(record.timestamp_ms * 1_000_000 <= span.end_ns + 1_000_000);
                assert!(record.timestamp_ms * 1_000_000 >= span.start_ns - 1_000_000);
                joined += 1;
            }
        }
        assert!(joined > 1000, "{joined}");
    }

    #[test]
    fn volumes_and_determinism() {
        let mut telemetry = Telemetry::new(1);
        let mut again = Telemetry::new(1);
        let (mut logs, mut spans, mut traces) = (0, 0, 0);
        let (mut min_logs, mut max_logs) = (usize::MAX, 0);
        let (mut min_traces, mut max_traces) = (usize::MAX, 0);
        for step in 0..720 {
            let from = T0 + step * 5_000;
            let batch = telemetry.between(from, from + 5_000);
            let same = again.between(from, from + 5_000);
            assert_eq!(batch.bulk, same.bulk);
            assert_eq!(batch.traces, same.traces);
            let n: BTreeSet<String> = spans_of(batch.traces.clone())
                .0
                .into_iter()
                .map(|s| s.trace_id)
                .collect();
            logs += batch.log_records;
            spans += batch.spans;
            traces += n.len();
            min_logs = min_logs.min(batch.log_records);
            max_logs = max_logs.max(batch.log_records);
            min_traces = min_traces.min(n.len());
            max_traces = max_traces.max(n.len());
        }
        println!(
            "per 5s over an hour: {:.1} traces ({min_traces}–{max_traces}), {:.1} spans, {:.1} log lines ({min_logs}–{max_logs}); hour: {logs} log records, {spans} spans",
            traces as f64 / 720.0,
            spans as f64 / 720.0,
            logs as f64 / 720.0,
        );
        assert!((5.0..20.0).contains(&(traces as f64 / 720.0)));
        assert!((20.0..60.0).contains(&(logs as f64 / 720.0)));
        assert!((10_000..40_000).contains(&logs), "{logs}");
        // One long window gives the same kind of volume.
        let batch = Telemetry::new(2).between(T0, T0 + 3_600_000);
        assert!(
            (10_000..40_000).contains(&batch.log_records),
            "{}",
            batch.log_records
        );
        assert!(Telemetry::new(2).between(T0, T0).bulk.is_empty());
    }
}

//! Helpers: a Vigil process on a free port, remote_write and SQL clients.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_storage::{LabelSet, SampleBatch};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A `vigil serve` child process; killed (SIGKILL) when dropped.
pub struct Vigil {
    pub child: Child,
    pub url: String,
    /// host:port of OTLP/gRPC.
    pub grpc: String,
    pub data_dir: PathBuf,
    config: Option<PathBuf>,
}

impl Vigil {
    /// Starts `vigil serve` on a free port with `config_yaml` (if any) and waits until ready.
    pub fn start(data_dir: &Path, config_yaml: Option<&str>) -> Vigil {
        let config = config_yaml.map(|yaml| {
            let path = data_dir.with_extension("yaml");
            std::fs::write(&path, yaml).expect("write config");
            path
        });
        Self::start_with(data_dir, config)
    }

    /// Starts `vigil demo` (the simulated cluster) on a free port.
    pub fn demo(data_dir: &Path) -> Vigil {
        Self::spawn("demo", data_dir, None)
    }

    fn start_with(data_dir: &Path, config: Option<PathBuf>) -> Vigil {
        Self::spawn("serve", data_dir, config)
    }

    fn spawn(subcommand: &str, data_dir: &Path, config: Option<PathBuf>) -> Vigil {
        let port = free_port();
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
        command
            .arg(subcommand)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--otlp.grpc-listen")
            .arg(&grpc)
            .env("VIGIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(config) = &config {
            command.arg("--config").arg(config);
        }
        let child = command.spawn().expect("spawn vigil");
        let vigil = Vigil {
            child,
            url: format!("http://127.0.0.1:{port}"),
            grpc,
            data_dir: data_dir.to_path_buf(),
            config,
        };
        vigil.wait_ready();
        vigil
    }

    /// Starts `vigil serve` on a free port with extra command-line arguments; `url` uses
    /// `scheme` (`https` when the web config has TLS). Waits until `ready` holds (the
    /// plain-HTTP readiness probe cannot pass TLS or credentials).
    pub fn start_args(
        data_dir: &Path,
        args: &[String],
        scheme: &str,
        ready: impl Fn(&Vigil) -> bool,
    ) -> Vigil {
        let port = free_port();
        let grpc = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--otlp.grpc-listen")
            .arg(&grpc)
            .args(args)
            .env("VIGIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vigil");
        let mut vigil = Vigil {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            grpc,
            data_dir: data_dir.to_path_buf(),
            config: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(&vigil) {
            if let Ok(Some(status)) = vigil.child.try_wait() {
                panic!("vigil exited with {status} before it was ready");
            }
            assert!(
                Instant::now() < deadline,
                "vigil at {} did not become ready",
                vigil.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        vigil
    }

    /// Kills the process (SIGKILL, no flush) and starts it again on the same data.
    pub fn kill_and_restart(mut self) -> Vigil {
        self.kill9();
        let config = self.config.take();
        let data_dir = self.data_dir.clone();
        drop(self);
        Self::start_with(&data_dir, config)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = blocking_get(&format!("{}/-/ready", self.url)) {
                if response.0 == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vigil at {} did not become ready", self.url);
    }

    /// Sends a remote_write request; returns (status, body).
    pub fn write(&self, batch: &SampleBatch) -> (u16, String) {
        self.write_raw(&vigil_connectors::remote_write::encode(batch))
    }

    pub fn write_raw(&self, body: &[u8]) -> (u16, String) {
        let response = ureq_post(
            &format!("{}/api/v1/write", self.url),
            body,
            "application/x-protobuf",
        );
        response.expect("remote_write request")
    }

    /// Runs SQL, returns the `rows` array of the JSON result.
    pub fn sql(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.sql_raw(query, "json");
        assert_eq!(status, 200, "sql {query:?} failed: {body}");
        let value: Value = serde_json::from_str(&body).expect("json");
        value["data"]["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn sql_raw(&self, query: &str, format: &str) -> (u16, String) {
        let body =
            serde_urlencoded::to_string([("query", query), ("format", format)]).expect("encode");
        ureq_post(
            &format!("{}/api/v1/sql", self.url),
            body.as_bytes(),
            "application/x-www-form-urlencoded",
        )
        .expect("sql request")
    }

    /// Polls `query` until `accept` holds for its rows, or panics after `timeout`.
    pub fn wait_for_rows(
        &self,
        query: &str,
        timeout: Duration,
        accept: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.sql(query);
            if accept(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {query:?}; last rows: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn count(&self, query: &str) -> i64 {
        let rows = self.sql(query);
        rows.first()
            .and_then(|row| row.as_object())
            .and_then(|row| row.values().next())
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("no count in {rows:?}"))
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        self.kill9();
        if let Some(config) = &self.config {
            let _ = std::fs::remove_file(config);
        }
    }
}

/// A child process killed when dropped (peers like Prometheus and node_exporter).
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with its standard output piped; its lines arrive on the receiver as
/// it prints them (the `tail` commands). The process is killed with the `Peer`.
pub fn spawn_lines(command: &mut Command) -> (Peer, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    (Peer(child), lines_rx)
}

/// Minimal blocking HTTP over std, so tests need no async runtime of their own.
fn http(
    method: &str,
    url: &str,
    body: &[u8],
    content_type: &str,
    extra_headers: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    Ok((status, payload))
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

/// A plain-HTTP request with extra header lines (each ending in `\r\n`).
pub fn http_request(
    method: &str,
    url: &str,
    body: &[u8],
    content_type: &str,
    extra_headers: &str,
) -> std::io::Result<(u16, String)> {
    http(method, url, body, content_type, extra_headers)
}

pub fn blocking_get(url: &str) -> std::io::Result<(u16, String)> {
    http("GET", url, b"", "text/plain", "")
}

pub fn ureq_post(url: &str, body: &[u8], content_type: &str) -> std::io::Result<(u16, String)> {
    http("POST", url, body, content_type, "")
}

/// A remote_write request as Prometheus sends it (snappy protobuf with the protocol's
/// headers), to Prometheus' receiver or Vigil.
pub fn post_remote_write(url: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http(
        "POST",
        url,
        body,
        "application/x-protobuf",
        "Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n",
    )
}

/// A small deterministic PRNG (splitmix64) for the seeded randomized tests.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// A batch of `n_series` series × `n_samples` samples of metric `name`, one sample per
/// second from `start_ms`, value = series index * 1000 + sample index.
pub fn batch(name: &str, n_series: usize, n_samples: usize, start_ms: i64) -> SampleBatch {
    let mut batch = SampleBatch::default();
    for series_idx in 0..n_series {
        let instance = format!("host-{series_idx}");
        let idx = batch.push_series(
            LabelSet::from_pairs([
                ("__name__", name),
                ("job", "test"),
                ("instance", instance.as_str()),
            ])
            .expect("labels"),
        );
        for sample_idx in 0..n_samples {
            batch.push_sample(
                idx,
                start_ms + sample_idx as i64 * 1000,
                (series_idx * 1000 + sample_idx) as f64,
            );
        }
    }
    batch
}

/// Runs a Python script with `env`; panics with its stderr unless it succeeds. Returns
/// (stdout, stderr).
pub fn python(script: &str, env: &[(&str, &str)]) -> (String, String) {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Whether an external program is available; tests needing it fail loudly if not,
/// because `.ci/run` installs every peer.
pub fn require(program: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{program} is not installed: run `bash .ci/run` (it installs the test peers)");
}

/// `../shared` next to the checkout. Resolved at run time (cargo and nextest set
/// `CARGO_MANIFEST_DIR` for the test process), so a test binary built in another
/// checkout of the same target directory still finds this checkout's files.
pub fn shared_dir() -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    root.join("../shared")
}

/// Two counters `name{job="web", pod="a"|"b"}` rising 10/s and 20/s, one sample every
/// 10s over the last 10 minutes, written to `vigil`; returns the first sample's time.
pub fn write_web_counters(vigil: &Vigil, name: &str) -> i64 {
    let start = (now_ms() - 600_000) / 10_000 * 10_000;
    let mut batch = SampleBatch::default();
    for (pod, per_second) in [("a", 10.0), ("b", 20.0)] {
        let idx = batch.push_series(
            LabelSet::from_pairs([("__name__", name), ("job", "web"), ("pod", pod)])
                .expect("labels"),
        );
        for step in 0..=60 {
            batch.push_sample(idx, start + step * 10_000, per_second * 10.0 * step as f64);
        }
    }
    let (status, body) = vigil.write(&batch);
    assert_eq!(status, 204, "{body}");
    start
}

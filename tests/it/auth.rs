//! Hostile clients (issue 12): the web config (TLS, basic auth, bearer tokens, scopes) with
//! real clients (curl, Python requests), the Origin and Host checks, the header-read
//! timeout and the connection cap of the accept loop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::{batch, blocking_get, http_request, now_ms, require, Vigil};

const WRITER: (&str, &str) = ("writer", "writer-secret");
const READER: (&str, &str) = ("reader", "reader-secret");
const READ_TOKEN: &str = "read-token-0123456789";
const WRITE_TOKEN: &str = "write-token-9876543210";

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and a client
/// certificate signed by it, written as PEM files into `dir`.
struct Pki {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Vigil test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "vigil",
    );
    let (client_cert, client_key) = leaf(
        vec!["client.test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "client",
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        path
    };
    let ca = write("ca.pem", &ca_cert.pem());
    write("server.pem", &server_cert);
    write("server-key.pem", &server_key);
    Pki {
        ca,
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

/// A TLS server with basic-auth users, a read-only user, tokens and an allowed origin.
struct Secure {
    vigil: Vigil,
    pki: Pki,
    dir: TempDir,
}

impl Secure {
    fn start(tls_extra: &str, extra_args: &[&str]) -> Secure {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path());
        // A realistic cost: the verification cache keeps repeated requests cheap.
        let writer_hash = bcrypt::hash(WRITER.1, 10).expect("bcrypt");
        let reader_hash = bcrypt::hash(READER.1, 10).expect("bcrypt");
        std::fs::write(dir.path().join("write.token"), format!("{WRITE_TOKEN}\n"))
            .expect("token file");
        // Relative paths resolve against the web config's directory.
        let web = format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  min_version: TLS12\n{tls_extra}\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  {}: {writer_hash}\n  {}: {reader_hash}\n\
             read_only_users: [{}]\n\
             bearer_tokens:\n  - token: {READ_TOKEN}\n    scope: read\n  - token_file: write.token\n    scope: write\n\
             allowed_origins: ['https://grafana.example']\n",
            WRITER.0, READER.0, READER.0
        );
        let web_path = dir.path().join("web.yml");
        std::fs::write(&web_path, web).expect("web config");
        let mut args = vec![
            "--web.config.file".to_string(),
            web_path.display().to_string(),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let ca = pki.ca.clone();
        let client = (pki.client_cert.clone(), pki.client_key.clone());
        let vigil = Vigil::start_args(&dir.path().join("data"), &args, "https", move |v| {
            let mut ready = vec![
                "--cacert".to_string(),
                ca.display().to_string(),
                "-u".to_string(),
                format!("{}:{}", WRITER.0, WRITER.1),
            ];
            ready.extend([
                "--cert".to_string(),
                client.0.display().to_string(),
                "--key".to_string(),
                client.1.display().to_string(),
            ]);
            curl(&ready, &format!("{}/-/ready", v.url)).0 == 200
        });
        Secure { vigil, pki, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.vigil.url)
    }

    /// curl with our CA and `args`; (status, headers + body).
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let mut all = vec!["--cacert".to_string(), self.pki.ca.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        curl(&all, &self.url(path))
    }
}

/// Runs curl; returns (HTTP status, 0 if no response; response headers and body).
fn curl(args: &[String], url: &str) -> (u16, String) {
    let output = Command::new(require("curl"))
        .args(["-sS", "-i", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (text, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let text = format!("{text}{}", String::from_utf8_lossy(&output.stderr));
    (code.trim().parse().unwrap_or(0), text)
}

fn basic(user: (&str, &str)) -> String {
    format!("{}:{}", user.0, user.1)
}

/// A remote_write body as a file, for `curl --data-binary @file`.
fn remote_write_file(dir: &Path, name: &str, metric: &str) -> String {
    let body = vigil_connectors::remote_write::encode(&batch(metric, 1, 3, now_ms() - 5_000));
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write body");
    format!("@{}", path.display())
}

const WRITE_HEADERS: [&str; 6] = [
    "-H",
    "Content-Type: application/x-protobuf",
    "-H",
    "Content-Encoding: snappy",
    "-H",
    "X-Prometheus-Remote-Write-Version: 0.1.0",
];

#[test]
fn auth_tls_basic_auth_tokens_and_scopes() {
    let server = Secure::start("", &[]);
    let writer = basic(WRITER);
    let reader = basic(READER);
    let read_bearer = format!("Authorization: Bearer {READ_TOKEN}");
    let write_bearer = format!("Authorization: Bearer {WRITE_TOKEN}");

    // Correct credentials over verified TLS: 200, with the configured response header.
    for user in [&writer, &reader] {
        let (status, text) = server.curl(&["-u", user], "/api/v1/query?query=1");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"status\":\"success\""), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("x-frame-options: deny"),
            "{text}"
        );
    }
    let (status, text) = server.curl(&["-H", &read_bearer], "/api/v1/query?query=1");
    assert_eq!(status, 200, "{text}");

    // Wrong password, unknown user, no credentials, bad token: 401 as Prometheus answers.
    let wrong = format!("{}:not-the-password", WRITER.0);
    for args in [
        vec!["-u", wrong.as_str()],
        vec!["-u", "mallory:writer-secret"],
        vec![],
        vec!["-H", "Authorization: Bearer not-a-token"],
        vec!["-H", "Authorization: Basic !!!"],
    ] {
        let (status, text) = server.curl(&args, "/api/v1/query?query=1");
        assert_eq!(status, 401, "{args:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{text}"
        );
        assert!(text.contains("Unauthorized"), "{text}");
    }
    // Every endpoint needs credentials, health included (as in Prometheus).
    let (status, _) = server.curl(&[], "/-/healthy");
    assert_eq!(status, 401);

    // Read scope may not write: remote_write, reload.
    let body = remote_write_file(server.dir.path(), "denied.pb", "auth_denied_metric");
    for auth in [
        vec!["-u", reader.as_str()],
        vec!["-H", read_bearer.as_str()],
    ] {
        let mut args = auth.clone();
        args.extend(WRITE_HEADERS);
        args.extend(["--data-binary", body.as_str()]);
        let (status, text) = server.curl(&args, "/api/v1/write");
        assert_eq!(status, 403, "{auth:?}: {text}");
        let mut args = auth.clone();
        args.extend(["-X", "POST"]);
        let (status, text) = server.curl(&args, "/-/reload");
        assert_eq!(status, 403, "{auth:?}: {text}");
    }

    // Write scope: the user and the token read from token_file.
    for (auth, metric) in [
        (vec!["-u", writer.as_str()], "auth_written_metric"),
        (vec!["-H", write_bearer.as_str()], "auth_token_metric"),
    ] {
        let body = remote_write_file(server.dir.path(), &format!("{metric}.pb"), metric);
        let mut args = auth.clone();
        args.extend(WRITE_HEADERS);
        args.extend(["--data-binary", body.as_str()]);
        let (status, text) = server.curl(&args, "/api/v1/write");
        assert_eq!(status, 204, "{auth:?}: {text}");
    }
    // What was written is there; what was refused is not.
    for metric in ["auth_written_metric", "auth_token_metric"] {
        let (status, text) = server.curl(
            &["-u", &reader],
            &format!("/api/v1/query?query=count({metric})%20or%20vector(0)"),
        );
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"1\""), "{metric}: {text}");
    }
    let (_, text) = server.curl(
        &["-u", &reader],
        "/api/v1/query?query=count(auth_denied_metric)%20or%20vector(0)",
    );
    assert!(text.contains("\"0\""), "{text}");

    // An allowed origin passes; a foreign one does not, even with credentials.
    let (status, text) = server.curl(
        &["-u", &reader, "-H", "Origin: https://grafana.example"],
        "/api/v1/query?query=1",
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) = server.curl(
        &["-u", &reader, "-H", "Origin: https://evil.example"],
        "/api/v1/query?query=1",
    );
    assert_eq!(status, 403, "{text}");

    // The certificate is checked: without our CA curl refuses the server.
    let (status, text) = curl(
        &["-u".to_string(), writer.clone()],
        &server.url("/api/v1/query?query=1"),
    );
    assert_eq!(status, 0, "{text}");

    // Plain HTTP to the TLS port gets no API answer.
    let plain = server.vigil.url.replacen("https://", "http://", 1);
    match blocking_get(&format!("{plain}/api/v1/query?query=1")) {
        Ok((status, body)) => {
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
        }
        Err(err) => panic!("expected a 400, got {err}"),
    }

    // Python requests verifying with our CA; and failing without it.
    let script = r#"
import sys, requests
url, ca, user, password = sys.argv[1:5]
r = requests.get(url + "/api/v1/query", params={"query": "1+1"}, auth=(user, password), verify=ca, timeout=20)
print(r.status_code, r.json()["data"]["result"][1])
r = requests.get(url + "/api/v1/query", params={"query": "1"}, auth=(user, "wrong"), verify=ca, timeout=20)
print(r.status_code)
try:
    requests.get(url + "/api/v1/query", params={"query": "1"}, auth=(user, password), timeout=20)
    print("no error")
except requests.exceptions.SSLError:
    print("ssl error")
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&server.vigil.url)
        .arg(&server.pki.ca)
        .args([READER.0, READER.1])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["200 2", "401", "ssl error"],
        "{stdout}"
    );
}

#[test]
fn auth_mutual_tls_requires_a_client_certificate() {
    let server = Secure::start(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
        &[],
    );
    let reader = basic(READER);
    let cert = server.pki.client_cert.display().to_string();
    let key = server.pki.client_key.display().to_string();
    let (status, text) = server.curl(
        &["-u", &reader, "--cert", &cert, "--key", &key],
        "/api/v1/query?query=1",
    );
    assert_eq!(status, 200, "{text}");
    // No client certificate: the handshake fails, no HTTP answer.
    let (status, text) = server.curl(&["-u", &reader], "/api/v1/query?query=1");
    assert_eq!(status, 0, "{text}");
}

#[test]
fn auth_invalid_web_config_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, expected) in [
        (
            "typo.yml",
            "basic_auth_user:\n  a: b\n",
            "unknown field `basic_auth_user`",
        ),
        (
            "clientauth.yml",
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAnyClientCert\n",
            "not supported",
        ),
        (
            "missing.yml",
            "tls_server_config:\n  cert_file: nowhere.pem\n  key_file: k.pem\n",
            "nowhere.pem",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("VIGIL_OTLP_GRPC_LISTEN", "off")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--web.config.file")
            .arg(&path)
            .output()
            .expect("run vigil");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

/// Sends `request` as is on a new connection; returns the response head (status line and
/// headers) and whatever body arrived before the server closed or 5 s passed.
fn raw(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                // Stop at the end of the response: the connection may stay open (kept
                // alive, or a websocket after 101).
                let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length && !head.contains("transfer-encoding: chunked") {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn port_of(vigil: &Vigil) -> u16 {
    vigil
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in url")
}

#[test]
fn auth_origin_and_host_checks_without_a_web_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let port = port_of(&vigil);
    let sql = format!("{}/api/v1/sql", vigil.url);

    // SQL POSTed as text/plain from a foreign page: refused, with Prometheus' error shape.
    let (status, body) = http_request(
        "POST",
        &sql,
        b"SELECT 1 AS one",
        "text/plain",
        "Origin: http://evil.example\r\n",
    )
    .expect("request");
    assert_eq!(status, 403, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(error["status"], "error");
    assert_eq!(error["errorType"], "bad_data");
    assert_eq!(
        error["error"],
        "cross-origin request from http://evil.example refused"
    );

    // A cross-origin remote_write has no effect.
    let body = vigil_connectors::remote_write::encode(&batch("csrf_metric", 1, 2, now_ms()));
    let (status, text) = http_request(
        "POST",
        &format!("{}/api/v1/write", vigil.url),
        &body,
        "application/x-protobuf",
        "Origin: http://evil.example\r\n",
    )
    .expect("request");
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        vigil.count("SELECT count(*) AS n FROM metrics WHERE name = 'csrf_metric'"),
        0
    );
    let (status, text) = http_request(
        "POST",
        &format!("{}/-/reload", vigil.url),
        b"",
        "text/plain",
        "Origin: null\r\n",
    )
    .expect("request");
    assert_eq!(status, 403, "{text}");

    // Same origin (host:port of the request) is allowed, with or without a scheme match.
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let (status, body) = http_request(
            "POST",
            &sql,
            b"SELECT 1 AS one",
            "text/plain",
            &format!("Origin: {origin}\r\n"),
        )
        .expect("request");
        assert_eq!(status, 200, "{origin}: {body}");
    }
    // Another port of the same host is another origin.
    let (status, _) = http_request(
        "POST",
        &sql,
        b"SELECT 1 AS one",
        "text/plain",
        &format!("Origin: http://127.0.0.1:{}\r\n", port.wrapping_add(1)),
    )
    .expect("request");
    assert_eq!(status, 403);

    // Websocket upgrade of the alert stream: refused from a foreign origin, accepted
    // from our own.
    let upgrade = |origin: &str| {
        format!(
            "GET /api/v1/alerts/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    let (status, text) = raw(port, &upgrade("http://evil.example"));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("cross-origin request"), "{text}");
    let (status, text) = raw(port, &upgrade(&format!("http://127.0.0.1:{port}")));
    assert_eq!(status, 101, "{text}");

    // DNS rebinding: a loopback listener answers IP literals and localhost only, even
    // when Origin and Host agree.
    let rebound = format!(
        "GET /api/v1/query?query=1 HTTP/1.1\r\nHost: evil.example:{port}\r\n\
         Origin: http://evil.example:{port}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw(port, &rebound);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("DNS rebinding"), "{text}");
    let local = format!(
        "GET /api/v1/query?query=1 HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Origin: http://localhost:{port}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw(port, &local);
    assert_eq!(status, 200, "{text}");
}

#[test]
fn auth_half_sent_headers_are_closed_by_the_read_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--web.read-header-timeout".to_string(), "1s".to_string()];
    let vigil = Vigil::start_args(&dir.path().join("data"), &args, "http", |v| {
        blocking_get(&format!("{}/-/ready", v.url)).is_ok_and(|(status, _)| status == 200)
    });
    let port = port_of(&vigil);

    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("send half a head");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            stream
        })
        .collect();

    // Meanwhile a complete request is answered promptly.
    let asked = Instant::now();
    let (status, body) =
        blocking_get(&format!("{}/api/v1/query?query=1", vigil.url)).expect("normal request");
    assert_eq!(status, 200, "{body}");
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "a normal request took {:?} while 50 clients dawdled",
        asked.elapsed()
    );

    // Each half-sent connection is closed by the server (EOF or reset) within ~2 s.
    for stream in &mut slow {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "a half-sent request was still open after {:?}",
                        started.elapsed()
                    )
                }
                Err(_) => break,
            }
        }
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_millis(2_500),
        "half-sent requests were closed only after {closed_after:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before the timeout: {closed_after:?}"
    );
}

#[test]
fn auth_connection_cap_makes_new_connections_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--web.read-header-timeout".to_string(),
        "2s".to_string(),
        "--web.max-connections".to_string(),
        "4".to_string(),
    ];
    let vigil = Vigil::start_args(&dir.path().join("data"), &args, "http", |v| {
        blocking_get(&format!("{}/-/ready", v.url)).is_ok_and(|(status, _)| status == 200)
    });
    let port = port_of(&vigil);
    // Let the readiness probe's connection be released.
    std::thread::sleep(Duration::from_millis(200));

    // Four dawdlers take every slot.
    let started = Instant::now();
    let _slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .write_all(b"GET / HTTP/1.1\r\n")
                .expect("send half a head");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // A fifth connection is not refused: it waits in the backlog until the header
    // timeout frees a slot, then gets its answer.
    let (status, body) =
        blocking_get(&format!("{}/api/v1/query?query=1", vigil.url)).expect("request");
    assert_eq!(status, 200, "{body}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_500) && waited < Duration::from_secs(6),
        "the fifth connection was served after {waited:?}"
    );
}

const GRPC_CLIENT: &str = r#"
import os, sys, grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.common.v1 import common_pb2
creds = grpc.ssl_channel_credentials(open(os.environ["CA"], "rb").read())
channel = grpc.secure_channel(os.environ["ADDR"], creds)
stub = trace_service_pb2_grpc.TraceServiceStub(channel)
span = trace_pb2.Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name="grpc-tls",
                      start_time_unix_nano=int(os.environ["START"]), end_time_unix_nano=int(os.environ["START"]) + 1000)
res = resource_pb2.Resource(attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="secure"))])
req = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(resource=res, scope_spans=[trace_pb2.ScopeSpans(spans=[span])])])
out = []
for token in ["", os.environ["READ"], os.environ["WRITE"]]:
    metadata = [("authorization", "Bearer " + token)] if token else []
    try:
        stub.Export(req, metadata=metadata, timeout=10)
        out.append("OK")
    except grpc.RpcError as err:
        out.append(err.code().name)
print(" ".join(out))
"#;

/// OTLP/gRPC behind the web config: TLS (ALPN h2) with the same certificate, and the
/// same credentials and scopes as HTTP, through grpcio.
#[test]
fn auth_otlp_grpc_uses_the_web_config() {
    let secure = Secure::start("", &[]);
    let ca = secure.pki.ca.display().to_string();
    let start = (crate::util::now_ms() * 1_000_000).to_string();
    let (stdout, _) = crate::util::python(
        GRPC_CLIENT,
        &[
            ("CA", &ca),
            ("ADDR", &secure.vigil.grpc),
            ("READ", READ_TOKEN),
            ("WRITE", WRITE_TOKEN),
            ("START", &start),
        ],
    );
    assert_eq!(stdout.trim(), "UNAUTHENTICATED PERMISSION_DENIED OK");
}

//! The first ten minutes (issue 12): the README's commands as a newcomer types them.
//! The example config starts; a typo in the config or a broken rule file stops the
//! start with the file, line and field before anything listens; a glob matching nothing
//! is fine; the CLI says why the server refused a request, says so when a result is
//! empty, documents its flags, and logs without colour codes when not on a terminal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{blocking_get, free_port, now_ms, Peer, Vigil};

fn vigil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    // Tests run side by side: none takes the default OTLP/gRPC port.
    command.env("VIGIL_OTLP_GRPC_LISTEN", "off");
    command
}

fn repo() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `vigil serve --config <config>` on a free port, stderr into `log`.
fn spawn_serve(config: &Path, data_dir: &Path, log: &Path) -> (Child, String) {
    let port = free_port();
    let child = vigil()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("VIGIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create log"))
        .spawn()
        .expect("spawn vigil");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Waits until the server answers ready; panics with its log if it exits first.
fn wait_ready(child: &mut Child, url: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "vigil exited ({status}) instead of starting:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if blocking_get(&format!("{url}/-/ready")).is_ok_and(|(status, _)| status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("vigil at {url} did not become ready");
}

/// `vigil serve --config <config>` that must exit on its own; returns its output.
fn serve_must_fail(config: &Path, data_dir: &Path) -> Output {
    let output = vigil()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("VIGIL_LOG", "info")
        .output()
        .expect("run vigil serve");
    assert!(
        !output.status.success(),
        "vigil serve {} should have failed:\n{}",
        config.display(),
        text(&output.stderr)
    );
    output
}

/// The README's `vigil serve --config config/vigil.example.yaml` starts with the shipped
/// rules, and its log (stderr is a file here) carries no ANSI colour codes.
#[test]
fn newcomer_example_config_starts_with_plain_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("vigil.log");
    let (child, url) = spawn_serve(
        &repo().join("config/vigil.example.yaml"),
        &dir.path().join("data"),
        &log,
    );
    let mut server = Peer(child);
    wait_ready(&mut server.0, &url, &log);
    let (status, body) = blocking_get(&format!("{url}/api/v1/rules")).expect("rules");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PodCrashLooping"), "{body}");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("vigil listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI codes in a redirected log:\n{log:?}"
    );
}

/// A typo in the config (Prometheus rejects it too) stops the start, naming the file,
/// the line and column, and the field, before the server listens.
#[test]
fn newcomer_config_typo_is_rejected_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (yaml, position, field) in [
        ("global: {scrape_intervall: 15s}\n", "1:10", "scrape_intervall"),
        (
            "global:\n  scrape_interval: 15s\n  resolve_timeout: 5m\n",
            "3:3",
            "resolve_timeout",
        ),
        (
            "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:9100']\n    scrape_intervall: 5s\n",
            "5:5",
            "scrape_intervall",
        ),
    ] {
        let config = dir.path().join("vigil.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let data_dir = dir.path().join("data");
        let stderr = text(&serve_must_fail(&config, &data_dir).stderr);
        assert!(
            stderr.contains(&format!("{}:{position}:", config.display())),
            "{yaml:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("unknown field `{field}`")),
            "{yaml:?}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
        assert!(!data_dir.exists(), "the data directory was opened: {stderr}");
    }
}

/// A rule_files glob that also catches a promtool unit-test file stops the start before
/// the server listens, saying what the file is; a glob matching nothing is accepted.
#[test]
fn newcomer_rule_files_are_checked_before_listening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    for file in ["kubernetes.yml", "kubernetes-test.yml"] {
        std::fs::copy(repo().join("rules").join(file), rules.join(file)).expect("copy");
    }
    let config = dir.path().join("vigil.yaml");
    std::fs::write(&config, "rule_files:\n  - rules/*.yml\n").expect("write config");
    let data_dir = dir.path().join("data");
    let stderr = text(&serve_must_fail(&config, &data_dir).stderr);
    assert!(stderr.contains("kubernetes-test.yml"), "{stderr}");
    assert!(stderr.contains("vigil rules test"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        !data_dir.exists(),
        "the data directory was opened: {stderr}"
    );

    // As in Prometheus, globs that match nothing (even in a missing directory) are fine.
    std::fs::write(
        &config,
        "rule_files:\n  - rules/*.nothing\n  - missing/*.yml\n  - rules/kubernetes.y*l\n",
    )
    .expect("write config");
    let log = dir.path().join("vigil.log");
    let (child, url) = spawn_serve(&config, &data_dir, &log);
    let mut server = Peer(child);
    wait_ready(&mut server.0, &url, &log);
    let (_, body) = blocking_get(&format!("{url}/api/v1/rules")).expect("rules");
    assert!(body.contains("PodCrashLooping"), "{body}");
}

/// The CLI prints the server's reason for a refused request (JSON `error` or the text
/// body), Prometheus' parse error position, and a line for an empty result.
#[test]
fn newcomer_cli_says_why_and_when_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Vigil::start(&dir.path().join("data"), None);
    let url = server.url.as_str();
    let (status, _) = server.write(&crate::util::batch("newcomer_gauge", 1, 1, now_ms() - 1000));
    assert_eq!(status, 204);
    let run = |args: &[&str]| vigil().args(args).output().expect("run vigil");

    let output = run(&[
        "alerts",
        "tail",
        "--url",
        url,
        "--match",
        "severity=critical",
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("HTTP 400"), "{stderr}");
    assert!(stderr.contains("invalid parameter \"match\""), "{stderr}");

    // Prometheus 2.42 answers this very text for the same query.
    let output = run(&["query", "--url", url, "rate(x[15m]) >"]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("1:15: parse error: unexpected end of input"),
        "{stderr}"
    );

    // A reply that is not Prometheus' JSON: the status and the text are shown.
    let output = run(&["query", "--url", &format!("{url}/nope"), "up"]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("HTTP 404"), "{stderr}");

    let output = run(&["query", "--url", url, "newcomer_missing"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "(no results)");
    let output = run(&["query", "--url", url, "newcomer_gauge"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("newcomer_gauge{"),
        "{}",
        text(&output.stdout)
    );

    let output = run(&[
        "sql",
        "--url",
        url,
        "SELECT * FROM metrics WHERE name = 'newcomer_missing'",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "(0 rows)");
}

/// `vigil rules check` parses PromQL locally and reports it as promtool does.
#[test]
fn newcomer_rules_check_gives_the_parse_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "groups:\n- name: g\n  rules:\n  - record: x:rate\n    expr: rate(x[15m]) >\n",
    )
    .expect("write rules");
    let output = vigil()
        .args(["rules", "check"])
        .arg(&file)
        .output()
        .expect("run vigil rules check");
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    // promtool 2.42: `could not parse expression: 1:15: parse error: unexpected end of input`.
    assert!(
        stderr.contains("could not parse expression: 1:15: parse error: unexpected end of input"),
        "{stderr}"
    );
}

/// Every flag and argument a newcomer reaches for says what it is.
#[test]
fn newcomer_cli_help_documents_every_flag() {
    let help = |args: &[&str]| {
        let output = vigil().args(args).arg("--help").output().expect("help");
        assert!(output.status.success());
        text(&output.stdout)
    };
    let serve = help(&["serve"]);
    assert!(
        serve.contains("Directory of the write-ahead log"),
        "{serve}"
    );
    assert!(
        serve.contains("Address (host:port) of the HTTP API"),
        "{serve}"
    );
    let demo = help(&["demo"]);
    assert!(
        demo.contains("Address (host:port) of the HTTP API"),
        "{demo}"
    );
    let query = help(&["query"]);
    for expected in [
        "The PromQL expression",
        "Start of a range query",
        "End of a range query",
        "Base URL of the Vigil server",
    ] {
        assert!(query.contains(expected), "{expected}: {query}");
    }
    let sql = help(&["sql"]);
    assert!(sql.contains("The SQL query"), "{sql}");
    assert!(sql.contains("Base URL of the Vigil server"), "{sql}");
    let tail = help(&["alerts", "tail"]);
    assert!(tail.contains("Base URL of the Vigil server"), "{tail}");
}

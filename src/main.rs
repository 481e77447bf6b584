//! The `vigil` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use vigil::config::Config;
use vigil::run::{serve, ServeOptions};

mod cq_cli;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Stream-processing dataflow engine for observability"
)]
struct Cli {
    /// Log filter, as RUST_LOG (e.g. "info", "vigil_storage=debug").
    #[arg(long, global = true, env = "VIGIL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// YAML config file (prometheus.yml sections plus `storage` and `limits`).
        #[arg(long, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
        /// Directory of the write-ahead log and Parquet files (created if missing; one
        /// server per directory).
        #[arg(long, env = "VIGIL_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Address (host:port) of the HTTP API.
        #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:9190")]
        listen: SocketAddr,
        /// Prometheus' web config file: TLS, basic auth users, and Vigil's bearer tokens,
        /// read-only users and allowed origins (see the README's Security section).
        #[arg(long = "web.config.file", env = "VIGIL_WEB_CONFIG_FILE")]
        web_config_file: Option<PathBuf>,
        /// Close a connection whose request head has not arrived within this time.
        #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = parse_duration)]
        read_header_timeout: std::time::Duration,
        /// Connections served at once; further ones wait to be accepted.
        #[arg(long = "web.max-connections", default_value_t = vigil::http::listener::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Address (host:port) of OTLP/gRPC (traces, logs, metrics); `off` disables it.
        #[arg(long = "otlp.grpc-listen", env = "VIGIL_OTLP_GRPC_LISTEN", default_value = "127.0.0.1:4317", value_parser = parse_optional_address)]
        otlp_grpc_listen: OptionalAddress,
    },
    /// Run the server with an embedded simulated Kubernetes cluster feeding it.
    Demo {
        /// Where to keep data; a fresh temporary directory by default.
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address (host:port) of the HTTP API.
        #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:9190")]
        listen: SocketAddr,
        /// Address (host:port) of OTLP/gRPC; `off` disables it.
        #[arg(long = "otlp.grpc-listen", env = "VIGIL_OTLP_GRPC_LISTEN", default_value = "127.0.0.1:4317", value_parser = parse_optional_address)]
        otlp_grpc_listen: OptionalAddress,
    },
    /// Run a PromQL query against a running server (instant, or range with --start/--end).
    Query {
        /// The PromQL expression, e.g. 'sum by (job) (rate(http_requests_total[5m]))'.
        expr: String,
        /// Evaluation time (Unix seconds or RFC 3339); now by default.
        #[arg(long)]
        time: Option<String>,
        /// Start of a range query (Unix seconds or RFC 3339); needs --end and --step.
        #[arg(long, requires_all = ["end", "step"])]
        start: Option<String>,
        /// End of a range query (Unix seconds or RFC 3339).
        #[arg(long)]
        end: Option<String>,
        /// Range step (seconds or a duration such as 30s).
        #[arg(long)]
        step: Option<String>,
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
    },
    /// Follow the alert stream of a running server.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Create, list, drop and follow continuous queries of a running server.
    Cq {
        #[command(subcommand)]
        command: CqCommand,
    },
    /// Check or unit-test rule files (`promtool check rules` / `promtool test rules`).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run a SQL query against a running server and print the result as a table.
    Sql {
        /// The SQL query over the `samples`, `series` and `metrics` tables.
        query: String,
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
        /// Output format: table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Print every alert transition (and the current alerts first), one per line.
    Tail {
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
        /// Label matchers, e.g. 'severity="critical"'.
        #[arg(long = "match")]
        matchers: Option<String>,
        /// Print the raw JSON messages.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CqCommand {
    /// Create a continuous query: the server keeps its result up to date as data arrives.
    Create {
        /// Name of the query (and of the SQL table holding its result).
        name: String,
        /// The query in SQL, e.g. "SELECT stream['namespace'] AS ns, count(*) AS n FROM logs
        /// WHERE severity = 'error' GROUP BY 1".
        #[arg(long, conflicts_with = "promql", required_unless_present = "promql")]
        sql: Option<String>,
        /// The query in PromQL, e.g. 'sum by (job) (rate(http_requests_total[5m]))'.
        #[arg(long)]
        promql: Option<String>,
        /// Event time the result covers, back from the watermark (e.g. 1h); the server's
        /// default otherwise.
        #[arg(long, value_parser = parse_duration)]
        horizon: Option<std::time::Duration>,
        /// Evaluation step of a PromQL query (e.g. 30s); 60s otherwise.
        #[arg(long, value_parser = parse_duration, requires = "promql")]
        step: Option<std::time::Duration>,
        /// Write each window's rows to Parquet once it closes (table NAME_closed): the
        /// result's window column (a timestamp, e.g. the `date_bin` output).
        #[arg(long, requires_all = ["sql", "close_after"])]
        persist_window: Option<String>,
        /// With --persist-window: how long after its start a window is closed (its length
        /// plus the lateness allowed, e.g. 2m).
        #[arg(long, value_parser = parse_duration, requires = "persist_window")]
        close_after: Option<std::time::Duration>,
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
    },
    /// List the continuous queries with their status, size and progress.
    List {
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
        /// Print the raw JSON list.
        #[arg(long)]
        json: bool,
    },
    /// Stop a continuous query and delete its result.
    Drop {
        /// Name of the query.
        name: String,
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
    },
    /// Print a continuous query's result, then every change to it, one per line.
    Tail {
        /// Name of the query (or give --sql for an inline one).
        #[arg(required_unless_present = "sql")]
        name: Option<String>,
        /// Follow an inline SQL query instead: it runs for as long as this command does.
        #[arg(long, conflicts_with_all = ["name", "from_seq"])]
        sql: Option<String>,
        /// Resume after this change batch (the `seq` of the last one seen) instead of
        /// starting from a snapshot.
        #[arg(long)]
        from_seq: Option<u64>,
        /// Also print progress messages (the watermark advancing without changes).
        #[arg(long)]
        progress: bool,
        /// Print the raw JSON messages.
        #[arg(long)]
        json: bool,
        /// Base URL of the Vigil server.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
    },
}

/// A Prometheus duration (`10s`, `1m30s`) for a flag.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    vigil_connectors::duration::parse(text).map_err(|err| err.to_string())
}

/// A listen address, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct OptionalAddress(Option<SocketAddr>);

fn parse_optional_address(text: &str) -> Result<OptionalAddress, String> {
    match text.trim() {
        "" | "off" | "none" => Ok(OptionalAddress(None)),
        address => address
            .parse()
            .map(|address| OptionalAddress(Some(address)))
            .map_err(|err| format!("{address:?} is not host:port or `off`: {err}")),
    }
}

/// Why the server refused a request: the `error` of Prometheus' JSON envelope (with its
/// `errorType`), else the text body, with the HTTP status.
fn server_reason(status: u16, body: &[u8]) -> String {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|value| value.get(name))
            .and_then(|value| value.as_str())
            .map(str::to_string)
    };
    let head = match field("errorType") {
        Some(kind) => format!("HTTP {status}, {kind}"),
        None => format!("HTTP {status}"),
    };
    let reason = field("error").unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if reason.is_empty() {
        format!("({head})")
    } else {
        format!("({head}): {reason}")
    }
}

/// `vigil alerts tail`: reads `/api/v1/alerts/stream` until the server closes it.
fn alerts_tail(url: &str, matchers: Option<&str>, raw: bool) -> anyhow::Result<()> {
    let params: Vec<(&str, String)> = matchers
        .map(|m| vec![("match", m.to_string())])
        .unwrap_or_default();
    let mut socket = cq_cli::open_stream(url, "/api/v1/alerts/stream", &params)?;
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let message: serde_json::Value = serde_json::from_str(&text)?;
                if message["type"] == "heartbeat" {
                    continue;
                }
                if raw {
                    println!("{text}");
                    continue;
                }
                let labels = message["labels"]
                    .as_object()
                    .map(|labels| {
                        labels
                            .iter()
                            .filter(|(k, _)| k.as_str() != "alertname")
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                println!(
                    "{:>6} {:<8} {}{{{}}} {}",
                    message["seq"],
                    message["status"].as_str().unwrap_or(""),
                    message["labels"]["alertname"].as_str().unwrap_or(""),
                    labels,
                    message["annotations"]["summary"].as_str().unwrap_or("")
                );
                use std::io::Write;
                std::io::stdout().flush()?;
            }
            Ok(tungstenite::Message::Close(frame)) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                bail!("stream closed by the server {reason}");
            }
            Ok(_) => {}
            Err(err) => bail!("stream failed: {err}"),
        }
    }
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate rule files: YAML, PromQL, templates, names; report duplicate rules.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests written for `promtool test rules`.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `vigil rules check`: promtool's output and exit status (1 if any file is invalid).
fn rules_check(files: &[PathBuf]) -> bool {
    let mut ok = true;
    for file in files {
        println!("Checking {}", file.display());
        match vigil_engine::rules::load_file(file) {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                let duplicates = vigil_engine::rules::duplicate_rules(&groups);
                if !duplicates.is_empty() {
                    println!("{} duplicate rule(s) found.", duplicates.len());
                    for (name, labels) in &duplicates {
                        println!("Metric: {name}\nLabel(s):");
                        for (k, v) in labels {
                            println!("\t{k}: {v}");
                        }
                    }
                    println!("Might cause inconsistency while recording expressions.");
                }
                println!("  SUCCESS: {n} rules found");
                print_incremental_report(&groups);
                println!();
            }
            Err(err) => {
                ok = false;
                eprintln!("  FAILED:\n{err}\n");
            }
        }
    }
    ok
}

/// Which rules the dataflow maintains and why the others are evaluated ad hoc.
fn print_incremental_report(groups: &[vigil_engine::rules::Group]) {
    let mut program = vigil_engine::incremental::Program::default();
    let mut fallbacks = Vec::new();
    let mut total = 0;
    for (group, plans) in groups.iter().zip(program.add_groups(groups)) {
        for (rule, plan) in group.rules.iter().zip(plans) {
            total += 1;
            if let Err(reason) = plan {
                fallbacks.push((rule.name.clone(), reason.to_string()));
            }
        }
    }
    println!(
        "  incremental: {} of {total} rules ({} shared inputs)",
        total - fallbacks.len(),
        program.leaves.len()
    );
    for (name, reason) in fallbacks {
        println!("  evaluated ad hoc: {name}: {reason}");
    }
}

/// `vigil rules test`: promtool's report and exit status (1 if any test fails).
fn rules_test(files: &[PathBuf]) -> bool {
    let mut ok = true;
    for file in files {
        let result = vigil_engine::unittest::run_file(file);
        print!("{}", result.report);
        ok &= result.passed;
    }
    ok
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Alerts {
        command:
            AlertsCommand::Tail {
                url,
                matchers,
                json,
            },
    } = &cli.command
    {
        return alerts_tail(url, matchers.as_deref(), *json);
    }
    if let Command::Cq {
        command:
            CqCommand::Tail {
                name,
                sql,
                from_seq,
                progress,
                json,
                url,
            },
    } = &cli.command
    {
        let output = if *json {
            cq_cli::TailOutput::Json
        } else {
            cq_cli::TailOutput::Text {
                progress: *progress,
            }
        };
        let source = match (name, sql) {
            (_, Some(sql)) => cq_cli::TailSource::Inline(sql),
            (Some(name), None) => cq_cli::TailSource::Named(name, *from_seq),
            (None, None) => anyhow::bail!("give the query's name, or --sql"),
        };
        return cq_cli::tail(url, source, output);
    }
    if let Command::Rules { command } = &cli.command {
        let ok = match command {
            RulesCommand::Check { files } => rules_check(files),
            RulesCommand::Test { files } => rules_test(files),
        };
        std::process::exit(if ok { 0 } else { 1 });
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: redirected logs stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Query parsing and evaluation recurse over expression trees whose depth the
    // entry guards bound; their threads get room for that depth.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(vigil_queries::promql::EVAL_STACK_BYTES)
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                data_dir,
                listen,
                web_config_file,
                read_header_timeout,
                max_connections,
                otlp_grpc_listen,
            } => {
                let config = match config {
                    Some(path) => Config::load(&path)?,
                    None => Config::default(),
                };
                serve(ServeOptions {
                    web_config: web_config_file,
                    read_header_timeout,
                    max_connections,
                    otlp_grpc: otlp_grpc_listen.0,
                    ..ServeOptions::new(config, data_dir, listen, false)
                })
                .await
            }
            Command::Demo {
                data_dir,
                listen,
                otlp_grpc_listen,
            } => {
                let (data_dir, _temp) = match data_dir {
                    Some(dir) => (dir, None),
                    None => {
                        let temp = tempfile::Builder::new().prefix("vigil-demo-").tempdir()?;
                        (temp.path().to_path_buf(), Some(temp))
                    }
                };
                serve(ServeOptions {
                    otlp_grpc: otlp_grpc_listen.0,
                    ..ServeOptions::new(vigil::demo::config(), data_dir, listen, true)
                })
                .await
            }
            Command::Rules { .. } | Command::Alerts { .. } => Ok(()),
            Command::Cq { command } => match command {
                CqCommand::Create {
                    name,
                    sql,
                    promql,
                    horizon,
                    step,
                    persist_window,
                    close_after,
                    url,
                } => {
                    cq_cli::create(
                        &url,
                        &name,
                        sql.as_deref(),
                        promql.as_deref(),
                        horizon,
                        step,
                        persist_window.zip(close_after),
                    )
                    .await
                }
                CqCommand::List { url, json } => cq_cli::list(&url, json).await,
                CqCommand::Drop { name, url } => cq_cli::drop_query(&url, &name).await,
                CqCommand::Tail { .. } => Ok(()),
            },
            Command::Sql { query, url, format } => sql(&url, &query, &format).await,
            Command::Query {
                expr,
                time,
                start,
                end,
                step,
                url,
            } => promql(&url, &expr, time, start.zip(end).zip(step)).await,
        }
    })
}

async fn sql(url: &str, query: &str, format: &str) -> anyhow::Result<()> {
    let wire = match format {
        "table" => "arrow",
        "csv" | "json" => format,
        other => bail!("unknown format {other:?}: use table, csv or json"),
    };
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", url.trim_end_matches('/')))
        .form(&[("query", query), ("format", wire)])
        .send()
        .await
        .with_context(|| format!("cannot reach vigil at {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("query failed {}", server_reason(status.as_u16(), &body));
    }
    if wire == "arrow" {
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(body),
            None,
        )?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
        if rows == 0 {
            println!("(0 rows)");
        } else {
            println!(
                "{}",
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
            );
        }
    } else {
        print!("{}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// Prints a PromQL result one series per line, as `promtool query` does.
async fn promql(
    url: &str,
    expr: &str,
    time: Option<String>,
    range: Option<((String, String), String)>,
) -> anyhow::Result<()> {
    let base = url.trim_end_matches('/');
    let mut form = vec![("query", expr.to_string())];
    let endpoint = match range {
        Some(((start, end), step)) => {
            form.extend([("start", start), ("end", end), ("step", step)]);
            format!("{base}/api/v1/query_range")
        }
        None => {
            if let Some(time) = time {
                form.push(("time", time));
            }
            format!("{base}/api/v1/query")
        }
    };
    let response = reqwest::Client::new()
        .post(endpoint)
        .form(&form)
        .send()
        .await
        .with_context(|| format!("cannot reach vigil at {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    let body: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(body @ serde_json::Value::Object(_)) if body["status"] == "success" => body,
        _ => bail!("query failed {}", server_reason(status.as_u16(), &bytes)),
    };
    let format_metric = |metric: &serde_json::Value| {
        let Some(map) = metric.as_object() else {
            return String::from("{}");
        };
        let name = map.get("__name__").and_then(|v| v.as_str()).unwrap_or("");
        let labels: Vec<String> = map
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| format!("{k}={}", v))
            .collect();
        format!("{name}{{{}}}", labels.join(", "))
    };
    let result = &body["data"]["result"];
    if result.as_array().is_some_and(Vec::is_empty) {
        println!("(no results)");
    }
    match body["data"]["resultType"].as_str() {
        Some("vector") => {
            for sample in result.as_array().into_iter().flatten() {
                println!(
                    "{} => {} @[{}]",
                    format_metric(&sample["metric"]),
                    sample["value"][1].as_str().unwrap_or(""),
                    sample["value"][0]
                );
            }
        }
        Some("matrix") => {
            for series in result.as_array().into_iter().flatten() {
                println!("{} =>", format_metric(&series["metric"]));
                for point in series["values"].as_array().into_iter().flatten() {
                    println!("{} @[{}]", point[1].as_str().unwrap_or(""), point[0]);
                }
            }
        }
        _ => println!("{} @[{}]", result[1].as_str().unwrap_or(""), result[0]),
    }
    Ok(())
}

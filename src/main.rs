//! The `vigil` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use vigil::config::Config;
use vigil::run::{serve, ServeOptions};

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
        #[arg(long, env = "VIGIL_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:9190")]
        listen: SocketAddr,
    },
    /// Run the server with an embedded simulated Kubernetes cluster feeding it.
    Demo {
        /// Where to keep data; a fresh temporary directory by default.
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:9190")]
        listen: SocketAddr,
    },
    /// Run a SQL query against a running server and print the result as a table.
    Sql {
        query: String,
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9190")]
        url: String,
        /// Output format: table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                data_dir,
                listen,
            } => {
                let config = match config {
                    Some(path) => Config::load(&path)?,
                    None => Config::default(),
                };
                serve(ServeOptions {
                    config,
                    data_dir,
                    listen,
                    demo: false,
                })
                .await
            }
            Command::Demo { data_dir, listen } => {
                let (data_dir, _temp) = match data_dir {
                    Some(dir) => (dir, None),
                    None => {
                        let temp = tempfile::Builder::new().prefix("vigil-demo-").tempdir()?;
                        (temp.path().to_path_buf(), Some(temp))
                    }
                };
                serve(ServeOptions {
                    config: vigil::demo::config(),
                    data_dir,
                    listen,
                    demo: true,
                })
                .await
            }
            Command::Sql { query, url, format } => sql(&url, &query, &format).await,
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
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| {
                value
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("query failed ({status}): {message}");
    }
    if wire == "arrow" {
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(body),
            None,
        )?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        println!(
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
        );
    } else {
        print!("{}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

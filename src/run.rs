//! The serve loop: open storage, start scraping and maintenance, serve HTTP until a
//! signal, then stop in order (HTTP, scrapers, demo) and flush.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};
use vigil_connectors::scrape::ScrapeManager;
use vigil_storage::{Storage, StorageConfig};

use crate::config::Config;
use crate::http::{app_with, AppState};

pub struct ServeOptions {
    pub config: Config,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Run the simulated cluster against this server.
    pub demo: bool,
    /// Prometheus' `--web.config.file`: TLS, credentials, allowed origins.
    pub web_config: Option<PathBuf>,
    /// A connection whose request head takes longer is closed.
    pub read_header_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Where OTLP/gRPC listens (`None`: not served).
    pub otlp_grpc: Option<SocketAddr>,
}

impl ServeOptions {
    /// Options with the HTTP defaults (no web config, the listener's default limits).
    pub fn new(config: Config, data_dir: PathBuf, listen: SocketAddr, demo: bool) -> Self {
        ServeOptions {
            config,
            data_dir,
            listen,
            demo,
            web_config: None,
            read_header_timeout: crate::http::listener::DEFAULT_READ_HEADER_TIMEOUT,
            max_connections: crate::http::listener::DEFAULT_MAX_CONNECTIONS,
            otlp_grpc: None,
        }
    }
}

pub fn storage_config(config: &Config, data_dir: PathBuf) -> StorageConfig {
    let mut storage = StorageConfig::new(data_dir);
    storage.block_period = config.storage.block_period;
    storage.head_window = config.storage.head_window;
    storage.cache_bytes = config.storage.read_cache_bytes;
    storage.retention = config.storage.retention;
    storage.limits = config.limits.clone();
    storage
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    // Broken rule files stop the start before anything is opened or bound (the
    // config file was read by the caller); the rule manager loads them again later.
    crate::rule_manager::load_rule_files(&options.config.rule_files)?;
    let web_config = match &options.web_config {
        Some(path) => Some(Arc::new(crate::http::web_config::WebConfig::load(path)?)),
        None => None,
    };
    let tls = web_config.as_ref().and_then(|web| web.tls.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let storage = Storage::open(storage_config(&options.config, options.data_dir.clone()))
        .await
        .with_context(|| format!("cannot open data directory {:?}", options.data_dir))?;
    let state = AppState::with_query_limits(storage.clone(), options.config.query.clone()).await?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let local = listener.local_addr()?;
    info!(
        address = %local,
        tls = tls.is_some(),
        auth = web_config.as_ref().is_some_and(|web| web.requires_auth()),
        data_dir = %options.data_dir.display(),
        "vigil listening"
    );
    let access = Arc::new(crate::http::auth::Access::new(
        web_config.clone(),
        tls.is_some(),
        local.ip().is_loopback(),
    ));
    let grpc_listener = match options.otlp_grpc {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for OTLP/gRPC on {address}"))?;
            info!(address = %listener.local_addr()?, "OTLP/gRPC listening");
            Some((listener, address))
        }
        None => None,
    };

    let scrapers = ScrapeManager::start(
        &options.config.global,
        &options.config.scrape_configs,
        storage.clone(),
    )
    .map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let builtin = if options.demo {
        crate::demo::rule_groups()?
    } else {
        Vec::new()
    };
    // One set of dataflow workers for the rules and every continuous query.
    let dataflows = vigil_engine::service::Service::start(options.config.rule_workers)
        .context("the dataflow workers")?;
    let manager = crate::rule_manager::RuleManager::new(
        storage.clone(),
        options.config.rule_files.clone(),
        builtin,
        options.config.global.evaluation_interval,
        options.config.global.external_labels.clone(),
        options.config.alerting.endpoints(),
        format!("{scheme}://{local}"),
        dataflows.clone(),
        options.config.rules_lateness,
    )
    .await?;
    info!(groups = manager.group_count(), "rules loaded");
    let _ = state.rules.set(manager.clone());
    let continuous = vigil_engine::continuous::ContinuousQueries::open(
        &options.data_dir.join("continuous"),
        storage.clone(),
        &state.sql,
        Some(manager.clone() as Arc<dyn vigil_engine::continuous::RuleHost>),
        options.config.continuous_limits.limits(),
        dataflows,
    )
    .await?;
    manager.set_continuous_sink(&continuous);
    continuous.sync_rules().await?;
    if options.demo {
        continuous
            .ensure(crate::demo::continuous_query())
            .await
            .context("the demo's continuous query")?;
    }
    for configured in &options.config.continuous_queries {
        continuous
            .ensure(configured.definition()?)
            .await
            .with_context(|| {
                format!("continuous query {:?} in the config file", configured.name)
            })?;
    }
    info!(
        queries = continuous.list().len(),
        "continuous queries started"
    );
    let _ = state.continuous.set(continuous.clone());
    tokio::spawn(reload_on_sighup(manager.clone()));
    let rules = { tokio::spawn(manager.run(stop_rx.clone())) };
    let derived = &options.config.derived_signals;
    vigil_engine::continuous::derived::Derived::start(
        storage.clone(),
        vigil_engine::continuous::derived::DerivedConfig {
            span_metrics: derived.span_metrics,
            log_errors: derived.log_errors,
            interval: derived.interval,
        },
        stop_rx.clone(),
    );
    let maintenance = tokio::spawn(maintenance_loop(storage.clone(), stop_rx.clone()));
    let demo = options.demo.then(|| {
        tokio::spawn(crate::demo::run(
            local,
            storage.clone(),
            options.data_dir.clone(),
            stop_rx.clone(),
        ))
    });
    if options.demo {
        crate::demo::print_banner(local, &options.data_dir);
    }
    let grpc = grpc_listener.map(|(listener, address)| {
        let access = Arc::new(crate::http::auth::Access::new(
            web_config.clone(),
            tls.is_some(),
            address.ip().is_loopback(),
        ));
        let app = crate::http::otlp_grpc::router(state.clone()).layer(
            axum::middleware::from_fn_with_state(access, crate::http::auth::middleware),
        );
        let options = crate::http::listener::ListenOptions {
            tls: tls.clone(),
            read_header_timeout: options.read_header_timeout,
            max_connections: crate::http::listener::fit_to_fd_limit(options.max_connections),
            http2: true,
        };
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::http::listener::serve(
            listener,
            app,
            options,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ))
    });

    crate::http::listener::serve(
        listener,
        app_with(state.clone(), access),
        crate::http::listener::ListenOptions {
            tls,
            read_header_timeout: options.read_header_timeout,
            max_connections: crate::http::listener::fit_to_fd_limit(options.max_connections),
            http2: false,
        },
        async move {
            shutdown_signal().await;
            info!("shutting down: no new requests");
        },
    )
    .await;
    state
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Some(grpc) = grpc {
        let _ = grpc.await;
    }
    if let Some(demo) = demo {
        let _ = demo.await;
    }
    scrapers.stop().await;
    let _ = rules.await;
    let _ = maintenance.await;
    tokio::task::spawn_blocking(move || continuous.shutdown()).await?;
    storage.shutdown().await.context("final flush failed")?;
    info!("vigil stopped");
    Ok(())
}

/// SIGHUP reloads the rule files, as it reloads Prometheus' configuration.
async fn reload_on_sighup(manager: Arc<crate::rule_manager::RuleManager>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let reloading = manager.clone();
            let reloaded = tokio::task::spawn_blocking(move || reloading.reload())
                .await
                .unwrap_or_else(|err| Err(anyhow::anyhow!("reload task failed: {err}")));
            match reloaded {
                Ok(groups) => info!(groups, "rules reloaded"),
                Err(err) => error!(error = %err, "rule reload failed; keeping the running rules"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = manager;
}

/// Flushes the head when due and applies retention.
async fn maintenance_loop(storage: Arc<Storage>, mut stop: watch::Receiver<bool>) {
    let period = (storage.config().block_period / 4)
        .clamp(Duration::from_millis(200), Duration::from_secs(30));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if storage.flush_due() {
            if let Err(err) = storage.flush().await {
                error!(error = %err, "head flush failed; data stays in the wal");
            }
        }
        if let Err(err) = storage.apply_retention().await {
            error!(error = %err, "retention failed");
        }
        if let Err(err) = storage.compact_records().await {
            error!(error = %err, "merging log and span files failed; the batch files stay");
        }
    }
}

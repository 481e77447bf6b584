//! The HTTP server: routes, request parsing, and the mapping of errors to statuses.
//! This is the only place that knows HTTP and JSON.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::RwLock;
use serde_json::json;
use tracing::{debug, warn};
use vigil_connectors::remote_write::{self, MetricMetadata};
use vigil_queries::SqlEngine;
use vigil_storage::{AppendMode, ErrorKind, Storage};

use crate::self_metrics::SelfMetrics;

pub struct AppState {
    pub storage: Arc<Storage>,
    pub sql: SqlEngine,
    pub metrics: SelfMetrics,
    /// Metric metadata received over remote_write, by metric family name.
    pub metadata: RwLock<BTreeMap<String, MetricMetadata>>,
    pub ready: AtomicBool,
    /// Query timeout and sample limit (Prometheus' defaults unless configured).
    pub query: crate::config::QuerySection,
    /// The rule manager, once rules are loaded (set by `run::serve`).
    pub rules: std::sync::OnceLock<Arc<crate::rule_manager::RuleManager>>,
    /// remote_write label sets already seen (decoding a known series allocates nothing).
    pub interner: remote_write::SeriesInterner,
}

impl AppState {
    pub async fn new(storage: Arc<Storage>) -> anyhow::Result<Arc<AppState>> {
        Self::with_query_limits(storage, crate::config::QuerySection::default()).await
    }

    pub async fn with_query_limits(
        storage: Arc<Storage>,
        query: crate::config::QuerySection,
    ) -> anyhow::Result<Arc<AppState>> {
        let sql = SqlEngine::with_limits(storage.clone(), query.sql_limits()).await?;
        Ok(Arc::new(AppState {
            storage,
            sql,
            metrics: SelfMetrics::default(),
            metadata: RwLock::new(BTreeMap::new()),
            ready: AtomicBool::new(true),
            query,
            rules: std::sync::OnceLock::new(),
            interner: remote_write::SeriesInterner::new(1 << 20),
        }))
    }
}

/// Every route, behind the Origin check only (no credentials); see [`app_with`].
pub fn app(state: Arc<AppState>) -> Router {
    app_with(state, Arc::new(crate::auth::Access::open()))
}

/// Every route behind `access` (Host and Origin checks, credentials and scopes:
/// [`crate::auth`]).
pub fn app_with(state: Arc<AppState>, access: Arc<crate::auth::Access>) -> Router {
    // The compressed body may not exceed the decompressed limit either.
    let body_limit = match state.storage.limits().max_body_bytes {
        0 => usize::MAX,
        limit => limit,
    };
    Router::new()
        .route("/api/v1/write", post(remote_write_handler))
        .route(
            "/api/v1/sql",
            get(crate::sql_api::sql_handler).post(crate::sql_api::sql_handler),
        )
        .route(
            "/api/v1/query",
            get(crate::prom_api::query_handler).post(crate::prom_api::query_handler),
        )
        .route(
            "/api/v1/series",
            get(crate::prom_api::series_handler).post(crate::prom_api::series_handler),
        )
        .route(
            "/api/v1/labels",
            get(crate::prom_api::labels_handler).post(crate::prom_api::labels_handler),
        )
        .route(
            "/api/v1/label/{name}/values",
            get(crate::prom_api::label_values_handler),
        )
        .route(
            "/api/v1/status/buildinfo",
            get(crate::prom_api::buildinfo_handler),
        )
        .route(
            "/api/v1/query_range",
            get(crate::prom_api::query_range_handler).post(crate::prom_api::query_range_handler),
        )
        .route("/api/v1/metadata", get(crate::prom_api::metadata_handler))
        .route("/api/v1/rules", get(crate::alert_api::rules_handler))
        .route("/api/v1/alerts", get(crate::alert_api::alerts_handler))
        .route(
            "/api/v1/alerts/stream",
            get(crate::alert_api::stream_handler),
        )
        .route(
            "/api/v1/format_query",
            get(crate::prom_api::format_query_handler).post(crate::prom_api::format_query_handler),
        )
        .route(
            "/api/v1/parse_query",
            get(crate::prom_api::parse_query_handler).post(crate::prom_api::parse_query_handler),
        )
        .route("/metrics", get(metrics_handler))
        .route("/-/healthy", get(|| async { "Vigil is Healthy.\n" }))
        .route("/-/ready", get(ready_handler))
        .route("/-/reload", post(reload_handler).put(reload_handler))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::auth::middleware,
        ))
        .with_state(state)
}

/// `POST /-/reload`: re-reads the rule files (500 with the reason if they are invalid,
/// the running rules stay), as Prometheus' lifecycle endpoint.
async fn reload_handler(State(state): State<Arc<AppState>>) -> Response {
    let Some(rules) = state.rules.get() else {
        return plain(StatusCode::OK, String::new());
    };
    let rules = rules.clone();
    let reloaded = tokio::task::spawn_blocking(move || rules.reload())
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("reload task failed: {err}")));
    match reloaded {
        Ok(_) => plain(StatusCode::OK, String::new()),
        Err(err) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {err:#}"),
        ),
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, message + "\n").into_response()
}

/// remote_write receiver, as `storage/remote/write_handler.go`: 204 on success, 400 with a
/// plain-text message for bodies that can never succeed, 5xx only when a retry may.
async fn remote_write_handler(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    state
        .metrics
        .remote_write_requests
        .fetch_add(1, Ordering::Relaxed);
    let decoded =
        match remote_write::decode_with(&body, state.storage.limits(), Some(&state.interner)) {
            Ok(decoded) => decoded,
            Err(err) => {
                let reason = match &err {
                    vigil_connectors::Error::TooLarge { .. } => "too_large",
                    vigil_connectors::Error::Storage(inner) => inner.reason(),
                    vigil_connectors::Error::Snappy(_) => "snappy",
                    _ => "decode",
                };
                state.metrics.reject(reason);
                debug!(error = %err, "remote_write body rejected");
                let status = match err {
                    vigil_connectors::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return plain(status, err.to_string());
            }
        };
    state
        .metrics
        .exemplars_ignored
        .fetch_add(decoded.exemplars as u64, Ordering::Relaxed);
    state
        .metrics
        .histograms_ignored
        .fetch_add(decoded.histograms as u64, Ordering::Relaxed);
    match state
        .storage
        .append(decoded.batch, AppendMode::Strict)
        .await
    {
        Ok(_) => {
            // Metadata of a rejected request is not kept.
            remember_metadata(&state, decoded.metadata);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(err) => {
            state.metrics.reject(err.reason());
            let status = match err.kind() {
                ErrorKind::BadData => StatusCode::BAD_REQUEST,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Internal => {
                    warn!(error = %err, "remote_write append failed");
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            plain(status, err.to_string())
        }
    }
}

/// Metric families whose metadata is kept (Prometheus keeps metadata per target; one
/// entry per family here). New families beyond it are dropped and counted.
pub const MAX_METADATA_ENTRIES: usize = 100_000;
/// Longest `help` text kept (longer ones are cut at a character boundary).
pub const MAX_METADATA_HELP_BYTES: usize = 4096;

fn remember_metadata(state: &AppState, entries: Vec<MetricMetadata>) {
    if entries.is_empty() {
        return;
    }
    let mut metadata = state.metadata.write();
    for mut meta in entries {
        if meta.help.len() > MAX_METADATA_HELP_BYTES {
            let mut cut = MAX_METADATA_HELP_BYTES;
            while !meta.help.is_char_boundary(cut) {
                cut -= 1;
            }
            meta.help.truncate(cut);
        }
        if metadata.len() >= MAX_METADATA_ENTRIES && !metadata.contains_key(&meta.metric) {
            state.metrics.reject("metadata_limit");
            continue;
        }
        metadata.insert(meta.metric.clone(), meta);
    }
}

/// Prometheus' error envelope: `{"status":"error","errorType":…,"error":…}`.
pub fn api_error(status: StatusCode, error_type: &str, message: String) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": error_type, "error": message})),
    )
        .into_response()
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state.metrics.render(&state.storage);
            if let Some(rules) = state.rules.get() {
                text.push_str(&rules.render_metrics());
            }
            text
        },
    )
        .into_response()
}

async fn ready_handler(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        plain(StatusCode::OK, "Vigil is Ready.".into())
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable".into(),
        )
    }
}

//! The HTTP server: routes, request parsing, and the mapping of errors to statuses.
//! This is the only place that knows HTTP and JSON.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::RwLock;
use serde::Deserialize;
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
        let sql = SqlEngine::new(storage.clone()).await?;
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

pub fn app(state: Arc<AppState>) -> Router {
    // The compressed body may not exceed the decompressed limit either.
    let body_limit = match state.storage.limits().max_body_bytes {
        0 => usize::MAX,
        limit => limit,
    };
    Router::new()
        .route("/api/v1/write", post(remote_write_handler))
        .route("/api/v1/sql", get(sql_handler).post(sql_handler))
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
    if !decoded.metadata.is_empty() {
        let mut metadata = state.metadata.write();
        for meta in decoded.metadata {
            metadata.insert(meta.metric.clone(), meta);
        }
    }
    match state
        .storage
        .append(decoded.batch, AppendMode::Strict)
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
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

#[derive(Debug, Default, Deserialize)]
struct SqlParams {
    query: Option<String>,
    format: Option<String>,
}

/// Prometheus' error envelope: `{"status":"error","errorType":…,"error":…}`.
pub fn api_error(status: StatusCode, error_type: &str, message: String) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": error_type, "error": message})),
    )
        .into_response()
}

/// `GET|POST /api/v1/sql?query=…&format=json|csv|arrow`. The query may also be sent as a
/// form field, a JSON body `{"query": …}`, or a plain-text body.
async fn sql_handler(
    State(state): State<Arc<AppState>>,
    Query(mut params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() {
        let from_body: Result<SqlParams, String> = if content_type.starts_with("application/json") {
            serde_json::from_slice(&body).map_err(|err| err.to_string())
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            serde_urlencoded::from_bytes(&body).map_err(|err| err.to_string())
        } else {
            Ok(SqlParams {
                query: Some(String::from_utf8_lossy(&body).into_owned()),
                format: None,
            })
        };
        match from_body {
            Ok(from_body) => {
                params.query = from_body.query.or(params.query);
                params.format = from_body.format.or(params.format);
            }
            Err(err) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid request body: {err}"),
                )
            }
        }
    }
    let Some(query) = params.query.filter(|query| !query.trim().is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "missing parameter \"query\"".into(),
        );
    };
    let format = params.format.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "csv" | "arrow") {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("unknown format {format:?}: use json, csv or arrow"),
        );
    }
    state.metrics.sql_queries.fetch_add(1, Ordering::Relaxed);
    let (schema, batches) = match state.sql.query(&query).await {
        Ok(result) => result,
        Err(vigil_queries::Error::Plan(message)) => {
            return api_error(StatusCode::BAD_REQUEST, "bad_data", message)
        }
        Err(err) => {
            return api_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "execution",
                err.to_string(),
            )
        }
    };
    match encode_result(&format, schema, &batches) {
        Ok(response) => response,
        Err(err) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            err.to_string(),
        ),
    }
}

fn encode_result(
    format: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> anyhow::Result<Response> {
    use datafusion::arrow::{csv, ipc, json as arrow_json};
    Ok(match format {
        "csv" => {
            let mut out = Vec::new();
            {
                let mut writer = csv::WriterBuilder::new().with_header(true).build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response()
        }
        "arrow" => {
            let mut out = Vec::new();
            {
                let mut writer = ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            (
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                out,
            )
                .into_response()
        }
        _ => {
            let mut out = Vec::new();
            {
                let mut writer = arrow_json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            let rows: serde_json::Value = if out.is_empty() {
                json!([])
            } else {
                serde_json::from_slice(&out)?
            };
            let columns: Vec<_> = schema
                .fields()
                .iter()
                .map(|field| json!({"name": field.name(), "type": field.data_type().to_string()}))
                .collect();
            Json(json!({"status": "success", "data": {"columns": columns, "rows": rows}}))
                .into_response()
        }
    })
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

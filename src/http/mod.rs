//! The HTTP layer: one module per protocol, each with its `routes()`, over one shared
//! [`AppState`]; each protocol family renders errors in its own shape (`error.rs`).
//! The only place that knows HTTP and JSON.
//!
//! | module | serves |
//! |---|---|
//! | `prometheus.rs` | the Prometheus query API (`/api/v1/query`, `query_range`, `series`, `labels`, `label/…/values`, `metadata`, `format_query`, `parse_query`, `status/buildinfo`) |
//! | `remote_write.rs` | `POST /api/v1/write` |
//! | `sql.rs` | `/api/v1/sql` |
//! | `alerts.rs` | `/api/v1/rules`, `/api/v1/alerts`, the websocket `/api/v1/alerts/stream` |
//! | `continuous.rs` | continuous queries: `/api/v1/continuous` (create, list, drop) and the websocket `/api/v1/subscribe` |
//! | `loki.rs` | `POST /loki/api/v1/push` (logs) |
//! | `elastic.rs` | Elasticsearch `_bulk` and the handshake log shippers make (logs) |
//! | `otlp.rs` | OTLP/HTTP `POST /v1/traces`, `/v1/logs`, `/v1/metrics` (and the `export_*` shared with gRPC) |
//! | `otlp_grpc.rs` | OTLP/gRPC (tonic services) on `--otlp.grpc-listen`, HTTP/2 |
//! | `jaeger.rs` | the Jaeger query API (`/api/services`, `/api/traces` …) over `spans` |
//! | `lifecycle.rs` | `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload` |
//! | `auth.rs`, `web_config.rs` | the Origin/Host checks, credentials and scopes in front of every route |
//! | `listener.rs` | the accept loop (TLS, header timeout, connection cap) |

pub mod alerts;
pub mod auth;
pub mod continuous;
pub mod elastic;
pub mod error;
pub mod jaeger;
pub mod lifecycle;
pub mod listener;
pub mod loki;
pub mod otlp;
pub mod otlp_grpc;
pub mod prometheus;
pub mod remote_write;
pub mod sql;
pub mod web_config;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use parking_lot::RwLock;
use vigil_connectors::remote_write::{MetricMetadata, SeriesInterner};
use vigil_queries::SqlEngine;
use vigil_storage::Storage;

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
    /// Continuous queries (set by `run::serve`).
    pub continuous: std::sync::OnceLock<Arc<vigil_engine::continuous::ContinuousQueries>>,
    /// remote_write label sets already seen (decoding a known series allocates nothing).
    pub interner: SeriesInterner,
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
            continuous: std::sync::OnceLock::new(),
            interner: SeriesInterner::new(1 << 20),
        }))
    }
}

/// Every route, behind the Origin check only (no credentials); see [`app_with`].
pub fn app(state: Arc<AppState>) -> Router {
    app_with(state, Arc::new(auth::Access::open()))
}

/// Every protocol's routes behind `access` (Host and Origin checks, credentials and
/// scopes: [`auth`]).
pub fn app_with(state: Arc<AppState>, access: Arc<auth::Access>) -> Router {
    // The compressed body may not exceed the decompressed limit either.
    let body_limit = match state.storage.limits().max_body_bytes {
        0 => usize::MAX,
        limit => limit,
    };
    Router::new()
        .merge(prometheus::routes())
        .merge(remote_write::routes())
        .merge(sql::routes())
        .merge(alerts::routes())
        .merge(continuous::routes())
        .merge(lifecycle::routes())
        .merge(loki::routes())
        .merge(elastic::routes())
        .merge(otlp::routes())
        .merge(jaeger::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            access,
            auth::middleware,
        ))
        .with_state(state)
}

pub use error::api_error;

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

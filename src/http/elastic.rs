//! The Elasticsearch API subset log shippers use: `POST /_bulk` and `/<index>/_bulk`
//! (Fluentd and Fluent Bit `elasticsearch` outputs, Logstash, the official clients), and
//! the handshake they make first (`GET /`, `HEAD /`, `_license`, `_xpack`, index
//! templates). Every answer carries `X-Elastic-Product: Elasticsearch` (the official
//! clients refuse a server without it). Bulk answers list one result per action, as
//! Elasticsearch does: accepted documents 201, refused ones their error, the rest kept.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use vigil_connectors::elastic::{self, BulkItem};

use super::AppState;

/// The Elasticsearch version Vigil answers as (clients check the major version).
const VERSION: &str = "8.11.0";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(info).head(|| async { StatusCode::OK }))
        .route("/_bulk", post(bulk).put(bulk))
        .route("/{index}/_bulk", post(bulk_index).put(bulk_index))
        .route("/_license", get(license))
        .route("/_xpack", get(xpack))
        .route(
            "/_index_template/{name}",
            get(no_template).head(no_template).put(acknowledged),
        )
        .route(
            "/_template/{name}",
            get(no_template).head(no_template).put(acknowledged),
        )
        .route("/_ilm/policy/{name}", get(no_template).put(acknowledged))
        .layer(axum::middleware::map_response(product_header))
}

async fn product_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

/// Elasticsearch's error object: `{"error":{"root_cause":[…],"type":…,"reason":…},"status":…}`.
pub struct ElasticError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub reason: String,
}

impl IntoResponse for ElasticError {
    fn into_response(self) -> Response {
        let cause = json!({"type": self.kind, "reason": self.reason});
        (
            self.status,
            Json(json!({
                "error": {"root_cause": [cause], "type": self.kind, "reason": self.reason},
                "status": self.status.as_u16(),
            })),
        )
            .into_response()
    }
}

impl From<elastic::BulkError> for ElasticError {
    fn from(err: elastic::BulkError) -> Self {
        ElasticError {
            status: StatusCode::BAD_REQUEST,
            kind: err.kind,
            reason: err.reason,
        }
    }
}

impl From<vigil_storage::Error> for ElasticError {
    fn from(err: vigil_storage::Error) -> Self {
        let (status, kind) = match err.kind() {
            vigil_storage::ErrorKind::BadData => {
                (StatusCode::BAD_REQUEST, "illegal_argument_exception")
            }
            vigil_storage::ErrorKind::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_shards_exception",
            ),
            vigil_storage::ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
        };
        ElasticError {
            status,
            kind,
            reason: err.to_string(),
        }
    }
}

async fn info() -> Json<Value> {
    Json(json!({
        "name": "vigil",
        "cluster_name": "vigil",
        "cluster_uuid": "vigil",
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "vigil",
            "lucene_version": "9.8.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }))
}

async fn license() -> Json<Value> {
    Json(json!({"license": {"status": "active", "type": "basic", "uid": "vigil"}}))
}

async fn xpack() -> Json<Value> {
    Json(json!({
        "build": {},
        "license": {"status": "active", "type": "basic", "mode": "basic"},
        "features": {},
    }))
}

/// Templates and policies are accepted and not kept: Vigil's `logs` schema is fixed.
async fn acknowledged() -> Json<Value> {
    Json(json!({"acknowledged": true}))
}

async fn no_template(Path(name): Path<String>) -> ElasticError {
    ElasticError {
        status: StatusCode::NOT_FOUND,
        kind: "resource_not_found_exception",
        reason: format!("index template matching [{name}] not found"),
    }
}

async fn bulk(state: State<Arc<AppState>>, body: Bytes) -> Result<Response, ElasticError> {
    run_bulk(state, None, body).await
}

async fn bulk_index(
    state: State<Arc<AppState>>,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Response, ElasticError> {
    run_bulk(state, Some(index), body).await
}

async fn run_bulk(
    State(state): State<Arc<AppState>>,
    index: Option<String>,
    body: Bytes,
) -> Result<Response, ElasticError> {
    let started = Instant::now();
    let observed = super::now_ms();
    let mut items = elastic::parse_bulk(&body, index.as_deref(), observed)?;
    // Documents outside the time bounds are refused one by one; the rest are written
    // together, as one durable batch.
    for item in &mut items {
        if let Ok(record) = &item.outcome {
            if let Err(err) = state.storage.check_log_time(record.timestamp_ms) {
                state.metrics.reject(err.reason());
                item.outcome = Err(elastic::ItemError {
                    status: 400,
                    kind: "document_parsing_exception",
                    reason: err.to_string(),
                });
            }
        }
    }
    let records: Vec<_> = items
        .iter()
        .filter_map(|item| item.outcome.as_ref().ok().cloned())
        .collect();
    state.storage.append_logs(records).await?;
    let mut errors = false;
    let results: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(n, item)| item_result(item, n, &mut errors))
        .collect();
    Ok(Json(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": results,
    }))
    .into_response())
}

fn item_result(item: &BulkItem, n: usize, errors: &mut bool) -> Value {
    let id = item
        .id
        .clone()
        .unwrap_or_else(|| format!("vigil-{}-{n}", super::now_ms()));
    let result = match &item.outcome {
        Ok(_) => json!({
            "_index": item.index,
            "_id": id,
            "_version": 1,
            "result": "created",
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "_seq_no": n,
            "_primary_term": 1,
            "status": 201,
        }),
        Err(err) => {
            *errors = true;
            json!({
                "_index": item.index,
                "_id": id,
                "status": err.status,
                "error": {"type": err.kind, "reason": err.reason},
            })
        }
    };
    json!({ item.action.clone(): result })
}

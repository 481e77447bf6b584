//! `POST /loki/api/v1/push` (Promtail, Grafana Alloy): snappy protobuf or JSON; 204 once
//! the records are durable, 400 with Loki's plain-text message for a malformed push
//! (nothing of it is stored).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use vigil_connectors::loki;

use super::error::PlainError;
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/loki/api/v1/push", post(push))
}

async fn push(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, PlainError> {
    let observed = super::now_ms();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let records = if content_type.starts_with("application/json") {
        loki::decode_json(&body, observed)
    } else {
        loki::decode_protobuf(&body, observed)
    }
    .map_err(|err| {
        state.metrics.reject("loki_malformed");
        PlainError(StatusCode::BAD_REQUEST, err.to_string())
    })?;
    state.storage.append_logs(records).await.map_err(|err| {
        state.metrics.reject(err.reason());
        PlainError::from(err)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

//! Prometheus' lifecycle and self-monitoring endpoints: `/metrics`, `/-/healthy`,
//! `/-/ready`, `/-/reload` (plain-text answers, as Prometheus gives).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::error::PlainError;
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/-/healthy", get(|| async { "Vigil is Healthy.\n" }))
        .route("/-/ready", get(ready_handler))
        .route("/-/reload", post(reload_handler).put(reload_handler))
}

/// `POST /-/reload`: re-reads the rule files (500 with the reason if they are invalid,
/// the running rules stay), as Prometheus' lifecycle endpoint.
async fn reload_handler(State(state): State<Arc<AppState>>) -> Result<StatusCode, PlainError> {
    let Some(rules) = state.rules.get() else {
        return Ok(StatusCode::OK);
    };
    let rules = rules.clone();
    tokio::task::spawn_blocking(move || rules.reload())
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("reload task failed: {err}")))
        .map_err(|err| {
            PlainError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to reload config: {err:#}"),
            )
        })?;
    Ok(StatusCode::OK)
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
        (StatusCode::OK, "Vigil is Ready.\n").into_response()
    } else {
        PlainError(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable".into(),
        )
        .into_response()
    }
}

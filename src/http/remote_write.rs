//! `POST /api/v1/write`: the remote_write receiver, as Prometheus'
//! `storage/remote/write_handler.go`: 204 on success, 400 with a plain-text message for
//! bodies that can never succeed, 5xx only when a retry may.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tracing::debug;
use vigil_connectors::remote_write::{self, MetricMetadata};
use vigil_storage::AppendMode;

use super::error::PlainError;
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/write", post(write))
}

/// Metric families whose metadata is kept (Prometheus keeps metadata per target; one
/// entry per family here). New families beyond it are dropped and counted.
pub const MAX_METADATA_ENTRIES: usize = 100_000;
/// Longest `help` text kept (longer ones are cut at a character boundary).
pub const MAX_METADATA_HELP_BYTES: usize = 4096;

async fn write(State(state): State<Arc<AppState>>, body: Bytes) -> Result<StatusCode, PlainError> {
    state
        .metrics
        .remote_write_requests
        .fetch_add(1, Ordering::Relaxed);
    let decoded = remote_write::decode_with(&body, state.storage.limits(), Some(&state.interner))
        .map_err(|err| {
        let reason = match &err {
            vigil_connectors::Error::TooLarge { .. } => "too_large",
            vigil_connectors::Error::Storage(inner) => inner.reason(),
            vigil_connectors::Error::Snappy(_) => "snappy",
            _ => "decode",
        };
        state.metrics.reject(reason);
        debug!(error = %err, "remote_write body rejected");
        PlainError::from(err)
    })?;
    state
        .metrics
        .exemplars_ignored
        .fetch_add(decoded.exemplars as u64, Ordering::Relaxed);
    state
        .metrics
        .histograms_ignored
        .fetch_add(decoded.histograms as u64, Ordering::Relaxed);
    state
        .storage
        .append(decoded.batch, AppendMode::Strict)
        .await
        .map_err(|err| {
            state.metrics.reject(err.reason());
            PlainError::from(err)
        })?;
    // Metadata of a rejected request is not kept.
    remember_metadata(&state, decoded.metadata);
    Ok(StatusCode::NO_CONTENT)
}

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

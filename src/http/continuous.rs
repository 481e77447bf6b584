//! Continuous queries over HTTP: `POST /api/v1/continuous` (create), `GET
//! /api/v1/continuous` (list with status), `GET`/`DELETE /api/v1/continuous/{name}`,
//! and the websocket `GET /api/v1/subscribe?name=…[&from_seq=N]`: a snapshot (or, with
//! `from_seq`, the change batches after it), then change batches and progress messages
//! as `vigil_engine::continuous::subscription` describes. A client that stops reading is
//! closed with 1008 "slow consumer"; a query that is dropped closes its subscribers
//! with 1000 "dropped".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use vigil_engine::continuous::{ContinuousError, ContinuousQueries, Definition};

use super::error::ApiError;
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/continuous", get(list).post(create))
        .route(
            "/api/v1/continuous/{name}",
            get(describe).delete(drop_query),
        )
        .route("/api/v1/subscribe", get(subscribe))
}

impl From<ContinuousError> for ApiError {
    fn from(err: ContinuousError) -> Self {
        let (status, kind) = match &err {
            ContinuousError::Unsupported(_) | ContinuousError::Invalid(_) => {
                (StatusCode::BAD_REQUEST, "bad_data")
            }
            ContinuousError::Exists(_) => (StatusCode::CONFLICT, "bad_data"),
            ContinuousError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ContinuousError::Limit(_) => (StatusCode::TOO_MANY_REQUESTS, "unavailable"),
            ContinuousError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError(status, kind, err.to_string())
    }
}

fn service(state: &AppState) -> Result<Arc<ContinuousQueries>, ApiError> {
    state.continuous.get().cloned().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "continuous queries are not running".into(),
        )
    })
}

async fn create(
    State(state): State<Arc<AppState>>,
    principal: Option<axum::Extension<super::auth::Principal>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let mut definition: Definition = serde_json::from_slice(&body).map_err(|err| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid continuous query definition: {err}"),
        )
    })?;
    // The owner is who asked (counted against the per-client cap), never what the body
    // says.
    definition.owner = principal.map(|p| p.0 .0).unwrap_or_default();
    let created = service(&state)?.create(definition).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"status": "success", "data": created})),
    )
        .into_response())
}

async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let data = service(&state)?.list();
    Ok(Json(json!({"status": "success", "data": data})).into_response())
}

async fn describe(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let data = service(&state)?.describe(&name)?;
    Ok(Json(json!({"status": "success", "data": data})).into_response())
}

async fn drop_query(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    service(&state)?.drop_query(&name).await?;
    Ok(Json(json!({"status": "success"})).into_response())
}

async fn subscribe(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<axum::Extension<super::auth::Principal>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(inline) = query.get("query") {
        return subscribe_inline(state, &query, inline, principal, upgrade).await;
    }
    let Some(name) = query.get("name") else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "missing parameter \"name\" (the continuous query to subscribe to) or \"query\" (an inline SQL query)".into(),
        ));
    };
    let from_seq = match query.get("from_seq") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"from_seq\": {text:?} is not a sequence number"),
            )
        })?),
    };
    // Subscribed before the upgrade: an unknown name is a 404, not a closed socket.
    let subscription = service(&state)?.subscribe(name, from_seq)?;
    Ok(upgrade.on_upgrade(move |socket| stream(socket, subscription)))
}

/// `?query=SELECT …[&horizon_ms=N]`: a continuous SQL query for this connection only,
/// dropped when it closes. Creating one is a write-scope operation, as
/// `POST /api/v1/continuous` is (`auth::required_scope`), and it counts against the same
/// caps.
async fn subscribe_inline(
    state: Arc<AppState>,
    query: &HashMap<String, String>,
    inline: &str,
    principal: Option<axum::Extension<super::auth::Principal>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if query.contains_key("name") || query.contains_key("from_seq") {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "an inline query has no name and nothing to resume: give \"query\" alone".into(),
        ));
    }
    let horizon_ms = match query.get("horizon_ms") {
        None => vigil_engine::continuous::DEFAULT_HORIZON_MS,
        Some(text) => text.parse::<i64>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"horizon_ms\": {text:?} is not a number"),
            )
        })?,
    };
    let owner = principal.map(|p| p.0 .0).unwrap_or_default();
    let service = service(&state)?;
    let (name, subscription) = service
        .create_inline(inline.to_string(), horizon_ms, owner)
        .await?;
    // Dropped with the connection, or with the upgrade if it never completes.
    let inline = Inline { service, name };
    Ok(upgrade.on_upgrade(move |socket| async move {
        stream(socket, subscription).await;
        drop(inline);
    }))
}

/// An inline query, dropped when this is.
struct Inline {
    service: Arc<ContinuousQueries>,
    name: String,
}

impl Drop for Inline {
    fn drop(&mut self) {
        let (service, name) = (self.service.clone(), std::mem::take(&mut self.name));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = service.drop_query(&name).await {
                    tracing::warn!(query = %name, error = %err, "inline continuous query not dropped");
                }
            });
        }
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(frame)).await;
}

/// A client that does not take a message within this long is closed as a slow consumer
/// (its TCP window is full: it stopped reading).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one text message; false when the client is gone or stalled (then it has been
/// sent a close frame, if that was possible).
async fn send(socket: &mut WebSocket, text: String) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!("subscriber stalled: closed as a slow consumer");
            close(socket, 1008, "slow consumer").await;
            false
        }
    }
}

/// Follows a hub subscription on a websocket: its messages as `render` makes them
/// (any number of texts per message), each change batch once (the initial messages
/// cover what was published before the subscription was taken), `heartbeat()` every
/// `HEARTBEAT` if given; a stopped query closes with 1011, a consumer that falls behind
/// with 1008. Both `/api/v1/subscribe` and `/api/v1/alerts/stream` are this.
pub(super) async fn follow(
    mut socket: WebSocket,
    subscription: vigil_engine::continuous::Subscription,
    mut render: impl FnMut(&vigil_engine::continuous::Message) -> Vec<String>,
    heartbeat: Option<&(dyn Fn() -> String + Send + Sync)>,
) {
    use vigil_engine::continuous::MessageKind;
    let vigil_engine::continuous::Subscription {
        initial,
        mut receiver,
    } = subscription;
    let mut last = 0;
    for message in initial {
        last = message.seq;
        for text in render(&message) {
            if !send(&mut socket, text).await {
                return;
            }
        }
        if message.kind == MessageKind::Stopped {
            return close(&mut socket, 1011, "query stopped").await;
        }
    }
    let mut beats = tokio::time::interval(HEARTBEAT);
    beats.tick().await;
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Ok(message) => {
                    if message.kind == MessageKind::Changes && message.seq <= last {
                        continue;
                    }
                    last = last.max(message.seq);
                    for text in render(&message) {
                        if !send(&mut socket, text).await {
                            return;
                        }
                    }
                    if message.kind == MessageKind::Stopped {
                        return close(&mut socket, 1011, "query stopped").await;
                    }
                }
                Err(RecvError::Lagged(_)) => return close(&mut socket, 1008, "slow consumer").await,
                Err(RecvError::Closed) => return close(&mut socket, 1000, "dropped").await,
            },
            _ = beats.tick(), if heartbeat.is_some() => {
                if let Some(beat) = heartbeat {
                    if !send(&mut socket, beat()).await {
                        return;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The interval of heartbeats, where a stream sends them.
const HEARTBEAT: Duration = Duration::from_secs(15);

async fn stream(socket: WebSocket, subscription: vigil_engine::continuous::Subscription) {
    follow(
        socket,
        subscription,
        |message| vec![message.json.clone()],
        None,
    )
    .await
}

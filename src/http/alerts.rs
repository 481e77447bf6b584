//! Rules and alerts over HTTP: `/api/v1/rules` and `/api/v1/alerts` in Prometheus'
//! shape, and the websocket alert stream `/api/v1/alerts/stream`.
//!
//! The stream sends the current pending and firing alerts on connect, then every
//! transition (pending, firing, resolved) as one JSON message in Alertmanager's alert
//! shape with `seq` and `status`; `?match={severity="critical"}` (or
//! `?match=severity="critical"`) filters by labels; a heartbeat every 15 seconds; a
//! consumer that falls behind the engine is closed with code 1008 and reason
//! "slow consumer" instead of slowing anything down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use promql_parser::label::Matcher;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::error::api_error;
use super::AppState;

const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/rules", get(rules_handler))
        .route("/api/v1/alerts", get(alerts_handler))
        .route("/api/v1/alerts/stream", get(stream_handler))
}

pub async fn rules_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let data = match state.rules.get() {
        Some(rules) => rules.rules_api(query.get("type").map(String::as_str)),
        None => json!({"groups": []}),
    };
    Json(json!({"status": "success", "data": data})).into_response()
}

pub async fn alerts_handler(State(state): State<Arc<AppState>>) -> Response {
    let data = match state.rules.get() {
        Some(rules) => rules.alerts_api(),
        None => json!({"alerts": []}),
    };
    Json(json!({"status": "success", "data": data})).into_response()
}

/// Label matchers from `match`: a selector `{a="b"}` or its inside `a="b",c=~"d"`.
fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let selector = if text.trim_start().starts_with('{') {
        text.to_string()
    } else {
        format!("{{{text}}}")
    };
    match vigil_queries::promql::parse_bounded(&selector, Default::default()) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) => Ok(vs.matchers.matchers),
        Ok(_) => Err(format!("{text:?} is not a label matcher list")),
        Err(err) => Err(err),
    }
}

pub async fn stream_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let matchers = match query.get("match").map(|m| parse_matchers(m)) {
        None => Vec::new(),
        Some(Ok(matchers)) => matchers,
        Some(Err(err)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"match\": {err}"),
            )
        }
    };
    let Some(rules) = state.rules.get().cloned() else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no rules are loaded".into(),
        );
    };
    upgrade.on_upgrade(move |socket| stream(socket, rules, matchers))
}

/// A client that does not take a message within this long is closed as a slow consumer
/// (its TCP window is full: it stopped reading).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends one text message; false when the client is gone or stalled (then it has been
/// sent a close frame, if that was possible).
async fn send(socket: &mut WebSocket, text: String) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!("alert stream client stalled: closed as a slow consumer");
            let close = Message::Close(Some(CloseFrame {
                code: 1008,
                reason: "slow consumer".into(),
            }));
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), socket.send(close)).await;
            false
        }
    }
}

async fn stream(
    mut socket: WebSocket,
    rules: Arc<crate::rule_manager::RuleManager>,
    matchers: Vec<Matcher>,
) {
    let wanted =
        |labels: &vigil_storage::LabelSet| vigil_queries::promql::matches(&matchers, labels);
    // Subscribe before the snapshot so no transition falls in between.
    let mut events = rules.subscribe();
    let snapshot_seq = rules.last_seq();
    for (labels, mut alert) in rules.current_alerts() {
        if !wanted(&labels) {
            continue;
        }
        alert["seq"] = json!(snapshot_seq);
        alert["snapshot"] = json!(true);
        if !send(&mut socket, alert.to_string()).await {
            return;
        }
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if event.seq <= snapshot_seq || !wanted(&event.labels) {
                        continue;
                    }
                    if !send(&mut socket, event.json.to_string()).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let close = Message::Close(Some(CloseFrame {
                        code: 1008,
                        reason: "slow consumer".into(),
                    }));
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(close)).await;
                    return;
                }
                Err(RecvError::Closed) => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(None))).await;
                    return;
                }
            },
            _ = heartbeat.tick() => {
                let beat = json!({"type": "heartbeat", "seq": rules.last_seq()});
                if !send(&mut socket, beat.to_string()).await {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

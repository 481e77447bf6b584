//! Rules and alerts over HTTP: `/api/v1/rules` and `/api/v1/alerts` in Prometheus'
//! shape, and the websocket alert stream `/api/v1/alerts/stream`.
//!
//! The stream is a subscription to the alerts hub (the one behind
//! `/api/v1/subscribe?name=alerts`), rendered in Alertmanager's alert shape: on connect
//! the current pending and firing alerts (`snapshot: true`), then every transition
//! (pending, firing, resolved) as one JSON message with `seq` (the hub's change batch),
//! `status` and `from`; `?from_seq=N` resumes after batch `N` (also across restarts:
//! the batches the client missed, or a snapshot when they are gone);
//! `?match={severity="critical"}` (or `?match=severity="critical"`) filters by labels; a
//! heartbeat every 15 seconds; a consumer that falls behind is closed with code 1008
//! and reason "slow consumer" instead of slowing anything down.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use promql_parser::label::Matcher;
use serde_json::json;

use super::error::api_error;
use super::AppState;

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
    let from_seq = match query.get("from_seq").map(|text| text.parse::<u64>()) {
        None => None,
        Some(Ok(seq)) => Some(seq),
        Some(Err(_)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "invalid parameter \"from_seq\": not a sequence number".into(),
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
    // Subscribed before the upgrade, so nothing published in between is missed.
    let subscription = rules.alerts_hub().subscribe(from_seq);
    upgrade.on_upgrade(move |socket| stream(socket, rules, subscription, matchers))
}

async fn stream(
    socket: WebSocket,
    rules: Arc<crate::rule_manager::RuleManager>,
    subscription: vigil_engine::continuous::Subscription,
    matchers: Vec<Matcher>,
) {
    let render = |message: &vigil_engine::continuous::Message| {
        rules
            .stream_messages(message)
            .into_iter()
            .filter(|(labels, _)| vigil_queries::promql::matches(&matchers, labels))
            .map(|(_, alert)| alert.to_string())
            .collect()
    };
    let beat_rules = rules.clone();
    let heartbeat = move || {
        json!({"type": "heartbeat", "seq": beat_rules.alerts_hub().position().0}).to_string()
    };
    super::continuous::follow(socket, subscription, render, Some(&heartbeat)).await
}

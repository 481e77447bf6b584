//! JSON rendering for the HTTP API and the alert stream: `/api/v1/rules`,
//! `/api/v1/alerts`, and the alert messages of `/api/v1/alerts/stream` (also the
//! snapshot a new subscriber gets). Free functions over the group states the
//! `RuleManager` locks and hands them.

use serde_json::{json, Value as JsonValue};
use vigil_engine::alerting::{Alert, AlertState, GroupState};
use vigil_engine::rules::{Group, RuleKind};
use vigil_storage::LabelSet;

use super::notifier::RESEND_MS;

pub(super) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(super) fn labels_json(labels: &LabelSet) -> JsonValue {
    JsonValue::Object(
        labels
            .labels()
            .iter()
            .map(|l| (l.name.clone(), JsonValue::String(l.value.clone())))
            .collect(),
    )
}

/// The alert as Alertmanager receives it, plus `status` and Vigil's fields.
pub(super) fn alert_json(alert: &Alert, at: i64, generator_url: &str) -> JsonValue {
    let status = match alert.state {
        AlertState::Inactive => "resolved",
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
    };
    let ends_at = match alert.resolved_at {
        Some(resolved) => rfc3339(resolved),
        None => rfc3339(at + 4 * RESEND_MS),
    };
    json!({
        "labels": labels_json(&alert.labels),
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.fired_at.unwrap_or(alert.active_at)),
        "endsAt": ends_at,
        "generatorURL": generator_url,
        "status": status,
        "activeAt": rfc3339(alert.active_at),
        "value": vigil_queries::promql::format_value(alert.value),
    })
}

/// Pending and firing alerts, in the stream's shape (sent to a new subscriber).
pub(super) fn current_alerts(
    groups: &[GroupState],
    at: i64,
    generator_url: &str,
) -> Vec<(LabelSet, JsonValue)> {
    groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.alerts())
        .filter(|a| a.state != AlertState::Inactive)
        .map(|a| (a.labels.clone(), alert_json(a, at, generator_url)))
        .collect()
}

/// `GET /api/v1/alerts` data.
pub(super) fn alerts_api(groups: &[GroupState]) -> JsonValue {
    let alerts: Vec<JsonValue> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.alerts())
        .filter(|a| a.state != AlertState::Inactive)
        .map(alert_api_json)
        .collect();
    json!({ "alerts": alerts })
}

/// `GET /api/v1/rules` data (`type` = `alert` or `record` filters), with each
/// rule's incremental fallback (`None`: maintained incrementally) and each group's
/// evaluation interval in ms.
pub(super) fn rules_api(
    groups: &[GroupState],
    fallbacks: &[Vec<Option<String>>],
    kind: Option<&str>,
    group_interval: impl Fn(&Group) -> i64,
) -> JsonValue {
    let groups: Vec<JsonValue> = groups
        .iter()
        .enumerate()
        .map(|(group_index, g)| {
            let rules: Vec<JsonValue> = g
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| match kind {
                    Some("alert") => r.rule.kind == RuleKind::Alerting,
                    Some("record") => r.rule.kind == RuleKind::Recording,
                    _ => true,
                })
                .map(|(rule_index, r)| {
                    let fallback = fallbacks
                        .get(group_index)
                        .and_then(|g| g.get(rule_index))
                        .cloned()
                        .unwrap_or_else(|| Some("not compiled".into()));
                    let common = json!({
                        "name": r.rule.name,
                        "query": r.rule.expr_text.trim(),
                        "labels": r.rule.labels,
                        "health": r.health,
                        "lastError": r.last_error.clone().unwrap_or_default(),
                        "evaluationTime": r.evaluation_ms / 1000.0,
                        "lastEvaluation": r.last_evaluation.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                        "incremental": fallback.is_none(),
                    });
                    let mut rule = common;
                    if let Some(reason) = fallback {
                        rule["incrementalFallback"] = json!(reason);
                    }
                    match r.rule.kind {
                        RuleKind::Recording => {
                            rule["type"] = json!("recording");
                        }
                        RuleKind::Alerting => {
                            let alerts: Vec<JsonValue> = r
                                .alerts()
                                .into_iter()
                                .filter(|a| a.state != AlertState::Inactive)
                                .map(alert_api_json)
                                .collect();
                            let state = if alerts.iter().any(|a| a["state"] == "firing") {
                                "firing"
                            } else if alerts.is_empty() {
                                "inactive"
                            } else {
                                "pending"
                            };
                            rule["type"] = json!("alerting");
                            rule["state"] = json!(state);
                            rule["duration"] = json!(r.rule.for_ms as f64 / 1000.0);
                            rule["keepFiringFor"] = json!(r.rule.keep_firing_for_ms as f64 / 1000.0);
                            rule["annotations"] = json!(r.rule.annotations);
                            rule["alerts"] = json!(alerts);
                        }
                    }
                    rule
                })
                .collect();
            json!({
                "name": g.group.name,
                "file": g.group.file,
                "interval": group_interval(&g.group) as f64 / 1000.0,
                "limit": g.group.limit,
                "rules": rules,
                "evaluationTime": g.evaluation_ms / 1000.0,
                "lastEvaluation": g.last_evaluation.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            })
        })
        .collect();
    json!({ "groups": groups })
}

fn alert_api_json(alert: &Alert) -> JsonValue {
    let mut value = json!({
        "labels": labels_json(&alert.labels),
        "annotations": alert.annotations,
        "state": alert.state.as_str(),
        "activeAt": rfc3339(alert.active_at),
        "value": vigil_queries::promql::format_value(alert.value),
    });
    if let Some(since) = alert.keep_firing_since {
        value["keepFiringSince"] = json!(rfc3339(since));
    }
    value
}

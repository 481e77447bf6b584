//! JSON rendering for the HTTP API and the alert stream: `/api/v1/rules` and
//! `/api/v1/alerts` (free functions over the group states the `RuleManager` locks and
//! hands them), and the messages of `/api/v1/alerts/stream`, made from the alerts
//! hub's messages (one subscription mechanism for the alert stream and `ALERTS`).

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

/// The alert stream's messages (`/api/v1/alerts/stream`) from one message of the alerts
/// hub: a snapshot's rows as the current alerts (`snapshot: true`); a change batch's
/// state changes as transitions, one per alert whose state changed (a retracted row
/// without a new one is a resolution at the batch's time). Each with the label set the
/// stream's `match` filters on.
pub(crate) fn stream_messages(
    message: &vigil_engine::continuous::Message,
    generator_url: &str,
) -> Vec<(LabelSet, JsonValue)> {
    use vigil_engine::continuous::MessageKind;
    let Ok(parsed) = serde_json::from_str::<JsonValue>(&message.json) else {
        return Vec::new();
    };
    let at_ms = message.time;
    let render =
        |row: &JsonValue, status: &str, ends_at: String| -> Option<(LabelSet, JsonValue)> {
            let labels_object = row.get("labels")?.as_object()?;
            let labels = LabelSet::from_pairs(
                labels_object
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default())),
            )
            .ok()?;
            let active_at = row.get("active_at").cloned().unwrap_or(JsonValue::Null);
            let starts_at = match row.get("fired_at") {
                Some(JsonValue::String(fired)) => JsonValue::String(fired.clone()),
                _ => active_at.clone(),
            };
            let value = match row.get("value") {
                Some(JsonValue::Number(n)) => {
                    vigil_queries::promql::format_value(n.as_f64().unwrap_or(f64::NAN))
                }
                Some(JsonValue::String(special)) => special.clone(),
                _ => "NaN".into(),
            };
            Some((
                labels,
                json!({
                    "labels": row["labels"],
                    "annotations": row.get("annotations").cloned().unwrap_or_else(|| json!({})),
                    "startsAt": starts_at,
                    "endsAt": ends_at,
                    "generatorURL": generator_url,
                    "status": status,
                    "activeAt": active_at,
                    "value": value,
                    "seq": message.seq,
                }),
            ))
        };
    let state_of = |row: &JsonValue| row["state"].as_str().unwrap_or("inactive").to_string();
    match message.kind {
        MessageKind::Snapshot => parsed["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| {
                let (labels, mut alert) =
                    render(row, &state_of(row), rfc3339(at_ms + 4 * RESEND_MS))?;
                alert["snapshot"] = json!(true);
                Some((labels, alert))
            })
            .collect(),
        MessageKind::Changes => {
            // Per alert (its labels): the row it had and the row it has.
            let mut changed: std::collections::BTreeMap<
                String,
                (Option<&JsonValue>, Option<&JsonValue>),
            > = std::collections::BTreeMap::new();
            for change in parsed["changes"].as_array().into_iter().flatten() {
                let row = &change["row"];
                let key = row["labels"].to_string();
                let entry = changed.entry(key).or_default();
                if change["diff"].as_i64().unwrap_or(0) < 0 {
                    entry.0 = Some(row);
                } else {
                    entry.1 = Some(row);
                }
            }
            changed
                .into_values()
                .filter_map(|(old, new)| {
                    let from = old.map_or_else(|| "inactive".to_string(), state_of);
                    let (labels, mut alert) = match new {
                        Some(row) if state_of(row) == from => return None,
                        Some(row) => render(row, &state_of(row), rfc3339(at_ms + 4 * RESEND_MS))?,
                        None => render(old?, "resolved", rfc3339(at_ms))?,
                    };
                    alert["from"] = json!(from);
                    Some((labels, alert))
                })
                .collect()
        }
        MessageKind::Progress | MessageKind::Stopped => Vec::new(),
    }
}

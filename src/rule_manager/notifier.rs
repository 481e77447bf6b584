//! The Alertmanager side of the rule manager: alerts turning firing or resolved are
//! posted to every configured Alertmanager (`POST /api/v2/alerts`), and firing and
//! recently resolved alerts are re-sent each minute, as Prometheus re-sends them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value as JsonValue};
use tracing::warn;
use vigil_engine::alerting::{Alert, AlertState, GroupState, Transition, RESOLVED_RETENTION_MS};
use vigil_storage::LabelSet;

use super::api::{labels_json, rfc3339};
use super::now_ms;

/// Prometheus re-sends active alerts to Alertmanager this often (`resendDelay`).
pub(super) const RESEND_MS: i64 = 60_000;

/// Where alerts go: a handle to the notifier task, which alone owns the Alertmanagers'
/// URLs, the HTTP client and when each alert was last sent (for the re-sends). The rule
/// manager hands it transitions and, at ticks, the alerts that may be due for a re-send;
/// it never waits for the Alertmanagers.
pub(super) struct Notifier {
    messages: Option<tokio::sync::mpsc::UnboundedSender<Message>>,
    generator_url: String,
}

enum Message {
    Transition(Transition),
    /// The firing and recently resolved alerts at tick `t`.
    Resend {
        alerts: Vec<Alert>,
        t: i64,
    },
}

/// The notifier task's state.
struct Sender {
    alertmanagers: Vec<String>,
    http: reqwest::Client,
    external_labels: BTreeMap<String, String>,
    generator_url: String,
    /// When each alert (by labels) was last sent to the Alertmanagers.
    last_sent: BTreeMap<LabelSet, i64>,
}

impl Notifier {
    /// Starts the notifier task (none without Alertmanagers).
    pub(super) fn new(
        alertmanagers: Vec<String>,
        generator_url: String,
        external_labels: BTreeMap<String, String>,
    ) -> anyhow::Result<Notifier> {
        let messages = if alertmanagers.is_empty() {
            None
        } else {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut sender = Sender {
                alertmanagers,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?,
                external_labels,
                generator_url: generator_url.clone(),
                last_sent: BTreeMap::new(),
            };
            tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    match message {
                        Message::Transition(transition) => sender.transition(&transition),
                        Message::Resend { alerts, t } => sender.resend(&alerts, t),
                    }
                }
            });
            Some(tx)
        };
        Ok(Notifier {
            messages,
            generator_url,
        })
    }

    /// The `generatorURL` of every alert (the external URL).
    pub(super) fn generator_url(&self) -> &str {
        &self.generator_url
    }

    /// Hands a transition to the notifier task (sent if it is to firing or resolved).
    pub(super) fn notify(&self, transition: &Transition) {
        if let Some(messages) = &self.messages {
            if matches!(
                transition.alert.state,
                AlertState::Firing | AlertState::Inactive
            ) {
                let _ = messages.send(Message::Transition(transition.clone()));
            }
        }
    }

    /// Hands the notifier the alerts that may be due for a re-send at tick `t`: firing,
    /// and resolved within the retention.
    pub(super) fn resend(&self, groups: &[GroupState], t: i64) {
        let Some(messages) = &self.messages else {
            return;
        };
        let alerts: Vec<Alert> = groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(|r| r.active.values())
            .filter(|alert| match alert.state {
                AlertState::Firing => true,
                AlertState::Inactive => alert
                    .resolved_at
                    .is_some_and(|resolved| t - resolved <= RESOLVED_RETENTION_MS),
                AlertState::Pending => false,
            })
            .cloned()
            .collect();
        if !alerts.is_empty() {
            let _ = messages.send(Message::Resend { alerts, t });
        }
    }
}

impl Sender {
    fn transition(&mut self, transition: &Transition) {
        let body = json!([self.alertmanager_json(&transition.alert, transition.at)]);
        self.last_sent
            .insert(transition.alert.labels.clone(), now_ms());
        self.send(body);
    }

    /// Re-sends the alerts not sent for a minute.
    fn resend(&mut self, alerts: &[Alert], t: i64) {
        let now = now_ms();
        let mut batch = Vec::new();
        for alert in alerts {
            let last = self
                .last_sent
                .get(&alert.labels)
                .copied()
                .unwrap_or(i64::MIN);
            if now.saturating_sub(last) >= RESEND_MS {
                batch.push(self.alertmanager_json(alert, t));
                self.last_sent.insert(alert.labels.clone(), now);
            }
        }
        if !batch.is_empty() {
            self.send(JsonValue::Array(batch));
        }
    }

    /// The alert as Alertmanager receives it, with the external labels it lacks.
    fn alertmanager_json(&self, alert: &Alert, at: i64) -> JsonValue {
        let mut labels = alert.labels.clone();
        for (k, v) in &self.external_labels {
            if labels.get(k).is_none() {
                labels.set(k, v);
            }
        }
        json!({
            "labels": labels_json(&labels),
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.fired_at.unwrap_or(alert.active_at)),
            "endsAt": match alert.resolved_at {
                Some(resolved) => rfc3339(resolved),
                None => rfc3339(at + 4 * RESEND_MS),
            },
            "generatorURL": self.generator_url,
        })
    }

    fn send(&self, body: JsonValue) {
        for url in &self.alertmanagers {
            let request = self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string());
            let url = url.clone();
            tokio::spawn(async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        warn!(%url, status = %response.status(), "alertmanager refused alerts")
                    }
                    Err(err) => warn!(%url, error = %err, "cannot send alerts"),
                }
            });
        }
    }
}

//! The Alertmanager side of the rule manager: alerts turning firing or resolved are
//! posted to every configured Alertmanager (`POST /api/v2/alerts`), and firing and
//! recently resolved alerts are re-sent each minute, as Prometheus re-sends them.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value as JsonValue};
use tracing::warn;
use vigil_engine::alerting::{Alert, AlertState, GroupState, Transition, RESOLVED_RETENTION_MS};
use vigil_storage::LabelSet;

use super::api::{labels_json, rfc3339};
use super::now_ms;

/// Prometheus re-sends active alerts to Alertmanager this often (`resendDelay`).
pub(super) const RESEND_MS: i64 = 60_000;

/// Where alerts go: the Alertmanagers' URLs, the HTTP client posting to them, and when
/// each alert was last sent (for the re-sends).
pub(super) struct Notifier {
    alertmanagers: Vec<String>,
    http: reqwest::Client,
    /// When each alert (by labels) was last sent to the Alertmanagers.
    last_sent: Mutex<BTreeMap<LabelSet, i64>>,
    generator_url: String,
}

impl Notifier {
    pub(super) fn new(
        alertmanagers: Vec<String>,
        generator_url: String,
    ) -> anyhow::Result<Notifier> {
        Ok(Notifier {
            alertmanagers,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            last_sent: Mutex::new(BTreeMap::new()),
            generator_url,
        })
    }

    /// The `generatorURL` of every alert (the external URL).
    pub(super) fn generator_url(&self) -> &str {
        &self.generator_url
    }

    /// Sends a transition to firing or resolved to the Alertmanagers (if any).
    pub(super) fn notify(
        &self,
        transition: &Transition,
        external_labels: &BTreeMap<String, String>,
    ) {
        if matches!(
            transition.alert.state,
            AlertState::Firing | AlertState::Inactive
        ) && !self.alertmanagers.is_empty()
        {
            let alert = transition.alert.clone();
            let at = transition.at;
            let body = json!([self.alertmanager_json(&alert, at, external_labels)]);
            self.last_sent.lock().insert(alert.labels.clone(), now_ms());
            self.send(body);
        }
    }

    /// The alert as Alertmanager receives it, with the external labels it lacks.
    fn alertmanager_json(
        &self,
        alert: &Alert,
        at: i64,
        external_labels: &BTreeMap<String, String>,
    ) -> JsonValue {
        let mut labels = alert.labels.clone();
        for (k, v) in external_labels {
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

    /// Re-sends firing and recently resolved alerts not sent for a minute (`groups` is
    /// locked before `last_sent`).
    pub(super) async fn resend(
        &self,
        groups: &Mutex<Vec<GroupState>>,
        external_labels: &BTreeMap<String, String>,
        t: i64,
    ) {
        if self.alertmanagers.is_empty() {
            return;
        }
        let now = now_ms();
        let mut batch = Vec::new();
        {
            let groups = groups.lock();
            let mut sent = self.last_sent.lock();
            for alert in groups
                .iter()
                .flat_map(|g| g.rules.iter())
                .flat_map(|r| r.active.values())
            {
                let due = match alert.state {
                    AlertState::Firing => true,
                    AlertState::Inactive => alert
                        .resolved_at
                        .is_some_and(|resolved| t - resolved <= RESOLVED_RETENTION_MS),
                    AlertState::Pending => false,
                };
                let last = sent.get(&alert.labels).copied().unwrap_or(i64::MIN);
                if due && now.saturating_sub(last) >= RESEND_MS {
                    batch.push(self.alertmanager_json(alert, t, external_labels));
                    sent.insert(alert.labels.clone(), now);
                }
            }
        }
        if !batch.is_empty() {
            self.send(JsonValue::Array(batch));
        }
    }
}

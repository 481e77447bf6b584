//! Elasticsearch `_bulk` (NDJSON) as Fluentd's and Fluent Bit's `elasticsearch` outputs
//! and Logstash send it: `index`/`create` actions with their documents become log
//! records; every other action gets a per-item error, as Elasticsearch reports them.
//!
//! Mapping of a document (the shape `kubernetes_metadata` produces):
//! - `@timestamp` (RFC 3339, or epoch milliseconds) → timestamp; else `timestamp`/`time`;
//!   else the time it was received;
//! - `message`, else `log`, else `msg` → body (else the document's JSON);
//! - `level`, `severity`, `log.level`, `loglevel` → severity;
//! - stream labels: `index` (the index name without a `-YYYY.MM.DD` suffix, so
//!   `logstash_format` indices of one prefix are one stream), `namespace`, `pod`,
//!   `container` (from `kubernetes.namespace_name`, `pod_name`, `container_name`) and
//!   every `kubernetes.labels.*` under its own name;
//! - `trace_id`/`traceId`/`trace.id` and `span_id`/`spanId`/`span.id`;
//! - everything else flattened with dotted names into attributes.

use std::collections::BTreeMap;

use serde_json::Value;
use vigil_storage::LogRecord;

/// One action of a bulk request and what became of it.
#[derive(Debug)]
pub struct BulkItem {
    /// `index`, `create`, `update` or `delete`, as sent.
    pub action: String,
    pub index: String,
    pub id: Option<String>,
    pub outcome: Result<LogRecord, ItemError>,
}

/// A per-item failure in Elasticsearch's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemError {
    pub status: u16,
    /// Elasticsearch's exception type (`mapper_parsing_exception` …).
    pub kind: &'static str,
    pub reason: String,
}

/// A request that cannot be read at all (Elasticsearch answers 400 for the whole request).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct BulkError {
    pub kind: &'static str,
    pub reason: String,
}

/// Parses a bulk body. `path_index` is the index of a `/<index>/_bulk` request (the
/// default for actions that name none).
pub fn parse_bulk(
    body: &[u8],
    path_index: Option<&str>,
    observed_ms: i64,
) -> Result<Vec<BulkItem>, BulkError> {
    let text = std::str::from_utf8(body).map_err(|err| BulkError {
        kind: "illegal_argument_exception",
        reason: format!("the request body is not UTF-8: {err}"),
    })?;
    let mut lines = text
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    let mut items = Vec::new();
    while let Some((number, line)) = lines.next() {
        let action: Value = serde_json::from_str(line).map_err(|_| BulkError {
            kind: "illegal_argument_exception",
            reason: format!(
                "Malformed action/metadata line [{}], expected START_OBJECT",
                number + 1
            ),
        })?;
        let Some((name, meta)) = action
            .as_object()
            .and_then(|object| (object.len() == 1).then(|| object.iter().next()).flatten())
        else {
            return Err(BulkError {
                kind: "illegal_argument_exception",
                reason: format!(
                    "Malformed action/metadata line [{}], expected a single action",
                    number + 1
                ),
            });
        };
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .or(path_index)
            .unwrap_or("")
            .to_string();
        let id = meta.get("_id").map(|id| match id {
            Value::String(id) => id.clone(),
            other => other.to_string(),
        });
        let needs_source = matches!(name.as_str(), "index" | "create" | "update");
        let source = if needs_source {
            match lines.next() {
                Some((_, source)) => Some(source),
                None => {
                    return Err(BulkError {
                        kind: "illegal_argument_exception",
                        reason: format!(
                            "The bulk request must be terminated by a newline [\\n]: action [{name}] on line [{}] has no document",
                            number + 1
                        ),
                    })
                }
            }
        } else if name == "delete" {
            None
        } else {
            return Err(BulkError {
                kind: "illegal_argument_exception",
                reason: format!(
                    "Malformed action/metadata line [{}], expected field [create], [delete], [index] or [update] but found [{name}]",
                    number + 1
                ),
            });
        };
        let outcome = if index.is_empty() {
            Err(ItemError {
                status: 400,
                kind: "action_request_validation_exception",
                reason: "Validation Failed: 1: index is missing;".into(),
            })
        } else if !matches!(name.as_str(), "index" | "create") {
            Err(ItemError {
                status: 400,
                kind: "illegal_argument_exception",
                reason: format!(
                    "vigil stores logs: [{name}] is not supported, only [index] and [create]"
                ),
            })
        } else {
            document(source.unwrap_or("{}"), &index, observed_ms)
        };
        items.push(BulkItem {
            action: name.clone(),
            index,
            id,
            outcome,
        });
    }
    Ok(items)
}

fn document(source: &str, index: &str, observed_ms: i64) -> Result<LogRecord, ItemError> {
    let parse_error = |reason: String| ItemError {
        status: 400,
        kind: "mapper_parsing_exception",
        reason,
    };
    let value: Value = serde_json::from_str(source)
        .map_err(|err| parse_error(format!("failed to parse: {err}")))?;
    let Value::Object(object) = value else {
        return Err(parse_error(
            "failed to parse: the document is not a JSON object".into(),
        ));
    };
    let mut fields = BTreeMap::new();
    flatten("", &Value::Object(object), &mut fields);
    let mut take = |names: &[&str]| names.iter().find_map(|name| fields.remove(*name));
    let timestamp_ms = match take(&["@timestamp", "timestamp", "time"]) {
        Some(text) => parse_time(&text)
            .ok_or_else(|| parse_error(format!("failed to parse field [@timestamp]: {text:?}")))?,
        None => observed_ms,
    };
    let body = take(&["message", "log", "msg"]).unwrap_or_else(|| source.to_string());
    let severity = take(&["level", "severity", "log.level", "loglevel"]).unwrap_or_default();
    let trace_id = take(&["trace_id", "traceId", "trace.id"]).unwrap_or_default();
    let span_id = take(&["span_id", "spanId", "span.id"]).unwrap_or_default();
    let mut stream = BTreeMap::new();
    stream.insert("index".to_string(), stream_of_index(index).to_string());
    for (field, label) in [
        ("kubernetes.namespace_name", "namespace"),
        ("kubernetes.pod_name", "pod"),
        ("kubernetes.container_name", "container"),
    ] {
        if let Some(value) = fields.remove(field) {
            stream.insert(label.to_string(), value);
        }
    }
    let labels: Vec<String> = fields
        .keys()
        .filter(|name| name.starts_with("kubernetes.labels."))
        .cloned()
        .collect();
    for name in labels {
        if let Some(value) = fields.remove(&name) {
            stream.insert(name["kubernetes.labels.".len()..].to_string(), value);
        }
    }
    Ok(LogRecord {
        timestamp_ms,
        observed_ms,
        stream,
        severity,
        body,
        attributes: fields,
        trace_id,
        span_id,
    })
}

/// `k8s-2026.11.23` → `k8s` (Logstash-style daily indices of one prefix are one stream).
pub fn stream_of_index(index: &str) -> &str {
    if let Some((prefix, date)) = index.rsplit_once('-') {
        let parts: Vec<&str> = date.split(['.', '-']).collect();
        if parts.len() == 3 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())) {
            return prefix;
        }
    }
    index
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (name, inner) in object {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&path, inner, out);
            }
        }
        Value::String(text) => {
            out.insert(prefix.to_string(), text.clone());
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// RFC 3339 (also with a space instead of `T`), or epoch milliseconds.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(ms) = text.parse::<f64>() {
        return ms.is_finite().then_some(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1)))
        .ok()
        .map(|time| time.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fluentd_kubernetes_documents() {
        let body = concat!(
            r#"{"index":{"_index":"k8s-2026.11.23"}}"#,
            "\n",
            r#"{"@timestamp":"2026-11-23T10:00:00.123+00:00","log":"GET /cart 500","stream":"stderr","level":"error","kubernetes":{"namespace_name":"shop","pod_name":"cart-7d9","container_name":"cart","host":"node-1","labels":{"app":"cart"}},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
            "\n",
            r#"{"delete":{"_index":"k8s","_id":"1"}}"#,
            "\n",
            r#"{"create":{}}"#,
            "\n",
            "not json\n",
        );
        let items = parse_bulk(body.as_bytes(), Some("fallback"), 5).unwrap();
        assert_eq!(items.len(), 3);
        let record = items[0].outcome.as_ref().unwrap();
        assert_eq!(record.timestamp_ms, 1_795_428_000_123);
        assert_eq!(record.body, "GET /cart 500");
        assert_eq!(record.severity, "error");
        assert_eq!(record.stream["index"], "k8s");
        assert_eq!(record.stream["namespace"], "shop");
        assert_eq!(record.stream["app"], "cart");
        assert_eq!(record.attributes["kubernetes.host"], "node-1");
        assert_eq!(record.attributes["stream"], "stderr");
        assert_eq!(record.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(items[1].outcome.as_ref().unwrap_err().status, 400);
        assert_eq!(items[2].index, "fallback");
        assert_eq!(
            items[2].outcome.as_ref().unwrap_err().kind,
            "mapper_parsing_exception"
        );
        assert!(parse_bulk(b"[1]\n{}\n", None, 0).is_err());
        assert!(parse_bulk(b"{\"index\":{}}\n", Some("x"), 0).is_err());
    }
}

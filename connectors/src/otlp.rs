//! OTLP/HTTP traces and logs (`opentelemetry-proto`'s messages; protobuf or JSON) →
//! span and log records.
//!
//! Resource attributes become a span's `resource` map (its `service.name` the span's
//! service) and a log record's stream labels (`service.name` as `service`, every other
//! resource attribute under its own name); scope and record attributes become
//! attributes. Values that are not strings are rendered as JSON.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use vigil_storage::{LogRecord, SpanRecord};

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot decode the request: {0}")]
    Decode(String),
}

/// The body's encoding, from its content type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// Decodes an OTLP message in `encoding`.
pub fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
) -> Result<T, OtlpError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|err| OtlpError::Decode(err.to_string())),
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|err| OtlpError::Decode(err.to_string()))
        }
    }
}

/// Renders an attribute value: strings as they are, everything else as JSON.
pub fn value_text(value: &Option<AnyValue>) -> String {
    let Some(value) = value.as_ref().and_then(|v| v.value.as_ref()) else {
        return String::new();
    };
    match value {
        any_value::Value::StringValue(text) => text.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(f) => f.to_string(),
        any_value::Value::BytesValue(bytes) => hex(bytes),
        any_value::Value::ArrayValue(array) => {
            let items: Vec<serde_json::Value> = array
                .values
                .iter()
                .map(|v| serde_json::Value::String(value_text(&Some(v.clone()))))
                .collect();
            serde_json::Value::Array(items).to_string()
        }
        any_value::Value::KvlistValue(list) => {
            let map: serde_json::Map<String, serde_json::Value> = list
                .values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        serde_json::Value::String(value_text(&kv.value)),
                    )
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        }
        // A reference into a profile's string table: no table here.
        any_value::Value::StringValueStrindex(index) => format!("#{index}"),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn nanos(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `ExportTraceServiceRequest` → spans. A span without a 16-byte trace id or an 8-byte
/// span id is rejected (counted in the second value, with the first reason).
pub fn decode_traces(
    body: &[u8],
    encoding: Encoding,
) -> Result<(Vec<SpanRecord>, i64, String), OtlpError> {
    Ok(spans_of(decode(body, encoding)?))
}

/// A decoded `ExportTraceServiceRequest` (from OTLP/HTTP or gRPC) → spans, the number
/// rejected and the first reason.
pub fn spans_of(request: ExportTraceServiceRequest) -> (Vec<SpanRecord>, i64, String) {
    let mut spans = Vec::new();
    let mut rejected = 0;
    let mut reason = String::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource
            .get("service.name")
            .cloned()
            .unwrap_or_else(|| "unknown_service".into());
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                    rejected += 1;
                    if reason.is_empty() {
                        reason = format!(
                            "span {:?}: trace_id must be 16 bytes and span_id 8 bytes",
                            span.name
                        );
                    }
                    continue;
                }
                let events: Vec<serde_json::Value> = span
                    .events
                    .iter()
                    .map(|event| {
                        serde_json::json!({
                            "time_ns": nanos(event.time_unix_nano),
                            "name": event.name,
                            "attributes": attributes(&event.attributes),
                        })
                    })
                    .collect();
                let (status, status_message) = match &span.status {
                    Some(status) => (
                        match status.code {
                            1 => "ok",
                            2 => "error",
                            _ => "unset",
                        },
                        status.message.clone(),
                    ),
                    None => ("unset", String::new()),
                };
                spans.push(SpanRecord {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    service: service.clone(),
                    name: span.name,
                    kind: span_kind(span.kind).into(),
                    start_ns: nanos(span.start_time_unix_nano),
                    end_ns: nanos(span.end_time_unix_nano),
                    status: status.into(),
                    status_message,
                    attributes: attributes(&span.attributes),
                    events: serde_json::Value::Array(events).to_string(),
                    resource: resource.clone(),
                });
            }
        }
    }
    (spans, rejected, reason)
}

/// `ExportLogsServiceRequest` → log records (time: the record's, else its observed
/// time, else `observed_ms`).
pub fn decode_logs(
    body: &[u8],
    encoding: Encoding,
    observed_ms: i64,
) -> Result<Vec<LogRecord>, OtlpError> {
    Ok(logs_of(decode(body, encoding)?, observed_ms))
}

/// A decoded `ExportLogsServiceRequest` → log records.
pub fn logs_of(request: ExportLogsServiceRequest, observed_ms: i64) -> Vec<LogRecord> {
    let mut records = Vec::new();
    for resource_logs in request.resource_logs {
        let mut stream = resource_logs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        if let Some(service) = stream.remove("service.name") {
            stream.insert("service".into(), service);
        }
        for scope_logs in resource_logs.scope_logs {
            for log in scope_logs.log_records {
                let time = if log.time_unix_nano > 0 {
                    log.time_unix_nano
                } else {
                    log.observed_time_unix_nano
                };
                let timestamp_ms = if time > 0 {
                    nanos(time) / 1_000_000
                } else {
                    observed_ms
                };
                records.push(LogRecord {
                    timestamp_ms,
                    observed_ms,
                    stream: stream.clone(),
                    severity: if log.severity_text.is_empty() {
                        severity_name(log.severity_number).into()
                    } else {
                        log.severity_text.to_ascii_lowercase()
                    },
                    body: value_text(&log.body),
                    attributes: attributes(&log.attributes),
                    trace_id: hex(&log.trace_id),
                    span_id: hex(&log.span_id),
                });
            }
        }
    }
    records
}

/// OTLP severity numbers (1–24) by their ranges.
fn severity_name(number: i32) -> &'static str {
    match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "",
    }
}

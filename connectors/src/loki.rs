//! Loki push (`POST /loki/api/v1/push`) as Promtail and Grafana Alloy send it: snappy
//! protobuf (`logproto.PushRequest`) or JSON (`{"streams":[{"stream":{…},"values":[[ns,
//! line, {metadata}?]]}]}`). A stream's labels become the record's stream labels, its
//! `level`/`detected_level` label (or structured metadata) the severity, structured
//! metadata the attributes (`trace_id`/`span_id` taken out). A request is accepted or
//! refused whole, as Loki does for malformed input.

use std::collections::BTreeMap;

use prost::Message;
use serde::Deserialize;
use vigil_storage::LogRecord;

/// `logproto.PushRequest` (field numbers from Loki's `push.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// `{name="value", …}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Malformed(String),
}

/// A snappy-compressed protobuf push.
pub fn decode_protobuf(body: &[u8], observed_ms: i64) -> Result<Vec<LogRecord>, PushError> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|err| PushError::Malformed(format!("snappy: {err}")))?;
    let request = PushRequest::decode(raw.as_slice())
        .map_err(|err| PushError::Malformed(format!("protobuf: {err}")))?;
    let mut records = Vec::new();
    for stream in request.streams {
        let labels = parse_labels(&stream.labels)?;
        for entry in stream.entries {
            let t = entry.timestamp.unwrap_or_default();
            let timestamp_ms = t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000;
            let metadata = entry
                .structured_metadata
                .into_iter()
                .map(|pair| (pair.name, pair.value))
                .collect();
            records.push(record(
                &labels,
                timestamp_ms,
                entry.line,
                metadata,
                observed_ms,
            ));
        }
    }
    Ok(records)
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    values: Vec<Vec<serde_json::Value>>,
}

/// A JSON push.
pub fn decode_json(body: &[u8], observed_ms: i64) -> Result<Vec<LogRecord>, PushError> {
    let push: JsonPush = serde_json::from_slice(body)
        .map_err(|err| PushError::Malformed(format!("invalid JSON push request: {err}")))?;
    let mut records = Vec::new();
    for stream in push.streams {
        for value in stream.values {
            let (ns, line) = match (value.first(), value.get(1)) {
                (Some(serde_json::Value::String(ns)), Some(serde_json::Value::String(line))) => {
                    (ns, line)
                }
                _ => {
                    return Err(PushError::Malformed(
                        "each value must be [\"<unix epoch in nanoseconds>\", \"<log line>\"]"
                            .into(),
                    ))
                }
            };
            let ns: i64 = ns.parse().map_err(|_| {
                PushError::Malformed(format!("timestamp {ns:?} is not a number of nanoseconds"))
            })?;
            let metadata = match value.get(2) {
                Some(serde_json::Value::Object(object)) => object
                    .iter()
                    .map(|(name, value)| {
                        let text = value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_string);
                        (name.clone(), text)
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            records.push(record(
                &stream.stream,
                ns.div_euclid(1_000_000),
                line.clone(),
                metadata,
                observed_ms,
            ));
        }
    }
    Ok(records)
}

fn record(
    labels: &BTreeMap<String, String>,
    timestamp_ms: i64,
    body: String,
    mut metadata: BTreeMap<String, String>,
    observed_ms: i64,
) -> LogRecord {
    let severity = ["level", "detected_level", "severity"]
        .iter()
        .find_map(|name| {
            labels
                .get(*name)
                .cloned()
                .or_else(|| metadata.get(*name).cloned())
        })
        .unwrap_or_default();
    let trace_id = metadata.remove("trace_id").unwrap_or_default();
    let span_id = metadata.remove("span_id").unwrap_or_default();
    LogRecord {
        timestamp_ms,
        observed_ms,
        stream: labels.clone(),
        severity,
        body,
        attributes: metadata,
        trace_id,
        span_id,
    }
}

/// `{a="b", c="d"}` (Prometheus label syntax, Go string escapes).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, PushError> {
    let bad = |why: &str| PushError::Malformed(format!("invalid stream labels {text:?}: {why}"));
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| bad("expected {…}"))?;
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if name.is_empty() || chars.next() != Some('=') {
            return Err(bad("expected name=\"value\""));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('"') {
            return Err(bad("expected a quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c) => value.push(c),
                    None => return Err(bad("unterminated value")),
                },
                Some(c) => value.push(c),
                None => return Err(bad("unterminated value")),
            }
        }
        labels.insert(name, value);
    }
    if labels.is_empty() {
        return Err(bad("a stream needs at least one label"));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_and_json_pushes() {
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{namespace="shop", pod="cart-1", level="warn"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 5_000_000,
                    }),
                    line: "slow \"query\"".into(),
                    structured_metadata: vec![LabelPair {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    }],
                }],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let records = decode_protobuf(&body, 1).unwrap();
        assert_eq!(records[0].timestamp_ms, 1_700_000_000_005);
        assert_eq!(records[0].stream["pod"], "cart-1");
        assert_eq!(records[0].severity, "warn");
        assert_eq!(records[0].trace_id, "abc");
        let json = br#"{"streams":[{"stream":{"app":"x"},"values":[["1700000000000000000","hi",{"user":"u1"}]]}]}"#;
        let records = decode_json(json, 1).unwrap();
        assert_eq!(records[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!(records[0].attributes["user"], "u1");
        assert!(decode_json(br#"{"streams":[{"stream":{},"values":[[1,"x"]]}]}"#, 1).is_err());
        assert!(parse_labels("{a=b}").is_err());
        assert!(decode_protobuf(b"garbage", 1).is_err());
    }
}

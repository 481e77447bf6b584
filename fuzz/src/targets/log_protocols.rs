//! The log, trace and OTLP metric decoders: Elasticsearch `_bulk` NDJSON, Loki push
//! (JSON, and protobuf which is snappy-compressed here first), OTLP traces, logs and
//! metrics (protobuf and JSON; metrics must come out as valid Prometheus series). The first byte picks the decoder; the rest is its input. Invariants: a bulk
//! answer has one item per action and every accepted item carries its index; records
//! keep the stream labels their protocol gave.

use vigil_connectors::otlp::Encoding;
use vigil_connectors::{elastic, loki, otlp, otlp_metrics};

use super::{no_init, Target};
use crate::features::Features;

pub const TARGET: Target = Target {
    name: "log_protocols",
    init: no_init,
    run,
    mutate: None,
    dict: &[
        b"{\"index\":{\"_index\":\"k8s-2026.11.23\"}}\n",
        b"{\"create\":{}}\n",
        b"{\"delete\":{\"_id\":\"1\"}}\n",
        b"{\"@timestamp\":\"2026-11-23T10:00:00Z\",\"log\":\"x\",\"kubernetes\":{\"pod_name\":\"p\",\"labels\":{\"app\":\"a\"}}}\n",
        b"\"@timestamp\":",
        b"{\"streams\":[{\"stream\":{\"a\":\"b\"},\"values\":[[\"1700000000000000000\",\"line\"]]}]}",
        b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\",\"name\":\"n\"}]}]}]}",
        b"{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":[{\"name\":\"m\",\"unit\":\"s\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[{\"asInt\":\"1\"}]}}]}]}]}",
        b"\"histogram\":{\"aggregationTemporality\":2,\"dataPoints\":[{\"count\":\"3\",\"bucketCounts\":[\"1\",\"2\"],\"explicitBounds\":[0.5]}]}",
        b"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":\"x\"}}]}]}]}",
        b"\"kvlistValue\":{\"values\":[]}",
        b"\"arrayValue\":{\"values\":[]}",
        b"\"intValue\":\"9223372036854775807\"",
        b"\"timeUnixNano\":\"18446744073709551615\"",
        b"{namespace=\"shop\"}",
        b"\n",
        b"\\\"",
    ],
    nest: &[b"{\"a\":", b"[", b"{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":"],
    max_len: 64 << 10,
};

fn run(input: &[u8], features: &mut Features) {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    match selector % 8 {
        0 => match elastic::parse_bulk(body, Some("fallback"), 0) {
            Ok(items) => {
                features.count("bulk-items", items.len());
                for item in &items {
                    match &item.outcome {
                        Ok(record) => {
                            assert!(!item.index.is_empty(), "an accepted item without index");
                            assert!(record.stream.contains_key("index"));
                            features.add_kv("bulk-ok", &item.action);
                        }
                        Err(err) => features.error("bulk-item", err.kind),
                    }
                }
            }
            Err(err) => features.error("bulk", &err.reason),
        },
        1 => match loki::decode_json(body, 0) {
            Ok(records) => features.count("loki-json", records.len()),
            Err(err) => features.error("loki-json", &err.to_string()),
        },
        2 => {
            let compressed = snap::raw::Encoder::new()
                .compress_vec(body)
                .unwrap_or_default();
            match loki::decode_protobuf(&compressed, 0) {
                Ok(records) => {
                    for record in &records {
                        assert!(!record.stream.is_empty(), "a Loki record without labels");
                    }
                    features.count("loki-proto", records.len());
                }
                Err(err) => features.error("loki-proto", &err.to_string()),
            }
        }
        3 | 4 => {
            let encoding = if selector % 8 == 3 {
                Encoding::Protobuf
            } else {
                Encoding::Json
            };
            match otlp::decode_traces(body, encoding) {
                Ok((spans, rejected, _)) => {
                    for span in &spans {
                        assert_eq!(span.trace_id.len(), 32);
                        assert_eq!(span.span_id.len(), 16);
                    }
                    features.count("otlp-spans", spans.len());
                    features.count("otlp-rejected", rejected as usize);
                }
                Err(err) => features.error("otlp-traces", &err.to_string()),
            }
        }
        6 | 7 => {
            let encoding = if selector % 8 == 6 {
                Encoding::Protobuf
            } else {
                Encoding::Json
            };
            match otlp_metrics::decode_metrics(body, encoding) {
                Ok(decoded) => {
                    for series in &decoded.batch.series {
                        assert!(series.validate().is_ok(), "invalid series {series}");
                    }
                    for sample in &decoded.batch.samples {
                        assert!((sample.series_idx as usize) < decoded.batch.series.len());
                    }
                    features.count("otlp-metric-samples", decoded.batch.samples.len());
                    features.count("otlp-metric-rejected", decoded.rejected as usize);
                }
                Err(err) => features.error("otlp-metrics", &err.to_string()),
            }
        }
        _ => {
            for encoding in [Encoding::Protobuf, Encoding::Json] {
                match otlp::decode_logs(body, encoding, 0) {
                    Ok(records) => features.count("otlp-logs", records.len()),
                    Err(err) => features.error("otlp-logs", &err.to_string()),
                }
            }
        }
    }
}

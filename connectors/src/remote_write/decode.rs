//! Body → [`SampleBatch`].

use std::collections::HashMap;

use parking_lot::Mutex;
use prost::Message;
use vigil_storage::{Label, LabelSet, Limits, SampleBatch};

use super::proto;
use crate::error::{Error, Result};

/// Metric metadata sent alongside samples (kept for the metadata API).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricMetadata {
    pub metric: String,
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub batch: SampleBatch,
    pub metadata: Vec<MetricMetadata>,
    /// Exemplars are accepted and not stored.
    pub exemplars: usize,
    /// Native histogram samples are accepted and not stored (float samples only).
    pub histograms: usize,
}

/// Label sets already seen, by a hash of their bytes as sent: senders repeat the same
/// series in every request, so a known series costs one hash and one lookup instead of
/// an allocation per label, a sort and a duplicate check. Bounded: it starts over when
/// it holds `capacity` series.
pub struct SeriesInterner {
    known: Mutex<HashMap<u64, LabelSet>>,
    capacity: usize,
}

impl SeriesInterner {
    pub fn new(capacity: usize) -> Self {
        SeriesInterner {
            known: Mutex::new(HashMap::new()),
            capacity,
        }
    }
}

fn label_set(series: &proto::TimeSeries) -> Result<LabelSet> {
    let labels = series
        .labels()
        .map_err(|err| Error::Protobuf(err.to_string()))?
        .into_iter()
        .map(|label| Label {
            name: label.name,
            value: label.value,
        })
        .collect();
    Ok(LabelSet::new(labels)?)
}

/// Decodes a snappy-compressed `WriteRequest`. Checks the decompressed size against
/// `limits.max_body_bytes` before decompressing; label validity is checked by storage.
pub fn decode(body: &[u8], limits: &Limits) -> Result<Decoded> {
    decode_with(body, limits, None)
}

/// [`decode`], with label sets taken from (and added to) `interner`.
pub fn decode_with(
    body: &[u8],
    limits: &Limits,
    interner: Option<&SeriesInterner>,
) -> Result<Decoded> {
    let decoded_len =
        snap::raw::decompress_len(body).map_err(|err| Error::Snappy(err.to_string()))?;
    if limits.max_body_bytes > 0 && decoded_len > limits.max_body_bytes {
        return Err(Error::TooLarge {
            size: decoded_len,
            limit: limits.max_body_bytes,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|err| Error::Snappy(err.to_string()))?;
    let request = proto::WriteRequest::decode(raw.as_slice())
        .map_err(|err| Error::Protobuf(err.to_string()))?;
    let mut decoded = Decoded::default();
    decoded.batch.series.reserve(request.timeseries.len());
    let mut known = interner.map(|interner| (interner.known.lock(), interner.capacity));
    for series in request.timeseries {
        decoded.exemplars += series.exemplars.len();
        decoded.histograms += series.histograms.len();
        if series.samples.is_empty() {
            continue;
        }
        let labels = match known.as_mut() {
            Some((known, capacity)) => {
                // The labels exactly as sent, hashed in one pass.
                let hash = xxhash_rust::xxh3::xxh3_64(&series.labels_raw);
                match known.get(&hash) {
                    Some(labels) => labels.clone(),
                    None => {
                        let labels = label_set(&series)?;
                        if known.len() >= *capacity {
                            known.clear();
                        }
                        known.insert(hash, labels.clone());
                        labels
                    }
                }
            }
            None => label_set(&series)?,
        };
        let idx = decoded.batch.push_series(labels);
        for sample in series.samples {
            decoded
                .batch
                .push_sample(idx, sample.timestamp, sample.value);
        }
    }
    decoded.metadata = request
        .metadata
        .into_iter()
        .map(|meta| MetricMetadata {
            metric: meta.metric_family_name,
            kind: proto::metric_type_name(meta.r#type),
            help: meta.help,
            unit: meta.unit,
        })
        .collect();
    Ok(decoded)
}

/// Encodes a batch as a remote_write body (used by tests, benchmarks and the demo).
pub fn encode(batch: &SampleBatch) -> Vec<u8> {
    let mut request = proto::WriteRequest::default();
    let mut by_series: Vec<proto::TimeSeries> = batch
        .series
        .iter()
        .map(|labels| {
            let mut series = proto::TimeSeries::default();
            for label in labels.labels() {
                series.push_label(&label.name, &label.value);
            }
            series
        })
        .collect();
    for sample in &batch.samples {
        by_series[sample.series_idx as usize]
            .samples
            .push(proto::Sample {
                value: sample.value,
                timestamp: sample.timestamp_ms,
            });
    }
    request.timeseries = by_series;
    let raw = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

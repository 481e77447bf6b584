//! Binary encodings of sample batches as WAL record payloads.
//!
//! **Version 2** (written today): a segment declares each series once, in the first record
//! that uses it, under a segment-local reference; samples then carry only references.
//!
//! ```text
//! u8 kind=2 | u32 body_len | zstd(body)
//! body: varint n_new_series | per series: varint ref, varint n_labels,
//!                                         per label: varint len, name, varint len, value
//!       varint n_samples | refs:  n × zigzag varint (delta from the previous ref)
//!                        | times: n × zigzag varint (delta from the previous time)
//!                        | values: the 8 bytes of every value's bits, byte plane by plane
//! ```
//! Every segment starts with fresh references, so a segment replays on its own, and a
//! damaged record loses only its own samples (and those of series it declared).
//!
//! **Version 1** (read only, segments written before 2026-12): one self-contained record
//! per batch with every label set spelled out.
//! ```text
//! u8 kind=1 | u32 n_series | per series: u16 n_labels, per label: u16 len, name, u32 len, value
//!           | u32 n_samples | per sample: u32 series_idx, i64 timestamp_ms, u64 value bits
//! ```
//! All fixed-width integers little-endian. Decoding never panics: a short or inconsistent
//! payload is an error, which the WAL treats like a checksum failure.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::labels::{IdMap, Label, LabelSet, SeriesId};
use crate::record::{BatchSample, SampleBatch};

const KIND_SAMPLES: u8 = 1;
const KIND_SAMPLES_V2: u8 = 2;
/// Bodies larger than this are treated as corruption.
const MAX_BODY_LEN: usize = 1 << 30;
/// zstd level of WAL records: fast enough for the writer thread, about 3× smaller.
const ZSTD_LEVEL: i32 = 1;

/// The writer's state for one WAL segment: the series it has declared.
#[derive(Debug, Default)]
pub struct SegmentEncoder {
    refs: IdMap<u32>,
    body: Vec<u8>,
}

/// A batch ready to log: series ids (parallel to `series`), label sets and samples.
pub struct BatchRef<'a> {
    pub ids: &'a [SeriesId],
    pub series: &'a [LabelSet],
    pub samples: &'a [BatchSample],
}

impl SegmentEncoder {
    /// Encodes a batch as one record of this segment into `out` (cleared first).
    /// Returns the batch's latest timestamp.
    pub fn encode(&mut self, batch: &BatchRef<'_>, out: &mut Vec<u8>) -> Result<i64> {
        let body = &mut self.body;
        body.clear();
        // Series this record declares, in first-use order.
        let mut local: Vec<u32> = vec![u32::MAX; batch.series.len()];
        let mut declared = Vec::new();
        for sample in batch.samples {
            let idx = sample.series_idx as usize;
            if local[idx] != u32::MAX {
                continue;
            }
            let id = batch.ids[idx];
            let next = self.refs.len() as u32;
            let reference = *self.refs.entry(id).or_insert_with(|| {
                declared.push(idx);
                next
            });
            local[idx] = reference;
        }
        put_varint(body, declared.len() as u64);
        for idx in declared {
            put_varint(body, u64::from(local[idx]));
            let labels = batch.series[idx].labels();
            put_varint(body, labels.len() as u64);
            for label in labels {
                put_varint(body, label.name.len() as u64);
                body.extend_from_slice(label.name.as_bytes());
                put_varint(body, label.value.len() as u64);
                body.extend_from_slice(label.value.as_bytes());
            }
        }
        let n = batch.samples.len();
        put_varint(body, n as u64);
        let mut previous = 0i64;
        for sample in batch.samples {
            let reference = i64::from(local[sample.series_idx as usize]);
            put_varint(body, zigzag(reference.wrapping_sub(previous)));
            previous = reference;
        }
        let mut previous = 0i64;
        let mut latest = i64::MIN;
        for sample in batch.samples {
            put_varint(body, zigzag(sample.timestamp_ms.wrapping_sub(previous)));
            previous = sample.timestamp_ms;
            latest = latest.max(sample.timestamp_ms);
        }
        let planes = body.len();
        body.resize(planes + 8 * n, 0);
        for (row, sample) in batch.samples.iter().enumerate() {
            for (plane, byte) in sample.value.to_bits().to_le_bytes().into_iter().enumerate() {
                body[planes + plane * n + row] = byte;
            }
        }
        out.clear();
        out.push(KIND_SAMPLES_V2);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let compressed = zstd::bulk::compress(body, ZSTD_LEVEL)
            .map_err(|err| Error::Wal(format!("compressing a record: {err}")))?;
        out.extend_from_slice(&compressed);
        Ok(latest)
    }
}

/// One decoded record: the series it touches and its samples (indexes into `ids`).
#[derive(Debug, Default)]
pub struct Decoded {
    pub ids: Vec<SeriesId>,
    pub labels: Vec<Arc<LabelSet>>,
    pub samples: Vec<BatchSample>,
    /// Samples whose series was declared in a record that is lost (damaged).
    pub unresolved: usize,
}

/// The reader's state for one WAL segment: the series declared so far, by reference.
#[derive(Debug, Default)]
pub struct SegmentDecoder {
    series: Vec<Option<(SeriesId, Arc<LabelSet>)>>,
}

impl SegmentDecoder {
    /// Decodes one record of the segment (either version). With `declare` false, series
    /// the record declares are not remembered (used to describe a damaged record).
    pub fn decode(&mut self, payload: &[u8], declare: bool) -> Result<Decoded> {
        match payload.first() {
            Some(&KIND_SAMPLES) => {
                let batch = decode_batch(payload)?;
                let labels: Vec<Arc<LabelSet>> = batch.series.into_iter().map(Arc::new).collect();
                Ok(Decoded {
                    ids: labels.iter().map(|labels| labels.series_id()).collect(),
                    labels,
                    samples: batch.samples,
                    unresolved: 0,
                })
            }
            Some(&KIND_SAMPLES_V2) => self.decode_v2(payload, declare),
            Some(kind) => Err(Error::Wal(format!("unknown record kind {kind}"))),
            None => Err(Error::Wal("empty record".into())),
        }
    }

    fn decode_v2(&mut self, payload: &[u8], declare: bool) -> Result<Decoded> {
        let mut reader = Reader { buf: &payload[1..] };
        let body_len = reader.u32()? as usize;
        if body_len > MAX_BODY_LEN {
            return Err(Error::Wal(format!("record body of {body_len} bytes")));
        }
        let body = zstd::bulk::decompress(reader.buf, body_len)
            .map_err(|err| Error::Wal(format!("record does not decompress: {err}")))?;
        if body.len() != body_len {
            return Err(Error::Wal("record body has the wrong length".into()));
        }
        let mut reader = Reader { buf: &body };
        let n_new = reader.varint()? as usize;
        let mut new_series = Vec::with_capacity(n_new.min(reader.buf.len()));
        for _ in 0..n_new {
            let reference = reader.varint()? as usize;
            let n_labels = reader.varint()? as usize;
            let mut labels = Vec::with_capacity(n_labels.min(reader.buf.len()));
            for _ in 0..n_labels {
                let name_len = reader.varint()? as usize;
                let name = reader.string(name_len)?;
                let value_len = reader.varint()? as usize;
                let value = reader.string(value_len)?;
                labels.push(Label { name, value });
            }
            let labels = LabelSet::new(labels)?;
            new_series.push((reference, labels.series_id(), Arc::new(labels)));
        }
        let n = reader.varint()? as usize;
        if n > reader.buf.len() {
            return Err(Error::Wal(
                "record claims more samples than it holds".into(),
            ));
        }
        let mut references = Vec::with_capacity(n);
        let mut previous = 0i64;
        for _ in 0..n {
            previous = previous.wrapping_add(unzigzag(reader.varint()?));
            references.push(previous);
        }
        let mut timestamps = Vec::with_capacity(n);
        let mut previous = 0i64;
        for _ in 0..n {
            previous = previous.wrapping_add(unzigzag(reader.varint()?));
            timestamps.push(previous);
        }
        let planes = reader.take(8 * n)?;
        if !reader.buf.is_empty() {
            return Err(Error::Wal("record body has trailing bytes".into()));
        }
        // Resolve references: this record's declarations first, then the segment's.
        let local: HashMap<usize, (SeriesId, Arc<LabelSet>)> = new_series
            .iter()
            .map(|(reference, id, labels)| (*reference, (*id, labels.clone())))
            .collect();
        if declare {
            for (reference, id, labels) in new_series {
                if reference >= self.series.len() {
                    if reference > MAX_BODY_LEN {
                        return Err(Error::Wal("series reference out of range".into()));
                    }
                    self.series.resize(reference + 1, None);
                }
                self.series[reference] = Some((id, labels));
            }
        }
        let mut out = Decoded::default();
        let mut index_of: HashMap<i64, u32> = HashMap::new();
        for (row, (reference, timestamp)) in references.into_iter().zip(timestamps).enumerate() {
            let series = usize::try_from(reference).ok().and_then(|reference| {
                local
                    .get(&reference)
                    .or_else(|| self.series.get(reference).and_then(Option::as_ref))
            });
            let Some((id, labels)) = series else {
                out.unresolved += 1;
                continue;
            };
            let idx = *index_of.entry(reference).or_insert_with(|| {
                out.ids.push(*id);
                out.labels.push(labels.clone());
                (out.ids.len() - 1) as u32
            });
            let mut bits = [0u8; 8];
            for (plane, byte) in bits.iter_mut().enumerate() {
                *byte = planes[plane * n + row];
            }
            out.samples.push(BatchSample {
                series_idx: idx,
                timestamp_ms: timestamp,
                value: f64::from_bits(u64::from_le_bytes(bits)),
            });
        }
        Ok(out)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Encodes a batch as a version 1 record (kept to test reading old segments).
pub fn encode_batch(batch: &SampleBatch, out: &mut Vec<u8>) {
    out.push(KIND_SAMPLES);
    out.extend_from_slice(&(batch.series.len() as u32).to_le_bytes());
    for series in &batch.series {
        out.extend_from_slice(&(series.len() as u16).to_le_bytes());
        for label in series.labels() {
            out.extend_from_slice(&(label.name.len() as u16).to_le_bytes());
            out.extend_from_slice(label.name.as_bytes());
            out.extend_from_slice(&(label.value.len() as u32).to_le_bytes());
            out.extend_from_slice(label.value.as_bytes());
        }
    }
    out.extend_from_slice(&(batch.samples.len() as u32).to_le_bytes());
    for sample in &batch.samples {
        out.extend_from_slice(&sample.series_idx.to_le_bytes());
        out.extend_from_slice(&sample.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Wal("record payload is truncated".into()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::Wal("varint is too long".into()))
    }
    fn string(&mut self, len: usize) -> Result<String> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| Error::Wal("label is not valid utf-8".into()))
    }
}

/// Decodes a version 1 record.
pub fn decode_batch(payload: &[u8]) -> Result<SampleBatch> {
    let mut reader = Reader { buf: payload };
    let kind = reader.take(1)?[0];
    if kind != KIND_SAMPLES {
        return Err(Error::Wal(format!("unknown record kind {kind}")));
    }
    let n_series = reader.u32()? as usize;
    let mut series = Vec::with_capacity(n_series.min(reader.buf.len()));
    for _ in 0..n_series {
        let n_labels = reader.u16()? as usize;
        let mut labels = Vec::with_capacity(n_labels);
        for _ in 0..n_labels {
            let name_len = reader.u16()? as usize;
            let name = reader.string(name_len)?;
            let value_len = reader.u32()? as usize;
            let value = reader.string(value_len)?;
            labels.push(Label { name, value });
        }
        series.push(LabelSet::new(labels)?);
    }
    let n_samples = reader.u32()? as usize;
    let mut samples = Vec::with_capacity(n_samples.min(reader.buf.len() / 20));
    for _ in 0..n_samples {
        let series_idx = reader.u32()?;
        if series_idx as usize >= series.len() {
            return Err(Error::Wal(format!(
                "sample refers to unknown series {series_idx}"
            )));
        }
        let timestamp_ms = reader.u64()? as i64;
        let value = f64::from_bits(reader.u64()?);
        samples.push(BatchSample {
            series_idx,
            timestamp_ms,
            value,
        });
    }
    if !reader.buf.is_empty() {
        return Err(Error::Wal("record payload has trailing bytes".into()));
    }
    Ok(SampleBatch { series, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_nan_bits() {
        let mut batch = SampleBatch::default();
        let idx =
            batch.push_series(LabelSet::from_pairs([("__name__", "up"), ("job", "a")]).unwrap());
        batch.push_sample(idx, 1000, 1.5);
        batch.push_sample(idx, 2000, crate::record::stale_marker());
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        let decoded = decode_batch(&buf).unwrap();
        assert_eq!(decoded.series, batch.series);
        assert_eq!(decoded.samples[1].value.to_bits(), crate::STALE_NAN_BITS);
        assert!(decode_batch(&buf[..buf.len() - 3]).is_err());
    }

    fn labels(pod: usize) -> LabelSet {
        LabelSet::from_pairs([("__name__", "m"), ("pod", &format!("p{pod}"))]).unwrap()
    }

    #[test]
    fn v2_declares_each_series_once_per_segment() {
        let series: Vec<LabelSet> = (0..3).map(labels).collect();
        let ids: Vec<SeriesId> = series.iter().map(LabelSet::series_id).collect();
        let mut encoder = SegmentEncoder::default();
        let mut decoder = SegmentDecoder::default();
        let mut first = Vec::new();
        let mut records = Vec::new();
        for round in 0..3i64 {
            let samples: Vec<BatchSample> = (0..3u32)
                .map(|idx| BatchSample {
                    series_idx: idx,
                    timestamp_ms: 1_700_000_000_000 + round * 15_000,
                    value: if idx == 2 {
                        crate::record::stale_marker()
                    } else {
                        round as f64 * 1.5
                    },
                })
                .collect();
            let batch = BatchRef {
                ids: &ids,
                series: &series,
                samples: &samples,
            };
            let mut out = Vec::new();
            assert_eq!(
                encoder.encode(&batch, &mut out).unwrap(),
                1_700_000_000_000 + round * 15_000
            );
            if round == 0 {
                first = out.clone();
            }
            records.push(out);
        }
        // Later records carry no labels.
        assert!(
            records[1].len() < first.len(),
            "{} vs {}",
            records[1].len(),
            first.len()
        );
        for (round, record) in records.iter().enumerate() {
            let decoded = decoder.decode(record, true).unwrap();
            assert_eq!(decoded.unresolved, 0);
            assert_eq!(decoded.ids, ids);
            assert_eq!(decoded.samples.len(), 3);
            assert_eq!(decoded.samples[1].value, round as f64 * 1.5);
            assert_eq!(decoded.samples[2].value.to_bits(), crate::STALE_NAN_BITS);
        }
        // A fresh segment decoder cannot resolve a later record on its own.
        let lost = SegmentDecoder::default().decode(&records[1], true).unwrap();
        assert_eq!(lost.unresolved, 3);
        assert!(SegmentDecoder::default()
            .decode(&records[1][..records[1].len() - 2], true)
            .is_err());
    }
}

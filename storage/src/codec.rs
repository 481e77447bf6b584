//! Binary encoding of a [`SampleBatch`] as a WAL record payload.
//!
//! ```text
//! u8 kind=1 | u32 n_series | per series: u16 n_labels, per label: u16 len, name, u32 len, value
//!           | u32 n_samples | per sample: u32 series_idx, i64 timestamp_ms, u64 value bits
//! ```
//! All integers little-endian. Decoding never panics: a short or inconsistent payload is
//! an error, which the WAL treats like a checksum failure.

use crate::error::{Error, Result};
use crate::labels::{Label, LabelSet};
use crate::record::{BatchSample, SampleBatch};

const KIND_SAMPLES: u8 = 1;

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
    fn string(&mut self, len: usize) -> Result<String> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| Error::Wal("label is not valid utf-8".into()))
    }
}

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
}

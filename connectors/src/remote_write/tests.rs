use vigil_storage::{LabelSet, Limits, SampleBatch};

use super::*;
use crate::Error;

fn batch() -> SampleBatch {
    let mut batch = SampleBatch::default();
    let idx = batch.push_series(LabelSet::from_pairs([("__name__", "up"), ("job", "a")]).unwrap());
    batch.push_sample(idx, 1_000, 1.0);
    batch.push_sample(idx, 2_000, f64::NAN);
    batch
}

#[test]
fn round_trip() {
    let body = encode(&batch());
    let decoded = decode(&body, &Limits::default()).unwrap();
    assert_eq!(decoded.batch.series, batch().series);
    assert_eq!(decoded.batch.samples.len(), 2);
    assert!(decoded.batch.samples[1].value.is_nan());
}

#[test]
fn rejects_garbage_and_uncompressed() {
    assert!(matches!(
        decode(b"definitely not snappy", &Limits::default()),
        Err(Error::Snappy(_))
    ));
    let body = encode(&batch());
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    assert!(decode(&raw, &Limits::default()).is_err());
}

#[test]
fn enforces_decoded_size_limit() {
    let body = encode(&batch());
    let limits = Limits {
        max_body_bytes: 8,
        ..Limits::default()
    };
    assert!(matches!(
        decode(&body, &limits),
        Err(Error::TooLarge { .. })
    ));
}

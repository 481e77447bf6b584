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

#[test]
fn interned_decoding_equals_plain_decoding() {
    let interner = SeriesInterner::new(2);
    let mut many = SampleBatch::default();
    for pod in 0..5 {
        let idx = many.push_series(
            LabelSet::from_pairs([
                ("__name__", "up"),
                ("pod", &format!("p{pod}")),
                ("job", "a"),
            ])
            .unwrap(),
        );
        many.push_sample(idx, 1_000, f64::from(pod));
    }
    let body = encode(&many);
    // Twice: the second decode answers from the interner (and it starts over when full).
    for _ in 0..2 {
        let interned = decode_with(&body, &Limits::default(), Some(&interner)).unwrap();
        let plain = decode(&body, &Limits::default()).unwrap();
        assert_eq!(interned.batch, plain.batch);
    }
    // A label that is not UTF-8 is refused, not mangled.
    let mut request = proto::WriteRequest::default();
    let mut series = proto::TimeSeries::default();
    // Label { name: "__name__", value: b"\xff\xfe" }, length-prefixed.
    let label = [&[0x0a, 8][..], b"__name__", &[0x12, 2, 0xff, 0xfe]].concat();
    series.labels_raw.push(label.len() as u8);
    series.labels_raw.extend_from_slice(&label);
    series.samples.push(proto::Sample {
        value: 1.0,
        timestamp: 1,
    });
    request.timeseries.push(series);
    let body = snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&request))
        .unwrap();
    assert!(decode_with(&body, &Limits::default(), Some(&interner)).is_err());
}

/// Hostile bodies: every truncation and many byte flips of a valid request, and random
/// bytes, decode to an error or a batch, never a panic (the hand-written `TimeSeries`
/// decoding included).
#[test]
fn damaged_requests_never_panic() {
    let mut many = SampleBatch::default();
    for pod in 0..20 {
        let idx = many.push_series(
            LabelSet::from_pairs([
                ("__name__", "up"),
                ("pod", &format!("p{pod}")),
                ("job", "a"),
            ])
            .unwrap(),
        );
        many.push_sample(idx, 1_000, f64::from(pod));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&encode(&many))
        .unwrap();
    let interner = SeriesInterner::new(1 << 10);
    let limits = Limits::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bodies: Vec<Vec<u8>> = (0..raw.len()).map(|len| raw[..len].to_vec()).collect();
    for _ in 0..2000 {
        let mut flipped = raw.clone();
        let at = (next() as usize) % flipped.len();
        flipped[at] ^= (next() as u8) | 1;
        bodies.push(flipped);
        bodies.push((0..(next() % 200)).map(|_| next() as u8).collect());
    }
    for body in bodies {
        let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
        let _ = decode_with(&compressed, &limits, Some(&interner));
        let _ = decode(&compressed, &limits);
    }
}

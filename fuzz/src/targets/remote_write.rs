//! `POST /api/v1/write`: snappy, then the `prompb.WriteRequest` protobuf, then the label
//! checks storage applies before a batch is logged.
//!
//! Invariants checked besides "no panic": decoding through a [`SeriesInterner`] gives
//! exactly the plain decoding (twice, so the second pass answers from the interner), and
//! a decoded batch re-encoded decodes to the same batch.

use vigil_connectors::remote_write::{decode_with, encode, Decoded, SeriesInterner};
use vigil_connectors::Error;
use vigil_storage::{Limits, SampleBatch};

use super::{no_init, Target};
use crate::features::Features;
use crate::mutate::Mutator;

pub const TARGET: Target = Target {
    name: "remote_write",
    init: no_init,
    run,
    mutate: Some(mutate),
    dict: &[
        b"\x0a",
        b"\x12",
        b"\x1a",
        b"\x22",
        b"\x08",
        b"\x10",
        b"\x09",
        b"\x11",
        b"\x0a\x08__name__",
        b"\x12\x02up",
        b"\x0a\x03job",
        b"\x0a\x02le",
        b"\x12\x02\xff\xfe",
        b"\x0a\x00",
        b"\x09\x01\x00\x00\x00\x00\x00\xf0\x7f",
        b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x1a\x00",
        b"\x22\x00",
    ],
    nest: &[b"\x0a\x7f", b"\x1a\x0f"],
    max_len: 256 << 10,
};

/// Largest decompressed size the mutator unpacks to mutate the protobuf.
const MAX_RAW: usize = 256 << 10;

fn decompress(body: &[u8]) -> Option<Vec<u8>> {
    let len = snap::raw::decompress_len(body).ok()?;
    if len > MAX_RAW {
        return None;
    }
    snap::raw::Decoder::new().decompress_vec(body).ok()
}

fn compress(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .unwrap_or_default()
}

/// Half the time the decompressed protobuf is mutated (and compressed again), half the
/// time the compressed bytes themselves.
fn mutate(mutator: &mut Mutator<'_>, input: &[u8], other: &[u8]) -> Vec<u8> {
    if mutator.rng.chance(1, 2) {
        if let Some(raw) = decompress(input) {
            let other_raw = decompress(other).unwrap_or_default();
            return compress(&mutator.mutate(&raw, &other_raw));
        }
    }
    mutator.mutate(input, other)
}

fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::Snappy(_) => "snappy",
        Error::Protobuf(_) => "protobuf",
        Error::TooLarge { .. } => "too-large",
        Error::Storage(_) => "storage",
        _ => "other",
    }
}

/// The batch as bits, so NaN values compare equal to themselves.
fn bits(batch: &SampleBatch) -> Bits {
    (
        batch.series.iter().map(|s| format!("{s:?}")).collect(),
        batch
            .samples
            .iter()
            .map(|s| (s.series_idx, s.timestamp_ms, s.value.to_bits()))
            .collect(),
    )
}

/// [`bits`] with -0.0 as 0.0: proto3 leaves a zero field out, and prost (like Go's
/// gogo-protobuf) takes -0.0 for zero, so `encode` sends -0.0 as 0.0.
fn unsigned_zero(mut bits: Bits) -> Bits {
    for sample in &mut bits.1 {
        if sample.2 == (-0.0f64).to_bits() {
            sample.2 = 0;
        }
    }
    bits
}

fn run(body: &[u8], features: &mut Features) {
    let limits = Limits::default();
    let decoded = match decode_with(body, &limits, None) {
        Ok(decoded) => decoded,
        Err(err) => {
            features.error(error_kind(&err), &err.to_string());
            return;
        }
    };
    describe(&decoded, features);
    // Storage checks labels and limits before the WAL append.
    if let Err(err) = limits.check(&decoded.batch) {
        features.error("limits", &err.to_string());
    }
    let plain = bits(&decoded.batch);
    let interner = SeriesInterner::new(4);
    for pass in 0..2 {
        match decode_with(body, &limits, Some(&interner)) {
            Ok(interned) => assert!(
                bits(&interned.batch) == plain,
                "pass {pass}: decoding through the interner differs from plain decoding: {}",
                first_difference(&plain, &bits(&interned.batch))
            ),
            Err(err) => panic!("pass {pass}: the interner refused what plain decoding took: {err}"),
        }
    }
    let again = encode(&decoded.batch);
    let unlimited = Limits {
        max_body_bytes: 0,
        ..Limits::default()
    };
    match decode_with(&again, &unlimited, None) {
        Ok(round) => {
            let (plain, again) = (unsigned_zero(plain), unsigned_zero(bits(&round.batch)));
            assert!(
                again == plain,
                "a decoded batch, encoded again, decodes differently: {}",
                first_difference(&plain, &again)
            )
        }
        Err(err) => panic!("a decoded batch, encoded again, does not decode: {err}"),
    }
}

type Bits = (Vec<String>, Vec<(u32, i64, u64)>);

fn first_difference(a: &Bits, b: &Bits) -> String {
    if a.0 != b.0 {
        let at = a.0.iter().zip(&b.0).position(|(x, y)| x != y);
        return match at {
            Some(i) => format!("series {i}: {} vs {}", a.0[i], b.0[i]),
            None => format!("{} series vs {}", a.0.len(), b.0.len()),
        };
    }
    let at = a.1.iter().zip(&b.1).position(|(x, y)| x != y);
    match at {
        Some(i) => format!("sample {i}: {:?} vs {:?}", a.1[i], b.1[i]),
        None => format!("{} samples vs {}", a.1.len(), b.1.len()),
    }
}

fn describe(decoded: &Decoded, features: &mut Features) {
    features.count("series", decoded.batch.series.len());
    features.count("samples", decoded.batch.samples.len());
    features.count("exemplars", decoded.exemplars);
    features.count("histograms", decoded.histograms);
    for meta in decoded.metadata.iter().take(16) {
        features.add_kv("metadata", meta.kind);
    }
    for series in decoded.batch.series.iter().take(64) {
        features.count("labels", series.len());
    }
    for sample in decoded.batch.samples.iter().take(256) {
        let class = if vigil_storage::record::is_stale_marker(sample.value) {
            "stale"
        } else if sample.value.is_nan() {
            "nan"
        } else if sample.value.is_infinite() {
            "inf"
        } else {
            "finite"
        };
        features.add_kv("value", class);
        features.add_kv("ts-sign", sample.timestamp_ms.signum());
    }
}

//! Prometheus remote_write 1.0: snappy-compressed protobuf `WriteRequest`s.
//!
//! The HTTP route lives in the root crate; this module turns a body into a
//! [`vigil_storage::SampleBatch`] following `storage/remote/write_handler.go`.

mod decode;
pub mod proto;

pub use decode::{decode, decode_with, encode, Decoded, MetricMetadata, SeriesInterner};

#[cfg(test)]
mod tests;

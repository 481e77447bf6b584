//! Vigil storage: the bottom of the dependency graph.
//!
//! ```text
//!   SampleBatch ──► validate ──► Wal::append (group commit, fsync) ──► Head (memory)
//!                                                                       │ flush
//!                                                                       ▼
//!                                              Parquet blocks in an object store
//!                                              metrics/block=<start_ms>/<seq>.parquet
//!                                              series/<seq>.parquet
//! ```
//!
//! [`Storage`] ties the pieces together; record types and their Arrow schemas live in
//! [`record`] and [`schema`] so every other crate can share them.

pub mod batch_files;
pub mod block_reader;
pub mod codec;
pub mod error;
pub mod head;
pub mod labels;
pub mod limits;
pub mod lock;
pub mod logs;
pub mod parquet_block;
pub mod record;
pub mod schema;
pub mod spans;
pub mod store;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
pub use labels::{Label, LabelSet, SeriesId};
pub use limits::Limits;
pub use logs::LogRecord;
pub use record::{Appended, BatchSample, SampleBatch, STALE_NAN_BITS};
pub use spans::SpanRecord;
pub use store::{
    AppendMode, AppendOutcome, Storage, StorageConfig, StorageStats, MAX_TIMESTAMP_MS,
};

//! Vigil connectors: protocols in (and, later, out).
//!
//! ```text
//!   remote_write body ──► remote_write::decode ──► SampleBatch ──► Storage::append
//!   scrape target     ──► scrape::exposition   ──► SampleBatch ──► Storage::append
//! ```
//!
//! Connectors turn wire formats into [`vigil_storage::SampleBatch`]es and never speak
//! HTTP as a server: the root crate owns the HTTP routes and maps [`Error`] to statuses.

pub mod duration;
pub mod elastic;
pub mod error;
pub mod loki;
pub mod otlp;
pub mod otlp_metrics;
pub mod remote_write;
pub mod scrape;

pub use error::{Error, Result};

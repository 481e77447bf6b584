//! Vigil queries: SQL (and, next, PromQL) over head ∪ Parquet with DataFusion.
//!
//! ```text
//!   SqlEngine ── SessionContext
//!                 ├─ samples  = SamplesTable: head batches ∪ Parquet files, pruned by time
//!                 ├─ series   = SeriesTable: the series catalog
//!                 └─ metrics  = view: samples ⋈ series, staleness markers removed
//! ```

pub mod error;
pub mod promql;
pub mod sql;
pub mod tables;
pub mod time_range;

pub use error::{Error, Result};
pub use sql::SqlEngine;

//! Vigil queries over head ∪ Parquet: SQL with DataFusion, and PromQL ([`promql`]: the
//! parser's messages in Prometheus' words and the ad hoc evaluator with its sources).
//!
//! ```text
//!   SqlEngine ── SessionContext
//!                 ├─ samples  = SamplesTable: head batches ∪ Parquet files, pruned by time
//!                 ├─ series   = SeriesTable: the series catalog
//!                 ├─ metrics  = view: samples ⋈ series, staleness markers removed
//!                 ├─ logs, spans = the batch files of blocks/logs, blocks/spans
//!                 └─ promql(expr, start, end, step), promql_instant(expr [, time])
//!                    = table functions over the PromQL evaluator (promql_table.rs)
//! ```

pub mod error;
pub mod hop;
pub mod promql;
pub mod promql_table;
pub mod sql;
pub mod tables;
pub mod time_range;

pub use error::{Error, Result};
pub use sql::{Collect, ResultSink, SqlEngine, SqlLimits};

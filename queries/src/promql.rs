//! PromQL: parsing (`promql-parser`), the ad hoc evaluator, and the function semantics
//! shared by the ad hoc and the continuous paths.
//!
//! ```text
//!   text ──promql_parser::parse──► Expr ──Evaluator::eval / eval_range──► Value
//!                                             │ selectors
//!                                             ▼
//!                                        SeriesSource (memory, or storage via DataFusion)
//! ```
//!
//! Module dependencies point one way: `eval.rs` (the dispatcher) uses the operators
//! (`aggregate.rs`, `binary.rs`, `call.rs`); they and the sources use the leaf modules
//! `error.rs` (the error type) and `labels.rs` (label helpers), never `eval.rs`.
//!
//! The submodules are private: other crates use the items re-exported here (evaluation,
//! series sources, label helpers, the operators and functions the incremental engine
//! shares, parser messages). Group comments are plain comments: a doc comment on a
//! `pub use` would be prepended to every re-exported item's documentation.

mod aggregate;
mod binary;
mod call;
mod error;
mod eval;
mod functions;
mod guard;
mod labels;
mod memory;
mod parse_error;
mod prefetch;
mod steps;
mod storage_source;
mod value;

// Evaluation: the evaluator, where its selectors read, its result and its error.
pub use error::EvalError;
pub use eval::{
    finalize, Annotations, Evaluator, SeriesSource, DEFAULT_LOOKBACK_MS, EVAL_STACK_BYTES,
};
pub use value::{Sample, Series, Value};

// Series sources: in memory, over storage, and the per-query prefetching wrapper.
pub use memory::MemorySource;
pub use prefetch::PrefetchSource;
pub use storage_source::StorageSource;

// Label helpers: matcher application, grouping and matching label sets, Go's float
// formatting.
pub use labels::{format_value, grouping_labels, matches, matching_signature};

// Operators and functions the incremental engine shares with the ad hoc evaluator.
pub use aggregate::aggregate;
pub use binary::{eval_binary, is_set};
pub use call::{absent, elementwise, parse_go_float, range_kernel, LabelRewrite, RangeKernel};
pub use functions::{
    bucket_quantile, double_exponential_smoothing, kahan_add, predict_linear, quantile_over_time,
    Bucket, BucketFixes, Point, Window,
};

// The entry guard (limits before parsing, bounded times) and parser errors in
// Prometheus' words.
pub use guard::{check_shape, check_times, parse_bounded, time_in_range, QueryShape, MAX_TIME_MS};
pub use parse_error::prometheus_message;

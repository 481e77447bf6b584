//! PromQL: parsing (`promql-parser`), the ad hoc evaluator, and the function semantics
//! shared by the ad hoc and the continuous paths.
//!
//! ```text
//!   text ──promql_parser::parse──► Expr ──Evaluator::eval / eval_range──► Value
//!                                             │ selectors
//!                                             ▼
//!                                        SeriesSource (memory, or storage via DataFusion)
//! ```

pub mod aggregate;
pub mod binary;
pub mod call;
pub mod eval;
pub mod functions;
pub mod memory;
pub mod parse_error;
pub mod prefetch;
pub mod storage_source;
pub mod value;

pub use eval::{EvalError, Evaluator, SeriesSource};
pub use value::{Sample, Series, Value};

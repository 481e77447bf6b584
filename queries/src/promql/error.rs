//! The evaluation error, shared by the evaluator, its operators and the series sources.
//!
//! A leaf module: it imports nothing from the rest of `promql`, so every module can
//! depend on it without a cycle.

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvalError {
    /// The query is valid PromQL but Vigil does not evaluate this construct yet.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Evaluation failed as Prometheus would fail it (the message is Prometheus' own).
    #[error("{0}")]
    Execution(String),
    /// Reading the selected series failed (storage or scan error).
    #[error("{0}")]
    Storage(String),
    /// The query touched more samples than allowed (Prometheus' `query.max-samples`).
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query ran past its deadline (Prometheus' `query.timeout`).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
}

pub(crate) type EvalResult<T> = Result<T, EvalError>;

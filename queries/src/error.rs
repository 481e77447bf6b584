//! The queries error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query is invalid: syntax, unknown table or column, type errors.
    #[error("{0}")]
    Plan(String),
    /// The query was valid but failed while running.
    #[error("{0}")]
    Execution(String),
    #[error("{0}")]
    Storage(#[from] vigil_storage::Error),
    /// The query or its result ran into a configured bound (rows, bytes, memory).
    #[error("{0}")]
    Limit(String),
    /// The query ran longer than the configured timeout.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        let message = err.strip_backtrace();
        match err.find_root() {
            E::ResourcesExhausted(_) => Error::Limit(message),
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                Error::Plan(message)
            }
            _ => Error::Execution(message),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match err {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                Error::Plan(err.strip_backtrace().to_string())
            }
            E::Context(_, inner) => Error::from(*inner),
            other => Error::Execution(other.strip_backtrace().to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

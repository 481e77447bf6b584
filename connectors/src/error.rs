//! The connectors error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snappy: {0}")]
    Snappy(String),
    #[error("protobuf: {0}")]
    Protobuf(String),
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Storage(#[from] vigil_storage::Error),
    #[error("parse error at line {line}: {message}")]
    Exposition { line: usize, message: String },
    #[error("invalid duration {0:?}")]
    Duration(String),
    #[error("invalid scrape config: {0}")]
    Config(String),
    #[error("scrape failed: {0}")]
    Scrape(String),
}

impl Error {
    /// True when the sender cannot succeed by retrying the same request.
    pub fn is_bad_data(&self) -> bool {
        match self {
            Error::Storage(err) => err.kind() == vigil_storage::ErrorKind::BadData,
            Error::Scrape(_) => false,
            _ => true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

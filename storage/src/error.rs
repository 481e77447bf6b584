//! The storage error type.

/// What kind of failure an [`Error`] is; the HTTP layer maps this to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller sent something invalid; retrying the same request cannot succeed.
    BadData,
    /// The store cannot take the write right now (for example it is shutting down).
    Unavailable,
    /// Disk, object store or encoding failure inside Vigil.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
    #[error("invalid metric name {0:?}")]
    InvalidMetricName(String),
    #[error("series has no metric name (label \"__name__\")")]
    MissingMetricName,
    #[error("duplicate label name {0:?} in series")]
    DuplicateLabel(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("out of order sample for series {series}: timestamp {timestamp} is before the latest accepted {latest}")]
    OutOfOrder {
        series: String,
        timestamp: i64,
        latest: i64,
    },
    #[error("duplicate sample for timestamp {timestamp} in series {series}")]
    DuplicateTimestamp { series: String, timestamp: i64 },
    #[error("sample timestamp {timestamp} is outside the retention window")]
    OutOfBounds { timestamp: i64 },
    #[error("sample timestamp {timestamp} for series {series} is too far in the future: more than {skew_ms} ms after the server's clock (limits.max_future_skew)")]
    TooFarInFuture {
        series: String,
        timestamp: i64,
        skew_ms: i64,
    },
    #[error("series limit exceeded: {0}")]
    SeriesLimit(String),
    #[error("storage is shutting down")]
    ShuttingDown,
    #[error("data directory {dir} is in use by another vigil process (pid {pid}); stop it first or use another --data-dir")]
    Locked { dir: String, pid: String },
    #[error("damaged file: {0}")]
    Corrupt(String),
    #[error("wal: {0}")]
    Wal(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidLabelName(_)
            | Error::InvalidMetricName(_)
            | Error::MissingMetricName
            | Error::DuplicateLabel(_)
            | Error::LimitExceeded(_)
            | Error::OutOfOrder { .. }
            | Error::DuplicateTimestamp { .. }
            | Error::OutOfBounds { .. }
            | Error::TooFarInFuture { .. }
            | Error::SeriesLimit(_) => ErrorKind::BadData,
            Error::ShuttingDown => ErrorKind::Unavailable,
            Error::Wal(_)
            | Error::Locked { .. }
            | Error::Corrupt(_)
            | Error::Io(_)
            | Error::Parquet(_)
            | Error::Arrow(_)
            | Error::ObjectStore(_) => ErrorKind::Internal,
        }
    }

    /// A short reason used as the `reason` label of rejected-write counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidLabelName(_) | Error::InvalidMetricName(_) => "invalid_label",
            Error::MissingMetricName => "missing_metric_name",
            Error::DuplicateLabel(_) => "duplicate_label",
            Error::LimitExceeded(_) => "limit",
            Error::OutOfOrder { .. } => "out_of_order",
            Error::DuplicateTimestamp { .. } => "duplicate_timestamp",
            Error::OutOfBounds { .. } => "out_of_bounds",
            Error::TooFarInFuture { .. } => "too_far_in_future",
            Error::SeriesLimit(_) => "series_limit",
            Error::ShuttingDown => "shutting_down",
            _ => "internal",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

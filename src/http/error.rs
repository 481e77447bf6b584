//! One error type per protocol family, each rendering that protocol's error shape, with
//! `From` impls for the crates' errors so handlers return `Result<_, _>` and use `?`.
//!
//! - [`ApiError`]: Prometheus' JSON envelope `{"status":"error","errorType":…,"error":…}`
//!   (query API, SQL, alerts), statuses as in `web/api/v1/api.go`.
//! - [`PlainError`]: Prometheus' plain-text answers (remote_write receiver, lifecycle).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::warn;
use vigil_queries::promql::EvalError;
use vigil_storage::ErrorKind;

/// Prometheus' error envelope: `{"status":"error","errorType":…,"error":…}`.
pub fn api_error(status: StatusCode, error_type: &str, message: String) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": error_type, "error": message})),
    )
        .into_response()
}

/// An API error ready to be sent: status, Prometheus `errorType`, message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub &'static str, pub String);

impl ApiError {
    /// 400 `bad_data`: the request can never succeed.
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, "bad_data", message.into())
    }

    /// 422 `execution`: the query was valid and failed while running.
    pub fn execution(message: impl Into<String>) -> Self {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
            message.into(),
        )
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message.into(),
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message.into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.0, self.1, self.2)
    }
}

impl From<EvalError> for ApiError {
    fn from(err: EvalError) -> Self {
        match err {
            EvalError::Unsupported(what) => {
                ApiError::execution(format!("not supported by vigil yet: {what}"))
            }
            EvalError::Execution(message) => ApiError::execution(message),
            err @ EvalError::TooManySamples => ApiError::execution(err.to_string()),
            err @ EvalError::Timeout(_) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "timeout", err.to_string())
            }
            EvalError::Storage(message) => ApiError::internal(message),
        }
    }
}

/// SQL: 400 `bad_data` for statements that can never run, 422 `execution` for failures
/// and exceeded bounds, 503 `timeout`.
impl From<vigil_queries::Error> for ApiError {
    fn from(err: vigil_queries::Error) -> Self {
        use vigil_queries::Error;
        match err {
            Error::Plan(message) => ApiError::bad_data(message),
            err @ Error::Timeout(_) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "timeout", err.to_string())
            }
            err @ (Error::Limit(_) | Error::Execution(_)) => ApiError::execution(err.to_string()),
            err @ Error::Storage(_) => ApiError::internal(err.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::internal(err.to_string())
    }
}

/// A plain-text error: status and message (a newline is added).
#[derive(Debug)]
pub struct PlainError(pub StatusCode, pub String);

impl IntoResponse for PlainError {
    fn into_response(self) -> Response {
        (self.0, self.1 + "\n").into_response()
    }
}

/// A write the store refused: 400 for data that can never be accepted, 503 when a retry
/// may succeed, 500 for Vigil's own failures (logged).
impl From<vigil_storage::Error> for PlainError {
    fn from(err: vigil_storage::Error) -> Self {
        let status = match err.kind() {
            ErrorKind::BadData => StatusCode::BAD_REQUEST,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => {
                warn!(error = %err, "append failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        PlainError(status, err.to_string())
    }
}

/// A body that cannot be decoded: 413 when too large, else 400.
impl From<vigil_connectors::Error> for PlainError {
    fn from(err: vigil_connectors::Error) -> Self {
        let status = match err {
            vigil_connectors::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        PlainError(status, err.to_string())
    }
}

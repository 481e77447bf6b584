//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs` and `/v1/metrics`, protobuf or JSON,
//! optionally gzip. The answer is the `Export…ServiceResponse` in the request's encoding
//! (with `partial_success` when some items were rejected); errors are a
//! `google.rpc.Status` in the request's encoding with 400 (bad data), 413 (too large),
//! 415 (unknown content type) or 503 (retryable), as the OTLP specification says.
//!
//! The `export_*` functions are the transport-independent part, shared with OTLP/gRPC
//! (`otlp_grpc.rs`): decoded request in, response or [`Failure`] out.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use vigil_connectors::otlp::{self, Encoding};
use vigil_connectors::otlp_metrics;
use vigil_storage::AppendMode;

use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Why an export failed, in the terms of both transports: the HTTP status and the gRPC
/// code (`google.rpc.Code`) that go with it.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn bad(message: String) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            code: 3, // INVALID_ARGUMENT
            message,
        }
    }

    fn storage(err: vigil_storage::Error) -> Self {
        let (status, code) = match err.kind() {
            vigil_storage::ErrorKind::BadData => (StatusCode::BAD_REQUEST, 3),
            vigil_storage::ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, 14),
            vigil_storage::ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, 13),
        };
        Failure {
            status,
            code,
            message: err.to_string(),
        }
    }
}

/// An OTLP/HTTP error: the failure and the encoding to answer in.
pub struct OtlpError {
    failure: Failure,
    encoding: Encoding,
}

impl OtlpError {
    fn bad(message: String, encoding: Encoding) -> Self {
        OtlpError {
            failure: Failure::bad(message),
            encoding,
        }
    }
}

impl IntoResponse for OtlpError {
    fn into_response(self) -> Response {
        let status = RpcStatus {
            code: self.failure.code,
            message: self.failure.message,
        };
        match self.encoding {
            Encoding::Protobuf => (
                self.failure.status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                status.encode_to_vec(),
            )
                .into_response(),
            Encoding::Json => (
                self.failure.status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"code": status.code, "message": status.message}).to_string(),
            )
                .into_response(),
        }
    }
}

/// The body's encoding and its bytes (gunzipped when `Content-Encoding: gzip`).
fn body_of(
    headers: &HeaderMap,
    body: &Bytes,
    limit: usize,
) -> Result<(Encoding, Vec<u8>), OtlpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        return Err(OtlpError {
            failure: Failure {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: 3,
                message: format!(
                    "unsupported content type {content_type:?}: use application/x-protobuf or application/json"
                ),
            },
            encoding: Encoding::Json,
        });
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok((encoding, body.to_vec()));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| OtlpError::bad(format!("gzip: {err}"), encoding))?;
    if out.len() > limit {
        return Err(OtlpError {
            failure: Failure {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: 8, // RESOURCE_EXHAUSTED
                message: format!("decompressed body larger than {limit} bytes"),
            },
            encoding,
        });
    }
    Ok((encoding, out))
}

fn answer<M: Message + serde::Serialize>(message: M, encoding: Encoding) -> Response {
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            message.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&message).unwrap_or_default(),
        )
            .into_response(),
    }
}

fn body_limit(state: &AppState) -> usize {
    match state.storage.limits().max_body_bytes {
        0 => usize::MAX,
        limit => limit,
    }
}

/// Decodes an OTLP/HTTP body into `T`, or the error to answer.
fn request_of<T: Message + Default + serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(T, Encoding), OtlpError> {
    let (encoding, body) = body_of(headers, body, body_limit(state))?;
    let request =
        otlp::decode(&body, encoding).map_err(|err| OtlpError::bad(err.to_string(), encoding))?;
    Ok((request, encoding))
}

async fn traces(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpError> {
    let (request, encoding) = request_of(&state, &headers, &body)?;
    let response = export_traces(&state, request)
        .await
        .map_err(|failure| OtlpError { failure, encoding })?;
    Ok(answer(response, encoding))
}

async fn logs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpError> {
    let (request, encoding) = request_of(&state, &headers, &body)?;
    let response = export_logs(&state, request)
        .await
        .map_err(|failure| OtlpError { failure, encoding })?;
    Ok(answer(response, encoding))
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpError> {
    let (request, encoding) = request_of(&state, &headers, &body)?;
    let response = export_metrics(&state, request)
        .await
        .map_err(|failure| OtlpError { failure, encoding })?;
    Ok(answer(response, encoding))
}

/// Spans in; answered once durable. Spans without valid ids are rejected in
/// `partial_success`, the rest kept.
pub async fn export_traces(
    state: &AppState,
    request: ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, Failure> {
    let (spans, rejected, reason) = otlp::spans_of(request);
    state
        .storage
        .append_spans(spans)
        .await
        .map_err(Failure::storage)?;
    let partial_success = (rejected > 0).then_some(ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: reason,
    });
    Ok(ExportTraceServiceResponse { partial_success })
}

/// Log records in; answered once durable.
pub async fn export_logs(
    state: &AppState,
    request: ExportLogsServiceRequest,
) -> Result<ExportLogsServiceResponse, Failure> {
    let records = otlp::logs_of(request, super::now_ms());
    state
        .storage
        .append_logs(records)
        .await
        .map_err(Failure::storage)?;
    Ok(ExportLogsServiceResponse {
        partial_success: None,
    })
}

/// Metric points in, as Prometheus series (`otlp_metrics`); answered once durable.
/// Points that cannot be stored (delta temporality, exponential histograms, invalid
/// labels, out of order, too old or too far in the future) are counted in
/// `partial_success` with the first reason, and the rest kept — OTLP's partial success,
/// where remote_write refuses the whole request.
pub async fn export_metrics(
    state: &AppState,
    request: ExportMetricsServiceRequest,
) -> Result<ExportMetricsServiceResponse, Failure> {
    let decoded = otlp_metrics::metrics_of(request);
    let mut rejected = decoded.rejected;
    let mut reason = decoded.reason;
    if !decoded.batch.is_empty() {
        let outcome = state
            .storage
            .append(decoded.batch, AppendMode::Lenient)
            .await
            .map_err(Failure::storage)?;
        let dropped = outcome.out_of_order
            + outcome.duplicates
            + outcome.out_of_bounds
            + outcome.too_far_in_future;
        if dropped > 0 {
            rejected += dropped as i64;
            if reason.is_empty() {
                reason = format!(
                    "{} points out of order, {} duplicate timestamps with other values, {} older than retention, {} too far in the future",
                    outcome.out_of_order,
                    outcome.duplicates,
                    outcome.out_of_bounds,
                    outcome.too_far_in_future
                );
            }
        }
    }
    let partial_success = (rejected > 0).then_some(ExportMetricsPartialSuccess {
        rejected_data_points: rejected,
        error_message: reason,
    });
    Ok(ExportMetricsServiceResponse { partial_success })
}

//! OTLP/HTTP: `POST /v1/traces` and `/v1/logs`, protobuf or JSON, optionally gzip. The
//! answer is the `Export…ServiceResponse` in the request's encoding (with
//! `partial_success` when some spans were rejected); errors are a `google.rpc.Status`
//! in the request's encoding with 400 (bad data), 415 (unknown content type) or 503
//! (retryable), as the OTLP specification says.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use vigil_connectors::otlp::{self, Encoding};

use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An OTLP error: HTTP status, gRPC code, message, and the encoding to answer in.
pub struct OtlpError {
    status: StatusCode,
    code: i32,
    message: String,
    encoding: Encoding,
}

impl OtlpError {
    fn bad(message: String, encoding: Encoding) -> Self {
        OtlpError {
            status: StatusCode::BAD_REQUEST,
            code: 3, // INVALID_ARGUMENT
            message,
            encoding,
        }
    }

    fn storage(err: vigil_storage::Error, encoding: Encoding) -> Self {
        let (status, code) = match err.kind() {
            vigil_storage::ErrorKind::BadData => (StatusCode::BAD_REQUEST, 3),
            vigil_storage::ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, 14),
            vigil_storage::ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, 13),
        };
        OtlpError {
            status,
            code,
            message: err.to_string(),
            encoding,
        }
    }
}

impl IntoResponse for OtlpError {
    fn into_response(self) -> Response {
        let status = RpcStatus {
            code: self.code,
            message: self.message,
        };
        match self.encoding {
            Encoding::Protobuf => (
                self.status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                status.encode_to_vec(),
            )
                .into_response(),
            Encoding::Json => (
                self.status,
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
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: 3,
            message: format!(
                "unsupported content type {content_type:?}: use application/x-protobuf or application/json"
            ),
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
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: 8,
            message: format!("decompressed body larger than {limit} bytes"),
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

async fn traces(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpError> {
    let (encoding, body) = body_of(&headers, &body, body_limit(&state))?;
    let (spans, rejected, reason) = otlp::decode_traces(&body, encoding)
        .map_err(|err| OtlpError::bad(err.to_string(), encoding))?;
    state
        .storage
        .append_spans(spans)
        .await
        .map_err(|err| OtlpError::storage(err, encoding))?;
    let partial_success = (rejected > 0).then_some(ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: reason,
    });
    Ok(answer(
        ExportTraceServiceResponse { partial_success },
        encoding,
    ))
}

async fn logs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpError> {
    let (encoding, body) = body_of(&headers, &body, body_limit(&state))?;
    let records = otlp::decode_logs(&body, encoding, super::now_ms())
        .map_err(|err| OtlpError::bad(err.to_string(), encoding))?;
    state
        .storage
        .append_logs(records)
        .await
        .map_err(|err| OtlpError::storage(err, encoding))?;
    Ok(answer(
        ExportLogsServiceResponse {
            partial_success: None,
        },
        encoding,
    ))
}

//! OTLP/gRPC: the `TraceService`, `LogsService` and `MetricsService` of
//! `opentelemetry-proto` (tonic), on their own port (`--otlp.grpc-listen`, default
//! 127.0.0.1:4317), served by the same accept loop as HTTP in its HTTP/2 mode and behind
//! the same access control (credentials and the write scope; a refusal is the HTTP
//! status gRPC maps to `UNAUTHENTICATED` or `PERMISSION_DENIED`).
//!
//! Each call goes through the transport-independent `export_*` of `otlp.rs`: durable
//! before the answer, partial success as over HTTP, failures as gRPC status codes
//! (`INVALID_ARGUMENT`, `UNAVAILABLE` — which exporters retry —, `INTERNAL`). Messages
//! are bounded by `limits.max_body_bytes` after decompression (gzip accepted).

use std::sync::Arc;

use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::otlp::{export_logs, export_metrics, export_traces, Failure};
use super::AppState;

/// The three OTLP services over `state`, as an axum router for the HTTP/2 listener.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = match state.storage.limits().max_body_bytes {
        0 => usize::MAX,
        limit => limit,
    };
    let service = Otlp { state };
    let routes = tonic::service::Routes::new(
        TraceServiceServer::new(service.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    )
    .add_service(
        LogsServiceServer::new(service.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    )
    .add_service(
        MetricsServiceServer::new(service)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    );
    routes.into_axum_router()
}

#[derive(Clone)]
struct Otlp {
    state: Arc<AppState>,
}

fn status(failure: Failure) -> Status {
    Status::new(tonic::Code::from(failure.code), failure.message)
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        export_traces(&self.state, request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        export_logs(&self.state, request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        export_metrics(&self.state, request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

//! The Jaeger query API over the `spans` table, in the JSON shape Jaeger UI and
//! Grafana's Jaeger data source read: `GET /api/services`,
//! `/api/services/{service}/operations`, `/api/operations`, `/api/traces` (search by
//! service, operation, tags, time range, duration bounds, limit) and
//! `/api/traces/{traceID}`. Spans are read through the SQL engine (its bounds apply).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::arrow::array::{
    Array, AsArray, Int64Array, MapArray, RecordBatch, StringArray, TimestampNanosecondArray,
};
use serde_json::{json, Value};

use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{trace_id}", get(trace))
}

/// Jaeger's error envelope: `{"data":null,"errors":[{"code":…,"msg":…}]}`.
pub struct JaegerError(StatusCode, String);

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({
                "data": null, "total": 0, "limit": 0, "offset": 0,
                "errors": [{"code": self.0.as_u16(), "msg": self.1}],
            })),
        )
            .into_response()
    }
}

impl From<vigil_queries::Error> for JaegerError {
    fn from(err: vigil_queries::Error) -> Self {
        JaegerError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    }
}

fn bad(message: String) -> JaegerError {
    JaegerError(StatusCode::BAD_REQUEST, message)
}

fn envelope(data: Value) -> Json<Value> {
    let total = data.as_array().map_or(0, Vec::len);
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn rows(state: &AppState, sql: &str) -> Result<Vec<RecordBatch>, JaegerError> {
    Ok(state.sql.query(sql).await?.1)
}

fn strings<'a>(batch: &'a RecordBatch, column: &str) -> Option<&'a StringArray> {
    batch.column_by_name(column)?.as_any().downcast_ref()
}

async fn services(State(state): State<Arc<AppState>>) -> Result<Json<Value>, JaegerError> {
    let mut names = Vec::new();
    for batch in rows(
        &state,
        "SELECT DISTINCT service FROM spans ORDER BY service",
    )
    .await?
    {
        if let Some(column) = strings(&batch, "service") {
            names.extend(column.iter().flatten().map(|s| json!(s)));
        }
    }
    Ok(envelope(Value::Array(names)))
}

async fn operation_rows(
    state: &AppState,
    service: &str,
    kind: Option<&str>,
) -> Result<Vec<(String, String)>, JaegerError> {
    let mut sql = format!(
        "SELECT DISTINCT name, kind FROM spans WHERE service = {}",
        quote(service)
    );
    if let Some(kind) = kind.filter(|k| !k.is_empty()) {
        sql.push_str(&format!(" AND kind = {}", quote(kind)));
    }
    sql.push_str(" ORDER BY name, kind");
    let mut out = Vec::new();
    for batch in rows(state, &sql).await? {
        if let (Some(names), Some(kinds)) = (strings(&batch, "name"), strings(&batch, "kind")) {
            for i in 0..batch.num_rows() {
                out.push((names.value(i).to_string(), kinds.value(i).to_string()));
            }
        }
    }
    Ok(out)
}

async fn service_operations(
    State(state): State<Arc<AppState>>,
    Path(service): Path<String>,
) -> Result<Json<Value>, JaegerError> {
    let mut names: Vec<String> = operation_rows(&state, &service, None)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.dedup();
    Ok(envelope(json!(names)))
}

async fn operations(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, JaegerError> {
    let service = params
        .get("service")
        .ok_or_else(|| bad("parameter 'service' is required".into()))?;
    let operations: Vec<Value> =
        operation_rows(&state, service, params.get("spanKind").map(String::as_str))
            .await?
            .into_iter()
            .map(|(name, kind)| json!({"name": name, "spanKind": kind}))
            .collect();
    Ok(envelope(Value::Array(operations)))
}

/// Go's duration syntax as Jaeger takes it (`1.5s`, `100ms`, `250us`), in nanoseconds.
fn parse_duration(text: &str) -> Option<i64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let unit = match &text[split..] {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let nanos = number * unit;
    (nanos.is_finite() && nanos < 9e18).then_some(nanos as i64)
}

async fn search(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, JaegerError> {
    let service = params
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("parameter 'service' is required".into()))?;
    let mut filters = vec![format!("service = {}", quote(service))];
    if let Some(operation) = params.get("operation").filter(|o| !o.is_empty()) {
        filters.push(format!("name = {}", quote(operation)));
    }
    for (param, op) in [("start", ">="), ("end", "<=")] {
        if let Some(text) = params.get(param).filter(|t| !t.is_empty()) {
            let micros: i64 = text
                .parse()
                .map_err(|_| bad(format!("unable to parse param '{param}': {text:?}")))?;
            filters.push(format!("start {op} to_timestamp_micros({micros})"));
        }
    }
    for (param, op) in [("minDuration", ">="), ("maxDuration", "<=")] {
        if let Some(text) = params.get(param).filter(|t| !t.is_empty()) {
            let nanos = parse_duration(text)
                .ok_or_else(|| bad(format!("unable to parse param '{param}': {text:?}")))?;
            filters.push(format!("duration_ns {op} {nanos}"));
        }
    }
    if let Some(tags) = params.get("tags").filter(|t| !t.is_empty()) {
        let tags: BTreeMap<String, Value> = serde_json::from_str(tags)
            .map_err(|err| bad(format!("malformed 'tags' parameter: {err}")))?;
        for (key, value) in tags {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            if key == "error" && value == "true" {
                filters.push("status = 'error'".into());
            } else {
                filters.push(format!(
                    "(attributes[{k}] = {v} OR resource[{k}] = {v})",
                    k = quote(&key),
                    v = quote(&value)
                ));
            }
        }
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(20)
        .min(1500);
    let ids_sql = format!(
        "SELECT trace_id, max(start) AS latest FROM spans WHERE {} GROUP BY trace_id ORDER BY latest DESC LIMIT {limit}",
        filters.join(" AND ")
    );
    let mut ids = Vec::new();
    for batch in rows(&state, &ids_sql).await? {
        if let Some(column) = strings(&batch, "trace_id") {
            ids.extend(column.iter().flatten().map(quote));
        }
    }
    if ids.is_empty() {
        return Ok(envelope(json!([])));
    }
    let spans = rows(
        &state,
        &format!("SELECT * FROM spans WHERE trace_id IN ({})", ids.join(", ")),
    )
    .await?;
    Ok(envelope(Value::Array(traces_json(&spans))))
}

async fn trace(
    State(state): State<Arc<AppState>>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, JaegerError> {
    let id = trace_id.to_ascii_lowercase();
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad(format!("malformed trace id {trace_id:?}")));
    }
    // Jaeger ids may come without leading zeros.
    let id = format!("{id:0>32}");
    let spans = rows(
        &state,
        &format!("SELECT * FROM spans WHERE trace_id = {}", quote(&id)),
    )
    .await?;
    let traces = traces_json(&spans);
    if traces.is_empty() {
        return Err(JaegerError(StatusCode::NOT_FOUND, "trace not found".into()));
    }
    Ok(envelope(Value::Array(traces)))
}

fn map_entries(map: &MapArray, row: usize) -> Vec<(String, String)> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
        .collect()
}

fn tag(key: &str, value: impl Into<Value>) -> Value {
    let value = value.into();
    let kind = match &value {
        Value::Bool(_) => "bool",
        Value::Number(_) => "int64",
        _ => "string",
    };
    json!({"key": key, "type": kind, "value": value})
}

/// A Jaeger process: service name and resource attributes.
type Process = (String, Vec<(String, String)>);

/// Spans (rows of `spans`) grouped into Jaeger traces.
fn traces_json(batches: &[RecordBatch]) -> Vec<Value> {
    let mut traces: BTreeMap<String, (Vec<Value>, Vec<Process>)> = BTreeMap::new();
    for batch in batches {
        let text = |name: &str| strings(batch, name);
        let (
            Some(trace_ids),
            Some(span_ids),
            Some(parents),
            Some(services),
            Some(names),
            Some(kinds),
            Some(statuses),
            Some(messages),
            Some(events),
        ) = (
            text("trace_id"),
            text("span_id"),
            text("parent_span_id"),
            text("service"),
            text("name"),
            text("kind"),
            text("status"),
            text("status_message"),
            text("events"),
        )
        else {
            continue;
        };
        let starts = batch
            .column_by_name("start")
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>());
        let durations = batch
            .column_by_name("duration_ns")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
        let attributes = batch
            .column_by_name("attributes")
            .and_then(|c| c.as_any().downcast_ref::<MapArray>());
        let resources = batch
            .column_by_name("resource")
            .and_then(|c| c.as_any().downcast_ref::<MapArray>());
        let (Some(starts), Some(durations), Some(attributes), Some(resources)) =
            (starts, durations, attributes, resources)
        else {
            continue;
        };
        for row in 0..batch.num_rows() {
            let trace_id = trace_ids.value(row).to_string();
            let entry = traces.entry(trace_id.clone()).or_default();
            let service = services.value(row).to_string();
            let resource = map_entries(resources, row);
            let process = match entry
                .1
                .iter()
                .position(|(s, r)| *s == service && *r == resource)
            {
                Some(at) => at,
                None => {
                    entry.1.push((service, resource));
                    entry.1.len() - 1
                }
            };
            let mut tags: Vec<Value> = map_entries(attributes, row)
                .into_iter()
                .map(|(k, v)| tag(&k, v))
                .collect();
            tags.push(tag("span.kind", kinds.value(row)));
            if statuses.value(row) == "error" {
                tags.push(tag("error", true));
                tags.push(tag("otel.status_code", "ERROR"));
                if !messages.value(row).is_empty() {
                    tags.push(tag("otel.status_description", messages.value(row)));
                }
            }
            let logs: Vec<Value> = serde_json::from_str::<Vec<Value>>(events.value(row))
                .unwrap_or_default()
                .into_iter()
                .map(|event| {
                    let mut fields = vec![tag("event", event["name"].clone())];
                    if let Some(attrs) = event["attributes"].as_object() {
                        fields.extend(attrs.iter().map(|(k, v)| tag(k, v.clone())));
                    }
                    json!({
                        "timestamp": event["time_ns"].as_i64().unwrap_or(0) / 1000,
                        "fields": fields,
                    })
                })
                .collect();
            let references: Vec<Value> = if parents.value(row).is_empty() {
                Vec::new()
            } else {
                vec![
                    json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": parents.value(row)}),
                ]
            };
            entry.0.push(json!({
                "traceID": trace_id,
                "spanID": span_ids.value(row),
                "operationName": names.value(row),
                "references": references,
                "startTime": starts.value(row) / 1000,
                "duration": durations.value(row) / 1000,
                "tags": tags,
                "logs": logs,
                "processID": format!("p{}", process + 1),
                "warnings": null,
            }));
        }
    }
    traces
        .into_iter()
        .map(|(trace_id, (mut spans, processes))| {
            spans.sort_by_key(|span| span["startTime"].as_i64().unwrap_or(0));
            let processes: serde_json::Map<String, Value> = processes
                .into_iter()
                .enumerate()
                .map(|(n, (service, resource))| {
                    let tags: Vec<Value> = resource
                        .into_iter()
                        .filter(|(k, _)| k != "service.name")
                        .map(|(k, v)| tag(&k, v))
                        .collect();
                    (
                        format!("p{}", n + 1),
                        json!({"serviceName": service, "tags": tags}),
                    )
                })
                .collect();
            json!({"traceID": trace_id, "spans": spans, "processes": processes, "warnings": null})
        })
        .collect()
}

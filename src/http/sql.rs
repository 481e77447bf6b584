//! `/api/v1/sql`: one read-only SQL statement per request, its result encoded as JSON,
//! CSV or Arrow IPC batch by batch while DataFusion produces it (`vigil_queries::sql`
//! bounds the statement, memory, time, rows and bytes).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use datafusion::arrow::array::{Array, ArrayRef, MapArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Deserialize;
use vigil_queries::{Result as QueryResult, ResultSink};

use super::error::ApiError;
use super::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct SqlParams {
    query: Option<String>,
    format: Option<String>,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/sql", get(sql_handler).post(sql_handler))
}

/// `GET|POST /api/v1/sql?query=…&format=json|csv|arrow`. The query may also be sent as a
/// form field, a JSON body `{"query": …}`, or a plain-text body.
pub async fn sql_handler(
    State(state): State<Arc<AppState>>,
    Query(mut params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() {
        let from_body: SqlParams = if content_type.starts_with("application/json") {
            serde_json::from_slice(&body).map_err(|err| err.to_string())
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            serde_urlencoded::from_bytes(&body).map_err(|err| err.to_string())
        } else {
            Ok(SqlParams {
                query: Some(String::from_utf8_lossy(&body).into_owned()),
                format: None,
            })
        }
        .map_err(|err| ApiError::bad_data(format!("invalid request body: {err}")))?;
        params.query = from_body.query.or(params.query);
        params.format = from_body.format.or(params.format);
    }
    let query = params
        .query
        .filter(|query| !query.trim().is_empty())
        .ok_or_else(|| ApiError::bad_data("missing parameter \"query\""))?;
    let format = params.format.unwrap_or_else(|| "json".into());
    state.metrics.sql_queries.fetch_add(1, Ordering::Relaxed);
    Ok(match format.as_str() {
        "json" => state.sql.run(&query, JsonSink::default()).await?.finish(),
        "csv" => state.sql.run(&query, CsvSink::default()).await?.finish(),
        "arrow" => state
            .sql
            .run(&query, ArrowSink::default())
            .await?
            .finish()?,
        _ => {
            return Err(ApiError::bad_data(format!(
                "unknown format {format:?}: use json, csv or arrow"
            )))
        }
    })
}

fn execution(err: impl std::fmt::Display) -> vigil_queries::Error {
    vigil_queries::Error::Execution(err.to_string())
}

/// `{"status":"success","data":{"columns":[…],"rows":[{…},…]}}`, rows written by Arrow's
/// JSON writer straight into the body (shortest round-trip floats).
#[derive(Default)]
struct JsonSink {
    out: Vec<u8>,
    rows: Option<datafusion::arrow::json::ArrayWriter<Vec<u8>>>,
}

impl ResultSink for JsonSink {
    fn begin(&mut self, schema: &SchemaRef) -> QueryResult<()> {
        let columns: Vec<_> = schema
            .fields()
            .iter()
            .map(|field| {
                serde_json::json!({"name": field.name(), "type": field.data_type().to_string()})
            })
            .collect();
        self.out
            .extend_from_slice(br#"{"status":"success","data":{"columns":"#);
        serde_json::to_writer(&mut self.out, &columns).map_err(execution)?;
        self.out.extend_from_slice(br#","rows":"#);
        self.rows = Some(datafusion::arrow::json::ArrayWriter::new(Vec::new()));
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> QueryResult<()> {
        if let Some(writer) = &mut self.rows {
            writer.write(batch).map_err(execution)?;
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.out.len() + self.rows.as_ref().map_or(0, |w| w.get_ref().len())
    }
}

impl JsonSink {
    fn finish(mut self) -> Response {
        if let Some(mut writer) = self.rows.take() {
            if writer.finish().is_ok() {
                self.out.extend_from_slice(&writer.into_inner());
            }
        } else {
            self.out
                .extend_from_slice(br#"{"status":"success","data":{"columns":[],"rows":["#);
        }
        self.out.extend_from_slice(b"}}");
        (
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(self.out),
        )
            .into_response()
    }
}

/// CSV with a header; maps (`labels`) rendered as Prometheus label sets
/// (`{a="b", c="d"}`) and other nested values as Arrow displays them.
#[derive(Default)]
struct CsvSink {
    out: Vec<u8>,
    schema: Option<SchemaRef>,
    header_written: bool,
}

impl ResultSink for CsvSink {
    fn begin(&mut self, schema: &SchemaRef) -> QueryResult<()> {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|field| {
                if is_nested(field.data_type()) {
                    Field::new(field.name(), DataType::Utf8, true)
                } else {
                    field.as_ref().clone()
                }
            })
            .collect();
        self.schema = Some(Arc::new(Schema::new(fields)));
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> QueryResult<()> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        let columns = batch
            .columns()
            .iter()
            .map(flatten_for_csv)
            .collect::<QueryResult<Vec<_>>>()?;
        let flat = RecordBatch::try_new(schema.clone(), columns).map_err(execution)?;
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(!self.header_written)
            .build(&mut self.out);
        writer.write(&flat).map_err(execution)?;
        self.header_written = true;
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.out.len()
    }
}

impl CsvSink {
    fn finish(mut self) -> Response {
        if !self.header_written {
            if let Some(schema) = &self.schema {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                self.out.extend_from_slice(names.join(",").as_bytes());
                self.out.push(b'\n');
            }
        }
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            self.out,
        )
            .into_response()
    }
}

fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Map(..)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Union(..)
    )
}

fn flatten_for_csv(column: &ArrayRef) -> QueryResult<ArrayRef> {
    if let Some(map) = column.as_any().downcast_ref::<MapArray>() {
        return Ok(Arc::new(label_strings(map)?));
    }
    if !is_nested(column.data_type()) {
        return Ok(column.clone());
    }
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(column.as_ref(), &options).map_err(execution)?;
    let values: StringArray = (0..column.len())
        .map(|row| (!column.is_null(row)).then(|| formatter.value(row).to_string()))
        .collect();
    Ok(Arc::new(values))
}

/// A map of strings as Prometheus prints a label set: `{a="b", c="d"}`.
fn label_strings(map: &MapArray) -> QueryResult<StringArray> {
    let options = FormatOptions::default();
    let keys = ArrayFormatter::try_new(map.keys().as_ref(), &options).map_err(execution)?;
    let values = ArrayFormatter::try_new(map.values().as_ref(), &options).map_err(execution)?;
    let offsets = map.value_offsets();
    Ok((0..map.len())
        .map(|row| {
            if map.is_null(row) {
                return None;
            }
            let mut text = String::from("{");
            for (n, entry) in (offsets[row] as usize..offsets[row + 1] as usize).enumerate() {
                if n > 0 {
                    text.push_str(", ");
                }
                let value = values.value(entry).to_string();
                text.push_str(&format!(
                    "{}={}",
                    keys.value(entry),
                    serde_json::Value::String(value)
                ));
            }
            text.push('}');
            Some(text)
        })
        .collect())
}

/// Arrow IPC stream.
#[derive(Default)]
struct ArrowSink {
    writer: Option<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl ResultSink for ArrowSink {
    fn begin(&mut self, schema: &SchemaRef) -> QueryResult<()> {
        self.writer = Some(
            datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)
                .map_err(execution)?,
        );
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> QueryResult<()> {
        match &mut self.writer {
            Some(writer) => writer.write(batch).map_err(execution),
            None => Ok(()),
        }
    }

    fn bytes(&self) -> usize {
        self.writer.as_ref().map_or(0, |w| w.get_ref().len())
    }
}

impl ArrowSink {
    fn finish(self) -> QueryResult<Response> {
        let out = match self.writer {
            Some(mut writer) => {
                writer.finish().map_err(execution)?;
                writer.into_inner().map_err(execution)?
            }
            None => Vec::new(),
        };
        Ok((
            [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            out,
        )
            .into_response())
    }
}

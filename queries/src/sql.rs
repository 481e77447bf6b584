//! The SQL entry point: a DataFusion session with Vigil's tables, view and functions.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::cast::as_float64_array;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};
use vigil_storage::record::is_stale_marker;
use vigil_storage::Storage;

use crate::error::Result;
use crate::tables::{SamplesTable, SeriesTable, STORE_URL};

/// The `metrics` view: one row per sample with its series' name and labels. Prometheus
/// staleness markers are internal and left out (they remain visible in `samples`).
const METRICS_VIEW: &str = "CREATE VIEW metrics AS \
    SELECT s.metric_name AS name, s.labels AS labels, p.timestamp AS timestamp, p.value AS value, p.series_id AS series_id \
    FROM samples p JOIN series s ON p.series_id = s.series_id \
    WHERE NOT is_stale_marker(p.value)";

pub struct SqlEngine {
    ctx: SessionContext,
}

impl SqlEngine {
    pub async fn new(storage: Arc<Storage>) -> Result<SqlEngine> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("vigil", "public");
        let ctx = SessionContext::new_with_config(config);
        let url = ObjectStoreUrl::parse(STORE_URL)?;
        ctx.runtime_env()
            .register_object_store(url.as_ref(), storage.object_store());
        ctx.register_table("samples", Arc::new(SamplesTable::new(storage.clone())))?;
        ctx.register_table("series", Arc::new(SeriesTable::new(storage)))?;
        ctx.register_udf(create_udf(
            "is_stale_marker",
            vec![DataType::Float64],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(stale_marker_udf),
        ));
        ctx.sql(METRICS_VIEW).await?.collect().await?;
        Ok(SqlEngine { ctx })
    }

    /// Runs one SQL statement and collects its result. Only queries: DDL (`CREATE`,
    /// `DROP`, external tables, views), DML (`INSERT`, `COPY`) and statements (`SET`,
    /// transactions) are refused while planning, naming the statement kind, so no request
    /// can change the catalog other requests see or touch the host's files.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self.ctx.sql_with_options(sql, read_only).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok((schema, batches))
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// `is_stale_marker(value)`: true for Prometheus' staleness NaN.
fn stale_marker_udf(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let values: &Float64Array = as_float64_array(&arrays[0])?;
    let result: BooleanArray = values
        .iter()
        .map(|value| value.map(is_stale_marker))
        .collect();
    Ok(ColumnarValue::Array(Arc::new(result) as ArrayRef))
}

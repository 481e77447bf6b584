//! The SQL entry point: a DataFusion session with Vigil's tables, view and functions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::cast::as_float64_array;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStore;
use vigil_storage::record::is_stale_marker;
use vigil_storage::Storage;

use crate::error::{Error, Result};
use crate::promql_table::{PromqlFunction, PromqlLimits};
use crate::tables::{Records, RecordsTable, SamplesTable, SeriesTable, STORE_URL};

/// The `metrics` view: one row per sample with its series' name and labels. Prometheus
/// staleness markers are internal and left out (they remain visible in `samples`).
const METRICS_VIEW: &str = "CREATE VIEW metrics AS \
    SELECT s.metric_name AS name, s.labels AS labels, p.timestamp AS timestamp, p.value AS value, p.series_id AS series_id \
    FROM samples p JOIN series s ON p.series_id = s.series_id \
    WHERE NOT is_stale_marker(p.value)";

/// The bounds of one SQL request.
#[derive(Debug, Clone)]
pub struct SqlLimits {
    /// Memory DataFusion's operators may reserve (0: a quarter of physical memory).
    pub memory_bytes: usize,
    /// Planning plus execution plus encoding, per request.
    pub timeout: Duration,
    /// Rows in one result.
    pub max_rows: usize,
    /// Bytes of one encoded result (as the sink counts them).
    pub max_bytes: usize,
    /// Operators and parentheses in the statement text, counted before parsing.
    pub max_operators: usize,
    /// Samples one `promql(…)` table function may load (the PromQL API's limit).
    pub promql_max_samples: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            memory_bytes: 0,
            timeout: Duration::from_secs(120),
            max_rows: 1_000_000,
            max_bytes: 256 << 20,
            max_operators: 4096,
            promql_max_samples: 50_000_000,
        }
    }
}

/// Where a query's result goes, batch by batch, as it is produced: the HTTP encoders
/// write each batch into the response body, so a result is encoded once and its size is
/// known while it grows.
pub trait ResultSink: Send + 'static {
    fn begin(&mut self, schema: &SchemaRef) -> Result<()>;
    fn batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Bytes produced so far.
    fn bytes(&self) -> usize;
}

/// Collects the batches (for callers that want them in memory; still bounded).
#[derive(Default)]
pub struct Collect {
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
    bytes: usize,
}

impl ResultSink for Collect {
    fn begin(&mut self, schema: &SchemaRef) -> Result<()> {
        self.schema = Some(schema.clone());
        Ok(())
    }
    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.bytes += batch.get_array_memory_size();
        self.batches.push(batch.clone());
        Ok(())
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

pub struct SqlEngine {
    ctx: SessionContext,
    limits: SqlLimits,
    /// SQL runs on its own threads: a CPU-heavy query competes with ingestion and the
    /// API through the OS scheduler, never by occupying the server's async workers.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Only Vigil's own store: no `file://` (DataFusion's default registry serves the local
/// file system), so no statement or table function can reach the host's files.
#[derive(Debug, Default)]
struct OwnStores(parking_lot::RwLock<HashMap<String, Arc<dyn ObjectStore>>>);

impl ObjectStoreRegistry for OwnStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.0.write().insert(store_key(url), store)
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.0.read().get(&store_key(url)).cloned().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "no object store for {url}: only Vigil's tables can be read"
            ))
        })
    }
}

fn store_key(url: &url::Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

/// A quarter of physical memory (4 GiB when it cannot be read).
fn default_memory_bytes() -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
        });
    total_kib.map_or(4 << 30, |kib| kib.saturating_mul(1024) / 4)
}

/// The statement text's operator and parenthesis count, from the tokenizer (linear, no
/// recursion): a 10,000-term `1+1+…` is refused before the parser builds a tree as deep.
pub fn check_shape(sql: &str, max_operators: usize) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|err| Error::Plan(format!("SQL error: {err}")))?;
    let operators = tokens
        .iter()
        .filter(|token| match token {
            Token::Word(word) => matches!(word.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::EOF => false,
            _ => true,
        })
        .count();
    if operators > max_operators {
        return Err(Error::Plan(format!(
            "the statement has {operators} operators and parentheses, more than the limit of {max_operators}"
        )));
    }
    Ok(())
}

/// Aborts the query task when the request goes away (client disconnect, timeout).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqlEngine {
    pub async fn new(storage: Arc<Storage>) -> Result<SqlEngine> {
        Self::with_limits(storage, SqlLimits::default()).await
    }

    pub async fn with_limits(storage: Arc<Storage>, limits: SqlLimits) -> Result<SqlEngine> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("vigil", "public");
        let memory = match limits.memory_bytes {
            0 => default_memory_bytes(),
            bytes => bytes,
        };
        // No file-list cache (no table lists directories; kept off so none ever serves a
        // stale listing).
        let caches = datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
            .with_list_files_cache_limit(0);
        let runtime_env = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_object_store_registry(Arc::new(OwnStores::default()))
            .with_memory_limit(memory, 1.0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime_env);
        let url = ObjectStoreUrl::parse(STORE_URL)?;
        ctx.runtime_env()
            .register_object_store(url.as_ref(), storage.object_store());
        ctx.register_table("samples", Arc::new(SamplesTable::new(storage.clone())))?;
        ctx.register_table("series", Arc::new(SeriesTable::new(storage.clone())))?;
        let promql_limits = PromqlLimits {
            max_samples: limits.promql_max_samples,
            timeout: limits.timeout,
            max_steps: 11_000,
        };
        ctx.register_udtf(
            "promql",
            Arc::new(PromqlFunction::range(
                storage.clone(),
                promql_limits.clone(),
            )),
        );
        ctx.register_udtf(
            "promql_instant",
            Arc::new(PromqlFunction::instant(storage.clone(), promql_limits)),
        );
        let logs: Arc<dyn TableProvider> =
            Arc::new(RecordsTable::new(storage.clone(), Records::Logs));
        let spans: Arc<dyn TableProvider> =
            Arc::new(RecordsTable::new(storage.clone(), Records::Spans));
        ctx.register_table("logs", logs.clone())?;
        ctx.register_table("spans", spans.clone())?;
        ctx.register_udtf(
            "hop",
            Arc::new(crate::hop::HopFunction {
                tables: vec![
                    ("logs".into(), logs, "timestamp".into()),
                    ("spans".into(), spans, "start".into()),
                ],
            }),
        );
        ctx.register_udf(create_udf(
            "is_stale_marker",
            vec![DataType::Float64],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(stale_marker_udf),
        ));
        // `matches(text, regex)`: Loki's `|~` line filter, for bodies and attributes.
        let regexp_like = ctx.state().scalar_functions().get("regexp_like").cloned();
        if let Some(regexp_like) = regexp_like {
            ctx.register_udf(regexp_like.as_ref().clone().with_aliases(["matches"]));
        }
        ctx.sql(METRICS_VIEW).await?.collect().await?;
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("vigil-sql")
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()
            .map_err(|err| Error::Execution(format!("cannot start the SQL threads: {err}")))?;
        Ok(SqlEngine {
            ctx,
            limits,
            runtime: Some(runtime),
        })
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// Runs one SQL statement, handing each result batch to `sink` as it is produced.
    ///
    /// Only queries: DDL (`CREATE`, `DROP`, external tables, views), DML (`INSERT`,
    /// `COPY`) and statements (`SET`, transactions) are refused while planning, naming
    /// the statement kind. Each request plans in its own session over the shared,
    /// read-only catalog, so no request changes what another sees. Bounded: the operator
    /// count before parsing, the memory pool, the timeout, and the result's rows and
    /// bytes; a request that goes away cancels its query.
    pub async fn run<S: ResultSink>(&self, sql: &str, mut sink: S) -> Result<S> {
        check_shape(sql, self.limits.max_operators)?;
        let Some(runtime) = &self.runtime else {
            return Err(Error::Execution("the SQL engine is shut down".into()));
        };
        let state = self.ctx.state();
        let limits = self.limits.clone();
        let sql = sql.to_string();
        let task = runtime.spawn(async move {
            let read_only = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let ctx = SessionContext::new_with_state(state);
            let frame = ctx.sql_with_options(&sql, read_only).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            sink.begin(&schema)?;
            let mut stream = frame.execute_stream().await?;
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows();
                if rows > limits.max_rows {
                    return Err(Error::Limit(format!(
                        "the result has more than {} rows (query.sql_max_rows): add a LIMIT or aggregate",
                        limits.max_rows
                    )));
                }
                sink.batch(&batch)?;
                if sink.bytes() > limits.max_bytes {
                    return Err(Error::Limit(format!(
                        "the result is larger than {} bytes (query.sql_max_bytes): add a LIMIT or select fewer columns",
                        limits.max_bytes
                    )));
                }
            }
            Ok(sink)
        });
        let _abort = AbortOnDrop(task.abort_handle());
        match tokio::time::timeout(self.limits.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(Error::Execution(format!("the query task failed: {err}"))),
            Err(_) => Err(Error::Timeout(self.limits.timeout)),
        }
    }

    /// Runs one SQL statement and collects its result (bounded as [`SqlEngine::run`]).
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let collected = self.run(sql, Collect::default()).await?;
        let schema = collected
            .schema
            .unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty()));
        Ok((schema, collected.batches))
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

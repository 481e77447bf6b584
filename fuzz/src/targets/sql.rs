//! `/api/v1/sql` and `vigil sql`: DataFusion over Vigil's `samples`, `series` and
//! `metrics`, on a small store in a temporary directory, each statement under a 1 s
//! timeout. Errors are expected; panics and hangs are not.
//!
//! Invariant checked besides "no panic": whatever a statement does, the shared catalog
//! still holds exactly Vigil's tables afterwards (DDL, DML, `COPY` and `SET` are refused).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vigil_queries::SqlEngine;
use vigil_storage::{AppendMode, LabelSet, SampleBatch, Storage, StorageConfig};

use super::{text, Target};
use crate::features::Features;

pub const TARGET: Target = Target {
    name: "sql",
    init,
    run,
    mutate: None,
    dict: &[
        b"SELECT ",
        b" FROM samples",
        b" FROM series",
        b" FROM metrics",
        b" WHERE ",
        b" GROUP BY ",
        b" ORDER BY ",
        b" LIMIT 10",
        b" OFFSET 9223372036854775807",
        b" JOIN series s ON p.series_id = s.series_id",
        b" UNION ALL ",
        b"WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) ",
        b"count(*)",
        b"avg(value)",
        b"approx_percentile_cont(value, 0.9)",
        b"is_stale_marker(value)",
        b"labels['job']",
        b"metric_name",
        b"series_id",
        b"timestamp",
        b"to_timestamp_millis(",
        b"date_bin(INTERVAL '1 minute', timestamp)",
        b"now()",
        b"CAST(",
        b" AS BIGINT)",
        b" AS DECIMAL(38, 10))",
        b"regexp_replace(",
        b"repeat('x', 1000000)",
        b"generate_series(1, 1000000000)",
        b"range(",
        b"unnest(",
        b"make_array(",
        b"information_schema.tables",
        b"CREATE TABLE t AS SELECT 1",
        b"CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        b"COPY (SELECT 1) TO '/tmp/vigil-fuzz-copy.csv'",
        b"INSERT INTO samples VALUES (1, 2, 3)",
        b"DROP VIEW metrics",
        b"SET datafusion.execution.batch_size = 1",
        b"EXPLAIN ANALYZE ",
        b"PREPARE p AS ",
        b"BEGIN",
        b"9223372036854775807",
        b"-9223372036854775808",
        b"1e308",
        b"'NaN'::double",
        b"NULL",
        b"/* */",
        b"-- \n",
        b";",
        b"\"",
        b"'",
    ],
    nest: &[b"(", b"SELECT (", b"NOT ", b"-", b"abs(", b"CASE WHEN "],
    max_len: 8 << 10,
};

const TIMEOUT: Duration = Duration::from_secs(1);

struct Sql {
    runtime: tokio::runtime::Runtime,
    engine: SqlEngine,
    _storage: Arc<Storage>,
    tables: BTreeSet<String>,
}

static DIR: Mutex<Option<tempfile::TempDir>> = Mutex::new(None);

fn sql() -> &'static Sql {
    static SQL: OnceLock<Sql> = OnceLock::new();
    SQL.get_or_init(|| open().expect("the SQL target's store opens"))
}

fn init() {
    sql();
}

/// Removes the temporary store (statics are not dropped at exit).
pub fn cleanup() {
    if let Ok(mut dir) = DIR.lock() {
        dir.take();
    }
}

fn open() -> Result<Sql, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().to_path_buf();
    if let Ok(mut slot) = DIR.lock() {
        *slot = Some(dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (storage, engine) = runtime.block_on(async {
        let storage = Storage::open(StorageConfig::new(path))
            .await
            .map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_millis() as i64;
        let start = now - now % 60_000 - 600_000;
        let mut batch = SampleBatch::default();
        for (name, job, instance) in [
            ("up", "node", "a:9100"),
            ("up", "node", "b:9100"),
            ("http_requests_total", "api", "c:8080"),
        ] {
            let labels =
                LabelSet::from_pairs([("__name__", name), ("job", job), ("instance", instance)])
                    .map_err(|e| e.to_string())?;
            let idx = batch.push_series(labels);
            for step in 0..40 {
                let value = if step == 20 && instance == "b:9100" {
                    f64::from_bits(vigil_storage::STALE_NAN_BITS)
                } else {
                    f64::from(step) * 1.5
                };
                batch.push_sample(idx, start + i64::from(step) * 15_000, value);
            }
        }
        storage
            .append(batch, AppendMode::Strict)
            .await
            .map_err(|e| e.to_string())?;
        let engine = SqlEngine::new(storage.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((storage, engine))
    })?;
    let tables = tables(&engine);
    Ok(Sql {
        runtime,
        engine,
        _storage: storage,
        tables,
    })
}

/// Every table and view of every schema of every catalog.
fn tables(engine: &SqlEngine) -> BTreeSet<String> {
    let ctx = engine.context();
    let mut out = BTreeSet::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            if let Some(schema) = catalog.schema(&schema_name) {
                for table in schema.table_names() {
                    out.insert(format!("{catalog_name}.{schema_name}.{table}"));
                }
            }
        }
    }
    out
}

fn run(input: &[u8], features: &mut Features) {
    let statement = text(input, features);
    let sql = sql();
    let result = sql
        .runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, sql.engine.query(&statement)).await });
    match result {
        Err(_) => features.add("timeout"),
        Ok(Ok((schema, batches))) => {
            features.count("columns", schema.fields().len());
            features.count("rows", batches.iter().map(|b| b.num_rows()).sum());
            for field in schema.fields().iter().take(8) {
                features.add_kv("type", field.data_type());
            }
        }
        Ok(Err(err)) => {
            let debug = format!("{err:?}");
            let kind = debug.split('(').next().unwrap_or("error");
            features.error(kind, &err.to_string());
        }
    }
    let now = tables(&sql.engine);
    assert!(
        now == sql.tables,
        "a statement changed the catalog: before {:?}, after {:?}",
        sql.tables,
        now
    );
}

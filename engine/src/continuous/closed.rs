//! Closed windows to Parquet (`persist` in a definition): once the watermark is
//! `close_after_ms` past a window (the value of the output's window column), the
//! window's rows are final and written once, as one Parquet file per batch of windows
//! closed together (`<data>/continuous/<name>/closed/<until>.parquet`: every window at or
//! before `until` not in an earlier file). Each file is written under a temporary name,
//! fsynced, renamed and the directory fsynced, so after a crash a file is whole or
//! absent; its name is the only record of what was written, so a window is never written
//! twice and never skipped. Rows that change a window after it closed (late data) stay in
//! the live result only: emit-on-close, as Arroyo and RisingWave do. The files are the
//! table `<name>_closed`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use super::row::{to_batch, Datum, Row};

/// The suffix of the table of a query's closed windows.
pub const CLOSED_SUFFIX: &str = "_closed";

/// What a definition asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persist {
    /// The output column that holds each row's window (a timestamp, e.g. `date_bin`'s).
    pub window_column: String,
    /// How long after a window's value the window is closed: its length plus the
    /// lateness allowed (at most the horizon, so rows are written before they expire).
    pub close_after_ms: i64,
}

/// One query's closed windows.
pub struct ClosedWindows {
    dir: PathBuf,
    schema: SchemaRef,
    column: usize,
    close_after_ms: i64,
    /// Windows at or before this (ms) have been written.
    until: i64,
    /// The windows after `until` that rows were added to (from the change batches):
    /// the result is scanned only when the first of them closes.
    pending: std::collections::BTreeSet<i64>,
}

fn io(path: &Path, err: impl std::fmt::Display) -> String {
    format!("closed windows {}: {err}", path.display())
}

/// The files in `dir` with their `until`, ascending.
fn files(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let until = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".parquet"))
            .and_then(|n| n.parse::<i64>().ok());
        if let Some(until) = until {
            out.push((until, path));
        }
    }
    out.sort();
    Ok(out)
}

impl ClosedWindows {
    pub fn open(
        dir: &Path,
        schema: SchemaRef,
        column: usize,
        close_after_ms: i64,
    ) -> Result<ClosedWindows, String> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let until = files(dir)
            .map_err(|e| io(dir, e))?
            .last()
            .map_or(i64::MIN, |(until, _)| *until);
        Ok(ClosedWindows {
            dir: dir.to_path_buf(),
            schema,
            column,
            close_after_ms,
            until,
            pending: std::collections::BTreeSet::new(),
        })
    }

    fn window_ms(&self, row: &Row) -> Option<i64> {
        match row.get(self.column) {
            Some(Datum::Time(ns)) => Some(ns.div_euclid(1_000_000)),
            _ => None,
        }
    }

    /// Notes the windows of the rows a change batch (or the seed) added.
    pub fn observe(&mut self, changes: &[(Row, i64)]) {
        for (row, diff) in changes {
            if *diff > 0 {
                if let Some(window) = self.window_ms(row).filter(|w| *w > self.until) {
                    self.pending.insert(window);
                }
            }
        }
    }

    /// Writes the windows the watermark has closed since the last call, taking the
    /// result's rows from `rows` only when some may be due; the file written, if any.
    pub fn advance(
        &mut self,
        watermark: i64,
        rows: impl FnOnce() -> Vec<(Row, i64)>,
    ) -> Result<Option<PathBuf>, String> {
        let bound = watermark.saturating_sub(self.close_after_ms);
        if self.pending.first().is_none_or(|first| *first > bound) {
            return Ok(None);
        }
        let mut closing: Vec<Row> = Vec::new();
        for (row, count) in rows() {
            if self
                .window_ms(&row)
                .is_some_and(|w| w > self.until && w <= bound)
            {
                for _ in 0..count.max(0) {
                    closing.push(row.clone());
                }
            }
        }
        self.pending.retain(|w| *w > bound);
        if closing.is_empty() {
            // Their rows were retracted again before the window closed.
            return Ok(None);
        }
        let batch = to_batch(&self.schema, closing.iter()).map_err(|e| io(&self.dir, e))?;
        let path = self.dir.join(format!("{bound}.parquet"));
        write_durably(&path, &batch)?;
        self.until = bound;
        Ok(Some(path))
    }

    pub fn until(&self) -> Option<i64> {
        (self.until != i64::MIN).then_some(self.until)
    }
}

fn write_durably(path: &Path, batch: &RecordBatch) -> Result<(), String> {
    let temporary = path.with_extension("parquet.tmp");
    let file = File::create(&temporary).map_err(|e| io(&temporary, e))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| io(&temporary, e))?;
    writer.write(batch).map_err(|e| io(&temporary, e))?;
    let mut file = writer.into_inner().map_err(|e| io(&temporary, e))?;
    file.flush().map_err(|e| io(&temporary, e))?;
    file.sync_all().map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// The closed windows of a query as a table (read at each scan).
#[derive(Debug)]
pub struct ClosedTable {
    pub dir: PathBuf,
    pub schema: SchemaRef,
}

#[async_trait]
impl TableProvider for ClosedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut batches = Vec::new();
        for (_, path) in files(&self.dir)? {
            let file = File::open(&path)?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
            for batch in reader {
                let batch = batch?;
                // The files were written with the result's schema (its nullability may
                // differ): take the columns in order.
                batches.push(
                    RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
                        .map_err(DataFusionError::from)?,
                );
            }
        }
        let table = MemTable::try_new(self.schema.clone(), vec![batches])?;
        table.scan(state, projection, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn row(minute: i64, n: i64) -> (Row, i64) {
        (
            vec![Datum::Time(minute * 60_000 * 1_000_000), Datum::Int(n)],
            1,
        )
    }

    #[test]
    fn windows_are_written_once_when_closed_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "minute",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("n", DataType::Int64, true),
        ]));
        let result = vec![row(1, 10), row(2, 20), row(3, 30)];
        let mut closed = ClosedWindows::open(dir.path(), schema.clone(), 0, 60_000).expect("open");
        closed.observe(&result);
        // Watermark at minute 3: windows 1 and 2 are a minute old or more.
        let written = closed
            .advance(3 * 60_000, || result.clone())
            .expect("advance");
        assert!(written.is_some());
        assert_eq!(closed.until(), Some(2 * 60_000));
        // Nothing new closes: no rescan, no file.
        let written = closed
            .advance(3 * 60_000 + 1, || panic!("no rescan needed"))
            .expect("advance");
        assert!(written.is_none());
        drop(closed);
        let mut reopened =
            ClosedWindows::open(dir.path(), schema.clone(), 0, 60_000).expect("reopen");
        assert_eq!(reopened.until(), Some(2 * 60_000));
        // Window 2 changed after it closed (late data): not written again; window 3 is.
        let changed = vec![row(1, 10), row(2, 21), row(3, 30)];
        reopened.observe(&changed);
        reopened
            .advance(4 * 60_000, || changed.clone())
            .expect("advance");
        assert_eq!(files(dir.path()).expect("files").len(), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table(
            "closed",
            Arc::new(ClosedTable {
                dir: dir.path().to_path_buf(),
                schema,
            }),
        )
        .expect("register");
        let batches = rt
            .block_on(async {
                ctx.sql("SELECT n FROM closed ORDER BY n")
                    .await?
                    .collect()
                    .await
            })
            .expect("query");
        let values: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(values, [10, 20, 30]);
    }
}

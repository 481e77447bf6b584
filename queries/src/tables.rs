//! DataFusion table providers over Vigil storage.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use vigil_storage::{schema, Storage};

use crate::time_range::TimeRange;

/// The URL under which the storage's object store is registered in the session.
pub const STORE_URL: &str = "vigil://blocks/";

/// `samples`: head and frozen heads from memory, plus the Parquet files of the
/// partitions that overlap the queried time range. Filters are passed to the Parquet
/// reader for row-group pruning and re-applied by DataFusion (`Inexact`).
#[derive(Debug)]
pub struct SamplesTable {
    storage: Arc<Storage>,
}

impl SamplesTable {
    pub fn new(storage: Arc<Storage>) -> Self {
        SamplesTable { storage }
    }
}

#[async_trait]
impl TableProvider for SamplesTable {
    fn schema(&self) -> SchemaRef {
        schema::SAMPLES.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table_schema = self.schema();
        let range = TimeRange::from_filters(schema::COL_TIMESTAMP, filters);
        let (memory, files) = self.storage.snapshot(range.start, range.end);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = vec![MemorySourceConfig::try_new_exec(
            &[memory],
            table_schema.clone(),
            projection.cloned(),
        )?];
        if !files.is_empty() {
            let files = files
                .iter()
                .map(|file| PartitionedFile::new(file.path.to_string(), file.size))
                .collect();
            inputs.push(parquet_scan(
                state,
                &table_schema,
                files,
                filters,
                projection,
            )?);
        }
        UnionExec::try_new(inputs)
    }
}

/// A scan of Parquet files of Vigil's store with the filters pushed down (row-group and
/// page pruning; DataFusion re-applies them), spread over the session's partitions.
fn parquet_scan(
    state: &dyn Session,
    table_schema: &SchemaRef,
    files: Vec<PartitionedFile>,
    filters: &[Expr],
    projection: Option<&Vec<usize>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let mut source = ParquetSource::new(table_schema.clone());
    if let Some(predicate) = conjunction(filters.iter().cloned()) {
        let df_schema = DFSchema::try_from(table_schema.as_ref().clone())?;
        source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
    }
    let groups = split_groups(FileGroup::new(files), state.config().target_partitions());
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
        .with_file_groups(groups)
        .with_projection_indices(projection.cloned())?
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Spreads files over up to `n` groups so DataFusion reads them in parallel.
fn split_groups(group: FileGroup, n: usize) -> Vec<FileGroup> {
    let n = n.max(1);
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
    for (idx, file) in group.into_inner().into_iter().enumerate() {
        groups[idx % n].push(file);
    }
    groups
        .into_iter()
        .filter(|files| !files.is_empty())
        .map(FileGroup::new)
        .collect()
}

/// Which record store a [`RecordsTable`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Records {
    Logs,
    Spans,
}

/// `logs` and `spans`: the store's files (its manifest, so an acknowledged batch is
/// visible at once) in the partitions the time filter (`timestamp` for logs, `start` for
/// spans) overlaps, read by DataFusion's Parquet reader with the filters pushed down for
/// row-group and page pruning (merged files are sorted, see `batch_files.rs`).
#[derive(Debug)]
pub struct RecordsTable {
    storage: Arc<Storage>,
    records: Records,
}

impl RecordsTable {
    pub fn new(storage: Arc<Storage>, records: Records) -> Self {
        RecordsTable { storage, records }
    }

    fn store(&self) -> &vigil_storage::logs::BatchFiles {
        match self.records {
            Records::Logs => self.storage.logs(),
            Records::Spans => self.storage.spans(),
        }
    }

    fn time_column(&self) -> &'static str {
        match self.records {
            Records::Logs => "timestamp",
            Records::Spans => "start",
        }
    }
}

#[async_trait]
impl TableProvider for RecordsTable {
    fn schema(&self) -> SchemaRef {
        self.store().schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table_schema = self.schema();
        let range = TimeRange::from_filters(self.time_column(), filters);
        let files = self.store().files(range.start, range.end);
        if files.is_empty() {
            let projected = match projection {
                Some(indices) => Arc::new(table_schema.project(indices)?),
                None => table_schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let files = files
            .iter()
            .map(|file| PartitionedFile::new(file.path.clone(), file.size))
            .collect();
        parquet_scan(state, &table_schema, files, filters, projection)
    }
}

/// `series`: every known series, from the in-memory catalog.
#[derive(Debug)]
pub struct SeriesTable {
    storage: Arc<Storage>,
}

impl SeriesTable {
    pub fn new(storage: Arc<Storage>) -> Self {
        SeriesTable { storage }
    }
}

#[async_trait]
impl TableProvider for SeriesTable {
    fn schema(&self) -> SchemaRef {
        schema::SERIES.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .storage
            .series_batch()
            .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

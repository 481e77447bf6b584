//! A continuous query's current result as a DataFusion table: a scan takes the hub's
//! rows at that moment (one consistent version) as one in-memory batch.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::row::{to_batch, Row};
use super::subscription::Hub;

#[derive(Debug)]
pub struct ResultTable {
    schema: SchemaRef,
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("columns", &self.columns())
            .finish()
    }
}

impl ResultTable {
    pub fn new(schema: SchemaRef, hub: Arc<Hub>) -> ResultTable {
        ResultTable { schema, hub }
    }
}

#[async_trait]
impl TableProvider for ResultTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut rows: Vec<Row> = Vec::new();
        for (row, count) in self.hub.rows() {
            for _ in 0..count.max(0) {
                rows.push(row.clone());
            }
        }
        let batch = to_batch(&self.schema, rows.iter())?;
        let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

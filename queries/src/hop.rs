//! Hopping windows: the table function `hop(table, slide, size)` — `table` is `'logs'`
//! or `'spans'`, `slide` and `size` intervals (`INTERVAL '1 minute'`, `'30s'`) — gives
//! the table's rows, each once per window of length `size` that contains its event time
//! (`logs.timestamp`, `spans.start`), with two more columns, `window_start` and
//! `window_end`. Windows start at multiples of `slide` (since the epoch, as
//! `date_bin`), so with `slide = size` they are tumbling windows. A row is in
//! `size / slide` windows (rounded up); at most 1,000.
//!
//! The same window assignment ([`hop_batch`]) runs ad hoc (this module's table) and in
//! continuous queries (which compile `FROM hop(…)` to the table and the assignment as
//! the query's first stage).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;

/// Windows per row at most.
pub const MAX_WINDOWS_PER_ROW: i64 = 1_000;

/// A hopping window: its slide and size, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    pub slide_ms: i64,
    pub size_ms: i64,
}

impl Hop {
    pub fn new(slide_ms: i64, size_ms: i64) -> Result<Hop, String> {
        if slide_ms <= 0 || size_ms <= 0 {
            return Err("hop: slide and size must be positive".into());
        }
        if (size_ms + slide_ms - 1) / slide_ms > MAX_WINDOWS_PER_ROW {
            return Err(format!(
                "hop: a row would be in more than {MAX_WINDOWS_PER_ROW} windows (size / slide)"
            ));
        }
        Ok(Hop { slide_ms, size_ms })
    }

    /// The starts of the windows that contain `t`, ascending: multiples of the slide in
    /// `(t - size, t]`.
    pub fn starts(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = t.div_euclid(self.slide_ms).saturating_mul(self.slide_ms);
        let first = (t.saturating_sub(self.size_ms))
            .div_euclid(self.slide_ms)
            .saturating_add(1)
            .saturating_mul(self.slide_ms);
        (0..)
            .map(move |k: i64| first.saturating_add(k.saturating_mul(self.slide_ms)))
            .take_while(move |start| *start <= last)
            .take(MAX_WINDOWS_PER_ROW as usize)
    }
}

/// The schema of `hop(table, …)`: the table's columns, then `window_start` and
/// `window_end` of the event-time column's type.
pub fn hop_schema(base: &Schema, time_index: usize) -> SchemaRef {
    let time_type = base.field(time_index).data_type().clone();
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("window_start", time_type.clone(), true));
    fields.push(Field::new("window_end", time_type, true));
    Arc::new(Schema::new(fields))
}

/// Each row of `batch` once per window that contains its time (column `time_index`),
/// with the window's start and end appended; rows without a time are in no window.
pub fn hop_batch(
    batch: &RecordBatch,
    time_index: usize,
    hop: Hop,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let time = batch.column(time_index);
    let millis = cast(time, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let millis = millis.as_primitive::<TimestampMillisecondType>();
    let mut indices = Vec::with_capacity(batch.num_rows());
    let mut starts = Vec::with_capacity(batch.num_rows());
    for (row, t) in millis.iter().enumerate() {
        let Some(t) = t else {
            continue;
        };
        for start in hop.starts(t) {
            indices.push(row as u32);
            starts.push(start);
        }
    }
    let indices = UInt32Array::from(indices);
    let mut columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| take(column.as_ref(), &indices, None))
        .collect::<Result<_, _>>()?;
    let as_time = |values: Vec<i64>| -> Result<ArrayRef, ArrowError> {
        let values: ArrayRef = Arc::new(Int64Array::from(values));
        let millis = cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        cast(&millis, time.data_type())
    };
    let ends: Vec<i64> = starts
        .iter()
        .map(|s| s.saturating_add(hop.size_ms))
        .collect();
    columns.push(as_time(starts)?);
    columns.push(as_time(ends)?);
    RecordBatch::try_new(schema.clone(), columns)
}

/// `hop('logs' | 'spans', slide, size)`, over the registered tables.
#[derive(Debug)]
pub struct HopFunction {
    /// (name, table, event-time column) of each table `hop` may read.
    pub tables: Vec<(String, Arc<dyn TableProvider>, String)>,
}

fn plan_error(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

impl TableFunctionImpl for HopFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 3 {
            return Err(plan_error(format!(
                "hop takes ('logs' or 'spans', slide, size); got {} arguments",
                exprs.len()
            )));
        }
        let simplifier = ExprSimplifier::new(SimplifyContext::builder().build());
        let mut values = Vec::with_capacity(3);
        for (i, expr) in exprs.iter().enumerate() {
            match simplifier.simplify(expr.clone())? {
                Expr::Literal(value, _) => values.push(value),
                other => {
                    return Err(plan_error(format!(
                        "hop: argument {} ({other}) must be a constant",
                        i + 1
                    )))
                }
            }
        }
        let name = match &values[0] {
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)) => text.clone(),
            other => {
                return Err(plan_error(format!(
                    "hop: the first argument names the table ('logs' or 'spans'), not {other}"
                )))
            }
        };
        let Some((name, table, time_column)) = self.tables.iter().find(|(n, _, _)| *n == name)
        else {
            return Err(plan_error(format!(
                "hop: no table {name:?} (hopping windows are over 'logs' or 'spans')"
            )));
        };
        let duration = |value: &ScalarValue, what: &str| {
            crate::promql_table::step_of(value).map_err(|_| {
                plan_error(format!(
                    "hop: invalid {what} {value}: use an interval or a duration such as '30s'"
                ))
            })
        };
        let hop = Hop::new(
            duration(&values[1], "slide")?,
            duration(&values[2], "size")?,
        )
        .map_err(plan_error)?;
        let base = table.schema();
        let time_index = base.index_of(time_column)?;
        Ok(Arc::new(HopTable {
            table_name: name.clone(),
            table: table.clone(),
            time_index,
            hop,
            schema: hop_schema(&base, time_index),
        }))
    }
}

/// The rows of one `hop(…)` call.
#[derive(Debug)]
pub struct HopTable {
    /// The table read (`logs` or `spans`).
    pub table_name: String,
    pub table: Arc<dyn TableProvider>,
    /// The event-time column in the table's (and this table's) schema.
    pub time_index: usize,
    pub hop: Hop,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for HopTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Planned as `SELECT *, unnest(<window starts>) …` over the table, so the table's
    /// own pruning and pushdown apply below it.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::logical_expr::{cast as cast_expr, col, lit, ScalarUDF};
        let base = self.table.schema();
        let time_column = base.field(self.time_index).name().clone();
        let time_type = base.field(self.time_index).data_type().clone();
        let starts = Arc::new(ScalarUDF::from(WindowStarts { hop: self.hop }));
        let mut columns: Vec<Expr> = base.fields().iter().map(|f| col(f.name())).collect();
        columns.push(starts.call(vec![col(&time_column)]).alias("__vigil_hop"));
        let size = lit(ScalarValue::DurationMillisecond(Some(self.hop.size_ms)));
        let mut output: Vec<Expr> = base.fields().iter().map(|f| col(f.name())).collect();
        let start = cast_expr(col("__vigil_hop"), time_type.clone());
        output.push(start.clone().alias("window_start"));
        output.push(cast_expr(start + size, time_type).alias("window_end"));
        let mut plan = LogicalPlanBuilder::scan(
            self.table_name.as_str(),
            provider_as_source(self.table.clone()),
            None,
        )?
        .project(columns)?
        .unnest_column("__vigil_hop")?
        .project(output)?;
        if let Some(projection) = projection {
            let schema = plan.schema().clone();
            let picked: Vec<Expr> = projection
                .iter()
                .map(|&i| Expr::Column(datafusion::common::Column::from(schema.qualified_field(i))))
                .collect();
            plan = plan.project(picked)?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}

/// The scalar function behind the ad hoc plan: a time → the list of its windows' starts
/// (ms).
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowStarts {
    hop: Hop,
}

impl datafusion::logical_expr::ScalarUDFImpl for WindowStarts {
    fn name(&self) -> &str {
        "hop_window_starts"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        static SIGNATURE: std::sync::LazyLock<datafusion::logical_expr::Signature> =
            std::sync::LazyLock::new(|| {
                datafusion::logical_expr::Signature::any(
                    1,
                    datafusion::logical_expr::Volatility::Immutable,
                )
            });
        &SIGNATURE
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ))))
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::{ListBuilder, TimestampMillisecondBuilder};
        let times = args
            .args
            .first()
            .ok_or_else(|| plan_error("hop: no time".into()))?
            .to_array(args.number_rows)?;
        let millis = cast(&times, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let millis = millis.as_primitive::<TimestampMillisecondType>();
        let mut lists = ListBuilder::new(TimestampMillisecondBuilder::new()).with_field(Arc::new(
            Field::new_list_field(DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ));
        for t in millis.iter() {
            if let Some(t) = t {
                for start in self.hop.starts(t) {
                    lists.values().append_value(start);
                }
            }
            lists.append(true);
        }
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            lists.finish(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_contain_the_time() {
        let hop = Hop::new(60_000, 300_000).expect("hop");
        let starts: Vec<i64> = hop.starts(1_000_000).collect();
        assert_eq!(starts, [720_000, 780_000, 840_000, 900_000, 960_000]);
        for start in starts {
            assert!(start <= 1_000_000 && 1_000_000 < start + 300_000);
        }
        // On a boundary: the window starting there, not the one ending there.
        let starts: Vec<i64> = hop.starts(900_000).collect();
        assert_eq!(starts, [660_000, 720_000, 780_000, 840_000, 900_000]);
        // Tumbling, and before the epoch.
        let tumbling = Hop::new(60_000, 60_000).expect("hop");
        assert_eq!(tumbling.starts(-1).collect::<Vec<_>>(), [-60_000]);
        // Gaps (size < slide): some times are in no window.
        let sampled = Hop::new(60_000, 10_000).expect("hop");
        assert_eq!(sampled.starts(30_000).count(), 0);
        assert_eq!(sampled.starts(5_000).collect::<Vec<_>>(), [0]);
        assert!(Hop::new(1, 10_000).is_err());
        assert!(Hop::new(0, 10).is_err());
        // Extreme times do not overflow.
        let _ = hop.starts(i64::MAX).count();
        let _ = hop.starts(i64::MIN).count();
    }
}

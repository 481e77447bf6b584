//! SQL → a continuous program: the statement is parsed and planned by DataFusion's SQL
//! front end over the catalog's schemas, and the logical plan is compiled into three
//! stages:
//!
//! 1. per input batch, linear: the `WHERE` predicate, then the grouping keys and the
//!    aggregate arguments (or, without `GROUP BY`, the projection), evaluated by
//!    DataFusion's physical expressions on the Arrow batch — every scalar function
//!    DataFusion offers works here;
//! 2. the aggregation: a differential `reduce` per group (`reduce.rs`);
//! 3. per output change, linear again: `HAVING` and the final projection, evaluated on
//!    the changed rows (a filter or projection of a difference is the difference of the
//!    filtered or projected results, so stages 1 and 3 never need state).
//!
//! Windows are over event time: tumbling windows written as a grouping key,
//! `date_bin(INTERVAL '1 minute', timestamp)` (or `date_trunc('minute', timestamp)`),
//! and hopping windows by reading `hop('logs', slide, size)` instead of `logs` and
//! grouping by its `window_start` (`vigil_queries::hop`; each row enters once per
//! window that holds it, in the first stage).
//! What the plan contains beyond this subset is refused with the construct's name.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

use super::row::supported_type;
use super::ContinuousError;

pub type PhysExpr = Arc<dyn PhysicalExpr>;

/// The tables a continuous SQL query can read, with their event-time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Logs,
    Spans,
    /// The `metrics` view: every sample with its series' name and labels.
    Metrics,
    /// Another continuous query's result (its changes, at its event times).
    Query(String),
}

impl Source {
    /// The column that carries a row's event time (a query's rows carry the time of the
    /// change that made them).
    pub fn time_column(&self) -> Option<&'static str> {
        match self {
            Source::Logs | Source::Metrics => Some("timestamp"),
            Source::Spans => Some("start"),
            Source::Query(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggKind {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
    /// `approx_distinct`: answered exactly.
    ApproxDistinct,
    /// `approx_percentile_cont(x, p)` / `approx_median`: answered exactly (nearest rank
    /// with linear interpolation, as DataFusion's t-digest approximates).
    Percentile(f64),
}

pub struct AggSpec {
    pub kind: AggKind,
    /// The aggregated value (`None`: `count(*)`).
    pub arg: Option<PhysExpr>,
    /// `FILTER (WHERE …)`.
    pub filter: Option<PhysExpr>,
    pub output_type: DataType,
    /// The argument is an integer (sums and averages of it are exact in the counting
    /// form, `Stage::abelian`).
    pub integer_arg: bool,
}

impl Stage {
    /// Whether every aggregate is a count, or a sum or average of integers: then the
    /// aggregation keeps per group only running totals (a differential `count_total` over
    /// vector differences), and an update costs the same however large its group is.
    pub fn abelian(&self) -> bool {
        match self {
            Stage::Aggregate { aggs, .. } => aggs.iter().all(|spec| match spec.kind {
                AggKind::Count => true,
                AggKind::Sum | AggKind::Avg => spec.integer_arg,
                _ => false,
            }),
            Stage::Project(_) | Stage::TopK { .. } => false,
        }
    }
}

pub enum Stage {
    /// No aggregation: the projected rows are the result.
    Project(Vec<PhysExpr>),
    /// Top k per partition (`row_number() OVER (PARTITION BY … ORDER BY …)` filtered by
    /// `<= k`): per row, the partition key, then the order key followed by the row; the
    /// first k rows of each partition come out with their rank appended, and go through
    /// the inner projection, the filter and the outer projection.
    TopK {
        partition: Vec<PhysExpr>,
        /// Order expressions with (ascending, nulls first).
        order: Vec<(PhysExpr, bool, bool)>,
        k: usize,
        /// The window's output: the input's columns then the rank.
        window_schema: SchemaRef,
        inner: Vec<PhysExpr>,
        inner_schema: SchemaRef,
        filter: PhysExpr,
        project: Vec<PhysExpr>,
    },
    Aggregate {
        keys: Vec<PhysExpr>,
        aggs: Vec<AggSpec>,
        /// Keys then aggregates, as the aggregation's output.
        agg_schema: SchemaRef,
        having: Option<PhysExpr>,
        project: Vec<PhysExpr>,
    },
}

/// One table read by a query.
pub struct Side {
    pub source: Source,
    /// Index of the event-time column in the table's schema (none for a query's result).
    pub time_index: Option<usize>,
    /// The table's columns (a query's result arrives as rows and is made a batch of it).
    pub schema: SchemaRef,
    /// The side's own `WHERE` (a join's per-table conditions stay in the join's filter).
    pub filter: Option<PhysExpr>,
    /// A join side's equi-join keys (empty for a single table).
    pub join_keys: Vec<PhysExpr>,
    /// `hop(…)`: each input row once per hopping window that holds it, with the window's
    /// start and end appended (the table's rows arrive without them).
    pub hop: Option<vigil_queries::hop::Hop>,
}

/// What a query reads.
pub enum From {
    Table(Side),
    /// An inner equi-join of two tables; the rows are the left row then the right row
    /// (`schema`), filtered by `filter` (the join's other conditions and the `WHERE`).
    Join {
        left: Side,
        right: Side,
        filter: Option<PhysExpr>,
        schema: SchemaRef,
    },
}

impl From {
    pub fn sides(&self) -> Vec<&Side> {
        match self {
            From::Table(side) => vec![side],
            From::Join { left, right, .. } => vec![left, right],
        }
    }
}

pub struct SqlProgram {
    pub from: From,
    pub stage: Stage,
    /// The result's columns.
    pub output: SchemaRef,
}

fn unsupported(construct: &str, why: &str) -> ContinuousError {
    ContinuousError::Unsupported(format!("{construct}: {why}"))
}

/// Plans `sql` with `state`'s catalog and compiles it; `queries` are the names of the
/// running continuous queries (readable as sources).
pub async fn compile(
    state: &SessionState,
    sql: &str,
    queries: &[String],
) -> Result<SqlProgram, ContinuousError> {
    let plan = state
        .create_logical_plan(sql)
        .await
        .map_err(|err| ContinuousError::Invalid(err.to_string()))?;
    compile_plan(state, &plan, queries)
}

fn compile_plan(
    state: &SessionState,
    plan: &LogicalPlan,
    queries: &[String],
) -> Result<SqlProgram, ContinuousError> {
    let output = Arc::new(plan.schema().as_arrow().clone());
    for field in output.fields() {
        if !supported_type(field.data_type()) {
            return Err(unsupported(
                &format!("column \"{}\"", field.name()),
                &format!("type {} cannot be maintained", field.data_type()),
            ));
        }
    }
    // Peel the top: Projection [Filter(HAVING)] Aggregate, or Projection over the scan.
    let mut node = strip(plan)?;
    let LogicalPlan::Projection(projection) = node else {
        return Err(unsupported(
            node_name(node),
            "expected a SELECT list at the top",
        ));
    };
    let projection_exprs = projection.expr.clone();
    node = strip(&projection.input)?;
    if let LogicalPlan::Filter(filter) = node {
        if let Some((inner, window)) = top_k_shape(&filter.input) {
            return compile_top_k(
                state,
                filter,
                inner,
                window,
                &projection_exprs,
                output,
                queries,
            );
        }
    }
    let mut having = None;
    if let LogicalPlan::Filter(filter) = node {
        if matches!(strip(&filter.input)?, LogicalPlan::Aggregate(_)) {
            having = Some((filter.predicate.clone(), filter.input.schema().clone()));
            node = strip(&filter.input)?;
        }
    }
    let physical = |expr: &Expr, schema: &DFSchema| -> Result<PhysExpr, ContinuousError> {
        check_expr(expr)?;
        state
            .create_physical_expr(expr.clone(), schema)
            .map_err(|err| ContinuousError::Invalid(err.to_string()))
    };
    match node {
        LogicalPlan::Aggregate(aggregate) => {
            let (from, input_schema) = compile_from(state, &aggregate.input, queries)?;
            let keys = aggregate
                .group_expr
                .iter()
                .map(|expr| {
                    if matches!(expr, Expr::GroupingSet(_)) {
                        return Err(unsupported(
                            "GROUPING SETS / CUBE / ROLLUP",
                            "one grouping per continuous query",
                        ));
                    }
                    physical(expr, &input_schema)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let agg_fields = aggregate.schema.fields();
            let mut aggs = Vec::new();
            for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
                let output_type = agg_fields[keys.len() + i].data_type().clone();
                aggs.push(compile_aggregate(
                    expr,
                    output_type,
                    &input_schema,
                    &physical,
                )?);
            }
            let agg_schema = nullable(aggregate.schema.as_arrow());
            for field in agg_schema.fields() {
                if !supported_type(field.data_type()) {
                    return Err(unsupported(
                        &format!("grouping key \"{}\"", field.name()),
                        &format!("type {} cannot be a key", field.data_type()),
                    ));
                }
            }
            let having = having
                .map(|(predicate, schema)| physical(&predicate, &schema))
                .transpose()?;
            let project = projection_exprs
                .iter()
                .map(|expr| physical(expr, &aggregate.schema))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SqlProgram {
                from,
                stage: Stage::Aggregate {
                    keys,
                    aggs,
                    agg_schema,
                    having,
                    project,
                },
                output,
            })
        }
        _ => {
            let (from, input_schema) = compile_from(state, node, queries)?;
            let project = projection_exprs
                .iter()
                .map(|expr| physical(expr, &input_schema))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SqlProgram {
                from,
                stage: Stage::Project(project),
                output,
            })
        }
    }
}

fn physical_expr(
    state: &SessionState,
    expr: &Expr,
    schema: &DFSchema,
) -> Result<PhysExpr, ContinuousError> {
    check_expr(expr)?;
    state
        .create_physical_expr(expr.clone(), schema)
        .map_err(|err| ContinuousError::Invalid(err.to_string()))
}

/// `[Filter] (TableScan | Join)` → what the query reads, and the schema the expressions
/// above it see.
fn compile_from(
    state: &SessionState,
    plan: &LogicalPlan,
    queries: &[String],
) -> Result<(From, DFSchema), ContinuousError> {
    let node = strip(plan)?;
    let (filter, below) = match node {
        LogicalPlan::Filter(filter) => (Some(&filter.predicate), strip(&filter.input)?),
        other => (None, other),
    };
    if let LogicalPlan::Join(join) = below {
        return compile_join(state, join, filter, queries);
    }
    let schema = match node {
        LogicalPlan::Filter(filter) => filter.input.schema().as_ref().clone(),
        other => other.schema().as_ref().clone(),
    };
    let mut side = compile_side(state, below, &schema, queries)?;
    side.filter = filter
        .map(|predicate| physical_expr(state, predicate, &schema))
        .transpose()?;
    Ok((From::Table(side), schema))
}

/// A table (possibly under an alias) whose rows the expressions of `schema` read.
fn compile_side(
    state: &SessionState,
    plan: &LogicalPlan,
    schema: &DFSchema,
    queries: &[String],
) -> Result<Side, ContinuousError> {
    let _ = state;
    let scan_node = strip(plan)?;
    if is_metrics_view(scan_node) {
        let time_index = schema.fields().iter().position(|f| f.name() == "timestamp");
        return Ok(Side {
            source: Source::Metrics,
            time_index,
            schema: nullable(schema.as_arrow()),
            filter: None,
            join_keys: Vec::new(),
            hop: None,
        });
    }
    let LogicalPlan::TableScan(scan) = scan_node else {
        return Err(unsupported(
            node_name(scan_node),
            "a continuous query reads logs or spans, or an inner join of the two, with WHERE, GROUP BY and HAVING",
        ));
    };
    let hopping = datafusion::datasource::source_as_provider(&scan.source)
        .ok()
        .and_then(|provider| {
            (provider.as_ref() as &dyn std::any::Any)
                .downcast_ref::<vigil_queries::hop::HopTable>()
                .map(|table| (table.table_name.clone(), table.hop))
        });
    let table_name = match &hopping {
        Some((name, _)) => name.as_str(),
        None => scan.table_name.table(),
    };
    let source = match table_name {
        "logs" => Source::Logs,
        "spans" => Source::Spans,
        name if queries.iter().any(|q| q == name) => Source::Query(name.to_string()),
        other => {
            return Err(unsupported(
                &format!("table \"{other}\""),
                "continuous queries read `logs`, `spans` or another continuous query",
            ))
        }
    };
    if scan.fetch.is_some() || !scan.filters.is_empty() {
        return Err(unsupported("LIMIT", "a continuous result has no row limit"));
    }
    let time_index = match source.time_column() {
        Some(column) => Some(
            schema
                .fields()
                .iter()
                .position(|f| f.name() == column)
                .ok_or_else(|| ContinuousError::Invalid(format!("no column {column}")))?,
        ),
        None => None,
    };
    Ok(Side {
        source,
        time_index,
        schema: nullable(schema.as_arrow()),
        filter: None,
        join_keys: Vec::new(),
        hop: hopping.map(|(_, hop)| hop),
    })
}

fn compile_join(
    state: &SessionState,
    join: &datafusion::logical_expr::Join,
    where_filter: Option<&Expr>,
    queries: &[String],
) -> Result<(From, DFSchema), ContinuousError> {
    use datafusion::logical_expr::utils::split_conjunction;
    use datafusion::logical_expr::JoinType;
    if join.join_type != JoinType::Inner {
        return Err(unsupported(
            &format!("{} JOIN", join.join_type),
            "only inner joins are maintained (a row of one side waits for its match)",
        ));
    }
    let left_schema = join.left.schema().as_ref().clone();
    let right_schema = join.right.schema().as_ref().clone();
    let mut pairs: Vec<(Expr, Expr)> = join.on.clone();
    let mut residual: Vec<Expr> = Vec::new();
    // Equalities between one side and the other in ON (the planner may leave them in
    // the join's filter) are the join keys; the rest filters joined rows.
    let within = |expr: &Expr, schema: &DFSchema| {
        let columns = expr.column_refs();
        !columns.is_empty() && columns.iter().all(|c| schema.has_column(c))
    };
    if let Some(filter) = &join.filter {
        for conjunct in split_conjunction(filter) {
            match conjunct {
                Expr::BinaryExpr(binary) if binary.op == datafusion::logical_expr::Operator::Eq => {
                    let (l, r) = (binary.left.as_ref(), binary.right.as_ref());
                    if within(l, &left_schema) && within(r, &right_schema) {
                        pairs.push((l.clone(), r.clone()));
                    } else if within(r, &left_schema) && within(l, &right_schema) {
                        pairs.push((r.clone(), l.clone()));
                    } else {
                        residual.push(conjunct.clone());
                    }
                }
                other => residual.push(other.clone()),
            }
        }
    }
    if pairs.is_empty() {
        return Err(unsupported(
            "JOIN without an equality between the two tables",
            "join on a key, e.g. ON l.trace_id = s.trace_id",
        ));
    }
    let mut left = compile_side(state, &join.left, &left_schema, queries)?;
    let mut right = compile_side(state, &join.right, &right_schema, queries)?;
    for (l, r) in &pairs {
        left.join_keys.push(physical_expr(state, l, &left_schema)?);
        right
            .join_keys
            .push(physical_expr(state, r, &right_schema)?);
    }
    let joined = join.schema.as_ref().clone();
    residual.extend(where_filter.cloned());
    let filter = residual
        .into_iter()
        .reduce(|a, b| a.and(b))
        .map(|predicate| physical_expr(state, &predicate, &joined))
        .transpose()?;
    let schema = nullable(joined.as_arrow());
    Ok((
        From::Join {
            left,
            right,
            filter,
            schema,
        },
        joined,
    ))
}

/// The inlined `metrics` view (`SubqueryAlias(metrics)` over its join of samples and
/// series).
fn is_metrics_view(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::SubqueryAlias(alias) if alias.alias.table() == "metrics")
}

/// `[Alias] Projection(… row_number() … AS rank) ← Window`, the shape of a top-k query.
fn top_k_shape(
    plan: &LogicalPlan,
) -> Option<(
    &datafusion::logical_expr::Projection,
    &datafusion::logical_expr::Window,
)> {
    let mut node = plan;
    while let LogicalPlan::SubqueryAlias(alias) = node {
        node = &alias.input;
    }
    let LogicalPlan::Projection(inner) = node else {
        return None;
    };
    let mut below = inner.input.as_ref();
    while let LogicalPlan::SubqueryAlias(alias) = below {
        below = &alias.input;
    }
    match below {
        LogicalPlan::Window(window) => Some((inner, window)),
        _ => None,
    }
}

fn compile_top_k(
    state: &SessionState,
    filter: &datafusion::logical_expr::Filter,
    inner: &datafusion::logical_expr::Projection,
    window: &datafusion::logical_expr::Window,
    outer: &[Expr],
    output: SchemaRef,
    queries: &[String],
) -> Result<SqlProgram, ContinuousError> {
    use datafusion::logical_expr::{Operator, WindowFunctionDefinition};
    let [expr] = window.window_expr.as_slice() else {
        return Err(unsupported(
            "several window functions",
            "one row_number() per continuous query",
        ));
    };
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::WindowFunction(function) = expr else {
        return Err(unsupported(
            "window expression",
            "expected row_number() OVER (…)",
        ));
    };
    let name = match &function.fun {
        WindowFunctionDefinition::WindowUDF(udf) => udf.name().to_string(),
        WindowFunctionDefinition::AggregateUDF(udf) => udf.name().to_string(),
    };
    if name != "row_number" {
        return Err(unsupported(
            &format!("window function {name}()"),
            "top-k per group is row_number() OVER (PARTITION BY … ORDER BY …) with WHERE rank <= k",
        ));
    }
    let params = &function.params;
    if params.order_by.is_empty() {
        return Err(unsupported(
            "row_number() without ORDER BY",
            "the top k of a partition needs an order",
        ));
    }
    // The filter: `<rank column> <= k` or `< k`.
    let window_column = window
        .schema
        .fields()
        .last()
        .map(|f| f.name().clone())
        .unwrap_or_default();
    let k = match &filter.predicate {
        Expr::BinaryExpr(binary) => {
            let literal = match binary.right.as_ref() {
                Expr::Literal(value, _) => value.to_string().parse::<i64>().ok(),
                _ => None,
            };
            match (binary.op, literal) {
                (Operator::LtEq, Some(k)) => Some(k),
                (Operator::Lt, Some(k)) => Some(k - 1),
                _ => None,
            }
        }
        _ => None,
    };
    let Some(k) = k.filter(|k| (1..=10_000).contains(k)) else {
        return Err(unsupported(
            "the filter on row_number()",
            "write WHERE rank <= k with a constant k between 1 and 10000",
        ));
    };
    let _ = window_column;
    let (from, input_schema) = compile_from(state, &window.input, queries)?;
    if matches!(from, From::Join { .. }) {
        return Err(unsupported(
            "top-k over a join",
            "make the join a continuous query and take the top k of its result",
        ));
    }
    let partition = params
        .partition_by
        .iter()
        .map(|e| physical_expr(state, e, &input_schema))
        .collect::<Result<Vec<_>, _>>()?;
    let order = params
        .order_by
        .iter()
        .map(|sort| {
            Ok((
                physical_expr(state, &sort.expr, &input_schema)?,
                sort.asc,
                sort.nulls_first,
            ))
        })
        .collect::<Result<Vec<_>, ContinuousError>>()?;
    let window_schema = nullable(window.schema.as_arrow());
    let inner_exprs = inner
        .expr
        .iter()
        .map(|e| physical_expr(state, e, &window.schema))
        .collect::<Result<Vec<_>, _>>()?;
    let inner_schema = nullable(inner.schema.as_arrow());
    let filter_expr = physical_expr(state, &filter.predicate, &inner.schema)?;
    let project = outer
        .iter()
        .map(|e| physical_expr(state, e, filter.input.schema()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SqlProgram {
        from,
        stage: Stage::TopK {
            partition,
            order,
            k: k as usize,
            window_schema,
            inner: inner_exprs,
            inner_schema,
            filter: filter_expr,
            project,
        },
        output,
    })
}

/// Skips nodes that do not change rows (aliases); refuses those a continuous result
/// cannot have.
fn strip(plan: &LogicalPlan) -> Result<&LogicalPlan, ContinuousError> {
    match plan {
        // The `metrics` view is a source of its own (the samples as they are appended).
        LogicalPlan::SubqueryAlias(_) if is_metrics_view(plan) => Ok(plan),
        LogicalPlan::SubqueryAlias(alias) => strip(&alias.input),
        LogicalPlan::Sort(_) => Err(unsupported(
            "ORDER BY",
            "a continuous result is a set of rows; order them when reading the table",
        )),
        LogicalPlan::Limit(_) => Err(unsupported(
            "LIMIT",
            "a continuous result is not cut to a number of rows",
        )),
        LogicalPlan::Window(_) => Err(unsupported(
            "window functions (OVER)",
            "for time windows group by date_bin(INTERVAL '1 minute', timestamp); for the top k \
             per group, filter row_number() OVER (PARTITION BY … ORDER BY …) <= k",
        )),
        LogicalPlan::Distinct(_) => Err(unsupported(
            "SELECT DISTINCT",
            "write it as GROUP BY over the same columns",
        )),
        LogicalPlan::Union(_) => Err(unsupported("UNION", "one input per continuous query")),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Err(unsupported(
            "a query without a table",
            "a continuous query reads logs or spans",
        )),
        LogicalPlan::Statement(_) | LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) => {
            Err(unsupported("statement", "a continuous query is one SELECT"))
        }
        other => Ok(other),
    }
}

fn node_name(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Projection(_) => "projection",
        LogicalPlan::Filter(_) => "filter",
        LogicalPlan::Aggregate(_) => "nested aggregation",
        LogicalPlan::TableScan(_) => "table scan",
        LogicalPlan::Subquery(_) => "subquery",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "WITH RECURSIVE",
        LogicalPlan::Extension(_) => "table function",
        _ => "this construct",
    }
}

/// Refuses expressions whose value is not a function of the row alone.
fn check_expr(expr: &Expr) -> Result<(), ContinuousError> {
    let mut problem = None;
    let _ = expr.apply(|e| {
        let found = match e {
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                Some(unsupported("subquery", "not maintained incrementally"))
            }
            Expr::WindowFunction(_) => Some(unsupported(
                "window functions (OVER)",
                "use a tumbling window in GROUP BY",
            )),
            Expr::ScalarFunction(f) if volatile(f.name()) => Some(unsupported(
                &format!("{}()", f.name()),
                "its value depends on when it runs, not on the data",
            )),
            _ => None,
        };
        Ok(match found {
            Some(err) => {
                problem = Some(err);
                datafusion::common::tree_node::TreeNodeRecursion::Stop
            }
            None => datafusion::common::tree_node::TreeNodeRecursion::Continue,
        })
    });
    match problem {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn volatile(name: &str) -> bool {
    matches!(
        name,
        "now" | "current_date" | "current_time" | "random" | "uuid" | "to_unixtime_now"
    )
}

fn compile_aggregate(
    expr: &Expr,
    output_type: DataType,
    input_schema: &DFSchema,
    physical: &dyn Fn(&Expr, &DFSchema) -> Result<PhysExpr, ContinuousError>,
) -> Result<AggSpec, ContinuousError> {
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(function) = expr else {
        return Err(unsupported(&expr.to_string(), "not an aggregate function"));
    };
    let name = function.func.name().to_ascii_lowercase();
    let params = &function.params;
    if !params.order_by.is_empty() {
        return Err(unsupported(
            &format!("{name}(… ORDER BY …)"),
            "ordered aggregates are not maintained",
        ));
    }
    let arg = |i: usize| -> Result<Option<PhysExpr>, ContinuousError> {
        params
            .args
            .get(i)
            .map(|a| physical(a, input_schema))
            .transpose()
    };
    let literal = |i: usize| -> Option<f64> {
        match params.args.get(i) {
            Some(Expr::Literal(value, _)) => value.to_string().parse().ok(),
            _ => None,
        }
    };
    let kind = match (name.as_str(), params.distinct) {
        ("count", false) => AggKind::Count,
        ("count", true) => AggKind::CountDistinct,
        ("sum", false) => AggKind::Sum,
        ("min", _) => AggKind::Min,
        ("max", _) => AggKind::Max,
        ("avg" | "mean", false) => AggKind::Avg,
        ("approx_distinct", _) => AggKind::ApproxDistinct,
        ("approx_median" | "median", false) => AggKind::Percentile(0.5),
        ("approx_percentile_cont", false) => {
            let Some(p) = literal(1).filter(|p| (0.0..=1.0).contains(p)) else {
                return Err(unsupported(
                    "approx_percentile_cont",
                    "the percentile must be a constant between 0 and 1",
                ));
            };
            AggKind::Percentile(p)
        }
        (other, distinct) => {
            return Err(unsupported(
                &format!("{}{other}()", if distinct { "DISTINCT " } else { "" }),
                "supported aggregates: count, count(DISTINCT), sum, min, max, avg, \
                 approx_distinct, approx_median, approx_percentile_cont",
            ))
        }
    };
    if matches!(kind, AggKind::Sum | AggKind::Avg | AggKind::Percentile(_))
        && !(output_type.is_numeric())
    {
        return Err(unsupported(
            &format!("{name}()"),
            &format!("result type {output_type} is not maintained"),
        ));
    }
    let filter = params
        .filter
        .as_ref()
        .map(|f| physical(f, input_schema))
        .transpose()?;
    let arg = arg(0)?;
    let integer_arg = match &arg {
        Some(arg) => arg
            .data_type(input_schema.as_arrow())
            .is_ok_and(|t| t.is_integer()),
        None => false,
    };
    Ok(AggSpec {
        kind,
        arg,
        filter,
        output_type,
        integer_arg,
    })
}

/// The result's schema with every column nullable (differences may carry nulls where
/// the ad hoc plan proved none).
pub fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

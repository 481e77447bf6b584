//! Continuous queries: submitted once, maintained by the dataflow as data arrives,
//! readable as a table and subscribable as a change stream.
//!
//! | file | role |
//! |---|---|
//! | `row.rs` | `Row`/`Datum`, the named row type (Arrow ↔ rows ↔ JSON) |
//! | `sql.rs` | SQL → `SqlProgram` through DataFusion's planner; the supported subset |
//! | `aggregate.rs` | the aggregation operator's arithmetic per group |
//! | `runner.rs` | one query's dataflow on the service's workers: first stage, dataflow, last stage, watermark |
//! | `operators/` | the query's dataflow, one file per operator kind (join, running totals, reduce, top k) |
//! | `intake.rs` | the thread that waits on every query's taps and hands batches to the feeding worker |
//! | `subscription.rs` | `Hub`: the maintained result, numbered change batches, resume |
//! | `table.rs` | a query's result as a DataFusion table |
//! | `derived.rs` | span RED metrics and error-log counts as Prometheus series |
//!
//! `ContinuousQueries` is the registry: it validates and compiles a definition,
//! persists it (`<data>/continuous/<name>/definition.json`, fsynced before the answer),
//! seeds the query from storage and starts it, and on start restarts every persisted
//! query so that subscribers resume where they were.

pub mod aggregate;
pub mod closed;
pub mod derived;
mod intake;
mod operators;
pub mod row;
pub mod runner;
pub mod sql;
pub mod subscription;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vigil_queries::SqlEngine;
use vigil_storage::{LabelSet, Storage};

pub use runner::Budget;
pub use subscription::{Hub, Message, MessageKind, Subscription};

/// The default horizon: the result covers the last hour of event time.
pub const DEFAULT_HORIZON_MS: i64 = 3_600_000;
/// The longest horizon a query may ask for (state grows with it).
pub const MAX_HORIZON_MS: i64 = 7 * 24 * 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum ContinuousError {
    /// The query is valid SQL but uses a construct that is not maintained incrementally.
    #[error("not supported in a continuous query: {0}")]
    Unsupported(String),
    /// The definition or the query is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error("continuous query \"{0}\" already exists")]
    Exists(String),
    #[error("continuous query \"{0}\" not found")]
    NotFound(String),
    #[error("{0}")]
    Limit(String),
    #[error("continuous query storage: {0}")]
    Io(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Sql,
    Promql,
}

/// What a client submits (and what is persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    pub language: Language,
    pub query: String,
    /// Milliseconds of event time the result covers, back from the watermark.
    #[serde(default = "default_horizon")]
    pub horizon_ms: i64,
    /// PromQL: the evaluation step (ticks at multiples of it), 60s by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<i64>,
    /// Who created it (the credential's name; counted against the per-client cap).
    #[serde(default)]
    pub owner: String,
    /// SQL: write each window's rows to Parquet once the window closes (the table
    /// `<name>_closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<closed::Persist>,
}

fn default_horizon() -> i64 {
    DEFAULT_HORIZON_MS
}

/// The rule engine, as PromQL continuous queries see it: each such query is a recording
/// rule (`record: <name>`) in a group of its own, evaluated at every multiple of its
/// step with the rules' incremental compilation; its output is written back as the
/// series `<name>` and handed to [`ContinuousQueries::promql_output`].
pub trait RuleHost: Send + Sync {
    /// The pending and firing alerts as a maintained result (rows: labels, state,
    /// active_at), subscribed to as `ALERTS`.
    fn alerts(&self) -> Arc<Hub>;

    /// Replaces the continuous groups the rule engine evaluates (blocking: the dataflow
    /// is rebuilt and seeded).
    fn set_continuous_groups(&self, groups: Vec<crate::rules::Group>) -> Result<(), String>;
}

/// The `file` of the rule groups PromQL continuous queries become.
pub const CONTINUOUS_FILE: &str = "<continuous queries>";
/// The group name prefix of a PromQL continuous query (`continuous:<name>`).
pub const GROUP_PREFIX: &str = "continuous:";
/// The default step of a PromQL continuous query.
pub const DEFAULT_STEP_MS: i64 = 60_000;

/// Caps on what clients may run.
#[derive(Debug, Clone)]
pub struct ContinuousLimits {
    pub max_queries: usize,
    pub max_queries_per_owner: usize,
    pub budget: Budget,
}

impl Default for ContinuousLimits {
    fn default() -> Self {
        ContinuousLimits {
            max_queries: 64,
            max_queries_per_owner: 16,
            budget: Budget::default(),
        }
    }
}

enum Program {
    Sql(Box<sql::SqlProgram>),
    Promql(crate::rules::Group),
}

struct Running {
    definition: Definition,
    /// The continuous queries this one reads.
    reads: Vec<String>,
    /// A PromQL query's rule group.
    group: Option<crate::rules::Group>,
    hub: Arc<Hub>,
    stats: Arc<runner::Stats>,
    /// A SQL query's dataflow on the service (dropping it stops the query).
    installed: Option<runner::Installed>,
}

impl Running {
    fn halt(&mut self) {
        self.installed.take();
    }
}

pub struct ContinuousQueries {
    /// The workers every query's dataflow runs on (the rules' too).
    service: crate::service::Service,
    intake: intake::Intake,
    rules: std::sync::OnceLock<Arc<dyn RuleHost>>,
    dir: PathBuf,
    storage: Arc<Storage>,
    sql: datafusion::prelude::SessionContext,
    limits: ContinuousLimits,
    queries: Mutex<BTreeMap<String, Running>>,
}

/// Names of the tables a query may not shadow.
const RESERVED: &[&str] = &["logs", "spans", "samples", "series", "metrics", ALERTS];

/// The name under which the alert state is subscribed to.
pub const ALERTS: &str = "alerts";

impl ContinuousQueries {
    /// Opens the registry in `<dir>` and restarts every persisted query (PromQL ones
    /// through `rules`).
    pub async fn open(
        dir: &Path,
        storage: Arc<Storage>,
        sql: &SqlEngine,
        rules: Option<Arc<dyn RuleHost>>,
        limits: ContinuousLimits,
        dataflows: crate::service::Service,
    ) -> Result<Arc<ContinuousQueries>, ContinuousError> {
        std::fs::create_dir_all(dir).map_err(|e| ContinuousError::Io(e.to_string()))?;
        let service = Arc::new(ContinuousQueries {
            service: dataflows,
            intake: intake::Intake::start().map_err(|e| ContinuousError::Io(e.to_string()))?,
            rules: std::sync::OnceLock::new(),
            dir: dir.to_path_buf(),
            storage,
            sql: sql.context().clone(),
            limits,
            queries: Mutex::new(BTreeMap::new()),
        });
        if let Some(rules) = rules {
            let _ = service.rules.set(rules);
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ContinuousError::Io(e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.join("definition.json").is_file())
            .collect();
        entries.sort();
        let mut pending = Vec::new();
        for path in entries {
            let loaded = std::fs::read(path.join("definition.json"))
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Definition>(&bytes).map_err(|e| e.to_string())
                });
            match loaded {
                Ok(definition) => pending.push(definition),
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "unreadable continuous query definition")
                }
            }
        }
        // A query that reads another starts after it: retry until nothing more starts.
        loop {
            let mut failed = Vec::new();
            let before = pending.len();
            for definition in pending {
                if let Err(err) = service.start(definition.clone()).await {
                    failed.push((definition, err));
                }
            }
            if failed.is_empty() || failed.len() == before {
                for (definition, err) in failed {
                    tracing::error!(query = %definition.name, error = %err, "continuous query not restarted");
                }
                break;
            }
            pending = failed
                .into_iter()
                .map(|(definition, _)| definition)
                .collect();
        }
        Ok(service)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates, compiles, persists and starts a new query.
    pub async fn create(&self, definition: Definition) -> Result<Value, ContinuousError> {
        validate(&definition)?;
        // Compile before anything is written: a refused query leaves no trace.
        let program = self.compile(&definition).await?;
        self.check_caps(&definition)?;
        if self
            .sql
            .table_exist(definition.name.as_str())
            .unwrap_or(false)
        {
            return Err(ContinuousError::Exists(definition.name));
        }
        let dir = self.dir.join(&definition.name);
        let _ = std::fs::remove_dir_all(&dir);
        write_definition(&dir, &definition)?;
        let name = definition.name.clone();
        let promql = definition.language == Language::Promql;
        if let Err(err) = self.launch(definition, program, false).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }
        if promql {
            if let Err(err) = self.sync_rules().await {
                if let Some(mut running) = self.lock().remove(&name) {
                    running.halt();
                }
                let _ = self.sql.deregister_table(name.as_str());
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
        }
        self.describe(&name)
    }

    /// An inline subscription's query (`/api/v1/subscribe?query=…`): a SQL continuous
    /// query under a generated name, counted against the caps like any other, never
    /// persisted, its result in memory; the caller drops it when the subscriber leaves.
    pub async fn create_inline(
        &self,
        query: String,
        horizon_ms: i64,
        owner: String,
    ) -> Result<(String, Subscription), ContinuousError> {
        static INLINE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "inline_{}_{}",
            now_ms(),
            INLINE.fetch_add(1, Ordering::Relaxed)
        );
        let definition = Definition {
            name: name.clone(),
            language: Language::Sql,
            query,
            horizon_ms,
            step_ms: None,
            owner,
            persist: None,
        };
        validate(&definition)?;
        let program = self.compile(&definition).await?;
        self.check_caps(&definition)?;
        self.launch(definition, program, true).await?;
        let subscription = self.subscribe(&name, None)?;
        Ok((name, subscription))
    }

    /// The caps on the number of queries, in total and per client.
    fn check_caps(&self, definition: &Definition) -> Result<(), ContinuousError> {
        let queries = self.lock();
        if queries.contains_key(&definition.name) {
            return Err(ContinuousError::Exists(definition.name.clone()));
        }
        if queries.len() >= self.limits.max_queries {
            return Err(ContinuousError::Limit(format!(
                "{} continuous queries are running, the limit",
                queries.len()
            )));
        }
        let owned = queries
            .values()
            .filter(|q| q.definition.owner == definition.owner)
            .count();
        if owned >= self.limits.max_queries_per_owner {
            return Err(ContinuousError::Limit(format!(
                "this client runs {owned} continuous queries, the limit per client"
            )));
        }
        Ok(())
    }

    async fn compile(&self, definition: &Definition) -> Result<Program, ContinuousError> {
        match definition.language {
            Language::Sql => {
                // The shape check `/api/v1/sql` applies, before a parser builds a tree.
                vigil_queries::sql::check_shape(
                    &definition.query,
                    vigil_queries::SqlLimits::default().max_operators,
                )
                .map_err(|err| ContinuousError::Invalid(err.to_string()))?;
                let running: Vec<String> = self.lock().keys().cloned().collect();
                Ok(Program::Sql(Box::new(
                    sql::compile(&self.sql.state(), &definition.query, &running).await?,
                )))
            }
            Language::Promql => {
                if self.rules.get().is_none() {
                    return Err(ContinuousError::Invalid(
                        "PromQL continuous queries need the rule engine, which is not running"
                            .into(),
                    ));
                }
                Ok(Program::Promql(promql_group(definition)?))
            }
        }
    }

    /// Starts a persisted query (at open).
    async fn start(&self, definition: Definition) -> Result<(), ContinuousError> {
        let program = self.compile(&definition).await?;
        self.launch(definition, program, false).await
    }

    /// Hands the rule engine the groups of every PromQL query (after `open`, once the
    /// rule engine sends their output here).
    pub async fn sync_rules(&self) -> Result<(), ContinuousError> {
        let Some(rules) = self.rules.get().cloned() else {
            return Ok(());
        };
        let groups: Vec<crate::rules::Group> = self
            .lock()
            .values()
            .filter_map(|running| running.group.clone())
            .collect();
        tokio::task::spawn_blocking(move || rules.set_continuous_groups(groups))
            .await
            .map_err(|err| ContinuousError::Io(err.to_string()))?
            .map_err(ContinuousError::Invalid)
    }

    /// A PromQL query's output at tick `t` (its whole result: the hub publishes what
    /// changed since the previous tick).
    pub fn promql_output(&self, group: &str, t: i64, samples: &[(LabelSet, f64)]) {
        let Some(name) = group.strip_prefix(GROUP_PREFIX) else {
            return;
        };
        let hub = match self.lock().get(name) {
            Some(running) => running.hub.clone(),
            None => return,
        };
        let rows = samples
            .iter()
            .map(|(labels, value)| {
                let row = vec![
                    row::Datum::labels(labels, false),
                    row::Datum::Float(row::F64(*value)),
                ];
                (row, 1)
            })
            .collect();
        if let Err(err) = hub.reconcile(t, rows) {
            tracing::warn!(query = name, error = %err, "continuous query output not published");
        }
    }

    /// Starts a compiled query; a `transient` one (an inline subscription) keeps its
    /// result in memory only.
    async fn launch(
        &self,
        definition: Definition,
        program: Program,
        transient: bool,
    ) -> Result<(), ContinuousError> {
        let program = match program {
            Program::Sql(program) => Arc::<sql::SqlProgram>::from(program),
            Program::Promql(group) => return self.launch_promql(definition, group),
        };
        let columns = program
            .output
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let hub = if transient {
            Arc::new(Hub::in_memory(columns))
        } else {
            Arc::new(
                Hub::open(columns, &self.dir.join(&definition.name).join("result"))
                    .map_err(|e| ContinuousError::Io(e.to_string()))?,
            )
        };
        // Seed from the files that may hold rows within the horizon of the newest data,
        // then follow the tap (each batch is in exactly one of the two).
        let since = hub.position().1.max(now_ms()) - definition.horizon_ms - 3_600_000;
        let mut sources: Vec<sql::Source> = program
            .from
            .sides()
            .iter()
            .map(|side| side.source.clone())
            .collect();
        sources.dedup();
        let mut feeds = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for source in &sources {
            let store = match source {
                sql::Source::Logs => self.storage.logs().clone(),
                sql::Source::Spans => self.storage.spans().clone(),
                sql::Source::Metrics => {
                    // Follow the appends first, then read what storage holds: a sample
                    // in both is skipped by its series' newest seeded time.
                    let tap = self.storage.tap_appends();
                    let query = format!(
                        "SELECT * FROM metrics WHERE timestamp >= to_timestamp_millis({since})"
                    );
                    let seed = self
                        .sql
                        .sql(&query)
                        .await
                        .map_err(|e| ContinuousError::Io(e.to_string()))?
                        .collect()
                        .await
                        .map_err(|e| ContinuousError::Io(e.to_string()))?;
                    for batch in &seed {
                        record_newest(batch, &mut seen);
                    }
                    feeds.push(runner::Feed {
                        source: source.clone(),
                        seed: seed
                            .into_iter()
                            .map(|batch| runner::Input::Records(Arc::new(batch)))
                            .collect(),
                        tap: runner::Tap::Samples(tap),
                    });
                    continue;
                }
                sql::Source::Query(name) => {
                    let upstream = self
                        .lock()
                        .get(name)
                        .map(|running| running.hub.clone())
                        .ok_or_else(|| ContinuousError::NotFound(name.clone()))?;
                    let (rows, time, tap) = upstream.tap();
                    let seed = subscription::ChangeBatch {
                        seq: 0,
                        time,
                        changes: rows,
                    };
                    feeds.push(runner::Feed {
                        source: source.clone(),
                        seed: vec![runner::Input::Changes(Arc::new(seed))],
                        tap: runner::Tap::Changes(tap),
                    });
                    continue;
                }
            };
            let (files, tap) = store.tap(since);
            let mut seed = Vec::new();
            for file in &files {
                seed.extend(
                    store
                        .read(file)
                        .map_err(|e| ContinuousError::Io(e.to_string()))?
                        .into_iter()
                        .map(|batch| runner::Input::Records(Arc::new(batch))),
                );
            }
            feeds.push(runner::Feed {
                source: source.clone(),
                seed,
                tap: runner::Tap::Records(tap),
            });
        }
        let closed = match &definition.persist {
            None => None,
            Some(persist) => {
                let output = sql::nullable(&program.output);
                let column = output
                    .index_of(&persist.window_column)
                    .ok()
                    .filter(|&i| {
                        matches!(
                            output.field(i).data_type(),
                            datafusion::arrow::datatypes::DataType::Timestamp(..)
                        )
                    })
                    .ok_or_else(|| {
                        ContinuousError::Invalid(format!(
                            "persist.window_column {:?} is not a timestamp column of the result",
                            persist.window_column
                        ))
                    })?;
                let dir = self.dir.join(&definition.name).join("closed");
                let windows = closed::ClosedWindows::open(
                    &dir,
                    output.clone(),
                    column,
                    persist.close_after_ms,
                )
                .map_err(ContinuousError::Io)?;
                let table = format!("{}{}", definition.name, closed::CLOSED_SUFFIX);
                let _ = self.sql.deregister_table(table.as_str());
                self.sql
                    .register_table(
                        table.as_str(),
                        Arc::new(closed::ClosedTable {
                            dir,
                            schema: output,
                        }),
                    )
                    .map_err(|e| ContinuousError::Invalid(e.to_string()))?;
                Some(windows)
            }
        };
        let stats = Arc::new(runner::Stats::default());
        stats.closed_until.store(
            closed
                .as_ref()
                .and_then(closed::ClosedWindows::until)
                .unwrap_or(i64::MIN),
            Ordering::Relaxed,
        );
        let runner = runner::Runner {
            closed,
            seen: Mutex::new(seen),
            name: definition.name.clone(),
            program: program.clone(),
            hub: hub.clone(),
            stats: stats.clone(),
            horizon_ms: definition.horizon_ms,
            budget: self.limits.budget.clone(),
        };
        let installed = runner
            .install(&self.service, &self.intake, feeds)
            .map_err(|e| ContinuousError::Io(e.to_string()))?;
        self.install(
            sql::nullable(&program.output),
            Running {
                definition,
                reads: sources
                    .iter()
                    .filter_map(|source| match source {
                        sql::Source::Query(name) => Some(name.clone()),
                        _ => None,
                    })
                    .collect(),
                hub,
                stats,
                installed: Some(installed),
                group: None,
            },
        )
    }

    fn launch_promql(
        &self,
        definition: Definition,
        group: crate::rules::Group,
    ) -> Result<(), ContinuousError> {
        let hub = Arc::new(
            Hub::open(
                vec!["labels".into(), "value".into()],
                &self.dir.join(&definition.name).join("result"),
            )
            .map_err(|e| ContinuousError::Io(e.to_string()))?,
        );
        self.install(
            promql_schema(),
            Running {
                definition,
                reads: Vec::new(),
                hub,
                stats: Arc::default(),
                installed: None,
                group: Some(group),
            },
        )
    }

    /// Makes a started query's result the table of its name and lists the query.
    fn install(
        &self,
        schema: datafusion::arrow::datatypes::SchemaRef,
        running: Running,
    ) -> Result<(), ContinuousError> {
        let name = running.definition.name.clone();
        let table = table::ResultTable::new(schema, running.hub.clone());
        let _ = self.sql.deregister_table(name.as_str());
        self.sql
            .register_table(name.as_str(), Arc::new(table))
            .map_err(|e| ContinuousError::Invalid(e.to_string()))?;
        self.lock().insert(name, running);
        Ok(())
    }

    /// Makes `definition` run: kept when a query of that name runs it already, replaced
    /// when its text differs (the config file at start).
    pub async fn ensure(&self, definition: Definition) -> Result<(), ContinuousError> {
        let current = self
            .lock()
            .get(&definition.name)
            .map(|running| running.definition.clone());
        if let Some(current) = current {
            let same = Definition {
                owner: current.owner.clone(),
                ..definition.clone()
            };
            if same == current {
                return Ok(());
            }
            tracing::info!(query = %definition.name, "continuous query changed in the config file: replaced");
            self.drop_query(&definition.name).await?;
        }
        self.create(definition).await.map(|_| ())
    }

    /// Stops and forgets a query, its table and its files (a PromQL query's group
    /// leaves the rule engine; the series it wrote go stale as a removed rule's do).
    pub async fn drop_query(&self, name: &str) -> Result<(), ContinuousError> {
        let mut running = {
            let mut queries = self.lock();
            if let Some(reader) = queries.values().find(|q| q.reads.iter().any(|r| r == name)) {
                return Err(ContinuousError::Invalid(format!(
                    "continuous query \"{}\" reads \"{name}\": drop it first",
                    reader.definition.name
                )));
            }
            queries
                .remove(name)
                .ok_or_else(|| ContinuousError::NotFound(name.to_string()))?
        };
        let promql = running.group.is_some();
        tokio::task::spawn_blocking(move || running.halt())
            .await
            .map_err(|e| ContinuousError::Io(e.to_string()))?;
        let _ = self.sql.deregister_table(name);
        let _ = self
            .sql
            .deregister_table(format!("{name}{}", closed::CLOSED_SUFFIX).as_str());
        if promql {
            self.sync_rules().await?;
        }
        match std::fs::remove_dir_all(self.dir.join(name)) {
            // An inline query has no files.
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(ContinuousError::Io(err.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Every query with its status.
    pub fn list(&self) -> Vec<Value> {
        let queries = self.lock();
        queries.values().map(describe_running).collect()
    }

    pub fn describe(&self, name: &str) -> Result<Value, ContinuousError> {
        self.lock()
            .get(name)
            .map(describe_running)
            .ok_or_else(|| ContinuousError::NotFound(name.to_string()))
    }

    /// Subscribes to a query's result (`from_seq`: resume after that change batch).
    pub fn subscribe(
        &self,
        name: &str,
        from_seq: Option<u64>,
    ) -> Result<Subscription, ContinuousError> {
        if name.eq_ignore_ascii_case(ALERTS) {
            if let Some(rules) = self.rules.get() {
                return Ok(rules.alerts().subscribe(from_seq));
            }
        }
        let queries = self.lock();
        let running = queries
            .get(name)
            .ok_or_else(|| ContinuousError::NotFound(name.to_string()))?;
        Ok(running.hub.subscribe(from_seq))
    }

    /// Stops every query (at shutdown); their files stay for the next start.
    pub fn shutdown(&self) {
        let mut queries = self.lock();
        for running in queries.values_mut() {
            running.halt();
        }
    }
}

fn describe_running(running: &Running) -> Value {
    let stats = &running.stats;
    let (seq, time) = running.hub.position();
    let stopped = stats.stopped();
    json!({
        "name": running.definition.name,
        "language": running.definition.language,
        "query": running.definition.query,
        "horizon_ms": running.definition.horizon_ms,
        "step_ms": running.definition.step_ms,
        "columns": running.hub.columns(),
        "status": if stopped.is_some() { "stopped" } else { "running" },
        "reason": stopped,
        "seq": seq,
        "watermark_ms": time,
        // How far the result is behind the newest event time its inputs have delivered.
        "lag_ms": (stats.newest_input_ms.load(Ordering::Relaxed) - time).max(0),
        "rows": running.hub.row_count(),
        "state_rows": stats.state_rows.load(Ordering::Relaxed),
        "memory_bytes": stats.state_bytes.load(Ordering::Relaxed),
        "input_rows": stats.input_rows.load(Ordering::Relaxed),
        "late_rows": stats.late_rows.load(Ordering::Relaxed),
        "pending_batches": stats.pending_batches.load(Ordering::Relaxed),
        "last_update_us": stats.last_epoch_us.load(Ordering::Relaxed),
        "busy_us": stats.busy_us.load(Ordering::Relaxed),
        "epochs": stats.epochs.load(Ordering::Relaxed),
        "closed_until_ms": running.definition.persist.as_ref().map(|_| {
            Some(stats.closed_until.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN)
        }),
    })
}

fn validate(definition: &Definition) -> Result<(), ContinuousError> {
    let name = &definition.name;
    let mut chars = name.chars();
    let valid = name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ContinuousError::Invalid(format!(
            "invalid name {name:?}: letters, digits and underscores, not starting with a digit, at most 128"
        )));
    }
    if name.ends_with(closed::CLOSED_SUFFIX) {
        return Err(ContinuousError::Invalid(format!(
            "invalid name {name:?}: names ending in {} are the tables of closed windows",
            closed::CLOSED_SUFFIX
        )));
    }
    if let Some(persist) = &definition.persist {
        if definition.language != Language::Sql {
            return Err(ContinuousError::Invalid(
                "persist applies to SQL continuous queries only".into(),
            ));
        }
        if !(1..=definition.horizon_ms).contains(&persist.close_after_ms) {
            return Err(ContinuousError::Invalid(format!(
                "invalid persist.close_after_ms {}: between 1 and the horizon ({} ms), so a window is written before its rows leave the horizon",
                persist.close_after_ms, definition.horizon_ms
            )));
        }
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(ContinuousError::Invalid(format!(
            "invalid name {name:?}: a built-in table has that name"
        )));
    }
    if !(1..=MAX_HORIZON_MS).contains(&definition.horizon_ms) {
        return Err(ContinuousError::Invalid(format!(
            "invalid horizon_ms {}: between 1 and {MAX_HORIZON_MS}",
            definition.horizon_ms
        )));
    }
    if let Some(step) = definition.step_ms {
        if definition.language != Language::Promql {
            return Err(ContinuousError::Invalid(
                "step_ms applies to PromQL continuous queries only".into(),
            ));
        }
        if !(1_000..=86_400_000).contains(&step) {
            return Err(ContinuousError::Invalid(format!(
                "invalid step_ms {step}: between 1000 (1s) and 86400000 (1d)"
            )));
        }
    }
    if definition.query.len() > 64 << 10 {
        return Err(ContinuousError::Invalid(
            "the query is longer than 64 KiB".into(),
        ));
    }
    Ok(())
}

/// A PromQL query as a rule group of one recording rule, validated as a rule file is
/// (Prometheus' messages).
fn promql_group(definition: &Definition) -> Result<crate::rules::Group, ContinuousError> {
    let step_ms = definition.step_ms.unwrap_or(DEFAULT_STEP_MS);
    let spec = json!({"groups": [{
        "name": format!("{GROUP_PREFIX}{}", definition.name),
        "interval": format!("{step_ms}ms"),
        "rules": [{"record": definition.name, "expr": definition.query}],
    }]});
    let parsed = crate::rules::parse_document(&spec.to_string())
        .map_err(|problems| ContinuousError::Invalid(problems.join("; ")))?;
    let mut groups = crate::rules::validate(CONTINUOUS_FILE, &parsed)
        .map_err(|problems| ContinuousError::Invalid(problems.join("; ")))?;
    groups
        .pop()
        .ok_or_else(|| ContinuousError::Invalid("no rule group".into()))
}

/// The result columns of a PromQL query: its series' labels and value.
fn promql_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::array::{Array, MapBuilder, StringBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone();
    Arc::new(Schema::new(vec![
        Field::new("labels", labels, true),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// The newest sample time per series in a batch of the `metrics` view.
fn record_newest(
    batch: &datafusion::arrow::array::RecordBatch,
    seen: &mut std::collections::HashMap<u64, i64>,
) {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType, UInt64Type};
    let (Some(ids), Some(times)) = (
        batch.column_by_name("series_id"),
        batch.column_by_name("timestamp"),
    ) else {
        return;
    };
    let Ok(times) =
        datafusion::arrow::compute::cast(times, &DataType::Timestamp(TimeUnit::Millisecond, None))
    else {
        return;
    };
    let (Some(ids), Some(times)) = (
        ids.as_primitive_opt::<UInt64Type>(),
        times.as_primitive_opt::<TimestampMillisecondType>(),
    ) else {
        return;
    };
    for i in 0..ids.len() {
        if ids.is_valid(i) && times.is_valid(i) {
            let newest = seen.entry(ids.value(i)).or_insert(i64::MIN);
            *newest = (*newest).max(times.value(i));
        }
    }
}

fn write_definition(dir: &Path, definition: &Definition) -> Result<(), ContinuousError> {
    let io = |e: std::io::Error| ContinuousError::Io(e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join("definition.json.tmp");
    let bytes =
        serde_json::to_vec_pretty(definition).map_err(|e| ContinuousError::Io(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, dir.join("definition.json")).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

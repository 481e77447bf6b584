//! The config file: prometheus.yml sections where they overlap, plus Vigil's own.
//!
//! ```yaml
//! global: { scrape_interval: 15s, scrape_timeout: 10s, external_labels: {} }
//! scrape_configs: [ { job_name: node, static_configs: [ { targets: [ "host:9100" ] } ] } ]
//! storage: { block_period: 2h, retention: 30d }
//! limits: { max_body_bytes: 33554432, max_labels_per_series: 64, ... }
//! query: { timeout: 2m, max_samples: 50000000 }
//! continuous_queries: [ { name: errors, sql: "SELECT …", horizon: 1h } ]
//! derived_signals: { span_metrics: true, log_errors: true, interval: 15s }
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use vigil_connectors::duration::serde_prom;
use vigil_connectors::scrape::{GlobalConfig, ScrapeConfig};
use vigil_storage::Limits;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub global: GlobalConfig,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub storage: StorageSection,
    pub limits: Limits,
    pub query: QuerySection,
    /// Rule files (globs, relative to the config file's directory), as in prometheus.yml.
    pub rule_files: Vec<String>,
    pub alerting: AlertingSection,
    /// How long rule evaluation waits for late data before closing an evaluation tick
    /// when no newer data arrives (the watermark's wall-clock bound). Default 5s.
    #[serde(with = "serde_prom")]
    pub rules_lateness: Duration,
    /// Timely worker threads of the incremental rule engine. Default 2.
    pub rule_workers: usize,
    /// Continuous queries created (or replaced, when their text changed) at start.
    pub continuous_queries: Vec<ContinuousQueryConfig>,
    /// Span RED metrics and error-log counts as Prometheus series (on by default).
    pub derived_signals: DerivedSignalsSection,
    /// What continuous queries may hold and how many may run.
    pub continuous_limits: ContinuousLimitsSection,
}

/// `continuous_limits: { max_queries: 64, max_queries_per_client: 16, max_state_rows:
/// 2000000, max_result_rows: 100000 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinuousLimitsSection {
    pub max_queries: usize,
    pub max_queries_per_client: usize,
    pub max_state_rows: usize,
    pub max_result_rows: usize,
}

impl Default for ContinuousLimitsSection {
    fn default() -> Self {
        let limits = vigil_engine::continuous::ContinuousLimits::default();
        ContinuousLimitsSection {
            max_queries: limits.max_queries,
            max_queries_per_client: limits.max_queries_per_owner,
            max_state_rows: limits.budget.max_state_rows,
            max_result_rows: limits.budget.max_result_rows,
        }
    }
}

impl ContinuousLimitsSection {
    pub fn limits(&self) -> vigil_engine::continuous::ContinuousLimits {
        vigil_engine::continuous::ContinuousLimits {
            max_queries: self.max_queries,
            max_queries_per_owner: self.max_queries_per_client,
            budget: vigil_engine::continuous::Budget {
                max_state_rows: self.max_state_rows,
                max_result_rows: self.max_result_rows,
            },
        }
    }
}

/// `derived_signals: { span_metrics: true, log_errors: true, interval: 15s }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DerivedSignalsSection {
    pub span_metrics: bool,
    pub log_errors: bool,
    #[serde(with = "serde_prom")]
    pub interval: Duration,
}

impl Default for DerivedSignalsSection {
    fn default() -> Self {
        DerivedSignalsSection {
            span_metrics: true,
            log_errors: true,
            interval: Duration::from_secs(15),
        }
    }
}

/// One continuous query of the config file: `sql`, or `promql` with `step`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinuousQueryConfig {
    pub name: String,
    pub sql: Option<String>,
    pub promql: Option<String>,
    /// Event time the result covers (SQL), e.g. `1h`.
    pub horizon: Option<String>,
    /// Evaluation step (PromQL), e.g. `30s`.
    pub step: Option<String>,
    /// Closed windows to Parquet (SQL): `{ window_column: minute, close_after: 2m }`.
    pub persist: Option<PersistConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistConfig {
    pub window_column: String,
    pub close_after: String,
}

impl ContinuousQueryConfig {
    pub fn definition(&self) -> anyhow::Result<vigil_engine::continuous::Definition> {
        use vigil_engine::continuous::{Definition, Language, DEFAULT_HORIZON_MS};
        let millis = |field: &str, text: &Option<String>| -> anyhow::Result<Option<i64>> {
            text.as_deref()
                .map(|t| {
                    vigil_connectors::duration::parse(t)
                        .map(|d| d.as_millis() as i64)
                        .map_err(|e| {
                            anyhow::anyhow!("continuous query {:?}: {field}: {e}", self.name)
                        })
                })
                .transpose()
        };
        let (language, query) = match (&self.sql, &self.promql) {
            (Some(sql), None) => (Language::Sql, sql.clone()),
            (None, Some(promql)) => (Language::Promql, promql.clone()),
            _ => bail!(
                "continuous query {:?}: give exactly one of `sql` and `promql`",
                self.name
            ),
        };
        Ok(Definition {
            name: self.name.clone(),
            language,
            query,
            horizon_ms: millis("horizon", &self.horizon)?.unwrap_or(DEFAULT_HORIZON_MS),
            step_ms: millis("step", &self.step)?,
            owner: "config".into(),
            persist: match &self.persist {
                None => None,
                Some(persist) => Some(vigil_engine::continuous::closed::Persist {
                    window_column: persist.window_column.clone(),
                    close_after_ms: millis(
                        "persist.close_after",
                        &Some(persist.close_after.clone()),
                    )?
                    .unwrap_or_default(),
                }),
            },
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            global: GlobalConfig::default(),
            scrape_configs: Vec::new(),
            storage: StorageSection::default(),
            limits: Limits::default(),
            query: QuerySection::default(),
            rule_files: Vec::new(),
            alerting: AlertingSection::default(),
            rules_lateness: Duration::from_secs(5),
            rule_workers: 2,
            continuous_queries: Vec::new(),
            derived_signals: DerivedSignalsSection::default(),
            continuous_limits: ContinuousLimitsSection::default(),
        }
    }
}

/// `alerting.alertmanagers` as in prometheus.yml (static targets only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingSection {
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub scheme: String,
    pub path_prefix: String,
    #[serde(with = "serde_prom")]
    pub timeout: Duration,
    pub api_version: String,
    pub static_configs: Vec<StaticTargets>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            scheme: "http".into(),
            path_prefix: String::new(),
            timeout: Duration::from_secs(10),
            api_version: "v2".into(),
            static_configs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticTargets {
    pub targets: Vec<String>,
}

impl AlertingSection {
    /// The `POST /api/v2/alerts` URL of every configured Alertmanager.
    pub fn endpoints(&self) -> Vec<String> {
        self.alertmanagers
            .iter()
            .flat_map(|am| {
                am.static_configs.iter().flat_map(move |sc| {
                    sc.targets.iter().map(move |target| {
                        format!(
                            "{}://{}{}/api/v2/alerts",
                            am.scheme,
                            target,
                            am.path_prefix.trim_end_matches('/')
                        )
                    })
                })
            })
            .collect()
    }
}

/// Prometheus' `--query.timeout` and `--query.max-samples`, with the same defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySection {
    #[serde(with = "serde_prom")]
    pub timeout: Duration,
    pub max_samples: usize,
    /// Memory DataFusion may hold for one SQL query's joins, sorts and aggregations
    /// (0: a quarter of the machine's memory).
    pub sql_memory_bytes: usize,
    /// Rows one SQL result may have (default 1,000,000); more is an error, not a
    /// truncated answer.
    pub sql_max_rows: usize,
    /// Bytes one encoded SQL result may have (default 256 MiB).
    pub sql_max_bytes: usize,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            sql_memory_bytes: 0,
            sql_max_rows: 1_000_000,
            sql_max_bytes: 256 << 20,
        }
    }
}

impl QuerySection {
    /// The bounds of one SQL request.
    pub fn sql_limits(&self) -> vigil_queries::SqlLimits {
        vigil_queries::SqlLimits {
            memory_bytes: self.sql_memory_bytes,
            timeout: self.timeout,
            max_rows: self.sql_max_rows,
            max_bytes: self.sql_max_bytes,
            promql_max_samples: self.max_samples,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Width of a Parquet partition (default 2h).
    #[serde(with = "serde_prom")]
    pub block_period: Duration,
    /// Samples newer than now minus this (rounded down to a block boundary) stay in
    /// memory (and in the WAL); older ones are flushed to Parquet. Default: half the
    /// block period, so memory holds 0.5 to 1.5 block periods, as Prometheus' head does.
    /// `0s` flushes everything at the next maintenance tick.
    #[serde(default, with = "serde_prom::option")]
    pub head_window: Option<Duration>,
    /// Budget for series decoded from Parquet and kept for repeated queries (default
    /// 256 MiB).
    pub read_cache_bytes: usize,
    /// How long data is kept (default 30d).
    #[serde(with = "serde_prom")]
    pub retention: Duration,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            block_period: Duration::from_secs(2 * 3600),
            head_window: None,
            read_cache_bytes: 256 << 20,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {path:?}"))?;
        let mut config = Self::parse_file(&text, Some(path))
            .with_context(|| format!("invalid config file {path:?}"))?;
        // Rule file globs are relative to the config file, as in Prometheus.
        if let Some(dir) = path.parent() {
            for pattern in &mut config.rule_files {
                if Path::new(pattern.as_str()).is_relative() {
                    *pattern = dir.join(&*pattern).display().to_string();
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates, reporting every problem found. A key no section knows is
    /// an error (as in Prometheus), reported as `line:column: message`.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Self::parse_file(text, None)
    }

    /// [`Config::parse`], naming `file` in YAML errors (`file:line:column: message`).
    fn parse_file(text: &str, file: Option<&Path>) -> anyhow::Result<Config> {
        let config: Config =
            serde_yaml::from_str(text).map_err(|err| anyhow::anyhow!(yaml_error(&err, file)))?;
        let mut problems = Vec::new();
        let mut jobs = std::collections::BTreeSet::new();
        for scrape in &config.scrape_configs {
            if !jobs.insert(scrape.job_name.clone()) {
                problems.push(format!(
                    "found multiple scrape configs with job name {:?}",
                    scrape.job_name
                ));
            }
            if let Err(errors) = scrape.validate(&config.global) {
                problems.extend(errors.iter().map(ToString::to_string));
            }
        }
        if config.storage.block_period.is_zero() {
            problems.push("storage.block_period must be positive".into());
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(config)
    }
}

/// A YAML error as `file:line:column: message` (serde_yaml's own text ends with the
/// position in words, which this moves to the front where editors look for it).
fn yaml_error(err: &serde_yaml::Error, file: Option<&Path>) -> String {
    let message = err.to_string();
    let Some(at) = err.location() else {
        return match file {
            Some(file) => format!("{}: {message}", file.display()),
            None => message,
        };
    };
    let (line, column) = (at.line(), at.column());
    let words = format!(" at line {line} column {column}");
    let message = message.strip_suffix(&words).unwrap_or(&message);
    match file {
        Some(file) => format!("{}:{line}:{column}: {message}", file.display()),
        None => format!("{line}:{column}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_yml_subset() {
        let config = Config::parse(
            "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: node\n    scrape_interval: 5s\n    params:\n      'collect[]': [cpu]\n    static_configs:\n      - targets: ['127.0.0.1:9100']\n        labels: {env: dev}\nstorage:\n  block_period: 10s\n",
        )
        .unwrap();
        assert_eq!(config.global.scrape_interval, Duration::from_secs(15));
        let job = &config.scrape_configs[0];
        assert_eq!(job.interval(&config.global), Duration::from_secs(5));
        assert_eq!(job.timeout(&config.global), Duration::from_secs(5));
        assert_eq!(config.storage.block_period, Duration::from_secs(10));
    }

    #[test]
    fn example_config_is_valid() {
        let config = Config::parse(include_str!("../config/vigil.example.yaml")).unwrap();
        assert_eq!(config.scrape_configs[0].job_name, "node");
        assert_eq!(
            config.storage.retention,
            Duration::from_secs(30 * 24 * 3600)
        );
    }

    #[test]
    fn reports_every_problem() {
        let err = Config::parse(
            "scrape_configs:\n  - job_name: a\n    scheme: ftp\n    relabel_configs: []\n  - job_name: a\n",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("unsupported scheme"), "{text}");
        assert!(text.contains("relabel_configs"), "{text}");
        assert!(text.contains("multiple scrape configs"), "{text}");
    }

    /// Unknown keys are rejected in every section, as Prometheus rejects them, with the
    /// key's line and column.
    #[test]
    fn config_unknown_keys_are_rejected_with_their_position() {
        let cases = [
            ("global:\n  scrape_intervall: 15s\n", "2:3:", "scrape_intervall"),
            ("global: {resolve_timeout: 5m}\n", "1:10:", "resolve_timeout"),
            ("global: {}\n\nscrape_interval: 15s\n", "3:1:", "scrape_interval"),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_intervall: 5s\n",
                "3:5:",
                "scrape_intervall",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: []\n        lables: {}\n",
                "5:9:",
                "lables",
            ),
            ("storage:\n  retension: 1d\n", "2:3:", "retension"),
            ("limits:\n  max_body_byte: 1\n", "2:3:", "max_body_byte"),
            ("query:\n  max_sample: 1\n", "2:3:", "max_sample"),
            (
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: []\n          labels: {}\n",
                "5:11:",
                "labels",
            ),
            ("alerting:\n  alert_relabel_configs: []\n", "2:3:", "alert_relabel_configs"),
        ];
        for (yaml, position, field) in cases {
            let text = format!("{:#}", Config::parse(yaml).unwrap_err());
            assert!(text.starts_with(position), "{yaml:?}: {text}");
            assert!(
                text.contains(&format!("unknown field `{field}`")),
                "{yaml:?}: {text}"
            );
        }
    }

    /// Prometheus keys Vigil does not implement are reported together with the other
    /// problems (not as a parse error), typos as unknown fields.
    #[test]
    fn config_prometheus_only_scrape_keys_are_reported_as_unsupported() {
        let err = Config::parse(
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: []\n    basic_auth: {username: u}\n    scheme: ftp\n",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("\"kubernetes_sd_configs\" is not supported"),
            "{text}"
        );
        assert!(text.contains("\"basic_auth\" is not supported"), "{text}");
        assert!(text.contains("unsupported scheme"), "{text}");
        let err = Config::parse("scrape_configs:\n  - job_name: a\n    job_name: b\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("scrape_configs[0]: duplicate field `job_name`"),
            "{err:#}"
        );
        let err = Config::parse("scrape_configs:\n  - scrape_interval: 5s\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("missing field `job_name`"),
            "{err:#}"
        );
    }

    #[test]
    fn config_load_names_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.yaml");
        std::fs::write(
            &path,
            "global:\n  scrape_interval: 15s\n  scrape_intervall: 15s\n",
        )
        .unwrap();
        let text = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(
            text.contains(&format!(
                "{}:3:3: global: unknown field `scrape_intervall`",
                path.display()
            )),
            "{text}"
        );
    }
}

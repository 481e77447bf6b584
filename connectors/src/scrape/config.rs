//! The prometheus.yml `scrape_configs` subset Vigil reads, with Prometheus' defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::serde_prom;
use crate::error::{Error, Result};

/// prometheus.yml `global` (the scrape part).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GlobalConfig {
    #[serde(with = "serde_prom")]
    pub scrape_interval: Duration,
    #[serde(with = "serde_prom")]
    pub scrape_timeout: Duration,
    #[serde(with = "serde_prom")]
    pub evaluation_interval: Duration,
    pub external_labels: BTreeMap<String, String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
            evaluation_interval: Duration::from_secs(60),
            external_labels: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, with = "serde_prom::option")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, with = "serde_prom::option")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Keys Vigil does not implement (relabel_configs, service discovery …): reported
    /// by [`ScrapeConfig::validate`] instead of being silently ignored.
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}
fn default_true() -> bool {
    true
}

impl ScrapeConfig {
    pub fn interval(&self, global: &GlobalConfig) -> Duration {
        self.scrape_interval.unwrap_or(global.scrape_interval)
    }

    /// The scrape timeout; like Prometheus, never longer than the interval.
    pub fn timeout(&self, global: &GlobalConfig) -> Duration {
        let interval = self.interval(global);
        match self.scrape_timeout {
            Some(timeout) => timeout,
            None => global.scrape_timeout.min(interval),
        }
    }

    /// Reports every problem of the config at once, Prometheus-style.
    pub fn validate(&self, global: &GlobalConfig) -> Result<(), Vec<Error>> {
        let mut errors = Vec::new();
        let job = &self.job_name;
        if job.is_empty() {
            errors.push(Error::Config("job_name is empty".into()));
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            errors.push(Error::Config(format!(
                "job {job:?}: unsupported scheme {:?}",
                self.scheme
            )));
        }
        if !self.metrics_path.starts_with('/') {
            errors.push(Error::Config(format!(
                "job {job:?}: metrics_path {:?} must start with \"/\"",
                self.metrics_path
            )));
        }
        if self.timeout(global) > self.interval(global) {
            errors.push(Error::Config(format!(
                "job {job:?}: scrape timeout greater than scrape interval"
            )));
        }
        if self.interval(global).is_zero() {
            errors.push(Error::Config(format!(
                "job {job:?}: scrape_interval is zero"
            )));
        }
        for key in self.unsupported.keys() {
            errors.push(Error::Config(format!(
                "job {job:?}: {key:?} is not supported by vigil"
            )));
        }
        for static_config in &self.static_configs {
            for target in &static_config.targets {
                if target.contains('/') || target.is_empty() {
                    errors.push(Error::Config(format!(
                        "job {job:?}: target {target:?} must be host:port"
                    )));
                }
            }
            for name in static_config.labels.keys() {
                if !vigil_storage::labels::is_valid_label_name(name) {
                    errors.push(Error::Config(format!(
                        "job {job:?}: invalid label name {name:?}"
                    )));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

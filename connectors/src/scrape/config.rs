//! The prometheus.yml `scrape_configs` subset Vigil reads, with Prometheus' defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::serde_prom;
use crate::error::{Error, Result};

/// prometheus.yml `global` (the scrape part). Any other key is an error, with its
/// position, as Prometheus reports keys it does not know.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
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

/// One of prometheus.yml's `scrape_configs`. A key Prometheus knows but Vigil does not
/// implement (relabelling, service discovery, auth …) is kept in `unsupported` and
/// reported by [`ScrapeConfig::validate`] with the other problems; any other key (a
/// typo) is rejected while parsing, with its position.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Option<Duration>,
    pub scrape_timeout: Option<Duration>,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    /// Largest accepted scrape body (prometheus.yml `body_size_limit`, e.g. `10MB`);
    /// 0: the server's `limits.max_body_bytes`.
    pub body_size_limit: u64,
    /// More samples than this fail the scrape (`sample_limit`; 0: no limit).
    pub sample_limit: usize,
    /// A sample with more labels than this fails the scrape (`label_limit`; 0: none).
    pub label_limit: usize,
    pub static_configs: Vec<StaticConfig>,
    /// Prometheus keys Vigil does not implement, in file order.
    pub unsupported: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The `scrape_config` keys Vigil reads.
const SCRAPE_FIELDS: &[&str] = &[
    "job_name",
    "scrape_interval",
    "scrape_timeout",
    "metrics_path",
    "scheme",
    "params",
    "honor_labels",
    "honor_timestamps",
    "body_size_limit",
    "sample_limit",
    "label_limit",
    "static_configs",
];

/// The other keys of Prometheus' `scrape_config` (besides every `*_sd_configs`).
const PROMETHEUS_ONLY_FIELDS: &[&str] = &[
    "scrape_protocols",
    "fallback_scrape_protocol",
    "scrape_classic_histograms",
    "always_scrape_classic_histograms",
    "convert_classic_histograms_to_nhcb",
    "track_timestamps_staleness",
    "enable_compression",
    "basic_auth",
    "authorization",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "follow_redirects",
    "enable_http2",
    "tls_config",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "http_headers",
    "scrape_failure_log_file",
    "relabel_configs",
    "metric_relabel_configs",
    "label_name_length_limit",
    "label_value_length_limit",
    "target_limit",
    "keep_dropped_targets",
    "native_histogram_bucket_limit",
    "native_histogram_min_bucket_factor",
    "metric_name_validation_scheme",
    "metric_name_escaping_scheme",
];

/// A key of a `scrape_config` mapping: one Vigil reads, one only Prometheus implements,
/// or an error raised on the key itself (so the parser reports its line and column).
enum ScrapeKey {
    Known(&'static str),
    PrometheusOnly(String),
}

impl<'de> Deserialize<'de> for ScrapeKey {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        // A visitor, so an error is raised inside the key's own deserialization and
        // carries the key's position.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ScrapeKey;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scrape config key")
            }

            fn visit_str<E: serde::de::Error>(
                self,
                key: &str,
            ) -> std::result::Result<ScrapeKey, E> {
                if let Some(known) = SCRAPE_FIELDS.iter().find(|field| **field == key) {
                    Ok(ScrapeKey::Known(known))
                } else if PROMETHEUS_ONLY_FIELDS.contains(&key) || key.ends_with("_sd_configs") {
                    Ok(ScrapeKey::PrometheusOnly(key.to_string()))
                } else {
                    Err(E::unknown_field(key, SCRAPE_FIELDS))
                }
            }
        }
        de.deserialize_identifier(Visitor)
    }
}

/// A Prometheus duration value.
#[derive(Deserialize)]
struct PromDuration(#[serde(with = "serde_prom")] Duration);

impl<'de> Deserialize<'de> for ScrapeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ScrapeConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scrape config")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<ScrapeConfig, A::Error> {
                let mut job_name = None;
                let mut config = ScrapeConfig {
                    job_name: String::new(),
                    scrape_interval: None,
                    scrape_timeout: None,
                    metrics_path: "/metrics".into(),
                    scheme: "http".into(),
                    params: BTreeMap::new(),
                    honor_labels: false,
                    honor_timestamps: true,
                    body_size_limit: 0,
                    sample_limit: 0,
                    label_limit: 0,
                    static_configs: Vec::new(),
                    unsupported: Vec::new(),
                };
                let mut seen: Vec<&'static str> = Vec::new();
                while let Some(key) = map.next_key::<ScrapeKey>()? {
                    let field = match key {
                        ScrapeKey::PrometheusOnly(key) => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            config.unsupported.push(key);
                            continue;
                        }
                        ScrapeKey::Known(field) => field,
                    };
                    if seen.contains(&field) {
                        return Err(serde::de::Error::duplicate_field(field));
                    }
                    seen.push(field);
                    match field {
                        "job_name" => job_name = Some(map.next_value()?),
                        "scrape_interval" => {
                            config.scrape_interval =
                                map.next_value::<Option<PromDuration>>()?.map(|d| d.0);
                        }
                        "scrape_timeout" => {
                            config.scrape_timeout =
                                map.next_value::<Option<PromDuration>>()?.map(|d| d.0);
                        }
                        "metrics_path" => config.metrics_path = map.next_value()?,
                        "scheme" => config.scheme = map.next_value()?,
                        "params" => config.params = map.next_value()?,
                        "honor_labels" => config.honor_labels = map.next_value()?,
                        "honor_timestamps" => config.honor_timestamps = map.next_value()?,
                        "body_size_limit" => {
                            let text: String = map.next_value()?;
                            config.body_size_limit = parse_size(&text).ok_or_else(|| {
                                serde::de::Error::custom(format!(
                                    "body_size_limit: invalid size {text:?} (e.g. 10MB)"
                                ))
                            })?;
                        }
                        "sample_limit" => config.sample_limit = map.next_value()?,
                        "label_limit" => config.label_limit = map.next_value()?,
                        "static_configs" => config.static_configs = map.next_value()?,
                        other => return Err(serde::de::Error::unknown_field(other, SCRAPE_FIELDS)),
                    }
                }
                config.job_name =
                    job_name.ok_or_else(|| serde::de::Error::missing_field("job_name"))?;
                Ok(config)
            }
        }
        de.deserialize_map(Visitor)
    }
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
        for key in &self.unsupported {
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

/// Prometheus' `units.Base2Bytes` syntax: `1024`, `512KB`, `10MB`, `1GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let factor: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        "TB" | "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_are_base_two() {
        assert_eq!(super::parse_size("10MB"), Some(10 << 20));
        assert_eq!(super::parse_size("512KiB"), Some(512 << 10));
        assert_eq!(super::parse_size("100"), Some(100));
        assert_eq!(super::parse_size("1XB"), None);
    }
}

//! One scrape loop per target, and the manager that starts and stops them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use vigil_storage::record::stale_marker;
use vigil_storage::{AppendMode, Label, LabelSet, SampleBatch, SeriesId, Storage};

use super::config::{GlobalConfig, ScrapeConfig};
use super::exposition::{self, Format};
use crate::error::{Error, Result};

/// The Accept header Prometheus 2.42 sends.
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A target's state, as `/api/v1/targets` reports it.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    pub job: String,
    pub instance: String,
    pub url: String,
    pub labels: LabelSet,
    pub health: &'static str,
    pub last_error: String,
    pub last_scrape: Option<SystemTime>,
    pub last_duration: Duration,
}

struct Target {
    url: String,
    params: Vec<(String, String)>,
    labels: LabelSet,
    interval: Duration,
    timeout: Duration,
    honor_labels: bool,
    honor_timestamps: bool,
    body_size_limit: u64,
    sample_limit: usize,
    label_limit: usize,
    slot: usize,
}

pub struct ScrapeManager {
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    health: Arc<RwLock<Vec<TargetHealth>>>,
}

impl ScrapeManager {
    /// Validates the configs (all errors at once) and starts a loop per target.
    pub fn start(
        global: &GlobalConfig,
        configs: &[ScrapeConfig],
        storage: Arc<Storage>,
    ) -> Result<ScrapeManager, Vec<Error>> {
        let mut errors = Vec::new();
        let mut targets = Vec::new();
        for config in configs {
            if let Err(mut found) = config.validate(global) {
                errors.append(&mut found);
                continue;
            }
            for static_config in &config.static_configs {
                for address in &static_config.targets {
                    let mut labels = LabelSet::default();
                    for (name, value) in &static_config.labels {
                        labels.set(name, value);
                    }
                    labels.set("job", &config.job_name);
                    labels.set("instance", address);
                    let params = config
                        .params
                        .iter()
                        .flat_map(|(name, values)| {
                            values
                                .iter()
                                .map(move |value| (name.clone(), value.clone()))
                        })
                        .collect();
                    targets.push(Target {
                        url: format!("{}://{}{}", config.scheme, address, config.metrics_path),
                        params,
                        labels,
                        interval: config.interval(global),
                        timeout: config.timeout(global),
                        honor_labels: config.honor_labels,
                        honor_timestamps: config.honor_timestamps,
                        body_size_limit: match config.body_size_limit {
                            0 => storage.limits().max_body_bytes as u64,
                            limit => limit,
                        },
                        sample_limit: config.sample_limit,
                        label_limit: config.label_limit,
                        slot: targets.len(),
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| vec![Error::Config(format!("http client: {err}"))])?;
        let health = Arc::new(RwLock::new(
            targets
                .iter()
                .map(|target| TargetHealth {
                    job: target.labels.get("job").unwrap_or_default().to_string(),
                    instance: target
                        .labels
                        .get("instance")
                        .unwrap_or_default()
                        .to_string(),
                    url: target.url.clone(),
                    labels: target.labels.clone(),
                    health: "unknown",
                    last_error: String::new(),
                    last_scrape: None,
                    last_duration: Duration::ZERO,
                })
                .collect(),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let loops = targets
            .into_iter()
            .map(|target| {
                let scrape_loop = ScrapeLoop {
                    target,
                    client: client.clone(),
                    storage: storage.clone(),
                    health: health.clone(),
                    previous: HashMap::new(),
                };
                tokio::spawn(scrape_loop.run(stop_rx.clone()))
            })
            .collect();
        Ok(ScrapeManager {
            stop,
            loops,
            health,
        })
    }

    pub fn targets(&self) -> Vec<TargetHealth> {
        self.health.read().clone()
    }

    /// Stops every loop; each writes staleness markers for its series before it ends.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.loops {
            let _ = handle.await;
        }
    }
}

struct ScrapeLoop {
    target: Target,
    client: reqwest::Client,
    storage: Arc<Storage>,
    health: Arc<RwLock<Vec<TargetHealth>>>,
    /// Series of the last successful scrape (without explicit timestamps).
    previous: HashMap<SeriesId, LabelSet>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ScrapeLoop {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Spread targets over the interval, as Prometheus does with its offset.
        let interval_ms = self.target.interval.as_millis().max(1) as u64;
        let offset = xxhash_offset(&self.target.url) % interval_ms;
        let first = tokio::time::Instant::now() + Duration::from_millis(offset.min(1000));
        let mut ticker = tokio::time::interval_at(first, self.target.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.scrape_once().await,
                _ = stop.changed() => break,
            }
        }
        // End of run: mark everything this target exposed as stale.
        let timestamp = now_ms();
        let mut batch = SampleBatch::default();
        for labels in std::mem::take(&mut self.previous).into_values() {
            let idx = batch.push_series(labels);
            batch.push_sample(idx, timestamp, stale_marker());
        }
        for name in REPORT_SERIES {
            let idx = batch.push_series(self.report_labels(name));
            batch.push_sample(idx, timestamp, stale_marker());
        }
        if let Err(err) = self.storage.append(batch, AppendMode::Lenient).await {
            debug!(target = %self.target.url, error = %err, "end-of-run staleness markers not written");
        }
    }

    fn report_labels(&self, name: &str) -> LabelSet {
        let mut labels = self.target.labels.clone();
        labels.set("__name__", name);
        labels
    }

    async fn scrape_once(&mut self) {
        let started = Instant::now();
        let timestamp = now_ms();
        let result = self.fetch_and_append(timestamp).await;
        let duration = started.elapsed();
        let (up, scraped, added) = match &result {
            Ok((scraped, added)) => (1.0, *scraped, *added),
            Err(err) => {
                warn!(target = %self.target.url, error = %err, "scrape failed");
                // A failed scrape makes every series of the last one stale.
                let mut batch = SampleBatch::default();
                for labels in std::mem::take(&mut self.previous).into_values() {
                    let idx = batch.push_series(labels);
                    batch.push_sample(idx, timestamp, stale_marker());
                }
                if let Err(err) = self.storage.append(batch, AppendMode::Lenient).await {
                    warn!(error = %err, "staleness markers not written");
                }
                (0.0, 0, 0)
            }
        };
        let mut report = SampleBatch::default();
        for (name, value) in [
            ("up", up),
            ("scrape_duration_seconds", duration.as_secs_f64()),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", scraped as f64),
            ("scrape_series_added", added as f64),
        ] {
            let idx = report.push_series(self.report_labels(name));
            report.push_sample(idx, timestamp, value);
        }
        if let Err(err) = self.storage.append(report, AppendMode::Lenient).await {
            warn!(target = %self.target.url, error = %err, "scrape report not written");
        }
        let mut health = self.health.write();
        if let Some(entry) = health.get_mut(self.target.slot) {
            entry.health = if up == 1.0 { "up" } else { "down" };
            entry.last_error = result.err().map(|e| e.to_string()).unwrap_or_default();
            entry.last_scrape = Some(SystemTime::now());
            entry.last_duration = duration;
        }
    }

    /// Scrapes, appends the samples and staleness markers; returns (scraped, new series).
    async fn fetch_and_append(&mut self, timestamp: i64) -> Result<(usize, usize)> {
        let response = self
            .client
            .get(&self.target.url)
            .query(&self.target.params)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", self.target.timeout.as_secs_f64()),
            )
            .timeout(self.target.timeout)
            .send()
            .await
            .map_err(|err| Error::Scrape(err.to_string()))?;
        if !response.status().is_success() {
            return Err(Error::Scrape(format!(
                "server returned HTTP status {}",
                response.status()
            )));
        }
        let format = Format::from_content_type(
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("text/plain"),
        );
        // Read at most `body_size_limit` bytes (Prometheus' message when it is passed).
        let limit = self.target.body_size_limit;
        if limit > 0 && response.content_length().is_some_and(|len| len > limit) {
            return Err(Error::Scrape(format!(
                "body size limit exceeded ({limit} bytes)"
            )));
        }
        let mut response = response;
        let mut raw = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| Error::Scrape(err.to_string()))?
        {
            if limit > 0 && (raw.len() + chunk.len()) as u64 > limit {
                return Err(Error::Scrape(format!(
                    "body size limit exceeded ({limit} bytes)"
                )));
            }
            raw.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&raw);
        let parsed = exposition::parse(&body, format)?;
        drop(raw);
        let scraped = parsed.len();
        if self.target.sample_limit > 0 && scraped > self.target.sample_limit {
            return Err(Error::Scrape(format!(
                "sample limit exceeded: {scraped} samples, the limit is {}",
                self.target.sample_limit
            )));
        }
        if self.target.label_limit > 0 {
            if let Some(sample) = parsed
                .iter()
                .find(|sample| sample.labels.len() > self.target.label_limit)
            {
                return Err(Error::Scrape(format!(
                    "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
                    sample
                        .labels
                        .iter()
                        .find(|(name, _)| name == "__name__")
                        .map_or("", |(_, value)| value.as_str()),
                    sample.labels.len(),
                    self.target.label_limit
                )));
            }
        }
        let mut batch = SampleBatch::default();
        let mut current: HashMap<SeriesId, LabelSet> = HashMap::with_capacity(self.previous.len());
        for sample in parsed {
            let labels = self.merge_labels(sample.labels)?;
            let explicit = sample.timestamp_ms.filter(|_| self.target.honor_timestamps);
            if explicit.is_none() {
                current.insert(labels.series_id(), labels.clone());
            }
            let idx = batch.push_series(labels);
            batch.push_sample(idx, explicit.unwrap_or(timestamp), sample.value);
        }
        let added = current
            .keys()
            .filter(|id| !self.previous.contains_key(id))
            .count();
        for (id, labels) in &self.previous {
            if !current.contains_key(id) {
                let idx = batch.push_series(labels.clone());
                batch.push_sample(idx, timestamp, stale_marker());
            }
        }
        self.storage.append(batch, AppendMode::Lenient).await?;
        self.previous = current;
        Ok((scraped, added))
    }

    /// Target labels win unless `honor_labels`; clashing scraped labels become
    /// `exported_<name>` (Prometheus `mutateSampleLabels`).
    fn merge_labels(&self, scraped: Vec<(String, String)>) -> Result<LabelSet> {
        let mut labels: Vec<Label> = scraped
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect();
        for target_label in self.target.labels.labels() {
            let existing = labels.iter().position(|l| l.name == target_label.name);
            match existing {
                Some(_) if self.target.honor_labels => {}
                Some(position) => {
                    let mut name = format!("exported_{}", target_label.name);
                    while labels.iter().any(|l| l.name == name) {
                        name = format!("exported_{name}");
                    }
                    labels[position].name = name;
                    labels.push(target_label.clone());
                }
                None => labels.push(target_label.clone()),
            }
        }
        Ok(LabelSet::new(labels)?)
    }
}

const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn xxhash_offset(url: &str) -> u64 {
    LabelSet::from_pairs([("url", url)])
        .map(|labels| labels.series_id())
        .unwrap_or_default()
}

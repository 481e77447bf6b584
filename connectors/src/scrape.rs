//! Prometheus-style scraping: `scrape_configs` from prometheus.yml, the text exposition
//! format and OpenMetrics, `up` and the other synthetic series, and staleness markers.

pub mod config;
pub mod exposition;
mod target;

pub use config::{GlobalConfig, ScrapeConfig, StaticConfig};
pub use target::{ScrapeManager, TargetHealth};

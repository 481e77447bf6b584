//! The config file (`vigil serve --config`): YAML, then every section's validation.

use super::{no_init, text, Target};
use crate::features::Features;

pub const TARGET: Target = Target {
    name: "config",
    init: no_init,
    run,
    mutate: None,
    dict: &[
        b"global:\n",
        b"  scrape_interval: 15s\n",
        b"  scrape_timeout: 10s\n",
        b"  evaluation_interval: 1m\n",
        b"  external_labels: {a: b}\n",
        b"scrape_configs:\n",
        b"  - job_name: node\n",
        b"    static_configs:\n      - targets: ['127.0.0.1:9100']\n",
        b"    scheme: https\n",
        b"    metrics_path: /metrics\n",
        b"    honor_labels: true\n",
        b"    honor_timestamps: false\n",
        b"    params:\n      'collect[]': [cpu]\n",
        b"    relabel_configs: []\n",
        b"storage:\n",
        b"  block_period: 2h\n",
        b"  head_window: 0s\n",
        b"  retention: 30d\n",
        b"  read_cache_bytes: 0\n",
        b"limits:\n",
        b"  max_body_bytes: 0\n",
        b"query:\n",
        b"  timeout: 2m\n",
        b"  max_samples: 50000000\n",
        b"rule_files:\n  - rules/*.yml\n",
        b"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:9093\"]\n",
        b"rules_lateness: 5s\n",
        b"rule_workers: 0\n",
        b"0s",
        b"-1s",
        b"1y",
        b"9999999999999999y",
        b"1ms",
        b"1.5h",
        b"18446744073709551615",
        b"-1",
        b"&a ",
        b"*a",
        b"<<: *a\n",
        b"~",
        b"null",
        b"!!binary ",
        b"'",
        b"\"",
        b"---\n",
        b"\t",
    ],
    nest: super::rule_file::YAML_NEST,
    // serde_yaml's parser takes time quadratic in the nesting depth (16,000 `[` take
    // ~0.4 s in the dev profile, 64,000 several seconds): small inputs keep a run well
    // inside the hang budget, and nesting beyond them tells nothing new.
    max_len: 8 << 10,
};

fn run(input: &[u8], features: &mut Features) {
    let text = text(input, features);
    match vigil::config::Config::parse(&text) {
        Ok(config) => {
            features.add("ok");
            features.count("scrape_configs", config.scrape_configs.len());
            features.count("rule_files", config.rule_files.len());
            for scrape in config.scrape_configs.iter().take(8) {
                features.count(
                    "interval-ms",
                    scrape.interval(&config.global).as_millis() as usize,
                );
                features.count(
                    "timeout-ms",
                    scrape.timeout(&config.global).as_millis() as usize,
                );
            }
        }
        Err(err) => {
            // Every problem, joined with "; ", after the first line's cause.
            for problem in format!("{err:#}").split("; ").take(8) {
                features.error("invalid", problem);
            }
        }
    }
}

//! A scraped target's body: the Prometheus text format and OpenMetrics, then the label
//! set each sample becomes and the checks storage applies to it.

use vigil_connectors::scrape::exposition::{parse, Format};
use vigil_storage::{Label, LabelSet, Limits};

use super::{no_init, text, Target};
use crate::features::Features;

pub const TARGET: Target = Target {
    name: "exposition",
    init: no_init,
    run,
    mutate: None,
    dict: &[
        b"# HELP ",
        b"# TYPE ",
        b" counter\n",
        b" histogram\n",
        b"# EOF\n",
        b"# EOF",
        b"{",
        b"}",
        b"=\"",
        b"\",",
        b"\\\"",
        b"\\n",
        b"\\\\",
        b"__name__",
        b"le=\"+Inf\"",
        b"_bucket",
        b"_total",
        b" NaN",
        b" +Inf",
        b" -Inf",
        b" 1e308",
        b" 1395066363000",
        b" 1520879607.789",
        b" # {trace_id=\"a\"} 0.5",
        b"\r\n",
        b"\n",
        b"\t",
        b":",
        b"\xc3\xa9",
        b"\xe2\x80\xa8",
    ],
    nest: &[b"{", b"{a=\"\","],
    max_len: 64 << 10,
};

fn run(input: &[u8], features: &mut Features) {
    let body = text(input, features);
    let limits = Limits::default();
    for format in [Format::Text, Format::OpenMetrics] {
        let tag = match format {
            Format::Text => "text",
            Format::OpenMetrics => "om",
        };
        let samples = match parse(&body, format) {
            Ok(samples) => samples,
            Err(err) => {
                features.error(tag, &err.to_string());
                continue;
            }
        };
        features.count(tag, samples.len());
        for sample in samples.iter().take(256) {
            assert!(
                sample
                    .labels
                    .first()
                    .is_some_and(|(name, _)| name == "__name__"),
                "a parsed sample's first label is not __name__: {:?}",
                sample.labels
            );
            features.add_kv("timestamp", sample.timestamp_ms.map_or(2, i64::signum));
            features.add_kv("value-nan", sample.value.is_nan());
            features.count("labels", sample.labels.len());
            let labels = sample
                .labels
                .iter()
                .map(|(name, value)| Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect();
            match LabelSet::new(labels) {
                Ok(labels) => {
                    if let Err(err) = limits.check_series(&labels) {
                        features.error("series", &err.to_string());
                    }
                }
                Err(err) => features.error("labels", &err.to_string()),
            }
        }
    }
}

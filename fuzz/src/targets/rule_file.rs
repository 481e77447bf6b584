//! Rule files and `PrometheusRule` resources: the YAML document, Prometheus' validation
//! (durations, names, label names, every expression parsed, every template parsed), the
//! duplicate-rule report, the incremental engine's compilation of the rules, and the
//! expansion of alert labels and annotations as an alert would render them.

use std::collections::BTreeMap;

use vigil_engine::incremental::Program;
use vigil_engine::rules::{duplicate_rules, parse_document, validate, RuleKind};
use vigil_engine::template::{expand, TemplateData};
use vigil_storage::LabelSet;

use super::{no_init, text, Target};
use crate::features::Features;

pub const TARGET: Target = Target {
    name: "rule_file",
    init: no_init,
    run,
    mutate: None,
    dict: YAML_DICT,
    nest: YAML_NEST,
    // serde_yaml's parser takes time quadratic in the nesting depth (16,000 `[` take
    // ~0.4 s in the dev profile, 64,000 several seconds): small inputs keep a run well
    // inside the hang budget, and nesting beyond them tells nothing new.
    max_len: 8 << 10,
};

pub const YAML_NEST: &[&[u8]] = &[b"[", b"{", b"- ", b"a: ", b"{a: ", b"&a [*a, "];

const YAML_DICT: &[&[u8]] = &[
    b"groups:\n",
    b"- name: g\n",
    b"  rules:\n",
    b"  - record: job:up:sum\n",
    b"  - alert: Down\n",
    b"    expr: ",
    b"    for: 5m\n",
    b"    keep_firing_for: 1m\n",
    b"    labels:\n      severity: page\n",
    b"    annotations:\n      summary: ",
    b"interval: 30s\n",
    b"query_offset: 1m\n",
    b"limit: 10\n",
    b"apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nspec:\n",
    b"{{ $labels.instance }}",
    b"{{ $value | humanize }}",
    b"{{ if gt $value 1.0 }}x{{ else }}y{{ end }}",
    b"{{ printf \"%.2f\" $value }}",
    b"{{ humanizeDuration $value }}",
    b"{{ $externalLabels.cluster }}",
    b"{{",
    b"}}",
    b"sum by (job) (rate(x[5m])) > 0",
    b"absent(up{job=\"a\"})",
    b"&anchor ",
    b"*anchor",
    b"<<: *anchor\n",
    b"!!binary ",
    b"!!str ",
    b"~",
    b"null",
    b"'",
    b"\"",
    b"|\n",
    b">-\n",
    b"\t",
    b"---\n",
    b"...\n",
    b"-1s",
    b"0s",
    b"1y",
    b"9999999999999999y",
    b"18446744073709551615",
];

fn run(input: &[u8], features: &mut Features) {
    let text = text(input, features);
    let spec = match parse_document(&text) {
        Ok(spec) => spec,
        Err(errors) => {
            for error in errors.iter().take(8) {
                features.error("yaml", error);
            }
            return;
        }
    };
    features.count("groups", spec.groups.len());
    let groups = match validate("fuzz.yml", &spec) {
        Ok(groups) => groups,
        Err(errors) => {
            for error in errors.iter().take(16) {
                features.error("invalid", error);
            }
            return;
        }
    };
    features.count("duplicates", duplicate_rules(&groups).len());
    let mut program = Program::default();
    for plans in program.add_groups(&groups) {
        for plan in plans {
            match plan {
                Ok(_) => features.add("compiled"),
                Err(reason) => features.error("unsupported", &reason.0),
            }
        }
    }
    features.count("leaves", program.leaves.len());
    let labels =
        LabelSet::from_pairs([("__name__", "up"), ("job", "node"), ("instance", "a:9100")])
            .expect("valid labels");
    let external: BTreeMap<String, String> = [("cluster".to_string(), "eu1".to_string())].into();
    let data = TemplateData {
        labels: &labels,
        value: 1.5,
        external_labels: &external,
    };
    for group in &groups {
        for rule in &group.rules {
            features.add_kv("kind", matches!(rule.kind, RuleKind::Alerting));
            if rule.kind != RuleKind::Alerting {
                continue;
            }
            for (name, template) in rule.labels.iter().chain(&rule.annotations) {
                match expand(name, template, &data) {
                    Ok(out) => features.count("expanded", out.len()),
                    Err(err) => features.error("template", &err.to_string()),
                }
            }
        }
    }
}

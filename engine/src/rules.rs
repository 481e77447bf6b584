//! Rule files: Prometheus' format (`groups:`) and the Prometheus Operator's
//! `PrometheusRule` resource (`spec.groups`), parsed and validated with Prometheus'
//! messages (`model/rulefmt`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;
use vigil_connectors::duration;
use vigil_storage::labels::is_valid_label_name;

use crate::template::Template;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    /// Every problem found in one file, one message each.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleFileSpec {
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub query_offset: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub expr: Option<serde_yaml::Value>,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: RuleKind,
    /// The metric name (recording) or alert name.
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Recording,
    Alerting,
}

/// A validated group.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub file: String,
    /// Zero means "the global evaluation interval".
    pub interval_ms: i64,
    pub query_offset_ms: i64,
    pub limit: u64,
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
}

fn parse_duration_ms(text: &str) -> Result<i64, String> {
    duration::parse(text)
        .map(|d: Duration| d.as_millis() as i64)
        .map_err(|e| e.to_string())
}

/// Reads the document: a rule file or a `PrometheusRule` resource.
pub fn parse_document(text: &str) -> Result<RuleFileSpec, Vec<String>> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let is_resource = value
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k == "PrometheusRule");
    let groups = if is_resource {
        value
            .get("spec")
            .cloned()
            .unwrap_or(serde_yaml::Value::Null)
    } else {
        value
    };
    if groups.is_null() {
        return Ok(RuleFileSpec { groups: Vec::new() });
    }
    serde_yaml::from_value(groups).map_err(|e| vec![e.to_string()])
}

/// Validates a parsed document as Prometheus does; `Err` lists every problem.
pub fn validate(file: &str, spec: &RuleFileSpec) -> Result<Vec<Group>, Vec<String>> {
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut names = HashSet::new();
    for group in &spec.groups {
        if group.name.is_empty() {
            errors.push("Groupname must not be empty".to_string());
        }
        if !names.insert(group.name.clone()) {
            errors.push(format!(
                "groupname: \"{}\" is repeated in the same file",
                group.name
            ));
        }
        let interval_ms = match &group.interval {
            None => 0,
            Some(text) => parse_duration_ms(text).unwrap_or_else(|e| {
                errors.push(format!("group {:?}: interval: {e}", group.name));
                0
            }),
        };
        let query_offset_ms = match &group.query_offset {
            None => 0,
            Some(text) => parse_duration_ms(text).unwrap_or_else(|e| {
                errors.push(format!("group {:?}: query_offset: {e}", group.name));
                0
            }),
        };
        for name in group.labels.keys() {
            if !is_valid_label_name(name) {
                errors.push(format!(
                    "group {:?}: invalid label name: {name}",
                    group.name
                ));
            }
        }
        let mut rules = Vec::new();
        for (idx, rule) in group.rules.iter().enumerate() {
            let node_name = rule
                .record
                .clone()
                .or_else(|| rule.alert.clone())
                .unwrap_or_default();
            let at = |message: String| {
                format!(
                    "group {:?}, rule {}, {:?}: {message}",
                    group.name,
                    idx + 1,
                    node_name
                )
            };
            match validate_rule(rule) {
                Ok(valid) => rules.push(valid),
                Err(problems) => errors.extend(problems.into_iter().map(at)),
            }
        }
        groups.push(Group {
            name: group.name.clone(),
            file: file.to_string(),
            interval_ms,
            query_offset_ms,
            limit: group.limit.unwrap_or(0),
            labels: group.labels.clone(),
            rules,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

fn validate_rule(rule: &RuleSpec) -> Result<Rule, Vec<String>> {
    let mut errors = Vec::new();
    let (kind, name) = match (&rule.record, &rule.alert) {
        (Some(_), Some(_)) => {
            errors.push("only one of 'record' and 'alert' must be set".to_string());
            (RuleKind::Recording, String::new())
        }
        (None, None) => {
            errors.push("one of 'record' or 'alert' must be set".to_string());
            (RuleKind::Recording, String::new())
        }
        (Some(record), None) => (RuleKind::Recording, record.clone()),
        (None, Some(alert)) => (RuleKind::Alerting, alert.clone()),
    };
    let expr_text = match &rule.expr {
        None | Some(serde_yaml::Value::Null) => {
            errors.push("field 'expr' must be set in rule".to_string());
            String::new()
        }
        Some(serde_yaml::Value::String(s)) => s.clone(),
        Some(serde_yaml::Value::Number(n)) => n.to_string(),
        Some(serde_yaml::Value::Bool(b)) => b.to_string(),
        Some(_) => {
            errors.push("field 'expr' must be a string".to_string());
            String::new()
        }
    };
    let expr = if expr_text.trim().is_empty() {
        if rule.expr.is_some() {
            errors.push("field 'expr' must be set in rule".to_string());
        }
        None
    } else {
        // The guarded parse: promql-parser panics on some inputs (an offset beyond
        // `Duration`), and a rule file must not take the server down.
        match vigil_queries::promql::parse_bounded(&expr_text, Default::default()) {
            Ok(expr) => Some(expr),
            Err(message) => {
                errors.push(format!("could not parse expression: {message}"));
                None
            }
        }
    };
    let mut for_ms = 0;
    let mut keep_firing_for_ms = 0;
    match kind {
        RuleKind::Recording => {
            if !rule.annotations.is_empty() {
                errors.push("invalid field 'annotations' in recording rule".to_string());
            }
            if rule.for_.is_some() {
                errors.push("invalid field 'for' in recording rule".to_string());
            }
            if rule.keep_firing_for.is_some() {
                errors.push("invalid field 'keep_firing_for' in recording rule".to_string());
            }
            if !name.is_empty() && !is_valid_metric_name(&name) {
                errors.push(format!("invalid recording rule name: {name}"));
            }
        }
        RuleKind::Alerting => {
            if !name.is_empty() && !is_valid_label_value(&name) {
                errors.push(format!("invalid alert name: {name}"));
            }
            if let Some(text) = &rule.for_ {
                match parse_duration_ms(text) {
                    Ok(ms) => for_ms = ms,
                    Err(e) => errors.push(format!("for: {e}")),
                }
            }
            if let Some(text) = &rule.keep_firing_for {
                match parse_duration_ms(text) {
                    Ok(ms) => keep_firing_for_ms = ms,
                    Err(e) => errors.push(format!("keep_firing_for: {e}")),
                }
            }
            for (key, text) in &rule.annotations {
                if !is_valid_label_name(key) {
                    errors.push(format!("invalid annotation name: {key}"));
                }
                if let Err(e) = Template::parse(&format!("__alert_{name}"), text) {
                    errors.push(format!("annotation {key:?}: {e}"));
                }
            }
        }
    }
    for (key, text) in &rule.labels {
        if !is_valid_label_name(key) {
            errors.push(format!("invalid label name: {key}"));
        }
        if key == "__name__" {
            errors.push("invalid label name: __name__".to_string());
        }
        if kind == RuleKind::Alerting {
            if let Err(e) = Template::parse(&format!("__alert_{name}"), text) {
                errors.push(format!("label {key:?}: {e}"));
            }
        }
    }
    match (errors.is_empty(), expr) {
        (true, Some(expr)) => Ok(Rule {
            kind,
            name,
            expr_text,
            expr,
            labels: rule.labels.clone(),
            annotations: rule.annotations.clone(),
            for_ms,
            keep_firing_for_ms,
        }),
        _ => Err(errors),
    }
}

fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_valid_label_value(value: &str) -> bool {
    !value.is_empty()
}

/// Loads and validates one file.
pub fn load_file(path: &Path) -> Result<Vec<Group>, RuleError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuleError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let spec = parse_document(&text).map_err(RuleError::Invalid)?;
    validate(&path.display().to_string(), &spec).map_err(RuleError::Invalid)
}

/// Rules that appear more than once (same name and labels) across the groups, as
/// `promtool check rules` reports them.
pub fn duplicate_rules(groups: &[Group]) -> Vec<(String, BTreeMap<String, String>)> {
    let mut seen: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut duplicates = Vec::new();
    for group in groups {
        for rule in &group.rules {
            let key = (rule.name.clone(), rule.labels.clone());
            if seen.contains(&key) {
                if !duplicates.contains(&key) {
                    duplicates.push(key);
                }
            } else {
                seen.push(key);
            }
        }
    }
    duplicates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rule_files_and_prometheus_rule_resources() {
        let plain = "groups:\n- name: g\n  rules:\n  - alert: Up\n    expr: up == 0\n    for: 5m\n";
        let groups = validate("f", &parse_document(plain).expect("parses")).expect("valid");
        assert_eq!(groups[0].rules[0].for_ms, 300_000);
        let resource = "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: x\nspec:\n  groups:\n  - name: g\n    rules:\n    - record: job:up:sum\n      expr: sum by (job) (up)\n";
        let groups = validate("f", &parse_document(resource).expect("parses")).expect("valid");
        assert_eq!(groups[0].rules[0].kind, RuleKind::Recording);
        let bad = "groups:\n- name: g\n  rules:\n  - record: 'bad name'\n    expr: sum(\n    for: 1m\n- name: g\n  rules: []\n";
        let errors = validate("f", &parse_document(bad).expect("parses")).expect_err("invalid");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("could not parse expression")),
            "{errors:?}"
        );
        assert!(errors
            .iter()
            .any(|e| e.contains("invalid recording rule name")));
        assert!(errors
            .iter()
            .any(|e| e.contains("invalid field 'for' in recording rule")));
        assert!(errors
            .iter()
            .any(|e| e.contains("is repeated in the same file")));
        assert!(parse_document("groups:\n- name: g\n  bogus: 1\n").is_err());
    }
}

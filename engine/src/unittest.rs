//! `vigil rules test`: rule unit tests in `promtool test rules` format, with promtool's
//! semantics (`cmd/promtool/unittest.go`): input series are loaded up to each
//! evaluation time, every group (whatever its own `interval`) is evaluated at every
//! `evaluation_interval` from the
//! start to the last `eval_time`, alert tests compare the *firing* alerts of the
//! evaluation at or just before their `eval_time`, expression tests run afterwards
//! against the inputs plus everything the rules wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil_queries::promql::{
    EvalError, Evaluator, MemorySource, Point, Series, SeriesSource, Value,
};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::record::stale_marker;
use vigil_storage::LabelSet;

use crate::alerting::{AlertState, GroupState};
use crate::rules;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    fuzzy_compare: bool,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    #[serde(rename = "external_url")]
    _external_url: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    start_timestamp: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: serde_yaml::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: serde_yaml::Value,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: serde_yaml::Value,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: Option<serde_yaml::Value>,
    #[serde(default)]
    histogram: Option<String>,
}

/// An alert as tests compare it: labels and annotations.
type LabeledAlert = (LabelSet, BTreeMap<String, String>);

/// The outcome of one test file: the lines promtool would print, and success.
pub struct FileResult {
    pub report: String,
    pub passed: bool,
    /// Rule evaluations answered by the incremental engine.
    pub incremental_evaluations: usize,
}

fn duration_ms(value: &serde_yaml::Value) -> Result<i64, String> {
    match value {
        serde_yaml::Value::Number(n) => Ok((n.as_f64().unwrap_or(0.0) * 1000.0) as i64),
        serde_yaml::Value::String(s) => vigil_connectors::duration::parse(s)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| e.to_string()),
        serde_yaml::Value::Null => Ok(0),
        other => Err(format!("not a duration: {other:?}")),
    }
}

fn start_ms(value: &Option<serde_yaml::Value>) -> Result<i64, String> {
    match value {
        None => Ok(0),
        Some(serde_yaml::Value::Number(n)) => Ok((n.as_f64().unwrap_or(0.0) * 1000.0) as i64),
        Some(serde_yaml::Value::String(s)) => {
            if let Ok(seconds) = s.parse::<f64>() {
                return Ok((seconds * 1000.0) as i64);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("invalid start_timestamp {s:?}: {e}"))
        }
        Some(other) => Err(format!("invalid start_timestamp {other:?}")),
    }
}

/// Expands the `load` value notation: `1 2 _ stale`, `a+bxN`, `a-bxN`, `axN`, `_xN`.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        if token.contains("{{") {
            return Err("native histogram samples are not supported by vigil yet".into());
        }
        if token == "_" {
            out.push(None);
            continue;
        }
        if token == "stale" {
            out.push(Some(stale_marker()));
            continue;
        }
        if let Some(count) = token.strip_prefix("_x") {
            let n: usize = count.parse().map_err(|_| format!("bad value {token:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if let Some((expr, count)) = token.rsplit_once('x') {
            if let Ok(n) = count.parse::<usize>() {
                // `a+b`, `a-b` or `a` (repeat).
                let split = expr
                    .char_indices()
                    .skip(1)
                    .find(|(i, c)| (*c == '+' || *c == '-') && !expr[..*i].ends_with(['e', 'E']))
                    .map(|(i, _)| i);
                let (start, step) = match split {
                    Some(i) => (parse_float(&expr[..i])?, parse_float(&expr[i..])?),
                    None => (parse_float(expr)?, 0.0),
                };
                // Repeated addition, as Prometheus' series notation does (`0+0.1x9`
                // ends at 0.8999999999999999, not 0.9).
                let mut value = start;
                out.push(Some(value));
                for _ in 0..n {
                    value += step;
                    out.push(Some(value));
                }
                continue;
            }
        }
        out.push(Some(parse_float(token)?));
    }
    Ok(out)
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text.trim_start_matches('+').to_ascii_lowercase().as_str() {
        "inf" => Ok(if text.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        lower => {
            // Go's ParseFloat reads hexadecimal integers too (`0x1f`).
            let (sign, digits) = match lower.strip_prefix('-') {
                Some(rest) => (-1.0, rest),
                None => (1.0, lower),
            };
            if let Some(hex) = digits.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16)
                    .map(|v| sign * v as f64)
                    .map_err(|_| format!("bad value {text:?}"));
            }
            text.parse().map_err(|_| format!("bad value {text:?}"))
        }
    }
}

/// `metric{a="b"}` → labels.
fn parse_metric(text: &str) -> Result<LabelSet, String> {
    // `{}` is how promtool prints (and accepts) a sample without labels.
    if text.trim().is_empty() || text.trim() == "{}" {
        return Ok(LabelSet::default());
    }
    match vigil_queries::promql::parse_bounded(text, Default::default()) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) => {
            let mut labels = LabelSet::default();
            if let Some(name) = &vs.name {
                labels.set(METRIC_NAME, name);
            }
            for matcher in &vs.matchers.matchers {
                if !matches!(matcher.op, promql_parser::label::MatchOp::Equal) {
                    return Err(format!("{text}: only equality matchers describe a series"));
                }
                labels.set(&matcher.name, &matcher.value);
            }
            Ok(labels)
        }
        Ok(_) => Err(format!("{text}: not a series")),
        Err(err) => Err(format!("{text}: {err}")),
    }
}

/// A source that hides samples after `until` (promtool loads inputs as time passes).
struct Until<'a> {
    inner: &'a MemorySource,
    until: i64,
}

impl SeriesSource for Until<'_> {
    fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, EvalError> {
        self.inner.select(matchers, start, end.min(self.until))
    }
}

fn floats_equal(a: f64, b: f64, fuzzy: bool) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    // `fuzzy_compare`: neighbouring floats (one unit in the last place apart) match,
    // as the rules_run_fuzzy.yml cases pin down (1 ULP passes, 3 ULPs fail).
    fuzzy && a.is_sign_negative() == b.is_sign_negative() && a.to_bits().abs_diff(b.to_bits()) <= 1
}

/// How rule expressions are answered while testing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As the server does: compiled rules are maintained by the incremental engine
    /// (fed the input series, one epoch per evaluation), the rest evaluated ad hoc.
    Incremental,
    /// Every rule through the ad hoc evaluator.
    AdHoc,
}

/// Runs one test file as the server evaluates rules; `report` holds promtool-style
/// output.
pub fn run_file(path: &Path) -> FileResult {
    run_file_with(path, Mode::Incremental)
}

/// Runs one test file in `mode`.
pub fn run_file_with(path: &Path, mode: Mode) -> FileResult {
    let mut report = format!("Unit Testing:  {}\n", path.display());
    // A file that cannot be run and a file whose tests fail both report their lines.
    let mut incremental_evaluations = 0;
    let failures =
        run_file_inner(path, mode, &mut incremental_evaluations).unwrap_or_else(|errors| errors);
    if failures.is_empty() {
        report.push_str("  SUCCESS\n");
    } else {
        report.push_str("  FAILED:\n");
        for failure in &failures {
            report.push_str(&format!("    {failure}\n"));
        }
    }
    FileResult {
        report,
        passed: failures.is_empty(),
        incremental_evaluations,
    }
}

fn run_file_inner(
    path: &Path,
    mode: Mode,
    incremental_evaluations: &mut usize,
) -> Result<Vec<String>, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![e.to_string()])?;
    let file: TestFile = serde_yaml::from_str(&text).map_err(|e| vec![e.to_string()])?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let eval_interval = match &file.evaluation_interval {
        Some(text) => duration_ms(&serde_yaml::Value::String(text.clone())).map_err(|e| vec![e])?,
        None => 60_000,
    };
    let mut groups = Vec::new();
    for pattern in &file.rule_files {
        let full: PathBuf = base.join(pattern);
        let paths: Vec<PathBuf> = match glob_paths(&full) {
            Ok(paths) => paths,
            Err(e) => return Err(vec![e]),
        };
        for rule_path in paths {
            match rules::load_file(&rule_path) {
                Ok(loaded) => groups.extend(loaded),
                Err(err) => {
                    return Err(vec![format!("{}: {err}", rule_path.display())]);
                }
            }
        }
    }
    if !file.group_eval_order.is_empty() {
        let mut ordered = Vec::new();
        for name in &file.group_eval_order {
            match groups.iter().position(|g| &g.name == name) {
                Some(idx) => ordered.push(groups.remove(idx)),
                None => {
                    return Err(vec![format!(
                        "group name {name:?} in group_eval_order not found"
                    )])
                }
            }
        }
        ordered.extend(groups);
        groups = ordered;
    }
    let mut failures = Vec::new();
    for (idx, test) in file.tests.iter().enumerate() {
        let name = test.name.clone().unwrap_or_default();
        let run = run_group(
            test,
            &groups,
            eval_interval,
            file.fuzzy_compare,
            mode,
            incremental_evaluations,
        );
        if let Err(errors) = run {
            let label = if name.is_empty() {
                format!("test group {idx}")
            } else {
                format!("name: {name}")
            };
            for error in errors {
                failures.push(format!("{label}: {error}"));
            }
        }
    }
    Ok(failures)
}

/// Expands `*` in the last path component (rule_files may be globs). As in Prometheus,
/// a pattern that matches nothing (even in a directory that does not exist) is no
/// error, and `*` is allowed only in the file name.
pub fn glob_paths(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let text = pattern.display().to_string();
    if !text.contains('*') {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    if dir.display().to_string().contains('*') {
        return Err(format!(
            "{text}: invalid rule file path: `*` is allowed only in the file name"
        ));
    }
    let file_pattern = pattern
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let regex = regex::Regex::new(&format!(
        "^{}$",
        regex::escape(&file_pattern).replace("\\*", ".*")
    ))
    .map_err(|e| e.to_string())?;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(format!("{}: {err}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| regex.is_match(&f.to_string_lossy()))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

fn run_group(
    test: &TestGroup,
    groups: &[rules::Group],
    eval_interval: i64,
    fuzzy: bool,
    mode: Mode,
    incremental_evaluations: &mut usize,
) -> Result<(), Vec<String>> {
    let one = |e: String| vec![e];
    let interval = match &test.interval {
        Some(text) => duration_ms(&serde_yaml::Value::String(text.clone())).map_err(one)?,
        None => eval_interval,
    };
    let mint = start_ms(&test.start_timestamp).map_err(one)?;
    let mut store = MemorySource::default();
    let mut inputs: Vec<(LabelSet, i64, f64)> = Vec::new();
    for input in &test.input_series {
        let labels = parse_metric(&input.series).map_err(one)?;
        let values_text = match &input.values {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Null => String::new(),
            other => return Err(vec![format!("bad values {other:?}")]),
        };
        let values = expand_values(&values_text).map_err(one)?;
        let points: Vec<Point> = values
            .into_iter()
            .enumerate()
            .filter_map(|(k, v)| {
                v.map(|f| Point {
                    t: mint + k as i64 * interval,
                    f,
                })
            })
            .collect();
        inputs.extend(points.iter().map(|p| (labels.clone(), p.t, p.f)));
        store.add(labels, points);
    }
    let mut alert_times = Vec::new();
    for alert in &test.alert_rule_test {
        alert_times.push(duration_ms(&alert.eval_time).map_err(one)?);
    }
    let mut max_eval = alert_times.iter().copied().max().unwrap_or(0);
    for expr in &test.promql_expr_test {
        max_eval = max_eval.max(duration_ms(&expr.eval_time).map_err(one)?);
    }
    let mut states: Vec<GroupState> = groups.iter().cloned().map(GroupState::new).collect();
    // The incremental engine over the rules that compile, fed every input up front
    // (each sample applies once an epoch reaches its time).
    let mut plans: Vec<Vec<Option<usize>>> = Vec::new();
    let mut engine = None;
    if mode == Mode::Incremental {
        let mut program = crate::incremental::Program::default();
        plans = program
            .add_groups(groups)
            .into_iter()
            .map(|group| group.into_iter().map(Result::ok).collect())
            .collect();
        let started =
            crate::incremental::Engine::start(program, 1).map_err(|err| vec![err.to_string()])?;
        started.push_samples(inputs);
        engine = Some(started);
    }
    let mut errors = Vec::new();
    // Firing alerts per (eval_time, alertname), gathered as the loop passes them.
    let mut got: BTreeMap<(i64, String), Vec<LabeledAlert>> = BTreeMap::new();
    let mut ts = mint;
    while ts <= mint + max_eval {
        // Output was written since the engine's last epoch at `ts`.
        let mut behind = true;
        // promtool evaluates every group at every `evaluation_interval`, whatever the
        // group's own `interval` (cmd/promtool/unittest.go).
        for (group_index, state) in states.iter_mut().enumerate() {
            // Rule by rule: each rule's output is stored before the next rule runs.
            for (rule_index, rule) in state.rules.iter_mut().enumerate() {
                let mut out = crate::alerting::Output::default();
                let plan = plans
                    .get(group_index)
                    .and_then(|g| g.get(rule_index))
                    .copied()
                    .flatten();
                let maintained = match (engine.as_mut(), plan) {
                    (Some(engine), Some(plan)) => {
                        if behind {
                            engine.evaluate(ts);
                            behind = false;
                        }
                        let answer = engine.answer(plan).ok();
                        *incremental_evaluations += usize::from(answer.is_some());
                        answer
                    }
                    _ => None,
                };
                let result = {
                    let source = Until {
                        inner: &store,
                        until: ts,
                    };
                    rule.eval_with(
                        &source,
                        maintained,
                        &state.group,
                        ts,
                        &test.external_labels,
                        &mut out,
                    )
                };
                let stale = match result {
                    Ok(()) => rule.track_written(&out.samples),
                    Err(err) => {
                        errors.push(format!(
                            "    rule: {}, time: {}s, err: {err}",
                            rule.rule.name,
                            (ts - mint) as f64 / 1000.0
                        ));
                        Vec::new()
                    }
                };
                write_output(
                    &mut store,
                    engine.as_ref(),
                    out.samples,
                    stale,
                    ts,
                    &mut behind,
                );
            }
        }
        for (idx, alert_test) in test.alert_rule_test.iter().enumerate() {
            let t = alert_times[idx];
            if ts - mint <= t && t < ts - mint + eval_interval {
                let mut firing = Vec::new();
                for state in &states {
                    for rule in &state.rules {
                        if rule.rule.name != alert_test.alertname {
                            continue;
                        }
                        for alert in rule.alerts() {
                            if alert.state == AlertState::Firing {
                                firing.push((alert.labels.clone(), alert.annotations.clone()));
                            }
                        }
                    }
                }
                got.insert((t, alert_test.alertname.clone()), firing);
            }
        }
        ts += eval_interval;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (idx, alert_test) in test.alert_rule_test.iter().enumerate() {
        let t = alert_times[idx];
        let mut actual = got
            .get(&(t, alert_test.alertname.clone()))
            .cloned()
            .unwrap_or_default();
        let mut expected: Vec<(LabelSet, BTreeMap<String, String>)> = Vec::new();
        for exp in &alert_test.exp_alerts {
            let mut labels = LabelSet::default();
            for (k, v) in &exp.exp_labels {
                labels.set(k, v);
            }
            labels.set("alertname", &alert_test.alertname);
            expected.push((labels, exp.exp_annotations.clone()));
        }
        actual.sort_by(|a, b| a.0.cmp(&b.0));
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        if actual != expected {
            errors.push(format!(
                "    alertname: {}, time: {}s, \n        exp:{},\n        got:{}",
                alert_test.alertname,
                t as f64 / 1000.0,
                describe_alerts(&expected),
                describe_alerts(&actual)
            ));
        }
    }
    let all = Until {
        inner: &store,
        until: mint + max_eval,
    };
    for expr_test in &test.promql_expr_test {
        let t = mint + duration_ms(&expr_test.eval_time).map_err(one)?;
        let failed = |why: String| {
            format!(
                "    expr: {:?}, time: {}s, err: {why}",
                expr_test.expr,
                (t - mint) as f64 / 1000.0
            )
        };
        let expr = match vigil_queries::promql::parse_bounded(&expr_test.expr, Default::default()) {
            Ok(expr) => expr,
            Err(message) => {
                errors.push(failed(message));
                continue;
            }
        };
        let evaluator = Evaluator::new(&all, t, t);
        let got: Vec<(LabelSet, f64)> = match evaluator.instant_query(&expr, t) {
            Ok(Value::Vector(samples)) => samples.into_iter().map(|s| (s.labels, s.f)).collect(),
            Ok(Value::Scalar(f)) => vec![(LabelSet::default(), f)],
            Ok(other) => {
                errors.push(failed(format!("unexpected {} result", other.type_name())));
                continue;
            }
            Err(err) => {
                errors.push(failed(err.to_string()));
                continue;
            }
        };
        let mut expected = Vec::new();
        for sample in &expr_test.exp_samples {
            if sample.histogram.is_some() {
                return Err(vec![
                    "native histogram samples are not supported by vigil yet".into(),
                ]);
            }
            let labels = parse_metric(&sample.labels).map_err(one)?;
            let value = match &sample.value {
                Some(serde_yaml::Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                Some(serde_yaml::Value::String(s)) => parse_float(s).map_err(one)?,
                _ => 0.0,
            };
            expected.push((labels, value));
        }
        let mut got = got;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        let same = got.len() == expected.len()
            && got
                .iter()
                .zip(&expected)
                .all(|(g, e)| g.0 == e.0 && floats_equal(g.1, e.1, fuzzy));
        if !same {
            errors.push(format!(
                "    expr: {:?}, time: {}s,\n        exp: {}\n        got: {}",
                expr_test.expr,
                (t - mint) as f64 / 1000.0,
                describe_samples(&expected),
                describe_samples(&got)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Stores what a rule wrote and the staleness markers of the series it stopped
/// writing. A marker never replaces a sample written at the same instant (by another
/// rule), as Prometheus' appender refuses the duplicate.
fn write_output(
    store: &mut MemorySource,
    engine: Option<&crate::incremental::Engine>,
    samples: Vec<(LabelSet, i64, f64)>,
    stale: Vec<LabelSet>,
    t: i64,
    behind: &mut bool,
) {
    let mut written = samples;
    for labels in stale {
        let taken = store
            .points(&labels)
            .is_some_and(|points| points.last().is_some_and(|p| p.t == t));
        if !taken {
            written.push((labels, t, stale_marker()));
        }
    }
    if let Some(engine) = engine {
        if !written.is_empty() {
            engine.push_samples(written.clone());
            *behind = true;
        }
    }
    for (labels, t, f) in written {
        store.add(labels, [Point { t, f }]);
    }
}

fn describe_alerts(alerts: &[(LabelSet, BTreeMap<String, String>)]) -> String {
    let parts: Vec<String> = alerts
        .iter()
        .enumerate()
        .map(|(idx, (labels, annotations))| {
            format!("{idx}:\n           Labels:{labels}\n           Annotations:{annotations:?}")
        })
        .collect();
    format!("[\n{}\n        ]", parts.join("\n"))
}

fn describe_samples(samples: &[(LabelSet, f64)]) -> String {
    let parts: Vec<String> = samples
        .iter()
        .map(|(labels, value)| format!("{labels} {value}"))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_paths_matching_nothing_are_no_error() {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        assert!(glob_paths(&rules.join("*.nothing"))
            .expect("glob")
            .is_empty());
        assert!(glob_paths(&rules.join("missing/*.yml"))
            .expect("glob")
            .is_empty());
        let found = glob_paths(&rules.join("*.yml")).expect("glob");
        assert!(
            found.iter().any(|p| p.ends_with("kubernetes.yml")),
            "{found:?}"
        );
        assert!(glob_paths(&rules.join("*/kubernetes.yml")).is_err());
    }

    #[test]
    fn expands_load_notation() {
        assert_eq!(
            expand_values("1+1x2 _ 5x1 -1-1x1").expect("valid"),
            vec![
                Some(1.0),
                Some(2.0),
                Some(3.0),
                None,
                Some(5.0),
                Some(5.0),
                Some(-1.0),
                Some(-2.0)
            ]
        );
        assert!(expand_values("{{schema:1}}").is_err());
    }
}

//! Runs Prometheus' own PromQL test files (`../shared/conformance/promql/*.test`,
//! read in place, unmodified) against Vigil's ad hoc PromQL evaluator.
//!
//! Prints `conformance: N passed, M failed, K skipped` with every skip reason. Skips are
//! only for stated reasons (experimental features behind Prometheus feature flags, native
//! histograms, syntax promql-parser does not parse, constructs the evaluator reports as
//! unsupported, annotation checks). Failures are listed, and any failure fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use promql_parser::parser::{self, Expr};
use vigil_queries::promql::{EvalError, Evaluator, MemorySource, Point, Value};
use vigil_storage::record::is_stale_marker;
use vigil_storage::LabelSet;

/// Files that exercise features Prometheus keeps behind feature flags or marks
/// experimental (see `../shared/conformance/README.md`).
const EXPERIMENTAL_FILES: [&str; 8] = [
    "duration_expression.test",
    "extended_vectors.test",
    "fill-modifier.test",
    "info.test",
    "type_and_unit.test",
    "start_timestamps.test",
    "limit.test",
    "native_histograms.test",
];

fn conformance_dir() -> PathBuf {
    crate::util::shared_dir().join("conformance/promql")
}

fn parse_duration_ms(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Some((seconds * 1000.0).round() as i64);
    }
    vigil_connectors::duration::parse(text)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// Expands `load`/range-result value notation: `1 2 _ 3+2x4 5-1x2 stale _x3 4x2`, with
/// the same expansion `vigil rules test` uses (repeated addition, as Prometheus does).
fn expand_values(tokens: &[&str]) -> Option<Vec<Option<f64>>> {
    vigil_engine::unittest::expand_values(&tokens.join(" ")).ok()
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            if let Some(hex) = text.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16).ok().map(|v| v as f64);
            }
            text.parse().ok()
        }
    }
}

/// `name{a="b"} rest` → (labels, rest).
fn parse_series(line: &str) -> Option<(LabelSet, String)> {
    let line = line.trim();
    // The selector ends at its closing brace if it has braces before the first blank,
    // otherwise at the first blank (values may contain `{{…}}` histograms).
    let first_blank = line.find(char::is_whitespace).unwrap_or(line.len());
    let split = match line.find('{') {
        Some(open) if open < first_blank => line[open..]
            .find('}')
            .map_or(line.len(), |close| open + close + 1),
        _ => first_blank,
    };
    let (selector, rest) = line.split_at(split);
    if selector.trim() == "{}" {
        return Some((LabelSet::default(), rest.trim().to_string()));
    }
    let expr = parser::parse(selector).ok()?;
    let Expr::VectorSelector(vs) = expr else {
        return None;
    };
    let mut labels = LabelSet::default();
    if let Some(name) = &vs.name {
        labels.set("__name__", name);
    }
    for matcher in &vs.matchers.matchers {
        labels.set(&matcher.name, &matcher.value);
    }
    Some((labels, rest.trim().to_string()))
}

fn floats_match(expected: f64, actual: f64) -> bool {
    if is_stale_marker(expected) || is_stale_marker(actual) {
        return is_stale_marker(expected) && is_stale_marker(actual);
    }
    if expected.is_nan() && actual.is_nan() {
        return true;
    }
    if expected == actual {
        return true;
    }
    if expected == 0.0 || actual == 0.0 {
        return (expected - actual).abs() < 1e-6 * f64::MIN_POSITIVE;
    }
    (expected - actual).abs() / (expected.abs() + actual.abs()) < 1e-6
}

#[derive(Default)]
struct Summary {
    passed: usize,
    failed: Vec<String>,
    skipped: BTreeMap<String, usize>,
    /// The same statements through the incremental engine (float instant queries).
    continuous: Option<Box<Summary>>,
}

impl Summary {
    fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }
}

struct Eval {
    line_no: usize,
    expr_text: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    expect_fail: bool,
    ordered: bool,
    annotations: Vec<AnnotationCheck>,
    expected: Vec<String>,
    /// `expect range vector from A to B step S`: the instant query answers a range
    /// vector whose expected points lie on this grid.
    matrix_grid: Option<(i64, i64, i64)>,
}

/// `expect warn|no_warn|info|no_info [msg: …|regex: …]`.
struct AnnotationCheck {
    warn: bool,
    present: bool,
    text: Option<TextMatch>,
}

enum TextMatch {
    Exact(String),
    Regex(regex::Regex),
}

/// Prometheus appends the expression's position, `(line:column)`, to each annotation;
/// Vigil's parser gives no positions, so the position is not compared.
fn strip_position(message: &str) -> &str {
    match message.rfind(" (") {
        Some(at)
            if message.ends_with(')')
                && message[at + 2..message.len() - 1]
                    .split(':')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())) =>
        {
            &message[..at]
        }
        _ => message,
    }
}

/// A regex's trailing position part, ` \(1:21\)` or ` \([0-9]+:[0-9]+\)`, removed.
fn strip_position_pattern(pattern: &str) -> &str {
    match pattern.rfind(" \\(") {
        Some(at) if pattern.ends_with("\\)") && pattern[at..].contains(':') => &pattern[..at],
        _ => pattern,
    }
}

fn check_annotations(
    checks: &[AnnotationCheck],
    annotations: &vigil_queries::promql::Annotations,
) -> Result<(), String> {
    for check in checks {
        let set = if check.warn {
            &annotations.warnings
        } else {
            &annotations.infos
        };
        let kind = if check.warn { "warning" } else { "info" };
        let matching = set
            .iter()
            .filter(|message| match &check.text {
                None => true,
                Some(TextMatch::Exact(text)) => strip_position(text) == message.as_str(),
                Some(TextMatch::Regex(re)) => re.is_match(message),
            })
            .count();
        if check.present && matching == 0 {
            return Err(format!("expected a {kind} annotation, got {set:?}"));
        }
        if !check.present && !set.is_empty() {
            return Err(format!("expected no {kind} annotation, got {set:?}"));
        }
    }
    Ok(())
}

/// Whether any selector in `expr` matches one of `series`.
fn selects_any(expr: &parser::Expr, series: &[LabelSet]) -> bool {
    use parser::Expr;
    let selector_matches = |vs: &parser::VectorSelector| {
        let mut matchers = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name {
            matchers.push(promql_parser::label::Matcher::new(
                promql_parser::label::MatchOp::Equal,
                "__name__",
                name,
            ));
        }
        series.iter().any(|labels| {
            matchers
                .iter()
                .all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
        })
    };
    match expr {
        Expr::VectorSelector(vs) => selector_matches(vs),
        Expr::MatrixSelector(ms) => selector_matches(&ms.vs),
        Expr::Subquery(sq) => selects_any(&sq.expr, series),
        Expr::Paren(p) => selects_any(&p.expr, series),
        Expr::Unary(u) => selects_any(&u.expr, series),
        Expr::Binary(b) => selects_any(&b.lhs, series) || selects_any(&b.rhs, series),
        Expr::Aggregate(a) => {
            selects_any(&a.expr, series) || a.param.as_ref().is_some_and(|p| selects_any(p, series))
        }
        Expr::Call(c) => c.args.args.iter().any(|arg| selects_any(arg, series)),
        _ => false,
    }
}

/// The continuous path: the expression registered as a rule, the loaded samples fed
/// to the dataflow, evaluated at a few earlier ticks (so values are inserted and
/// retracted) and then read at the statement's time. Values are compared; annotations
/// are the ad hoc evaluator's and are checked there.
fn run_continuous(
    loaded: &[(LabelSet, i64, f64)],
    expr: &parser::Expr,
    eval: &Eval,
    location: &str,
    summary: &mut Summary,
) {
    if eval.range.is_some() {
        return summary.skip("range query");
    }
    if eval.expect_fail {
        return summary.skip("expected failure");
    }
    if eval.ordered {
        return summary.skip("ordered result");
    }
    if expr.value_type() != parser::value::ValueType::Vector {
        // A rule turns a scalar into one sample without labels; the statement expects
        // the scalar itself.
        return summary.skip("not an instant vector");
    }
    let mut program = vigil_engine::incremental::Program::default();
    let rule = program.add(expr);
    if let Some(Err(reason)) = program.rules.get(rule) {
        return summary.skip(format!(
            "not incremental: {}",
            reason.0.split(' ').take(2).collect::<Vec<_>>().join(" ")
        ));
    }
    let ticks: Vec<i64> = [300_000, 120_000, 60_000, 0]
        .iter()
        .map(|back| eval.at - back)
        .filter(|t| *t >= 0)
        .collect();
    let answers = match vigil_engine::incremental::run(expr, loaded, &ticks, 1) {
        Ok(answers) => answers,
        Err(err) => {
            summary.failed.push(format!("{location}: engine {err}"));
            return;
        }
    };
    let Some((_, answer)) = answers.into_iter().last() else {
        return summary.skip("no tick");
    };
    match answer {
        Ok(vector) => {
            let value = Value::Vector(
                vector
                    .into_iter()
                    .map(|(labels, f)| vigil_queries::promql::Sample {
                        labels,
                        t: eval.at,
                        f,
                        drop_name: false,
                    })
                    .collect(),
            );
            match compare(&value, eval) {
                Ok(()) => summary.passed += 1,
                Err(why) => summary
                    .failed
                    .push(format!("{location}: continuous: {why}")),
            }
        }
        // The engine defers to the ad hoc evaluator where a group is in error; the
        // statement expects a result, so that is a failure of the continuous path.
        Err(reason) => summary
            .failed
            .push(format!("{location}: continuous: fell back ({reason})")),
    }
}

fn run_eval(
    source: &MemorySource,
    loaded: &[(LabelSet, i64, f64)],
    histograms: &[LabelSet],
    eval: &Eval,
    file: &str,
    summary: &mut Summary,
) {
    let location = format!("{file}:{} {}", eval.line_no, eval.expr_text);
    let parsed = parser::parse(&eval.expr_text);
    // A statement that selects a series holding native histogram samples (by name, by
    // regex, or by labels alone) is about histograms.
    let selects_histogram = match &parsed {
        Ok(expr) => selects_any(expr, histograms),
        Err(_) => false,
    };
    if selects_histogram || eval.expected.iter().any(|line| line.contains("{{")) {
        return summary.skip("native histogram samples (not stored by Vigil yet)");
    }
    let expr = match parsed {
        Ok(expr) => expr,
        Err(_) if eval.expect_fail => {
            summary.passed += 1;
            return;
        }
        Err(_) => return summary.skip("syntax promql-parser does not parse"),
    };
    if let Some(continuous) = summary.continuous.as_mut() {
        run_continuous(loaded, &expr, eval, &location, continuous);
    }
    let (start, end) = eval.range.map_or((eval.at, eval.at), |(s, e, _)| (s, e));
    let evaluator = Evaluator::new(source, start, end);
    let result = match eval.range {
        Some((start, end, step)) => evaluator
            .range_query(&expr, start, end, step)
            .map(Value::Matrix),
        None => evaluator.instant_query(&expr, eval.at),
    };
    let value = match result {
        Err(EvalError::Unsupported(what)) => {
            return summary.skip(format!("not supported yet: {what}"))
        }
        Err(_) if eval.expect_fail => {
            summary.passed += 1;
            return;
        }
        Err(err) => {
            summary.failed.push(format!("{location}: error {err}"));
            return;
        }
        Ok(_) if eval.expect_fail => {
            summary
                .failed
                .push(format!("{location}: expected failure, got a result"));
            return;
        }
        Ok(value) => value,
    };
    match compare(&value, eval)
        .and_then(|()| check_annotations(&eval.annotations, &evaluator.annotations()))
    {
        Ok(()) => summary.passed += 1,
        Err(why) => summary.failed.push(format!("{location}: {why}")),
    }
}

fn compare(value: &Value, eval: &Eval) -> Result<(), String> {
    match value {
        Value::Scalar(actual) => {
            let line = eval
                .expected
                .first()
                .ok_or("expected no result, got a scalar")?;
            let expected =
                parse_value(line.trim()).ok_or_else(|| format!("unparsed expectation {line:?}"))?;
            if floats_match(expected, *actual) {
                Ok(())
            } else {
                Err(format!("scalar {actual}, expected {expected}"))
            }
        }
        Value::String(actual) => {
            let line = eval
                .expected
                .first()
                .ok_or("expected no result, got a string")?;
            let text = line.trim();
            let unquoted = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .or_else(|| text.strip_prefix('`').and_then(|t| t.strip_suffix('`')))
                .unwrap_or(text);
            if unquoted == actual {
                Ok(())
            } else {
                Err(format!("string {actual:?}, expected {line}"))
            }
        }
        Value::Vector(samples) => {
            let mut expected = Vec::new();
            for line in &eval.expected {
                let (labels, rest) =
                    parse_series(line).ok_or_else(|| format!("unparsed expectation {line:?}"))?;
                let value = parse_value(rest.trim())
                    .ok_or_else(|| format!("unparsed value in {line:?}"))?;
                expected.push((labels, value));
            }
            if expected.len() != samples.len() {
                return Err(format!(
                    "{} samples, expected {}: got {:?}",
                    samples.len(),
                    expected.len(),
                    samples
                        .iter()
                        .map(|s| format!("{} {}", s.labels, s.f))
                        .collect::<Vec<_>>()
                ));
            }
            for (idx, (labels, value)) in expected.iter().enumerate() {
                let found = if eval.ordered {
                    samples.get(idx).filter(|s| &s.labels == labels)
                } else {
                    samples.iter().find(|s| &s.labels == labels)
                };
                let Some(sample) = found else {
                    return Err(format!(
                        "missing {labels}; got {:?}",
                        samples
                            .iter()
                            .map(|s| s.labels.to_string())
                            .collect::<Vec<_>>()
                    ));
                };
                if !floats_match(*value, sample.f) {
                    return Err(format!("{labels}: {} expected {value}", sample.f));
                }
            }
            Ok(())
        }
        Value::Matrix(series) => {
            let mut expected = Vec::new();
            for line in &eval.expected {
                let (labels, rest) =
                    parse_series(line).ok_or_else(|| format!("unparsed expectation {line:?}"))?;
                let tokens: Vec<&str> = rest.split_whitespace().collect();
                let values =
                    expand_values(&tokens).ok_or_else(|| format!("unparsed values in {line:?}"))?;
                expected.push((labels, values));
            }
            let (start, _, step) = eval.matrix_grid.or(eval.range).unwrap_or((0, 0, 1));
            let non_empty: Vec<_> = expected
                .iter()
                .filter(|(_, v)| v.iter().any(Option::is_some))
                .collect();
            if non_empty.len() != series.len() {
                return Err(format!(
                    "{} series, expected {}",
                    series.len(),
                    non_empty.len()
                ));
            }
            for (labels, values) in non_empty {
                let Some(actual) = series.iter().find(|s| &s.labels == labels) else {
                    return Err(format!("missing series {labels}"));
                };
                let expected_points: Vec<Point> = values
                    .iter()
                    .enumerate()
                    .filter_map(|(idx, v)| {
                        v.map(|f| Point {
                            t: start + idx as i64 * step,
                            f,
                        })
                    })
                    .collect();
                if expected_points.len() != actual.points.len()
                    || expected_points
                        .iter()
                        .zip(&actual.points)
                        .any(|(e, a)| e.t != a.t || !floats_match(e.f, a.f))
                {
                    return Err(format!(
                        "{labels}: points {:?}, expected {:?}",
                        actual.points, expected_points
                    ));
                }
            }
            Ok(())
        }
    }
}

fn run_file(path: &std::path::Path, summary: &mut Summary) {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let text = std::fs::read_to_string(path).expect("read conformance file");
    let lines: Vec<&str> = text.lines().collect();
    let mut source = MemorySource::default();
    let mut loaded: Vec<(LabelSet, i64, f64)> = Vec::new();
    let mut histograms: Vec<LabelSet> = Vec::new();
    let mut idx = 0;
    while idx < lines.len() {
        let line = lines[idx].trim_end();
        let trimmed = line.trim();
        idx += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "clear" {
            source.clear();
            loaded.clear();
            histograms.clear();
            continue;
        }
        let body_start = idx;
        while idx < lines.len()
            && lines[idx].starts_with(char::is_whitespace)
            && !lines[idx].trim().is_empty()
        {
            idx += 1;
        }
        let body: Vec<&str> = lines[body_start..idx]
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.starts_with('#'))
            .collect();
        if let Some(rest) = trimmed
            .strip_prefix("load_with_nhcb")
            .or_else(|| trimmed.strip_prefix("load"))
        {
            let mut words = rest.split_whitespace();
            let Some(interval) = words.next().and_then(parse_duration_ms) else {
                summary.skip("load with an unsupported interval");
                continue;
            };
            for series_line in body {
                let Some((labels, values)) = parse_series(series_line) else {
                    continue;
                };
                if values.contains("{{") {
                    histograms.push(labels.clone());
                    continue;
                }
                if trimmed.starts_with("load_with_nhcb") {
                    // The classic series load as floats; the converted native histogram
                    // is named after the family.
                    if let Some(family) = labels.metric_name().and_then(|name| {
                        name.strip_suffix("_bucket")
                            .or(name.strip_suffix("_count"))
                            .or(name.strip_suffix("_sum"))
                    }) {
                        let mut native = labels.clone();
                        native.set("le", "");
                        native.set("__name__", family);
                        histograms.push(native);
                    }
                }
                let tokens: Vec<&str> = values.split_whitespace().collect();
                let Some(expanded) = expand_values(&tokens) else {
                    continue;
                };
                let points: Vec<Point> = expanded
                    .into_iter()
                    .enumerate()
                    .filter_map(|(step, v)| {
                        v.map(|f| Point {
                            t: step as i64 * interval,
                            f,
                        })
                    })
                    .collect();
                loaded.extend(points.iter().map(|p| (labels.clone(), p.t, p.f)));
                source.add(labels, points);
            }
            continue;
        }
        if trimmed.starts_with("eval") {
            let (keyword, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
            let mut eval = Eval {
                line_no: body_start,
                expr_text: String::new(),
                range: None,
                at: 0,
                expect_fail: keyword == "eval_fail",
                ordered: keyword == "eval_ordered",
                annotations: match keyword {
                    "eval_warn" => vec![AnnotationCheck {
                        warn: true,
                        present: true,
                        text: None,
                    }],
                    "eval_info" => vec![AnnotationCheck {
                        warn: false,
                        present: true,
                        text: None,
                    }],
                    _ => Vec::new(),
                },
                expected: Vec::new(),
                matrix_grid: None,
            };
            if let Some(rest) = rest.strip_prefix("instant at ") {
                let (at, expr) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(at) = parse_duration_ms(at) else {
                    summary.skip("unparsed eval time");
                    continue;
                };
                eval.at = at;
                eval.expr_text = expr.trim().to_string();
            } else if let Some(rest) = rest.strip_prefix("range from ") {
                let words: Vec<&str> = rest.splitn(6, ' ').collect();
                let (Some(start), Some(end), Some(step)) = (
                    words.first().and_then(|w| parse_duration_ms(w)),
                    words.get(2).and_then(|w| parse_duration_ms(w)),
                    words.get(4).and_then(|w| parse_duration_ms(w)),
                ) else {
                    summary.skip("unparsed range eval");
                    continue;
                };
                eval.range = Some((start, end, step));
                eval.expr_text = words.get(5).unwrap_or(&"").trim().to_string();
            } else {
                summary.skip("unknown eval form");
                continue;
            }
            let mut unsupported_expect = None;
            for line in body {
                if let Some(expectation) = line.strip_prefix("expect ") {
                    let (kind, detail) = expectation.split_once(' ').unwrap_or((expectation, ""));
                    let detail = detail.trim();
                    let text = if let Some(text) = detail.strip_prefix("msg:") {
                        Some(TextMatch::Exact(text.trim().to_string()))
                    } else if let Some(pattern) = detail.strip_prefix("regex:") {
                        regex::Regex::new(strip_position_pattern(pattern.trim()))
                            .ok()
                            .map(TextMatch::Regex)
                    } else {
                        None
                    };
                    match kind {
                        "fail" => eval.expect_fail = true,
                        "ordered" => eval.ordered = true,
                        "string" => eval.expected.push(detail.to_string()),
                        "range" => {
                            let words: Vec<&str> = detail.split_whitespace().collect();
                            match (
                                words.get(2).and_then(|w| parse_duration_ms(w)),
                                words.get(4).and_then(|w| parse_duration_ms(w)),
                                words.get(6).and_then(|w| parse_duration_ms(w)),
                            ) {
                                (Some(from), Some(to), Some(step)) if words[0] == "vector" => {
                                    eval.matrix_grid = Some((from, to, step))
                                }
                                _ => unsupported_expect = Some(format!("range {detail}")),
                            }
                        }
                        "warn" | "info" | "no_warn" | "no_info" => {
                            eval.annotations.push(AnnotationCheck {
                                warn: kind.ends_with("warn"),
                                present: !kind.starts_with("no_"),
                                text,
                            })
                        }
                        other => {
                            unsupported_expect = Some(other.to_string());
                        }
                    }
                } else {
                    eval.expected.push(line.to_string());
                }
            }
            if let Some(kind) = unsupported_expect {
                summary.skip(format!("runner does not check `expect {kind}`"));
                continue;
            }
            if EXPERIMENTAL_FILES.contains(&file.as_str()) {
                summary.skip(format!(
                    "{file}: experimental feature behind a Prometheus feature flag"
                ));
                continue;
            }
            run_eval(&source, &loaded, &histograms, &eval, &file, summary);
            continue;
        }
        summary.skip(format!(
            "unknown command {:?}",
            trimmed.split_whitespace().next().unwrap_or("")
        ));
    }
}

#[test]
fn promql_conformance() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conformance_dir())
        .expect("../shared/conformance/promql is present")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    let mut summary = Summary {
        continuous: Some(Box::default()),
        ..Summary::default()
    };
    for file in &files {
        run_file(file, &mut summary);
    }
    let continuous = summary.continuous.take().unwrap_or_default();
    for failure in &continuous.failed {
        println!("FAIL {failure}");
    }
    for (reason, count) in &continuous.skipped {
        println!("continuous skip ({count}): {reason}");
    }
    println!(
        "continuous conformance: {} passed, {} failed, {} skipped",
        continuous.passed,
        continuous.failed.len(),
        continuous.skipped.values().sum::<usize>()
    );
    for failure in &summary.failed {
        println!("FAIL {failure}");
    }
    for (reason, count) in &summary.skipped {
        println!("skip ({count}): {reason}");
    }
    let n_skipped: usize = summary.skipped.values().sum();
    println!(
        "conformance: {} passed, {} failed, {} skipped",
        summary.passed,
        summary.failed.len(),
        n_skipped
    );
    assert!(summary.passed > 0);
    assert!(
        summary.failed.is_empty(),
        "{} conformance statements failed (listed above)",
        summary.failed.len()
    );
    assert!(continuous.passed > 100, "{} continuous", continuous.passed);
    assert!(
        continuous.failed.is_empty(),
        "{} statements failed on the continuous path (listed above)",
        continuous.failed.len()
    );
}

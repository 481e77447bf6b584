//! Rule files and rule unit tests, side by side with the real `promtool` (Debian's
//! Prometheus 2.42): `vigil rules check` and `promtool check rules` agree on every rule
//! file, `vigil rules test` and `promtool test rules` agree on every unit-test file,
//! except where the shared files use Prometheus 3 features promtool 2.42 lacks (each
//! such case is listed with the promtool message that shows it).

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_engine::unittest::Mode;

use crate::util::{require, shared_dir};

fn run(program: &Path, args: &[&str], file: &Path) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .expect("run");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn vigil() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn project_rules() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("rules")
}

/// `tests/rules/*-test.yml`: unit tests of rule-group semantics, each of which promtool
/// passes (so both must pass them, not merely agree).
fn project_rule_tests() -> Vec<PathBuf> {
    let dir = project_rules().join("../tests/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/rules")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-test.yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn rule_group_semantics_pass_in_vigil_and_promtool() {
    let promtool = require("promtool");
    let files = project_rule_tests();
    assert!(!files.is_empty());
    for file in &files {
        let (theirs, their_output) = run(&promtool, &["test", "rules"], file);
        assert!(theirs, "promtool: {their_output}");
        for mode in [Mode::Incremental, Mode::AdHoc] {
            let ours = vigil_engine::unittest::run_file_with(file, mode);
            assert!(ours.passed, "{mode:?}: {}", ours.report);
        }
    }
}

/// Unit-test files promtool 2.42 cannot judge as Prometheus 3 does: (file, what
/// promtool 2.42 prints, whether the file passes under Prometheus 3 semantics).
const VERSION_DIFFERENCES: &[(&str, &str, bool)] = &[
    (
        "start-time-test.yml",
        "field start_timestamp not found",
        true,
    ),
    (
        "rules_run_fuzzy.yml",
        "field fuzzy_compare not found",
        false,
    ),
    // A test group without `interval` uses evaluation_interval in 3.x; 2.42 used 1m
    // for data but the file expects the 3.x default, so 2.42 reads the wrong sample.
    (
        "no-test-group-interval.yml",
        "exp: {__name__=\"test\"} 1E+00",
        true,
    ),
];

/// The shared files in `dir` that are unit-test files (`tests`) or rule files, sorted.
fn shared_rule_files(dir: &Path, tests: bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("shared rules")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|text| {
                (text.contains("\ntests:") || text.starts_with("tests:")) == tests
            })
        })
        .collect();
    files.sort();
    files
}

#[test]
fn rules_test_agrees_with_promtool() {
    let promtool = require("promtool");
    let dir = shared_dir().join("conformance/rules");
    let mut files = shared_rule_files(&dir, true);
    files.push(project_rules().join("kubernetes-test.yml"));
    // Rule-group semantics the shared files do not cover (stale rule output, …).
    files.extend(project_rule_tests());
    assert!(files.len() >= 15, "{files:?}");
    let mut agreed = 0;
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (ours, our_output) = run(&vigil(), &["rules", "test"], file);
        let (theirs, their_output) = run(&promtool, &["test", "rules"], file);
        if let Some((_, marker, expected)) = VERSION_DIFFERENCES.iter().find(|(f, _, _)| *f == name)
        {
            assert!(
                their_output.contains(marker),
                "{name}: promtool 2.42 no longer shows the known difference: {their_output}"
            );
            // rules_run_fuzzy.yml holds a deliberately failing group too.
            assert_eq!(ours, *expected, "{name}: {our_output}");
            continue;
        }
        assert_eq!(
            ours, theirs,
            "{name}: vigil {ours} vs promtool {theirs}\nvigil:\n{our_output}\npromtool:\n{their_output}"
        );
        agreed += 1;
    }
    assert!(agreed >= 10, "only {agreed} files compared");
    // `vigil rules test` answers compiled rules with the incremental engine, as the
    // server does; the ad hoc evaluator alone reaches the same verdict on every file.
    let mut maintained = 0;
    for file in &files {
        let incremental = vigil_engine::unittest::run_file_with(file, Mode::Incremental);
        let ad_hoc = vigil_engine::unittest::run_file_with(file, Mode::AdHoc);
        assert_eq!(incremental.passed, ad_hoc.passed, "{}", incremental.report);
        assert_eq!(ad_hoc.incremental_evaluations, 0);
        maintained += incremental.incremental_evaluations;
    }
    println!("rule unit tests: {maintained} rule evaluations answered by the incremental engine");
    assert!(
        maintained > 100,
        "{maintained} evaluations answered incrementally"
    );
    // The failing files fail for the reasons promtool gives.
    let (ok, output) = run(&vigil(), &["rules", "test"], &dir.join("failing.yml"));
    assert!(!ok);
    assert!(output.contains("alertname: AlwaysFiring"), "{output}");
}

#[test]
fn rules_check_agrees_with_promtool() {
    let promtool = require("promtool");
    let dir = shared_dir().join("conformance/rules");
    let mut files = shared_rule_files(&dir, false);
    files.push(project_rules().join("kubernetes.yml"));
    for file in &files {
        let (ours, our_output) = run(&vigil(), &["rules", "check"], file);
        let (theirs, their_output) = run(&promtool, &["check", "rules"], file);
        assert_eq!(
            ours,
            theirs,
            "{}: vigil {ours} vs promtool {theirs}\nvigil:\n{our_output}\npromtool:\n{their_output}",
            file.display()
        );
    }
    // Same message as promtool for a template error.
    let (_, output) = run(&vigil(), &["rules", "check"], &dir.join("rules-bad.yml"));
    assert!(
        output.contains(
            "annotation \"summary\": template: __alert_InstanceDown:1: undefined variable \"$label\""
        ),
        "{output}"
    );
    // The Prometheus Operator's resource, which promtool cannot read, checks too.
    let temp = tempfile::tempdir().expect("tempdir");
    let resource = temp.path().join("prometheusrule.yaml");
    let rules = std::fs::read_to_string(project_rules().join("kubernetes.yml")).expect("rules");
    let indented: String = rules
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("  {line}\n"))
        .collect();
    std::fs::write(
        &resource,
        format!(
            "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: vigil\nspec:\n{indented}"
        ),
    )
    .expect("write");
    let (ok, output) = run(&vigil(), &["rules", "check"], &resource);
    assert!(ok, "{output}");
    assert!(output.contains("SUCCESS: 5 rules found"), "{output}");
}

//! Loading rule files: every file matching the `rule_files` globs, with every problem
//! reported at once (and a hint when a glob catches a `promtool test rules` file).

use vigil_engine::rules::Group;

/// Loads every rule file matching the globs; `Err` lists every problem.
pub fn load_rule_files(patterns: &[String]) -> anyhow::Result<Vec<Group>> {
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    for pattern in patterns {
        let paths = vigil_engine::unittest::glob_paths(std::path::Path::new(pattern))
            .map_err(|e| anyhow::anyhow!(e))?;
        for path in paths {
            match vigil_engine::rules::load_file(&path) {
                Ok(loaded) => groups.extend(loaded),
                Err(err) if is_unit_test_file(&path) => problems.push(format!(
                    "{}: {err} (this is a promtool unit-test file: run it with `vigil rules \
                     test`; rule_files should match rule files only)",
                    path.display()
                )),
                Err(err) => problems.push(format!("{}: {err}", path.display())),
            }
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        anyhow::bail!("invalid rule files:\n{}", problems.join("\n"))
    }
}

/// Whether `path` is a `promtool test rules` file (a mapping with `tests`), which a
/// broad `rule_files` glob may catch next to the rules it tests.
fn is_unit_test_file(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
        .is_some_and(|value| value.get("tests").is_some())
}

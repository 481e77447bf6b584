//! Where inputs live: `corpus/<target>/` (committed seeds), `regressions/<target>/`
//! (committed inputs that once failed), `crashes/` (what a run found; not committed).

use std::path::{Path, PathBuf};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn corpus_dir(target: &str) -> PathBuf {
    root().join("corpus").join(target)
}

pub fn regressions_dir(target: &str) -> PathBuf {
    root().join("regressions").join(target)
}

pub fn crashes_dir() -> PathBuf {
    root().join("crashes")
}

/// Every file of `dir` (sorted by name), with its path; a missing directory is empty.
pub fn files(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| std::fs::read(&path).map(|data| (path, data)))
        .collect()
}

/// The seeds of a target: its corpus, then its regressions.
pub fn seeds(target: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut all = files(&corpus_dir(target))?;
    all.extend(files(&regressions_dir(target))?);
    Ok(all)
}

/// Writes a failing input as `crashes/<prefix>-<hash>`; returns its path.
pub fn save_crash(prefix: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    let dir = crashes_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "{prefix}-{:016x}",
        xxhash_rust::xxh3::xxh3_64(data)
    ));
    std::fs::write(&path, data)?;
    Ok(path)
}

/// A path relative to the current directory when it is below it (shorter to print).
pub fn display(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

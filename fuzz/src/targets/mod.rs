//! The fuzz targets: every parser a client (or a scraped target, or an operator's file)
//! can feed. Each takes the raw input bytes, records the behaviour it reached in
//! [`Features`], and panics only on a bug (a panic of the code under test, or a broken
//! invariant checked here).

use crate::features::Features;
use crate::mutate::Mutator;

mod config;
mod exposition;
mod log_protocols;
mod promql;
mod remote_write;
mod rule_file;
mod sql;

/// A target's own mutation: the mutator, the entry to mutate, another entry.
pub type MutateFn = fn(&mut Mutator<'_>, &[u8], &[u8]) -> Vec<u8>;

pub struct Target {
    pub name: &'static str,
    /// One-time setup (stores, runtimes), done before the clock starts.
    pub init: fn(),
    pub run: fn(&[u8], &mut Features),
    /// A mutation of its own, instead of the generic byte mutations.
    pub mutate: Option<MutateFn>,
    /// Tokens of the input language, inserted by the mutator.
    pub dict: &'static [&'static [u8]],
    /// Openers the deep-nesting mutation repeats.
    pub nest: &'static [&'static [u8]],
    /// Longest input tried.
    pub max_len: usize,
}

fn no_init() {}

pub const TARGETS: &[Target] = &[
    remote_write::TARGET,
    exposition::TARGET,
    promql::TARGET,
    rule_file::TARGET,
    config::TARGET,
    sql::TARGET,
    log_protocols::TARGET,
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}

/// Text targets see invalid UTF-8 replaced, as a lossy reader would pass it on; a
/// feature records that it happened.
fn text<'a>(input: &'a [u8], features: &mut Features) -> std::borrow::Cow<'a, str> {
    let text = String::from_utf8_lossy(input);
    if matches!(text, std::borrow::Cow::Owned(_)) {
        features.add("lossy-utf8");
    }
    text
}

/// Removes what the targets' setup left on disk.
pub fn cleanup() {
    sql::cleanup();
}

//! The panic hook: records every panic (message and location) and counts them; quiet
//! while fuzzing, so thousands of caught panics do not flood the output.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

static COUNT: AtomicU64 = AtomicU64::new(0);
static QUIET: AtomicBool = AtomicBool::new(false);
static LAST: Mutex<String> = Mutex::new(String::new());

/// Installs the hook once; `quiet` says whether the default hook still prints.
pub fn install(quiet: bool) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    QUIET.store(quiet, Ordering::Relaxed);
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = if let Some(text) = info.payload().downcast_ref::<&str>() {
                (*text).to_string()
            } else if let Some(text) = info.payload().downcast_ref::<String>() {
                text.clone()
            } else {
                "(non-string panic payload)".to_string()
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let thread = std::thread::current();
            let text = format!(
                "thread '{}' panicked at {location}: {message}",
                thread.name().unwrap_or("unnamed")
            );
            if let Ok(mut last) = LAST.lock() {
                *last = text;
            }
            COUNT.fetch_add(1, Ordering::SeqCst);
            if !QUIET.load(Ordering::Relaxed) {
                default(info);
            }
        }));
    });
}

pub fn count() -> u64 {
    COUNT.load(Ordering::SeqCst)
}

/// The last panic's message, with its thread and location.
pub fn last() -> String {
    LAST.lock().map(|last| last.clone()).unwrap_or_default()
}

/// The location part of a recorded panic (`file:line:col`), to tell panics apart.
pub fn location(text: &str) -> &str {
    text.split(" panicked at ")
        .nth(1)
        .and_then(|rest| rest.split(": ").next())
        .unwrap_or(text)
}

/// Whether a recorded panic happened in this workspace's code (not in the standard
/// library or a dependency from the registry): such a panic is a bug even when the code
/// under test caught it.
pub fn in_our_code(text: &str) -> bool {
    let location = location(text);
    !(location.starts_with("/rustc/")
        || location.contains("/.cargo/registry/")
        || location.contains("/.cargo/git/")
        || location.is_empty())
}

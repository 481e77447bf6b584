//! The behaviour an input reached, as a set of small features: the cheap stand-in for
//! coverage. A target names what it saw (an error kind and its message with numbers and
//! quoted input cut away, a result shape with sizes bucketed to powers of two, the
//! syntax it parsed); an input that shows a feature never seen before is kept in the
//! corpus.
//!
//! A feature is a group (an error kind, a counter's name), a key (the message without
//! the input text it may end with, the counter's bucket) and a value (the whole
//! message). The fuzzer counts at most [`KEYS_PER_GROUP`] keys per group and
//! [`VALUES_PER_KEY`] values per key as new, so messages that still carry input text
//! (a label name, a column name) cannot make every input look new.

use std::fmt::Write as _;

/// Distinct keys of one group that count as new behaviour.
pub const KEYS_PER_GROUP: u32 = 256;
/// Distinct values of one key that count as new behaviour.
pub const VALUES_PER_KEY: u32 = 32;

/// An error's key is at most this long.
const ERROR_KEY_BYTES: usize = 64;

/// A feature: the hashes of its group, key and value (0 for none).
pub type Feature = (u64, u64, u64);

fn hash(text: &str) -> u64 {
    if text.is_empty() {
        0
    } else {
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

#[derive(Default)]
pub struct Features {
    hashes: Vec<Feature>,
    scratch: String,
    /// The features as text, when asked for (`vigil-fuzz run`).
    names: Option<Vec<String>>,
}

impl Features {
    /// Features that also keep their text.
    pub fn named() -> Features {
        Features {
            names: Some(Vec::new()),
            ..Features::default()
        }
    }

    pub fn names(&self) -> &[String] {
        self.names.as_deref().unwrap_or_default()
    }

    pub fn clear(&mut self) {
        self.hashes.clear();
        if let Some(names) = &mut self.names {
            names.clear();
        }
    }

    pub fn hashes(&self) -> &[Feature] {
        &self.hashes
    }

    fn push(&mut self, group: &str, key: &str, value: &str) {
        self.hashes.push((hash(group), hash(key), hash(value)));
        if let Some(names) = &mut self.names {
            names.push(match (key.is_empty(), value.is_empty()) {
                (true, _) => group.to_string(),
                (false, true) => format!("{group}={key}"),
                (false, false) => format!("{group}={key} | {value}"),
            });
        }
    }

    /// A feature named by a fixed key.
    pub fn add(&mut self, key: &str) {
        self.push(key, "", "");
    }

    /// `key` and a value, e.g. a function name or an operator.
    pub fn add_kv(&mut self, key: &str, value: impl std::fmt::Display) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value}");
        let text = std::mem::take(&mut self.scratch);
        self.push(key, &text, "");
        self.scratch = text;
    }

    /// A count, bucketed to its power of two.
    pub fn count(&mut self, key: &str, n: usize) {
        self.add_kv(key, bucket(n));
    }

    /// An error: its kind and its normalized message.
    pub fn error(&mut self, kind: &str, message: &str) {
        let normal = normalize(message);
        let key = error_key(&normal);
        self.push(kind, key, &normal);
    }
}

/// An error's key: the message without the name it may end with (`invalid label
/// name: x`), then its first words up to the first one that looks like input (a name
/// with `_`, digits or symbols, a non-ASCII byte) or just after a preposition that
/// usually introduces input (`illegal regex for …`), at most eight words and 64 bytes.
fn error_key(normal: &str) -> &str {
    let normal = match normal.rfind(": ") {
        Some(at) if !normal[at + 2..].contains(' ') => &normal[..at + 1],
        _ => normal,
    };
    let mut end = 0;
    for (words, token) in normal.split_inclusive(' ').enumerate() {
        let word = token.trim_end_matches([' ', ':', ',', '.', ';']);
        let plain = word
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_lowercase() || (i == 0 && c.is_ascii_uppercase()))
            || word.chars().all(|c| matches!(c, '#' | ':' | '…'));
        if words >= 8 || !plain || end + token.len() > ERROR_KEY_BYTES {
            break;
        }
        end += token.len();
        if matches!(
            word,
            "for" | "in" | "named" | "of" | "near" | "at" | "from" | "to"
        ) {
            break;
        }
    }
    normal[..end].trim_end()
}

/// 0 for 0, else 1 + floor(log2(n)).
pub fn bucket(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

/// A message without what the input put in it: quoted text (with `\` escapes) becomes `…`, digits
/// collapse to `#`, and the message stops at a line break or after 96 bytes.
pub fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(96);
    let mut in_digits = false;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in message.chars() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == open {
                quote = None;
            }
            continue;
        }
        if out.len() >= 96 || c == '\n' {
            break;
        }
        if matches!(c, '"' | '`' | '\'') {
            quote = Some(c);
            out.push('…');
            in_digits = false;
            continue;
        }
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
            continue;
        }
        in_digits = false;
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_drops_input_text() {
        assert_eq!(
            normalize("parse error at line 12: invalid metric name in \"9x\""),
            "parse error at line #: invalid metric name in …"
        );
        assert_eq!(
            normalize("group \"a\", rule 3, \"x\": invalid field 'for'"),
            "group …, rule #, …: invalid field …"
        );
        assert_eq!(
            normalize(r#"invalid type: string "a\"b", expected a sequence"#),
            "invalid type: string …, expected a sequence"
        );
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(1000), 10);
        let mut features = Features::named();
        features.error("e", "line 1: x");
        features.error("e", "line 22: x");
        features.error("e", "invalid label name: a-b");
        features.error("e", "invalid label name: c-d");
        let hashes = features.hashes();
        assert_eq!(hashes[0], hashes[1]);
        // Same key, another value.
        assert_eq!(hashes[2].1, hashes[3].1);
        assert_ne!(hashes[2].2, hashes[3].2);
        assert_eq!(
            features.names()[2],
            "e=invalid label name: | invalid label name: a-b"
        );
    }
}

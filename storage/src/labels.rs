//! Label sets and series identity.

use std::fmt;

use crate::error::{Error, Result};

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A stable 64-bit series identifier: xxh3 of the sorted label set.
///
/// Stable across restarts and processes, so Parquet files written by one run join with the
/// series written by another.
pub type SeriesId = u64;

/// A hasher for maps keyed by [`SeriesId`]s (and small tuples of integers): one
/// multiply-rotate per word (Fx), not SipHash — ids are already well-mixed hashes, and
/// the write path looks a series up several times per sample.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A map keyed by series id, with [`IdHasher`].
pub type IdMap<V> = std::collections::HashMap<SeriesId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A set of labels sorted by name, with unique names and no empty values
/// (an empty value means "label absent", as in Prometheus).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
/// Shared on clone (the evaluator copies label sets per step); copied on write.
pub struct LabelSet(std::sync::Arc<Vec<Label>>);

/// Serialized as the sorted list of labels (the dataflow exchanges label sets).
impl serde::Serialize for LabelSet {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for LabelSet {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let labels = Vec::<Label>::deserialize(deserializer)?;
        LabelSet::new(labels).map_err(serde::de::Error::custom)
    }
}

impl LabelSet {
    /// Builds a label set, dropping empty values and sorting by name.
    /// Duplicate names are an error.
    pub fn new(mut labels: Vec<Label>) -> Result<Self> {
        labels.retain(|label| !label.value.is_empty());
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in labels.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(Error::DuplicateLabel(pair[0].name.clone()));
            }
        }
        Ok(LabelSet(std::sync::Arc::new(labels)))
    }

    /// Builds a label set from pairs; panics never, duplicates are an error.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        Self::new(
            pairs
                .into_iter()
                .map(|(name, value)| Label {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
        )
    }

    pub fn labels(&self) -> &[Label] {
        &self.0
    }

    /// The address of the shared labels: equal for clones of one label set (while one of
    /// them is alive), so a caller holding a clone can use it as a cheap identity.
    pub fn identity(&self) -> usize {
        std::sync::Arc::as_ptr(&self.0) as usize
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|label| label.name.as_str().cmp(name))
            .ok()
            .map(|idx| self.0[idx].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        // `__name__` sorts before every lower-case name: usually the first label.
        match self.0.first() {
            Some(first) if first.name == METRIC_NAME => Some(first.value.as_str()),
            _ => self.get(METRIC_NAME),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets (or with an empty value, removes) a label, keeping the set sorted.
    pub fn set(&mut self, name: &str, value: &str) {
        match self
            .0
            .binary_search_by(|label| label.name.as_str().cmp(name))
        {
            Ok(idx) if value.is_empty() => {
                std::sync::Arc::make_mut(&mut self.0).remove(idx);
            }
            Ok(idx) if self.0[idx].value == value => {}
            Ok(idx) => std::sync::Arc::make_mut(&mut self.0)[idx].value = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(idx) => std::sync::Arc::make_mut(&mut self.0).insert(
                idx,
                Label {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            ),
        }
    }

    pub fn series_id(&self) -> SeriesId {
        // One pass of xxh3 over `name 0xff value 0xff …` (the same value the streaming
        // hasher gives for these bytes, so ids stay stable), in a per-thread buffer.
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            for label in self.0.iter() {
                buffer.extend_from_slice(label.name.as_bytes());
                buffer.push(0xff);
                buffer.extend_from_slice(label.value.as_bytes());
                buffer.push(0xff);
            }
            xxhash_rust::xxh3::xxh3_64(&buffer)
        })
    }

    /// Checks names against Prometheus' rules (`model.LabelName.IsValid`,
    /// `model.IsValidMetricName`): `[a-zA-Z_][a-zA-Z0-9_]*` for labels,
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` for the metric name, which must be present.
    pub fn validate(&self) -> Result<()> {
        let mut has_name = false;
        for label in self.0.iter() {
            if label.name == METRIC_NAME {
                has_name = true;
                if !is_valid_metric_name(&label.value) {
                    return Err(Error::InvalidMetricName(label.value.clone()));
                }
            } else if !is_valid_label_name(&label.name) {
                return Err(Error::InvalidLabelName(label.name.clone()));
            }
        }
        if !has_name {
            return Err(Error::MissingMetricName);
        }
        Ok(())
    }
}

pub fn is_valid_label_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    }
}

pub fn is_valid_metric_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b':')
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':')
        }
        None => false,
    }
}

/// Prints like Prometheus: `name{a="b", c="d"}`.
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for label in self.0.iter().filter(|label| label.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_hash_stable() {
        let a = LabelSet::from_pairs([("b", "2"), ("__name__", "m"), ("a", "1")]).unwrap();
        let b = LabelSet::from_pairs([("a", "1"), ("b", "2"), ("__name__", "m")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.series_id(), b.series_id());
        // Ids are stable across versions: the streaming hash of the same bytes.
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for label in a.labels() {
            hasher.update(label.name.as_bytes());
            hasher.update(&[0xff]);
            hasher.update(label.value.as_bytes());
            hasher.update(&[0xff]);
        }
        assert_eq!(a.series_id(), hasher.digest());
        assert_eq!(a.to_string(), "m{a=\"1\", b=\"2\"}");
        assert!(LabelSet::from_pairs([("a", "1"), ("a", "2")]).is_err());
    }

    #[test]
    fn validation_follows_prometheus() {
        assert!(is_valid_metric_name("a:b_c"));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("a-b"));
        let no_name = LabelSet::from_pairs([("a", "1")]).unwrap();
        assert!(matches!(no_name.validate(), Err(Error::MissingMetricName)));
    }
}

//! The driver: one worker's share of the series, turned into updates of the leaves
//! (instant vectors with lookback and staleness, range-function windows).

use std::collections::{BTreeMap, HashMap, VecDeque};

use differential_dataflow::input::InputSession;
use vigil_queries::promql::{matches, Point, Window, DEFAULT_LOOKBACK_MS};
use vigil_storage::record::is_stale_marker;
use vigil_storage::{Appended, BatchSample, LabelSet, SeriesId};

use super::{Element, Program};

/// Series ids are already xxh3 hashes of the label set: hash maps keyed by them use
/// the id itself.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type IdMap<V> = HashMap<SeriesId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A series' latest sample as a selector's instant vector sees it.
struct Latest {
    t: i64,
    bits: u64,
    /// In the vector now (not stale, not expired).
    present: bool,
}

/// A series' window under a range function.
struct SeriesWindow {
    points: VecDeque<Point>,
    /// The value in the output now.
    emitted: Option<u64>,
    changed: bool,
    /// Every point has the same value (then `rate`, `increase` and `delta` do not
    /// depend on where the window lies or how many points it has, beyond two).
    flat: bool,
    /// The flat value the emitted result was computed from, when that result holds for
    /// any flat window of that value (so new equal points need no recomputation).
    constant_of: Option<u64>,
}

#[derive(Default)]
struct LeafState {
    latest: IdMap<Latest>,
    /// When values may leave the lookback (re-checked when due).
    expiries: BTreeMap<i64, Vec<SeriesId>>,
    windows: IdMap<SeriesWindow>,
}

struct SeriesInfo {
    labels: LabelSet,
    leaves: Vec<usize>,
}

/// One worker's share of the series and the leaves' state for them.
pub(super) struct Driver {
    program: std::sync::Arc<Program>,
    index: usize,
    peers: usize,
    /// `None` for series no leaf selects.
    series: IdMap<Option<SeriesInfo>>,
    /// Received, waiting for an evaluation at or after their time.
    pending: Vec<(SeriesId, i64, f64)>,
    leaves: Vec<LeafState>,
    epochs: u64,
}

/// Every this many epochs the driver forgets series that hold no state any more
/// (often under test, so the property test runs through it).
const PRUNE_EVERY: u64 = if cfg!(test) { 7 } else { 4096 };

impl Driver {
    pub(super) fn new(program: std::sync::Arc<Program>, index: usize, peers: usize) -> Driver {
        Driver {
            program: program.clone(),
            index,
            peers: peers.max(1),
            series: IdMap::default(),
            pending: Vec::new(),
            leaves: program
                .leaves
                .iter()
                .map(|_| LeafState::default())
                .collect(),
            epochs: 0,
        }
    }

    /// Forgets series without state in any leaf and nothing pending (pods come and
    /// go), and the cache of series no leaf selects.
    fn prune(&mut self) {
        let pending: std::collections::HashSet<SeriesId> =
            self.pending.iter().map(|sample| sample.0).collect();
        let leaves = &self.leaves;
        self.series.retain(|id, info| {
            let Some(info) = info else {
                return false;
            };
            pending.contains(id)
                || info.leaves.iter().any(|&leaf| {
                    leaves[leaf].latest.contains_key(id) || leaves[leaf].windows.contains_key(id)
                })
        });
    }

    pub(super) fn receive(&mut self, batch: &Appended) {
        let program = self.program.clone();
        for &BatchSample {
            series_idx,
            timestamp_ms,
            value,
        } in &batch.samples
        {
            let idx = series_idx as usize;
            let Some(&id) = batch.ids.get(idx) else {
                continue;
            };
            if id % self.peers as u64 != self.index as u64 {
                continue;
            }
            let info = self.series.entry(id).or_insert_with(|| {
                let labels = batch.series.get(idx)?;
                let leaves: Vec<usize> = program
                    .leaves
                    .iter()
                    .enumerate()
                    .filter(|(_, leaf)| matches(&leaf.matchers, labels))
                    .map(|(index, _)| index)
                    .collect();
                (!leaves.is_empty()).then(|| SeriesInfo {
                    labels: labels.clone(),
                    leaves,
                })
            });
            if info.is_some() {
                self.pending.push((id, timestamp_ms, value));
            }
        }
    }

    /// Applies the samples due at `at`, expires what left the lookback, recomputes the
    /// windows that changed; updates go into `inputs` at the current epoch.
    pub(super) fn apply(
        &mut self,
        at: i64,
        refresh: Option<&[bool]>,
        inputs: &mut [InputSession<u64, Element, isize>],
    ) {
        self.epochs += 1;
        if self.epochs.is_multiple_of(PRUNE_EVERY) {
            self.prune();
        }
        let mut due = if self.pending.iter().all(|sample| sample.1 <= at) {
            std::mem::take(&mut self.pending)
        } else {
            let mut due = Vec::new();
            self.pending.retain(|sample| {
                if sample.1 <= at {
                    due.push(*sample);
                    false
                } else {
                    true
                }
            });
            due
        };
        if !due.is_sorted_by_key(|sample| sample.1) {
            due.sort_by_key(|sample| sample.1);
        }
        for (id, t, f) in due {
            let Some(Some(info)) = self.series.get(&id) else {
                continue;
            };
            for &leaf in &info.leaves {
                let state = &mut self.leaves[leaf];
                let input = &mut inputs[leaf];
                if self.program.leaves[leaf].range.is_some() {
                    if is_stale_marker(f) {
                        continue;
                    }
                    let window = state.windows.entry(id).or_insert_with(|| SeriesWindow {
                        points: VecDeque::new(),
                        emitted: None,
                        changed: false,
                        flat: true,
                        constant_of: None,
                    });
                    let appended = insert_point(&mut window.points, Point { t, f });
                    window.flat = if appended {
                        window.flat && window.points.front().is_some_and(|p| p.f == f)
                    } else {
                        all_equal(&window.points)
                    };
                    window.changed = true;
                } else {
                    let timestamp = self.program.leaves[leaf].timestamp;
                    latest_sample(state, input, &info.labels, id, t, f, timestamp);
                }
            }
        }
        for (leaf, state) in self.leaves.iter_mut().enumerate() {
            let input = &mut inputs[leaf];
            match self.program.leaves[leaf].range {
                None => {
                    let series = &self.series;
                    let labels = |id: &SeriesId| {
                        series
                            .get(id)
                            .and_then(|info| info.as_ref())
                            .map(|info| info.labels.clone())
                    };
                    expire(
                        state,
                        input,
                        at,
                        labels,
                        self.program.leaves[leaf].timestamp,
                    );
                }
                Some((range, function)) => {
                    let start = at - range;
                    let moves_with_time = function.uses_window()
                        && refresh.is_none_or(|leaves| leaves.get(leaf).copied().unwrap_or(true));
                    let series = &self.series;
                    state.windows.retain(|id, window| {
                        let mut changed = std::mem::take(&mut window.changed);
                        let mut trimmed = false;
                        while window.points.front().is_some_and(|p| p.t <= start) {
                            window.points.pop_front();
                            trimmed = true;
                        }
                        if trimmed {
                            changed = true;
                            if !window.flat {
                                window.flat = all_equal(&window.points);
                            }
                        }
                        let flat_value = (window.flat
                            && window.points.len() >= 2
                            && function.constant_when_flat())
                        .then(|| window.points.front().map(|p| p.f.to_bits()))
                        .flatten();
                        let unchanged = flat_value.is_some() && flat_value == window.constant_of;
                        if !unchanged && (changed || moves_with_time) {
                            window.constant_of = flat_value;
                            let value = function
                                .apply(window.points.make_contiguous(), Window { start, end: at })
                                .map(f64::to_bits);
                            if value != window.emitted {
                                if let Some(labels) = series
                                    .get(id)
                                    .and_then(|info| info.as_ref())
                                    .map(|i| &i.labels)
                                {
                                    let drop_name = !function.keep_name();
                                    if let Some(old) = window.emitted {
                                        input.remove(Element::new(labels.clone(), drop_name, old));
                                    }
                                    if let Some(new) = value {
                                        input.insert(Element::new(labels.clone(), drop_name, new));
                                    }
                                }
                                window.emitted = value;
                            }
                        }
                        !window.points.is_empty() || window.emitted.is_some()
                    });
                }
            }
        }
    }
}

/// Inserts in time order; a sample at an existing time replaces it. True when the
/// point was appended at the end (the common case).
fn insert_point(points: &mut VecDeque<Point>, point: Point) -> bool {
    match points.back() {
        None => {
            points.push_back(point);
            true
        }
        Some(last) if last.t < point.t => {
            points.push_back(point);
            true
        }
        _ => {
            match points.binary_search_by_key(&point.t, |p| p.t) {
                Ok(at) => points[at] = point,
                Err(at) => points.insert(at, point),
            }
            false
        }
    }
}

fn all_equal(points: &VecDeque<Point>) -> bool {
    points
        .front()
        .is_none_or(|first| points.iter().all(|p| p.f == first.f))
}

/// A sample for a selector's instant vector: the newest sample wins; an unchanged
/// value only refreshes the time; a staleness marker removes the series.
fn latest_sample(
    state: &mut LeafState,
    input: &mut InputSession<u64, Element, isize>,
    labels: &LabelSet,
    id: SeriesId,
    t: i64,
    f: f64,
    timestamp: bool,
) {
    // `timestamp(v)` carries the sample's time as its value and drops the name.
    let (bits, drop_name) = if timestamp {
        ((t as f64 / 1000.0).to_bits(), true)
    } else {
        (f.to_bits(), false)
    };
    let stale = is_stale_marker(f);
    if let Some(latest) = state.latest.get_mut(&id) {
        if t < latest.t {
            return;
        }
        if latest.present && !stale && latest.bits == bits {
            latest.t = t;
            return;
        }
        if latest.present {
            input.remove(Element::new(labels.clone(), drop_name, latest.bits));
        }
    }
    if !stale {
        input.insert(Element::new(labels.clone(), drop_name, bits));
    }
    // A staleness marker is kept for a lookback too (an older late sample must not
    // bring the series back); then the entry goes.
    state
        .expiries
        .entry(t + DEFAULT_LOOKBACK_MS)
        .or_default()
        .push(id);
    state.latest.insert(
        id,
        Latest {
            t,
            bits,
            present: !stale,
        },
    );
}

/// Removes the values whose sample left the lookback by `at`, and forgets series whose
/// latest sample (or staleness marker) is that old, so churned series leave no state.
fn expire(
    state: &mut LeafState,
    input: &mut InputSession<u64, Element, isize>,
    at: i64,
    labels: impl Fn(&SeriesId) -> Option<LabelSet>,
    drop_name: bool,
) {
    while let Some(entry) = state.expiries.first_entry() {
        if *entry.key() > at {
            break;
        }
        for id in entry.remove() {
            let Some(latest) = state.latest.get_mut(&id) else {
                continue;
            };
            if latest.t + DEFAULT_LOOKBACK_MS <= at {
                if latest.present {
                    if let Some(labels) = labels(&id) {
                        input.remove(Element::new(labels, drop_name, latest.bits));
                    }
                }
                state.latest.remove(&id);
            } else {
                let due = latest.t + DEFAULT_LOOKBACK_MS;
                state.expiries.entry(due).or_default().push(id);
            }
        }
    }
}

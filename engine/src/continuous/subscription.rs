//! One subscription mechanism for every maintained result (continuous queries and the
//! alert stream): a `Hub` holds the current result as a multiset of rows, numbers every
//! batch of changes, keeps the recent batches for clients that resume, and fans messages
//! out to subscribers.
//!
//! A subscriber receives, in order: a snapshot of the result at a consistent sequence
//! number (or, when it resumes from a sequence number the hub still holds, the change
//! batches after it), then every change batch `{seq, time, changes: [{row, diff}]}` and
//! progress messages `{seq, time}` when the watermark advances without a change (the
//! result is complete up to `time`). A subscriber that falls more than the channel's
//! capacity behind is dropped (the HTTP layer closes it as a slow consumer).
//!
//! Durability: with a directory, every change batch is appended to `changes.jsonl` before
//! it is sent (written, not fsynced: a killed process loses nothing, a power cut may lose
//! the tail, which the owner then re-derives from storage and publishes again as new
//! changes), and the log is folded into `state.json` from time to time. On open, the
//! state and the log's recent batches come back, so a client that resumes after a
//! restart with its last sequence number misses nothing and sees nothing twice.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::row::Row;

/// Change batches kept in memory for resuming subscribers.
const RESUME_BATCHES: usize = 4096;
/// Messages a subscriber may fall behind before it is dropped.
const CHANNEL_CAPACITY: usize = 1024;
/// The log is folded into the state file after this many batches.
const LOG_BATCHES: usize = 10_000;

/// One message to subscribers, rendered once.
#[derive(Debug)]
pub struct Message {
    pub seq: u64,
    pub time: i64,
    pub kind: MessageKind,
    pub json: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Snapshot,
    Changes,
    Progress,
    /// The query stopped (over its budget): no more changes will come.
    Stopped,
}

/// A change batch as another continuous query reads it (`Hub::tap`).
#[derive(Debug)]
pub struct ChangeBatch {
    pub seq: u64,
    pub time: i64,
    pub changes: Vec<(Row, i64)>,
}

/// A change batch as persisted.
#[derive(Serialize, Deserialize)]
struct Logged {
    seq: u64,
    time: i64,
    changes: Vec<(Row, i64)>,
}

#[derive(Serialize, Deserialize, Default)]
struct SavedState {
    seq: u64,
    time: i64,
    rows: Vec<(Row, i64)>,
}

/// Errors of the hub's own files.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("subscription log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("subscription log {path}: {message}")]
    Corrupt { path: String, message: String },
}

struct Inner {
    rows: BTreeMap<Row, i64>,
    /// The result's row count (multiplicities summed), kept as changes apply: the runner
    /// checks it against the budget after every epoch.
    total: i64,
    seq: u64,
    time: i64,
    recent: VecDeque<Arc<Message>>,
    log: Option<File>,
    logged: usize,
    /// Readers of the structured changes (queries reading this one).
    taps: Vec<crossbeam_channel::Sender<Arc<ChangeBatch>>>,
    /// Why the query stopped, once it has.
    stopped: Option<Arc<Message>>,
}

pub struct Hub {
    columns: Vec<String>,
    dir: Option<PathBuf>,
    inner: Mutex<Inner>,
    sender: broadcast::Sender<Arc<Message>>,
}

/// What a new subscriber gets: the messages that bring it up to date, then the channel.
pub struct Subscription {
    pub initial: Vec<Arc<Message>>,
    pub receiver: broadcast::Receiver<Arc<Message>>,
}

impl Hub {
    /// A hub without files.
    pub fn in_memory(columns: Vec<String>) -> Hub {
        Hub::build(columns, None, SavedState::default(), Vec::new(), None)
    }

    /// Opens (or creates) the hub persisted in `dir`.
    pub fn open(columns: Vec<String>, dir: &Path) -> Result<Hub, HubError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| HubError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state_path = dir.join("state.json");
        let mut state: SavedState = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| HubError::Corrupt {
                path: state_path.display().to_string(),
                message: err.to_string(),
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => SavedState::default(),
            Err(err) => return Err(io(&state_path)(err)),
        };
        let log_path = dir.join("changes.jsonl");
        let mut tail = Vec::new();
        // The log up to its last whole line: a torn line (the process died mid-write)
        // ends it and is cut off.
        let mut valid_len = 0u64;
        match File::open(&log_path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut line = String::new();
                loop {
                    line.clear();
                    let read = reader.read_line(&mut line).map_err(io(&log_path))?;
                    if read == 0 || !line.ends_with('\n') {
                        break;
                    }
                    let Ok(batch) = serde_json::from_str::<Logged>(&line) else {
                        break;
                    };
                    valid_len += read as u64;
                    if batch.seq > state.seq {
                        tail.push(batch);
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(&log_path)(err)),
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        log.set_len(valid_len).map_err(io(&log_path))?;
        let mut rows: BTreeMap<Row, i64> = state.rows.drain(..).collect();
        for batch in &tail {
            let _ = apply(&mut rows, &batch.changes);
            state.seq = batch.seq;
            state.time = state.time.max(batch.time);
        }
        state.rows = rows.into_iter().collect();
        let logged = tail.len();
        let hub = Hub::build(columns, Some(dir.to_path_buf()), state, tail, Some(log));
        hub.lock().logged = logged;
        Ok(hub)
    }

    fn build(
        columns: Vec<String>,
        dir: Option<PathBuf>,
        state: SavedState,
        tail: Vec<Logged>,
        log: Option<File>,
    ) -> Hub {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        let recent = tail
            .iter()
            .rev()
            .take(RESUME_BATCHES)
            .rev()
            .map(|batch| Arc::new(render_changes(&columns, batch)))
            .collect();
        Hub {
            inner: Mutex::new(Inner {
                total: state.rows.iter().map(|(_, c)| (*c).max(0)).sum(),
                rows: state.rows.into_iter().collect(),
                seq: state.seq,
                time: state.time,
                recent,
                log,
                logged: 0,
                taps: Vec::new(),
                stopped: None,
            }),
            columns,
            dir,
            sender,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The sequence number of the last change batch and the time of the last message.
    pub fn position(&self) -> (u64, i64) {
        let inner = self.lock();
        (inner.seq, inner.time)
    }

    /// The current result (rows with multiplicities).
    pub fn rows(&self) -> Vec<(Row, i64)> {
        self.lock()
            .rows
            .iter()
            .map(|(row, count)| (row.clone(), *count))
            .collect()
    }

    pub fn row_count(&self) -> usize {
        self.lock().total.max(0) as usize
    }

    /// Publishes one batch of changes at `time` (consolidated here; nothing is sent for
    /// an empty batch but progress). Returns the batch's sequence number.
    pub fn publish(&self, time: i64, changes: Vec<(Row, i64)>) -> Result<u64, HubError> {
        let changes = consolidate(changes);
        if changes.is_empty() {
            self.progress(time);
            return Ok(self.lock().seq);
        }
        let mut inner = self.lock();
        let batch = Logged {
            seq: inner.seq + 1,
            time: time.max(inner.time),
            changes,
        };
        if let Some(log) = inner.log.as_mut() {
            let mut line = serde_json::to_vec(&batch).map_err(|err| HubError::Corrupt {
                path: "changes.jsonl".into(),
                message: err.to_string(),
            })?;
            line.push(b'\n');
            log.write_all(&line).map_err(|source| HubError::Io {
                path: "changes.jsonl".into(),
                source,
            })?;
            inner.logged += 1;
        }
        inner.total += apply(&mut inner.rows, &batch.changes);
        inner.seq = batch.seq;
        inner.time = batch.time;
        let message = Arc::new(render_changes(&self.columns, &batch));
        inner.recent.push_back(message.clone());
        while inner.recent.len() > RESUME_BATCHES {
            inner.recent.pop_front();
        }
        let _ = self.sender.send(message);
        if !inner.taps.is_empty() {
            let shared = Arc::new(ChangeBatch {
                seq: batch.seq,
                time: batch.time,
                changes: batch.changes.clone(),
            });
            inner.taps.retain(|tap| tap.send(shared.clone()).is_ok());
        }
        if inner.logged >= LOG_BATCHES {
            self.fold(&mut inner)?;
        }
        Ok(inner.seq)
    }

    /// The query stopped: subscribers are told why (and new ones too), and the result
    /// stays as it was.
    pub fn fail(&self, reason: &str) {
        let mut inner = self.lock();
        let message = Arc::new(Message {
            seq: inner.seq,
            time: inner.time,
            kind: MessageKind::Stopped,
            json:
                json!({"type": "stopped", "seq": inner.seq, "time": inner.time, "reason": reason})
                    .to_string(),
        });
        inner.stopped = Some(message.clone());
        let _ = self.sender.send(message);
    }

    /// The current result, its time, and a receiver of every later change batch (each
    /// change is in exactly one of the two); dropped to unsubscribe.
    pub fn tap(
        &self,
    ) -> (
        Vec<(Row, i64)>,
        i64,
        crossbeam_channel::Receiver<Arc<ChangeBatch>>,
    ) {
        let mut inner = self.lock();
        let (sender, receiver) = crossbeam_channel::unbounded();
        inner.taps.push(sender);
        let rows = inner.rows.iter().map(|(r, c)| (r.clone(), *c)).collect();
        (rows, inner.time, receiver)
    }

    /// The result is complete up to `time`: tells subscribers when time moved.
    pub fn progress(&self, time: i64) {
        let mut inner = self.lock();
        if time <= inner.time {
            return;
        }
        inner.time = time;
        let message = Arc::new(Message {
            seq: inner.seq,
            time,
            kind: MessageKind::Progress,
            json: json!({"type": "progress", "seq": inner.seq, "time": time}).to_string(),
        });
        let _ = self.sender.send(message);
    }

    /// Replaces the result by `rows`, publishing the difference as one change batch
    /// (after a restart: what storage says the result is now, against what subscribers
    /// were last told).
    pub fn reconcile(&self, time: i64, rows: Vec<(Row, i64)>) -> Result<u64, HubError> {
        let mut changes: Vec<(Row, i64)> = self
            .lock()
            .rows
            .iter()
            .map(|(row, count)| (row.clone(), -count))
            .collect();
        changes.extend(rows);
        self.publish(time, changes)
    }

    /// Subscribes: from the start (a snapshot), or after change batch `from_seq`. A
    /// sequence number the hub no longer holds (or never issued) gets a snapshot marked
    /// `resync`, which replaces whatever the client held.
    pub fn subscribe(&self, from_seq: Option<u64>) -> Subscription {
        let inner = self.lock();
        let receiver = self.sender.subscribe();
        let oldest = inner.recent.front().map_or(inner.seq + 1, |m| m.seq);
        let initial = match from_seq {
            Some(from) if from == inner.seq => vec![Arc::new(Message {
                seq: inner.seq,
                time: inner.time,
                kind: MessageKind::Progress,
                json: json!({"type": "progress", "seq": inner.seq, "time": inner.time}).to_string(),
            })],
            Some(from) if from < inner.seq && from + 1 >= oldest => inner
                .recent
                .iter()
                .filter(|m| m.seq > from)
                .cloned()
                .collect(),
            other => vec![Arc::new(self.snapshot(&inner, other.is_some()))],
        };
        let mut initial = initial;
        initial.extend(inner.stopped.clone());
        Subscription { initial, receiver }
    }

    fn snapshot(&self, inner: &Inner, resync: bool) -> Message {
        let mut rows = Vec::new();
        for (row, count) in &inner.rows {
            for _ in 0..(*count).max(0) {
                rows.push(render_row(&self.columns, row));
            }
        }
        let mut value = json!({
            "type": "snapshot",
            "seq": inner.seq,
            "time": inner.time,
            "columns": self.columns,
            "rows": rows,
        });
        if resync {
            value["resync"] = Value::Bool(true);
        }
        Message {
            seq: inner.seq,
            time: inner.time,
            kind: MessageKind::Snapshot,
            json: value.to_string(),
        }
    }

    /// Folds the log into the state file and truncates the log.
    fn fold(&self, inner: &mut Inner) -> Result<(), HubError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let state = SavedState {
            seq: inner.seq,
            time: inner.time,
            rows: inner.rows.iter().map(|(r, c)| (r.clone(), *c)).collect(),
        };
        let io = |source| HubError::Io {
            path: dir.display().to_string(),
            source,
        };
        write_state(dir, &state).map_err(io)?;
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(dir.join("changes.jsonl"))
            .map_err(io)?;
        inner.log = Some(log);
        inner.logged = 0;
        Ok(())
    }

    /// Folds the log into the state file now (batches folded are no longer offered to
    /// clients resuming after a restart; they get a resync snapshot).
    pub fn save(&self) -> Result<(), HubError> {
        let mut inner = self.lock();
        self.fold(&mut inner)
    }
}

fn write_state(dir: &Path, state: &SavedState) -> std::io::Result<()> {
    let tmp = dir.join("state.json.tmp");
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    File::open(&tmp)?.sync_data()?;
    std::fs::rename(&tmp, dir.join("state.json"))?;
    File::open(dir)?.sync_all()
}

/// Applies `changes`; returns how the row count moved.
fn apply(rows: &mut BTreeMap<Row, i64>, changes: &[(Row, i64)]) -> i64 {
    for (row, diff) in changes {
        let count = rows.entry(row.clone()).or_insert(0);
        *count += diff;
        if *count == 0 {
            rows.remove(row);
        }
    }
    changes.iter().map(|(_, diff)| diff).sum()
}

/// Sums the diffs of equal rows and drops the zeros, in row order.
pub fn consolidate(changes: Vec<(Row, i64)>) -> Vec<(Row, i64)> {
    let mut sums: BTreeMap<Row, i64> = BTreeMap::new();
    for (row, diff) in changes {
        *sums.entry(row).or_insert(0) += diff;
    }
    sums.into_iter().filter(|(_, diff)| *diff != 0).collect()
}

fn render_row(columns: &[String], row: &Row) -> Value {
    Value::Object(
        columns
            .iter()
            .zip(row)
            .map(|(name, datum)| (name.clone(), datum.to_json()))
            .collect(),
    )
}

fn render_changes(columns: &[String], batch: &Logged) -> Message {
    let changes: Vec<Value> = batch
        .changes
        .iter()
        .map(|(row, diff)| json!({"row": render_row(columns, row), "diff": diff}))
        .collect();
    Message {
        seq: batch.seq,
        time: batch.time,
        kind: MessageKind::Changes,
        json: json!({"type": "changes", "seq": batch.seq, "time": batch.time, "changes": changes})
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::row::Datum;
    use super::*;

    fn row(v: i64) -> Row {
        vec![Datum::Int(v)]
    }

    fn kinds(sub: &Subscription) -> Vec<(MessageKind, u64)> {
        sub.initial.iter().map(|m| (m.kind, m.seq)).collect()
    }

    #[test]
    fn snapshot_then_changes_then_resume() {
        let hub = Hub::in_memory(vec!["v".into()]);
        assert_eq!(hub.publish(10, vec![(row(1), 1), (row(2), 1)]).unwrap(), 1);
        let mut sub = hub.subscribe(None);
        assert_eq!(kinds(&sub), vec![(MessageKind::Snapshot, 1)]);
        assert!(sub.initial[0]
            .json
            .contains("\"rows\":[{\"v\":1},{\"v\":2}]"));
        hub.publish(
            20,
            vec![(row(1), -1), (row(3), 1), (row(3), 1), (row(3), -1)],
        )
        .unwrap();
        let message = sub.receiver.try_recv().unwrap();
        assert_eq!((message.kind, message.seq), (MessageKind::Changes, 2));
        assert!(message.json.contains("{\"diff\":-1,\"row\":{\"v\":1}}"));
        hub.progress(30);
        let message = sub.receiver.try_recv().unwrap();
        assert_eq!((message.kind, message.time), (MessageKind::Progress, 30));
        // Resume after 1: batch 2 only; from the current position: progress; unknown
        // positions: a resync snapshot.
        assert_eq!(
            kinds(&hub.subscribe(Some(1))),
            vec![(MessageKind::Changes, 2)]
        );
        assert_eq!(
            kinds(&hub.subscribe(Some(2))),
            vec![(MessageKind::Progress, 2)]
        );
        let future = hub.subscribe(Some(99));
        assert_eq!(kinds(&future), vec![(MessageKind::Snapshot, 2)]);
        assert!(future.initial[0].json.contains("\"resync\":true"));
        assert_eq!(hub.rows(), vec![(row(2), 1), (row(3), 1)]);
    }

    #[test]
    fn reopened_hub_resumes_where_it_stopped() {
        let dir = std::env::temp_dir().join(format!("vigil-hub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let hub = Hub::open(vec!["v".into()], &dir).unwrap();
            hub.publish(1, vec![(row(1), 1)]).unwrap();
            hub.publish(2, vec![(row(2), 1)]).unwrap();
            // Killed: no save.
        }
        let hub = Hub::open(vec!["v".into()], &dir).unwrap();
        assert_eq!(hub.position(), (2, 2));
        assert_eq!(
            kinds(&hub.subscribe(Some(1))),
            vec![(MessageKind::Changes, 2)]
        );
        // Storage says the result is {2, 4}: one batch with the difference.
        assert_eq!(hub.reconcile(3, vec![(row(2), 1), (row(4), 1)]).unwrap(), 3);
        let batch = hub.subscribe(Some(2));
        assert!(batch.initial[0]
            .json
            .contains("{\"diff\":-1,\"row\":{\"v\":1}}"));
        assert!(batch.initial[0]
            .json
            .contains("{\"diff\":1,\"row\":{\"v\":4}}"));
        hub.save().unwrap();
        drop(hub);
        let hub = Hub::open(vec!["v".into()], &dir).unwrap();
        assert_eq!(hub.rows(), vec![(row(2), 1), (row(4), 1)]);
        assert_eq!(hub.position().0, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

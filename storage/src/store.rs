//! [`Storage`]: validate → WAL (durable) → head, flush to Parquet, retention.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::block_reader::{Chunk, ChunkCache, OpenedFile};
use crate::codec::SegmentDecoder;
use crate::error::{Error, Result};
use crate::head::{Head, SeriesIndex};
use crate::labels::{IdMap, LabelSet, SeriesId};
use crate::limits::Limits;
use crate::lock::DirLock;
use crate::logs::{BatchFiles, LogRecord, LogStore};
use crate::parquet_block::{self, SeriesRow};
use crate::record::{Appended, SampleBatch};
use crate::wal::{Checkpoint, ReplayItem, Wal};

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// Width of a Parquet partition.
    pub block_period: Duration,
    /// Samples newer than `now - head_window` (rounded down to a block boundary) stay in
    /// memory; older ones are flushed to Parquet. `None`: half a block period, so the
    /// head holds between 0.5 and 1.5 block periods (as Prometheus' head does). Zero:
    /// flush everything.
    pub head_window: Option<Duration>,
    /// Budget of the cache of series decoded from Parquet.
    pub cache_bytes: usize,
    /// Partitions whose end is older than now minus this are deleted.
    pub retention: Duration,
    pub wal_segment_bytes: u64,
    pub limits: Limits,
}

impl StorageConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageConfig {
            data_dir: data_dir.into(),
            block_period: Duration::from_secs(2 * 3600),
            head_window: None,
            cache_bytes: 256 << 20,
            retention: Duration::from_secs(30 * 24 * 3600),
            wal_segment_bytes: 128 << 20,
            limits: Limits::default(),
        }
    }
}

/// How a batch with out-of-order or duplicate samples is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// Reject the whole batch (remote_write: Prometheus answers 400 and writes nothing).
    Strict,
    /// Drop the offending samples and keep the rest (scrape: Prometheus counts and drops).
    Lenient,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub accepted: usize,
    pub out_of_order: usize,
    pub duplicates: usize,
    pub out_of_bounds: usize,
    /// Samples later than the clock plus `limits.max_future_skew`.
    pub too_far_in_future: usize,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub samples_appended: AtomicU64,
    /// Batches refused because they would pass a series limit.
    pub series_limit_rejections: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_duration_micros: AtomicU64,
    pub parquet_bytes_written: AtomicU64,
    pub wal_corruptions: AtomicU64,
    /// Samples replay could not recover (their record, or their series' declaration, was
    /// damaged), when the damaged record could still be read.
    pub wal_lost_samples: AtomicU64,
    pub partitions_deleted: AtomicU64,
    /// Damaged Parquet files moved to `quarantine/`.
    pub files_quarantined: AtomicU64,
}

/// A Parquet file of the `samples` table, with the time range of its partition.
#[derive(Debug, Clone)]
pub struct SampleFile {
    pub path: ObjectPath,
    pub size: u64,
    pub block_start: i64,
    pub block_end: i64,
}

/// Samples cut from the head for a flush, with the checkpoint their flush makes durable.
#[derive(Clone)]
struct FrozenHead {
    head: Arc<Head>,
    checkpoint: Checkpoint,
}

/// A timestamp reserved by an append, with what it replaced, for rollback.
struct Reservation {
    id: SeriesId,
    reserved: i64,
    previous: Option<(i64, f64)>,
}

/// One series' samples: timestamps and values, in time order.
pub type SeriesPoints = (Vec<i64>, Vec<f64>);

/// Series chosen by a selector, in label order (shared, cached).
pub type SortedSelection = Arc<Vec<(SeriesId, Arc<LabelSet>)>>;

struct Catalog {
    series: IdMap<Arc<LabelSet>>,
    /// Series by metric name (the postings a selector with a name starts from).
    by_name: HashMap<String, Vec<SeriesId>>,
    /// Latest accepted sample per series: the out-of-order check.
    latest: IdMap<(i64, f64)>,
}

/// The accepted time range of a write (`Storage::time_window`).
struct TimeWindow {
    min_valid: i64,
    max_valid: i64,
    skew_ms: i64,
}

impl TimeWindow {
    /// A log record's or span's time.
    fn check(&self, timestamp_ms: i64) -> Result<()> {
        if timestamp_ms > self.max_valid {
            return Err(Error::TooFarInFuture {
                series: "a log record".into(),
                timestamp: timestamp_ms,
                skew_ms: self.skew_ms,
            });
        }
        if timestamp_ms < self.min_valid {
            return Err(Error::OutOfBounds {
                timestamp: timestamp_ms,
            });
        }
        Ok(())
    }
}

/// What the order check decided about a batch.
enum Checked {
    /// The samples to append (in order, duplicates of stored ones removed), the
    /// outcome, and the timestamp reservations made.
    Ready(SampleBatch, AppendOutcome, Vec<Reservation>),
    /// Some samples are behind their series and not stored while other appends are on
    /// their way to the head: nothing was reserved; check again once they are there.
    Unsettled(SampleBatch),
}

/// The largest timestamp magnitude a sample may have (2^52 ms, about 142,000 years):
/// far beyond any clock, and small enough that time arithmetic on it cannot overflow.
pub const MAX_TIMESTAMP_MS: i64 = 1 << 52;

pub struct Storage {
    config: StorageConfig,
    /// Held for the storage's lifetime: one process per data directory.
    _lock: DirLock,
    store: Arc<dyn ObjectStore>,
    wal: Wal,
    /// Appenders hold it shared across WAL append + head apply; a flush holds it
    /// exclusively across WAL cut + head swap, so the two always agree.
    gate: tokio::sync::RwLock<()>,
    head: RwLock<Head>,
    /// Heads cut from the WAL and not yet in Parquet, oldest first, each with the WAL
    /// segment its cut started (everything below it is in this or an older head).
    frozen: RwLock<Vec<FrozenHead>>,
    catalog: RwLock<Catalog>,
    /// Selector results in label order, keyed by selector, valid while the number of
    /// series is unchanged (series are only ever added).
    selections: Mutex<HashMap<String, (usize, SortedSelection)>>,
    /// (appends so far, latest event time appended): the rule engine's ingest trigger
    /// and watermark.
    appended: tokio::sync::watch::Sender<(u64, i64)>,
    /// Subscribers to every durable append's samples (the incremental rule engine).
    taps: Mutex<Vec<crossbeam_channel::Sender<Arc<Appended>>>>,
    /// Serializes the out-of-order check and its reservation of timestamps.
    order: Mutex<()>,
    files: RwLock<Vec<SampleFile>>,
    /// Sample files with their footer and series index, opened on first read.
    opened: Mutex<HashMap<ObjectPath, Arc<OpenedFile>>>,
    /// Series decoded from sample files.
    chunks: ChunkCache,
    /// The last flush's checkpoint: its time never goes back.
    flushed: Mutex<Checkpoint>,
    flush_lock: tokio::sync::Mutex<()>,
    closed: std::sync::atomic::AtomicBool,
    /// Log records: one durable Parquet file per accepted batch.
    logs: Arc<LogStore>,
    /// Spans: one durable Parquet file per accepted batch.
    spans: Arc<BatchFiles>,
    /// Appends whose timestamps are reserved and whose samples are not yet in the head.
    unapplied: std::sync::atomic::AtomicUsize,
    pub stats: StorageStats,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

pub const SAMPLES_PREFIX: &str = "metrics";
pub const SERIES_PREFIX: &str = "series";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `<segment>_<time>.parquet` (or `<segment>.parquet`, written when a flush took the
/// whole head) → the flush's checkpoint.
fn parse_flush_name(name: &str) -> Option<Checkpoint> {
    let stem = name.strip_suffix(".parquet")?;
    let (segment, time) = match stem.split_once('_') {
        Some((segment, time)) => (segment, time.parse().ok()?),
        None => (stem, i64::MAX),
    };
    Some(Checkpoint {
        segment: segment.parse().ok()?,
        time,
    })
}

fn flush_name(checkpoint: Checkpoint) -> String {
    format!("{:08}_{}.parquet", checkpoint.segment, checkpoint.time)
}

/// `metrics/block=<start>_<end>/<flush>.parquet` → (start, end, flush).
fn parse_sample_path(path: &ObjectPath) -> Option<(i64, i64, Checkpoint)> {
    let mut parts = path.parts();
    parts.next()?;
    let block = parts.next()?;
    let (start, end) = block.as_ref().strip_prefix("block=")?.split_once('_')?;
    let file = parts.next()?;
    let flush = parse_flush_name(file.as_ref())?;
    Some((start.parse().ok()?, end.parse().ok()?, flush))
}

fn sample_path(block_start: i64, block_end: i64, flush: Checkpoint) -> ObjectPath {
    ObjectPath::from(format!(
        "{SAMPLES_PREFIX}/block={block_start}_{block_end}/{}",
        flush_name(flush)
    ))
}

fn series_path(flush: Checkpoint) -> ObjectPath {
    ObjectPath::from(format!("{SERIES_PREFIX}/{}", flush_name(flush)))
}

/// Moves a damaged file from `blocks/` to `quarantine/` (same relative path), so the rest
/// keeps serving and the file stays available for inspection.
fn quarantine(data_dir: &std::path::Path, path: &ObjectPath, reason: &str) {
    let from = data_dir.join("blocks").join(path.as_ref());
    let to = data_dir.join("quarantine").join(path.as_ref());
    let moved = to
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::rename(&from, &to));
    match moved {
        Ok(()) => warn!(
            file = %from.display(),
            moved_to = %to.display(),
            reason,
            "damaged parquet file quarantined; the rest of the data keeps serving"
        ),
        Err(err) => warn!(
            file = %from.display(),
            reason,
            error = %err,
            "damaged parquet file could not be moved aside; ignoring it"
        ),
    }
}

impl Storage {
    /// Opens the data directory: takes its lock, loads the Parquet file list and series
    /// (quarantining damaged files), replays the WAL.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        std::fs::create_dir_all(config.data_dir.join("blocks"))?;
        let lock = DirLock::acquire(&config.data_dir)?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(
            config.data_dir.join("blocks"),
        )?);
        let stats = StorageStats::default();
        // A flush commits by writing its series file last, named after its checkpoint.
        // Sample files without a committed series file are the remains of an interrupted
        // flush; their samples are still in the WAL.
        let mut catalog = Catalog {
            series: IdMap::default(),
            by_name: HashMap::new(),
            latest: IdMap::default(),
        };
        let mut series_files: Vec<_> = store
            .list(Some(&ObjectPath::from(SERIES_PREFIX)))
            .try_collect()
            .await?;
        series_files.sort_by(|a, b| a.location.cmp(&b.location));
        let mut committed = std::collections::BTreeSet::new();
        let mut flushed = Checkpoint::NONE;
        for meta in series_files {
            let Some(flush) = meta.location.filename().and_then(parse_flush_name) else {
                continue;
            };
            // The flush committed even if its series file is damaged now: its samples
            // are in Parquet and no longer in the WAL. Only the labels of series that no
            // other series file names are lost.
            committed.insert((flush.segment, flush.time));
            flushed = flushed.max(flush);
            let rows = match store.get(&meta.location).await?.bytes().await {
                Ok(bytes) => parquet_block::read_series_file(bytes),
                Err(err) => Err(err.into()),
            };
            match rows {
                Ok(rows) => {
                    for row in rows {
                        catalog.add(row.id, row.labels);
                        let latest = catalog.latest.entry(row.id).or_insert((i64::MIN, 0.0));
                        if row.last_timestamp >= latest.0 {
                            *latest = (row.last_timestamp, row.last_value);
                        }
                    }
                }
                Err(err) => {
                    quarantine(&config.data_dir, &meta.location, &err.to_string());
                    stats.files_quarantined.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        let mut files = Vec::new();
        let mut opened = HashMap::new();
        let listed: Vec<_> = store
            .list(Some(&ObjectPath::from(SAMPLES_PREFIX)))
            .try_collect()
            .await?;
        for meta in listed {
            match parse_sample_path(&meta.location) {
                Some((block_start, block_end, flush))
                    if committed.contains(&(flush.segment, flush.time)) =>
                {
                    let local = config.data_dir.join("blocks").join(meta.location.as_ref());
                    match OpenedFile::open(&local, None) {
                        Ok(file) => {
                            opened.insert(meta.location.clone(), Arc::new(file));
                            files.push(SampleFile {
                                path: meta.location,
                                size: meta.size,
                                block_start,
                                block_end,
                            });
                        }
                        Err(err) => {
                            quarantine(&config.data_dir, &meta.location, &err.to_string());
                            stats.files_quarantined.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(_) => {
                    warn!(path = %meta.location, "removing parquet file of an interrupted flush");
                    store.delete(&meta.location).await?;
                }
                None => warn!(path = %meta.location, "ignoring unrecognised file"),
            }
        }

        let (wal, replay) = Wal::open(
            &config.data_dir.join("wal"),
            config.wal_segment_bytes,
            flushed,
        )?;
        stats
            .wal_corruptions
            .store(replay.corruptions as u64, Ordering::Relaxed);
        let checkpoint = replay.checkpoint;
        let mut head = Head::default();
        let mut replayed = 0usize;
        let mut segment = 0u64;
        let mut decoder = SegmentDecoder::default();
        // Samples of series declared in a damaged record, per segment.
        let mut unresolved = 0usize;
        // The latest time replayed so far: bounds a damaged record that cannot be read.
        let mut last_good = i64::MIN;
        let mut pending_damage: Vec<(u64, u64, u64)> = Vec::new();
        for item in replay.items {
            match item {
                ReplayItem::Segment(number) => {
                    if unresolved > 0 {
                        report_unresolved(segment, unresolved, &stats);
                        unresolved = 0;
                    }
                    segment = number;
                    decoder = SegmentDecoder::default();
                }
                ReplayItem::Record(payload) => {
                    let decoded = match decoder.decode(&payload, true) {
                        Ok(decoded) => decoded,
                        Err(err) => {
                            warn!(segment, error = %err, "wal record does not decode; skipping it");
                            stats.wal_corruptions.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    unresolved += decoded.unresolved;
                    let Some(newest) = decoded.samples.iter().map(|s| s.timestamp_ms).max() else {
                        continue;
                    };
                    let oldest = decoded.samples.iter().map(|s| s.timestamp_ms).min();
                    for (segment, offset, len) in pending_damage.drain(..) {
                        warn!(
                            segment,
                            offset,
                            bytes = len,
                            after_ms = last_good,
                            before_ms = oldest.unwrap_or(newest),
                            "unreadable wal record lost: its samples lie between these times"
                        );
                    }
                    last_good = last_good.max(newest);
                    wal.note_latest(segment, newest);
                    let samples: Vec<_> = decoded
                        .samples
                        .into_iter()
                        .filter(|sample| !checkpoint.covers(segment, sample.timestamp_ms))
                        .collect();
                    for sample in &samples {
                        // Records may be in another order than their timestamps: keep the max.
                        let latest = catalog
                            .latest
                            .entry(decoded.ids[sample.series_idx as usize])
                            .or_insert((i64::MIN, 0.0));
                        if sample.timestamp_ms >= latest.0 {
                            *latest = (sample.timestamp_ms, sample.value);
                        }
                    }
                    let labels: Vec<Arc<LabelSet>> = decoded
                        .ids
                        .iter()
                        .zip(decoded.labels)
                        .map(|(id, labels)| catalog.add(*id, labels))
                        .collect();
                    head.apply(&samples, &decoded.ids, &labels);
                    replayed += samples.len();
                }
                ReplayItem::Damaged {
                    segment,
                    offset,
                    len,
                    payload,
                } => {
                    let described = payload
                        .as_deref()
                        .and_then(|payload| decoder.decode(payload, false).ok());
                    match described {
                        Some(lost) => {
                            let (from, to) = lost
                                .samples
                                .iter()
                                .fold((i64::MAX, i64::MIN), |(lo, hi), s| {
                                    (lo.min(s.timestamp_ms), hi.max(s.timestamp_ms))
                                });
                            let names: Vec<String> =
                                lost.labels.iter().take(5).map(|l| l.to_string()).collect();
                            stats
                                .wal_lost_samples
                                .fetch_add(lost.samples.len() as u64, Ordering::Relaxed);
                            warn!(
                                segment,
                                offset,
                                samples = lost.samples.len() + lost.unresolved,
                                series = lost.ids.len(),
                                from_ms = from,
                                to_ms = to,
                                first_series = %names.join(", "),
                                "damaged wal record lost (its checksum failed; not applied)"
                            );
                        }
                        None => pending_damage.push((segment, offset, len)),
                    }
                }
            }
        }
        if unresolved > 0 {
            report_unresolved(segment, unresolved, &stats);
        }
        for (segment, offset, len) in pending_damage {
            warn!(
                segment,
                offset,
                bytes = len,
                after_ms = last_good,
                "unreadable wal record lost at the end of the log"
            );
        }
        wal.remove_flushed(checkpoint)?;
        info!(
            files = files.len(),
            series = catalog.series.len(),
            replayed_samples = replayed,
            "storage opened"
        );
        let cache_bytes = config.cache_bytes;
        let block_ms = config.block_period.as_millis().max(1) as i64;
        let logs = Arc::new(crate::logs::open_logs(
            &config.data_dir.join("blocks"),
            block_ms,
        )?);
        let spans = Arc::new(crate::spans::open_spans(
            &config.data_dir.join("blocks"),
            block_ms,
        )?);
        Ok(Arc::new(Storage {
            logs,
            spans,
            config,
            _lock: lock,
            store,
            wal,
            gate: tokio::sync::RwLock::new(()),
            head: RwLock::new(head),
            frozen: RwLock::new(Vec::new()),
            catalog: RwLock::new(catalog),
            selections: Mutex::new(HashMap::new()),
            appended: tokio::sync::watch::channel((0, i64::MIN)).0,
            taps: Mutex::new(Vec::new()),
            order: Mutex::new(()),
            files: RwLock::new(files),
            opened: Mutex::new(opened),
            chunks: ChunkCache::new(cache_bytes),
            flushed: Mutex::new(checkpoint),
            flush_lock: tokio::sync::Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
            unapplied: std::sync::atomic::AtomicUsize::new(0),
            stats,
        }))
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Validates, logs durably and applies a batch. Returns after the batch is in the WAL
    /// (fsynced) and in the head, so it is queryable the moment the caller acknowledges.
    ///
    /// Callers that may be cancelled (an HTTP handler whose client goes away) should run
    /// this in its own task: a cancelled append is durable but not yet in the head.
    /// Appends a batch whole or not at all and answers once it is durable.
    ///
    /// The append runs as its own task: if the caller goes away (a client that
    /// disconnects after sending its body), the append still completes — the WAL record,
    /// the head and the catalog never disagree — and the client's retry of the same
    /// samples is then a no-op that succeeds (equal timestamp and value are duplicates
    /// Prometheus accepts).
    pub async fn append(
        self: &Arc<Self>,
        batch: SampleBatch,
        mode: AppendMode,
    ) -> Result<AppendOutcome> {
        let storage = self.clone();
        tokio::spawn(async move { storage.append_whole(batch, mode).await })
            .await
            .unwrap_or_else(|err| Err(Error::Wal(format!("append task failed: {err}"))))
    }

    async fn append_whole(&self, batch: SampleBatch, mode: AppendMode) -> Result<AppendOutcome> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        self.config.limits.check_request(&batch)?;
        let ids: Vec<SeriesId> = batch.series.iter().map(LabelSet::series_id).collect();
        {
            // A series the catalog knows passed these checks when it was first written
            // (limits are fixed for the process): only new series are validated.
            let catalog = self.catalog.read();
            let mut new_series = 0usize;
            let mut new_per_name: HashMap<&str, usize> = HashMap::new();
            for (series, id) in batch.series.iter().zip(&ids) {
                if !catalog.series.contains_key(id) {
                    self.config.limits.check_series(series)?;
                    new_series += 1;
                    *new_per_name
                        .entry(series.metric_name().unwrap_or(""))
                        .or_default() += 1;
                }
            }
            self.check_series_limits(&catalog, new_series, &new_per_name)?;
        }
        let mut batch = batch;
        let mut attempts = 0;
        let (_gate, appended, outcome, reservations, receiver) = loop {
            let gate = self.gate.read().await;
            // Reserve timestamps and queue the WAL record under one lock, so the WAL
            // holds each series' samples in the order they were accepted.
            let order = self.order.lock();
            let (checked, outcome, reservations) = match self.check_order(batch, &ids, mode)? {
                Checked::Ready(checked, outcome, reservations) => (checked, outcome, reservations),
                Checked::Unsettled(returned) => {
                    // A resend racing the append it repeats: check again once that one
                    // is in the head (bounded; then it is out of order after all).
                    drop(order);
                    drop(gate);
                    attempts += 1;
                    if attempts > 100 {
                        return Err(self.first_out_of_order(&returned, &ids));
                    }
                    batch = returned;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if checked.samples.is_empty() {
                return Ok(outcome);
            }
            let appended = Arc::new(Appended {
                ids,
                series: checked.series,
                samples: checked.samples,
            });
            match self.wal.submit(appended.clone()) {
                Ok(receiver) => {
                    self.unapplied.fetch_add(1, Ordering::AcqRel);
                    drop(order);
                    break (gate, appended, outcome, reservations, receiver);
                }
                Err(err) => {
                    self.release(&reservations);
                    return Err(err);
                }
            }
        };
        if let Err(err) = Wal::wait(receiver).await {
            self.release(&reservations);
            self.unapplied.fetch_sub(1, Ordering::AcqRel);
            return Err(err);
        }
        let labels = {
            let mut catalog = self.catalog.write();
            intern(&mut catalog, &appended.ids, &appended.series)
        };
        self.head
            .write()
            .apply(&appended.samples, &appended.ids, &labels);
        self.unapplied.fetch_sub(1, Ordering::AcqRel);
        self.stats
            .samples_appended
            .fetch_add(appended.samples.len() as u64, Ordering::Relaxed);
        let latest = appended.samples.iter().map(|s| s.timestamp_ms).max();
        {
            let mut taps = self.taps.lock();
            taps.retain(|tap| tap.send(appended.clone()).is_ok());
        }
        if let Some(latest) = latest {
            self.appended.send_modify(|(count, watermark)| {
                *count += 1;
                *watermark = (*watermark).max(latest);
            });
        }
        Ok(outcome)
    }

    /// Appends log records whole or not at all and answers once they are durable. Times
    /// are bounded as samples' are: later than the clock plus `limits.max_future_skew`,
    /// older than retention, or beyond ±2^52 ms refuses the batch.
    pub async fn append_logs(&self, mut records: Vec<LogRecord>) -> Result<usize> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let window = self.time_window();
        let limits = &self.config.limits;
        let mut trimmed = 0;
        for record in &mut records {
            window.check(record.timestamp_ms)?;
            trimmed += limits.fit_attributes(&mut record.attributes);
            trimmed += limits.fit_attributes(&mut record.stream);
            if crate::limits::truncate_text(&mut record.body, limits.max_log_body_bytes) {
                trimmed += 1;
            }
        }
        self.logs
            .attributes_trimmed
            .fetch_add(trimmed, Ordering::Relaxed);
        if records.is_empty() {
            return Ok(0);
        }
        let min = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
        let max = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
        let batch = crate::logs::to_batch(&records)?;
        self.logs.append_batch(batch, min, max).await
    }

    /// A log record's time: not later than the clock plus `limits.max_future_skew`, not
    /// older than retention, within ±2^52 ms.
    pub fn check_log_time(&self, timestamp_ms: i64) -> Result<()> {
        self.time_window().check(timestamp_ms)
    }

    /// The times a write may carry now: not older than retention, not later than the
    /// clock plus `limits.max_future_skew`, within ±2^52 ms.
    fn time_window(&self) -> TimeWindow {
        let now = now_ms();
        let skew_ms = self.config.limits.max_future_skew.as_millis() as i64;
        TimeWindow {
            min_valid: (now - self.config.retention.as_millis() as i64).max(-MAX_TIMESTAMP_MS),
            max_valid: now.saturating_add(skew_ms).min(MAX_TIMESTAMP_MS),
            skew_ms,
        }
    }

    /// Appends spans whole or not at all and answers once they are durable; start times
    /// are bounded as log records' are.
    pub async fn append_spans(&self, mut spans: Vec<crate::spans::SpanRecord>) -> Result<usize> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if spans.is_empty() {
            return Ok(0);
        }
        let window = self.time_window();
        let limits = &self.config.limits;
        let mut trimmed = 0;
        for span in &mut spans {
            window.check(span.start_ns.div_euclid(1_000_000))?;
            trimmed += limits.fit_attributes(&mut span.attributes);
            trimmed += limits.fit_attributes(&mut span.resource);
            if crate::limits::truncate_text(&mut span.events, limits.max_attribute_value_bytes) {
                // Cut JSON is no longer JSON: keep the fact, not a broken document.
                span.events = "[]".into();
                trimmed += 1;
            }
            for text in [&mut span.name, &mut span.status_message] {
                if crate::limits::truncate_text(text, limits.max_attribute_value_bytes) {
                    trimmed += 1;
                }
            }
        }
        self.spans
            .attributes_trimmed
            .fetch_add(trimmed, Ordering::Relaxed);
        let min = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let max = spans.iter().map(|s| s.start_ns).max().unwrap_or(0);
        let batch = crate::spans::to_batch(&spans)?;
        self.spans
            .append_batch(batch, min.div_euclid(1_000_000), max.div_euclid(1_000_000))
            .await
    }

    /// The log store (its counters).
    pub fn logs(&self) -> &Arc<LogStore> {
        &self.logs
    }

    /// The span store (its counters).
    pub fn spans(&self) -> &Arc<BatchFiles> {
        &self.spans
    }

    /// Merges the small files of the log and span stores (`batch_files.rs`); returns how
    /// many files were replaced.
    pub async fn compact_records(&self) -> Result<usize> {
        Ok(self.logs.compact().await? + self.spans.compact().await?)
    }

    /// The out-of-order error for the first sample of `batch` that is behind its
    /// series' latest and not stored.
    fn first_out_of_order(&self, batch: &SampleBatch, ids: &[SeriesId]) -> Error {
        let catalog = self.catalog.read();
        let head = self.head.read();
        for sample in &batch.samples {
            let id = ids[sample.series_idx as usize];
            if let Some((latest, _)) = catalog.latest.get(&id) {
                if sample.timestamp_ms < *latest
                    && !head.contains(id, sample.timestamp_ms, sample.value)
                {
                    return Error::OutOfOrder {
                        series: batch.series[sample.series_idx as usize].to_string(),
                        timestamp: sample.timestamp_ms,
                        latest: *latest,
                    };
                }
            }
        }
        Error::Wal("a resent batch did not settle".into())
    }

    /// The catalog's series bounds: new series beyond `limits.max_series` in total or
    /// `limits.max_series_per_metric` for one name refuse the whole batch. Concurrent
    /// appends check against the same snapshot, so the bound may be passed by at most
    /// one batch per concurrent writer.
    fn check_series_limits(
        &self,
        catalog: &Catalog,
        new_series: usize,
        new_per_name: &HashMap<&str, usize>,
    ) -> Result<()> {
        let limits = &self.config.limits;
        if new_series == 0 {
            return Ok(());
        }
        if limits.max_series > 0 && catalog.series.len() + new_series > limits.max_series {
            self.stats
                .series_limit_rejections
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::SeriesLimit(format!(
                "the request adds {new_series} series to {} known, more than the limit of {} (limits.max_series)",
                catalog.series.len(),
                limits.max_series
            )));
        }
        if limits.max_series_per_metric > 0 {
            for (name, added) in new_per_name {
                let known = catalog.by_name.get(*name).map_or(0, Vec::len);
                if known + added > limits.max_series_per_metric {
                    self.stats
                        .series_limit_rejections
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::SeriesLimit(format!(
                        "metric {name:?} would have {} series, more than the limit of {} (limits.max_series_per_metric)",
                        known + added,
                        limits.max_series_per_metric
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every durable append's samples from now on, as they reach the head. Concurrent
    /// appends may arrive in either order, so a consumer must accept a series' samples
    /// out of time order. The receiver is dropped to unsubscribe.
    pub fn tap_appends(&self) -> crossbeam_channel::Receiver<Arc<Appended>> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        self.taps.lock().push(sender);
        receiver
    }

    /// Notified after every durable append: (number of appends, latest event time).
    pub fn watch_appends(&self) -> tokio::sync::watch::Receiver<(u64, i64)> {
        self.appended.subscribe()
    }

    /// Undoes the timestamp reservations of a batch that did not reach the WAL, unless a
    /// later batch has moved a series on since.
    fn release(&self, reservations: &[Reservation]) {
        let mut catalog = self.catalog.write();
        for reservation in reservations {
            if catalog.latest.get(&reservation.id).map(|l| l.0) == Some(reservation.reserved) {
                match reservation.previous {
                    Some(previous) => catalog.latest.insert(reservation.id, previous),
                    None => catalog.latest.remove(&reservation.id),
                };
            }
        }
    }

    /// The out-of-order and duplicate checks of Prometheus' head appender
    /// (`tsdb/head_append.go`): a sample older than the series' latest is out of order,
    /// one at the same time with another value is a duplicate, and one at the same time
    /// with the same value is silently ignored. Accepted timestamps are reserved at once;
    /// the caller holds the `order` lock.
    fn check_order(
        &self,
        batch: SampleBatch,
        ids: &[SeriesId],
        mode: AppendMode,
    ) -> Result<Checked> {
        let TimeWindow {
            min_valid,
            max_valid,
            skew_ms,
        } = self.time_window();
        let catalog = self.catalog.read();
        let mut reserved: IdMap<(i64, f64)> = IdMap::default();
        let mut outcome = AppendOutcome::default();
        let mut keep = Vec::with_capacity(batch.samples.len());
        let mut behind = Vec::new();
        for sample in &batch.samples {
            let id = ids[sample.series_idx as usize];
            let latest = reserved
                .get(&id)
                .or_else(|| catalog.latest.get(&id))
                .copied();
            let series = || batch.series[sample.series_idx as usize].to_string();
            let verdict = if sample.timestamp_ms > max_valid {
                outcome.too_far_in_future += 1;
                Some(Error::TooFarInFuture {
                    series: series(),
                    timestamp: sample.timestamp_ms,
                    skew_ms,
                })
            } else if sample.timestamp_ms < min_valid {
                outcome.out_of_bounds += 1;
                Some(Error::OutOfBounds {
                    timestamp: sample.timestamp_ms,
                })
            } else {
                match latest {
                    Some((ts, _)) if sample.timestamp_ms < ts => {
                        // Decided below, against the head: a resend of a sample
                        // already stored is a no-op, anything else is out of order.
                        behind.push((id, sample.series_idx, sample.timestamp_ms, sample.value, ts));
                        continue;
                    }
                    Some((ts, value))
                        if sample.timestamp_ms == ts
                            && value.to_bits() == sample.value.to_bits() =>
                    {
                        continue;
                    }
                    Some((ts, _)) if sample.timestamp_ms == ts => {
                        outcome.duplicates += 1;
                        Some(Error::DuplicateTimestamp {
                            series: series(),
                            timestamp: ts,
                        })
                    }
                    _ => None,
                }
            };
            match verdict {
                Some(err) if mode == AppendMode::Strict => return Err(err),
                Some(_) => {}
                None => {
                    reserved.insert(id, (sample.timestamp_ms, sample.value));
                    keep.push(*sample);
                }
            }
        }
        drop(catalog);
        if !behind.is_empty() {
            // A client that retries a request it never saw answered (it disconnected, or
            // the answer was lost) resends samples that are already stored: they are
            // accepted without being stored again, so the retry succeeds and nothing is
            // doubled. Samples older than the series' latest that are not stored are
            // out of order, as in Prometheus.
            let head = self.head.read();
            for (id, series_idx, timestamp, value, latest) in behind {
                if head.contains(id, timestamp, value) {
                    continue;
                }
                if mode == AppendMode::Strict && self.unapplied.load(Ordering::Acquire) > 0 {
                    // Perhaps a resend of an append still on its way to the head.
                    drop(head);
                    return Ok(Checked::Unsettled(batch));
                }
                outcome.out_of_order += 1;
                if mode == AppendMode::Strict {
                    return Err(Error::OutOfOrder {
                        series: batch.series[series_idx as usize].to_string(),
                        timestamp,
                        latest,
                    });
                }
            }
        }
        let mut catalog = self.catalog.write();
        let mut reservations = Vec::with_capacity(reserved.len());
        for (id, latest) in reserved {
            let previous = catalog.latest.insert(id, latest);
            reservations.push(Reservation {
                id,
                reserved: latest.0,
                previous,
            });
        }
        outcome.accepted = keep.len();
        Ok(Checked::Ready(
            SampleBatch {
                series: batch.series,
                samples: keep,
            },
            outcome,
            reservations,
        ))
    }

    /// The time before which samples leave the head: a block boundary at least
    /// `head_window` before now (after everything when the window is zero), never earlier
    /// than the last flush's. `None` when the head holds nothing older.
    fn flush_cutoff(&self, head: &Head) -> Option<i64> {
        let min = head.min_timestamp?;
        let block_ms = self.config.block_period.as_millis().max(1) as i64;
        let window = self
            .config
            .head_window
            .unwrap_or(self.config.block_period / 2);
        let now = now_ms();
        let computed = if window.is_zero() {
            now.saturating_add(1)
        } else {
            now.saturating_sub(window.as_millis() as i64)
                .div_euclid(block_ms)
                .saturating_mul(block_ms)
        };
        let cutoff = computed.max(self.flushed.lock().time);
        (min < cutoff).then_some(cutoff)
    }

    /// Whether the head holds samples older than its window: time to flush.
    pub fn flush_due(&self) -> bool {
        self.flush_cutoff(&self.head.read()).is_some()
    }

    /// Moves the samples older than the head window out of the head (cutting the WAL
    /// there), then writes every such frozen part to Parquet, oldest first (so a flush
    /// that failed earlier is retried), and only then checkpoints the WAL. Frozen parts
    /// stay queryable until their files are published. Returns the samples written.
    pub async fn flush(&self) -> Result<usize> {
        let _flush = self.flush_lock.lock().await;
        let started = Instant::now();
        {
            let _gate = self.gate.write().await;
            let cutoff = self.flush_cutoff(&self.head.read());
            if let Some(cutoff) = cutoff {
                let segment = self.wal.cut().await?;
                let mut head = self.head.write();
                let old = head.split_before(cutoff);
                let checkpoint = Checkpoint {
                    segment,
                    time: cutoff,
                };
                self.frozen.write().push(FrozenHead {
                    head: Arc::new(old),
                    checkpoint,
                });
            }
        }
        let pending: Vec<FrozenHead> = self.frozen.read().clone();
        let mut written = 0;
        for frozen in pending {
            let files = self.write_frozen(&frozen).await?;
            {
                let mut frozen_heads = self.frozen.write();
                self.files.write().extend(files);
                frozen_heads.retain(|other| !Arc::ptr_eq(&other.head, &frozen.head));
            }
            written += frozen.head.n_samples;
            self.wal.checkpoint(frozen.checkpoint)?;
            let mut flushed = self.flushed.lock();
            *flushed = flushed.max(frozen.checkpoint);
        }
        if written > 0 {
            let elapsed = started.elapsed();
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
            self.stats
                .flush_duration_micros
                .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
            info!(
                samples = written,
                elapsed_ms = elapsed.as_millis() as u64,
                "head flushed to parquet"
            );
        }
        Ok(written)
    }

    /// Writes one frozen part: a sample file per block it touches, then its series file,
    /// which commits the flush. Paths derive from the checkpoint, so a retry overwrites.
    async fn write_frozen(&self, frozen: &FrozenHead) -> Result<Vec<SampleFile>> {
        let block_ms = self.config.block_period.as_millis().max(1) as i64;
        let mut new_files = Vec::new();
        // Each new file's series index, parallel to `new_files`.
        let mut indexes: Vec<SeriesIndex> = Vec::new();
        for (block_start, batch, index) in frozen.head.blocks(block_ms) {
            let block_end = block_start.saturating_add(block_ms);
            let bytes = parquet_block::encode(&batch)?;
            let size = bytes.len() as u64;
            let path = sample_path(block_start, block_end, frozen.checkpoint);
            self.store.put(&path, PutPayload::from(bytes)).await?;
            self.stats
                .parquet_bytes_written
                .fetch_add(size, Ordering::Relaxed);
            indexes.push(index);
            new_files.push(SampleFile {
                path,
                size,
                block_start,
                block_end,
            });
        }
        let root = self.config.data_dir.join("blocks");
        let written: Vec<&ObjectPath> = new_files.iter().map(|file| &file.path).collect();
        sync_paths(&root, &written)?;
        let rows: Vec<SeriesRow> = frozen
            .head
            .series
            .iter()
            .filter_map(|(&id, series)| {
                Some(SeriesRow {
                    id,
                    labels: series.labels.clone(),
                    last_timestamp: *series.timestamps.last()?,
                    last_value: *series.values.last()?,
                })
            })
            .collect();
        let series_bytes = parquet_block::encode(&parquet_block::series_file_batch(&rows)?)?;
        let series_file = series_path(frozen.checkpoint);
        self.store
            .put(&series_file, PutPayload::from(series_bytes))
            .await?;
        sync_paths(&root, &[&series_file])?;
        // The flush knows each series' rows: readers need not rebuild the index. And it
        // holds the samples it just wrote, decoded: they go to the read cache, so a flush
        // does not make the recent past slower to query (the cache's budget bounds this).
        let mut opened = self.opened.lock();
        for (file, index) in new_files.iter().zip(indexes) {
            let local = root.join(file.path.as_ref());
            let warm: Vec<(SeriesId, Chunk)> = index
                .keys()
                .filter_map(|id| {
                    let series = frozen.head.series.get(id)?;
                    let from = series.timestamps.partition_point(|&t| t < file.block_start);
                    let to = series.timestamps.partition_point(|&t| t < file.block_end);
                    Some((
                        *id,
                        Chunk {
                            timestamps: series.timestamps[from..to].to_vec(),
                            values: series.values[from..to].to_vec(),
                        },
                    ))
                })
                .collect();
            match OpenedFile::open(&local, Some(index)) {
                Ok(opened_file) => {
                    for (id, chunk) in warm {
                        self.chunks.insert(opened_file.number, id, Arc::new(chunk));
                    }
                    opened.insert(file.path.clone(), Arc::new(opened_file));
                }
                Err(err) => {
                    warn!(file = %local.display(), error = %err, "cannot reopen a written file")
                }
            }
        }
        Ok(new_files)
    }

    /// Deletes partitions that ended before now minus the retention period.
    pub async fn apply_retention(&self) -> Result<usize> {
        let cutoff = now_ms() - self.config.retention.as_millis() as i64;
        self.logs.apply_retention(cutoff).await?;
        self.spans.apply_retention(cutoff).await?;
        let expired: Vec<SampleFile> = {
            let mut files = self.files.write();
            let (expired, kept) = files.drain(..).partition(|file| file.block_end <= cutoff);
            *files = kept;
            expired
        };
        for file in &expired {
            if let Some(opened) = self.opened.lock().remove(&file.path) {
                self.chunks.forget_file(opened.number);
            }
            if let Err(err) = self.store.delete(&file.path).await {
                warn!(path = %file.path, error = %err, "cannot delete expired parquet file");
            }
        }
        if !expired.is_empty() {
            self.stats
                .partitions_deleted
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            info!(
                files = expired.len(),
                "retention removed expired partitions"
            );
        }
        Ok(expired.len())
    }

    /// Stops accepting writes, flushes what is older than the head window, and closes the
    /// WAL (the recent samples are replayed from it at the next start).
    pub async fn shutdown(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let flushed = self.flush().await;
        self.wal.close();
        flushed.map(|_| ())
    }

    /// What a query over `[start, end]` reads: in-memory samples (the head and heads
    /// being flushed) and the Parquet files of overlapping partitions, taken under the
    /// same locks so that a flush publishing its files is seen either before or after.
    pub fn snapshot(&self, start: i64, end: i64) -> (Vec<RecordBatch>, Vec<SampleFile>) {
        let head = self.head.read();
        let frozen = self.frozen.read();
        let files = self.files.read();
        let mut batches = vec![head.samples_in_range(start, end)];
        for pending in frozen.iter() {
            batches.push(pending.head.samples_in_range(start, end));
        }
        batches.retain(|batch| batch.num_rows() > 0);
        let files = files
            .iter()
            .filter(|file| file.block_start <= end && file.block_end > start)
            .cloned()
            .collect();
        (batches, files)
    }

    /// The samples of `ids` in `(start, end]`, from the head, the parts being flushed and
    /// the sample files of the overlapping partitions (read by series through their
    /// index, decoded series cached). Each series' samples come sorted by time; series
    /// without samples in the range are left out. Blocking (file reads): call it from a
    /// blocking thread.
    pub fn points(&self, ids: &[SeriesId], start: i64, end: i64) -> Result<IdMap<SeriesPoints>> {
        let mut out: IdMap<SeriesPoints> = IdMap::default();
        let files: Vec<SampleFile> = {
            let head = self.head.read();
            let frozen = self.frozen.read();
            let files = self.files.read();
            for source in
                std::iter::once(&*head).chain(frozen.iter().map(|pending| pending.head.as_ref()))
            {
                for id in ids {
                    let Some(series) = source.series.get(id) else {
                        continue;
                    };
                    let from = series.timestamps.partition_point(|&ts| ts <= start);
                    let to = series.timestamps.partition_point(|&ts| ts <= end);
                    if from < to {
                        let entry = out.entry(*id).or_default();
                        entry.0.extend_from_slice(&series.timestamps[from..to]);
                        entry.1.extend_from_slice(&series.values[from..to]);
                    }
                }
            }
            files
                .iter()
                .filter(|file| file.block_start <= end && file.block_end > start)
                .cloned()
                .collect()
        };
        for file in &files {
            let opened = self.opened_file(file)?;
            let index = opened.index()?;
            let mut missing = Vec::new();
            for id in ids {
                let Some(range) = index.get(id) else {
                    continue;
                };
                match self.chunks.get(opened.number, *id) {
                    Some(chunk) => extend(&mut out, *id, &chunk, start, end),
                    None => missing.push((*id, *range)),
                }
            }
            for (id, chunk) in opened.read(&mut missing)? {
                extend(&mut out, id, &chunk, start, end);
                self.chunks.insert(opened.number, id, Arc::new(chunk));
            }
        }
        {
            // Several sources may hold one series: order by time where they interleave.
            for (timestamps, values) in out.values_mut() {
                if timestamps.windows(2).all(|pair| pair[0] < pair[1]) {
                    continue;
                }
                let mut pairs: Vec<(i64, f64)> = timestamps
                    .iter()
                    .copied()
                    .zip(values.iter().copied())
                    .collect();
                pairs.sort_by_key(|pair| pair.0);
                pairs.dedup_by_key(|pair| pair.0);
                *timestamps = pairs.iter().map(|pair| pair.0).collect();
                *values = pairs.iter().map(|pair| pair.1).collect();
            }
        }
        Ok(out)
    }

    /// A sample file with its footer and series index, opened once.
    fn opened_file(&self, file: &SampleFile) -> Result<Arc<OpenedFile>> {
        if let Some(opened) = self.opened.lock().get(&file.path) {
            return Ok(opened.clone());
        }
        let local = self.config.data_dir.join("blocks").join(file.path.as_ref());
        let opened = Arc::new(OpenedFile::open(&local, None)?);
        self.opened.lock().insert(file.path.clone(), opened.clone());
        Ok(opened)
    }

    /// Bytes of decoded series held by the cache.
    pub fn cache_bytes(&self) -> usize {
        self.chunks.bytes()
    }

    /// Every known series, as a `series` table batch.
    pub fn series_batch(&self) -> Result<RecordBatch> {
        let catalog = self.catalog.read();
        let mut rows: Vec<(SeriesId, &LabelSet)> = catalog
            .series
            .iter()
            .map(|(&id, labels)| (id, labels.as_ref()))
            .collect();
        rows.sort_unstable_by_key(|row| row.0);
        parquet_block::series_table_batch(rows.into_iter())
    }

    /// Every series whose labels satisfy `predicate`, sorted by labels, as the selector
    /// `key` selects them. Repeated selectors (dashboards refresh the same queries) are
    /// answered from a cache until a new series appears.
    pub fn select_series(
        &self,
        key: &str,
        name: Option<&str>,
        predicate: impl Fn(&LabelSet) -> bool,
    ) -> SortedSelection {
        let generation = self.catalog.read().series.len();
        if let Some((cached_generation, selection)) = self.selections.lock().get(key) {
            if *cached_generation == generation {
                return selection.clone();
            }
        }
        let catalog = self.catalog.read();
        let generation = catalog.series.len();
        // A metric name narrows the candidates to its postings; otherwise every series.
        let mut selected: Vec<(SeriesId, Arc<LabelSet>)> = match name {
            Some(name) => catalog
                .by_name
                .get(name)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| Some((*id, catalog.series.get(id)?.clone())))
                        .filter(|(_, labels)| predicate(labels))
                        .collect()
                })
                .unwrap_or_default(),
            None => catalog
                .series
                .iter()
                .filter(|(_, labels)| predicate(labels))
                .map(|(id, labels)| (*id, labels.clone()))
                .collect(),
        };
        drop(catalog);
        selected.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let selection = Arc::new(selected);
        let mut selections = self.selections.lock();
        if selections.len() >= 1024 {
            selections.clear();
        }
        selections.insert(key.to_string(), (generation, selection.clone()));
        selection
    }

    /// Every known series whose labels satisfy `predicate`.
    pub fn series_matching(
        &self,
        predicate: impl Fn(&LabelSet) -> bool,
    ) -> Vec<(SeriesId, Arc<LabelSet>)> {
        self.catalog
            .read()
            .series
            .iter()
            .filter(|(_, labels)| predicate(labels))
            .map(|(id, labels)| (*id, labels.clone()))
            .collect()
    }

    /// The newest accepted sample time of a series.
    pub fn latest_timestamp(&self, id: SeriesId) -> Option<i64> {
        self.catalog.read().latest.get(&id).map(|latest| latest.0)
    }

    pub fn n_series(&self) -> usize {
        self.catalog.read().series.len()
    }

    pub fn head_samples(&self) -> usize {
        self.head.read().n_samples
    }

    pub fn wal_bytes_written(&self) -> u64 {
        self.wal.stats.bytes_written.load(Ordering::Relaxed)
    }

    pub fn wal_disk_bytes(&self) -> u64 {
        self.wal.disk_bytes()
    }
}

/// Interns a batch's series into the catalog: shared label sets, per batch index.
fn intern(catalog: &mut Catalog, ids: &[SeriesId], series: &[LabelSet]) -> Vec<Arc<LabelSet>> {
    ids.iter()
        .zip(series)
        .map(|(id, labels)| match catalog.series.get(id) {
            Some(known) => known.clone(),
            None => catalog.add(*id, Arc::new(labels.clone())),
        })
        .collect()
}

impl Catalog {
    /// Adds a series (if new) to the catalog and the name postings; returns the shared
    /// labels the catalog keeps.
    fn add(&mut self, id: SeriesId, labels: Arc<LabelSet>) -> Arc<LabelSet> {
        if let Some(known) = self.series.get(&id) {
            return known.clone();
        }
        self.by_name
            .entry(labels.metric_name().unwrap_or_default().to_string())
            .or_default()
            .push(id);
        self.series.insert(id, labels.clone());
        labels
    }
}

/// Appends the part of a decoded chunk inside `(start, end]` to a series' points.
fn extend(out: &mut IdMap<SeriesPoints>, id: SeriesId, chunk: &Chunk, start: i64, end: i64) {
    let (timestamps, values) = chunk.range(start, end);
    if timestamps.is_empty() {
        return;
    }
    let entry = out.entry(id).or_default();
    entry.0.extend_from_slice(timestamps);
    entry.1.extend_from_slice(values);
}

fn report_unresolved(segment: u64, samples: usize, stats: &StorageStats) {
    stats
        .wal_lost_samples
        .fetch_add(samples as u64, Ordering::Relaxed);
    warn!(
        segment,
        samples, "wal samples lost: their series was declared in a damaged record of this segment"
    );
}

/// fsyncs the given files and the directories that name them, up to `root`.
/// `LocalFileSystem` writes through a temporary file and a rename, without fsync.
fn sync_paths(root: &std::path::Path, paths: &[&ObjectPath]) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for path in paths {
        let file = root.join(path.as_ref());
        std::fs::File::open(&file)?.sync_all()?;
        let mut dir = file.parent();
        while let Some(current) = dir {
            dirs.insert(current.to_path_buf());
            if current == root {
                break;
            }
            dir = current.parent();
        }
    }
    for dir in dirs {
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(start: i64, n: usize) -> SampleBatch {
        let mut batch = SampleBatch::default();
        let idx = batch.push_series(LabelSet::from_pairs([("__name__", "m"), ("a", "1")]).unwrap());
        for i in 0..n {
            batch.push_sample(idx, start + i as i64 * 1000, i as f64);
        }
        batch
    }

    fn rows(storage: &Storage) -> usize {
        let (memory, files) = storage.snapshot(i64::MIN, i64::MAX);
        assert!(files.len() <= 1, "{files:?}");
        memory.iter().map(RecordBatch::num_rows).sum::<usize>() + rows_in_files(storage)
    }

    #[tokio::test]
    async fn crash_between_parquet_and_checkpoint_neither_loses_nor_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.head_window = Some(Duration::ZERO);
        let start = now_ms() - 60_000;
        let wal_copy = dir.path().join("wal-copy");
        {
            let storage = Storage::open(config.clone()).await.unwrap();
            storage
                .append(batch(start, 10), AppendMode::Strict)
                .await
                .unwrap();
            // Keep the WAL as it was before the flush deletes it.
            std::fs::create_dir_all(&wal_copy).unwrap();
            for entry in std::fs::read_dir(dir.path().join("wal")).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), wal_copy.join(entry.file_name())).unwrap();
            }
            assert_eq!(storage.flush().await.unwrap(), 10);
            assert_eq!(rows(&storage), 10);
        }
        // As if the process died after the Parquet files, before the WAL checkpoint.
        std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
        std::fs::rename(&wal_copy, dir.path().join("wal")).unwrap();
        // And a sample file of a flush that never committed its series file.
        let stray = dir.path().join("blocks/metrics/block=0_7200000");
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join("00000099.parquet"), b"partial").unwrap();
        let storage = Storage::open(config).await.unwrap();
        assert_eq!(rows(&storage), 10);
        assert!(!stray.join("00000099.parquet").exists());
        // The latest timestamp survived: an older sample is out of order.
        let err = storage
            .append(batch(start, 1), AppendMode::Strict)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfOrder { .. } | Error::DuplicateTimestamp { .. }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn failed_wal_write_releases_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig::new(dir.path())).await.unwrap();
        let start = now_ms() - 60_000;
        storage.wal.close();
        assert!(storage
            .append(batch(start, 3), AppendMode::Strict)
            .await
            .is_err());
        let catalog = storage.catalog.read();
        assert!(
            catalog.latest.is_empty(),
            "reservation kept after a failed append"
        );
    }

    fn series(idx: usize) -> LabelSet {
        LabelSet::from_pairs([("__name__", "m"), ("pod", &format!("p{idx}"))]).unwrap()
    }

    /// Appends one sample per series per minute over `[from, to)`, in time order.
    async fn fill(storage: &Arc<Storage>, n: usize, from: i64, to: i64) -> usize {
        let mut count = 0;
        let mut ts = from;
        while ts < to {
            let mut batch = SampleBatch::default();
            for idx in 0..n {
                let series_idx = batch.push_series(series(idx));
                batch.push_sample(series_idx, ts, (ts / 1000 + idx as i64) as f64);
            }
            count += storage
                .append(batch, AppendMode::Strict)
                .await
                .unwrap()
                .accepted;
            ts += 60_000;
        }
        count
    }

    fn all_points(storage: &Storage, n: usize) -> IdMap<SeriesPoints> {
        let ids: Vec<SeriesId> = (0..n).map(|idx| series(idx).series_id()).collect();
        storage.points(&ids, i64::MIN, i64::MAX).unwrap()
    }

    #[tokio::test]
    async fn recent_window_stays_in_memory_and_reads_agree_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::new(dir.path());
        let now = now_ms();
        let written;
        let before;
        {
            let storage = Storage::open(config.clone()).await.unwrap();
            written = fill(&storage, 20, now - 5 * 3600 * 1000, now).await;
            before = all_points(&storage, 20);
            assert!(storage.flush_due());
            let flushed = storage.flush().await.unwrap();
            // Everything older than the block boundary at least an hour back left the
            // head; at least the last hour stayed.
            let cutoff = (now - 3600 * 1000).div_euclid(7200 * 1000) * 7200 * 1000;
            let expected_old: usize = before
                .values()
                .map(|(ts, _)| ts.iter().filter(|&&t| t < cutoff).count())
                .sum();
            assert_eq!(flushed, expected_old);
            assert_eq!(storage.head_samples(), written - flushed);
            assert!(storage.head.read().min_timestamp.unwrap() >= cutoff);
            assert!(!storage.flush_due());
            // Reads through the files (cold, then cached) equal the reads before.
            assert_eq!(all_points(&storage, 20), before);
            assert!(storage.cache_bytes() > 0);
            assert_eq!(all_points(&storage, 20), before);
            let ids = [series(3).series_id()];
            let window = storage
                .points(&ids, now - 4 * 3600 * 1000, now - 3 * 3600 * 1000)
                .unwrap();
            assert_eq!(window[&ids[0]].0.len(), 60);
            storage.shutdown().await.unwrap();
        }
        // The recent hour comes back from the WAL, the rest from Parquet: no loss, no
        // duplicate; the WAL kept only what the head holds.
        let storage = Storage::open(config).await.unwrap();
        assert_eq!(all_points(&storage, 20), before);
        assert_eq!(storage.head_samples() + rows_in_files(&storage), written);
    }

    fn rows_in_files(storage: &Storage) -> usize {
        let (_, files) = storage.snapshot(i64::MIN, i64::MAX);
        files
            .iter()
            .map(|file| {
                let bytes = std::fs::read(
                    storage
                        .config
                        .data_dir
                        .join("blocks")
                        .join(file.path.as_ref()),
                )
                .unwrap();
                parquet_block::decode(bytes.into())
                    .unwrap()
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum::<usize>()
            })
            .sum()
    }

    #[tokio::test]
    async fn a_truncated_parquet_file_is_quarantined_and_the_rest_serves() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.head_window = Some(Duration::ZERO);
        let now = now_ms();
        {
            let storage = Storage::open(config.clone()).await.unwrap();
            fill(&storage, 5, now - 5 * 3600 * 1000, now).await;
            storage.flush().await.unwrap();
        }
        let (mut victims, mut others) = (Vec::new(), 0);
        for entry in std::fs::read_dir(dir.path().join("blocks/metrics")).unwrap() {
            let block = entry.unwrap().path();
            for file in std::fs::read_dir(&block).unwrap() {
                victims.push(file.unwrap().path());
            }
        }
        victims.sort();
        let victim = victims.remove(0);
        others += victims.len();
        assert!(others >= 2);
        let len = std::fs::metadata(&victim).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let storage = Storage::open(config).await.unwrap();
        assert_eq!(storage.stats.files_quarantined.load(Ordering::Relaxed), 1);
        assert!(!victim.exists());
        let relative = victim.strip_prefix(dir.path().join("blocks")).unwrap();
        assert!(dir.path().join("quarantine").join(relative).exists());
        assert_eq!(storage.snapshot(i64::MIN, i64::MAX).1.len(), others);
        let points = all_points(&storage, 5);
        assert_eq!(points.len(), 5);
        assert!(points.values().all(|(ts, _)| !ts.is_empty()));
    }

    #[tokio::test]
    async fn a_second_storage_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Storage::open(StorageConfig::new(dir.path())).await.unwrap();
        let err = Storage::open(StorageConfig::new(dir.path()))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
    }
}

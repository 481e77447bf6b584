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

use crate::codec;
use crate::error::{Error, Result};
use crate::head::Head;
use crate::labels::{LabelSet, SeriesId};
use crate::limits::Limits;
use crate::parquet_block::{self, SeriesRow};
use crate::record::SampleBatch;
use crate::wal::Wal;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// Width of a Parquet partition, and the head span that triggers a flush.
    pub block_period: Duration,
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

/// One durable append as the taps see it: series (with their ids) and samples.
#[derive(Debug)]
pub struct Appended {
    pub ids: Vec<SeriesId>,
    pub series: Vec<LabelSet>,
    pub samples: Vec<crate::record::BatchSample>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub accepted: usize,
    pub out_of_order: usize,
    pub duplicates: usize,
    pub out_of_bounds: usize,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub samples_appended: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_duration_micros: AtomicU64,
    pub parquet_bytes_written: AtomicU64,
    pub wal_corruptions: AtomicU64,
    pub partitions_deleted: AtomicU64,
}

/// A Parquet file of the `samples` table, with the time range of its partition.
#[derive(Debug, Clone)]
pub struct SampleFile {
    pub path: ObjectPath,
    pub size: u64,
    pub block_start: i64,
    pub block_end: i64,
}

#[derive(Clone)]
struct FrozenHead {
    head: Arc<Head>,
    cut_segment: u64,
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
    series: HashMap<SeriesId, Arc<LabelSet>>,
    /// Latest accepted sample per series: the out-of-order check.
    latest: HashMap<SeriesId, (i64, f64)>,
}

pub struct Storage {
    config: StorageConfig,
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
    flush_lock: tokio::sync::Mutex<()>,
    last_flush: Mutex<Instant>,
    closed: std::sync::atomic::AtomicBool,
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

/// `metrics/block=<start>_<end>/<segment>.parquet` → (start, end, segment).
fn parse_sample_path(path: &ObjectPath) -> Option<(i64, i64, u64)> {
    let mut parts = path.parts();
    parts.next()?;
    let block = parts.next()?;
    let (start, end) = block.as_ref().strip_prefix("block=")?.split_once('_')?;
    let file = parts.next()?;
    let segment = file.as_ref().strip_suffix(".parquet")?.parse().ok()?;
    Some((start.parse().ok()?, end.parse().ok()?, segment))
}

/// `series/<segment>.parquet` → segment.
fn parse_series_path(path: &ObjectPath) -> Option<u64> {
    path.filename()?.strip_suffix(".parquet")?.parse().ok()
}

fn sample_path(block_start: i64, block_end: i64, segment: u64) -> ObjectPath {
    ObjectPath::from(format!(
        "{SAMPLES_PREFIX}/block={block_start}_{block_end}/{segment:08}.parquet"
    ))
}

fn series_path(segment: u64) -> ObjectPath {
    ObjectPath::from(format!("{SERIES_PREFIX}/{segment:08}.parquet"))
}

impl Storage {
    /// Opens the data directory: loads the Parquet file list and series, replays the WAL.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        std::fs::create_dir_all(config.data_dir.join("blocks"))?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(
            config.data_dir.join("blocks"),
        )?);
        // A flush commits by writing its series file last, named after the WAL segment
        // its cut started. Sample files without a committed series file are the remains
        // of an interrupted flush; their samples are still in the WAL.
        let mut catalog = Catalog {
            series: HashMap::new(),
            latest: HashMap::new(),
        };
        let mut series_files: Vec<_> = store
            .list(Some(&ObjectPath::from(SERIES_PREFIX)))
            .try_collect()
            .await?;
        series_files.sort_by(|a, b| a.location.cmp(&b.location));
        let mut committed = std::collections::BTreeSet::new();
        for meta in series_files {
            let Some(segment) = parse_series_path(&meta.location) else {
                continue;
            };
            let bytes = store.get(&meta.location).await?.bytes().await?;
            for row in parquet_block::read_series_file(bytes)? {
                catalog.series.insert(row.id, row.labels);
                let latest = catalog.latest.entry(row.id).or_insert((i64::MIN, 0.0));
                if row.last_timestamp >= latest.0 {
                    *latest = (row.last_timestamp, row.last_value);
                }
            }
            committed.insert(segment);
        }
        let flushed_below = committed.last().copied().unwrap_or(0);

        let mut files = Vec::new();
        let listed: Vec<_> = store
            .list(Some(&ObjectPath::from(SAMPLES_PREFIX)))
            .try_collect()
            .await?;
        for meta in listed {
            match parse_sample_path(&meta.location) {
                Some((block_start, block_end, segment)) if committed.contains(&segment) => {
                    files.push(SampleFile {
                        path: meta.location,
                        size: meta.size,
                        block_start,
                        block_end,
                    });
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
            flushed_below,
        )?;
        let stats = StorageStats::default();
        stats
            .wal_corruptions
            .store(replay.corruptions as u64, Ordering::Relaxed);
        let mut head = Head::default();
        let mut replayed = 0usize;
        for payload in replay.payloads {
            let batch = codec::decode_batch(&payload)?;
            let (ids, labels) = intern(&mut catalog, &batch);
            for sample in &batch.samples {
                // Records may be in another order than their timestamps: keep the max.
                let latest = catalog
                    .latest
                    .entry(ids[sample.series_idx as usize])
                    .or_insert((i64::MIN, 0.0));
                if sample.timestamp_ms >= latest.0 {
                    *latest = (sample.timestamp_ms, sample.value);
                }
            }
            head.apply(&batch, &ids, &labels);
            replayed += batch.samples.len();
        }
        info!(
            files = files.len(),
            series = catalog.series.len(),
            replayed_samples = replayed,
            "storage opened"
        );
        Ok(Arc::new(Storage {
            config,
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
            flush_lock: tokio::sync::Mutex::new(()),
            last_flush: Mutex::new(Instant::now()),
            closed: std::sync::atomic::AtomicBool::new(false),
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
    pub async fn append(&self, batch: SampleBatch, mode: AppendMode) -> Result<AppendOutcome> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        self.config.limits.check(&batch)?;
        let ids: Vec<SeriesId> = batch.series.iter().map(LabelSet::series_id).collect();
        let _gate = self.gate.read().await;
        // Reserve timestamps and queue the WAL record under one lock, so the WAL holds
        // each series' samples in the order they were accepted.
        let (batch, outcome, reservations, receiver) = {
            let _order = self.order.lock();
            let (batch, outcome, reservations) = self.check_order(batch, &ids, mode)?;
            if batch.samples.is_empty() {
                return Ok(outcome);
            }
            let mut payload =
                Vec::with_capacity(batch.samples.len() * 20 + batch.series.len() * 64);
            codec::encode_batch(&batch, &mut payload);
            match self.wal.submit(payload) {
                Ok(receiver) => (batch, outcome, reservations, receiver),
                Err(err) => {
                    self.release(&reservations);
                    return Err(err);
                }
            }
        };
        if let Err(err) = Wal::wait(receiver).await {
            self.release(&reservations);
            return Err(err);
        }
        let labels = {
            let mut catalog = self.catalog.write();
            intern(&mut catalog, &batch).1
        };
        self.head.write().apply(&batch, &ids, &labels);
        self.stats
            .samples_appended
            .fetch_add(batch.samples.len() as u64, Ordering::Relaxed);
        {
            let mut taps = self.taps.lock();
            if !taps.is_empty() {
                let appended = Arc::new(Appended {
                    ids,
                    series: batch.series.clone(),
                    samples: batch.samples.clone(),
                });
                taps.retain(|tap| tap.send(appended.clone()).is_ok());
            }
        }
        if let Some(latest) = batch.samples.iter().map(|s| s.timestamp_ms).max() {
            self.appended.send_modify(|(count, watermark)| {
                *count += 1;
                *watermark = (*watermark).max(latest);
            });
        }
        Ok(outcome)
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
    ) -> Result<(SampleBatch, AppendOutcome, Vec<Reservation>)> {
        let min_valid = now_ms() - self.config.retention.as_millis() as i64;
        let catalog = self.catalog.read();
        let mut reserved: HashMap<SeriesId, (i64, f64)> = HashMap::new();
        let mut outcome = AppendOutcome::default();
        let mut keep = Vec::with_capacity(batch.samples.len());
        for sample in &batch.samples {
            let id = ids[sample.series_idx as usize];
            let latest = reserved
                .get(&id)
                .or_else(|| catalog.latest.get(&id))
                .copied();
            let series = || batch.series[sample.series_idx as usize].to_string();
            let verdict = if sample.timestamp_ms < min_valid {
                outcome.out_of_bounds += 1;
                Some(Error::OutOfBounds {
                    timestamp: sample.timestamp_ms,
                })
            } else {
                match latest {
                    Some((ts, _)) if sample.timestamp_ms < ts => {
                        outcome.out_of_order += 1;
                        Some(Error::OutOfOrder {
                            series: series(),
                            timestamp: sample.timestamp_ms,
                            latest: ts,
                        })
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
        Ok((
            SampleBatch {
                series: batch.series,
                samples: keep,
            },
            outcome,
            reservations,
        ))
    }

    /// Whether the head spans a block period or has waited one: time to flush.
    pub fn flush_due(&self) -> bool {
        let head = self.head.read();
        if head.n_samples == 0 {
            return false;
        }
        let span = match (head.min_timestamp, head.max_timestamp) {
            (Some(min), Some(max)) => max - min,
            _ => 0,
        };
        let period = self.config.block_period;
        span >= period.as_millis() as i64 || self.last_flush.lock().elapsed() >= period
    }

    /// Cuts the WAL and freezes the head, then writes every frozen head to Parquet, oldest
    /// first (so a flush that failed earlier is retried), and only then checkpoints the
    /// WAL. Frozen heads stay queryable until their files are published.
    pub async fn flush(&self) -> Result<usize> {
        let _flush = self.flush_lock.lock().await;
        let started = Instant::now();
        let cut_segment = {
            let _gate = self.gate.write().await;
            let cut_segment = self.wal.cut().await?;
            let mut head = self.head.write();
            if head.n_samples > 0 {
                let frozen = Arc::new(std::mem::take(&mut *head));
                self.frozen.write().push(FrozenHead {
                    head: frozen,
                    cut_segment,
                });
            }
            cut_segment
        };
        *self.last_flush.lock() = Instant::now();
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
        }
        self.wal.checkpoint(cut_segment)?;
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

    /// Writes one frozen head: a sample file per block it touches, then its series file,
    /// which commits the flush. Paths derive from the cut segment, so a retry overwrites.
    async fn write_frozen(&self, frozen: &FrozenHead) -> Result<Vec<SampleFile>> {
        let block_ms = self.config.block_period.as_millis().max(1) as i64;
        let mut new_files = Vec::new();
        for (block_start, batch) in frozen.head.blocks(block_ms) {
            let block_end = block_start.saturating_add(block_ms);
            let bytes = parquet_block::encode(&batch)?;
            let size = bytes.len() as u64;
            let path = sample_path(block_start, block_end, frozen.cut_segment);
            self.store.put(&path, PutPayload::from(bytes)).await?;
            self.stats
                .parquet_bytes_written
                .fetch_add(size, Ordering::Relaxed);
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
        let series_file = series_path(frozen.cut_segment);
        self.store
            .put(&series_file, PutPayload::from(series_bytes))
            .await?;
        sync_paths(&root, &[&series_file])?;
        Ok(new_files)
    }

    /// Deletes partitions that ended before now minus the retention period.
    pub async fn apply_retention(&self) -> Result<usize> {
        let cutoff = now_ms() - self.config.retention.as_millis() as i64;
        let expired: Vec<SampleFile> = {
            let mut files = self.files.write();
            let (expired, kept) = files.drain(..).partition(|file| file.block_end <= cutoff);
            *files = kept;
            expired
        };
        for file in &expired {
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

    /// Stops accepting writes, flushes the head, and closes the WAL.
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

    /// The samples of `ids` in `(start, end]` straight from memory, when no Parquet file
    /// overlaps the range (`None` otherwise: the caller reads through the `samples`
    /// table). Each series' samples come sorted by time; series without samples in the
    /// range are left out.
    pub fn head_points(
        &self,
        ids: &[SeriesId],
        start: i64,
        end: i64,
    ) -> Option<HashMap<SeriesId, SeriesPoints>> {
        let head = self.head.read();
        let frozen = self.frozen.read();
        let files = self.files.read();
        if files
            .iter()
            .any(|file| file.block_start <= end && file.block_end > start)
        {
            return None;
        }
        let mut out: HashMap<SeriesId, SeriesPoints> = HashMap::new();
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
        if !frozen.is_empty() {
            // A frozen head and the live head may both hold a series: merge by time.
            for (timestamps, values) in out.values_mut() {
                let mut pairs: Vec<(i64, f64)> = timestamps
                    .iter()
                    .copied()
                    .zip(values.iter().copied())
                    .collect();
                pairs.sort_by_key(|pair| pair.0);
                *timestamps = pairs.iter().map(|pair| pair.0).collect();
                *values = pairs.iter().map(|pair| pair.1).collect();
            }
        }
        Some(out)
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
        let mut selected: Vec<(SeriesId, Arc<LabelSet>)> = catalog
            .series
            .iter()
            .filter(|(_, labels)| predicate(labels))
            .map(|(id, labels)| (*id, labels.clone()))
            .collect();
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

/// Interns a batch's series into the catalog: ids and shared label sets, per batch index.
fn intern(catalog: &mut Catalog, batch: &SampleBatch) -> (Vec<SeriesId>, Vec<Arc<LabelSet>>) {
    let mut ids = Vec::with_capacity(batch.series.len());
    let mut labels = Vec::with_capacity(batch.series.len());
    for series in &batch.series {
        let id = series.series_id();
        let shared = catalog
            .series
            .entry(id)
            .or_insert_with(|| Arc::new(series.clone()))
            .clone();
        ids.push(id);
        labels.push(shared);
    }
    (ids, labels)
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
        let from_files: usize = files
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
            .sum();
        memory.iter().map(RecordBatch::num_rows).sum::<usize>() + from_files
    }

    #[tokio::test]
    async fn crash_between_parquet_and_checkpoint_neither_loses_nor_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::new(dir.path());
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
}

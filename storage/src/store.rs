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
    frozen: RwLock<Vec<Arc<Head>>>,
    catalog: RwLock<Catalog>,
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

fn parse_block_start(path: &ObjectPath) -> Option<i64> {
    path.parts()
        .find_map(|part| part.as_ref().strip_prefix("block=").map(str::to_string))
        .and_then(|start| start.parse().ok())
}

impl Storage {
    /// Opens the data directory: loads the Parquet file list and series, replays the WAL.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        std::fs::create_dir_all(config.data_dir.join("blocks"))?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(
            config.data_dir.join("blocks"),
        )?);
        let block_ms = config.block_period.as_millis().max(1) as i64;

        let mut files = Vec::new();
        let mut listing = store.list(Some(&ObjectPath::from(SAMPLES_PREFIX)));
        while let Some(meta) = listing.try_next().await? {
            if let Some(block_start) = parse_block_start(&meta.location) {
                files.push(SampleFile {
                    path: meta.location,
                    size: meta.size,
                    block_start,
                    block_end: block_start + block_ms,
                });
            }
        }
        drop(listing);

        let mut catalog = Catalog {
            series: HashMap::new(),
            latest: HashMap::new(),
        };
        let mut series_files: Vec<_> = store
            .list(Some(&ObjectPath::from(SERIES_PREFIX)))
            .try_collect()
            .await?;
        series_files.sort_by(|a, b| a.location.cmp(&b.location));
        for meta in series_files {
            let bytes = store.get(&meta.location).await?.bytes().await?;
            for row in parquet_block::read_series_file(bytes)? {
                catalog.series.insert(row.id, row.labels);
                let latest = catalog.latest.entry(row.id).or_insert((i64::MIN, 0.0));
                if row.last_timestamp >= latest.0 {
                    *latest = (row.last_timestamp, row.last_value);
                }
            }
        }

        let (wal, replay) = Wal::open(&config.data_dir.join("wal"), config.wal_segment_bytes)?;
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
                catalog.latest.insert(
                    ids[sample.series_idx as usize],
                    (sample.timestamp_ms, sample.value),
                );
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
    pub async fn append(&self, batch: SampleBatch, mode: AppendMode) -> Result<AppendOutcome> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        self.config.limits.check(&batch)?;
        let ids: Vec<SeriesId> = batch.series.iter().map(LabelSet::series_id).collect();
        let (batch, outcome) = self.check_order(batch, &ids, mode)?;
        if batch.samples.is_empty() {
            return Ok(outcome);
        }
        let mut payload = Vec::with_capacity(batch.samples.len() * 20 + batch.series.len() * 64);
        codec::encode_batch(&batch, &mut payload);
        let _gate = self.gate.read().await;
        self.wal.append(payload).await?;
        let labels = {
            let mut catalog = self.catalog.write();
            intern(&mut catalog, &batch).1
        };
        self.head.write().apply(&batch, &ids, &labels);
        self.stats
            .samples_appended
            .fetch_add(batch.samples.len() as u64, Ordering::Relaxed);
        Ok(outcome)
    }

    /// The out-of-order and duplicate checks of Prometheus' head appender
    /// (`tsdb/head_append.go`): a sample older than the series' latest is out of order,
    /// one at the same time with another value is a duplicate, and one at the same time
    /// with the same value is silently ignored. Accepted timestamps are reserved at once.
    fn check_order(
        &self,
        batch: SampleBatch,
        ids: &[SeriesId],
        mode: AppendMode,
    ) -> Result<(SampleBatch, AppendOutcome)> {
        let min_valid = now_ms() - self.config.retention.as_millis() as i64;
        let _order = self.order.lock();
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
        for (id, latest) in reserved {
            catalog.latest.insert(id, latest);
        }
        outcome.accepted = keep.len();
        Ok((
            SampleBatch {
                series: batch.series,
                samples: keep,
            },
            outcome,
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

    /// Writes the head to Parquet (one file per touched block, plus a series file), then
    /// checkpoints the WAL. The frozen head stays queryable until its files are listed.
    pub async fn flush(&self) -> Result<usize> {
        let _flush = self.flush_lock.lock().await;
        let started = Instant::now();
        let (segment, frozen) = {
            let _gate = self.gate.write().await;
            let segment = self.wal.cut().await?;
            let frozen = Arc::new(std::mem::take(&mut *self.head.write()));
            self.frozen.write().push(frozen.clone());
            (segment, frozen)
        };
        *self.last_flush.lock() = Instant::now();
        if frozen.n_samples == 0 {
            self.frozen
                .write()
                .retain(|head| !Arc::ptr_eq(head, &frozen));
            self.wal.checkpoint(segment)?;
            return Ok(0);
        }
        let block_ms = self.config.block_period.as_millis().max(1) as i64;
        let sequence = format!("{:013}-{:08}", now_ms(), segment);
        let mut new_files = Vec::new();
        for (block_start, batch) in frozen.blocks(block_ms) {
            let bytes = parquet_block::encode(&batch)?;
            let size = bytes.len() as u64;
            let path = ObjectPath::from(format!(
                "{SAMPLES_PREFIX}/block={block_start}/{sequence}.parquet"
            ));
            self.store.put(&path, PutPayload::from(bytes)).await?;
            self.stats
                .parquet_bytes_written
                .fetch_add(size, Ordering::Relaxed);
            new_files.push(SampleFile {
                path,
                size,
                block_start,
                block_end: block_start + block_ms,
            });
        }
        let rows: Vec<SeriesRow> = frozen
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
        let series_path = ObjectPath::from(format!("{SERIES_PREFIX}/{sequence}.parquet"));
        self.store
            .put(&series_path, PutPayload::from(series_bytes))
            .await?;
        // Durable before the WAL forgets the data.
        let mut written: Vec<&ObjectPath> = new_files.iter().map(|file| &file.path).collect();
        written.push(&series_path);
        sync_paths(&self.config.data_dir.join("blocks"), &written)?;
        {
            let mut files = self.files.write();
            files.extend(new_files);
            self.frozen
                .write()
                .retain(|head| !Arc::ptr_eq(head, &frozen));
        }
        self.wal.checkpoint(segment)?;
        let elapsed = started.elapsed();
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .flush_duration_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        info!(
            samples = frozen.n_samples,
            series = rows.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "head flushed to parquet"
        );
        Ok(frozen.n_samples)
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

    /// In-memory samples (head and heads being flushed) within `[start, end]`.
    pub fn memory_samples(&self, start: i64, end: i64) -> Vec<RecordBatch> {
        let mut batches = vec![self.head.read().samples_in_range(start, end)];
        for frozen in self.frozen.read().iter() {
            batches.push(frozen.samples_in_range(start, end));
        }
        batches.retain(|batch| batch.num_rows() > 0);
        batches
    }

    /// Parquet files whose partition overlaps `[start, end]`.
    pub fn files_in_range(&self, start: i64, end: i64) -> Vec<SampleFile> {
        self.files
            .read()
            .iter()
            .filter(|file| file.block_start <= end && file.block_end > start)
            .cloned()
            .collect()
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

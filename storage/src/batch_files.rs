//! The store of logs and of spans: each accepted batch becomes one Parquet file, written
//! to a temporary name, fsynced, renamed into `blocks/<name>/block=<start>_<end>/` and
//! the directory fsynced before the write is acknowledged — durable and whole or
//! nothing (a crash leaves the whole file or a `.tmp` that the next start deletes).
//!
//! The store keeps the list of its files in memory (the *manifest*); queries read a
//! snapshot of it, so a write is visible as soon as it is acknowledged.
//!
//! **Compaction** merges the small batch files of a partition into files of up to
//! [`MERGED_ROWS`] rows, sorted by the store's sort key (`timestamp` for logs,
//! `trace_id, start` for spans) with small row groups and page statistics, so a lookup
//! by trace id reads a few pages of a few files. A merged file names the files it
//! replaces in its Parquet key-value metadata (`vigil.replaces`): it is renamed into
//! place, the manifest swaps the inputs for it in one step, and the inputs are deleted
//! after [`DELETE_GRACE`] (queries that listed them may still open them). A crash at
//! any point leaves either the inputs or the merged file authoritative: at start, the
//! files a merged file replaces are deleted.
//!
//! **Retention** drops whole partitions older than the retention period.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::SchemaRef;
use parking_lot::{Mutex, RwLock};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Rows of one merged file (bounds compaction's memory: a merge holds its inputs).
pub const MERGED_ROWS: usize = 500_000;
/// Rows per row group of merged files: small enough that a sorted key prunes well.
const MERGED_ROW_GROUP: usize = 16_384;
/// Files are merged once this old, so a burst of batches is merged once, not per batch.
pub const SETTLE: Duration = Duration::from_secs(30);
/// Replaced files are deleted this long after the merge (a query that listed them may
/// still be about to open them; the SQL timeout is 2 minutes by default).
pub const DELETE_GRACE: Duration = Duration::from_secs(300);
/// Key of the merged file's metadata that lists the files it replaces.
const REPLACES: &str = "vigil.replaces";
/// File metadata: the newest event time (ms) in the file. A batch lands in the partition
/// of its oldest record and may hold records past the partition's end; the file's range
/// is what pruning must use.
const MAX_MS: &str = "vigil.max_ms";

/// One file of the store.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path relative to the blocks directory (`logs/block=…/….parquet`), as the object
    /// store names it.
    pub path: String,
    pub size: u64,
    pub rows: usize,
    /// The partition's time range `[start, end)` in milliseconds.
    pub partition_start: i64,
    pub partition_end: i64,
    /// The newest event time in the file (`i64::MAX` when a file does not say).
    pub max_ms: i64,
    /// When this process added it (`None`: found at start).
    added: Option<Instant>,
}

impl FileEntry {
    /// The end (exclusive) of the times the file may hold: its partition's end, or past
    /// it when a batch that began in the partition ran over.
    pub fn reaches(&self) -> i64 {
        self.partition_end.max(self.max_ms.saturating_add(1))
    }
}

/// A directory of Parquet files in time partitions, with its manifest.
pub struct BatchFiles {
    blocks_dir: PathBuf,
    dir: PathBuf,
    schema: SchemaRef,
    block_ms: i64,
    /// The columns merged files are sorted by.
    sort_key: Vec<&'static str>,
    /// Makes file names unique within this process; the start time makes them unique
    /// across restarts.
    seq: AtomicU64,
    started_ns: u128,
    files: RwLock<Vec<FileEntry>>,
    /// Replaced files and when they may be deleted.
    graveyard: Mutex<Vec<(Instant, PathBuf)>>,
    /// One compaction or retention pass at a time.
    maintenance: tokio::sync::Mutex<()>,
    pub rows_appended: AtomicU64,
    /// Attributes dropped or cut, bodies cut (`limits.max_attribute*`).
    pub attributes_trimmed: AtomicU64,
    pub files_merged: AtomicU64,
    pub partitions_deleted: AtomicU64,
    /// Receivers of every batch made durable from now on (`tap`).
    taps: Mutex<Vec<crossbeam_channel::Sender<Arc<RecordBatch>>>>,
}

impl BatchFiles {
    /// Opens `blocks/<name>/`: deletes temporary files and files a merged file replaces,
    /// and lists the rest.
    pub fn open(
        blocks_dir: &Path,
        name: &str,
        schema: SchemaRef,
        block_ms: i64,
        sort_key: Vec<&'static str>,
    ) -> Result<Self> {
        let dir = blocks_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut found: Vec<(PathBuf, i64, i64)> = Vec::new();
        let mut replaced: HashSet<PathBuf> = HashSet::new();
        for partition in std::fs::read_dir(&dir)? {
            let partition = partition?.path();
            let Some((start, end)) = partition_range(&partition) else {
                continue;
            };
            for file in std::fs::read_dir(&partition)? {
                let file = file?.path();
                let file_name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if file_name.ends_with(".tmp") {
                    std::fs::remove_file(&file)?;
                } else if file_name.ends_with(".parquet") {
                    if file_name.starts_with("merged-") {
                        for input in replaced_by(&file)? {
                            replaced.insert(partition.join(input));
                        }
                    }
                    found.push((file, start, end));
                }
            }
        }
        let mut files = Vec::new();
        for (path, start, end) in found {
            if replaced.contains(&path) {
                std::fs::remove_file(&path)?;
                continue;
            }
            let size = std::fs::metadata(&path)?.len();
            let (rows, max_ms) = match parquet_rows(&path) {
                Ok(found) => found,
                Err(err) => {
                    warn!(path = %path.display(), error = %err, "unreadable file left out of the table");
                    continue;
                }
            };
            files.push(FileEntry {
                path: relative(blocks_dir, &path),
                size,
                rows,
                partition_start: start,
                partition_end: end,
                max_ms,
                added: None,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(BatchFiles {
            blocks_dir: blocks_dir.to_path_buf(),
            dir,
            schema,
            block_ms: block_ms.max(1),
            sort_key,
            seq: AtomicU64::new(0),
            started_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            files: RwLock::new(files),
            graveyard: Mutex::new(Vec::new()),
            maintenance: tokio::sync::Mutex::new(()),
            rows_appended: AtomicU64::new(0),
            attributes_trimmed: AtomicU64::new(0),
            files_merged: AtomicU64::new(0),
            partitions_deleted: AtomicU64::new(0),
            taps: Mutex::new(Vec::new()),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The files whose partitions overlap `[start_ms, end_ms]`.
    pub fn files(&self, start_ms: i64, end_ms: i64) -> Vec<FileEntry> {
        self.files
            .read()
            .iter()
            .filter(|f| f.reaches() > start_ms && f.partition_start <= end_ms)
            .cloned()
            .collect()
    }

    /// The files whose partitions overlap `[start_ms, ∞)` and a receiver of every batch
    /// made durable after them: each batch is in exactly one of the two (a reader that
    /// seeds from the files and then follows the receiver sees every row once). The
    /// receiver is dropped to unsubscribe.
    pub fn tap(
        &self,
        start_ms: i64,
    ) -> (
        Vec<FileEntry>,
        crossbeam_channel::Receiver<Arc<RecordBatch>>,
    ) {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let files = self.files.read();
        self.taps.lock().push(sender);
        let listed = files
            .iter()
            .filter(|f| f.reaches() > start_ms)
            .cloned()
            .collect();
        (listed, receiver)
    }

    /// Every row of one listed file.
    pub fn read(&self, file: &FileEntry) -> Result<Vec<RecordBatch>> {
        let reader = std::fs::File::open(self.blocks_dir.join(&file.path))?;
        let batches = ParquetRecordBatchReaderBuilder::try_new(reader)?
            .with_batch_size(8192)
            .build()?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(batches)
    }

    /// Files in the manifest.
    pub fn file_count(&self) -> usize {
        self.files.read().len()
    }

    /// Writes `batch` (rows of this store's schema; `min_ms` its earliest time, which
    /// picks the partition) as one file and returns once it is durable.
    pub async fn append_batch(
        self: &Arc<Self>,
        batch: RecordBatch,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<usize> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_file(&batch, min_ms, max_ms))
            .await
            .map_err(|err| Error::Wal(format!("write task failed: {err}")))?
    }

    fn next_name(&self, prefix: &str) -> String {
        format!(
            "{prefix}{:x}-{:08x}",
            self.started_ns,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn partition_dir(&self, start: i64) -> PathBuf {
        self.dir
            .join(format!("block={start}_{}", start + self.block_ms))
    }

    fn write_file(&self, batch: &RecordBatch, min_ms: i64, max_ms: i64) -> Result<usize> {
        let start = min_ms.div_euclid(self.block_ms) * self.block_ms;
        let partition = self.partition_dir(start);
        std::fs::create_dir_all(&partition)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                MAX_MS.to_string(),
                max_ms.to_string(),
            )]))
            .build();
        let path = self.write_durably(&partition, &self.next_name(""), batch, props)?;
        let size = std::fs::metadata(&path)?.len();
        let mut files = self.files.write();
        files.push(FileEntry {
            path: relative(&self.blocks_dir, &path),
            size,
            rows: batch.num_rows(),
            partition_start: start,
            partition_end: start + self.block_ms,
            max_ms,
            added: Some(Instant::now()),
        });
        // Under the manifest's lock, so `tap` sees each batch either listed or sent.
        let mut taps = self.taps.lock();
        if !taps.is_empty() {
            let shared = Arc::new(batch.clone());
            taps.retain(|tap| tap.send(shared.clone()).is_ok());
        }
        drop(taps);
        drop(files);
        self.rows_appended
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(batch.num_rows())
    }

    /// Writes `<name>.tmp`, fsyncs it, renames it to `<name>.parquet` and fsyncs the
    /// directories.
    fn write_durably(
        &self,
        partition: &Path,
        name: &str,
        batch: &RecordBatch,
        props: WriterProperties,
    ) -> Result<PathBuf> {
        let tmp = partition.join(format!("{name}.tmp"));
        let path = partition.join(format!("{name}.parquet"));
        let file = std::fs::File::create(&tmp)?;
        let mut writer = ArrowWriter::try_new(file, self.schema.clone(), Some(props))?;
        writer.write(batch)?;
        let file = writer.into_inner()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(partition)?.sync_all()?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// Merges settled small files (see the module documentation); returns the number of
    /// files replaced. Deletes replaced files whose grace period is over.
    pub async fn compact(self: &Arc<Self>) -> Result<usize> {
        let _pass = self.maintenance.lock().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.compact_now(SETTLE))
            .await
            .map_err(|err| Error::Wal(format!("compaction task failed: {err}")))?
    }

    /// One compaction pass over files older than `settle` (synchronous).
    pub fn compact_now(&self, settle: Duration) -> Result<usize> {
        self.bury(false);
        let mut groups: BTreeMap<i64, Vec<FileEntry>> = BTreeMap::new();
        for file in self.files.read().iter() {
            let settled = file.added.is_none_or(|added| added.elapsed() >= settle);
            if settled && file.rows < MERGED_ROWS / 2 {
                groups
                    .entry(file.partition_start)
                    .or_default()
                    .push(file.clone());
            }
        }
        let mut replaced = 0;
        for (start, candidates) in groups {
            if candidates.len() < 2 {
                continue;
            }
            // Consecutive runs of at most MERGED_ROWS rows.
            let mut run: Vec<FileEntry> = Vec::new();
            let mut rows = 0;
            for file in candidates {
                if rows + file.rows > MERGED_ROWS && run.len() >= 2 {
                    replaced += self.merge(start, std::mem::take(&mut run))?;
                    rows = 0;
                }
                rows += file.rows;
                run.push(file);
            }
            if run.len() >= 2 {
                replaced += self.merge(start, run)?;
            }
        }
        Ok(replaced)
    }

    fn merge(&self, start: i64, inputs: Vec<FileEntry>) -> Result<usize> {
        let mut batches = Vec::new();
        for input in &inputs {
            let file = std::fs::File::open(self.blocks_dir.join(&input.path))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
                .with_batch_size(8192)
                .build()?;
            for batch in reader {
                batches.push(batch?);
            }
        }
        let merged = concat_batches(&self.schema, &batches)?;
        drop(batches);
        let columns: Vec<SortColumn> = self
            .sort_key
            .iter()
            .filter_map(|name| merged.column_by_name(name))
            .map(|values| SortColumn {
                values: values.clone(),
                options: None,
            })
            .collect();
        let sorted = if columns.is_empty() {
            merged
        } else {
            let indices = lexsort_to_indices(&columns, None)?;
            take_record_batch(&merged, &indices)?
        };
        let max_ms = inputs.iter().map(|f| f.max_ms).max().unwrap_or(i64::MAX);
        let names: Vec<String> = inputs
            .iter()
            .filter_map(|f| f.path.rsplit('/').next().map(str::to_string))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(MERGED_ROW_GROUP))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(REPLACES.to_string(), names.join(",")),
                KeyValue::new(MAX_MS.to_string(), max_ms.to_string()),
            ]))
            .build();
        let partition = self.partition_dir(start);
        let path = self.write_durably(&partition, &self.next_name("merged-"), &sorted, props)?;
        let entry = FileEntry {
            path: relative(&self.blocks_dir, &path),
            size: std::fs::metadata(&path)?.len(),
            rows: sorted.num_rows(),
            partition_start: start,
            partition_end: start + self.block_ms,
            max_ms,
            added: None,
        };
        let gone: HashSet<&str> = inputs.iter().map(|f| f.path.as_str()).collect();
        {
            let mut files = self.files.write();
            files.retain(|f| !gone.contains(f.path.as_str()));
            files.push(entry);
        }
        let due = Instant::now() + DELETE_GRACE;
        self.graveyard
            .lock()
            .extend(inputs.iter().map(|f| (due, self.blocks_dir.join(&f.path))));
        self.files_merged
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        info!(
            store = %self.dir.display(),
            files = inputs.len(),
            rows = sorted.num_rows(),
            "merged batch files"
        );
        Ok(inputs.len())
    }

    /// Deletes replaced files whose grace period is over (all of them with `all`).
    pub fn bury(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<PathBuf> = {
            let mut graveyard = self.graveyard.lock();
            let (due, kept) = graveyard
                .drain(..)
                .partition(|(when, _)| all || *when <= now);
            *graveyard = kept;
            due.into_iter().map(|(_, path)| path).collect()
        };
        for path in due {
            if let Err(err) = std::fs::remove_file(&path) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %path.display(), error = %err, "cannot delete a merged input");
                }
            }
        }
    }

    /// Drops the partitions that end at or before `cutoff_ms`; returns how many.
    pub async fn apply_retention(self: &Arc<Self>, cutoff_ms: i64) -> Result<usize> {
        let _pass = self.maintenance.lock().await;
        let expired: BTreeMap<i64, ()> = {
            let mut files = self.files.write();
            let expired = files
                .iter()
                .filter(|f| f.partition_end <= cutoff_ms)
                .map(|f| (f.partition_start, ()))
                .collect();
            files.retain(|f| f.partition_end > cutoff_ms);
            expired
        };
        // Partitions without files in the manifest (emptied by hand, say) go too.
        let mut dirs: Vec<PathBuf> = expired.keys().map(|s| self.partition_dir(*s)).collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some((_, end)) = partition_range(&path) {
                    if end <= cutoff_ms && !dirs.contains(&path) {
                        dirs.push(path);
                    }
                }
            }
        }
        for dir in &dirs {
            if let Err(err) = std::fs::remove_dir_all(dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %dir.display(), error = %err, "cannot delete an expired partition");
                }
            }
        }
        self.partitions_deleted
            .fetch_add(dirs.len() as u64, Ordering::Relaxed);
        Ok(dirs.len())
    }
}

/// `block=<start>_<end>` → `(start, end)`.
fn partition_range(path: &Path) -> Option<(i64, i64)> {
    if !path.is_dir() {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let (start, end) = name.strip_prefix("block=")?.split_once('_')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

fn relative(blocks_dir: &Path, path: &Path) -> String {
    path.strip_prefix(blocks_dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// A file's row count and newest event time (`i64::MAX` if its metadata does not say).
fn parquet_rows(path: &Path) -> Result<(usize, i64)> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let metadata = builder.metadata().file_metadata();
    let max_ms = metadata
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == MAX_MS))
        .and_then(|kv| kv.value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(i64::MAX);
    Ok((metadata.num_rows().max(0) as usize, max_ms))
}

/// The file names a merged file's metadata says it replaces.
fn replaced_by(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let names = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == REPLACES))
        .and_then(|kv| kv.value.clone())
        .unwrap_or_default();
    Ok(names
        .split(',')
        .filter(|n| !n.is_empty() && !n.contains('/') && n.ends_with(".parquet"))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{to_batch, LogRecord, LOGS};

    fn record(ts: i64, body: &str) -> LogRecord {
        LogRecord {
            timestamp_ms: ts,
            observed_ms: ts,
            body: body.into(),
            ..Default::default()
        }
    }

    fn open(dir: &Path) -> Arc<BatchFiles> {
        Arc::new(BatchFiles::open(dir, "logs", LOGS.clone(), 7_200_000, vec!["timestamp"]).unwrap())
    }

    fn all_bodies(store: &BatchFiles, dir: &Path) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for file in store.files(i64::MIN, i64::MAX) {
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(dir.join(&file.path)).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let ts = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMillisecondArray>()
                    .unwrap()
                    .clone();
                let body = batch
                    .column(4)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap()
                    .clone();
                for i in 0..batch.num_rows() {
                    out.push((ts.value(i), body.value(i).to_string()));
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_batch_across_a_partition_end_is_found_by_its_later_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch = to_batch(&[record(7_199_000, "before"), record(7_200_500, "after")]).unwrap();
        store
            .append_batch(batch, 7_199_000, 7_200_500)
            .await
            .unwrap();
        // It lands in the partition of its oldest record, [0, 7_200_000), but a query
        // from 7_200_100 on must still read it — also after a restart.
        assert_eq!(store.files(7_200_100, 7_300_000).len(), 1);
        assert_eq!(store.tap(7_200_100).0.len(), 1);
        assert!(store.files(7_200_501, 7_300_000).is_empty());
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.files(7_200_100, 7_300_000).len(), 1);
    }

    #[tokio::test]
    async fn batches_merge_sorted_and_a_crash_after_the_merge_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for i in (0..10).rev() {
            let batch = to_batch(&[record(1000 + i, &format!("b{i}"))]).unwrap();
            store.append_batch(batch, 1000 + i, 1000 + i).await.unwrap();
        }
        // A second partition with one file is left alone.
        store
            .append_batch(
                to_batch(&[record(7_200_001, "later")]).unwrap(),
                7_200_001,
                7_200_001,
            )
            .await
            .unwrap();
        let before = all_bodies(&store, dir.path());
        assert_eq!(store.file_count(), 11);
        assert_eq!(store.compact_now(Duration::ZERO).unwrap(), 10);
        assert_eq!(store.file_count(), 2);
        assert_eq!(all_bodies(&store, dir.path()), before);
        // The inputs are still on disk (grace period): a restart now must not read them
        // twice.
        let partition = dir.path().join("logs/block=0_7200000");
        assert_eq!(std::fs::read_dir(&partition).unwrap().count(), 11);
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.file_count(), 2);
        assert_eq!(std::fs::read_dir(&partition).unwrap().count(), 1);
        assert_eq!(all_bodies(&store, dir.path()), before);
        // The merged file is sorted by timestamp.
        let merged = store.files(0, 10).remove(0);
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(dir.path().join(&merged.path)).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let batch = reader.into_iter().next().unwrap().unwrap();
        let ts = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .unwrap();
        assert!(ts.values().windows(2).all(|w| w[0] <= w[1]));
    }

    #[tokio::test]
    async fn retention_drops_old_partitions_and_tmp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .append_batch(to_batch(&[record(10, "old")]).unwrap(), 10, 10)
            .await
            .unwrap();
        store
            .append_batch(
                to_batch(&[record(7_200_010, "new")]).unwrap(),
                7_200_010,
                7_200_010,
            )
            .await
            .unwrap();
        std::fs::write(
            dir.path().join("logs/block=7200000_14400000/torn.tmp"),
            b"x",
        )
        .unwrap();
        assert_eq!(store.apply_retention(7_200_000).await.unwrap(), 1);
        assert_eq!(
            all_bodies(&store, dir.path()),
            vec![(7_200_010, "new".into())]
        );
        assert!(!dir.path().join("logs/block=0_7200000").exists());
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.file_count(), 1);
        assert!(!dir
            .path()
            .join("logs/block=7200000_14400000/torn.tmp")
            .exists());
    }
}

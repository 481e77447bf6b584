//! Reading sample files like a TSDB: by series, not by scanning a table.
//!
//! A sample file is sorted by (labels, time), so each series is one contiguous row range.
//! [`OpenedFile`] keeps a file's footer and page index (read once) and its series index
//! (series id → row range: handed over by the flush that wrote the file, or built once by
//! reading the `series_id` column). A read selects exactly the wanted series' row ranges
//! (pages without a selected row are not read or decoded) and only the time and value
//! columns. [`ChunkCache`] keeps decoded series (per file) under a byte budget, so
//! dashboards refreshing the same queries decode nothing.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::PageIndexPolicy;

use crate::error::{Error, Result};
use crate::head::{RowRange, SeriesIndex};
use crate::labels::{IdHasher, SeriesId};

/// Rows decoded per batch when reading.
const READ_BATCH_ROWS: usize = 64 * 1024;

static NEXT_FILE_NUMBER: AtomicU32 = AtomicU32::new(1);

/// One series' samples from one file: timestamps and values, in time order.
#[derive(Debug, Default)]
pub struct Chunk {
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

impl Chunk {
    fn bytes(&self) -> usize {
        self.timestamps.len() * 16 + 64
    }

    /// The samples with `start < t <= end`.
    pub fn range(&self, start: i64, end: i64) -> (&[i64], &[f64]) {
        let from = self.timestamps.partition_point(|&ts| ts <= start);
        let to = self.timestamps.partition_point(|&ts| ts <= end);
        let to = to.max(from);
        (&self.timestamps[from..to], &self.values[from..to])
    }
}

/// A sample file ready to read: where it is, its metadata, and its series index.
pub struct OpenedFile {
    /// Distinguishes this file's entries in the [`ChunkCache`].
    pub number: u32,
    pub path: PathBuf,
    metadata: ArrowReaderMetadata,
    index: Mutex<Option<Arc<SeriesIndex>>>,
}

impl std::fmt::Debug for OpenedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OpenedFile {
    /// Reads the footer and page index; a file that is not valid Parquet (truncated,
    /// overwritten) is an error naming it.
    pub fn open(path: &Path, index: Option<SeriesIndex>) -> Result<OpenedFile> {
        let file = File::open(path)?;
        let metadata = ArrowReaderMetadata::load(
            &file,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .map_err(|err| Error::Corrupt(format!("{}: {err}", path.display())))?;
        if metadata.schema().fields().len() < 3 {
            return Err(Error::Corrupt(format!(
                "{}: not a samples file (columns: {})",
                path.display(),
                metadata.schema().fields().len()
            )));
        }
        Ok(OpenedFile {
            number: NEXT_FILE_NUMBER.fetch_add(1, Ordering::Relaxed),
            path: path.to_path_buf(),
            metadata,
            index: Mutex::new(index.map(Arc::new)),
        })
    }

    /// Each series' row range, built on first use by reading the `series_id` column.
    pub fn index(&self) -> Result<Arc<SeriesIndex>> {
        if let Some(index) = self.index.lock().as_ref() {
            return Ok(index.clone());
        }
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            File::open(&self.path)?,
            self.metadata.clone(),
        );
        let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS)
            .build()?;
        let mut index = SeriesIndex::default();
        let mut row = 0u32;
        for batch in reader {
            let batch = batch?;
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            for id in ids.values().iter() {
                let range = index.entry(*id).or_insert(RowRange { start: row, len: 0 });
                if range.start + range.len != row {
                    return Err(Error::Corrupt(format!(
                        "{}: series {id} is not one contiguous row range",
                        self.path.display()
                    )));
                }
                range.len += 1;
                row += 1;
            }
        }
        let index = Arc::new(index);
        *self.index.lock() = Some(index.clone());
        Ok(index)
    }

    /// Reads the given series (row ranges from [`OpenedFile::index`]) in one pass.
    pub fn read(&self, wanted: &mut [(SeriesId, RowRange)]) -> Result<Vec<(SeriesId, Chunk)>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        wanted.sort_unstable_by_key(|(_, range)| range.start);
        let mut selectors = Vec::with_capacity(wanted.len() * 2);
        let mut position = 0usize;
        let total_rows = self.metadata.metadata().file_metadata().num_rows().max(0) as usize;
        for (_, range) in wanted.iter() {
            let start = range.start as usize;
            let end = start + range.len as usize;
            if end > total_rows || start < position {
                return Err(Error::Corrupt(format!(
                    "{}: series index does not match the file",
                    self.path.display()
                )));
            }
            if start > position {
                selectors.push(RowSelector::skip(start - position));
            }
            selectors.push(RowSelector::select(end - start));
            position = end;
        }
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            File::open(&self.path)?,
            self.metadata.clone(),
        );
        let mask = ProjectionMask::roots(builder.parquet_schema(), [1, 2]);
        let reader = builder
            .with_projection(mask)
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(READ_BATCH_ROWS)
            .build()?;
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch?;
            timestamps.extend_from_slice(
                batch
                    .column(0)
                    .as_primitive::<TimestampMillisecondType>()
                    .values(),
            );
            values.extend_from_slice(batch.column(1).as_primitive::<Float64Type>().values());
        }
        let expected: usize = wanted.iter().map(|(_, range)| range.len as usize).sum();
        if timestamps.len() != expected || values.len() != expected {
            return Err(Error::Corrupt(format!(
                "{}: read {} rows, expected {expected}",
                self.path.display(),
                timestamps.len()
            )));
        }
        let mut out = Vec::with_capacity(wanted.len());
        let mut from = 0;
        for (id, range) in wanted.iter() {
            let to = from + range.len as usize;
            out.push((
                *id,
                Chunk {
                    timestamps: timestamps[from..to].to_vec(),
                    values: values[from..to].to_vec(),
                },
            ));
            from = to;
        }
        Ok(out)
    }
}

/// Decoded series of sample files, least recently used evicted past a byte budget.
pub struct ChunkCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

/// (file number, series).
type CacheKey = (u32, SeriesId);

#[derive(Default)]
struct CacheInner {
    entries: HashMap<CacheKey, (Arc<Chunk>, u64), BuildHasherDefault<IdHasher>>,
    bytes: usize,
    tick: u64,
}

impl ChunkCache {
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            budget,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub fn get(&self, file: u32, id: SeriesId) -> Option<Arc<Chunk>> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(&(file, id))?;
        entry.1 = tick;
        Some(entry.0.clone())
    }

    pub fn insert(&self, file: u32, id: SeriesId, chunk: Arc<Chunk>) {
        let size = chunk.bytes();
        if size > self.budget / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((old, _)) = inner.entries.insert((file, id), (chunk, tick)) {
            inner.bytes -= old.bytes();
        }
        inner.bytes += size;
        if inner.bytes > self.budget {
            // Evict the least recently used quarter (amortised: one sort per many inserts).
            let mut ages: Vec<(u64, (u32, SeriesId))> = inner
                .entries
                .iter()
                .map(|(key, (_, used))| (*used, *key))
                .collect();
            ages.sort_unstable();
            let target = self.budget / 4 * 3;
            for (_, key) in ages {
                if inner.bytes <= target {
                    break;
                }
                if let Some((chunk, _)) = inner.entries.remove(&key) {
                    inner.bytes -= chunk.bytes();
                }
            }
        }
    }

    /// Forgets a file's series (the file was deleted).
    pub fn forget_file(&self, file: u32) {
        let mut inner = self.inner.lock();
        let mut freed = 0;
        inner.entries.retain(|(number, _), (chunk, _)| {
            let keep = *number != file;
            if !keep {
                freed += chunk.bytes();
            }
            keep
        });
        inner.bytes -= freed;
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

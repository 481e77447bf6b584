//! A segmented, checksummed write-ahead log with group commit.
//!
//! ```text
//! wal/00000001 wal/00000002 ...   segments: "VGLWAL2\0", then records:
//!   u32 magic "VGLR" | u32 len | u32 crc32(payload) | payload[len]   (codec version 2)
//! wal/checkpoint                  "S T": segments below S hold nothing newer than T
//!                                 that is not in Parquet (T = time of the last flush cut)
//! ```
//!
//! One writer thread owns the open segment and encodes records ([`codec::SegmentEncoder`]:
//! each series is declared once per segment, samples carry references). Appenders send a
//! batch and wait; the writer drains every queued batch, writes them, calls `fdatasync`
//! once and then answers all of them (group commit). A caller is answered only after its
//! record is durable.
//!
//! Replay reads segments in order. A damaged record (bad length or checksum) is skipped:
//! the reader resynchronises at the next record magic whose checksum holds, and reports
//! the damaged range. Only a damaged tail (a torn last write) is truncated. Segments
//! written before version 2 (no segment header, `u32 len | u32 crc` frames) are still
//! read; there a damaged record ends that segment.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::codec::{BatchRef, SegmentEncoder};
use crate::error::{Error, Result};
use crate::record::Appended;

const SEGMENT_MAGIC: &[u8; 8] = b"VGLWAL2\0";
const FRAME_MAGIC: [u8; 4] = *b"VGLR";
const FRAME_HEADER_LEN: usize = 12;
const LEGACY_HEADER_LEN: usize = 8;
/// Records larger than this are treated as corruption during replay.
const MAX_RECORD_LEN: usize = 1 << 30;

enum Request {
    Append {
        batch: Arc<Appended>,
        done: oneshot::Sender<Result<u64>>,
    },
    /// Closes the current segment and starts a new one; answers the new segment's number.
    Cut { done: oneshot::Sender<Result<u64>> },
}

/// Observations the writer publishes for self-metrics.
#[derive(Debug, Default)]
pub struct WalStats {
    pub bytes_written: std::sync::atomic::AtomicU64,
    pub fsyncs: std::sync::atomic::AtomicU64,
}

/// What a flush has made durable elsewhere: every sample in a segment below `segment`
/// with a timestamp below `time` is in Parquet (so is everything flushed before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub segment: u64,
    pub time: i64,
}

impl Checkpoint {
    pub const NONE: Checkpoint = Checkpoint {
        segment: 0,
        time: i64::MIN,
    };

    /// The later of two checkpoints (flushes advance both fields).
    pub fn max(self, other: Checkpoint) -> Checkpoint {
        if (other.segment, other.time) > (self.segment, self.time) {
            other
        } else {
            self
        }
    }

    /// Whether a replayed sample of `segment` at `timestamp` is already in Parquet.
    pub fn covers(&self, segment: u64, timestamp: i64) -> bool {
        segment < self.segment && timestamp < self.time
    }
}

pub struct Wal {
    dir: PathBuf,
    tx: parking_lot::Mutex<Option<mpsc::Sender<Request>>>,
    writer: parking_lot::Mutex<Option<thread::JoinHandle<()>>>,
    /// Latest sample time per segment (known for the segments written or replayed).
    latest: Arc<parking_lot::Mutex<BTreeMap<u64, i64>>>,
    pub stats: Arc<WalStats>,
}

/// One step of a replay, in log order.
#[derive(Debug)]
pub enum ReplayItem {
    /// A segment starts: its records resolve series references afresh.
    Segment(u64),
    Record(Vec<u8>),
    /// Bytes that are not a valid record. `payload` is what the record would hold if only
    /// its checksum is wrong (to describe what was lost; never to apply).
    Damaged {
        segment: u64,
        offset: u64,
        len: u64,
        payload: Option<Vec<u8>>,
    },
}

/// What replay found.
pub struct Replay {
    pub items: Vec<ReplayItem>,
    /// Number of damaged regions found.
    pub corruptions: usize,
    /// The checkpoint in force: replayed samples it covers are already in Parquet.
    pub checkpoint: Checkpoint,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:08}"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(number) = entry
            .file_name()
            .to_str()
            .filter(|name| name.len() == 8)
            .and_then(|name| name.parse::<u64>().ok())
        {
            segments.push(number);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// `S T` (or `S` alone, written before flushes kept recent data in memory: everything
/// below S was flushed).
fn read_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let text = match fs::read_to_string(dir.join("checkpoint")) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::NONE),
        Err(err) => return Err(err.into()),
    };
    let unreadable = || Error::Wal(format!("unreadable checkpoint file {text:?}"));
    let mut fields = text.split_whitespace();
    let segment = fields
        .next()
        .and_then(|field| field.parse().ok())
        .ok_or_else(unreadable)?;
    let time = match fields.next() {
        Some(field) => field.parse().map_err(|_| unreadable())?,
        None => i64::MAX,
    };
    Ok(Checkpoint { segment, time })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Wal {
    /// Reads the log in `dir` (creating it if needed) and starts a writer on a new segment.
    /// `flushed` (or the checkpoint file, whichever is later) says what is in Parquet;
    /// segments entirely below an old-style checkpoint are removed, not read.
    pub fn open(dir: &Path, segment_bytes: u64, flushed: Checkpoint) -> Result<(Wal, Replay)> {
        fs::create_dir_all(dir)?;
        let checkpoint = read_checkpoint(dir)?.max(flushed);
        let segments = list_segments(dir)?;
        let mut replay = Replay {
            items: Vec::new(),
            corruptions: 0,
            checkpoint,
        };
        for &segment in &segments {
            let path = segment_path(dir, segment);
            if segment < checkpoint.segment && checkpoint.time == i64::MAX {
                fs::remove_file(&path)?;
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            replay.items.push(ReplayItem::Segment(segment));
            let truncate_at = if bytes.starts_with(SEGMENT_MAGIC) {
                scan_segment(segment, &bytes, &mut replay)
            } else {
                scan_legacy_segment(segment, &bytes, &mut replay)
            };
            if let Some(valid_len) = truncate_at {
                warn!(
                    segment = %path.display(),
                    offset = valid_len,
                    dropped_bytes = bytes.len() - valid_len,
                    "wal segment ends in a torn or damaged record; truncating it there"
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid_len as u64)?;
                file.sync_all()?;
            }
        }
        let next_segment = segments
            .last()
            .map_or(checkpoint.segment.max(1), |last| last + 1);
        info!(
            items = replay.items.len(),
            damaged = replay.corruptions,
            next_segment,
            "wal read"
        );
        let stats = Arc::new(WalStats::default());
        let latest = Arc::new(parking_lot::Mutex::new(BTreeMap::new()));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let dir = dir.to_path_buf();
            let stats = stats.clone();
            let latest = latest.clone();
            thread::Builder::new()
                .name("vigil-wal".into())
                .spawn(move || writer_loop(dir, next_segment, segment_bytes, rx, stats, latest))?
        };
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                tx: parking_lot::Mutex::new(Some(tx)),
                writer: parking_lot::Mutex::new(Some(writer)),
                latest,
                stats,
            },
            replay,
        ))
    }

    fn send(&self, request: Request) -> Result<()> {
        let guard = self.tx.lock();
        let tx = guard.as_ref().ok_or(Error::ShuttingDown)?;
        tx.send(request)
            .map_err(|_| Error::Wal("wal writer stopped".into()))
    }

    /// Queues one batch; the receiver answers once its record is durable, with its
    /// segment. Records are written in the order they are queued.
    pub fn submit(&self, batch: Arc<Appended>) -> Result<oneshot::Receiver<Result<u64>>> {
        if batch.samples.is_empty() {
            return Err(Error::Wal("empty wal record".into()));
        }
        let (done, wait) = oneshot::channel();
        self.send(Request::Append { batch, done })?;
        Ok(wait)
    }

    /// Appends one batch and returns once it is durable, with the segment it landed in.
    pub async fn append(&self, batch: Arc<Appended>) -> Result<u64> {
        Self::wait(self.submit(batch)?).await
    }

    /// Waits for a [`Wal::submit`]ted record to be durable.
    pub async fn wait(receiver: oneshot::Receiver<Result<u64>>) -> Result<u64> {
        receiver
            .await
            .map_err(|_| Error::Wal("wal writer stopped".into()))?
    }

    /// Starts a new segment; every record appended before this call is in an older one.
    pub async fn cut(&self) -> Result<u64> {
        let (done, wait) = oneshot::channel();
        self.send(Request::Cut { done })?;
        wait.await
            .map_err(|_| Error::Wal("wal writer stopped".into()))?
    }

    /// Remembers the latest sample time of a replayed segment (to know when it is flushed).
    pub fn note_latest(&self, segment: u64, timestamp: i64) {
        let mut latest = self.latest.lock();
        let entry = latest.entry(segment).or_insert(i64::MIN);
        *entry = (*entry).max(timestamp);
    }

    /// Records a flush durably, then deletes the segments it made redundant: those below
    /// `checkpoint.segment` whose every sample is older than `checkpoint.time`.
    pub fn checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        let tmp = self.dir.join("checkpoint.tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(format!("{} {}", checkpoint.segment, checkpoint.time).as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join("checkpoint"))?;
        sync_dir(&self.dir)?;
        self.remove_flushed(checkpoint)
    }

    /// Deletes segments below the checkpoint that hold nothing newer than its time.
    pub fn remove_flushed(&self, checkpoint: Checkpoint) -> Result<()> {
        let mut latest = self.latest.lock();
        for old in list_segments(&self.dir)? {
            if old >= checkpoint.segment {
                break;
            }
            // A segment with no known sample time (empty, or fully damaged) holds nothing.
            let newest = latest.get(&old).copied().unwrap_or(i64::MIN);
            if newest < checkpoint.time {
                fs::remove_file(segment_path(&self.dir, old))?;
                latest.remove(&old);
                debug!(segment = old, "wal segment removed after flush");
            }
        }
        Ok(())
    }

    /// Total size of the segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        list_segments(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|segment| fs::metadata(segment_path(&self.dir, segment)).ok())
            .map(|meta| meta.len())
            .sum()
    }

    /// Stops the writer after it has answered everything queued.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The payload of a valid version 2 frame at `offset`, if there is one.
fn frame_at(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let header = bytes.get(offset..offset + FRAME_HEADER_LEN)?;
    if header[..4] != FRAME_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len == 0 || len > MAX_RECORD_LEN {
        return None;
    }
    let payload = bytes.get(offset + FRAME_HEADER_LEN..offset + FRAME_HEADER_LEN + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// What a damaged frame at `offset` would hold if only its checksum were wrong.
fn damaged_payload(bytes: &[u8], offset: usize) -> Option<Vec<u8>> {
    let header = bytes.get(offset..offset + FRAME_HEADER_LEN)?;
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    bytes
        .get(offset + FRAME_HEADER_LEN..offset + FRAME_HEADER_LEN + len)
        .map(<[u8]>::to_vec)
}

/// Reads a version 2 segment's records into `replay`, skipping damaged ranges. Returns
/// the length to truncate the segment to when it ends in a damaged or torn record.
fn scan_segment(segment: u64, bytes: &[u8], replay: &mut Replay) -> Option<usize> {
    let mut offset = SEGMENT_MAGIC.len();
    while offset < bytes.len() {
        if let Some(payload) = frame_at(bytes, offset) {
            replay.items.push(ReplayItem::Record(payload.to_vec()));
            offset += FRAME_HEADER_LEN + payload.len();
            continue;
        }
        replay.corruptions += 1;
        // Resynchronise: the next magic that starts a valid frame.
        let next = (offset + 1..bytes.len().saturating_sub(FRAME_HEADER_LEN - 1))
            .filter(|&candidate| bytes[candidate..candidate + 4] == FRAME_MAGIC)
            .find(|&candidate| frame_at(bytes, candidate).is_some());
        let end = next.unwrap_or(bytes.len());
        warn!(
            segment,
            offset,
            bytes = end - offset,
            "wal record damaged; skipping to the next valid record"
        );
        replay.items.push(ReplayItem::Damaged {
            segment,
            offset: offset as u64,
            len: (end - offset) as u64,
            payload: damaged_payload(bytes, offset),
        });
        match next {
            Some(next) => offset = next,
            None => return Some(offset),
        }
    }
    None
}

/// Reads a version 1 segment: records until the first damaged one, which ends it.
fn scan_legacy_segment(segment: u64, bytes: &[u8], replay: &mut Replay) -> Option<usize> {
    let mut offset = 0;
    while offset < bytes.len() {
        let valid = bytes
            .get(offset..offset + LEGACY_HEADER_LEN)
            .and_then(|header| {
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                if len == 0 || len > MAX_RECORD_LEN {
                    return None;
                }
                let payload =
                    bytes.get(offset + LEGACY_HEADER_LEN..offset + LEGACY_HEADER_LEN + len)?;
                (crc32fast::hash(payload) == crc).then_some(payload)
            });
        let Some(payload) = valid else {
            replay.corruptions += 1;
            replay.items.push(ReplayItem::Damaged {
                segment,
                offset: offset as u64,
                len: (bytes.len() - offset) as u64,
                payload: None,
            });
            return Some(offset);
        };
        replay.items.push(ReplayItem::Record(payload.to_vec()));
        offset += LEGACY_HEADER_LEN + payload.len();
    }
    None
}

struct Segment {
    number: u64,
    file: File,
    /// Bytes written or buffered for this segment.
    bytes: u64,
    /// Bytes known durable: a failed write is cut back to here.
    synced_bytes: u64,
    encoder: SegmentEncoder,
}

fn open_segment(dir: &Path, number: u64) -> std::io::Result<Segment> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, number))?;
    let mut bytes = file.metadata()?.len();
    if bytes == 0 {
        file.write_all(SEGMENT_MAGIC)?;
        file.sync_data()?;
        bytes = SEGMENT_MAGIC.len() as u64;
    }
    File::open(dir)?.sync_all()?;
    Ok(Segment {
        number,
        file,
        bytes,
        synced_bytes: bytes,
        encoder: SegmentEncoder::default(),
    })
}

fn writer_loop(
    dir: PathBuf,
    first_segment: u64,
    segment_bytes: u64,
    rx: mpsc::Receiver<Request>,
    stats: Arc<WalStats>,
    latest: Arc<parking_lot::Mutex<BTreeMap<u64, i64>>>,
) {
    let mut segment: Option<Segment> = None;
    let mut next_number = first_segment;
    let mut buffer = Vec::new();
    let mut payload = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut queue = vec![first];
        while let Ok(more) = rx.try_recv() {
            queue.push(more);
        }
        let mut waiting: Vec<oneshot::Sender<Result<u64>>> = Vec::new();
        for request in queue {
            match request {
                Request::Append { batch, done } => {
                    let needs_new = segment.as_ref().is_none_or(|open| {
                        open.bytes > SEGMENT_MAGIC.len() as u64 && open.bytes >= segment_bytes
                    });
                    if needs_new {
                        // Records already buffered belong to the old segment.
                        if let Err(err) = finish(&mut segment, &mut buffer, &mut waiting, &stats) {
                            let _ = done.send(Err(Error::Wal(err.to_string())));
                            continue;
                        }
                        match open_segment(&dir, next_number) {
                            Ok(open) => {
                                next_number += 1;
                                segment = Some(open);
                            }
                            Err(err) => {
                                let _ = done
                                    .send(Err(Error::Wal(format!("cannot open segment: {err}"))));
                                continue;
                            }
                        }
                    }
                    let Some(open) = segment.as_mut() else {
                        let _ = done.send(Err(Error::Wal("no open segment".into())));
                        continue;
                    };
                    let batch_ref = BatchRef {
                        ids: &batch.ids,
                        series: &batch.series,
                        samples: &batch.samples,
                    };
                    let newest = match open.encoder.encode(&batch_ref, &mut payload) {
                        Ok(newest) if payload.len() <= MAX_RECORD_LEN => newest,
                        Ok(_) => {
                            let _ = done.send(Err(Error::LimitExceeded(format!(
                                "wal record of {} bytes is over {MAX_RECORD_LEN}",
                                payload.len()
                            ))));
                            continue;
                        }
                        Err(err) => {
                            let _ = done.send(Err(err));
                            continue;
                        }
                    };
                    buffer.extend_from_slice(&FRAME_MAGIC);
                    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    buffer.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                    buffer.extend_from_slice(&payload);
                    open.bytes += (FRAME_HEADER_LEN + payload.len()) as u64;
                    {
                        let mut latest = latest.lock();
                        let entry = latest.entry(open.number).or_insert(i64::MIN);
                        *entry = (*entry).max(newest);
                    }
                    waiting.push(done);
                }
                Request::Cut { done } => {
                    let result = finish(&mut segment, &mut buffer, &mut waiting, &stats)
                        .map_err(|err| Error::Wal(err.to_string()))
                        .map(|()| {
                            // The next append opens a new segment with this number.
                            segment = None;
                            next_number
                        });
                    let _ = done.send(result);
                }
            }
        }
        if let Err(err) = finish(&mut segment, &mut buffer, &mut waiting, &stats) {
            warn!(error = %err, "wal write failed");
        }
    }
    if let Some(open) = segment {
        let _ = open.file.sync_data();
    }
}

/// Writes the buffered records to the open segment, syncs it, and answers the waiters.
fn finish(
    segment: &mut Option<Segment>,
    buffer: &mut Vec<u8>,
    waiting: &mut Vec<oneshot::Sender<Result<u64>>>,
    stats: &WalStats,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    if waiting.is_empty() {
        return Ok(());
    }
    let Some(open) = segment.as_mut() else {
        return Ok(());
    };
    let result = open
        .file
        .write_all(buffer)
        .and_then(|()| open.file.sync_data());
    match &result {
        Ok(()) => {
            open.synced_bytes = open.bytes;
            stats
                .bytes_written
                .fetch_add(buffer.len() as u64, Ordering::Relaxed);
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            for done in waiting.drain(..) {
                let _ = done.send(Ok(open.number));
            }
        }
        Err(err) => {
            for done in waiting.drain(..) {
                let _ = done.send(Err(Error::Wal(format!("write failed: {err}"))));
            }
            // A failed write may leave a partial record, which replay would take for the
            // end of the log: cut it off, then continue in a fresh segment.
            if let Err(truncate_err) = open.file.set_len(open.synced_bytes) {
                warn!(error = %truncate_err, segment = open.number, "cannot truncate a failed wal write");
            }
            *segment = None;
        }
    }
    buffer.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SegmentDecoder;
    use crate::labels::LabelSet;
    use crate::record::BatchSample;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// A batch of one sample for each of `n` series, at `ts`.
    fn batch(n: usize, ts: i64) -> Arc<Appended> {
        let series: Vec<LabelSet> = (0..n)
            .map(|idx| LabelSet::from_pairs([("__name__", "m"), ("i", &idx.to_string())]).unwrap())
            .collect();
        Arc::new(Appended {
            ids: series.iter().map(LabelSet::series_id).collect(),
            samples: (0..n as u32)
                .map(|idx| BatchSample {
                    series_idx: idx,
                    timestamp_ms: ts,
                    value: f64::from(idx),
                })
                .collect(),
            series,
        })
    }

    /// Decodes a replay: (segment, timestamp) of every sample, and the damaged items.
    fn samples(replay: &Replay) -> (Vec<(u64, i64)>, usize) {
        let mut out = Vec::new();
        let mut segment = 0;
        let mut decoder = SegmentDecoder::default();
        let mut damaged = 0;
        for item in &replay.items {
            match item {
                ReplayItem::Segment(number) => {
                    segment = *number;
                    decoder = SegmentDecoder::default();
                }
                ReplayItem::Record(payload) => {
                    let decoded = decoder.decode(payload, true).unwrap();
                    out.extend(decoded.samples.iter().map(|s| (segment, s.timestamp_ms)));
                }
                ReplayItem::Damaged { .. } => damaged += 1,
            }
        }
        (out, damaged)
    }

    #[test]
    fn replays_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let (wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
            assert!(replay.items.is_empty());
            rt.block_on(async {
                for ts in 0..10 {
                    wal.append(batch(5, ts)).await.unwrap();
                }
            });
        }
        // Tear the last record.
        let segment = segment_path(dir.path(), 1);
        let len = fs::metadata(&segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let (wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
        let (found, damaged) = samples(&replay);
        assert_eq!(found.len(), 45);
        assert_eq!((replay.corruptions, damaged), (1, 1));
        rt.block_on(async { wal.append(batch(1, 42)).await.unwrap() });
        drop(wal);
        let (_wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
        assert_eq!(samples(&replay).0.len(), 46);
        assert_eq!(replay.corruptions, 0);
    }

    #[test]
    fn a_flipped_byte_loses_only_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let (wal, _) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
            rt.block_on(async {
                for ts in 0..100 {
                    wal.append(batch(10, ts)).await.unwrap();
                }
            });
        }
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        let (_wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
        let (found, damaged) = samples(&replay);
        assert_eq!(damaged, 1);
        assert_eq!(
            found.len(),
            990,
            "only the damaged record's 10 samples are lost"
        );
        // The segment was not truncated: the damage is mid-file.
        assert_eq!(fs::metadata(&path).unwrap().len(), bytes.len() as u64);
    }

    #[test]
    fn checkpoint_keeps_segments_with_recent_samples() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let checkpoint = {
            let (wal, _) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
            rt.block_on(async {
                wal.append(batch(2, 100)).await.unwrap();
                let second = wal.cut().await.unwrap();
                wal.append(batch(2, 200)).await.unwrap();
                wal.append(batch(2, 300)).await.unwrap();
                let third = wal.cut().await.unwrap();
                wal.append(batch(2, 400)).await.unwrap();
                let _ = second;
                // Flushed: everything before 250 in segments below the third.
                let checkpoint = Checkpoint {
                    segment: third,
                    time: 250,
                };
                wal.checkpoint(checkpoint).unwrap();
                checkpoint
            })
        };
        // Segment 1 (only t=100) is gone; segment 2 (t=300) stays.
        assert_eq!(list_segments(dir.path()).unwrap(), vec![2, 3]);
        let (wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
        assert_eq!(replay.checkpoint, checkpoint);
        let kept: Vec<(u64, i64)> = samples(&replay)
            .0
            .into_iter()
            .filter(|(segment, ts)| !replay.checkpoint.covers(*segment, *ts))
            .collect();
        assert_eq!(kept, vec![(2, 300), (2, 300), (3, 400), (3, 400)]);
        drop(wal);
        // An old-style checkpoint ("S") still means: everything below S is flushed.
        fs::write(dir.path().join("checkpoint"), "3").unwrap();
        let (_wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
        assert_eq!(samples(&replay).0, vec![(3, 400), (3, 400)]);
    }

    #[test]
    fn reads_version_1_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = crate::record::SampleBatch::default();
        let idx = old.push_series(LabelSet::from_pairs([("__name__", "up")]).unwrap());
        old.push_sample(idx, 7, 1.0);
        let mut payload = Vec::new();
        crate::codec::encode_batch(&old, &mut payload);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        fs::write(segment_path(dir.path(), 1), bytes).unwrap();
        let (_wal, replay) = Wal::open(dir.path(), 1 << 20, Checkpoint::NONE).unwrap();
        assert_eq!(samples(&replay), (vec![(1, 7)], 0));
    }
}

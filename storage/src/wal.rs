//! A segmented, checksummed write-ahead log with group commit.
//!
//! ```text
//! wal/00000001 wal/00000002 ...   segments, each a sequence of records:
//!   u32 len | u32 crc32(payload) | payload[len]
//! wal/checkpoint                  "N": every segment below N is flushed to Parquet
//! ```
//!
//! One writer thread owns the open segment. Appenders send a payload and wait; the writer
//! drains every queued payload, writes them, calls `fdatasync` once and then answers all of
//! them (group commit). A caller is answered only after its record is durable.
//!
//! Replay reads segments in order. A record with a short header, a length past the end of
//! the file or a checksum mismatch ends the log: the segment is truncated there (with a
//! warning) and later segments are removed, as Prometheus' WAL repair does.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

const HEADER_LEN: usize = 8;
/// Records larger than this are treated as corruption during replay.
const MAX_RECORD_LEN: usize = 1 << 30;

enum Request {
    Append {
        payload: Vec<u8>,
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

pub struct Wal {
    dir: PathBuf,
    tx: parking_lot::Mutex<Option<mpsc::Sender<Request>>>,
    writer: parking_lot::Mutex<Option<thread::JoinHandle<()>>>,
    pub stats: std::sync::Arc<WalStats>,
}

/// What replay found.
pub struct Replay {
    pub payloads: Vec<Vec<u8>>,
    /// Number of corrupt or torn records found (0 or 1: replay stops at the first).
    pub corruptions: usize,
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

fn read_checkpoint(dir: &Path) -> Result<u64> {
    match fs::read_to_string(dir.join("checkpoint")) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| Error::Wal(format!("unreadable checkpoint file {text:?}"))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err.into()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Wal {
    /// Replays the log in `dir` (creating it if needed) and starts a writer on a new segment.
    /// Segments below `flushed_below` (or below the checkpoint file) are already in
    /// Parquet: they are removed, not replayed.
    pub fn open(dir: &Path, segment_bytes: u64, flushed_below: u64) -> Result<(Wal, Replay)> {
        fs::create_dir_all(dir)?;
        let checkpoint = read_checkpoint(dir)?.max(flushed_below);
        let segments = list_segments(dir)?;
        let mut replay = Replay {
            payloads: Vec::new(),
            corruptions: 0,
        };
        let mut stop_at: Option<usize> = None;
        for (position, &segment) in segments.iter().enumerate() {
            if segment < checkpoint {
                fs::remove_file(segment_path(dir, segment))?;
                continue;
            }
            let path = segment_path(dir, segment);
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let (valid_len, corrupt) = scan_segment(&bytes, &mut replay.payloads);
            if corrupt {
                replay.corruptions += 1;
                warn!(
                    segment = %path.display(),
                    offset = valid_len,
                    dropped_bytes = bytes.len() - valid_len,
                    "wal segment has a torn or corrupt record; truncating it there"
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid_len as u64)?;
                file.sync_all()?;
                stop_at = Some(position);
                break;
            }
        }
        if let Some(position) = stop_at {
            for &segment in &segments[position + 1..] {
                warn!(segment, "removing wal segment after a corrupt record");
                fs::remove_file(segment_path(dir, segment))?;
            }
        }
        let next_segment = segments.last().map_or(checkpoint.max(1), |last| last + 1);
        info!(
            records = replay.payloads.len(),
            next_segment, "wal replayed"
        );
        let stats = std::sync::Arc::new(WalStats::default());
        let (tx, rx) = mpsc::channel();
        let writer_dir = dir.to_path_buf();
        let writer_stats = stats.clone();
        let writer = thread::Builder::new()
            .name("vigil-wal".into())
            .spawn(move || {
                writer_loop(writer_dir, next_segment, segment_bytes, rx, writer_stats)
            })?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                tx: parking_lot::Mutex::new(Some(tx)),
                writer: parking_lot::Mutex::new(Some(writer)),
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

    /// Queues one record; the receiver answers once it is durable, with its segment.
    /// Records are written in the order they are queued.
    pub fn submit(&self, payload: Vec<u8>) -> Result<oneshot::Receiver<Result<u64>>> {
        if payload.is_empty() || payload.len() > MAX_RECORD_LEN {
            return Err(Error::LimitExceeded(format!(
                "wal record of {} bytes is outside 1..={MAX_RECORD_LEN}",
                payload.len()
            )));
        }
        let (done, wait) = oneshot::channel();
        self.send(Request::Append { payload, done })?;
        Ok(wait)
    }

    /// Appends one record and returns once it is durable, with the segment it landed in.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64> {
        Self::wait(self.submit(payload)?).await
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

    /// Records that every segment below `segment` is flushed, then deletes those segments.
    pub fn checkpoint(&self, segment: u64) -> Result<()> {
        let tmp = self.dir.join("checkpoint.tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(segment.to_string().as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join("checkpoint"))?;
        sync_dir(&self.dir)?;
        for old in list_segments(&self.dir)? {
            if old < segment {
                fs::remove_file(segment_path(&self.dir, old))?;
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

/// Reads records from a segment into `out`; returns the length of the valid prefix and
/// whether the segment ended in a torn or corrupt record.
fn scan_segment(bytes: &[u8], out: &mut Vec<Vec<u8>>) -> (usize, bool) {
    let mut offset = 0;
    while offset < bytes.len() {
        let Some(header) = bytes.get(offset..offset + HEADER_LEN) else {
            return (offset, true);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return (offset, true);
        }
        let Some(payload) = bytes.get(offset + HEADER_LEN..offset + HEADER_LEN + len) else {
            return (offset, true);
        };
        if crc32fast::hash(payload) != crc {
            return (offset, true);
        }
        out.push(payload.to_vec());
        offset += HEADER_LEN + len;
    }
    (offset, false)
}

struct Segment {
    number: u64,
    file: File,
    /// Bytes written or buffered for this segment.
    bytes: u64,
    /// Bytes known durable: a failed write is cut back to here.
    synced_bytes: u64,
}

fn open_segment(dir: &Path, number: u64) -> std::io::Result<Segment> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, number))?;
    let bytes = file.metadata()?.len();
    File::open(dir)?.sync_all()?;
    Ok(Segment {
        number,
        file,
        bytes,
        synced_bytes: bytes,
    })
}

fn writer_loop(
    dir: PathBuf,
    first_segment: u64,
    segment_bytes: u64,
    rx: mpsc::Receiver<Request>,
    stats: std::sync::Arc<WalStats>,
) {
    let mut segment: Option<Segment> = None;
    let mut next_number = first_segment;
    let mut buffer = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut queue = vec![first];
        while let Ok(more) = rx.try_recv() {
            queue.push(more);
        }
        let mut waiting: Vec<oneshot::Sender<Result<u64>>> = Vec::new();
        for request in queue {
            match request {
                Request::Append { payload, done } => {
                    let needs_new = segment
                        .as_ref()
                        .is_none_or(|open| open.bytes > 0 && open.bytes >= segment_bytes);
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
                    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    buffer.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                    buffer.extend_from_slice(&payload);
                    if let Some(open) = segment.as_mut() {
                        open.bytes += (HEADER_LEN + payload.len()) as u64;
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

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn replays_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let (wal, replay) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
            assert!(replay.payloads.is_empty());
            rt.block_on(async {
                for idx in 0..10u8 {
                    wal.append(vec![idx; 100]).await.unwrap();
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
        let (wal, replay) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(replay.payloads.len(), 9);
        assert_eq!(replay.corruptions, 1);
        assert_eq!(replay.payloads[8], vec![8u8; 100]);
        rt.block_on(async { wal.append(vec![42; 5]).await.unwrap() });
        drop(wal);
        let (_wal, replay) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(replay.payloads.len(), 10);
        assert_eq!(replay.corruptions, 0);
    }

    #[test]
    fn flipped_byte_is_detected_and_checkpoint_skips_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let (wal, _) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
            rt.block_on(async {
                wal.append(vec![1; 10]).await.unwrap();
                let next = wal.cut().await.unwrap();
                wal.append(vec![2; 10]).await.unwrap();
                wal.checkpoint(next).unwrap();
                wal.append(vec![3; 10]).await.unwrap();
            });
        }
        let (_, replay) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(replay.payloads, vec![vec![2; 10], vec![3; 10]]);
        drop(replay);
        // Flip a payload byte of the last record.
        let segments = list_segments(dir.path()).unwrap();
        let last = segment_path(dir.path(), *segments.last().unwrap());
        let mut bytes = fs::read(&last).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        fs::write(&last, bytes).unwrap();
        let (_, replay) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(replay.corruptions, 1);
    }
}
